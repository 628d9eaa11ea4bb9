"""An image's root file system as ``/`` of an activity's sandbox: writable for that activity only.

An image (a GVMI, :mod:`golem_local.images.format`) is unpacked once per node into a directory that no
sandbox ever writes (:mod:`golem_local.images.cache`). Each activity then gets its own writable view of it,
thrown away when the activity ends, as a Golem VM's ``/`` is an overlay of its squashfs and a tmpfs:

- ``overlay`` (the usual case): an overlayfs whose lower layer is the unpacked image and whose upper layer is
  in the activity's directory, mounted by a small wrapper in a **private mount namespace** made for this one
  sandbox (:meth:`ActivityRoot.wrapper`), which then ``exec``\\ s bubblewrap with the overlay as its root.
  Nothing is mounted on the host: the mount dies with the sandbox, even when the node is killed.
- ``overlay-tmpfs``: the same, the upper layer on a tmpfs mounted in that namespace, where the activity's
  file system refuses to be an upper layer (overlayfs on overlayfs, as in some containers).
- ``copy``: where no overlay can be mounted at all, a ``cp -a --reflink=auto`` of the unpacked image into the
  activity's directory (instant on btrfs/xfs, a real copy on ext4).

:func:`choose_strategy` tries them in that order once per process and file system.

**Whose ids.** bubblewrap 0.8 cannot mount an overlay, and mounting one needs privileges *before* bubblewrap
runs. Every sandbox of an image, every unpacking and every ``RUN`` step of a build therefore runs inside one
long-lived user namespace of this process (:func:`user_namespace`), entered with ``nsenter`` and holding the
new mount namespace (``unshare --mount``): there the wrapper is root, mounts, and bubblewrap runs with
``--unshare-pid/ipc/net/uts/cgroup`` but *no* user namespace of its own, so that the image's several users
(``root``, ``www-data``, ``_apt``…) keep their ids and a service may switch between them as in a VM.
The namespace maps, for a node running

- as root: ids ``0…65535`` to an unprivileged host range (:data:`IMAGE_UID_BASE` …, another than the
  per-sandbox uids of :mod:`~golem_local.runtime.launch`; ``GOLEM_LOCAL_IMAGE_UIDS=base:count``), so that an
  image's root is no host root: it owns no host file, and the host's global sysctls (owned by the global root)
  refuse it. Then the node itself (host root) mounts the activity's overlay in a private mount namespace of its
  own, binds what the range cannot reach (:func:`~golem_local.runtime.launch.stage_binds`), and only then enters
  the namespace to run bubblewrap; image files are unpacked in the namespace into a directory of its root
  (:func:`owned_directory`), so that they belong to the range;
- as another user with ``/etc/subuid`` and ``/etc/subgid`` ranges: ``0`` to the user and ``1…65535`` to the
  range (``unshare --map-root-user --map-auto``, with ``newuidmap`` from ``uidmap``);
- as another user without ranges: ``0`` to the user only (files of other ids in an image become the user's
  when unpacked; ``apt-get`` in a build cannot work then).

Nothing may create a user namespace inside it (``user.max_user_namespaces`` is 0 in it, as bubblewrap's
``--disable-userns`` does for its own), so a sandbox cannot get a second id map to play with.

**The agent.** The image may have no Python at all (``debian:*-slim`` has none), and its ``/usr`` must not be
shadowed, so the sandbox's agent (:mod:`~golem_local.runtime.agent`) runs on the host's interpreter, shown
read-only under ``/.golem/`` together with the shared libraries it has loaded and its standard library, and
started through the host's dynamic loader with ``--library-path /.golem/lib`` (:func:`agent_bundle`): nothing
of it leaks into the environment of the commands it starts, and nothing else of the host is visible.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import stat
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from attrs import frozen

from golem_shared.errors import SandboxUnavailableError

__all__ = [
    "AGENT_DIR",
    "IMAGE_UID_BASE",
    "IMAGE_UID_COUNT",
    "ActivityRoot",
    "AgentBundle",
    "Strategy",
    "UserNamespace",
    "agent_bundle",
    "choose_strategy",
    "hosts_file",
    "image_uid_range",
    "owned_directory",
    "remove_tree",
    "user_namespace",
]

AGENT_DIR = "/.golem"
"""Where the agent, the host interpreter it runs on and that interpreter's libraries appear, read-only."""

