"""experiments/ and benchmarks/ scripts stay small and share code through public names only
(issue 27): every file under 400 lines; no script imports (or reads) a module or a name
starting with ``_`` from another module of experiments/ or benchmarks/ (``bench_common.py``,
not ``_common.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("experiments", "benchmarks")
SCRIPTS = sorted(p for folder in FOLDERS for p in (ROOT / folder).glob("*.py"))
SIBLINGS = {p.stem for folder in FOLDERS for p in (ROOT / folder).glob("*.py")}


def _ids(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("path", SCRIPTS, ids=_ids)
def test_under_400_lines(path):
    assert len(path.read_text().splitlines()) < 400, f"{_ids(path)}: split it (issue 27)"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(tree: ast.Module) -> list[str]:
    """``module._name`` of every private name taken from a sibling module, and every import
    of a private module (``import _common``: a sibling, renamed or not)."""
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if _private(top):
                found.append(node.module)
            if node.module in SIBLINGS or _private(top):
                found += [f"{node.module}.{a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if _private(a.name.split(".")[0])]
            modules |= {a.asname or a.name for a in node.names
                        if a.name in SIBLINGS or _private(a.name)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and _private(node.attr)):
            found.append(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", SCRIPTS, ids=_ids)
def test_no_private_names_from_sibling_modules(path):
    assert private_uses(ast.parse(path.read_text())) == []


def test_the_check_sees_private_imports():
    tree = ast.parse("import compare\nfrom compare import _nest, SPECS\nx = compare._mean_std")
    assert private_uses(tree) == ["compare._nest", "compare._mean_std"]
    tree = ast.parse("from __future__ import annotations\nimport _common\n"
                     "from _common import median\nx = _common.timed_round")
    assert private_uses(tree) == ["_common", "_common"]           # the module, twice
    assert "bench_common" in SIBLINGS and "_common" not in SIBLINGS
