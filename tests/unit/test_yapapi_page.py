"""``docs/yapapi.md`` stays true: it is in the site's nav, lists sixteen port blockers, and every test it names
exists (a renamed or deleted test fails here, not in a reader's hands)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "yapapi.md"
TOKEN = re.compile(r"`(?:(tests/[\w/]+\.py)|…)::(\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_the_page_is_in_the_nav() -> None:
    assert "yapapi.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_sixteen_blockers_each_with_tests_that_exist() -> None:
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## The port blockers", 1)[1]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(row.split("|")[1]) for row in rows] == list(range(1, 17))
    for row in rows:
        references = TOKEN.findall(row)
        assert references or "test_task_examples.py" in row, f"no test named in: {row}"
        current: str | None = None
        for file, name in references:  # `…::name` continues the file named before it
            current = file or current
            assert current is not None, f"`…::{name}` before any file in: {row}"
            path = ROOT / current
            assert path.is_file(), f"{current} is missing"
            assert name in _tests_in(path), f"{current}::{name} does not exist"
