"""Box geometry: hand-computed values and float64 references of the R-CNN box parameterisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shared.boxes import (
    BBOX_XFORM_CLIP,
    DEFAULT_BOX_CODER_WEIGHTS,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    flip_boxes,
    iou_matrix,
    scale_boxes,
)


def _reference_encode(p: np.ndarray, g: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """The R-CNN parameterisation written out in float64, independent of torchvision."""
    wx, wy, ww, wh = weights
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    px, py = p[:, 0] + pw / 2, p[:, 1] + ph / 2
    gx, gy = g[:, 0] + gw / 2, g[:, 1] + gh / 2
    return np.stack([wx * (gx - px) / pw, wy * (gy - py) / ph, ww * np.log(gw / pw), wh * np.log(gh / ph)], 1)


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 200, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, 100, (n, 2))], 1)


def test_iou_hand_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 100, 100]], dtype=np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    iou = iou_matrix(a, b)
    assert iou.dtype == np.float64 and iou.shape == (2, 3)
    # [0,0,10,10] vs [5,0,15,10]: overlap 5x10 = 50, union 100 + 100 - 50 = 150; disjoint -> 0; identical -> 1.
    # [0,0,100,100] contains the 10x10 boxes: 100 / 10000.
    np.testing.assert_array_equal(iou, [[50 / 150, 0.0, 1.0], [100 / 10000, 100 / 10000, 100 / 10000]])


def test_iou_touching_boxes_do_not_overlap() -> None:
    # x2 is exclusive: [0, 10) and [10, 20) share an edge, not a pixel.
    assert iou_matrix([[0, 0, 10, 10]], [[10, 0, 20, 10]])[0, 0] == 0.0


def test_iou_empty_inputs() -> None:
    assert iou_matrix(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    assert iou_matrix([[0, 0, 1, 1]], np.zeros((0, 4))).shape == (1, 0)


@pytest.mark.parametrize("bad", [np.zeros((3,)), np.zeros((2, 3)), np.zeros((1, 2, 4))])
def test_iou_rejects_bad_shapes(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"boxes2 must have shape \(N, 4\).*got shape"):
        iou_matrix(np.zeros((1, 4)), bad)


def test_encode_hand_values() -> None:
    # proposal centre (5, 10), size 10 x 20; gt centre (7, 10), size 20 x 10.
    p = torch.tensor([[0.0, 0.0, 10.0, 20.0]], dtype=torch.float64)
    g = torch.tensor([[-3.0, 5.0, 17.0, 15.0]], dtype=torch.float64)
    d = encode_boxes(p, g)
    expected = [10 * 2 / 10, 10 * 0 / 20, 5 * math.log(20 / 10), 5 * math.log(10 / 20)]
    np.testing.assert_allclose(d.numpy(), [expected], rtol=0, atol=1e-15)
    np.testing.assert_allclose(encode_boxes(p, g, weights=(1, 1, 1, 1)).numpy(), [[0.2, 0, math.log(2), -math.log(2)]])


def test_encode_matches_float64_reference_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    p, g = _random_boxes(rng, 50), _random_boxes(rng, 50)
    for weights in (DEFAULT_BOX_CODER_WEIGHTS, (1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        d = encode_boxes(torch.from_numpy(p), torch.from_numpy(g), weights)
        np.testing.assert_allclose(d.numpy(), _reference_encode(p, g, weights), rtol=1e-12, atol=1e-12)
        back = decode_boxes(torch.from_numpy(p), d, weights)
        np.testing.assert_allclose(back.numpy(), g, rtol=0, atol=1e-9)


def test_default_weights_are_roi_heads_defaults() -> None:
    from torchvision.models.detection.roi_heads import RoIHeads

    heads = RoIHeads(None, None, None, 0.5, 0.5, 128, 0.25, None, 0.05, 0.3, 100)
    assert heads.box_coder.weights == DEFAULT_BOX_CODER_WEIGHTS
    assert heads.box_coder.bbox_xform_clip == BBOX_XFORM_CLIP


def test_decode_class_specific_deltas_and_float32() -> None:
    p = torch.tensor([[10.0, 10.0, 30.0, 50.0], [0.0, 0.0, 8.0, 8.0]])
    g = torch.tensor([[12.0, 8.0, 40.0, 44.0], [1.0, 2.0, 9.0, 6.0]])
    d = encode_boxes(p, g)
    zeros = torch.zeros_like(d)
    out = decode_boxes(p, torch.cat([zeros, d], 1))  # K = 2: class 0 keeps the proposal, class 1 moves to gt
    assert out.shape == (2, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out.view(2, 2, 4)[:, 0], p)
    torch.testing.assert_close(out.view(2, 2, 4)[:, 1], g)


def test_decode_clamps_huge_sizes_and_clips() -> None:
    p = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    # dw = 100 / 5 = 20 would be e^20 times wider; it is clamped to log(1000 / 16): 10 px * 62.5 = 625 px.
    out = decode_boxes(p, torch.tensor([[0.0, 0.0, 100.0, 0.0]]))
    assert math.exp(BBOX_XFORM_CLIP) == pytest.approx(62.5)
    torch.testing.assert_close(out, torch.tensor([[15 - 312.5, 10.0, 15 + 312.5, 20.0]]))
    clipped = decode_boxes(p, torch.tensor([[0.0, 0.0, 100.0, 0.0]]), clip_to=(18, 100))
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 10.0, 100.0, 18.0]]))


def test_decode_rejects_bad_shapes_and_weights() -> None:
    p = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"deltas must have shape \(R, 4K\) with R = 3.*got shape \(3, 6\)"):
        decode_boxes(p, torch.zeros(3, 6))
    with pytest.raises(ValueError, match=r"got shape \(2, 4\)"):
        decode_boxes(p, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="weights must be 4 positive"):
        decode_boxes(p, torch.zeros(3, 4), weights=(10.0, 10.0, 0.0, 5.0))
    with pytest.raises(ValueError, match=r"same shape \(R, 4\), got \(3, 4\) and \(2, 4\)"):
        encode_boxes(p, torch.zeros(2, 4))
    with pytest.raises(TypeError, match=r"floating-point.*int64"):
        encode_boxes(torch.zeros(3, 4, dtype=torch.int64), p)


def test_flip_hand_value_and_involution() -> None:
    np.testing.assert_array_equal(flip_boxes(np.array([[0.0, 0.0, 10.0, 5.0]]), 100), [[90.0, 0.0, 100.0, 5.0]])
    boxes = _random_boxes(np.random.default_rng(1), 20)
    np.testing.assert_allclose(flip_boxes(flip_boxes(boxes, 317), 317), boxes, rtol=0, atol=1e-12)
    quarter_pixels = np.round(boxes * 4) / 4  # 317 - x is exact for these, so the round trip is too
    np.testing.assert_array_equal(flip_boxes(flip_boxes(quarter_pixels, 317), 317), quarter_pixels)
    t = torch.from_numpy(boxes)
    flipped = flip_boxes(t, 317)
    assert isinstance(flipped, torch.Tensor)
    np.testing.assert_array_equal(flipped.numpy(), flip_boxes(boxes, 317))
    np.testing.assert_array_equal(t.numpy(), boxes)  # input untouched


def test_flip_keeps_width_and_mirrors_centre() -> None:
    b = np.array([[3.0, 1.0, 17.5, 9.0]])
    f = flip_boxes(b, 40)
    assert f[0, 2] - f[0, 0] == b[0, 2] - b[0, 0]
    assert (f[0, 0] + f[0, 2]) / 2 == 40 - (b[0, 0] + b[0, 2]) / 2


def test_clip_boxes_numpy_and_torch() -> None:
    b = np.array([[-5.0, -1.0, 50.0, 30.0], [60.0, 5.0, 70.0, 8.0]])
    expected = [[0.0, 0.0, 40.0, 20.0], [40.0, 5.0, 40.0, 8.0]]  # second box outside on the right: empty
    np.testing.assert_array_equal(clip_boxes(b, (20, 40)), expected)
    np.testing.assert_array_equal(clip_boxes(torch.from_numpy(b), (20, 40)).numpy(), expected)
    assert b[0, 0] == -5.0  # input untouched


def test_scale_boxes() -> None:
    b = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    out = scale_boxes(b, 2)
    np.testing.assert_array_equal(out, [[2.0, 4.0, 6.0, 8.0]])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(scale_boxes(torch.from_numpy(b), (2.0, 0.5)).numpy(), [[2.0, 1.0, 6.0, 2.0]])
    for bad in (0.0, (1.0, -1.0), (1.0, 2.0, 3.0), math.inf):
        with pytest.raises(ValueError, match="scale must be one positive finite factor"):
            scale_boxes(b, bad)


def test_box_ops_reject_bad_input() -> None:
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\).*got shape \(2, 5\)"):
        flip_boxes(np.zeros((2, 5)), 10)
    with pytest.raises(TypeError, match=r"floating-point.*int64"):
        clip_boxes(np.zeros((2, 4), dtype=np.int64), (10, 10))
