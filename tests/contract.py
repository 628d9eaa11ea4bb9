"""The layout contract: which half of golem-api may import what.

- ``golem_shared`` (the shared core) imports neither half.
- ``golem_local`` (the embedded local network) imports ``golem_shared`` and never ``golem_api``.
- ``golem_api`` (the requestor) imports ``golem_local`` only in ``golem_api/_local.py``, the one door, and there
  only lazily: inside a function, or under ``if TYPE_CHECKING:`` for annotations.

Run as ``python -m tests.contract [ROOT]`` (``./scripts/test`` does, before pytest): it prints each violation
with its file and line and exits 1 if there is any. It reads the source with :mod:`ast`, so ``import x``,
``from x import y``, relative imports and ``importlib.import_module("x")`` with a literal name all count.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Violation", "check", "main"]

REQUESTOR, LOCAL, SHARED = "golem_api", "golem_local", "golem_shared"
DOOR = Path(REQUESTOR) / "_local.py"

FORBIDDEN = {
    SHARED: (REQUESTOR, LOCAL),
    LOCAL: (REQUESTOR,),
    REQUESTOR: (LOCAL,),
}


class Violation(str):
    """One import the contract forbids, as ``path:line: message``."""


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[ast.AST, str, bool]]:
    """Every import in ``tree`` as (node, absolute module name, lazy), where lazy means inside a function or
    under ``if TYPE_CHECKING:``."""

    def walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.AST, str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for inner in child.body:
                    yield from _one(inner, True)
                    yield from walk(inner, True)
                for inner in child.orelse:
                    yield from _one(inner, lazy)
                    yield from walk(inner, lazy)
                continue
            yield from _one(child, lazy)
            yield from walk(child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    def _one(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.AST, str, bool]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, lazy
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                keep = len(base) - node.level + (1 if is_package else 0)
                target = ".".join(base[:keep] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node, target, lazy
            for alias in node.names:  # `from golem_api import _local` names a submodule
                yield node, f"{target}.{alias.name}" if target else alias.name, lazy
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node, node.args[0].value, lazy

    yield from walk(tree, False)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top(name: str) -> str:
    return name.split(".", 1)[0]


@functools.lru_cache(maxsize=1024)
def _imports_of(text: str, filename: str, module: str, is_package: bool) -> tuple[tuple[int, str, bool], ...]:
    """The imports of a module's ``text``: (line, target, lazy) each. Kept by text: the tests check copies of the
    tree that differ in one file, and parsing every file again was most of their time."""
    found = _imports(ast.parse(text, filename=filename), module, is_package)
    return tuple((getattr(node, "lineno", 0), target, lazy) for node, target, lazy in found)


def check(root: Path) -> list[Violation]:
    """The contract's violations in the tree at ``root`` (the repository's root)."""
    found: list[Violation] = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            module = _module_name(path, root)
            seen: set[tuple[int, str]] = set()
            text = path.read_text(encoding="utf-8")
            for line, target, lazy in _imports_of(text, str(relative), module, path.name == "__init__.py"):
                top = _top(target)
                if top not in forbidden:
                    continue
                if package == REQUESTOR and top == LOCAL and relative == DOOR and lazy:
                    continue
                key = (line, top)
                if key in seen:
                    continue
                seen.add(key)
                if package == REQUESTOR:
                    why = (
                        f"imports {target} at module level in the one door; import it inside a function"
                        if relative == DOOR
                        else f"imports {target}; the requestor reaches the local network only through {DOOR}"
                    )
                elif package == LOCAL:
                    why = f"imports {target}; the local network may import {SHARED} but never the requestor"
                else:
                    why = f"imports {target}; the shared core imports neither half"
                found.append(Violation(f"{relative}:{line}: {why}"))
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    violations = check(root)
    for violation in violations:
        print(violation)
    if violations:
        print(f"layout contract: {len(violations)} forbidden import(s); see tests/contract.py", file=sys.stderr)
        return 1
    print(f"layout contract: kept ({REQUESTOR} → {DOOR} → {LOCAL}; {SHARED} shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
