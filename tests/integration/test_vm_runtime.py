"""The local ``vm`` runtime with real bubblewrap: commands, streaming, isolation, daemons, kills, CPU metering."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Literal

import pytest

from golem_api.errors import SandboxUnavailableError
from golem_local.runtime.base import DeploySettings, RunProcess, RuntimeFailure
from golem_local.runtime.image import Image
from golem_local.runtime.sandbox import check_bubblewrap
from golem_local.runtime.vm import VmRuntime
from tests.processes import running

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
"""A Python program that burns 0.3 s of CPU."""


class Output:
    """An output sink that keeps what it gets and says when the first piece arrived."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.first = asyncio.Event()

    def __call__(self, stream: Literal["stdout", "stderr"], data: bytes) -> None:
        (self.stdout if stream == "stdout" else self.stderr).extend(data)
        self.first.set()


async def run(
    runtime: VmRuntime, *argv: str, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> tuple[int, str, str]:
    """Run ``argv`` to its end (bounded); return exit code, stdout, stderr."""
    output = Output()
    process = RunProcess(argv[0], tuple(argv[1:]), env=dict(env or {}), cwd=cwd)
    code = await asyncio.wait_for(runtime.run_command(process, output), 20)
    return code, output.stdout.decode(), output.stderr.decode()


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[VmRuntime]:
    """A started runtime with the default image; stopped after the test."""
    vm = VmRuntime(Image(), tmp_path / "activity")
    await vm.deploy(DeploySettings())
    await vm.start([])
    try:
        yield vm
    finally:
        await vm.stop()


def _sandbox_processes(sandbox_pid: int) -> dict[int, str]:
    """Host pids and command lines of every process in the sandbox's PID namespace, seen from the host."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            if int(text[text.rindex(")") + 2 :].split()[1]) == sandbox_pid:
                children.append(entry.name)
    assert children, f"the sandbox process {sandbox_pid} has no child"
    namespace = os.readlink(f"/proc/{children[0]}/ns/pid")
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == namespace:
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
    return found


def _still_in(pid: int, namespace: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == namespace
    except OSError:
        return False


# -- commands ----------------------------------------------------------------------------------------------------


@needs_bwrap
async def test_command_output_exit_code_env_and_working_dir(runtime: VmRuntime) -> None:
    code, out, err = await run(
        runtime, "sh", "-c", 'echo out; echo err >&2; echo "$GREETING"; pwd; exit 3', env={"GREETING": "hello"}
    )
    assert (code, out, err) == (3, "out\nhello\n/golem/work\n", "err\n")


@needs_bwrap
async def test_environment_layers_and_explicit_cwd(tmp_path: Path) -> None:
    image = Image(env={"FROM_IMAGE": "image", "SHARED": "image"})
    vm = VmRuntime(image, tmp_path / "activity", env={"FROM_PROVIDER": "provider", "SHARED": "provider"})
    try:
        await vm.deploy(DeploySettings(env={"FROM_DEPLOY": "deploy"}))
        await vm.start([])
        script = 'echo "$FROM_IMAGE $FROM_PROVIDER $FROM_DEPLOY $SHARED $HOME"; pwd'
        code, out, _ = await run(vm, "sh", "-c", script, cwd="/golem/out")
        assert (code, out) == (0, "image provider deploy image /tmp\n/golem/out\n")
        # The run command's own env wins over every other layer.
        code, out, _ = await run(vm, "sh", "-c", 'echo "$SHARED"', env={"SHARED": "command"})
        assert out == "command\n"
    finally:
        await vm.stop()


@needs_bwrap
async def test_missing_program_raises_and_shell_reports_127(runtime: VmRuntime) -> None:
    with pytest.raises(RuntimeFailure, match=r"cannot start 'no-such-program'.*No such file"):
        await run(runtime, "no-such-program", "--flag")
    code, _, err = await run(runtime, "sh", "-c", "no-such-program")
    assert code == 127
    assert "not found" in err


@needs_bwrap
async def test_a_command_gets_only_its_three_streams_and_says_why_it_cannot_start(runtime: VmRuntime) -> None:
    # Nothing of the agent leaks into a command: its channel to the runtime, its wake-up pipe, its epoll.
    code, out, _ = await run(runtime, "sh", "-c", "ls /proc/$$/fd")
    assert (code, out.split()) == (0, ["0", "1", "2"])
    code, out, _ = await run(runtime, "sh", "-c", "readlink /proc/$$/fd/0; pwd")
    assert (code, out) == (0, "/dev/null\n/golem/work\n")
    with pytest.raises(RuntimeFailure, match=r"cannot start 'pwd'.*No such file.*'/golem/nowhere'"):
        await run(runtime, "pwd", cwd="/golem/nowhere")
    assert (await run(runtime, "sh", "-c", "echo x > /golem/work/plain; chmod 644 /golem/work/plain"))[0] == 0
    with pytest.raises(RuntimeFailure, match=r"cannot start 'plain'.*Permission denied"):
        await run(runtime, "plain", env={"PATH": "/golem/work"})  # there, but not executable
    code, out, _ = await run(runtime, "pwd", cwd="/tmp")  # a failed start leaves the next one unaffected
    assert (code, out) == (0, "/tmp\n")


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
@needs_bwrap
async def test_output_streams_while_the_command_runs(runtime: VmRuntime) -> None:
    output = Output()
    process = RunProcess("sh", ("-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.2; done"))
    task = asyncio.create_task(runtime.run_command(process, output))
    await asyncio.wait_for(output.first.wait(), 10)
    assert not task.done(), "the first line arrived only after the command ended"
    assert bytes(output.stdout) == b"1\n"
    assert await asyncio.wait_for(task, 20) == 0
    assert bytes(output.stdout) == b"1\n2\n3\n4\n5\n"


@needs_bwrap
async def test_large_output_arrives_whole(runtime: VmRuntime) -> None:
    code, out, _ = await run(runtime, "python3", "-c", "import sys; sys.stdout.write('x' * 1_000_000)")
    assert code == 0
    assert out == "x" * 1_000_000


# -- isolation ---------------------------------------------------------------------------------------------------


@needs_bwrap
async def test_no_network_out_of_the_sandbox(runtime: VmRuntime) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # reachable from the host
        script = (
            "import socket\n"
            f"for address in (('1.1.1.1', 80), ('127.0.0.1', {port})):\n"
            "    try:\n"
            "        socket.create_connection(address, timeout=3).close()\n"
            "        print(address, 'connected')\n"
            "    except OSError as exc:\n"
            "        print(address, 'failed', exc)\n"
        )
        code, out, _ = await run(runtime, "python3", "-c", script)
    assert code == 0
    assert "connected" not in out
    assert out.count("failed") == 2


@needs_bwrap
async def test_writes_only_in_volumes_and_tmp(tmp_path: Path) -> None:
    root = tmp_path / "image"
    (root / "golem" / "run").mkdir(parents=True)
    (root / "golem" / "run" / "hello.sh").write_text("#!/bin/sh\necho hello\n")
    vm = VmRuntime(Image(root=root), tmp_path / "activity")
    try:
        await vm.deploy(DeploySettings())
        await vm.start([])
        refused = "/usr/x /x /etc/x /etc/passwd /golem/x /dev/x /proc/x /root"
        # The image's files are the activity's own copy: writable, while the image itself stays as built.
        allowed = "/tmp/x /golem/in/x /golem/out/x /golem/work/x /golem/run/x /golem/run/hello.sh"
        script = (
            f"for f in {refused} {allowed}; do "
            'if (echo data > "$f") 2>/dev/null; then echo "wrote $f"; else echo "refused $f"; fi; done'
        )
        code, out, _ = await run(vm, "sh", "-c", script)
        assert code == 0
        assert {line.split()[1] for line in out.splitlines() if line.startswith("wrote")} == set(allowed.split())
        assert vm.container_path("/golem/out/x").read_text() == "data\n"
        assert (root / "golem" / "run" / "hello.sh").read_text() == "#!/bin/sh\necho hello\n"
        assert not (root / "golem" / "run" / "x").exists()
    finally:
        await vm.stop()


@needs_bwrap
async def test_host_home_work_and_test_files_are_invisible(runtime: VmRuntime, tmp_path: Path) -> None:
    home = str(Path.home())
    script = f'for d in {home} /work /home {tmp_path} {Path.cwd()}; do ls -A "$d" 2>/dev/null | sed "s|^|$d: |"; done'
    code, out, _ = await run(runtime, "sh", "-c", script)
    assert code == 0
    assert out == "", f"host files are visible in the sandbox:\n{out}"
    _, listing, _ = await run(runtime, "ls", "-A", "/")
    assert set(listing.split()) <= {".golem-agent.py", "bin", "dev", "etc", "golem", "lib", "lib32", "lib64"} | {
        "libx32",
        "proc",
        "sbin",
        "tmp",
        "usr",
    }


@needs_bwrap
async def test_image_files_sit_beside_the_volumes(tmp_path: Path) -> None:
    root = tmp_path / "image"
    (root / "golem" / "run").mkdir(parents=True)
    script = root / "golem" / "run" / "hello.sh"
    script.write_text('#!/bin/sh\nread name < /golem/in/name.txt\necho "hello $name" | tee /golem/out/hello.txt\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (root / "golem" / "work").mkdir()
    (root / "golem" / "work" / "hidden.txt").write_text("under a volume")
    vm = VmRuntime(Image(root=root), tmp_path / "activity")
    try:
        await vm.deploy(DeploySettings())
        await vm.start([])
        vm.container_path("/golem/in/name.txt").write_text("golem\n")
        code, out, err = await run(vm, "/golem/run/hello.sh")
        assert (code, out, err) == (0, "hello golem\n", "")
        assert vm.container_path("/golem/out/hello.txt").read_text() == "hello golem\n"
        _, listing, _ = await run(vm, "ls", "/golem/work")
        assert listing == "", "a volume hides what the image has at its path"
    finally:
        await vm.stop()


@needs_bwrap
async def test_container_path_stays_inside_the_volumes(runtime: VmRuntime) -> None:
    assert runtime.container_path("/golem/out/result.txt").name == "result.txt"
    with pytest.raises(RuntimeFailure, match=r"/golem/in.*/golem/out"):
        runtime.container_path("/etc/passwd")
    with pytest.raises(RuntimeFailure, match=r"\.\."):
        runtime.container_path("/golem/out/../../etc/passwd")
    code, _, _ = await run(runtime, "ln", "-s", "/etc", "/golem/out/link")
    assert code == 0
    with pytest.raises(RuntimeFailure, match="symbolic link"):
        runtime.container_path("/golem/out/link/passwd")


# -- daemons, kills, the sandbox's end ---------------------------------------------------------------------------


@needs_bwrap
async def test_background_daemons_live_until_stop(tmp_path: Path) -> None:
    vm = VmRuntime(Image(), tmp_path / "activity")
    await vm.deploy(DeploySettings())
    await vm.start([])
    try:
        # One daemon with its output redirected, one that keeps the command's pipes: both commands end at once.
        code, _, _ = await run(vm, "sh", "-c", "sleep 1000 > /golem/out/log 2>&1 & echo $! > /golem/out/pid")
        assert code == 0
        code, out, _ = await run(vm, "sh", "-c", "echo before; while :; do echo tick; sleep 0.1; done &")
        assert code == 0
        assert out.startswith("before\n")
        code, _, _ = await run(vm, "sh", "-c", "kill -0 $(cat /golem/out/pid)")
        assert code == 0, "the daemon of the first command is gone"
        assert vm.sandbox_pid is not None
        processes = _sandbox_processes(vm.sandbox_pid)
        assert any("sleep 1000" in line for line in processes.values()), processes
        namespace = os.readlink(f"/proc/{next(iter(processes))}/ns/pid")
    finally:
        await vm.stop()
    assert [pid for pid in processes if _still_in(pid, namespace)] == []
    assert not (tmp_path / "activity").exists()


@needs_bwrap
async def test_cancelling_a_command_kills_it(runtime: VmRuntime) -> None:
    output = Output()
    process = RunProcess("sh", ("-c", "echo $$ > /tmp/pid; sleep 1000 & echo started; wait"))
    task = asyncio.create_task(runtime.run_command(process, output))
    await asyncio.wait_for(output.first.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    code, out, _ = await run(runtime, "sh", "-c", "kill -0 $(cat /tmp/pid) 2>/dev/null || echo gone; pgrep -x sleep")
    assert out == "gone\n", "the cancelled command (or the sleep it started) still runs"
    assert code != 0


@needs_bwrap
async def test_killed_sandbox_ends_the_runtime_and_its_commands(runtime: VmRuntime) -> None:
    output = Output()
    task = asyncio.create_task(runtime.run_command(RunProcess("sh", ("-c", "echo started; exec sleep 1000")), output))
    await asyncio.wait_for(output.first.wait(), 10)
    assert runtime.sandbox_pid is not None
    os.kill(runtime.sandbox_pid, signal.SIGKILL)
    reason = await asyncio.wait_for(runtime.wait_ended(), 10)
    assert "code -9 (killed by SIGKILL)" in reason
    with pytest.raises(RuntimeFailure, match="SIGKILL"):
        await asyncio.wait_for(task, 10)
    with pytest.raises(RuntimeFailure, match="SIGKILL"):
        await run(runtime, "true")


@needs_bwrap
async def test_stop_is_idempotent_and_safe_before_deploy(tmp_path: Path) -> None:
    never_deployed = VmRuntime(Image(), tmp_path / "never")
    await never_deployed.stop()
    await never_deployed.stop()
    vm = VmRuntime(Image(), tmp_path / "activity")
    await vm.deploy(DeploySettings())
    await vm.start([])
    assert (await run(vm, "true"))[0] == 0
    await asyncio.gather(vm.stop(), vm.stop())
    await vm.stop()
    assert vm.sandbox_pid is None
    assert not (tmp_path / "activity").exists()
    with pytest.raises(RuntimeFailure, match="stopped"):
        await run(vm, "true")


# -- metering ----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
@needs_bwrap
async def test_cpu_seconds_count_commands_and_daemons_after_they_exit(runtime: VmRuntime) -> None:
    assert runtime.cpu_seconds() < 0.25
    assert (await run(runtime, "python3", "-c", BUSY))[0] == 0
    # The periodic report (not a request of ours) brings the busy loop in within a couple of seconds.
    assert await runtime.wait_cpu_seconds(0.28, timeout=5) >= 0.28
    first = runtime.cpu_seconds()
    # A daemon that burns CPU and exits is reaped by the sandbox's init: its time still counts.
    daemon = f"python3 -c '{BUSY}' && touch /tmp/done"
    assert (await run(runtime, "sh", "-c", f"({daemon}) > /dev/null 2>&1 &"))[0] == 0
    assert (await run(runtime, "sh", "-c", "until [ -e /tmp/done ]; do sleep 0.02; done"))[0] == 0
    assert (await run(runtime, "python3", "-c", BUSY))[0] == 0
    assert await runtime.wait_cpu_seconds(first + 0.55, timeout=5) >= first + 0.55


# -- self-test and offer -----------------------------------------------------------------------------------------


async def test_check_bubblewrap_says_what_to_install() -> None:
    with pytest.raises(SandboxUnavailableError, match=r"apt-get install -y bubblewrap.*dnf install bubblewrap"):
        await check_bubblewrap("/nonexistent/bwrap")


async def test_check_bubblewrap_reports_a_bwrap_that_cannot_sandbox() -> None:
    with pytest.raises(SandboxUnavailableError, match=r"cannot create a sandbox here: it exited with code 1"):
        await check_bubblewrap(shutil.which("false") or "/bin/false")


@needs_bwrap
async def test_self_test_passes_and_offer_names_the_runtime(tmp_path: Path) -> None:
    vm = VmRuntime(Image(), tmp_path / "activity")
    await vm.self_test()
    properties = vm.offer().properties
    assert properties["golem.runtime.name"] == "vm"
    assert properties["golem.srv.comp.vm.package_format"] == "gvmkit-squash"
    assert "vpn" not in str(properties.get("golem.runtime.capabilities", []))


@needs_bwrap
async def test_deploy_refuses_bad_volumes(tmp_path: Path) -> None:
    vm = VmRuntime(Image(volumes=("/golem/out", "/usr/local/data")), tmp_path / "activity")
    with pytest.raises(RuntimeFailure, match=r"'/usr/local/data' is inside /usr"):
        await vm.deploy(DeploySettings())
    vm = VmRuntime(Image(), tmp_path / "activity")
    with pytest.raises(RuntimeFailure, match=r"'golem/data' is not an absolute path"):
        await vm.deploy(DeploySettings(volumes=["golem/data"]))


@needs_bwrap
async def test_a_stop_while_the_sandbox_is_being_launched_leaves_no_sandbox_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from golem_local.runtime import vm
    from golem_local.runtime.launch import Launch

    runtime = VmRuntime(Image(), tmp_path / "activity")
    await runtime.deploy(DeploySettings())
    launched: asyncio.Future[Launch] = asyncio.get_running_loop().create_future()
    go_on = asyncio.Event()
    real_spawn = vm.spawn  # type: ignore[attr-defined]

    async def spawn_then_wait(*args: object, **kwargs: object) -> Launch:
        launch = await real_spawn(*args, **kwargs)  # type: ignore[arg-type]
        launched.set_result(launch)
        await go_on.wait()  # the stop comes here, while bubblewrap is being started
        return launch

    monkeypatch.setattr(vm, "spawn", spawn_then_wait)
    starting = asyncio.create_task(runtime.start([]))
    bubblewrap = (await launched).process
    await runtime.stop()
    go_on.set()
    with pytest.raises(RuntimeFailure, match="stopped before its sandbox started"):
        await starting
    assert bubblewrap.returncode is not None, "the sandbox of a stopped activity was left running"


def _held(vm: VmRuntime, pids: list[int], stage: Path) -> list[str]:
    """What a stopped sandbox still holds on the host: processes, directories, its uid, its mount."""
    held = [f"process {pid}" for pid in pids if running(pid)]
    held += [f"directory {path}" for path in (vm.work_dir, stage) if path.exists()]
    if vm.identity is not None:
        held.append(f"uid {vm.identity}")
    if str(vm.work_dir) in Path("/proc/self/mountinfo").read_text():
        held.append(f"the mount of {vm.work_dir}")
    return held


async def test_a_stop_cancelled_again_and_again_still_kills_the_sandbox_and_gives_back_what_it_held(
    tmp_path: Path,
) -> None:
    """An activity gives up waiting for a stop that overran its bound and cancels it (774 of 1000 sandboxes
    stopping at once on the 2-core machine); a cancellation that came during the release left a storage mounted
    and a loop device held. Cancelled at every step of the loop here, the stop still ends everything."""
    from golem_local.runtime.launch import SandboxLimits

    vm = VmRuntime(Image(), tmp_path / "activity", limits=SandboxLimits(storage_bytes=16 * 1024 * 1024))
    await vm.deploy(DeploySettings())
    await vm.start([])
    sandbox_pid = vm.sandbox_pid
    assert sandbox_pid is not None
    pids = [sandbox_pid, *_sandbox_processes(sandbox_pid)]
    stage = vm.host.stage_dir(vm._sandbox_id)
    stopping = asyncio.create_task(vm.stop())
    cancels = 0

    async def cancel_until_done() -> None:
        nonlocal cancels
        while not stopping.done():
            stopping.cancel()
            cancels += 1
            await asyncio.sleep(0)  # one step of the loop: the stop goes on until its next wait

    await asyncio.wait_for(cancel_until_done(), 60)
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert cancels >= 1
    assert _held(vm, pids, stage) == []
