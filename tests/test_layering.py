"""The package's dependency rule (docs/design.md): data flows one way, and each part imports only those below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "common" / "neurobundles"

FOUNDATION = {"paths", "errors", "filenames", "subvolumes", "plausibility", "__version__"}
"""Modules every part may use: environment locations, error types, file names, sub-volume geometry, input
plausibility checks and warnings (and the package version)."""

ALLOWED: dict[str, set[str]] = {
    "paths": set(),
    "errors": set(),
    "filenames": set(),
    "subvolumes": set(),
    "plausibility": set(),
    "atomic": {"errors"},
    "networks": set(),
    "labels": set(),
    "losses": set(),
    "metrics": set(),
    "transforms": {"labels", "atomic"},
    "inferers": {"networks"},
    "data": {"atomic"},
    "outputs": {"atomic", "labels", "data"},
    "engines": {"atomic", "metrics", "outputs", "labels", "data", "transforms"},
    "zoo": {"atomic", "networks", "labels", "data"},
    "mtneuro": {"atomic", "networks", "data", "metrics"},
    "tools": {"*"},
    "cli": {"*"},
    "bench": {"*"},
    "__main__": {"*"},
    "__init__": {"*"},
}
"""Part → the parts it may import besides :data:`FOUNDATION` (``*``: anything; entry points only)."""


def _part(module: str) -> str:
    return module.split(".")[0]


def _imports(path: Path) -> set[str]:
    """Parts of ``neurobundles`` that ``path`` imports (absolute or relative, at any depth)."""
    relative = path.relative_to(PACKAGE).with_suffix("")
    package = list(relative.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("neurobundles.")}
            found |= {"__init__" for a in node.names if a.name == "neurobundles"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, *([node.module] if node.module else [])])
                found |= {target} if target else {a.name for a in node.names}
            elif node.module == "neurobundles":
                found |= {a.name for a in node.names}
            elif node.module and node.module.startswith("neurobundles."):
                found.add(node.module.split(".", 1)[1])
    return {_part(module) for module in found if module}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_parts_below_it(path):
    relative = path.relative_to(PACKAGE)
    part = relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 else relative.stem
    assert part in ALLOWED, f"{relative}: new part {part!r}; give it a place in ALLOWED and docs/design.md"
    allowed = ALLOWED[part]
    if "*" in allowed:
        return
    wrong = sorted(_imports(path) - allowed - FOUNDATION - {part})
    assert not wrong, f"{relative} ({part}) imports {wrong}; allowed: {sorted(allowed | FOUNDATION)}"


def test_the_rule_sees_a_backward_import(tmp_path):
    """The checker itself: a relative and an absolute import of a higher part are both found."""
    module = PACKAGE / "transforms" / "io.py"
    assert "errors" in _imports(module)
    assert _imports(PACKAGE / "zoo" / "packaging.py") >= {"zoo", "atomic"}
