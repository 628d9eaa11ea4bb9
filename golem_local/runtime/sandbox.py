"""The bubblewrap sandbox of the local ``vm`` runtime: what a command can see, and whether bwrap works here.

:func:`bwrap_args` turns a :class:`SandboxLayout` into bubblewrap options. The sandbox it describes:

- new user (uid 0 mapped to the user bubblewrap runs as: the sandbox's own unprivileged host uid when the node
  is root, see :mod:`~golem_local.runtime.launch`), mount, PID, network, IPC, UTS and cgroup namespaces, no
  capabilities at all, no further user namespaces (``disable_userns``), its own session; it dies with the
  process that started it. The command bubblewrap starts is PID 1 (no bubblewrap init), so that when it exits
  the kernel kills everything left in the sandbox before bubblewrap itself exits. The network namespace has
  only its own loopback: nothing on the host or beyond is reachable. With ``share_net`` (an activity in a
  VPN) the sandbox keeps the namespace it is started in instead: the one :mod:`golem_local.net` prepared, with
  the activity's VPN links and no route out.
- the host's system directories read-only: ``/usr`` and ``/bin``, ``/lib*``, ``/sbin`` as they are on the host
  (symbolic links or directories), and a few files of ``/etc`` that programs need to run
  (:data:`ETC_ENTRIES`; not ``/etc/ssl/private``). Nothing of any home directory, nothing else of the host.
- a private ``/proc``, a minimal ``/dev`` (read-only, but with a private ``/dev/shm``), a private ``/tmp``; both
  tmpfs of ``tmp_bytes`` each when the layout says so (their files are memory).
- the image's files read-only, where the image puts them. A directory of the image that holds a mount point
  (``/golem`` when the volumes are ``/golem/in``…, ``/etc``) is recreated and its entries bound one by one, so
  image files and volumes can share a parent. The host's system paths win over the image's, and a volume
  hides what the image has at its path (as in a Golem VM, where volumes are mounted over the image).
- every volume read-write, bound from its directory on the host; the root itself is read-only, so the
  volumes, ``/tmp`` and ``/dev/shm`` are the only writable places, and the image's files when the layout says
  ``image_writable`` (the runtime then binds a copy of the image made for the activity).
- for an image built ``FROM python``, the host's Python at ``/usr/local``, read-only
  (:mod:`~golem_local.runtime.python_base`).

An image with a whole root file system (``root_fs``: the activity's writable view of it, prepared by
:mod:`~golem_local.runtime.rootfs`) differs most: that tree is bound read-write at ``/`` and nothing of the
host's system is shown; bubblewrap makes no user namespace of its own (it runs inside the one the root was
mounted in, where the image's users keep their ids) and leaves the sandbox's root the capabilities a
container's root has by default (:data:`IMAGE_CAPABILITIES`; inside its namespaces only);
``/proc``, ``/dev`` (with ``/dev/shm``) and the usual
directories of a VM (``/tmp``, ``/var``, ``/run``, ``/root``, ``/opt``) are there, ``writable_files`` (the
generated ``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``) are bound read-write over the image's, and
``files`` (the agent and the interpreter it runs on, under ``/.golem``) read-only.

A build (``image_as_root``) differs: the image tree being built is bound read-write at ``/`` itself, so that a
``RUN`` step can write anywhere in it, even make new top-level directories; the system directories are
bound over it as usual, and :func:`mount_points` names the paths bubblewrap had to create in the tree for
them, for the builder to remove afterwards.

:func:`check_bubblewrap` starts one such sandbox to prove that bubblewrap is installed and allowed to create
namespaces here, and raises :class:`~golem_api.errors.SandboxUnavailableError` saying what to do when not.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from attrs import field, frozen

from golem_local.runtime.base import Volume
from golem_local.runtime.python_base import PREFIX as PYTHON_PREFIX
from golem_local.runtime.python_base import PythonLayout
from golem_shared.errors import SandboxUnavailableError
from golem_shared.tasks import reap

__all__ = [
    "AGENT_PATH",
    "DEFAULT_HOSTNAME",
    "DEFAULT_PATH",
    "ETC_ENTRIES",
    "IMAGE_CAPABILITIES",
    "MISSING_MESSAGE",
    "SYSTEM_PATHS",
    "Interpreter",
    "SandboxLayout",
    "agent_interpreter",
    "bwrap_args",
    "check_bubblewrap",
    "describe_exit",
    "mount_points",
]

AGENT_PATH = "/.golem-agent.py"
"""Where the agent script (:mod:`golem_local.runtime.agent`) appears in the sandbox, read-only."""

DEFAULT_HOSTNAME = "golem-vm"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Host directories shown read-only (``/usr`` and the merged-/usr links or directories beside it)."""

