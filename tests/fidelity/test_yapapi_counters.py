"""yapapi 0.13.1 against ``golem-api node --runtime test-counters``: a runtime with a usage counter of its own.

The first test runs this suite's own yapapi program (``yapapi_custom_counters.py``, in the shape of yapapi's
custom-usage-counter example) and checks what it printed: the custom counter ``golem.usage.custom.counter`` is
priced in the offer yapapi accepted, grows by the seconds each ``sleep`` slept, and is in the cost yapapi computed
and the invoice it paid. The second runs yapapi's own ``examples/custom-usage-counter/custom_usage_counter.py``,
unmodified, when ``GOLEM_API_YAPAPI_EXAMPLES`` names a checkout of yapapi's ``examples`` folder (the file is not
part of this repository); it is skipped, saying so, otherwise.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fidelity.test_yapapi import assert_no_errors, needs_yapapi, run_yapapi
from tests.processes import NodeProcess, kill

pytestmark = pytest.mark.integration

PROGRAM = Path(__file__).resolve().parent / "yapapi_custom_counters.py"
EXAMPLES = os.environ.get("GOLEM_API_YAPAPI_EXAMPLES", "")
EXAMPLE = Path(EXAMPLES) / "custom-usage-counter" / "custom_usage_counter.py"
COUNTER = "golem.usage.custom.counter"
RUN_BOUND = 60.0


@pytest.fixture
async def node() -> AsyncIterator[NodeProcess]:
    running = await NodeProcess.start(None, providers=2, extra=("--runtime", "test-counters"))
    try:
        yield running
    finally:
        await kill(running.process)


async def run_counters(tmp_path: Path, node: NodeProcess, program: Path, *args: str) -> tuple[str, str]:
    """Run a yapapi program against ``node``; its stdout and its log, which has no ERROR line."""
    out, log = await run_yapapi(tmp_path, node.url, program, *args, bound=RUN_BOUND)
    assert_no_errors(log)
    return out, log


@needs_yapapi
@pytest.mark.timeout(300)
async def test_yapapi_prices_and_pays_the_custom_counter_of_test_counters(tmp_path: Path, node: NodeProcess) -> None:
    out, log = await run_counters(tmp_path, node, PROGRAM, "--rounds", "3", "--sleep-ms", "200")

    rounds = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert [r["usage"][COUNTER] for r in rounds] == [0.2, 0.4, 0.6]  # seconds slept so far, as the runtime counts
    assert all(r["stdout"] == "sleeping 200 ms\nslept 200 ms\n" for r in rounds)
    costs = [r["cost"] for r in rounds]
    assert costs == sorted(costs)
    assert costs[0] > 0
    assert out.splitlines()[-1] == "all services terminated"
    assert len(re.findall(r"Accepted invoice from 'local-provider-\d'", log)) == 1
    assert f"'{COUNTER}'" in log  # the offer's usage vector, as yapapi logged it

    code, _rest, node_err = await node.stop()
    assert code == 0
    assert "Traceback" not in node_err


@needs_yapapi
@pytest.mark.skipif(
    not EXAMPLE.exists(),
    reason="yapapi's custom-usage-counter example is not here: set GOLEM_API_YAPAPI_EXAMPLES to yapapi's examples "
    "folder (a checkout of github.com/golemfactory/yapapi) to run it",
)
@pytest.mark.timeout(300)
async def test_yapapis_own_custom_usage_counter_example_runs_unmodified(tmp_path: Path, node: NodeProcess) -> None:
    out, log = await run_counters(tmp_path, node, EXAMPLE, "--running-time", "2")
    assert "All services were successfully terminated" in out
    usage = [line for line in out.splitlines() if line.startswith("total cost so far")]
    assert usage, out
    assert all(COUNTER in line for line in usage), out
    assert re.search(r"Accepted invoice from 'local-provider-\d'", log)
