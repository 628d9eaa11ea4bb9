"""A mkdocs hook that makes the reStructuredText roles of the docstrings read well in the API reference.

The docstrings of golem-api are written for both ``help()`` and the site, in the reStructuredText habit:
``:class:`~golem_api.events.EventBus```, ``:meth:`stop```, a paragraph ending in ``::`` before an example.
mkdocstrings renders them as Markdown, where the role name would show as text (``:class:EventBus``). This hook
rewrites the rendered HTML of each page: a role around a code span becomes an *optional* cross-reference that
mkdocs-autorefs turns into a link when the object is documented on the site (and into plain code when it is
not, without a warning, so the strict build stays clean); ``~`` shortens the shown name to its last part, as
Sphinx does; a paragraph's closing ``::`` becomes ``:``, and a paragraph that is only ``::`` goes.
"""

from __future__ import annotations

import html
import re
from typing import Any

__all__ = ["on_page_content"]

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|data|attr|exc|obj):<code>(?P<target>[^<]+)</code>")
_LITERAL_INTRO = re.compile(r"::</p>")
_LONE_LITERAL_INTRO = re.compile(r"<p>::</p>\s*")


def _reference(match: re.Match[str]) -> str:
    target = html.unescape(match["target"]).strip()
    short = target.startswith("~")
    identifier = target.lstrip("~").removesuffix("()")
    shown = identifier.rsplit(".", 1)[-1] if short else identifier
    if target.endswith("()"):
        shown += "()"
    return (
        f'<autoref identifier="{html.escape(identifier, quote=True)}" optional>'
        f"<code>{html.escape(shown)}</code></autoref>"
    )


def on_page_content(html_text: str, **_: Any) -> str:
    """Rewrite roles into optional cross-references, and drop the ``::`` that introduce literal blocks."""
    html_text = _ROLE.sub(_reference, html_text)
    return _LITERAL_INTRO.sub(":</p>", _LONE_LITERAL_INTRO.sub("", html_text))