ETC_ENTRIES = (
    "alternatives",
    "group",
    "hosts",
    "ld.so.cache",
    "localtime",
    "nsswitch.conf",
    "passwd",
    "ssl/certs",
    "ssl/openssl.cnf",
)
"""The parts of the host's ``/etc`` shown read-only: what the dynamic linker, name lookups and TLS need."""

IMAGE_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_SETFCAP",
)
"""What root of an image's sandbox keeps (in its own namespaces only): Docker's default set without
``CAP_NET_RAW`` (Docker left it out since 20.10: raw packets on a VPN link), ``CAP_MKNOD`` (a device node made in
a user namespace cannot be opened anyway) and ``CAP_AUDIT_WRITE`` (the kernel takes no audit message from a
user namespace other than the first). So files, ids (``su``, ``setpriv``, ``apt``'s ``_apt``), signals to its
other users, ports below 1024, ``chroot`` and file capabilities (``dpkg``) work as in a VM; no
``CAP_SYS_ADMIN`` (no mount, no unmount of the read-only covers), no ``CAP_SYS_PTRACE`` (the agent's memory and
descriptors stay its own), no ``CAP_NET_ADMIN``, no ``CAP_SYS_RESOURCE``."""

SYSTEM_PATHS = ("/bin", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/tmp", "/usr")
"""Paths that the sandbox fills itself: no volume may be at or under one of them."""

MISSING_MESSAGE = (
    "bubblewrap (bwrap) is not installed: install it with `apt-get install -y bubblewrap` (Debian/Ubuntu) "
    "or `dnf install bubblewrap`; the local network runs every command in it"
)

_CHECK_TIMEOUT = 10.0
_working: set[str] = set()  # bwrap executables that created a sandbox in this process


def describe_exit(code: int) -> str:
    """``exited with code 1``, or ``exited with code -9 (killed by SIGKILL)`` for a signal."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"exited with code {code} (killed by {name})"


@frozen
class Interpreter:
    """The Python that runs the agent inside the sandbox, and host directories it needs shown read-only."""

    path: str
    binds: tuple[str, ...] = ()


def agent_interpreter() -> Interpreter:
    """``/usr/bin/python3`` when the host has it (visible anyway with ``/usr``).

    Otherwise the interpreter running golem-api: its installation (``sys.base_prefix``) is then bound
    read-only at the same path in the sandbox, so commands can see that directory too.
    """
    if os.access("/usr/bin/python3", os.X_OK):
        return Interpreter("/usr/bin/python3")
    prefix = Path(sys.base_prefix)
    major, minor = sys.version_info[:2]
    executable = prefix / "bin" / f"python{major}.{minor}"
    if not executable.exists():
        executable = prefix / "bin" / "python3"
    binds = () if str(prefix).startswith("/usr/") else (str(prefix),)
    return Interpreter(str(executable), binds)


@frozen
class SandboxLayout:
    """What the sandbox shows: volumes (read-write), an image tree (read-only unless ``image_writable``), files
    to bind read-only, the host's Python when ``python`` is given; ``image_as_root`` for builds (see the module
    docstring)."""

    volumes: tuple[Volume, ...] = ()
    image_root: Path | None = None
    working_dir: str | None = None
    hostname: str = DEFAULT_HOSTNAME
    files: tuple[tuple[Path, str], ...] = ()  # (host path, sandbox path), read-only
    host_binds: tuple[str, ...] = field(factory=tuple)  # host paths shown read-only at the same path
    image_writable: bool = False
    image_as_root: bool = False
    python: PythonLayout | None = None
    # VPN (golem_local.net): keep the network namespace the sandbox is started in (the caller runs bwrap under
    # `nsenter --net=…`), and show this file as /etc/hosts instead of the host's.
    share_net: bool = False
    hosts_file: Path | None = None
    # Hardening (golem_local.runtime.launch): the size of /tmp and of /dev/shm each (None: unsized), and
    # --disable-userns (no user namespaces inside, so no second uid map to play with).
    tmp_bytes: int | None = None
    disable_userns: bool = False
    root_fs: Path | None = None  # a whole root file system, bound read-write at / (image_root: the image's tree)
    writable_files: tuple[tuple[Path, str], ...] = ()  # (host path, sandbox path), read-write, with root_fs


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


class _Builder:
    """Collects bwrap options, creating each parent directory once, in order, with ``--dir``."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self.made: set[str] = {"/"}

    def parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent not in self.made:
            self.directory(parent)

    def directory(self, path: str) -> None:
        if path in self.made:
            return
        self.parents(path)
        self.args += ["--dir", path]
        self.made.add(path)

    def op(self, option: str, source: str, dest: str) -> None:
        self.parents(dest)
        self.args += [option, source, dest]
        self.made.add(dest)

    def mount(self, option: str, dest: str) -> None:
        """A filesystem made by bwrap itself (``--proc``, ``--dev``, ``--tmpfs``) at ``dest``."""
        self.parents(dest)
        self.args += [option, dest]
        self.made.add(dest)