Strategy = Literal["overlay", "overlay-tmpfs", "copy"]

IMAGE_UID_BASE = 3_000_000
"""First host uid (and gid) of the images' namespace when the node runs as root: the image's id 0 is this one,
its ``www-data`` (33) ``IMAGE_UID_BASE + 33`` (``GOLEM_LOCAL_IMAGE_UIDS=base:count`` to change)."""
IMAGE_UID_COUNT = 65_536

_TIMEOUT = 30.0  # seconds any helper process here may take
_COPY_TIMEOUT = 600.0  # seconds a copy of an image may take (a few GB on a slow disk)
_UTIL_LINUX = "util-linux (unshare, nsenter, mount) is needed to run images; install it (`apt-get install util-linux`)"

# The wrapper: mount the activity's view of the image, bind what bubblewrap must reach at the places it can
# reach (pairs of source and mount point), then exec the rest of its arguments (bubblewrap, or nsenter and
# bubblewrap). ``owner`` (uid:gid) is given the upper layer's root when it is made here (on the tmpfs).
_MOUNT_SCRIPT = r"""
lower=$1 upper=$2 work=$3 merged=$4 scratch=$5 strategy=$6 owner=$7 binds=$8
shift 8
if [ "$strategy" = overlay-tmpfs ]; then
    mount -t tmpfs -o mode=0755 golem-upper "$scratch" && mkdir "$scratch/upper" "$scratch/work" || exit 125
    upper=$scratch/upper work=$scratch/work
    if [ -n "$owner" ]; then chown "$owner" "$upper" || exit 125; fi
fi
if [ "$strategy" != copy ]; then
    # relative paths: what the sandbox reads in /proc/self/mountinfo names no host directory
    cd "$merged/.." && ln -sfn "$lower" lower && ln -sfn "$upper" upper-dir && ln -sfn "$work" work-dir || exit 125
    mount -t overlay golem-rootfs -o "lowerdir=lower,upperdir=upper-dir,workdir=work-dir" "$merged" || exit 125
    cd / || exit 125
fi
while [ "$binds" -gt 0 ]; do
    mount --rbind "$1" "$2" || exit 125
    shift 2
    binds=$((binds - 1))
done
exec "$@"
"""
_MOUNT_ARGS = 8  # the script's own arguments before the bind pairs


def _wait_line(process: subprocess.Popen[bytes], what: str) -> bytes:
    """The first line ``process`` writes on stdout, within :data:`_TIMEOUT` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], _TIMEOUT)
    if not ready:
        process.kill()
        process.wait()
        raise SandboxUnavailableError(f"{what} did not answer within {_TIMEOUT:.0f} s")
    return process.stdout.readline()


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _has_subids() -> bool:
    """Whether this user has subordinate uid and gid ranges and ``newuidmap`` to use them."""
    if shutil.which("newuidmap") is None or shutil.which("newgidmap") is None:
        return False
    names = {_user_name(), str(os.getuid())}
    for table in ("/etc/subuid", "/etc/subgid"):
        try:
            lines = Path(table).read_text().splitlines()
        except OSError:
            return False
        if not any(line.split(":")[0] in names for line in lines if line.count(":") == 2):
            return False
    return True


def image_uid_range() -> tuple[int, int]:
    """``(base, count)`` of the host ids the images' namespace maps ``0…count-1`` to when the node runs as root."""
    setting = os.environ.get("GOLEM_LOCAL_IMAGE_UIDS", "")
    if not setting:
        return IMAGE_UID_BASE, IMAGE_UID_COUNT
    try:
        base, count = (int(part) for part in setting.split(":"))
        if base < 1000 or count < IMAGE_UID_COUNT:
            raise ValueError
    except ValueError:
        raise SandboxUnavailableError(
            f"GOLEM_LOCAL_IMAGE_UIDS={setting!r} is not base:count with a base of 1000 or more and a count of at "
            f"least {IMAGE_UID_COUNT} (the ids of an image's users), e.g. {IMAGE_UID_BASE}:{IMAGE_UID_COUNT}"
        ) from None
    return base, count


