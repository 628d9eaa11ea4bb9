"""A node that dies under a running requestor: the requestor's exit logs what it could not do and carries on
(it raises nothing the program could act on), and the dead node's work directory is removed at the next start.

The node is a real ``golem-api node`` process, killed with SIGKILL; the requestor talks to it over loopback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from golem_api.events import UnpaidAgreementsWarning
from golem_api.golem import Golem
from golem_api.payload import VmPayload
from golem_api.services.service import Service
from golem_local.config import LocalNetworkConfig
from golem_local.node import LOCK_FILE, WORK_DIR_PREFIX, LocalNode
from tests.processes import ROOT, NodeProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the exit waits out the 10 s retry deadline

_KEY = "dead-node-test-key"
_EXIT_BOUND = 15.0  # seconds: the retry deadline (10 s) bounds every clean-up call to a node that is gone


async def _node_process(tmp: Path) -> NodeProcess:
    # A temporary folder of the test's own: any node started on this machine meanwhile (another test run, a
    # benchmark) sweeps the stale work directories it finds in the shared one, which would race the checks below.
    env = {**os.environ, "TMPDIR": str(tmp)}
    return await NodeProcess.start(
        providers=1, app_key=_KEY, env=env, cwd=ROOT, stderr=asyncio.subprocess.DEVNULL, line_bound=30
    )


def _work_dirs_of(tmp: Path, pid: int) -> list[Path]:
    found = []
    for work_dir in tmp.glob(f"{WORK_DIR_PREFIX}*"):
        try:
            if (work_dir / LOCK_FILE).read_text().strip() == str(pid):
                found.append(work_dir)
        except OSError:
            continue
    return found


@pytest.fixture
def tmp_folder() -> Iterator[Path]:
    """A temporary folder of the test's own that the sandboxes' users can pass through (pytest's ``tmp_path``
    lies under a folder only root may enter)."""
    folder = Path(tempfile.mkdtemp(prefix="golem-api-dead-node-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_leaving_after_the_node_died_logs_and_carries_on_and_its_work_dir_goes_at_the_next_start(
    caplog: pytest.LogCaptureFixture, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await _node_process(tmp_folder)
    process, url = node.process, node.url
    seen: list[Any] = []
    try:
        golem = Golem(budget=1, app_key=_KEY, api_url=url, health_check_interval=60)
        async with golem:
            golem.bus.subscribe(seen.append, UnpaidAgreementsWarning)
            cluster = await golem.run_service(Service, payload=VmPayload(min_mem_gib=0.5, min_storage_gib=1.0))
            await cluster.wait_running(timeout=60)
            stale = _work_dirs_of(tmp_folder, process.pid)
            assert len(stale) == 1, "the running node holds the lock of its work directory"
            process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(process.wait(), 10)
            assert stale[0].exists(), "the killed node could not remove its work directory"
            leaving = time.monotonic()
        exit_took = time.monotonic() - leaving  # reaching here means the exit raised nothing
    finally:
        await node.kill()

    print(f"\nthe exit after the node died took {exit_took:.1f} s")
    assert exit_took < _EXIT_BOUND
    (warning,) = [e for e in seen if isinstance(e, UnpaidAgreementsWarning)]
    assert warning.agreement_ids == tuple(a.agreement_id for a in golem.agreements)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "golem_api"]
    assert any("carrying on" in message for message in errors) or any(
        "could not" in r.getMessage() for r in caplog.records
    )
    # The next node to start removes the dead node's work directory (another node started on this machine
    # meanwhile may have done so already: it sweeps what killed nodes left mounted, and their folders).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_folder))  # the next node starts in the same temporary folder
    async with LocalNode(LocalNetworkConfig.with_providers(0, activity_runtime="idle")):
        assert not stale[0].exists()