def _image(builder: _Builder, host_dir: Path, sandbox_dir: str, fixed: Sequence[str], bind: str) -> None:
    """Bind the image's entries under ``host_dir`` at ``sandbox_dir``, merging directories that hold fixed paths."""
    with os.scandir(host_dir) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = posixpath.join(sandbox_dir, entry.name)
            if any(_under(path, point) for point in fixed):
                continue  # the host's system path, a volume or the agent wins
            if any(_under(point, path) for point in fixed):
                if entry.is_dir(follow_symlinks=False):
                    builder.directory(path)
                    _image(builder, Path(entry.path), path, fixed, bind)
                continue  # a file or link cannot hold a mount point: left out
            if entry.is_symlink():
                builder.op("--symlink", os.readlink(entry.path), path)
            elif entry.is_dir() or entry.is_file():
                builder.op(bind, entry.path, path)


def _python(builder: _Builder, python: PythonLayout) -> None:
    """The host's Python at ``/usr/local``: a tmpfs there, filled, then made read-only."""
    builder.mount("--tmpfs", PYTHON_PREFIX)
    for directory in python.directories:
        builder.directory(directory)
    for source, dest in python.files:
        builder.op("--ro-bind", str(source), dest)
    for target, dest in python.symlinks:
        builder.op("--symlink", target, dest)
    builder.args += ["--remount-ro", PYTHON_PREFIX]


def bwrap_args(layout: SandboxLayout) -> list[str]:
    """The bubblewrap options (without the program and the command) for ``layout``; see the module docstring."""
    return _assemble(layout).args


def mount_points(layout: SandboxLayout) -> tuple[str, ...]:
    """Every sandbox path ``layout`` mounts or creates something at (for builds: what to remove from the tree)."""
    return tuple(sorted(_assemble(layout).made - {"/"}))


_VM_DIRECTORIES = (("/tmp", "1777"), ("/var", "0755"), ("/run", "0755"), ("/root", "0700"), ("/opt", "0755"))
"""Directories every image's sandbox has (made in the activity's layer when the image lacks them)."""


def _common(builder: _Builder, layout: SandboxLayout) -> None:
    builder.args += [
        "--die-with-parent",
        "--as-pid-1",  # the agent is PID 1: when it exits, the kernel empties the sandbox before bwrap returns
        "--new-session",
        "--hostname",
        layout.hostname,
        "--clearenv",
    ]


