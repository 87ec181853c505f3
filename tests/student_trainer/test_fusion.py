"""Late fusion: logits averaged before the softmax, box deltas averaged, on one proposal set."""

from __future__ import annotations

import pytest
import torch

from student_trainer.fusion import FUSION_WEIGHTS, choose_fusion_weight, fuse_outputs


def _outputs(seed: int, proposals: int = 5, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(proposals, classes + 1, generator=g), torch.randn(proposals, 4 * (classes + 1), generator=g)


def test_hand_values() -> None:
    logits_a, logits_b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    deltas_a, deltas_b = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8]]), torch.tensor([[3.0, 2, 1, 0, -5, 6, 9, 0]])
    logits, deltas = fuse_outputs(logits_a, deltas_a, logits_b, deltas_b)
    torch.testing.assert_close(logits, torch.tensor([[1.0, 2.0]]), rtol=0, atol=0)
    torch.testing.assert_close(deltas, torch.tensor([[2.0, 2, 2, 2, 0, 6, 8, 4]]), rtol=0, atol=0)
    # weight 0.25 on a: 0.25 * 2 + 0.75 * 0 = 0.5; 0.25 * 0 + 0.75 * 4 = 3.
    logits, _ = fuse_outputs(logits_a, deltas_a, logits_b, deltas_b, weight=0.25)
    torch.testing.assert_close(logits, torch.tensor([[0.5, 3.0]]), rtol=0, atol=0)


def test_weight_extremes_select_one_detector() -> None:
    (la, da), (lb, db) = _outputs(0), _outputs(1)
    assert all(torch.equal(x, y) for x, y in zip(fuse_outputs(la, da, lb, db, weight=1.0), (la, da), strict=True))
    assert all(torch.equal(x, y) for x, y in zip(fuse_outputs(la, da, lb, db, weight=0.0), (lb, db), strict=True))


@pytest.mark.parametrize("weight", [0.5, 0.3, 0.9])
def test_equal_inputs_come_back_unchanged(weight: float) -> None:
    logits, deltas = _outputs(2)
    fused_logits, fused_deltas = fuse_outputs(logits, deltas, logits.clone(), deltas.clone(), weight=weight)
    assert torch.equal(fused_logits, logits) and torch.equal(fused_deltas, deltas)


def test_fusion_is_before_the_softmax() -> None:
    # RGB is sure of class 1, depth is sure it is not class 1 (it prefers class 2).
    logits_rgb, logits_depth = torch.tensor([[0.0, 6.0, 0.0]]), torch.tensor([[0.0, -6.0, 3.0]])
    deltas = torch.zeros(1, 12)
    fused, _ = fuse_outputs(logits_rgb, deltas, logits_depth, deltas)
    p_rgb, p_depth = logits_rgb.softmax(1), logits_depth.softmax(1)
    p_fused = fused.softmax(1)
    # The paper's choice: softmax of the mean logits = normalised geometric mean of the probabilities ...
    geometric = (p_rgb * p_depth).sqrt()
    torch.testing.assert_close(p_fused, geometric / geometric.sum(1, keepdim=True))
    # ... not the arithmetic mean of the probabilities: mean logits (0, 0, 1.5) give class 1 only 0.154 and
    # class 2 0.691, whereas the mean probabilities keep RGB's class 1 on top (0.498 vs 0.478).
    p_mean = (p_rgb + p_depth) / 2
    torch.testing.assert_close(p_fused, torch.tensor([[0.1543, 0.1543, 0.6914]]), rtol=0, atol=1e-4)
    torch.testing.assert_close(p_mean, torch.tensor([[0.0249, 0.4976, 0.4775]]), rtol=0, atol=1e-4)
    assert p_fused.argmax().item() == 2 and p_mean.argmax().item() == 1


def test_shapes_must_match() -> None:
    (la, da), (lb, db) = _outputs(0, proposals=5), _outputs(1, proposals=6)
    with pytest.raises(ValueError, match=r"same proposals.*of a are \(5, 4\), of b \(6, 4\)"):
        fuse_outputs(la, da, lb, db)
    (lc, dc) = _outputs(1, classes=4)
    with pytest.raises(ValueError, match=r"of a are \(5, 4\), of b \(5, 5\)"):
        fuse_outputs(la, da, lc, dc)
    with pytest.raises(
        ValueError,
        match=r"detector b: expected logits \(R, K\+1\) and deltas \(R, 4\*\(K\+1\)\), "
        r"got logits \(5, 4\) and deltas \(5, 4\)",
    ):
        fuse_outputs(la, da, la, da[:, :4])
    with pytest.raises(ValueError, match=r"detector a: .*got logits \(4,\)"):
        fuse_outputs(la[0], da, la, da)


def test_bad_weight_and_dtypes() -> None:
    la, da = _outputs(0)
    for weight in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="weight must be in"):
            fuse_outputs(la, da, la, da, weight=weight)
    with pytest.raises(TypeError, match="share one dtype"):
        fuse_outputs(la, da, la.double(), da.double())


def test_fusion_weight_is_the_best_on_validation_with_ties_to_the_even_average() -> None:
    assert FUSION_WEIGHTS[0] == 0.0 and FUSION_WEIGHTS[-1] == 1.0 and 0.5 in FUSION_WEIGHTS
    assert choose_fusion_weight({0.3: 0.61, 0.5: 0.62, 0.8: 0.70, 1.0: 0.69}) == 0.8
    assert choose_fusion_weight({0.2: 0.7, 0.4: 0.7, 0.7: 0.7, 1.0: 0.5}) == 0.4  # a tie: nearest 0.5
    assert choose_fusion_weight({0.5: float("nan"), 0.9: 0.1}) == 0.9
    with pytest.raises(ValueError, match="no finite"):
        choose_fusion_weight({0.5: float("nan")})
