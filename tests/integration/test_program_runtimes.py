"""Runtimes that are programs (the runtime SDK's Command mode), found through descriptor files, run by real
golem-api programs: ``tests/runtimes/tiny_runtime.py`` is the program, installed with a descriptor in a
directory of the test's own."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from golem_api import CommandExecutionError, CustomPayload, Golem, LocalNetworkConfig, Payload, ProviderSpec, Service
from golem_local.node import LocalNode
from golem_local.runtime.base import DeploySettings, RunProcess, RuntimeFailure
from golem_local.runtime.program import ProgramRuntime, program_runtimes
from golem_local.runtime.registry import RuntimeContext
from golem_shared.errors import LocalNodeError
from tests.integration.agreements import new_activity
from tests.integration.test_local_activity_exec import Exe
from tests.processes import running

pytestmark = pytest.mark.integration

BOUND = 30.0
PROGRAM = Path(__file__).parent.parent / "runtimes" / "tiny_runtime.py"


def install(directory: Path, *extra_args: str, name: str = "tiny") -> Path:
    """The test program with this interpreter in its shebang, and a descriptor naming it, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / "tiny-runtime"
    program.write_text(f"#!{sys.executable} -I\n" + PROGRAM.read_text().split("\n", 1)[1])
    program.chmod(0o755)
    descriptor = {
        "name": name,
        "version": "0.3.0",
        "supervisor-path": "exe-unit",
        "runtime-path": "tiny-runtime",
        "description": "the tests' tiny runtime",
        "extra-args": list(extra_args),
        "properties": {"golem.runtime.tiny.descriptor": True},
    }
    (directory / f"{name}.json").write_text(json.dumps([descriptor]))
    return directory


def network(directory: Path, **spec: Any) -> LocalNetworkConfig:
    return LocalNetworkConfig(providers=(ProviderSpec(name="prog", runtime="tiny", **spec),), runtime_dirs=directory)


class Tiny(Service):
    @staticmethod
    async def get_payload() -> Payload:
        return CustomPayload(constraints=("(golem.runtime.name=tiny)",))


async def serve(config: LocalNetworkConfig, body: Any) -> dict[str, Any]:
    """Run the async generator ``body(ctx, seen)`` as the ``run`` of one instance of :class:`Tiny` (errors of
    its scripts are thrown into it); what it put in ``seen``."""
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    class Once(Tiny):
        async def run(self) -> Any:
            steps = body(self._ctx, seen)
            try:
                script = await steps.__anext__()
                while True:
                    try:
                        yield script
                    except Exception as exc:
                        script = await steps.athrow(exc)
                    else:
                        script = await steps.__anext__()
            except StopAsyncIteration:
                pass
            finally:
                done.set()

    async with Golem(budget=1.0, local_network=config, invoice_timeout=10) as golem:
        await golem.run_service(Once)
        await asyncio.wait_for(done.wait(), BOUND)
    return seen