def _assemble_root_fs(layout: SandboxLayout, root_fs: Path) -> _Builder:
    """The sandbox of an image with a whole root file system (see the module docstring)."""
    builder = _Builder()
    builder.args += ["--bind", str(root_fs), "/"]
    # no --unshare-user: bubblewrap runs in the user namespace the root was mounted in (rootfs.user_namespace)
    builder.args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    builder.args += ["--cap-drop", "ALL"]
    for capability in IMAGE_CAPABILITIES:
        builder.args += ["--cap-add", capability]
    if not layout.share_net:
        builder.args.append("--unshare-net")
    _common(builder, layout)
    builder.mount("--proc", "/proc")
    builder.mount("--dev", "/dev")
    if layout.tmp_bytes is not None:
        builder.args += ["--size", str(layout.tmp_bytes)]
    builder.mount("--tmpfs", "/dev/shm")
    for path, mode in _VM_DIRECTORIES:
        builder.args += ["--perms", mode]
        builder.directory(path)
    if layout.image_root is not None and not os.path.lexists(layout.image_root / "var" / "run"):
        builder.op("--symlink", "/run", "/var/run")  # where daemons keep their pid files, as in every VM image
    for source, dest in layout.writable_files:
        builder.op("--bind", str(source), dest)
    if layout.hosts_file is not None:  # an activity in a VPN: its members by name
        builder.op("--ro-bind", str(layout.hosts_file), "/etc/hosts")
    for volume in sorted(layout.volumes, key=lambda volume: volume.path):
        builder.op("--bind", str(volume.host_path), volume.path)
    if layout.working_dir is not None:
        builder.directory(layout.working_dir)
    for source, dest in layout.files:
        builder.op("--ro-bind", str(source), dest)
    builder.args += ["--remount-ro", "/dev", "--chdir", "/"]
    return builder


def _assemble(layout: SandboxLayout) -> _Builder:
    if layout.root_fs is not None:
        return _assemble_root_fs(layout, layout.root_fs)
    builder = _Builder()
    if layout.image_as_root:
        if layout.image_root is None:
            raise ValueError("image_as_root needs an image_root to bind at /")
        builder.args += ["--bind", str(layout.image_root), "/"]
    builder.args += [
        "--unshare-all",
        *(["--share-net"] if layout.share_net else []),
        "--unshare-user",
        "--uid",
        "0",
        "--gid",
        "0",
        "--cap-drop",
        "ALL",
    ]
    _common(builder, layout)
    if layout.disable_userns:
        builder.args.append("--disable-userns")
    fixed: list[str] = []
    for name in SYSTEM_DIRS:
        host = Path("/", name)
        if host.is_symlink():
            builder.op("--symlink", os.readlink(host), f"/{name}")
        elif host.is_dir():
            builder.op("--ro-bind", str(host), f"/{name}")
        else:
            continue
        fixed.append(f"/{name}")
    builder.mount("--proc", "/proc")
    builder.mount("--dev", "/dev")
    for tmpfs in ("/dev/shm", "/tmp"):
        if layout.tmp_bytes is not None:
            builder.args += ["--size", str(layout.tmp_bytes)]
        builder.mount("--tmpfs", tmpfs)
    fixed += ["/proc", "/dev", "/tmp"]
    if layout.python is not None:
        _python(builder, layout.python)
    builder.directory("/etc")
    for entry in ETC_ENTRIES:
        if entry == "hosts" and layout.hosts_file is not None:
            builder.op("--ro-bind", str(layout.hosts_file), "/etc/hosts")
            fixed.append("/etc/hosts")
        elif Path("/etc", entry).exists():
            builder.op("--ro-bind", f"/etc/{entry}", f"/etc/{entry}")
            fixed.append(f"/etc/{entry}")
    for host_path in layout.host_binds:
        builder.op("--ro-bind", host_path, host_path)
        fixed.append(host_path)
    volumes = sorted(layout.volumes, key=lambda volume: volume.path)
    fixed += [volume.path for volume in volumes]
    fixed += [dest for _source, dest in layout.files]
    working_dir = layout.working_dir
    if working_dir is not None and not any(_under(working_dir, point) for point in fixed):
        in_image = layout.image_root is not None and (layout.image_root / working_dir.lstrip("/")).is_dir()
        if not in_image:
            fixed.append(working_dir)  # an empty, read-only directory, so that commands can start there
    if layout.image_root is not None and not layout.image_as_root:
        _image(builder, layout.image_root, "/", fixed, "--bind" if layout.image_writable else "--ro-bind")
    if working_dir in fixed and working_dir not in builder.made:
        builder.directory(working_dir)
    for volume in volumes:
        builder.op("--bind", str(volume.host_path), volume.path)
    for source, dest in layout.files:
        builder.op("--ro-bind", str(source), dest)
    # The mounts above are separate, so these leave the volumes, /tmp and /dev/shm writable (and, in a build,
    # the root: the tree being built).
    builder.args += ["--remount-ro", "/dev"]
    if not layout.image_as_root:
        builder.args += ["--remount-ro", "/"]
    # A build starts its step in the WORKDIR; the runtime's agent starts each command in its own directory.
    builder.args += ["--chdir", layout.working_dir if layout.image_as_root and layout.working_dir else "/"]
    return builder


