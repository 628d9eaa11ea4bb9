"""The documentation site builds with ``mkdocs build --strict`` and has the pages a reader looks for.

The build runs in a subprocess (the venv's own mkdocs, bounded in time) into a temporary directory, so the
test reads what a reader would get: every page of the nav rendered, the API reference generated from the
docstrings, and no warning (strict mode turns a broken link, a missing page or an unresolved reference into a
failure).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 45.0  # seconds; the build takes about 2 s on a 2-core machine

PAGES = ("quickstart", "concepts", "local-network", "live-network", "images", "architecture")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built once for the module's tests; fails with mkdocs' own output when the build fails."""
    site_dir = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    build = subprocess.run(
        [*command, "--site-dir", str(site_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    return site_dir


def _text(page: Path) -> str:
    """A page's visible text, roughly: tags dropped, whitespace folded."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def test_every_guide_page_is_built(site: Path) -> None:
    missing = [name for name in PAGES if not (site / name / "index.html").is_file()]
    assert not missing, f"pages missing from the site: {missing}"
    assert (site / "index.html").is_file()


def test_quickstart_gives_the_two_commands(site: Path) -> None:
    text = _text(site / "quickstart" / "index.html")
    assert "./scripts/main" in text
    assert "./scripts/test" in text


def test_api_reference_is_generated_from_docstrings(site: Path) -> None:
    golem = (site / "api" / "golem" / "index.html").read_text(encoding="utf-8")
    assert 'id="golem_api.golem.Golem.run_service"' in golem
    services = (site / "api" / "services" / "index.html").read_text(encoding="utf-8")
    for anchor in ("golem_api.services.service.Service", "golem_api.services.state.ServiceState"):
        assert f'id="{anchor}"' in services, anchor
    assert 'id="golem_api.services.cluster.Cluster"' in services
    # the docstring of ServiceState's module is there, with its transitions
    assert "mark_unresponsive" in _text(site / "api" / "services" / "index.html")


def test_docstring_roles_become_links_not_text(site: Path) -> None:
    leftovers = {
        str(page.relative_to(site)): found
        for page in (site / "api").rglob("*.html")
        if (found := re.findall(r":(?:class|meth|func|mod|data|attr|exc):<code>", page.read_text(encoding="utf-8")))
    }
    assert not leftovers, f"reStructuredText roles shown as text: {leftovers}"
    services = (site / "api" / "services" / "index.html").read_text(encoding="utf-8")
    # `:class:`~golem_api.errors.CommandExecutionError`` in Service's docstring links to the errors page
    assert 'href="../errors/#golem_api.errors.CommandExecutionError"' in services


def test_search_index_covers_the_guides(site: Path) -> None:
    index = (site / "search" / "search_index.json").read_text(encoding="utf-8")
    for phrase in ("bubblewrap", "YAGNA_APPKEY", "debit note"):
        assert phrase in index, phrase
