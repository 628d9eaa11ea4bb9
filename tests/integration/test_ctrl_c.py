"""Ctrl-C once, twice, three times, sent as real SIGINTs to a real requestor process (``ctrl_c_program.py``).

Once: the services get their bounded stop and every agreement is paid. Twice: the second press stops waiting
for the (hanging) ``shutdown`` handlers, and the agreements are still ended and paid within
``HURRIED_EXIT_TIMEOUT`` s. Three times: the program leaves at once and says what it left unpaid. The embedded
node lives in that process: it stays up until its invoices are out. Synchronised on the program's output lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from golem_api.golem import HURRIED_EXIT_TIMEOUT, INTERRUPTED_INVOICE_TIMEOUT, INTERRUPTED_STOP_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_ROOT = Path(__file__).resolve().parents[2]
_MARGIN = 3.0  # seconds for a process to tear down its sandboxes and print, beyond the documented bounds


class Program:
    """The requestor process, its stdout lines and its stderr lines, read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = asyncio.Event()
        self._readers = [
            asyncio.ensure_future(self._read(process.stdout, self.out)),
            asyncio.ensure_future(self._read(process.stderr, self.err)),
        ]

    async def _read(self, stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            into.append(line.decode(errors="replace").rstrip("\n"))
            self._changed.set()

    async def wait_line(self, lines: list[str], text: str, timeout: float) -> None:
        async def until() -> None:
            while not any(text in line for line in lines):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    def interrupt(self) -> float:
        self.process.send_signal(signal.SIGINT)
        return time.monotonic()

    async def ended(self, timeout: float) -> dict[str, Any]:
        await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.wait(self._readers, timeout=5)
        last = self.out[-1] if self.out else ""
        assert last.startswith("{"), "\n".join(self.err[-30:])
        result: dict[str, Any] = json.loads(last)
        return result


async def _start() -> Program:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.ctrl_c_program",
        cwd=_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    program = Program(process)
    try:
        await program.wait_line(program.out, "RUNNING", timeout=60)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return program


async def test_ctrl_c_once_stops_the_services_within_the_bound_and_pays() -> None:
    program = await _start()
    pressed = program.interrupt()
    result = await program.ended(timeout=INTERRUPTED_STOP_TIMEOUT + INTERRUPTED_INVOICE_TIMEOUT + _MARGIN + 10)
    elapsed = time.monotonic() - pressed
    print(f"\none Ctrl-C: the program ended {elapsed:.2f} s later: {result}")
    assert result["ending"] == "KeyboardInterrupt", "asyncio.run still ends with KeyboardInterrupt"
    assert elapsed < INTERRUPTED_STOP_TIMEOUT + INTERRUPTED_INVOICE_TIMEOUT + _MARGIN
    assert (result["agreements"], result["terminated"], result["invoices"], result["accepted"]) == (2, 2, 2, 2)
    assert result["accept_calls"] == [1, 1]
    assert result["paid"] == result["spent"] != "0"


async def test_ctrl_c_twice_still_ends_the_agreements_and_pays_within_the_hard_bound() -> None:
    program = await _start()
    program.interrupt()
    await program.wait_line(program.err, "Ctrl-C: stopping the services", timeout=10)
    pressed = program.interrupt()  # while the services' shutdown handlers hang
    result = await program.ended(timeout=HURRIED_EXIT_TIMEOUT + _MARGIN + 10)
    elapsed = time.monotonic() - pressed
    print(f"\nsecond Ctrl-C: the program ended {elapsed:.2f} s later: {result}")
    assert any("Ctrl-C during the exit" in line for line in program.err)
    assert elapsed < HURRIED_EXIT_TIMEOUT + _MARGIN
    assert (result["agreements"], result["terminated"], result["invoices"], result["accepted"]) == (2, 2, 2, 2)
    assert result["paid"] == result["spent"] != "0"


async def test_ctrl_c_three_times_leaves_at_once_and_says_what_it_left_unpaid() -> None:
    program = await _start()
    program.interrupt()
    await program.wait_line(program.err, "Ctrl-C: stopping the services", timeout=10)
    program.interrupt()
    await program.wait_line(program.err, "Ctrl-C during the exit", timeout=10)
    pressed = program.interrupt()
    result = await program.ended(timeout=_MARGIN + 10)
    elapsed = time.monotonic() - pressed
    print(f"\nthird Ctrl-C: the program ended {elapsed:.2f} s later: {result}")
    assert elapsed < _MARGIN
    said = [line for line in program.err if line.startswith("WARNING golem_api: Left")]
    # Either the third press came while agreements were still being paid (and the program says which it left),
    # or the hurried exit had already paid them all.
    assert said or result["accepted"] == result["agreements"], "\n".join(program.err[-20:])
    if said:
        assert "unpaid" in said[0] or "settled" in said[0]
