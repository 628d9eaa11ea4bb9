"""golem-api as a user finds it on an index: the sdist and the wheel that ``python -m build`` makes, and the wheel
installed with its dependencies into a fresh virtual environment.

``python -m build`` makes the sdist and then the wheel from the unpacked sdist, so a file the sdist lacks is
missing from the wheel too. The build and the install run once for the module, each bounded in time; the
install uses pip as a user would (with the dependencies, from the configured indexes).
"""

from __future__ import annotations

import email.message
import email.parser
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("golem_api", "golem_local", "golem_shared")
BUILD_TIMEOUT = 300.0  # seconds; about 5 s once the build backend is cached, more when it is downloaded
INSTALL_TIMEOUT = 600.0  # seconds; about 10 s when pip's cache holds the dependencies
RUN_TIMEOUT = 60.0
REPO_URL = "https://github.com/golem-api/golem-api"


def _source_version() -> str:
    """The version that golem_api/_version.py declares (the build reads it from there)."""
    text = (ROOT / "golem_api" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert match, "golem_api/_version.py has no __version__ line"
    return match.group(1)


VERSION = _source_version()


def _package_files() -> list[str]:
    """Every file of the three packages in the tree (Python or not), as paths relative to the repository root."""
    return sorted(
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder with the sdist and the wheel, built once for the module."""
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert build.returncode == 0, f"python -m build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    wheels = list(dist.glob("*.whl"))
    assert [w.name for w in wheels] == [f"golem_api-{VERSION}-py3-none-any.whl"]
    return wheels[0]


@pytest.fixture(scope="module")
def sdist(dist: Path) -> Path:
    sdists = list(dist.glob("*.tar.gz"))
    assert [s.name for s in sdists] == [f"golem_api-{VERSION}.tar.gz"]
    return sdists[0]


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


@pytest.fixture(scope="module")
def sdist_names(sdist: Path) -> set[str]:
    """The sdist's paths without its top folder (``golem_api-VERSION/``)."""
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    top = f"golem_api-{VERSION}/"
    assert all(name.startswith(top) or name == top.rstrip("/") for name in names)
    return {name[len(top) :] for name in names if name.startswith(top)}


def _parse_metadata(text: str) -> email.message.Message:
    return email.parser.Parser().parsestr(text)


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        return _parse_metadata(archive.read(f"golem_api-{VERSION}.dist-info/METADATA").decode("utf-8"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtual environment with the wheel pip-installed (with its dependencies); its Python."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=RUN_TIMEOUT, capture_output=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert install.returncode == 0, f"pip install of the wheel failed:\n{install.stdout}\n{install.stderr}"
    return python


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a program of the installed environment outside the repository (so the tree cannot be imported)."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)


def test_the_licenses_are_in_the_wheel_and_the_sdist(wheel_names: set[str], sdist_names: set[str]) -> None:
    for name in ("LICENSE", "COPYING"):
        assert f"golem_api-{VERSION}.dist-info/licenses/{name}" in wheel_names
        assert name in sdist_names


def test_the_metadata_is_what_an_index_shows(metadata: email.message.Message) -> None:
    assert metadata["Name"] == "golem-api"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "LGPL-3.0-or-later"
    assert sorted(metadata.get_all("License-File") or []) == ["COPYING", "LICENSE"]
    assert metadata["Requires-Python"] == ">=3.10"
    classifiers = set(metadata.get_all("Classifier") or [])
    assert {
        "Operating System :: POSIX :: Linux",
        "Typing :: Typed",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    } <= classifiers
    assert not any(c.startswith("License ::") for c in classifiers), "PEP 639: the expression replaces them"
    urls = dict(line.split(", ", 1) for line in metadata.get_all("Project-URL") or [])
    assert urls["Source"] == REPO_URL
    assert urls["Issues"] == f"{REPO_URL}/issues"
    assert {"Homepage", "Documentation", "Changelog"} <= set(urls)
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == (ROOT / "README.md").read_text(encoding="utf-8").strip()


def test_the_metadata_requires_the_declared_dependencies(metadata: email.message.Message) -> None:
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    required = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert sorted(required) == sorted(declared)


def test_the_sdist_has_the_same_metadata(sdist: Path, metadata: email.message.Message) -> None:
    with tarfile.open(sdist) as archive:
        member = archive.extractfile(f"golem_api-{VERSION}/PKG-INFO")
        assert member is not None
        pkg_info = _parse_metadata(member.read().decode("utf-8"))
    for field in ("Name", "Version", "License-Expression", "Requires-Python"):
        assert pkg_info[field] == metadata[field], field
    assert pkg_info.get_all("Classifier") == metadata.get_all("Classifier")


def test_the_wheel_holds_every_file_of_the_three_packages(wheel_names: set[str]) -> None:
    missing = [name for name in _package_files() if name not in wheel_names]
    assert not missing, f"files of the packages missing from the wheel: {missing}"
    for package in PACKAGES:
        assert f"{package}/py.typed" in wheel_names
    assert "golem_local/runtime/agent.py" in wheel_names, "the vm runtime runs this script in its sandbox"
    outside = {name.split("/", 1)[0] for name in wheel_names} - {*PACKAGES, f"golem_api-{VERSION}.dist-info"}
    assert not outside, f"the wheel installs unexpected top-level names: {outside}"


def test_the_wheel_declares_the_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(f"golem_api-{VERSION}.dist-info/entry_points.txt").decode("utf-8")
    assert "[console_scripts]" in entry_points
    assert "golem-api = golem_api._cli:main" in entry_points


def test_the_sdist_holds_the_sources_and_tests_but_no_local_clutter(sdist_names: set[str]) -> None:
    for name in ("pyproject.toml", "README.md", "tests/conftest.py", *_package_files()):
        assert name in sdist_names, name
    clutter = {".venv", ".venv-yapapi", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "dist", ".git"}
    found = sorted(name for name in sdist_names if clutter & set(name.split("/")) or name.endswith(".pyc"))
    assert not found, f"the sdist carries local files: {found[:20]}"


def test_the_installed_command_prints_the_version(installed: Path, tmp_path: Path) -> None:
    command = _run([str(installed.parent / "golem-api"), "--version"], tmp_path)
    assert command.returncode == 0, command.stderr
    assert command.stdout.strip() == f"golem-api {VERSION}"
    module = _run([str(installed), "-m", "golem_api", "--version"], tmp_path)
    assert module.returncode == 0, module.stderr
    assert module.stdout.strip() == f"golem-api {VERSION}"


def test_the_installed_package_imports_from_its_environment(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import golem_api, golem_local.runtime.vm as vm\n"
        "from golem_api import Golem, Service\n"
        "print(golem_api.__version__)\n"
        "print(golem_api.__file__)\n"
        "print(vm._AGENT_SCRIPT.is_file())\n"
    )
    result = _run([str(installed), "-c", probe], tmp_path)
    assert result.returncode == 0, result.stderr
    version, location, agent_found = result.stdout.split()
    assert version == VERSION
    assert Path(location).is_relative_to(installed.parents[1]), f"imported from {location}, not the venv"
    assert agent_found == "True", "the sandbox's agent script is missing from the installed package"
