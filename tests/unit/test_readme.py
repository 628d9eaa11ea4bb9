"""The README's links work where a user reads it: on the package index as well as on GitHub.

An index shows README.md as the project's description, away from the repository, so a relative link there
leads nowhere: every link must be absolute (http or https). A link into the project's own repository
(``https://github.com/golem-api/golem-api/blob/main/PATH``, or ``/tree/main/PATH``) must name a PATH that exists
in the tree; the project URLs in pyproject.toml are held to the same rule.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
REPO_URL = "https://github.com/golem-api/golem-api"

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^\s<>]*)>")
_HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
_OWN_LINK = re.compile(re.escape(REPO_URL) + r"/(?:blob|tree)/main/([^\s)\"'<>#?]+)")


def markdown_links(text: str) -> list[str]:
    """The targets of a Markdown text's links and images (inline, reference, autolinks, HTML), outside code."""
    prose = _CODE_SPAN.sub("", _FENCE.sub("", text))
    return [target for pattern in (_INLINE, _REFERENCE, _AUTOLINK, _HTML) for target in pattern.findall(prose)]


def own_paths(text: str) -> list[str]:
    """The repository paths named by links into the project's own repository on its main branch."""
    return [unquote(path).rstrip("/") for path in _OWN_LINK.findall(text)]


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_link_finder_sees_every_kind_of_link_and_skips_code() -> None:
    sample = (
        'See [the docs](docs/index.md), ![a plot](docs/plot.png "title") and <https://example.org/x>.\n'
        '<a href="examples/">examples</a>\n'
        "[ref]: docs/ref.md\n"
        "`[not a link](inside/code.md)`\n"
        "```\n[nor this](fenced/code.md)\n```\n"
    )
    assert sorted(markdown_links(sample)) == sorted(
        ["docs/index.md", "docs/plot.png", "https://example.org/x", "examples/", "docs/ref.md"]
    )
    assert own_paths(f"[a]({REPO_URL}/blob/main/docs/a%20b.md#part) and {REPO_URL}/tree/main/docs/") == [
        "docs/a b.md",
        "docs",
    ]


def test_every_readme_link_is_absolute() -> None:
    links = markdown_links(_readme())
    assert links, "the README has links; the finder found none"
    relative = [link for link in links if urlsplit(link).scheme not in ("http", "https")]
    assert not relative, f"README links that break on a package index (make them absolute): {relative}"


def test_links_into_the_repository_name_files_that_exist() -> None:
    readme_paths = own_paths(_readme())
    assert readme_paths, "the README links into the repository; the finder found none"
    pyproject_paths = own_paths((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    missing = sorted({path for path in [*readme_paths, *pyproject_paths] if not (ROOT / path).exists()})
    assert not missing, f"links to {REPO_URL}/blob/main/… name paths missing from the tree: {missing}"
