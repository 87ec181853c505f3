"""bench.control_layers' hybrid trunks: the control's first k blocks, the rest the seed's random trunk."""

from __future__ import annotations

import torch

from bench.control_layers import BLOCKS, hybrid_checkpoint
from shared.modalities import modality
from shared.nets.teachers import trunk_state
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from student_trainer.checkpoint import load_checkpoint, save_checkpoint
from student_trainer.student import TransferModel


def test_hybrid_takes_the_first_blocks_from_the_control_and_the_rest_from_the_seeded_random_trunk(tmp_path):
    torch.manual_seed(123)
    spec = trunk_spec("alexnet-small", width=0.5)
    control = TransferModel(AlexNetTrunk(spec), teacher_channels=8)
    with torch.no_grad():
        for p in control.trunk.parameters():
            p.add_(1.0)  # unlike any fresh init
    path = tmp_path / "control.pt"
    save_checkpoint(path, {"model": control.state_dict(), "modality": "hha", "step": 9,
                           "trunk": control.trunk.describe(modality("hha").mean, modality("hha").std)})
    torch.manual_seed(4)
    fresh = AlexNetTrunk(spec).state_dict()
    for k in (0, 2, len(BLOCKS)):
        out = hybrid_checkpoint(path, k, seed=4, out=tmp_path / f"k{k}.pt")
        state = trunk_state(load_checkpoint(out), out)
        assert set(state) == set(fresh)
        for name, v in state.items():
            want = control.trunk.state_dict()[name] if name.split(".")[0] in BLOCKS[:k] else fresh[name]
            assert torch.equal(v, want), (k, name)
