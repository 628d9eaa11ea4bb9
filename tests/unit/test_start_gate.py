"""Setting sandboxes up at scale: the gate (a bounded number at once, starts before deploys, none lost to a
cancel), the agent's light start, the uid allocation."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from golem_local.runtime import agent
from golem_local.runtime.base import RuntimeFailure
from golem_local.runtime.gate import StartGate, default_start_slots
from golem_local.runtime.launch import SandboxHost, allocate_identity
from golem_local.runtime.sandbox import agent_interpreter


class Setups:
    """Setups that hold their slot until told to end; records the order they got in."""

    def __init__(self, gate: StartGate) -> None:
        self.gate = gate
        self.order: list[str] = []
        self.inside: dict[str, asyncio.Event] = {}
        self.release: dict[str, asyncio.Event] = {}

    async def run(self, name: str, kind: str) -> None:
        self.inside[name] = asyncio.Event()
        self.release[name] = asyncio.Event()
        async with self.gate.slot("start" if kind == "start" else "deploy"):
            self.order.append(name)
            self.inside[name].set()
            await self.release[name].wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)  # let every task that can run reach its next wait


async def test_no_more_setups_at_once_than_slots_and_a_waiting_start_goes_before_waiting_deploys() -> None:
    gate = StartGate(2)
    setups = Setups(gate)
    tasks = [asyncio.create_task(setups.run(f"deploy-{i}", "deploy")) for i in range(4)]
    await _settle()
    assert setups.order == ["deploy-0", "deploy-1"]
    assert (gate.busy, gate.waiting) == (2, 2)
    tasks.append(asyncio.create_task(setups.run("start-0", "start")))  # deploy-0's activity is told to start
    await _settle()
    setups.release["deploy-0"].set()
    await setups.inside["start-0"].wait()
    assert setups.order == ["deploy-0", "deploy-1", "start-0"], "a start waited behind deploys asked for before it"
    for name in ("deploy-1", "start-0", "deploy-2", "deploy-3"):
        await setups.inside[name].wait()
        assert gate.busy <= 2
        setups.release[name].set()
    await asyncio.gather(*tasks)
    assert setups.order == ["deploy-0", "deploy-1", "start-0", "deploy-2", "deploy-3"]
    assert (gate.busy, gate.waiting) == (0, 0)


async def test_a_setup_cancelled_while_it_waits_or_runs_gives_its_turn_on() -> None:
    gate = StartGate(1)
    setups = Setups(gate)
    first = asyncio.create_task(setups.run("first", "deploy"))
    waiting = asyncio.create_task(setups.run("waiting", "deploy"))
    last = asyncio.create_task(setups.run("last", "start"))
    await _settle()
    assert setups.order == ["first"]
    waiting.cancel()  # the activity was destroyed before its turn
    first.cancel()  # the one being set up was destroyed too
    await asyncio.gather(first, waiting, return_exceptions=True)
    await setups.inside["last"].wait()
    setups.release["last"].set()
    await last
    assert setups.order == ["first", "last"]
    assert (gate.busy, gate.waiting) == (0, 0)


async def test_each_event_loop_has_its_own_gate_of_the_host_s_size() -> None:
    host = SandboxHost(cgroups=False, storage_quota=False, start_slots=3)
    gate = host.start_gate()
    assert gate is host.start_gate()
    assert gate.slots == 3
    other = await asyncio.to_thread(lambda: asyncio.run(_gate_of(host)))
    assert other is not gate


async def _gate_of(host: SandboxHost) -> StartGate:
    return host.start_gate()


def test_the_number_of_slots_can_be_set_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLEM_LOCAL_SANDBOX_STARTS", "7")
    assert default_start_slots() == 7
    monkeypatch.setenv("GOLEM_LOCAL_SANDBOX_STARTS", "none")
    with pytest.raises(ValueError, match="GOLEM_LOCAL_SANDBOX_STARTS"):
        default_start_slots()
    monkeypatch.delenv("GOLEM_LOCAL_SANDBOX_STARTS")
    assert default_start_slots() >= 2


def test_the_agent_says_ready_without_loading_what_requests_need() -> None:
    """Up to ready, the agent imports none of json, subprocess, selectors, signal or typing (their import was
    more than half its start-up); a channel closed before any request ends it at once, cleanly."""
    script = Path(agent.__file__)
    done = subprocess.run(
        [agent_interpreter().path, "-I", "-S", "-X", "importtime", str(script)],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b'{"ev":"ready","pid":'), done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.decode().splitlines() if "|" in line}
    assert imported, done.stderr
    assert not imported & {"json", "subprocess", "selectors", "signal", "typing", "re"}, sorted(imported)


@pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes get uids of their own when the node is root")
def test_sandbox_uids_are_the_lowest_free_ones_and_held_ones_are_not_looked_up_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = 2_900_000 + 64 * (os.getpid() % 1000)  # a range of this test's own: nodes beside it use theirs
    monkeypatch.setenv("GOLEM_LOCAL_SANDBOX_UIDS", f"{base}:4")
    held = [allocate_identity() for _ in range(3)]
    try:
        assert [identity.uid for identity in held] == [base, base + 1, base + 2]
        looked_up: list[int] = []
        real_getpwuid = pwd.getpwuid

        def getpwuid(uid: int) -> object:
            looked_up.append(uid)
            return real_getpwuid(uid)

        monkeypatch.setattr(pwd, "getpwuid", getpwuid)  # the module launch looks users up with
        fourth = allocate_identity()
        assert fourth.uid == base + 3
        assert looked_up == [base + 3], "uids this process holds were looked up again"
        with pytest.raises(RuntimeFailure, match="every sandbox uid"):
            allocate_identity()
        held[1].release()
        assert allocate_identity().uid == base + 1  # the lowest free one again
    finally:
        for identity in held:
            identity.release()
