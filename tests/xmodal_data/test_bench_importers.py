"""The importers' benchmark runs end to end (no timing is asserted: it is a benchmark, not a test)."""

from __future__ import annotations

import json

import pytest

from tests.servers import run_cli

pytestmark = pytest.mark.slow


def test_bench_importers_measures_every_importer_and_fill(tmp_path):
    out = tmp_path / "importers.json"
    run_cli("bench.importers", "--repeat", "1", "--ucf-frames", "20", "--json", str(out))
    result = json.loads(out.read_text())
    fills = {r["fill"]: r for r in result["fill"]}
    assert fills["colorization, direct (toolbox)"]["hha_abs_diff"] == [0.0, 0.0, 0.0]
    assert max(fills["colorization, block Gauss-Seidel (default)"]["hha_abs_diff"]) < 0.01
    assert all(result[k][f"{u}_cpu_ms"] > 0 for k, u in (("nyud2_raw", "frame"), ("ucf101", "pair"),
                                                          ("jhmdb", "frame")))
