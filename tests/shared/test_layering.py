"""The layering the README states, checked on the source: ``shared`` imports no other package of the repo, the two
services never import each other, and nothing imports the orchestrator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "xmodal_data", "teacher_server", "student_trainer", "xmodal_pipeline")
ALLOWED = {
    "shared": {"shared"},
    "xmodal_data": {"shared", "xmodal_data"},
    "teacher_server": {"shared", "teacher_server"},
    "student_trainer": {"shared", "student_trainer", "xmodal_data"},  # proposals compute flow for frames without it
    "xmodal_pipeline": set(PACKAGES),
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_its_layer_allows(package):
    offenders = {str(p.relative_to(REPO)): sorted(bad) for p in (REPO / package).rglob("*.py")
                 if (bad := _imported_packages(p) - ALLOWED[package])}
    assert offenders == {}