@frozen
class UserNamespace:
    """A user namespace kept open by its file descriptor ``fd`` (see the module docstring); ``kind`` says how
    it maps ids: ``"range"`` (root: ``0…count-1`` to ``base…``), ``"subids"`` (a user with subordinate ranges),
    ``"single"`` (a user alone). ``root_owner`` is the host ``(uid, gid)`` of its root for a ``"range"`` one."""

    fd: int
    kind: str
    root_owner: tuple[int, int] | None = None

    @property
    def enter(self) -> list[str]:
        """The command prefix that runs a program as root of this namespace (keep :attr:`pass_fds` open)."""
        if self.kind in ("subids", "single"):
            # the user is already root there (0 maps to it); a single-id namespace also forbids setgroups
            return ["nsenter", "--preserve-credentials", f"--user=/proc/self/fd/{self.fd}", "--"]
        return ["nsenter", f"--user=/proc/self/fd/{self.fd}", "--"]

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self.fd,)

    @property
    def maps_many_ids(self) -> bool:
        """Whether the image's users other than root keep their ids (not so in a ``"single"`` namespace)."""
        return self.kind != "single"

    @property
    def mounts_outside(self) -> bool:
        """Whether the node mounts an activity's root before entering the namespace (as root: see the module
        docstring), rather than inside it."""
        return self.root_owner is not None


