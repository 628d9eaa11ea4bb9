"""The example notebook runs top to bottom in a real Jupyter kernel, on the embedded local network.

``examples/simple_service/simple_service.ipynb`` is executed with nbclient in an ipykernel kernel started from
this venv's interpreter (a kernelspec written into a temporary ``JUPYTER_PATH``, so that no other Python on the
machine can be picked up), each cell bounded in time; any cell error fails the test. The example directory is
copied first, so the notebook runs as a user runs it (in its own directory, where it saves its plots) without
writing into the checkout. The outputs are then read as a user reads them: the statistics as JSON, a PNG plot,
the cluster and the summary as HTML tables.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "examples" / "simple_service"
NOTEBOOK = EXAMPLE_DIR / "simple_service.ipynb"
KERNEL_NAME = "golem-api-test-venv"
CELL_TIMEOUT = 45  # seconds any one cell may take (the whole notebook takes about 15 s)
KERNEL_STARTUP_TIMEOUT = 30
STATS_KEYS = {"min", "max", "median", "mean", "variance", "std dev", "size"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROBE = "import sys\nprint(sys.prefix)"


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec whose kernel is this interpreter running ipykernel, found only through ``JUPYTER_PATH``."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "golem-api tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # the paths Jupyter is moving to, without its warning
    monkeypatch.setenv("GOLEM_API_HOME", str(tmp_path / "golem-api-home"))  # the image registry of this test only
    for name in ("YAGNA_APPKEY", "YAGNA_API_URL"):  # the local network, whatever the machine has set
        monkeypatch.delenv(name, raising=False)
    return KERNEL_NAME


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the example directory (requestor, image, notebook), without anything a run left behind."""
    target = tmp_path / "simple_service"
    shutil.copytree(
        EXAMPLE_DIR,
        target,
        ignore=shutil.ignore_patterns("simple-service-plots", "__pycache__", ".ipynb_checkpoints", "*.png"),
    )
    return target


def _outputs(cell: Any) -> list[Any]:
    return list(cell.get("outputs", [])) if cell.cell_type == "code" else []


def _text(output: Any) -> str:
    if output.output_type == "stream":
        return str(output.text)
    return str(output.get("data", {}).get("text/plain", ""))


async def test_notebook_runs_the_service_and_shows_its_stats_and_a_plot(kernel_name: str, workdir: Path) -> None:
    notebook = nbformat.read(workdir / NOTEBOOK.name, as_version=4)  # type: ignore[no-untyped-call]
    probe_cell = nbformat.v4.new_code_cell(PROBE)  # type: ignore[no-untyped-call]
    notebook.cells.insert(0, probe_cell)  # which interpreter the kernel runs
    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT,
        startup_timeout=KERNEL_STARTUP_TIMEOUT,
        allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    await client.async_execute()  # raises CellExecutionError, naming the cell, on any error

    cells = notebook.cells
    probe, rest = cells[0], cells[1:]
    assert _text(_outputs(probe)[0]).strip() == sys.prefix, "the kernel is not this venv's interpreter"
    outputs = [output for cell in rest for output in _outputs(cell)]
    errors = [output for output in outputs if output.output_type == "error"]
    assert not errors, errors

    # the statistics, printed as JSON by the notebook, with every figure the service reports
    stats_cell = next(cell for cell in rest if "json.dumps(stats" in cell.source)
    printed = "".join(_text(output) for output in _outputs(stats_cell) if output.output_type == "stream")
    stats = json.loads(printed[printed.index("{") :])
    assert stats.keys() >= STATS_KEYS, stats
    assert stats["size"] >= 1
    assert stats["min"] <= stats["median"] <= stats["max"]

    # while waiting, the live status showed the instance running (one output, updated in place)
    live = [str(o["data"]["text/html"]) for o in _outputs(stats_cell) if "text/html" in o.get("data", {})]
    assert len(live) == 1, f"expected one live status output, got {len(live)}"
    for shown in ("simple-service-1", "running", "uptime"):
        assert shown in live[0], live[0][:500]

    # a downloaded plot, shown as an image
    pngs = [output["data"]["image/png"] for output in outputs if "image/png" in output.get("data", {})]
    assert pngs, "no image/png output: the plot was not displayed"
    assert base64.b64decode(pngs[0]).startswith(PNG_SIGNATURE)
    assert list((workdir / "simple-service-plots").glob("*.png")), "the plot was not saved beside the notebook"

    # the cluster and the summary render as HTML tables
    html = [str(output["data"]["text/html"]) for output in outputs if "text/html" in output.get("data", {})]
    assert any("simple-service-1" in page and "running" in page for page in html), "no cluster table while running"
    assert any("terminated" in page for page in html), "no cluster table after the stop"
    summary = html[-1]
    for shown in ("local-provider", "activity time", "total"):
        assert shown in summary, summary[:500]
    assert "simulation stopped: True" in "".join(_text(output) for output in _outputs(rest[-1]))
