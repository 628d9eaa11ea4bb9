"""The two halves stay apart: the layout contract holds, fails on a wrong import, and `import golem_api` loads
nothing of the local network."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import golem_api
from tests.contract import check

ROOT = Path(__file__).resolve().parents[2]


def test_the_tree_keeps_the_layout_contract() -> None:
    assert check(ROOT) == []


def _copy(tmp_path: Path) -> Path:
    for package in ("golem_api", "golem_local", "golem_shared"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _with_line(tmp_path: Path, module: str, line: str) -> list[str]:
    """The contract's violations in a copy of the tree where ``module`` (a path) ends with ``line``."""
    root = _copy(tmp_path)
    path = root / module
    path.write_text(path.read_text() + "\n" + line + "\n")
    return check(root)


def test_a_requestor_module_importing_the_local_network_breaks_the_contract(tmp_path: Path) -> None:
    (violation,) = _with_line(tmp_path, "golem_api/events.py", "from golem_local.node import LocalNode")
    assert violation.startswith("golem_api/events.py:")
    assert "only through golem_api/_local.py" in violation


def test_the_door_itself_may_not_import_the_local_network_at_module_level(tmp_path: Path) -> None:
    (violation,) = _with_line(tmp_path, "golem_api/_local.py", "import golem_local.node")
    assert "at module level in the one door" in violation


def test_the_local_network_may_not_import_the_requestor(tmp_path: Path) -> None:
    lazily = "def late():\n    from golem_api.events import EventBus"
    (violation,) = _with_line(tmp_path, "golem_local/market.py", lazily)
    assert violation.startswith("golem_local/market.py:")
    assert "never the requestor" in violation


def test_the_shared_core_imports_neither_half(tmp_path: Path) -> None:
    violations = _with_line(tmp_path, "golem_shared/pricing.py", "from golem_api import errors\nimport golem_local")
    assert len(violations) == 2


def test_the_contract_command_exits_1_and_names_the_file(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    events = root / "golem_api" / "payload.py"
    events.write_text(events.read_text() + "\nimport golem_local\n")
    done = subprocess.run(
        [sys.executable, "-m", "tests.contract", str(root)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "golem_api/payload.py:" in done.stdout


def test_import_golem_api_loads_no_local_network_module_and_no_aiohttp_web() -> None:
    code = (
        "import sys, golem_api\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'golem_local' or m == 'aiohttp.web')\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_local_names_at_the_top_level_are_the_local_networks_classes() -> None:
    from golem_local.config import LocalNetworkConfig, ProviderSpec
    from golem_local.node import LocalNode

    assert golem_api.LocalNetworkConfig is LocalNetworkConfig
    assert golem_api.ProviderSpec is ProviderSpec
    assert golem_api.LocalNode is LocalNode


def test_no_public_class_name_is_used_by_both_halves() -> None:
    import ast

    def public_classes(package: str) -> set[str]:
        names = set()
        for path in (ROOT / package).rglob("*.py"):
            if any(part.startswith("_") and part != "__init__.py" for part in path.relative_to(ROOT).parts):
                continue
            tree = ast.parse(path.read_text())
            names |= {n.name for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")}
        return names

    assert public_classes("golem_api") & public_classes("golem_local") == set()
