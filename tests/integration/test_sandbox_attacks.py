"""Attacks on the local sandbox, from inside an activity's commands and from a raw REST client (issue 14).

Each test is one finding of the issue, done as an attacker would: a command run through the activity API
(or a daemon it left behind) tries to break out, forge what it is billed, exceed its offer, or swamp the
node with output. Each failed on the code before the issue was fixed. Tests that need root (the uid
drop) or control groups skip, saying so, where those are missing.

Every attack runs twice: in the default sandbox (``plain``: the host's system read-only, a user namespace of
bubblewrap's own) and in the sandbox of an image with a whole root file system (``image``: a GVMI as ``/``, in
the images' user namespace, :mod:`golem_local.runtime.rootfs`). The image is a tiny real root
(:mod:`tests.tinyroot`) with the programs the attacks use and a ``python3`` that starts the host's interpreter
the agent runs on, published in the node's registry and downloaded and unpacked by the node as any image.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from golem_local.config import LocalNetworkConfig, ProviderSpec
from golem_local.images.format import ImageMetadata, write_gvmi
from golem_local.images.registry import ImageRegistry
from golem_local.node import LocalNode
from golem_local.runtime import agent as agent_module
from golem_local.runtime.cgroups import detect_cgroups
from golem_local.runtime.rootfs import agent_bundle
from golem_local.runtime.sandbox import agent_interpreter
from golem_shared.gftp import decode_request, encode_response, gftp_url
from tests.integration.agreements import ACTIVITY, call, new_activity
from tests.integration.test_local_gsb import GftpPeer
from tests.tinyroot import make_tiny_root

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the uid drop happens only when the node runs as root; run the suite as root"
)
needs_cgroups = pytest.mark.skipif(
    not hasattr(detect_cgroups(), "version"),
    reason=f"no control groups for the node here: {detect_cgroups()}",
)

DEPLOY_START: list[dict[str, Any]] = [{"deploy": {}}, {"start": {}}]
AT_END: dict[str, Any] = {"atEnd": {}}


def sh(script: str) -> dict[str, Any]:
    """``/bin/sh -c script``, both outputs kept for the result."""
    return {"run": {"entry_point": "/bin/sh", "args": ["-c", script], "capture": {"stdout": AT_END, "stderr": AT_END}}}


def python(code: str) -> dict[str, Any]:
    """``python3 -c code``, both outputs kept for the result."""
    return {"run": {"entry_point": "python3", "args": ["-c", code], "capture": {"stdout": AT_END, "stderr": AT_END}}}


def strict_json(text: str) -> Any:
    """Parse ``text`` as JSON proper: ``NaN``/``Infinity`` are not JSON and fail the test."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"the node sent {constant}, which is not JSON: {text[:200]}")

    return json.loads(text, parse_constant=refuse)


class Exe:
    """One activity of the node, driven over plain HTTP as a requestor (or an attacker) would."""

    def __init__(self, http: aiohttp.ClientSession, activity_id: str) -> None:
        self.http = http
        self.activity_id = activity_id
        self.path = f"{ACTIVITY}/activity/{activity_id}"

    async def run(self, commands: list[dict[str, Any]], *, timeout: float = 60) -> list[dict[str, Any]]:
        """Exec ``commands`` and return every result once the batch has finished (bounded by ``timeout``)."""
        status, batch_id = await call(self.http, "POST", f"{self.path}/exec", {"text": json.dumps(commands)})
        assert status == 200, batch_id
        status, results = await call(
            self.http, "GET", f"{self.path}/exec/{batch_id}", commandIndex=len(commands) - 1, timeout=timeout
        )
        assert status == 200, results
        return list(results)

    async def get_text(self, what: str) -> str:
        async with self.http.get(f"{self.path}/{what}") as response:
            assert response.status == 200, await response.text()
            return await response.text()


ATTACK_PROGRAMS = ("unshare", "dd", "tr", "nproc", "ln", "mkfifo", "mv", "umount")
"""What the attacks run besides :data:`tests.tinyroot.PROGRAMS`."""
ATTACK_VOLUMES = ("/golem/input", "/golem/output", "/golem/work")


