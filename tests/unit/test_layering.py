"""Layering rules of DESIGN.md §4 that a reviewer should never have to check by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MAPPERS = Path(__file__).parents[2] / "mappers"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("path", sorted(MAPPERS.rglob("*.py")), ids=lambda p: p.name)
def test_mappers_never_import_gateway(path: Path) -> None:
    offending = {m for m in _imported_modules(path) if m == "gateway" or m.startswith("gateway.")}
    assert not offending, f"{path.name} imports {sorted(offending)}: mappers must stay below gateway"


def test_the_check_sees_mapper_modules() -> None:
    assert (MAPPERS / "xdm.py").exists()
    assert "mappers.errors" in _imported_modules(MAPPERS / "xdm.py")
