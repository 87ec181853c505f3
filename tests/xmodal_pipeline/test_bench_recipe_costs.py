"""The recipes' cost benchmark runs (the cheap units; no timing is asserted: it is a benchmark, not a test)."""

from __future__ import annotations

import json

import pytest

from tests.servers import run_cli

pytestmark = pytest.mark.slow


def test_bench_recipe_costs_measures_loader_target_and_proposal_units(tmp_path):
    out = tmp_path / "costs.json"
    run_cli("bench.recipe_costs", "--repeat", "1", "--units", "input", "target", "proposals", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert {r["unit"] for r in rows} == {"student input", "target decode", "proposals hybrid", "proposals edge_boxes"}
    assert all(r["s_per_unit"] > 0 for r in rows)
