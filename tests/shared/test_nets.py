import urllib.error

import pytest
import torch
import torchvision

from shared.errors import WeightsUnavailableError
from shared.nets.archs import TORCHVISION_TEACHERS
from shared.nets.teachers import load_teacher, weights_digest
from shared.nets.trunks import AlexNetTrunk, trunk_spec


def test_unknown_trunk_name():
    with pytest.raises(ValueError, match="'resnet'"):
        trunk_spec("resnet")


def test_random_teacher_reproducible_by_seed():
    a = load_teacher("alexnet", "random", seed=1)
    b = load_teacher("alexnet", "random", seed=1)
    c = load_teacher("alexnet", "random", seed=2)
    assert a.identity == b.identity
    assert a.identity.weights_digest != c.identity.weights_digest
    assert a.identity.out_channels == 256
    assert not any(p.requires_grad for p in a.trunk.parameters())


@pytest.mark.parametrize(("arch", "layer"), [(a, layer) for a, t in TORCHVISION_TEACHERS.items() for layer in t.layers])
def test_every_registered_teacher_layer(arch, layer):
    t = load_teacher(arch, "random", layer=layer)
    assert t.identity.layer == layer and t.identity.short_id().startswith(f"{arch}-{layer}-")
    with torch.inference_mode():
        channels = t.trunk(torch.zeros(1, 3, 64, 64)).shape[1]
    assert t.identity.out_channels == channels  # the last registered Conv2d is the output's, for every trunk
    assert not t.trunk.training and not any(p.requires_grad for p in t.trunk.parameters())


def test_resnet50_trunks_are_its_children_up_to_the_layer():
    l3 = load_teacher("resnet50", "random", seed=1, layer="layer3")
    names = [n for n, _ in l3.trunk.named_children()]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    assert "layer3.5.conv3.weight" in l3.trunk.state_dict()  # torchvision's parameter names
    assert l3.identity.out_channels == 1024
    l4 = load_teacher("resnet50", "random", seed=1)  # the default layer
    assert l4.identity.layer == "layer4" and l4.identity.out_channels == 2048
    assert l4.identity.weights_digest != l3.identity.weights_digest
    assert load_teacher("resnet50", "random", seed=1, layer="layer3").identity == l3.identity


def test_unknown_layer_names_the_layers(tmp_path):
    with pytest.raises(ValueError, match=r"'resnet50' has no layer 'pool5'; its layers: layer3, layer4"):
        load_teacher("resnet50", "random", layer="pool5")
    with pytest.raises(ValueError, match=r"'checkpoint' has no layer 'layer3'; its layers: pool5"):
        load_teacher("checkpoint", str(tmp_path / "t.pt"), layer="layer3")


@pytest.mark.parametrize(("arch", "file"), [("alexnet", "alexnet-owt"), ("resnet50", "resnet50-0676ba61.pth")])
def test_offline_imagenet_weights_fail_clearly(monkeypatch, arch, file):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline, raising=False)
    with pytest.raises(WeightsUnavailableError, match=rf"offline.*place it at .*{file}"):
        load_teacher(arch, "imagenet")


def test_checkpoint_teacher_round_trip(tmp_path):
    trunk = AlexNetTrunk(trunk_spec("alexnet-small", width=0.5))
    state = {f"trunk.{k}": v for k, v in trunk.state_dict().items()}
    state["head.weight"] = torch.zeros(3)  # a detector checkpoint carries more than the trunk
    path = tmp_path / "det.pt"
    torch.save({"model": state, "trunk": trunk.describe((0.1, 0.2, 0.3), (1, 1, 1))}, path)
    t = load_teacher("checkpoint", str(path))
    assert t.identity.arch == "alexnet-small" and t.identity.mean == (0.1, 0.2, 0.3)
    assert t.identity.weights_digest == weights_digest(trunk)
    x = torch.randn(1, 3, 96, 128)
    torch.testing.assert_close(t.trunk(x), trunk.eval()(x))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_teacher("checkpoint", str(tmp_path / "none.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="cannot read"):
        load_teacher("checkpoint", str(tmp_path / "junk.pt"))
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(WeightsUnavailableError, match="no 'trunk' description"):
        load_teacher("checkpoint", str(tmp_path / "foreign.pt"))
    with pytest.raises(ValueError, match="unknown teacher arch 'resnet'"):
        load_teacher("resnet")
