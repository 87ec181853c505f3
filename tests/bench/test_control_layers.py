"""bench.control_layers' hybrid trunks: the layers a spec names from the control, the rest the seed's random trunk."""

from __future__ import annotations

import pytest
import torch

from bench.control_layers import hybrid_checkpoint, take_prefixes
from shared.modalities import modality
from shared.nets.teachers import trunk_state
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from student_trainer.checkpoint import load_checkpoint, save_checkpoint
from student_trainer.student import TransferModel


def test_take_specs_name_blocks_ranges_and_single_layers():
    assert take_prefixes("none") == ()
    assert take_prefixes("all") == ("conv1.", "conv2.", "conv3.", "conv4.", "conv5.")
    assert take_prefixes("conv1-3") == ("conv1.", "conv2.", "conv3.")
    assert take_prefixes("conv1-4,conv5.conv") == ("conv1.", "conv2.", "conv3.", "conv4.", "conv5.0.")
    assert take_prefixes("conv5.bn") == ("conv5.1.",)
    for bad in ("conv6", "conv3-1", "conv1-2.bn", "fc6", "conv5.relu", ""):
        with pytest.raises(ValueError, match="--take"):
            take_prefixes(bad)


@pytest.fixture
def control(tmp_path):
    torch.manual_seed(123)
    model = TransferModel(AlexNetTrunk(trunk_spec("alexnet-small", width=0.5)), teacher_channels=8)
    with torch.no_grad():
        for p in model.trunk.parameters():
            p.add_(1.0)  # unlike any fresh init
    path = tmp_path / "control.pt"
    save_checkpoint(path, {"model": model.state_dict(), "modality": "hha", "step": 9,
                           "trunk": model.trunk.describe(modality("hha").mean, modality("hha").std)})
    return path, model.trunk.state_dict()


@pytest.mark.parametrize("spec, from_control", [
    ("none", lambda name: False),
    ("conv1-2", lambda name: name.split(".")[0] in ("conv1", "conv2")),
    ("conv5.conv", lambda name: name.startswith("conv5.0.")),
    ("conv1-4,conv5.bn", lambda name: name.startswith("conv5.1.") or name.split(".")[0] != "conv5"),
    ("all", lambda name: True),
])
def test_hybrid_takes_the_named_layers_from_the_control_and_the_rest_from_the_seeded_random_trunk(
        tmp_path, control, spec, from_control):
    path, control_state = control
    torch.manual_seed(4)
    fresh = AlexNetTrunk(trunk_spec("alexnet-small", width=0.5)).state_dict()
    out = hybrid_checkpoint(path, spec, seed=4, out=tmp_path / "hybrid.pt")
    state = trunk_state(load_checkpoint(out), out)
    assert set(state) == set(fresh)
    for name, v in state.items():
        assert torch.equal(v, control_state[name] if from_control(name) else fresh[name]), (spec, name)


def test_a_batchnorm_spec_on_a_trunk_without_batchnorm_is_refused(tmp_path):
    model = TransferModel(AlexNetTrunk(trunk_spec("alexnet-small", width=0.5, batch_norm=False)), teacher_channels=8)
    path = tmp_path / "control.pt"
    save_checkpoint(path, {"model": model.state_dict(), "modality": "hha", "step": 9,
                           "trunk": model.trunk.describe(modality("hha").mean, modality("hha").std)})
    with pytest.raises(ValueError, match=r"no layer conv5\.1 .*BatchNorm is off"):
        hybrid_checkpoint(path, "conv5.bn", seed=0, out=tmp_path / "hybrid.pt")
