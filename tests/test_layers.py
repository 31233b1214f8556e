"""The package's folders are layers: each imports only the layers below it (see the README)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "p2pnode"
ORDER = ["consensus", "chain", "wire", "net", "peer", "api", "local", "dashboard", "cli", "chaos"]
"""Lowest first; `local` and `dashboard` do not use each other."""
BESIDE = {"sim": {"consensus", "peer"}}
"""Packages outside the order: what each may use."""


def _allowed(layer: str) -> set[str]:
    if layer in BESIDE:
        return BESIDE[layer]
    below = set(ORDER[: ORDER.index(layer)])
    return below - {"local"} if layer == "dashboard" else below


def _imports(path: Path) -> set[str]:
    """The p2pnode packages a module imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "p2pnode" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_package_imports_only_the_layers_below_it() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ORDER) | set(BESIDE), "a new package needs its place in the order"
    outward = []
    for layer in packages:
        for module in (PACKAGE / layer).rglob("*.py"):
            used = _imports(module) - {layer}
            outward += [f"{module.relative_to(PACKAGE)} -> {u}" for u in used - _allowed(layer)]
    assert outward == []


def test_the_package_root_holds_only_its_entry_points() -> None:
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules == {"__init__.py", "__main__.py"}