@contextlib.contextmanager
def owned_directory(destination: Path, namespace: UserNamespace) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Where a program run in ``namespace`` (:attr:`UserNamespace.enter`) may create ``destination`` (which must
    not exist yet): yields ``(path, fds)``, the path to give the program and the descriptors to pass it.

    For a ``"range"`` namespace that is ``/proc/self/fd/N/new`` in a directory beside ``destination`` that
    belongs to the namespace's root, reached through a descriptor (so no directory above needs to be
    searchable by the range); what the program made there is moved to ``destination`` afterwards. Otherwise
    it is ``destination`` itself.
    """
    if namespace.root_owner is None:
        yield str(destination), ()
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        os.chown(staging, *namespace.root_owner)
        fd = os.open(staging, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield f"/proc/self/fd/{fd}/new", (fd,)
        finally:
            os.close(fd)
        if os.path.lexists(staging / "new"):
            os.rename(staging / "new", destination)
    finally:
        remove_tree(staging)


_namespace: UserNamespace | None = None
_namespace_lock = threading.Lock()


def _make_namespace(root_map: tuple[int, int, int] | None) -> UserNamespace:
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            raise SandboxUnavailableError(f"{tool} is missing: {_UTIL_LINUX}")
    holder_script = ["sh", "-c", "echo ready; exec cat >/dev/null"]
    root_owner = None
    if os.geteuid() == 0:
        command = ["unshare", "--user", "--", *holder_script]
        kind = "range"
        if root_map is None:
            base, count = image_uid_range()
            root_map = (0, base, count)
        _check_apart(root_map)
        root_owner = (root_map[1], root_map[1])
    elif _has_subids():
        command = ["unshare", "--user", "--map-root-user", "--map-auto", "--", *holder_script]
        kind = "subids"
    else:
        command = ["unshare", "--user", "--map-root-user", "--", *holder_script]
        kind = "single"
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as holder:
        try:
            line = _wait_line(holder, "the process holding the sandboxes' user namespace")
            if line != b"ready\n":
                holder.wait(_TIMEOUT)
                said = holder.stderr.read().decode(errors="replace").strip() if holder.stderr else ""
                raise SandboxUnavailableError(
                    f"cannot create the user namespace that images run in (`{' '.join(command[:-3])}` said: "
                    f"{said}); this machine must allow user namespaces (`sysctl user.max_user_namespaces` > 0, "
                    "and `kernel.unprivileged_userns_clone=1` for a user other than root)"
                )
            if root_map is not None:
                inside, outside, count = root_map
                for name in ("uid_map", "gid_map"):
                    with open(f"/proc/{holder.pid}/{name}", "w") as mapping:
                        mapping.write(f"{inside} {outside} {count}\n")
            fd = os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            if holder.stdin is not None:
                holder.stdin.close()
            try:
                holder.wait(_TIMEOUT)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
    namespace = UserNamespace(fd, kind, root_owner)
    try:
        # no user namespace inside: the limit is per namespace and counts in every ancestor (bubblewrap's
        # --disable-userns does the same in the namespace it makes)
        _run(["sh", "-c", "echo 0 > /proc/sys/user/max_user_namespaces"], namespace, "forbidding nested namespaces")
    except OSError as exc:
        os.close(fd)
        raise SandboxUnavailableError(f"cannot make the images' user namespace safe: {exc}") from exc
    return namespace


def _check_apart(root_map: tuple[int, int, int]) -> None:
    """Refuse a range of the images' namespace that holds host root or the per-sandbox uids of launch."""
    from golem_local.runtime.launch import sandbox_uid_range

    _inside, base, count = root_map
    sandbox_base, sandbox_count = sandbox_uid_range()
    if base <= 0 or (base < sandbox_base + sandbox_count and sandbox_base < base + count):
        raise SandboxUnavailableError(
            f"the images' ids {base}-{base + count - 1} (GOLEM_LOCAL_IMAGE_UIDS) hold root or overlap the "
            f"sandboxes' uids {sandbox_base}-{sandbox_base + sandbox_count - 1} (GOLEM_LOCAL_SANDBOX_UIDS): "
            "give them ranges apart"
        )


def user_namespace(root_map: tuple[int, int, int] | None = None) -> UserNamespace:
    """The user namespace this process runs images in, made on first use and kept for the process's life.

    ``root_map`` (``(inside, outside, count)``, for a node running as root only) maps ids to that range instead
    of the default one (:func:`image_uid_range`); it applies when the namespace is made. Raises
    :class:`SandboxUnavailableError` saying what to do when no user namespace can be made here.
    """
    global _namespace
    with _namespace_lock:
        if _namespace is None:
            _namespace = _make_namespace(root_map)
        return _namespace


