"""The layering contract's exceptions stay what they say they are.

scripts/test runs import-linter over the contracts in pyproject.toml. The acyclic contract ignores a
few imports; this checks that each of them is a type-only import (under `if TYPE_CHECKING:`), so
a real run-time circle can never hide behind one of those lines.
"""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _ignored_imports() -> list[tuple[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    out = []
    for contract in config["tool"]["importlinter"]["contracts"]:
        for line in contract.get("ignore_imports", []):
            importer, imported = (s.strip() for s in line.split("->"))
            out.append((importer, imported))
    return out


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported module, only under TYPE_CHECKING) for every import in `module`'s source."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text())
    package = module.rsplit(".", 1)[0]
    found: list[tuple[str, bool]] = []

    def visit(nodes: list[ast.stmt], type_only: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                visit(node.body, True)
                visit(node.orelse, type_only)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                found.append((base, type_only))
                found.extend((f"{base}.{a.name}", type_only) for a in node.names)
            elif isinstance(node, ast.Import):
                found.extend((a.name, type_only) for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.Try, ast.With)):
                visit(getattr(node, "body", []), type_only)

    visit(tree.body, False)
    return found


def test_ignored_imports_are_type_only() -> None:
    ignored = _ignored_imports()
    assert ignored, "the acyclic contract lists its type-only exceptions"
    for importer, imported in ignored:
        seen = [type_only for name, type_only in _imports(importer) if name == imported]
        assert seen, f"{importer} does not import {imported}: drop the ignore line"
        assert all(seen), f"{importer} imports {imported} at run time: that is a real import circle"
