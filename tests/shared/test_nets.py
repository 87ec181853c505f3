import urllib.error

import pytest
import torch
import torchvision

from shared.errors import GeometryError, WeightsUnavailableError
from shared.nets.geometry import feature_size, find_conv1_padding, output_length
from shared.nets.teachers import load_teacher, weights_digest
from shared.nets.trunks import AlexNetTrunk, trunk_spec


def _forward_hw(trunk, hw):
    with torch.inference_mode():
        return tuple(trunk(torch.zeros(1, 3, *hw)).shape[2:])


@pytest.mark.parametrize("hw", [(224, 224), (227, 227), (96, 128), (425, 560), (67, 91)])
@pytest.mark.parametrize("name", ["alexnet", "alexnet-small"])
def test_feature_size_matches_forward(name, hw):
    trunk = AlexNetTrunk(trunk_spec(name, width=0.25)).eval()
    assert feature_size(trunk, hw) == _forward_hw(trunk, hw)


def test_feature_size_torchvision_trunks():
    for builder in (torchvision.models.alexnet, torchvision.models.vgg16):
        features = builder(weights=None).features.eval()
        for hw in [(224, 224), (96, 128)]:
            assert feature_size(features, hw) == _forward_hw(features, hw)


def test_caffe_pooling_rule():
    # Caffe/PyTorch ceil mode: 13 -> 6 with k3 s2 in both; 14 -> 7 only with ceil.
    assert output_length(13, 3, 2, 0, ceil=True) == 6
    assert output_length(14, 3, 2, 0, ceil=False) == 6
    assert output_length(14, 3, 2, 0, ceil=True) == 7


def test_vgg16_to_alexnet_padding_search():
    # The paper's released VGG16 -> AlexNet student used conv1 pad 7 to match VGG's 7x7 pool5 at 224.
    vgg_hw = feature_size(torchvision.models.vgg16(weights=None).features, (224, 224))
    assert vgg_hw == (7, 7)

    def make(p):
        return AlexNetTrunk(trunk_spec("alexnet", conv1_padding=p, width=0.125))

    pad = find_conv1_padding(make, (224, 224), vgg_hw, preferred=7)
    assert pad == 7
    assert _forward_hw(make(pad).eval(), (224, 224)) == (7, 7)
    assert find_conv1_padding(make, (224, 224), vgg_hw) in range(1, 8)


def test_padding_search_impossible_is_clear():
    def make(p):
        return AlexNetTrunk(trunk_spec("alexnet", conv1_padding=p, width=0.125))

    with pytest.raises(GeometryError, match=r"no conv1 padding .* 20x20 .* can reach"):
        find_conv1_padding(make, (224, 224), (20, 20))


def test_too_small_input():
    with pytest.raises(GeometryError, match="too small"):
        feature_size(AlexNetTrunk(trunk_spec("alexnet")), (20, 20))


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


def test_offline_imagenet_weights_fail_clearly(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline, raising=False)
    with pytest.raises(WeightsUnavailableError, match=r"offline.*place it at .*alexnet-owt"):
        load_teacher("alexnet", "imagenet")


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