def _run(command: Sequence[str], namespace: UserNamespace, what: str, timeout: float = _TIMEOUT) -> None:
    try:
        process = subprocess.run(
            [*namespace.enter, *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=namespace.pass_fds,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OSError(f"{what} did not finish within {timeout:.0f} s") from None
    if process.returncode != 0:
        raise OSError(f"{what} failed: {process.stdout.decode(errors='replace').strip()[-1000:]}")


def _run_here(command: Sequence[str], what: str, timeout: float) -> None:
    try:
        process = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise OSError(f"{what} did not finish within {timeout:.0f} s") from None
    if process.returncode != 0:
        raise OSError(f"{what} failed: {process.stderr.decode(errors='replace').strip()[-1000:]}")


def remove_tree(path: Path, namespace: UserNamespace | None = None) -> None:
    """Remove ``path`` with everything in it: files the sandbox's users made (ids of the namespace, overlayfs's
    mode-000 work directory), directories a command made read-only. Never follows a symbolic link."""
    if not os.path.lexists(path):
        return
    if os.geteuid() != 0 and namespace is not None:
        with contextlib.suppress(OSError):
            _run(["rm", "-rf", "--one-file-system", str(path)], namespace, f"removing {path}", _COPY_TIMEOUT)
    if not os.path.lexists(path):
        return

    def unlock(function: object, name: str, _error: object) -> None:
        parent = os.path.dirname(name)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)
        if os.path.isdir(name) and not os.path.islink(name):
            with contextlib.suppress(OSError):
                os.chmod(name, 0o700)
            shutil.rmtree(name, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(name)

    shutil.rmtree(path, onerror=unlock)


# -- the agent's interpreter -----------------------------------------------------------------------------------

_PROBE = r"""
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("golem_agent_probe", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
import _json, ctypes, fcntl, resource  # and what the agent imports when it starts (harden, set_rlimits, pipes)
with open("/proc/self/maps") as maps:
    mapped = sorted({line.split()[-1] for line in maps if line.rstrip().split()[-1].startswith("/")})
print(json.dumps({
    "version": "%d.%d" % sys.version_info[:2],
    "stdlib": os.path.dirname(os.__file__),
    "dynload": os.path.dirname(getattr(_json, "__file__", "") or ""),
    "platlibdir": getattr(sys, "platlibdir", "lib"),
    "mapped": mapped,
}))
"""

_PT_INTERP = 3
_PT_DYNAMIC = 2
_DT_SONAME = 14
_DT_STRTAB = 5


def _elf_info(path: str) -> tuple[str | None, str | None]:
    """``(PT_INTERP, DT_SONAME)`` of a 64-bit little-endian ELF file (``None`` where absent or unreadable)."""
    try:
        with open(path, "rb") as elf:
            data = elf.read()
    except OSError:
        return None, None
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None, None
    try:
        (phoff,) = struct.unpack_from("<Q", data, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
        headers = [struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize) for i in range(phnum)]
        interp = None
        soname = None
        loads = [h for h in headers if h[0] == 1]  # PT_LOAD: to turn addresses into file offsets
        for kind, _flags, offset, _vaddr, _paddr, size, _memsz, _align in headers:
            if kind == _PT_INTERP:
                interp = data[offset : offset + size].rstrip(b"\0").decode()
            elif kind == _PT_DYNAMIC:
                strtab = name_offset = None
                for start in range(offset, offset + size, 16):
                    tag, value = struct.unpack_from("<qQ", data, start)
                    if tag == 0:
                        break
                    if tag == _DT_STRTAB:
                        strtab = value
                    elif tag == _DT_SONAME:
                        name_offset = value
                if strtab is not None and name_offset is not None:
                    for _k, _f, load_offset, load_vaddr, _p, load_size, _m, _a in loads:
                        if load_vaddr <= strtab < load_vaddr + load_size:
                            at = strtab - load_vaddr + load_offset + name_offset
                            soname = data[at : data.index(b"\0", at)].decode()
                            break
        return interp, soname
    except (struct.error, ValueError, UnicodeDecodeError):
        return None, None


@frozen
class AgentBundle:
    """How the agent runs in an image's sandbox: host files to show read-only (``(host, sandbox)`` pairs) and
    the command that starts it."""

    binds: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]


@functools.cache
def agent_bundle(interpreter: str, agent_script: str) -> AgentBundle:
    """What :class:`AgentBundle` the agent ``agent_script`` needs to run on ``interpreter`` inside an image.

    Found by starting the interpreter once with the agent's imports and reading what it mapped (the
    executable, the dynamic loader, the shared libraries, the extension modules), so exactly those are shown.
    Raises :class:`SandboxUnavailableError` when the interpreter cannot be examined.
    """
    try:
        probe = subprocess.run(
            [interpreter, "-I", "-S", "-c", _PROBE, agent_script],
            capture_output=True,
            timeout=_TIMEOUT,
            check=True,
        )
        found = json.loads(probe.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise SandboxUnavailableError(
            f"cannot examine the Python {interpreter} that runs the sandbox's agent: {exc}; golem-api needs a "
            "regular CPython installation on this machine"
        ) from exc
    executable = os.path.realpath(interpreter)
    version, stdlib, dynload = found["version"], found["stdlib"], found["dynload"]
    prefix = f"{AGENT_DIR}/python"
    binds: list[tuple[str, str]] = [
        (executable, f"{prefix}/bin/python{version}"),
        (stdlib, f"{prefix}/lib/python{version}"),
    ]
    if dynload and not (dynload + "/").startswith(stdlib + "/"):
        binds.append((dynload, f"{prefix}/{found['platlibdir']}/python{version}/lib-dynload"))
    loader, _soname = _elf_info(executable)
    real_loader = os.path.realpath(loader) if loader else None
    libraries: dict[str, str] = {}
    for path in found["mapped"]:
        real = os.path.realpath(path)
        if real == executable or (real + "/").startswith((stdlib + "/", dynload + "/")) or ".so" not in real:
            continue
        _interp, soname = _elf_info(real)
        if real == real_loader and loader is not None:
            soname = os.path.basename(loader)
        libraries.setdefault(soname or os.path.basename(real), real)
    binds += [(real, f"{AGENT_DIR}/lib/{name}") for name, real in sorted(libraries.items())]
    python = f"{prefix}/bin/python{version}"
    argv: tuple[str, ...] = (python, "-I", "-S", f"{AGENT_DIR}/agent.py")
    if loader is not None:
        argv = (f"{AGENT_DIR}/lib/{os.path.basename(loader)}", "--library-path", f"{AGENT_DIR}/lib", *argv)
    binds.append((agent_script, f"{AGENT_DIR}/agent.py"))
    return AgentBundle(tuple(binds), argv)


# -- an activity's root ----------------------------------------------------------------------------------------


def hosts_file(hostname: str) -> str:
    """The ``/etc/hosts`` of a sandbox named ``hostname``."""
    return f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"


RESOLV_CONF = "# golem-api: this sandbox has no network of its own (no name server); the host's settings are not used\n"


_strategies: dict[int, Strategy] = {}
_strategy_errors: dict[int, str] = {}
_strategy_lock = threading.Lock()


def choose_strategy(probe_dir: Path, lower: Path, namespace: UserNamespace) -> Strategy:
    """The first of ``overlay``, ``overlay-tmpfs``, ``copy`` that works for activity directories on the file
    system of ``probe_dir`` (an empty directory there; tried once per file system and process)."""
    with _strategy_lock:  # activities deploying together wait for one probe
        device = probe_dir.stat().st_dev
        known = _strategies.get(device)
        if known is None:
            known = _probe(probe_dir, lower, namespace)
            _strategies[device] = known
        return known


def _mount_command(namespace: UserNamespace, arguments: Sequence[str]) -> list[str]:
    """The mount script with ``arguments`` in a new private mount namespace: made by the node itself when it is
    root (:attr:`UserNamespace.mounts_outside`), else by root of ``namespace``."""
    script = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _MOUNT_SCRIPT, "golem-rootfs"]
    if namespace.mounts_outside:
        return [*script, *arguments]
    return [*namespace.enter, *script, *arguments]


def _probe(probe_dir: Path, lower: Path, namespace: UserNamespace) -> Strategy:
    errors = []
    for strategy in ("overlay", "overlay-tmpfs"):
        trial = probe_dir / strategy
        for name in ("upper", "work", "merged", "scratch"):
            (trial / name).mkdir(parents=True, exist_ok=True)
        names = [str(trial / name) for name in ("upper", "work", "merged", "scratch")]
        command = _mount_command(namespace, [str(lower), *names, strategy, "", "0", "true"])
        try:
            result = subprocess.run(
                command, capture_output=True, pass_fds=namespace.pass_fds, timeout=_TIMEOUT, check=False
            )
            if result.returncode == 0:
                return strategy
            errors.append(f"{strategy}: {result.stderr.decode(errors='replace').strip()}")
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{strategy}: {exc}")
    _strategy_errors[probe_dir.stat().st_dev] = "; ".join(errors)
    return "copy"


class ActivityRoot:
    """The writable root of one activity's sandbox over the unpacked image ``lower``, in ``directory`` (the
    activity's; see the module docstring). :meth:`prepare` once before the sandbox starts; :meth:`remove`
    when the activity ends."""

    def __init__(self, lower: Path, directory: Path, *, hostname: str, namespace: UserNamespace) -> None:
        self.lower = lower
        self.directory = directory
        self.hostname = hostname
        self.namespace = namespace
        self.strategy: Strategy = "overlay"
        self._owner = ""  # uid:gid of the image's root directory, for an upper layer the mount script makes

    @property
    def root(self) -> Path:
        """The host directory bubblewrap binds at ``/`` (the overlay's mount point, or the copy)."""
        return self.directory / ("root" if self.strategy == "copy" else "merged")

    @property
    def generated_files(self) -> tuple[tuple[Path, str], ...]:
        """Files made for this sandbox, bound read-write over the image's: ``/etc/hosts``, ``/etc/hostname``,
        ``/etc/resolv.conf`` (as Docker does; nothing of the host's)."""
        etc = self.directory / "etc"
        return tuple((etc / name, f"/etc/{name}") for name in ("hosts", "hostname", "resolv.conf"))

    def prepare(self) -> None:
        """Make the directories and files (and, for ``copy``, the copy); blocking: call it in a thread.

        Where the node mounts as root, the upper layer's root and the generated files are given to the owner
        of the image's ``/`` (the namespace's root), so that root of the sandbox owns ``/`` as in a VM."""
        if not self.lower.is_dir():
            raise OSError(f"the unpacked image {self.lower} is missing")
        self.directory.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=".rootfs-probe-", dir=self.directory))
        try:
            self.strategy = choose_strategy(probe, self.lower, self.namespace)
        finally:
            remove_tree(probe, self.namespace)
        top = self.lower.stat()
        owned = self.namespace.mounts_outside
        self._owner = f"{top.st_uid}:{top.st_gid}" if owned else ""
        etc = self.directory / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "hosts").write_text(hosts_file(self.hostname))
        (etc / "hostname").write_text(self.hostname + "\n")
        (etc / "resolv.conf").write_text(RESOLV_CONF)
        if owned:
            for path, _inside in self.generated_files:
                os.chown(path, top.st_uid, top.st_gid)
        if self.strategy == "copy":
            copy = ["cp", "-a", "--reflink=auto", str(self.lower), str(self.root)]
            what = f"copying the image {self.lower} for the activity"
            if owned:  # as root: the copy keeps the range's ids
                _run_here(copy, what, _COPY_TIMEOUT)
            else:
                _run(copy, self.namespace, what, _COPY_TIMEOUT)
        else:
            for name in ("upper", "work", "merged", "scratch"):
                (self.directory / name).mkdir(exist_ok=True)
            if owned:
                os.chown(self.directory / "upper", top.st_uid, top.st_gid)
                os.chmod(self.directory / "upper", stat.S_IMODE(top.st_mode))

    def wrapper(self, binds: Sequence[tuple[str, str]] = ()) -> list[str]:
        """The command prefix that prepares ``/`` and then runs bubblewrap (its arguments follow); ``binds``
        (source, mount point) are made first, as root (:func:`~golem_local.runtime.launch.stage_binds`)."""
        d = self.directory
        arguments = [str(self.lower), *(str(d / name) for name in ("upper", "work", "merged", "scratch"))]
        arguments += [self.strategy, self._owner, str(len(binds))]
        arguments += [path for pair in binds for path in pair]
        command = _mount_command(self.namespace, arguments)
        if self.namespace.mounts_outside:
            command += self.namespace.enter
        return command

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return self.namespace.pass_fds

    def remove(self) -> None:
        """Remove the activity's layer (blocking: call it in a thread)."""
        remove_tree(self.directory, self.namespace)
