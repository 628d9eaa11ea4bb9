"""golem-api works with the lowest versions of its dependencies that pyproject.toml allows.

A user whose environment already holds older releases gets them kept by pip as long as they meet our minimums,
so each minimum must be a release the library works with. The test makes a virtual environment, installs the
project (not editable) with ``uv pip install --resolution lowest-direct``, so that every direct dependency, the
``examples`` extra's too, is at its declared minimum (their own dependencies are the newest that fit), adds the
test tools at the versions of the running suite without letting them move any of those, and runs a part of the
suite with that environment's pytest: the quick unit tests, the services and the market over a real local node,
and the images (built in bubblewrap, served by the node's registry, ``FROM python`` using that environment).

The tree's tests import ``tests.*`` from the repository; ``--import-mode=append`` puts the repository after
site-packages on ``sys.path``, so ``golem_api`` and the rest come from the environment, which a small plugin
checks at the end of each run.

What failed on the way to the present minimums (Python 3.11, newest transitive dependencies):

- aiohttp 3.10.0 to 3.10.6 with yarl >= 1.13: ``request.url`` is built with ``URL.build(host="127.0.0.1:PORT")``
  and yarl refuses the colon (``Host '127.0.0.1:…' cannot contain ':'``), so the node's image registry answers
  500 to ``GET /v1/image/info``; aiohttp 3.10.7 builds it with ``authority=``. (3.10.5 and 3.10.6 work with
  yarl 1.12, but nothing keeps a user's yarl there.)
- python-statemachine 2.1.0 to 2.6.0: a state does not compare equal to its name, so
  ``instance.state == "running"`` is false for a running instance; 3.0.0 passes.
- attrs 23.1.0, flatbuffers 24.3.6 and rich 13.0.0 (the minimums, and lower ones tried: attrs 22.2.0,
  flatbuffers 22.9.24, rich 12.0.0), numpy 1.26.0 and matplotlib 3.8.0 pass.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
VENV_TIMEOUT = 120.0
INSTALL_TIMEOUT = 600.0  # seconds; about 5 s with uv's cache filled, minutes when the wheels are downloaded
SUITE_TIMEOUT = 600.0  # seconds; each run takes about 20 s on a 2-core machine

DIRECT = ("aiohttp", "attrs", "flatbuffers", "python-statemachine", "rich", "numpy", "matplotlib")
"""The dependencies held at their minimums: the runtime ones and the ``examples`` extra's (the images need it)."""

TOOLS = (
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "hypothesis",
    "psutil",
    "pyyaml",
    "jsonschema",  # tests/spec_validator.py
    "referencing",
)
"""What the chosen tests import besides golem-api, at the versions of the running suite."""

QUICK = ("tests/unit", "tests/integration/test_services.py", "tests/integration/test_local_node_market.py")
IMAGES = ("tests/integration/test_images.py",)  # a slow module: run without the `not slow` filter

_PROBE = '''
"""Written by tests/unit/test_lowest_versions.py: where the run imported golem-api from."""
import json, os, sys

def pytest_sessionfinish(session, exitstatus):
    module = sys.modules.get("golem_api")
    with open(os.environ["GOLEM_API_PROBE_OUT"], "w") as out:
        json.dump({"golem_api": getattr(module, "__file__", None)}, out)
'''


def _uv() -> str:
    uv = pytest.importorskip("uv", reason="uv is in the test extra")
    return str(uv.find_uv_bin())


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    return result


def _installed(python: Path) -> dict[str, str]:
    """Name (normalised) → version of every distribution in the environment of ``python``."""
    listing = _run(
        [
            str(python),
            "-c",
            "import json, importlib.metadata as m; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        ],
        VENV_TIMEOUT,
    )
    return {re.sub(r"[-_.]+", "-", name).lower(): v for name, v in json.loads(listing.stdout).items()}


def _minimums(python: Path) -> dict[str, Version]:
    """The ``>=`` minimum of each of :data:`DIRECT`, as the installed golem-api's metadata declares it."""
    script = "import json, importlib.metadata as m; print(json.dumps(m.requires('golem-api')))"
    requirements = [Requirement(line) for line in json.loads(_run([str(python), "-c", script], VENV_TIMEOUT).stdout)]
    minimums = {}
    for requirement in requirements:
        if requirement.name in DIRECT:
            (spec,) = [s for s in requirement.specifier if s.operator == ">="]
            minimums[requirement.name] = Version(spec.version)
    assert sorted(minimums) == sorted(DIRECT)
    return minimums


def _suite(python: Path, paths: tuple[str, ...], marker: str | None, out: Path) -> tuple[str | None, str]:
    """Run the tests at ``paths`` with the environment's pytest from the repository.

    Returns where the run imported golem_api from and, when it failed, pytest's report (else "").
    """
    probe = out.parent
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "PYTHON"))}
    env |= {"PYTHONPATH": str(probe), "GOLEM_API_PROBE_OUT": str(out)}
    argv = [str(python.parent / "pytest"), "-q", "-p", "no:cacheprovider", "-p", "golem_api_probe"]
    argv += ["--import-mode=append", "--rootdir", str(ROOT), *(["-m", marker] if marker else []), *paths]
    run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT, check=False)
    print(" ".join(paths), "->", run.stdout.splitlines()[-1] if run.stdout else run.stderr[-2000:])
    imported = json.loads(out.read_text(encoding="utf-8"))["golem_api"] if out.exists() else None
    failure = "" if run.returncode == 0 else f"{' '.join(paths)}:\n{run.stdout[-8000:]}\n{run.stderr[-2000:]}"
    return imported, failure


def test_the_suite_passes_with_the_lowest_allowed_versions(tmp_path: Path) -> None:
    uv = _uv()
    venv = tmp_path / "lowest"
    # `python -m venv` gives the environment pip: an image's `FROM python` step runs the environment's pip.
    _run([sys.executable, "-m", "venv", str(venv)], VENV_TIMEOUT)
    python = venv / "bin" / "python"
    _run(
        [uv, "pip", "install", "--python", str(python), "--resolution", "lowest-direct", f"{ROOT}[examples]"],
        INSTALL_TIMEOUT,
    )
    lowest = _installed(python)
    minimums = _minimums(python)
    print("lowest versions:", ", ".join(f"{name}=={lowest[name]}" for name in DIRECT), f"(yarl=={lowest['yarl']})")
    assert {name: Version(lowest[name]) for name in DIRECT} == minimums, "each is installed at its minimum"

    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{name}=={v}\n" for name, v in lowest.items() if name != "golem-api"))
    tools = [f"{name}=={version(name)}" for name in TOOLS]
    _run([uv, "pip", "install", "--python", str(python), "--constraint", str(constraints), *tools], INSTALL_TIMEOUT)
    after = _installed(python)
    assert {name: after[name] for name in lowest} == lowest, "the test tools moved no dependency of golem-api"

    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "golem_api_probe.py").write_text(_PROBE, encoding="utf-8")
    failures = []
    for name, paths, marker in (("quick", QUICK, "not slow"), ("images", IMAGES, None)):
        imported, failure = _suite(python, paths, marker, probe / f"{name}.json")
        assert imported is not None, f"the {name} run imported no golem_api:\n{failure}"
        assert Path(imported).is_relative_to(venv / "lib"), f"the run imported golem_api from {imported}, not the venv"
        failures += [failure] if failure else []
    assert not failures, "the suite fails at the lowest versions:\n" + "\n".join(failures)
