"""``student-trainer``: supervision transfer against a teacher service (detectors: see ``detect``)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from shared.settings import Command, run_commands
from student_trainer.classify_settings import ClassifySettings
from student_trainer.detect_settings import CompareSettings, DetectSettings, ProposalSettings
from student_trainer.transfer_settings import TransferSettings

__all__ = ["main"]


def _transfer(s: TransferSettings) -> None:
    from shared.distributed import ranks_from_env
    from student_trainer.transfer import run_transfer

    summary = run_transfer(s)
    if ranks_from_env().is_main:  # under torchrun one summary, not one per rank
        print(json.dumps(summary, indent=2))


def _detect(s: DetectSettings) -> None:
    from student_trainer.detect import run_detect

    summary = run_detect(s)
    print(json.dumps(summary, indent=2))


def _classify(s: ClassifySettings) -> None:
    from student_trainer.classify import run_classify

    print(json.dumps(run_classify(s), indent=2))


def _proposals(s: ProposalSettings) -> None:
    from student_trainer.proposals import generate_proposals

    out = generate_proposals(s.manifest, s.out, method=s.method, splits=s.splits, workers=s.workers,
                             progress=s.progress)
    print(f"proposals: {out}")


def _compare(s: CompareSettings) -> None:
    from student_trainer.compare import run_compare

    report = run_compare(s)
    print((s.out / "report.md").read_text())
    print(f"wrote {s.out / 'compare.json'} ({len(report['rows'])} methods)")


_COMMANDS: dict[str, Command] = {
    "transfer": (TransferSettings, _transfer,
                 "train a depth (HHA) or flow student to regress the cached teacher pool5 maps "
                 "(also writes the random / copy-rgb baseline trunks with --iterations 0)"),
    "detect": (DetectSettings, _detect,
               "train a Fast R-CNN detector (rgb, hha or flow) from a random, copy-rgb or transferred trunk on "
               "external proposals, and report VOC AP on the test split"),
    "classify": (ClassifySettings, _classify,
                 "train the ImageNet-like RGB teacher: a trunk that classifies object crops of separate labelled "
                 "renders (xmodal-data synth --profile pretrain-quick); a teacher, copy-rgb source and detector init"),
    "proposals": (ProposalSettings, _proposals,
                  "generate (or finish) the proposal cache detectors read, for every labelled frame by default; "
                  "run it once before several detectors train at the same time"),
    "compare": (CompareSettings, _compare,
                "the paper's Table 1 for one modality: detectors from every trunk init (no init, copy-rgb, "
                "transfer, frozen, untrained-teacher control), RGB alone and RGB fusion, over seeds"),
}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run_commands(
        "student-trainer",
        "Student trainers of cross-modal supervision transfer. Every flag can also be set by the env var named "
        "in its help.",
        _COMMANDS, argv, resume_hint="rerun with --resume to continue",
    )


if __name__ == "__main__":
    sys.exit(main())
