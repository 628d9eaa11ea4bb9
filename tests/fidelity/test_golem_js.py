"""golem-js 3.6.0 and its TaskExecutor 2.0.1, unmodified, run against ``golem-api node`` (loaded with ``require``).

``clients/golem_js_flows.cjs`` runs 29 flows a golem-js user goes through, once for the whole module (about 60 s):
connect (which asks ``GET /version/get`` without an app key), rent with ``oneOf``, run commands, upload and
download files, data and JSON, stream a process's output, finalize and pay, rent images given by tag, hash, URL
and ``file://`` (served by the requestor over gftp), a pool of two rentals (``manyOf``), the payment summary (every
agreement's invoice accepted once, no "duplicate debit note" warning), a network (two rentals in a VPN, HTTP
through golem-js's ``TcpProxy``, one instance fetching from the other by its VPN address, the network destroyed;
skipped where the node cannot make VPNs), the payment event filters, and five tasks of a ``TaskExecutor`` on three
providers, paid. Each flow is one test. The packages come from
``.npm-clients/`` (``scripts/bootstrap.sh`` installs them when ``GOLEM_API_WITH_CLIENTS=1``).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from golem_local.net import netns
from tests.fidelity.clients.run import FlowRun, run_flows

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".npm-clients" / "node_modules"
PROGRAM = Path(__file__).resolve().parent / "clients" / "golem_js_flows.cjs"
RUN_BOUND = 400.0  # seconds all flows may take together (each has its own bound in the program)
FLOWS = [
    "probe-version",
    "registry-info",
    "connect",
    "oneOf",
    "getExeUnit",
    "run",
    "uploadFile",
    "uploadData",
    "uploadJson",
    "downloadFile",
    "downloadData",
    "downloadJson",
    "runAndStream",
    "stopAndFinalize",
    "image-by-tag",
    "image-by-hash",
    "image-by-url",
    "image-by-file-url",
    "manyOf",
    "createNetwork",
    "network-oneOf",
    "TcpProxy",
    "network-peer",
    "TcpProxy-runAndStream",
    "destroyNetwork",
    "payments-summary",
    "probe-payment-events",
    "disconnect",
    "TaskExecutor",
]

VPN_FLOWS = {"createNetwork", "network-oneOf", "TcpProxy", "network-peer", "TcpProxy-runAndStream", "destroyNetwork"}
NO_VPN = netns.unavailable_reason()  # None where the node's providers can join VPNs (root)

needs_golem_js = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_MODULES / "@golem-sdk" / "task-executor").is_dir(),
    reason=f"Node.js or golem-js is missing ({NODE_MODULES}); "
    "run `GOLEM_API_WITH_CLIENTS=1 scripts/bootstrap.sh` (scripts/test does) to install it",
)


@pytest.fixture(scope="module")
def golem_js(tmp_path_factory: pytest.TempPathFactory) -> FlowRun:
    node = shutil.which("node") or "node"
    work = tmp_path_factory.mktemp("golem-js")
    env = {"NODE_PATH": str(NODE_MODULES), "VPN_UNAVAILABLE": NO_VPN or ""}
    return asyncio.run(run_flows(work, [node, str(PROGRAM)], RUN_BOUND, env, http_image=True))


@needs_golem_js
@pytest.mark.timeout(900)
@pytest.mark.parametrize("flow", FLOWS)
def test_a_golem_js_flow_works_on_the_local_node(golem_js: FlowRun, flow: str) -> None:
    if flow in VPN_FLOWS and NO_VPN is not None:
        pytest.skip(f"the node cannot make VPNs here: {NO_VPN}")
    status, _text = golem_js.outcome(flow)
    assert status == "PASS", golem_js.explain(flow)


@needs_golem_js
@pytest.mark.timeout(900)
def test_golem_js_ends_well_without_duplicate_payment_documents(golem_js: FlowRun) -> None:
    assert golem_js.returncode == 0, golem_js.stdout + golem_js.stderr[-3000:]
    assert set(golem_js.flows) == set(FLOWS), "the program's flows and this module's list differ"
    # golem-js warns so when the node shows the requestor its own Accepted events (yagna shows them on request)
    assert "received a duplicate" not in golem_js.stderr
