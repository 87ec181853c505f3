"""bench.trunk_rank's spectrum statistics against cases whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from bench.trunk_rank import spectrum_stats


def test_independent_equal_channels_have_full_rank_and_one_direction_has_rank_one() -> None:
    rng = np.random.default_rng(0)
    iso = spectrum_stats(rng.standard_normal((200_000, 8)))
    assert iso["effective_rank"] == pytest.approx(8, rel=0.01) and iso["dead"] == 0
    assert iso["top5_share"] == pytest.approx(5 / 8, abs=0.01) and iso["rms"] == pytest.approx(1, abs=0.01)
    line = spectrum_stats(np.outer(rng.standard_normal(1000), np.arange(1, 5)))
    assert line["effective_rank"] == pytest.approx(1, abs=1e-6) and line["top5_share"] == pytest.approx(1)


def test_dead_channels_are_counted_and_add_no_rank() -> None:
    rng = np.random.default_rng(1)
    x = np.zeros((100_000, 4))
    x[:, :2] = np.maximum(rng.standard_normal((100_000, 2)), 0)  # two independent ReLU channels, two dead ones
    stats = spectrum_stats(x)
    assert stats["dead"] == 0.5 and stats["effective_rank"] == pytest.approx(2, rel=0.01)
