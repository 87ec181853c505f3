"""Object proposals for the Fast R-CNN detectors: files of real datasets, a built-in generator, recall.

Boxes everywhere are ``{frame id: (N, 4) float32}``, ``[x1, y1, x2, y2]`` in the frame's pixels (pixel edges,
x2/y2 exclusive: :mod:`shared.boxes`), best proposal first.

* :func:`load_proposals` / :func:`save_proposals`: our ``.npz`` layouts and the MATLAB layouts of MCG and
  selective search (NYUD2 proposals of Gupta et al.) -- :mod:`.files`.
* :func:`generate_proposals`: proposals for a manifest's frames (Edge Boxes + selective search on RGB and the
  paired modality), parallel, cached in a resumable ``.npz`` -- :mod:`.generate`, :mod:`.methods`, :mod:`.sources`.
* :func:`proposal_recall`: recall at IoU 0.5 of the top-k proposals on a labelled split -- :mod:`.recall`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from student_trainer.proposals.files import ProposalFileError, load_proposals, read_proposal_file, save_proposals
    from student_trainer.proposals.generate import default_cache_path, generate_proposals
    from student_trainer.proposals.methods import METHODS, propose
    from student_trainer.proposals.recall import proposal_recall
    from student_trainer.proposals.sources import ProposalInputs

# Names load their module on first use (PEP 562), so a worker process that imports only ``.generate`` and
# ``.methods`` never imports torch.
_WHERE = {
    "ProposalFileError": "files", "load_proposals": "files", "read_proposal_file": "files", "save_proposals": "files",
    "default_cache_path": "generate", "generate_proposals": "generate",
    "METHODS": "methods", "ProposalInputs": "sources", "propose": "methods",
    "proposal_recall": "recall",
}

__all__ = [
    "METHODS",
    "ProposalFileError",
    "ProposalInputs",
    "default_cache_path",
    "generate_proposals",
    "load_proposals",
    "proposal_recall",
    "propose",
    "read_proposal_file",
    "save_proposals",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
