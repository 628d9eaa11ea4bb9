"""golem-core 0.7.8, unmodified, runs against ``golem-api node`` with its own interpreter (``.venv-golem-core``).

``clients/golem_core_flows.py`` runs 17 flows of golem-core's own examples (about 15 s): start a ``GolemNode``,
an allocation, a demand and its proposals, a negotiation that rejects a counter-proposal, an agreement and an
activity, commands and scripts (a failing command cancels the next), ``SendFile``/``DownloadFile`` over
``golem-api gftp``, terminate and pay the debit notes and the invoice, an image given by hash alone (golem-core asks
the old registry route ``/image.<hash>.link``), the managers' composition that pays by itself, the payment event
filters, the event bus, the invoice and debit-note listings, and closing the node. Each flow is one test.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fidelity.clients.run import FlowRun, run_flows

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CORE_PYTHON = ROOT / ".venv-golem-core" / "bin" / "python"
PROGRAM = Path(__file__).resolve().parent / "clients" / "golem_core_flows.py"
RUN_BOUND = 300.0  # seconds all flows may take together (each has its own bound in the program)
FLOWS = [
    "registry-info",
    "node-start",
    "allocation",
    "demand",
    "negotiation",
    "agreement+activity",
    "commands",
    "script",
    "SendFile",
    "DownloadFile",
    "terminate+pay",
    "image-by-hash",
    "managers",
    "probe-payment-events",
    "event-bus",
    "invoices+debit-notes",
    "node-close",
]

needs_golem_core = pytest.mark.skipif(
    not CORE_PYTHON.exists(),
    reason=f"golem-core's own environment is missing ({CORE_PYTHON}); "
    "run `GOLEM_API_WITH_CLIENTS=1 scripts/bootstrap.sh` (scripts/test does) to create it",
)


@pytest.fixture(scope="module")
def core_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The program's ``TMPDIR``: what is left in it after the run, the program (or golem-core) left behind."""
    return tmp_path_factory.mktemp("golem-core-tmp")


@pytest.fixture(scope="module")
def golem_core(tmp_path_factory: pytest.TempPathFactory, core_temp: Path) -> FlowRun:
    work = tmp_path_factory.mktemp("golem-core")
    return asyncio.run(run_flows(work, [str(CORE_PYTHON), str(PROGRAM)], RUN_BOUND, env={"TMPDIR": str(core_temp)}))


@needs_golem_core
@pytest.mark.timeout(900)
@pytest.mark.parametrize("flow", FLOWS)
def test_a_golem_core_flow_works_on_the_local_node(golem_core: FlowRun, flow: str) -> None:
    status, _text = golem_core.outcome(flow)
    assert status == "PASS", golem_core.explain(flow)


@needs_golem_core
@pytest.mark.timeout(900)
def test_golem_core_ends_well(golem_core: FlowRun, core_temp: Path) -> None:
    assert golem_core.returncode == 0, golem_core.stdout + golem_core.stderr[-3000:]
    assert set(golem_core.flows) == set(FLOWS), "the program's flows and this module's list differ"
    left = sorted(path.name for path in core_temp.iterdir())
    assert left == [], f"golem-core's run left temporary files behind: {left}"