@pytest.fixture(scope="module")
def image_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A registry holding the attacks' image (see the module docstring), and the image's hash."""
    base = tmp_path_factory.mktemp("attack-image")
    tree = make_tiny_root(base / "tree", extra=ATTACK_PROGRAMS)
    argv = agent_bundle(agent_interpreter().path, str(agent_module.__file__)).argv[:-1]  # the agent's python, no agent
    (tree / "bin" / "python3").write_text("#!/bin/sh\nexec " + " ".join(argv) + ' "$@"\n')
    (tree / "bin" / "python3").chmod(0o755)
    metadata = ImageMetadata(env=("PATH=/bin",), working_dir="/golem/work", volumes=ATTACK_VOLUMES)
    write_gvmi(tree, metadata, base / "attack.gvmi")
    registry = ImageRegistry(base / "registry")
    entry = registry.add(base / "attack.gvmi", tag="attack/tiny:1", copy=True)
    return registry.root, entry.hash


@pytest.fixture(params=["plain", "image"])
def sandbox_kind(request: pytest.FixtureRequest) -> str:
    """``plain`` (the default image) or ``image`` (the attacks' image with a whole root file system)."""
    kind = str(request.param)
    if kind == "image" and shutil.which("mksquashfs") is None:
        pytest.skip("squashfs-tools are needed for an image (scripts/bootstrap.sh)")
    return kind


@pytest.fixture
async def local_node(sandbox_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[LocalNode]:
    """One provider with a small offer (1 thread, 512 MiB, 1 GiB of storage, 64 processes), hourly debit notes."""
    spec = ProviderSpec(
        name="small", cpu_threads=1, mem_gib=0.5, storage_gib=1.0, max_processes=64, debit_note_interval_sec=3600
    )
    registry = request.getfixturevalue("image_registry")[0] if sandbox_kind == "image" else None
    async with LocalNode(LocalNetworkConfig(providers=(spec,), image_registry=registry)) as node:
        yield node


@pytest.fixture
async def exe(
    local_node: LocalNode, http: aiohttp.ClientSession, sandbox_kind: str, request: pytest.FixtureRequest
) -> Exe:
    """A started activity on the small provider, in a sandbox of ``sandbox_kind``."""
    properties: dict[str, Any] = {}
    if sandbox_kind == "image":
        digest = request.getfixturevalue("image_registry")[1]
        url = f"{local_node.url}/v1/image/download/{digest}"
        properties["golem.srv.comp.task_package"] = f"hash:sha3:{digest}:{url}"
    activity = Exe(http, await new_activity(http, local_node, extra_properties=properties))
    results = await activity.run(DEPLOY_START)
    assert [r["result"] for r in results] == ["Ok", "Ok"], results
    return activity


# -- finding 3: the sandbox's root is not the host's root -----------------------------------------------------------

ROOT_PROBE = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def mount(source, target, kind, flags):
    os.makedirs(target, exist_ok=True) if kind else None
    done = libc.mount(source.encode(), target.encode(), kind.encode() if kind else None, flags, None) == 0
    return "done" if done else "refused: " + os.strerror(ctypes.get_errno())
def writable(path):
    try:
        os.close(os.open(path, os.O_WRONLY))  # opened for writing is enough: nothing is written
        return "writable"
    except OSError as exc:
        return exc.strerror
# lift bubblewrap's read-only cover of /proc/sys, mount a proc and a sysfs of one's own, make a host file bound
# read-only writable again: each needs CAP_SYS_ADMIN in the sandbox's user namespace
out["umount /proc/sys"] = "done" if libc.umount2(b"/proc/sys", 2) == 0 else "refused"
out["mount proc"] = mount("proc", "/tmp/p", "proc", 0)
out["new proc: core_pattern"] = writable("/tmp/p/sys/kernel/core_pattern")
out["mount sysfs"] = mount("sysfs", "/tmp/s", "sysfs", 0)
out["sysfs: transparent_hugepage"] = writable("/tmp/s/kernel/mm/transparent_hugepage/enabled")
for agent in ("/.golem/agent.py", "/.golem-agent.py"):
    if os.path.exists(agent):
        out["remount the agent read-write"] = mount("none", agent, "", 32 | 4096)  # MS_REMOUNT | MS_BIND
        out["the agent's file"] = writable(agent)
for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/hostname"):
    out[path] = writable(path)
out["CapEff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
open("/golem/work/mine", "w").write("x")
nested = libc.unshare(0x10000000) == 0  # CLONE_NEWUSER, last: it changes what this process is
out["nested user namespace"] = "created" if nested else "refused: " + os.strerror(ctypes.get_errno())
print(json.dumps(out))
"""


@needs_root
async def test_sandbox_root_is_not_host_root(exe: Exe, local_node: LocalNode, sandbox_kind: str) -> None:
    [result] = await exe.run([python(ROOT_PROBE)])
    assert result["result"] == "Ok", result
    seen = json.loads(result["stdout"])
    for attempt in ("umount /proc/sys", "mount proc", "mount sysfs", "remount the agent read-write"):
        assert not seen.get(attempt, "refused").startswith("done"), f"{attempt}: done"
    for target in ("new proc: core_pattern", "sysfs: transparent_hugepage", "the agent's file"):
        assert seen.get(target) != "writable", f"{target}: writable"
    for sysctl in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/hostname"):
        assert seen[sysctl] != "writable", f"a command can write the host's global {sysctl}"
    assert seen["nested user namespace"].startswith("refused")
    if sandbox_kind == "plain":
        assert seen["CapEff"] == "0000000000000000"
    else:  # a container's root's set, in its own namespaces only (sandbox.IMAGE_CAPABILITIES)
        kept = int(seen["CapEff"], 16)
        for bit, name in (
            (21, "SYS_ADMIN"),
            (19, "SYS_PTRACE"),
            (12, "NET_ADMIN"),
            (13, "NET_RAW"),
            (24, "SYS_RESOURCE"),
        ):
            assert not kept & (1 << bit), f"root of an image's sandbox has CAP_{name}"
        assert kept & (1 << 7), "root of an image's sandbox can switch users (CAP_SETUID)"
    runtime = local_node.activities.get(exe.activity_id).runtime
    written = os.stat(runtime.container_path("/golem/work/mine"))  # type: ignore[attr-defined]
    assert written.st_uid != 0, "what the sandbox writes belongs to the host's root"
    assert written.st_uid == runtime.identity.uid  # type: ignore[attr-defined]


# -- finding 4: billing cannot be forged from inside -------------------------------------------------------------

CHANNEL_ATTACK = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
lines = [b'{"ev":"usage","id":%d,"cpu":1e9}\n' % i for i in range(1, 200)]
lines += [b'{"ev":"usage","id":%d,"cpu":Infinity}\n' % i for i in range(200, 400)]
lines += [b'{"ev":"exit","id":%d,"code":0}\n' % i for i in range(1, 50)]
out = {}
for n in (0, 1, 2):
    try:
        fd = os.open("/proc/1/fd/%d" % n, os.O_WRONLY)
        for line in lines:
            os.write(fd, line)
        os.close(fd)
        out["write /proc/1/fd/%d" % n] = "done"
    except OSError as exc:
        out["write /proc/1/fd/%d" % n] = "refused: " + exc.strerror
pidfd = libc.syscall(434, 1, 0)
stolen = libc.syscall(438, pidfd, 1, 0) if pidfd >= 0 else -1
if stolen >= 0:
    for line in lines:
        os.write(stolen, line)
out["pidfd_getfd"] = "done" if stolen >= 0 else "refused: " + os.strerror(ctypes.get_errno())
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
seized = libc.ptrace(0x4206, 1, None, None)
out["ptrace"] = "done" if seized == 0 else "refused: " + os.strerror(ctypes.get_errno())
if seized == 0:
    libc.ptrace(17, 1, None, None)
print(json.dumps(out))
"""


async def test_a_command_cannot_forge_its_usage_or_break_the_json(exe: Exe, local_node: LocalNode) -> None:
    [attack, after] = await exe.run([python(CHANNEL_ATTACK), sh("echo still here")])
    assert attack["result"] == "Ok", attack
    assert after["stdout"] == "still here\n", "the agent no longer answers after the attack"
    assert attack["stdout"] is not None, f"the attack's own result was forged: {attack}"
    tried = json.loads(attack["stdout"])
    assert all(outcome.startswith("refused") for outcome in tried.values()), tried

    usage = strict_json(await exe.get_text("usage"))
    _duration, cpu = usage["currentUsage"]
    assert 0 <= cpu < 30, f"the activity is billed {cpu} CPU seconds for a few commands"
    status, _ = await call(exe.http, "DELETE", exe.path)
    assert status == 200
    notes = [note for note in local_node.ledger.debit_notes() if note.activity_id == exe.activity_id]
    assert notes, "no last debit note"
    assert all(note.total_amount_due.is_finite() and note.total_amount_due < Decimal(1) for note in notes), notes


# -- findings 1 and 2: transfers stay in the sandbox's view -------------------------------------------------------


def transfer(source: str, destination: str) -> dict[str, Any]:
    return {"transfer": {"from": source, "to": destination}}


async def test_a_copy_between_volumes_does_not_follow_links_out(
    exe: Exe, local_node: LocalNode, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's secret\n")
    plant = f"mkdir -p /golem/output/dir && echo mine > /golem/output/dir/own && ln -s {secret} /golem/output/dir/leak"
    results = await exe.run(
        [
            sh(plant),
            transfer("container:/golem/output/dir", "container:/golem/input/copy"),
            sh("cat /golem/input/copy/own; cat /golem/input/copy/leak 2>&1; true"),
        ]
    )
    assert [r["result"] for r in results] == ["Ok"] * 3, results
    assert "secret" not in results[2]["stdout"], "the copy followed a link to a file of the host"
    assert results[2]["stdout"].startswith("mine\n")
    runtime = local_node.activities.get(exe.activity_id).runtime
    assert runtime.container_path("/golem/input/copy").is_dir()
    assert (runtime.container_path("/golem/input") / "copy" / "leak").is_symlink(), "a link is copied as a link"

    [single] = await exe.run([transfer("container:/golem/output/dir/leak", "container:/golem/input/leak")])
    assert single["result"] == "Error"
    assert "refused" in single["message"], single["message"]
    async with GftpPeer(http, "out", ["UploadChunk", "UploadFinished"]) as sink:
        [upload] = await exe.run(
            [transfer("container:/golem/output/dir/leak", gftp_url(local_node.requestor_id, "out"))]
        )
    assert upload["result"] == "Error", upload
    assert sink.received() == b""


def _cue(volume: Path) -> str:
    """Give the daemon its cue and return what it answers (blocking FIFO I/O: run in a thread)."""
    with open(volume / "cue", "w") as cue:
        cue.write("go\n")
    with open(volume / "done") as done:
        return done.read()


class HeldPeer(GftpPeer):
    """A requestor's gftp service that holds its answer to ``GetMetadata`` until :attr:`release` is set."""

    def __init__(self, http: aiohttp.ClientSession, file_id: str, data: bytes) -> None:
        super().__init__(http, file_id, ["GetMetadata", "GetChunk"], data)
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def _serve(self) -> None:
        assert self.socket is not None
        async for message in self.socket:
            request = decode_request(message.data)
            if request.component == "GetMetadata":
                self.asked.set()
                await asyncio.wait_for(self.release.wait(), 20)
            answer = self._answer(request.id, request.component, request.payload)
            await self.socket.send_bytes(encode_response(answer))


async def test_a_daemon_swapping_a_directory_for_a_link_mid_transfer_reaches_no_host_file(
    exe: Exe, local_node: LocalNode, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    # The daemon waits for its cue, swaps /golem/input/dir for a link to a host directory, and says so, both
    # over FIFOs in the volume. (The cue makes the attacker's timing deterministic: it comes after the provider
    # checked the path and before it opens the file, while the transfer waits for the requestor's answer.)
    swap = (
        "mkdir -p /golem/input/dir && mkfifo /golem/input/cue /golem/input/done && "
        "(read _ < /golem/input/cue; mv /golem/input/dir /golem/input/old; "
        f"ln -s {victim} /golem/input/dir; echo swapped > /golem/input/done) > /dev/null 2>&1 &"
    )
    [started] = await exe.run([sh(swap)])
    assert started["result"] == "Ok", started
    runtime = local_node.activities.get(exe.activity_id).runtime
    volume = runtime.container_path("/golem/input")
    async with HeldPeer(http, "payload", b"written by the provider\n") as peer:
        status, batch_id = await call(
            http,
            "POST",
            f"{exe.path}/exec",
            {
                "text": json.dumps(
                    [transfer(gftp_url(local_node.requestor_id, "payload"), "container:/golem/input/dir/x")]
                )
            },
        )
        assert status == 200, batch_id
        await asyncio.wait_for(peer.asked.wait(), 20)  # the provider has checked the path: now the swap
        said = await asyncio.wait_for(asyncio.to_thread(_cue, volume), 20)
        assert said == "swapped\n"
        peer.release.set()
        status, results = await call(http, "GET", f"{exe.path}/exec/{batch_id}", commandIndex=0, timeout=20)
    assert status == 200, results
    assert list(victim.iterdir()) == [], "the provider wrote into a host directory through the sandbox's link"
    assert results[0]["result"] == "Error", results[0]
    assert "refused" in results[0]["message"], results[0]["message"]
    host = local_node.sandbox_host
    if host is not None and host.storage_quota:  # the volumes are on the activity's own file system
        [mounts] = await exe.run([sh("cat /proc/self/mountinfo")])
        assert str(local_node.work_dir) not in mounts["stdout"], (
            "the sandbox can read where its volumes are on the host"
        )


# -- finding 5: the offer's limits are enforced ------------------------------------------------------------------

FORKER = r"""
import os, sys
read, write = os.pipe()
children = []
try:
    for _ in range(300):
        pid = os.fork()
        if pid == 0:
            os.close(write)
            os.read(read, 1)  # until the parent closes the pipe
            os._exit(0)
        children.append(pid)
except OSError as exc:
    print("forked", len(children), "then", exc.strerror)
os.close(write)
for pid in children:
    os.waitpid(pid, 0)
sys.exit(1 if len(children) < 300 else 0)
"""


@needs_cgroups
async def test_memory_over_the_offer_ends_the_command_not_the_activity(exe: Exe, local_node: LocalNode) -> None:
    [hog] = await exe.run([python("x = bytearray(1536 << 20)  # 1.5 GiB on an offer of 0.5")])
    assert hog["result"] == "Error", hog
    assert "killed: memory limit 512 MiB" in hog["message"], hog["message"]
    [alive] = await exe.run([sh("echo alive")])
    assert alive["stdout"] == "alive\n", "the activity did not survive one of its commands hitting the limit"
    runtime = local_node.activities.get(exe.activity_id).runtime
    peak = runtime.memory_peak_bytes  # type: ignore[attr-defined]
    assert peak is not None
    assert peak <= 512 << 20


async def test_processes_over_the_offer_are_refused(exe: Exe) -> None:
    [forker] = await exe.run([python(FORKER)])
    assert forker["result"] == "Error", forker
    forked = int(forker["stdout"].split()[1])
    assert forked < 64, f"{forked} processes on an offer of 64"
    if hasattr(detect_cgroups(), "version"):
        assert "process limit 64 reached" in forker["message"], forker["message"]
    [alive] = await exe.run([sh("echo alive")])
    assert alive["stdout"] == "alive\n"


@needs_cgroups
async def test_one_thread_means_one_cpu_and_a_command_cannot_widen_it(exe: Exe) -> None:
    widen = "import os\ntry:\n    os.sched_setaffinity(0, range(os.cpu_count()))\nexcept OSError:\n    pass\n"
    widen += "print(len(os.sched_getaffinity(0)))"
    [nproc, widened] = await exe.run([sh("nproc"), python(widen)])
    assert nproc["stdout"] == "1\n", f"nproc says {nproc['stdout']!r} on an offer of 1 thread"
    assert widened["stdout"] == "1\n", "a command widened its CPUs beyond the offer"


async def test_tmp_is_sized_and_a_volume_holds_no_more_than_the_storage(
    exe: Exe, local_node: LocalNode, sandbox_kind: str
) -> None:
    # /tmp and /dev/shm are a quarter of the 512 MiB each; an image's /tmp is on its root, as in a VM (storage)
    for memory in ("/tmp", "/dev/shm") if sandbox_kind == "plain" else ("/dev/shm",):
        [tmp] = await exe.run([sh(f"dd if=/dev/zero of={memory}/fill bs=1M count=300 2>&1; rm -f {memory}/fill")])
        assert "No space left on device" in tmp["stdout"], tmp
    host = local_node.sandbox_host
    assert host is not None
    if not host.storage_quota:
        pytest.skip(f"storage is not enforced here: {host.storage_note}")
    [volume] = await exe.run([sh("dd if=/dev/zero of=/golem/work/fill bs=1M count=1200")])
    assert volume["result"] == "Error", volume
    assert "No space left on device" in volume["stderr"]
    assert "storage limit 1024 MiB reached" in volume["message"], volume["message"]
    runtime = local_node.activities.get(exe.activity_id).runtime
    assert os.stat(runtime.container_path("/golem/work/fill")).st_size <= 1 << 30
    [alive] = await exe.run([sh("rm /golem/work/fill && echo alive")])
    assert alive["stdout"] == "alive\n"


async def test_the_offer_says_which_limits_are_enforced(local_node: LocalNode) -> None:
    [provider] = local_node.providers
    properties = provider.offer_properties(0)
    enforced = properties["golem.local.limits.enforced"]
    host = local_node.sandbox_host
    assert host is not None
    expected = {"golem.inf.cpu.threads", "golem.inf.mem.gib"} if host.cgroups else set()
    if host.storage_quota:
        expected.add("golem.inf.storage.gib")
    assert set(enforced) == expected
    assert properties["golem.local.limits.processes"] == 64


# -- finding 6: output is bounded --------------------------------------------------------------------------------

BIG = 48 << 20
"""Bytes a command prints in the output tests: 48 times what the node keeps of an output."""
PRINT_BIG = f"head -c {BIG} /dev/zero | tr '\\0' x; echo; echo done >&2"


async def test_the_node_keeps_a_bounded_part_of_a_huge_output(exe: Exe, local_node: LocalNode) -> None:
    streamed: dict[str, Any] = {"stream": {}}
    command = {"run": {"entry_point": "/bin/sh", "args": ["-c", PRINT_BIG], "capture": {"stdout": streamed}}}
    [result] = await exe.run([command])
    assert result["result"] == "Ok", result
    stdout = result["stdout"]
    assert len(stdout) < (1 << 20) + 500, f"the result holds {len(stdout)} characters of a {BIG}-byte output"
    assert "bytes of output left out here" in stdout
    assert stdout.startswith("x" * 1000)
    assert stdout.endswith("x\n")
    activity = local_node.activities.get(exe.activity_id)
    [batch] = [batch for batch in activity.batches.values() if batch.commands[0].raw == command]
    kept = [event for _sequence, event in batch.events if "stdout" in event["kind"]]
    assert kept == [], "the batch still keeps output for late readers after its results were fetched"

    # A reader that never reads: the command waits for it a while, then goes on without it.
    status, batch_id = await call(exe.http, "POST", f"{exe.path}/exec", {"text": json.dumps([command])})
    assert status == 200, batch_id
    silent = activity.batch(batch_id)
    silent.congestion_timeout = 0.5
    listener = silent.listen()
    status, results = await call(exe.http, "GET", f"{exe.path}/exec/{batch_id}", commandIndex=0, timeout=60)
    silent.unlisten(listener)
    assert status == 200, results
    assert results[0]["result"] == "Ok"
    assert listener.dropped > 0, "the silent reader got everything: it should have been left behind"


async def test_a_requestor_gets_a_bounded_result_and_the_whole_output_in_a_file(tmp_path: Path) -> None:
    from golem_api import Golem, VmPayload
    from golem_api._rest.client import RestClient
    from golem_api._rest.config import ApiConfig
    from golem_api.activity.storage import GsbStorage
    from golem_api.activity.work_context import WorkContext

    network = LocalNetworkConfig.with_providers(1, debit_note_interval_sec=3600)
    async with Golem(budget=1.0, local_network=network, invoice_timeout=10) as golem:
        node = golem.local_node
        assert node is not None
        demand = await golem.create_demand(VmPayload())
        agreement = await demand.agreement(timeout=20)
        activity = await agreement.create_activity()
        async with RestClient(ApiConfig.for_node(node.url, node.app_key)) as rest, GsbStorage(rest) as storage:
            ctx = WorkContext(activity, storage, golem.bus)
            script = ctx.new_script(timeout=120)
            script.deploy()
            script.start()
            big = script.run("/bin/sh", "-c", PRINT_BIG, stdout_file=tmp_path / "out.txt")
            plain = script.run("/bin/sh", "-c", PRINT_BIG)
            await ctx.run_script(script)
            await agreement.terminate()
    file = tmp_path / "out.txt"
    assert file.stat().st_size == BIG + 1, "the output file does not hold the whole output"
    for result in (await big, await plain):
        assert result.stdout is not None
        assert len(result.stdout) < (1 << 20) + 500
        assert "bytes of output left out here" in result.stdout  # the node's note, kept by the requestor
        assert result.stderr == "done\n"
