"""Layering rules of DESIGN.md §4 that a reviewer should never have to check by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
MAPPERS = ROOT / "mappers"
GATEWAY = ROOT / "gateway"
# Intake is the inbound side's one door into the store (DESIGN.md §4), with the value types it shares.
STORE_ENTRY = {"intake.py", "arrival.py"}


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


def _uses_sql(module: str) -> bool:
    return module == "sqlalchemy" or module.startswith(("sqlalchemy.", "psycopg"))


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(GATEWAY.rglob("*.py")) if "store" not in p.relative_to(GATEWAY).parts],
    ids=lambda p: str(p.relative_to(GATEWAY)),
)
def test_only_the_store_touches_sql(path: Path) -> None:
    offending = {m for m in _imported_modules(path) if _uses_sql(m)}
    assert not offending, (
        f"{path.relative_to(ROOT)} imports {sorted(offending)}: only gateway/store speaks SQL"
    )


@pytest.mark.parametrize(
    "path",
    sorted((GATEWAY / "outbound" / "transports").glob("*.py"))
    + [p for p in sorted((GATEWAY / "inbound").glob("*.py")) if p.name not in STORE_ENTRY],
    ids=lambda p: str(p.relative_to(GATEWAY)),
)
def test_protocol_modules_do_not_reach_into_the_store(path: Path) -> None:
    # The store package, not ``gateway.store_health`` (the outage tracker every door may wait on, no SQL).
    offending = {m for m in _imported_modules(path) if m == "gateway.store" or m.startswith("gateway.store.")}
    assert not offending, (
        f"{path.relative_to(ROOT)} imports {sorted(offending)}: protocol code stays off the store"
    )