def _likely_cause(stderr: str) -> str:
    text = stderr.lower()
    if "namespace" in text or "uid map" in text or "unshare" in text or "operation not permitted" in text:
        return (
            "this machine does not let this user create namespaces: unprivileged user namespaces are probably "
            "disabled (`sysctl -w kernel.unprivileged_userns_clone=1`, `user.max_user_namespaces` > 0; on "
            "Ubuntu 23.10+ also `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`), or a container "
            "forbids them (run it with `--privileged`, or with `--security-opt seccomp=unconfined "
            "--security-opt apparmor=unconfined`)"
        )
    if "mount" in text or "proc" in text:
        return (
            "mounting inside the sandbox is refused, as in a container without the right to mount /proc: "
            "run the container with `--privileged` or `--security-opt systempaths=unconfined`"
        )
    return "bubblewrap cannot build the sandbox the local network needs on this machine"


async def check_bubblewrap(bwrap: str = "bwrap") -> None:
    """Prove that ``bwrap`` exists and can create the local runtime's sandbox here (once per executable).

    Raises :class:`SandboxUnavailableError` with what to install, or with bwrap's own error and its likely
    cause (namespaces disabled, a container that forbids mounting).
    """
    found = shutil.which(bwrap)
    if found is None:
        raise SandboxUnavailableError(f"{MISSING_MESSAGE} (looked for {bwrap!r})")
    if found in _working:
        return
    interpreter = agent_interpreter()
    args = [found, *bwrap_args(SandboxLayout(host_binds=interpreter.binds)), interpreter.path, "-I", "-S", "-c", ""]
    try:
        process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        raise SandboxUnavailableError(f"cannot run bubblewrap {found!r}: {exc}; {MISSING_MESSAGE}") from exc
    try:
        _stdout, stderr = await asyncio.wait_for(process.communicate(), _CHECK_TIMEOUT)
    except BaseException as exc:
        await reap(process)
        if not isinstance(exc, asyncio.TimeoutError):
            raise
        raise SandboxUnavailableError(
            f"bubblewrap {found!r} did not create a test sandbox within {_CHECK_TIMEOUT:.0f} s; "
            "check that the machine is not overloaded and that `bwrap --version` answers"
        ) from None
    if process.returncode != 0:
        error = stderr.decode(errors="replace").strip() or "(nothing on stderr)"
        raise SandboxUnavailableError(
            f"bubblewrap {found!r} cannot create a sandbox here: it {describe_exit(process.returncode or 0)} "
            f"saying: {error}. Likely cause: {_likely_cause(error)}"
        )
    _working.add(found)