def _pids_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def _until(condition: Any, what: str) -> None:
    """Look at ``condition()`` until it holds, at most BOUND seconds (the kernel tells of no process's end)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while not condition():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


async def test_commands_output_exit_codes_volumes_and_offer(tmp_path: Path) -> None:
    async def body(ctx: Any, seen: dict[str, Any]) -> Any:
        script = ctx.new_script()
        script.upload_bytes(b"hello volumes", "/in/text")
        script.run("upper", "/in/text", "/out/text")
        fetched = script.download_bytes("/out/text")
        echo = script.run("echo", "a", "b")
        yield script
        seen["fetched"] = await fetched
        seen["echo"] = (await echo).stdout, (await echo).stderr
        for failing in (("exit", "3"), ("crash",), ("nosuch",)):
            script = ctx.new_script()
            result = script.run(*failing)
            try:
                yield script
                await result
            except CommandExecutionError as exc:
                seen[failing[0]] = str(exc)
        seen["offer"] = dict(ctx.agreement.offer_properties)
        seen["cpu"] = (await ctx.get_usage()).current_usage.get("golem.usage.cpu_sec")

    seen = await serve(network(install(tmp_path / "runtimes")), body)
    assert seen["fetched"] == b"HELLO VOLUMES"
    assert seen["echo"] == ("a b\n", "echoed\n")
    assert "exited with code 3" in seen["exit"]
    assert "killed by signal 11" in seen["crash"]
    assert "unknown command 'nosuch'" in seen["nosuch"]
    offer = seen["offer"]
    assert offer["golem.runtime.name"] == "tiny"
    assert offer["golem.runtime.version"] == "0.3.0"
    assert offer["golem.runtime.tiny.flavour"] == "plain", "offer-template's properties are offered"
    assert offer["golem.runtime.tiny.descriptor"] is True, "the descriptor's properties are offered"
    assert seen["cpu"] > 0, "the commands' CPU seconds are metered"


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
async def test_a_script_timeout_kills_the_command_s_process(tmp_path: Path) -> None:
    token = f"token-{secrets.token_hex(6)}"

    async def body(ctx: Any, seen: dict[str, Any]) -> Any:
        script = ctx.new_script(timeout=1)
        result = script.run("sleep", token)
        try:
            yield script
            await result
        except Exception as exc:
            seen["error"] = type(exc).__name__

    seen = await serve(network(install(tmp_path / "runtimes")), body)
    assert seen["error"] == "BatchTimeoutError"
    await _until(lambda: not [pid for pid in _pids_with(token) if running(pid)], "the killed command still runs")


async def test_stop_gives_a_background_process_its_grace_and_kills_one_ignoring_sigterm(tmp_path: Path) -> None:
    graceful, ignoring = tmp_path / "graceful", tmp_path / "ignoring"

    async def body(ctx: Any, seen: dict[str, Any]) -> Any:
        script = ctx.new_script()
        first = script.run("linger", str(graceful))
        second = script.run("linger", str(ignoring), "ignore")
        yield script
        seen["pids"] = [int((await run).stdout.split()[1]) for run in (first, second)]

    seen = await serve(network(install(tmp_path / "runtimes"), stop_grace=0.5), body)
    graceful_pid, ignoring_pid = seen["pids"]
    assert graceful.read_text() == "terminated gracefully\n", "the background process got SIGTERM and its grace"
    assert not ignoring.exists()
    await _until(lambda: not running(ignoring_pid), "the process ignoring SIGTERM outlived the grace")
    assert not running(graceful_pid)


async def test_deploy_answers_that_are_refused_say_why(tmp_path: Path) -> None:
    cases = {
        "invalid": "the runtime found the deployment invalid: the task package is for another architecture",
        "blocking": 'answered startMode "blocking" (Server mode',
        "garbage": "printed 'deployed, I think', not the deployment JSON",
        "fail": "exited with code 1; it said: tiny runtime: cannot deploy here",
    }
    for mode, message in cases.items():
        (descriptor,) = program_runtimes([install(tmp_path / mode, "--deploy", mode)])
        runtime = descriptor.factory(RuntimeContext(activity_id=mode, work_dir=tmp_path / mode / "activity"))
        assert isinstance(runtime, ProgramRuntime)
        try:
            with pytest.raises(RuntimeFailure) as failure:
                await runtime.deploy(DeploySettings())
            assert message in str(failure.value)
        finally:
            await runtime.stop()


async def test_an_invalid_deployment_fails_the_deploy_command_with_its_message(tmp_path: Path) -> None:
    directory = install(tmp_path / "runtimes", "--deploy", "invalid")
    async with (
        LocalNode(network(directory)) as node,
        aiohttp.ClientSession(base_url=node.url, headers={"Authorization": f"Bearer {node.app_key}"}) as http,
    ):
        exe = Exe(http, await new_activity(http, node, runtime="tiny"))
        (result,) = await exe.finished(await exe.exec([{"deploy": {}}]), 1)
    assert result["result"] == "Error"
    assert "the task package is for another architecture" in result["message"]


async def test_output_streams_and_a_cancelled_command_s_process_group_is_killed(tmp_path: Path) -> None:
    (descriptor,) = program_runtimes([install(tmp_path / "runtimes")])
    runtime = descriptor.factory(RuntimeContext(activity_id="a", work_dir=tmp_path / "activity"))
    first = asyncio.Event()
    out = bytearray()

    def sink(_stream: str, data: bytes) -> None:
        out.extend(data)
        first.set()

    token = f"token-{secrets.token_hex(6)}"
    await runtime.deploy(DeploySettings())
    await runtime.start(["x"])
    try:
        assert (tmp_path / "activity" / "started").read_text() == "x"
        command = asyncio.create_task(runtime.run_command(RunProcess("sleep", (token,)), sink))
        await asyncio.wait_for(first.wait(), BOUND)
        assert bytes(out) == f"sleeping {token}\n".encode(), "output arrives while the command runs"
        (pid,) = [pid for pid in _pids_with(token) if running(pid)]
        command.cancel()
        with pytest.raises(asyncio.CancelledError):
            await command
        assert not running(pid)
    finally:
        await runtime.stop()
    assert not (tmp_path / "activity").exists(), "stop removes the activity's directory"


async def test_bad_descriptors_stop_the_node_at_start_naming_the_file_and_key(tmp_path: Path) -> None:
    cases: dict[str, tuple[str, str]] = {
        "json": ("[{", r"bad\.json is not valid JSON"),
        "key": ('[{"name": "tiny"}]', r"key\.json, entry 0: the key 'runtime-path' is missing"),
        "path": ('[{"name": "tiny", "runtime-path": "nowhere"}]', r"\"runtime-path\" of runtime 'tiny' is 'nowhere'"),
        "list": ('{"name": "tiny"}', r"not a JSON list of runtimes"),
    }
    for case, (text, message) in cases.items():
        directory = tmp_path / case
        directory.mkdir()
        (directory / ("bad.json" if case == "json" else f"{case}.json")).write_text(text)
        with pytest.raises(LocalNodeError, match=message):
            async with LocalNode(network(directory)):
                pass
    not_executable = install(tmp_path / "mode")
    (not_executable / "tiny-runtime").chmod(0o644)
    with pytest.raises(LocalNodeError, match=r"is not executable \(chmod \+x it\)"):
        async with LocalNode(network(not_executable)):
            pass


async def test_a_failing_self_test_stops_the_node_at_start_with_what_the_program_said(tmp_path: Path) -> None:
    directory = install(tmp_path / "runtimes", "--self-test", "fail")
    with pytest.raises(LocalNodeError, match=r"runtime 'tiny' failed its self-test.*this machine has no GPU"):
        async with LocalNode(network(directory)):
            pass


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from golem_api._cli import main; raise SystemExit(main())", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=BOUND, env=env, check=False)


@pytest.mark.slow  # three interpreters of the command line
def test_golem_api_runtime_lists_describes_and_tests_program_runtimes(tmp_path: Path) -> None:
    directory = install(tmp_path / "runtimes")
    listing = _cli("runtime", "list", "--runtimes-dir", str(directory))
    assert listing.returncode == 0, listing.stderr
    assert "tiny" in listing.stdout
    assert "0.3.0" in listing.stdout
    env = {**os.environ, "GOLEM_LOCAL_RUNTIMES_DIR": str(directory)}
    tested = _cli("runtime", "test", "tiny", env=env)
    assert tested.returncode == 0, tested.stderr
    assert "golem.runtime.tiny.flavour = 'plain'" in tested.stdout
    failing = install(tmp_path / "failing", "--self-test", "fail")
    failed = _cli("runtime", "test", "tiny", "--runtimes-dir", str(failing))
    assert failed.returncode == 1
    assert "this machine has no GPU" in failed.stderr
