"""Scripts on a real activity: Golem ↔ HTTP ↔ the embedded local node and its sandboxed ``vm`` runtime.

Each test gets an agreement the way a user does (``Golem`` → demand → agreement → activity) and runs scripts
through a :class:`WorkContext`: results by long-polling and by the event stream, failures, streamed output
reaching callbacks while the command still runs, and files going both ways over the node's GSB API.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from golem_api import Golem, LocalNetworkConfig, VmPayload, WorkContext
from golem_api.errors import CommandExecutionError
from golem_api.events import CommandOutput, Event, ScriptFinished

pytestmark = pytest.mark.integration

BOUND = 20.0  # seconds any single await here may take


@pytest.fixture
async def ctx() -> AsyncIterator[WorkContext]:
    """A work context on a fresh activity with the one provider of a local network (the public low-level path)."""
    async with Golem(budget=1.0, local_network=LocalNetworkConfig.with_providers(1), invoice_timeout=10) as golem:
        demand = await golem.create_demand(VmPayload())
        agreement = await demand.agreement(timeout=BOUND)
        yield golem.work_context(await agreement.create_activity())
        await agreement.terminate()


async def deployed(ctx: WorkContext) -> None:
    script = ctx.new_script(timeout=BOUND)
    script.deploy()
    script.start()
    await ctx.run_script(script)


async def test_deploy_start_run_by_polling(ctx: WorkContext) -> None:
    seen: list[Event] = []
    ctx.bus.subscribe(seen.append)
    script = ctx.new_script(timeout=BOUND)
    deploy = script.deploy()
    start = script.start()
    run = script.run("/bin/sh", "-c", "echo hello; echo warning >&2")
    results = await ctx.run_script(script)
    assert [r.command for r in results] == ["deploy", "start", "run"]
    assert all(r.success for r in results)
    assert (await deploy).success
    assert (await start).success
    assert (await run).stdout == "hello\n"
    assert results[2].stderr == "warning\n"
    assert (await ctx.get_state()).state == "Ready"
    assert not [e for e in seen if isinstance(e, CommandOutput)], "polling alone streams nothing"
    assert [e.success for e in seen if isinstance(e, ScriptFinished)] == [True]


async def test_results_by_streaming_match_polling(ctx: WorkContext) -> None:
    await deployed(ctx)
    pieces: list[CommandOutput] = []
    ctx.bus.subscribe(pieces.append, CommandOutput)  # type: ignore[arg-type]
    ctx.stream_output = True
    script = ctx.new_script(timeout=BOUND)
    run = script.run("/bin/sh", "-c", "echo one; echo two >&2; printf three")
    (result,) = await ctx.run_script(script)
    assert (result.stdout, result.stderr) == ("one\nthree", "two\n")
    assert (await run) == result
    assert "".join(p.text for p in pieces if p.stream == "stdout") == "one\nthree"
    assert "".join(p.text for p in pieces if p.stream == "stderr") == "two\n"


async def test_a_failing_command_raises_with_its_stderr_and_so_does_awaiting_it(ctx: WorkContext) -> None:
    await deployed(ctx)
    script = ctx.new_script(timeout=BOUND)
    ok = script.run("/bin/true")
    failing = script.run("/bin/sh", "-c", "echo 'no such thing' >&2; exit 3")
    skipped = script.run("/bin/echo", "never")
    with pytest.raises(CommandExecutionError) as raised:
        await ctx.run_script(script)
    assert raised.value.index == 1
    assert raised.value.stderr == "no such thing\n"
    assert "no such thing" in str(raised.value)
    assert (await asyncio.wait_for(ok, BOUND)).success
    with pytest.raises(CommandExecutionError, match="no such thing"):
        await asyncio.wait_for(failing, BOUND)
    with pytest.raises(CommandExecutionError, match="not run"):
        await asyncio.wait_for(skipped, BOUND)


async def test_a_command_out_of_order_fails_with_the_providers_message(ctx: WorkContext) -> None:
    script = ctx.new_script(timeout=BOUND)
    run = script.run("/bin/true")  # not deployed nor started
    with pytest.raises(CommandExecutionError) as raised:
        await ctx.run_script(script)
    assert raised.value.command == "run"
    assert raised.value.message
    with pytest.raises(CommandExecutionError):
        await asyncio.wait_for(run, BOUND)


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_the_first_line_reaches_on_stdout_while_the_command_still_runs(ctx: WorkContext) -> None:
    await deployed(ctx)
    first_line = asyncio.Event()
    lines: list[str] = []
    done_at_first_line: list[bool] = []
    script = ctx.new_script(timeout=BOUND)

    def on_stdout(line: str) -> None:
        if not lines:
            done_at_first_line.append(run.done())
            first_line.set()
        lines.append(line)

    run = script.run("/bin/sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done", on_stdout=on_stdout)
    task = asyncio.ensure_future(ctx.run_script(script))
    try:
        await asyncio.wait_for(first_line.wait(), BOUND)
        assert done_at_first_line == [False], "the first line came before the command ended"
        assert not run.done()
        await asyncio.wait_for(task, BOUND)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert lines == [f"line {i}" for i in range(1, 6)]
    assert (await run).stdout == "".join(f"line {i}\n" for i in range(1, 6))


async def test_env_reaches_the_command(ctx: WorkContext) -> None:
    await deployed(ctx)
    script = ctx.new_script(timeout=BOUND)
    run = script.run("/bin/sh", "-c", 'echo "$GREETING/$OTHER"', env={"GREETING": "hello world", "OTHER": "x=y"})
    await ctx.run_script(script)
    assert (await run).stdout == "hello world/x=y\n"


async def test_a_5_mib_file_round_trips_byte_for_byte(ctx: WorkContext, tmp_path: Path) -> None:
    await deployed(ctx)
    source, back = tmp_path / "random.bin", tmp_path / "back.bin"
    data = os.urandom(5 * 1024 * 1024)
    source.write_bytes(data)
    script = ctx.new_script(timeout=60)
    script.upload_file(source, "/golem/work/random.bin")
    digest = script.run("/bin/sh", "-c", "sha256sum /golem/work/random.bin")
    script.download_file("/golem/work/random.bin", back)
    as_bytes = script.download_bytes("/golem/work/random.bin")
    started = time.monotonic()
    await ctx.run_script(script)
    elapsed = time.monotonic() - started
    print(f"\n5 MiB round trip (upload + sha256sum + 2 downloads): {elapsed:.2f} s")
    checksum = (await digest).stdout
    assert checksum is not None
    assert checksum.split()[0] == hashlib.sha256(data).hexdigest()
    assert back.read_bytes() == data
    assert await as_bytes == data


async def test_json_and_bytes_go_up_and_come_back(ctx: WorkContext) -> None:
    await deployed(ctx)
    value = {"name": "zażółć", "numbers": [1, 2.5, None], "nested": {"ok": True}}
    script = ctx.new_script(timeout=BOUND)
    script.upload_json(value, "/golem/work/in.json")
    script.upload_bytes(b"raw bytes\n", "/golem/work/raw")
    script.run("/bin/sh", "-c", "cp /golem/work/in.json /golem/out/out.json")
    parsed = script.download_json("/golem/out/out.json")
    raw = script.download_bytes("/golem/work/raw")
    await ctx.run_script(script)
    assert await parsed == value
    assert await raw == b"raw bytes\n"


async def test_a_download_over_its_limit_fails_the_command(ctx: WorkContext) -> None:
    await deployed(ctx)
    script = ctx.new_script(timeout=BOUND)
    script.run("/bin/sh", "-c", "head -c 100000 /dev/zero > /golem/work/big")
    big = script.download_bytes("/golem/work/big", limit=1000)
    with pytest.raises(CommandExecutionError) as raised:
        await ctx.run_script(script)
    assert raised.value.index == 1
    with pytest.raises(CommandExecutionError):
        await asyncio.wait_for(big, BOUND)


async def test_the_sandbox_holds_over_the_wire(ctx: WorkContext) -> None:
    """What a requestor's command can reach on a local provider: no network, no host files, only its volumes."""
    await deployed(ctx)
    home = Path.home()
    secret = home / f".golem-api-test-secret-{os.getpid()}"
    secret.write_text("the requestor's secret")
    try:
        script = ctx.new_script(timeout=BOUND)
        network = script.run(
            "/usr/bin/python3", "-c", "import socket; socket.create_connection(('1.1.1.1', 80), timeout=3)"
        )
        results = await asyncio.gather(ctx.run_script(script), return_exceptions=True)
        assert isinstance(results[0], CommandExecutionError)
        assert "Network is unreachable" in (results[0].stderr or "")
        with pytest.raises(CommandExecutionError):
            await asyncio.wait_for(network, BOUND)

        script = ctx.new_script(timeout=BOUND)
        writes = script.run(
            "/bin/sh",
            "-c",
            "for f in /usr/x /etc/x /x /golem/out/x /golem/work/x /tmp/x; do "
            'if (echo data > "$f") 2>/dev/null; then echo "wrote $f"; else echo "refused $f"; fi; done',
        )
        home_listing = script.run("/bin/sh", "-c", f"cat {secret} 2>&1; ls -A {home} 2>&1; true")
        await ctx.run_script(script)
        assert (await writes).stdout == (
            "refused /usr/x\nrefused /etc/x\nrefused /x\nwrote /golem/out/x\nwrote /golem/work/x\nwrote /tmp/x\n"
        )
        seen = (await home_listing).stdout or ""
        assert "the requestor's secret" not in seen
        assert "No such file or directory" in seen
    finally:
        secret.unlink()


async def test_megabytes_of_output_reach_the_file_and_the_callback_whole_and_in_order(
    ctx: WorkContext, tmp_path: Path
) -> None:
    """Output crosses the sandbox's channel a mebibyte at a time, as raw bytes after each event's line: ~2 MB of
    numbered lines (with a multi-byte character cut anywhere) must come out exactly as printed."""
    await deployed(ctx)
    lines: list[str] = []
    script = ctx.new_script(timeout=BOUND)
    run = script.run(
        "/bin/sh", "-c", "seq 1 300000 | sed 's/$/ ż/'", stdout_file=tmp_path / "out.txt", on_stdout=lines.append
    )
    await ctx.run_script(script)
    expected = [f"{number} ż" for number in range(1, 300001)]
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "\n".join(expected) + "\n"
    assert lines == expected
    assert (await run).stdout is not None
