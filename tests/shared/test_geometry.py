"""Feature-map geometry: ``feature_size`` against a real forward for sequential and branched trunks, too-small
inputs, the caller's module left alone, and the student's conv1 padding search."""

import pytest
import torch
import torchvision
from torch import nn

from shared.errors import GeometryError
from shared.nets.geometry import feature_size, find_conv1_padding
from shared.nets.teachers import load_teacher
from shared.nets.trunks import AlexNetTrunk, trunk_spec

# Odd sizes among them; the large ones are slow for a real ResNet-50 / VGG16 forward on a CPU.
SIZES = [(96, 128), (67, 91), *(pytest.param(hw, marks=pytest.mark.slow)
                                for hw in [(224, 224), (160, 224), (240, 320), (227, 227)])]


def _forward_hw(trunk, hw):
    with torch.inference_mode():
        return tuple(trunk.eval()(torch.zeros(1, 3, *hw)).shape[2:])


@pytest.fixture(scope="module")
def teachers():
    """The torchvision trunks a teacher can be (random weights: geometry does not depend on them)."""
    return {f"{a}-{layer}": load_teacher(a, "random", layer=layer).trunk
            for a, layer in [("alexnet", "pool5"), ("vgg16", "pool5"), ("resnet50", "layer3"), ("resnet50", "layer4")]}


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("name", ["alexnet-pool5", "vgg16-pool5", "resnet50-layer3", "resnet50-layer4"])
def test_feature_size_of_teachers_matches_forward(teachers, name, hw):
    assert feature_size(teachers[name], hw) == _forward_hw(teachers[name], hw)


def test_resnet_geometry_is_that_of_its_strides(teachers):
    # The bug this guards against: walking the leaves in order gave 1x1 (layer4) and 4x4 (layer3) at 224x224.
    assert feature_size(teachers["resnet50-layer4"], (224, 224)) == (7, 7)
    assert feature_size(teachers["resnet50-layer3"], (224, 224)) == (14, 14)


@pytest.mark.parametrize("hw", [(224, 224), (160, 224), (96, 128), (240, 320), (227, 227), (67, 91), (97, 129),
                                (425, 560)])
@pytest.mark.parametrize("name", ["alexnet", "alexnet-small"])
def test_feature_size_of_ceil_mode_students_matches_forward(name, hw):
    trunk = AlexNetTrunk(trunk_spec(name, width=0.25))
    assert trunk.pool1.ceil_mode
    assert feature_size(trunk, hw) == _forward_hw(trunk, hw)


def test_caffe_pooling_rule():
    # Caffe/PyTorch ceil mode: 13 -> 6 with k3 s2 in both; 14 -> 7 only with ceil.
    assert feature_size(nn.MaxPool2d(3, 2, ceil_mode=True), (13, 14)) == (6, 7)
    assert feature_size(nn.MaxPool2d(3, 2, ceil_mode=False), (13, 14)) == (6, 6)


def test_caller_module_is_neither_moved_nor_changed():
    trunk = nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-2])  # branched, training
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    assert feature_size(trunk, (16, 16)) == (1, 1)  # 1x1 maps pass training-mode BatchNorm's check too
    assert trunk.training and all(m.training for m in trunk.modules())
    assert all(not t.is_meta for t in trunk.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in trunk.state_dict().items())  # running stats untouched


class _ReadsValues(nn.Module):
    """A layer the meta device cannot run: its output size depends on the input's values."""

    def forward(self, x):
        return x[:, :, : int(x.abs().amax().item()) + 2]


def test_layer_without_meta_support_falls_back_to_a_real_forward():
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _ReadsValues(), nn.MaxPool2d(2))
    assert feature_size(trunk, (10, 12)) == (1, 6)  # the zero input's map: 2 rows kept, pooled to 1
    with torch.device("meta"):
        meta_trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _ReadsValues())
    with pytest.raises(GeometryError, match="10x12"):  # no real weights to fall back to
        feature_size(meta_trunk, (10, 12))


def test_too_small_input_raises_geometry_error_naming_it(teachers):
    student = AlexNetTrunk(trunk_spec("alexnet", width=0.125))
    with pytest.raises(GeometryError, match=r"input 8x8 is too small.*Kernel size"):  # conv1's 11x11 kernel
        feature_size(student, (8, 8))
    with pytest.raises(GeometryError, match=r"input 20x20 is too small.*Output size is too small"):  # pool2 of 1x1
        feature_size(student, (20, 20))
    with pytest.raises(GeometryError, match=r"input 16x16 is too small.*Output size is too small"):  # 5th pool
        feature_size(teachers["vgg16-pool5"], (16, 16))


class _Crop(nn.Module):
    def forward(self, x):
        return x[:, :, 8:]


def test_empty_output_map_raises_geometry_error():
    with pytest.raises(GeometryError, match=r"input 8x12 is too small .* output map is 0x12"):
        feature_size(nn.Sequential(nn.Conv2d(3, 4, 1), _Crop()), (8, 12))


def test_trunk_without_a_map_output_is_refused():
    with pytest.raises(GeometryError, match=r"must return an \(N, C, H, W\) map.*\(1, 4\)"):
        feature_size(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), (32, 32))


def _alexnet_student(p):
    return AlexNetTrunk(trunk_spec("alexnet", conv1_padding=p, width=0.125))


def test_vgg16_to_alexnet_padding_search(teachers):
    # The paper's released VGG16 -> AlexNet student used conv1 pad 7 to match VGG's 7x7 pool5 at 224.
    vgg_hw = feature_size(teachers["vgg16-pool5"], (224, 224))
    assert vgg_hw == (7, 7)
    pad = find_conv1_padding(_alexnet_student, (224, 224), vgg_hw, preferred=7)
    assert pad == 7
    assert _forward_hw(_alexnet_student(pad), (224, 224)) == (7, 7)
    assert find_conv1_padding(_alexnet_student, (224, 224), vgg_hw) in range(1, 8)


def test_resnet_layer3_to_small_student_padding_search(teachers):
    # layer3 has stride 16, like alexnet-small's pool5: at 96x128 both give 6x8, with the spec's own padding.
    target = feature_size(teachers["resnet50-layer3"], (96, 128))
    assert target == (6, 8)
    spec = trunk_spec("alexnet-small")
    pad = find_conv1_padding(lambda p: AlexNetTrunk(spec.with_(conv1_padding=p)), (96, 128), target,
                             preferred=spec.conv1_padding)
    assert pad == 2 and _forward_hw(AlexNetTrunk(spec.with_(conv1_padding=pad)), (96, 128)) == target


def test_padding_search_builds_candidates_on_meta():
    devices = []

    def make(p):
        trunk = _alexnet_student(p)
        devices.append(trunk.conv1[0].weight.device.type)
        return trunk

    assert find_conv1_padding(make, (224, 224), (6, 6), max_padding=3) == 0
    assert devices == ["meta"] * 4


def test_padding_search_impossible_is_clear():
    with pytest.raises(GeometryError, match=r"no conv1 padding .* 20x20 .* can reach"):
        find_conv1_padding(_alexnet_student, (224, 224), (20, 20))
