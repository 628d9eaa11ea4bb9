"""Network namespaces for the local VPN: iproute2 commands, ``setns`` in a thread of its own, clean-up.

Everything here needs root (``CAP_SYS_ADMIN`` and ``CAP_NET_ADMIN`` in the initial user namespace); see
:func:`unavailable_reason`. Names of the namespaces the node makes start with a node-specific prefix
(:func:`node_prefix`: ``golemvpn-<pid>-<n>-``), so that a node removes its own at stop and, at start, those
of nodes whose process is gone (:func:`remove_stale`), never another live node's.

:class:`NetnsDialer` is how the node, which lives in the host's network namespace, opens TCP connections
inside a VPN: one dedicated thread per VPN enters the hub namespace once (``setns``; Python 3.11 has no
``os.setns``, so through libc) and creates sockets on request; a socket keeps the namespace it was created in
for its whole life, whatever thread then uses it, so the event loop connects, reads and writes it as usual.
Each socket's namespace cookie (``SO_NETNS_COOKIE``) is compared with the one the thread saw when it started:
a socket made in the host's namespace would send VPN addresses to the host's real network. The thread is never
one of a pool (a pooled thread left in the wrong namespace would poison whatever runs on it next).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import itertools
import logging
import os
import queue
import re
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

from golem_shared.errors import LocalNodeError
from golem_shared.tasks import reap

__all__ = [
    "NETNS_DIR",
    "NetnsDialer",
    "NetnsError",
    "delete_netns",
    "ip_batch",
    "list_netns",
    "netns_cookie",
    "node_prefix",
    "remove_stale",
    "run_ip",
    "unavailable_reason",
    "write_sysctls",
]

_log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
"""Where ``ip netns add`` puts the named namespaces."""
CLONE_NEWNET = 0x40000000
SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)  # Linux 5.14+; not in Python 3.11's socket module
BASE_PREFIX = "golemvpn-"
_OWNED = re.compile(r"golemvpn-(\d+)-")
_IP_TIMEOUT = 10.0  # seconds one `ip` command may take
_THREAD_TIMEOUT = 5.0  # seconds a namespace thread may take to start, answer or stop
_node_numbers = itertools.count(1)
_libc: ctypes.CDLL | None = None


class NetnsError(LocalNodeError):
    """A network namespace could not be made, changed or entered (the message has the command and its error)."""


def node_prefix() -> str:
    """A fresh prefix for one node's namespaces: ``golemvpn-<pid>-<n>-`` (``n`` counts nodes in the process)."""
    return f"{BASE_PREFIX}{os.getpid()}-{next(_node_numbers)}-"


def unavailable_reason() -> str | None:
    """Why this process cannot build VPNs here, or ``None`` when it can (a cheap check: no namespace is made)."""
    if not sys.platform.startswith("linux"):
        return f"VPNs of the local network need Linux network namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return (
            "VPNs of the local network need root here (network namespaces, a bridge and veth pairs per VPN): run "
            "the node as root (for instance in a container), or without VPNs; the rootless variant (namespaces "
            "in a user namespace of the node) is not built yet"
        )
    missing = [tool for tool, package in (("ip", "iproute2"), ("nsenter", "util-linux")) if shutil.which(tool) is None]
    if missing:
        return f"VPNs of the local network need {' and '.join(missing)}: apt-get install -y iproute2 util-linux"
    if not Path("/proc/self/ns/net").exists():
        return "VPNs of the local network need network namespaces, and /proc/self/ns/net is missing"
    return None


def _setns(fd: int) -> None:
    """``setns(fd, CLONE_NEWNET)`` for the calling thread."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def netns_cookie(sock: socket.socket) -> int:
    """The cookie of the network namespace ``sock`` belongs to."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), sys.byteorder)


async def run_ip(*args: str, stdin: str | None = None, netns: str | None = None) -> str:
    """Run ``ip [-n netns] args…`` (bounded); its stdout, or :class:`NetnsError` with its stderr."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise NetnsError(f"cannot run {' '.join(argv)!r}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), _IP_TIMEOUT
        )
    except BaseException as exc:  # timed out, or cancelled: the program does not outlive us
        await reap(process)
        if isinstance(exc, asyncio.TimeoutError):
            raise NetnsError(f"{' '.join(argv)!r} did not finish within {_IP_TIMEOUT:g} s") from None
        raise
    if process.returncode != 0:
        what = f" (commands: {stdin.strip()!r})" if stdin else ""
        raise NetnsError(f"{' '.join(argv)!r} failed: {err.decode(errors='replace').strip()}{what}")
    return out.decode(errors="replace")


async def ip_batch(commands: Sequence[str], netns: str | None = None) -> None:
    """Several iproute2 commands in one process (``ip [-n netns] -batch -``)."""
    await run_ip("-batch", "-", stdin="\n".join(commands) + "\n", netns=netns)


async def _in_thread_of_netns(netns: str, what: str, work: Callable[[], None]) -> None:
    """Run ``work`` in a new thread that entered ``netns`` and ends afterwards (never a pooled thread)."""
    done: Future[None] = Future()

    def run() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            work()
        except BaseException as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)

    threading.Thread(target=run, name=f"netns {what} {netns}", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.wrap_future(done), _THREAD_TIMEOUT)
    except asyncio.TimeoutError:
        raise NetnsError(f"{what} in the network namespace {netns} took more than {_THREAD_TIMEOUT:g} s") from None
    except OSError as exc:
        raise NetnsError(f"{what} in the network namespace {netns} failed: {exc}") from exc


async def write_sysctls(netns: str, settings: Mapping[str, str]) -> None:
    """Set sysctls of a namespace (``net.*`` files of /proc/sys belong to the reading thread's namespace)."""

    def work() -> None:
        for key, value in settings.items():
            Path("/proc/sys", key.replace(".", "/")).write_text(value)

    await _in_thread_of_netns(netns, "setting sysctls", work)


async def add_netns(name: str) -> None:
    """``ip netns add name``."""
    await run_ip("netns", "add", name)


async def delete_netns(name: str) -> None:
    """``ip netns del name``, logging (not raising) a failure; a missing namespace is not one.

    It removes the name only: the namespace itself lives on while a process, thread or socket holds it, so
    end those first (the sandbox, the relayed connections, the dialer thread).
    """
    if not (NETNS_DIR / name).exists():
        return
    try:
        await run_ip("netns", "del", name)
    except NetnsError as exc:
        _log.error("local VPN: could not remove the network namespace %s: %s", name, exc)


def list_netns(prefix: str) -> list[str]:
    """The names of the namespaces in /run/netns that start with ``prefix``, sorted."""
    try:
        return sorted(entry.name for entry in NETNS_DIR.iterdir() if entry.name.startswith(prefix))
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def remove_stale() -> list[str]:
    """Remove the namespaces left behind by nodes whose process is gone (killed, crashed); return their names."""
    stale = []
    for name in list_netns(BASE_PREFIX):
        match = _OWNED.match(name)
        if match is not None and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            stale.append(name)
    for name in stale:
        await delete_netns(name)
    if stale:
        _log.info("local VPN: removed %d network namespace(s) left by nodes that are gone: %s", len(stale), stale)
    return stale


_Request = tuple["Future[socket.socket]", int, int]


class NetnsDialer:
    """Makes sockets inside one network namespace for this process, from a thread that stays there.

    ``await dialer.start()``, then ``await dialer.open_connection(host, port)``; ``await dialer.aclose()``
    ends the thread (so that it no longer holds the namespace).
    """

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._ready: Future[int] = Future()
        self._stopped: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name=f"netns dialer {netns}", daemon=True)
        self.cookie: int | None = None

    def __repr__(self) -> str:
        return f"<NetnsDialer {self.netns}>"

    async def start(self) -> None:
        """Start the thread and wait until it is inside the namespace."""
        self._thread.start()
        try:
            self.cookie = await asyncio.wait_for(asyncio.wrap_future(self._ready), _THREAD_TIMEOUT)
        except asyncio.TimeoutError:
            raise NetnsError(f"the dialer of {self.netns} did not start within {_THREAD_TIMEOUT:g} s") from None
        except OSError as exc:
            raise NetnsError(f"cannot enter the network namespace {self.netns}: {exc}") from exc

    def _run(self) -> None:
        try:
            try:
                fd = os.open(NETNS_DIR / self.netns, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    target = os.fstat(fd).st_ino
                    _setns(fd)
                finally:
                    os.close(fd)
                if os.stat("/proc/thread-self/ns/net").st_ino != target:
                    raise OSError(errno.EINVAL, "setns did not move the thread into the namespace")
                with socket.socket() as reference:
                    cookie = netns_cookie(reference)
            except BaseException as exc:
                self._ready.set_exception(exc)
                return
            self._ready.set_result(cookie)
            while (item := self._requests.get()) is not None:
                answer, family, kind = item
                try:
                    answer.set_result(socket.socket(family, kind))
                except BaseException as exc:
                    answer.set_exception(exc)
        finally:
            self._stopped.set_result(None)

    async def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A new socket of the namespace (checked by its cookie)."""
        if self.cookie is None or self._stopped.done():
            raise NetnsError(f"the dialer of {self.netns} is not running")
        answer: Future[socket.socket] = Future()
        self._requests.put((answer, family, kind))
        sock = await asyncio.wait_for(asyncio.wrap_future(answer), _THREAD_TIMEOUT)
        if netns_cookie(sock) != self.cookie:
            sock.close()
            raise NetnsError(f"a socket of the dialer of {self.netns} was not made in that namespace; refused")
        return sock

    async def open_connection(
        self, host: str, port: int, *, limit: int = 2**20
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """``asyncio.open_connection`` to ``host:port`` inside the namespace (unbounded: the caller bounds it)."""
        sock = await self.socket()
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return await asyncio.open_connection(sock=sock, limit=limit)
        except BaseException:
            sock.close()
            raise

    async def aclose(self) -> None:
        """End the thread (idempotent)."""
        if not self._thread.is_alive():
            return
        self._requests.put(None)
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._stopped), _THREAD_TIMEOUT)
        except asyncio.TimeoutError:
            _log.error("local VPN: the dialer thread of %s did not stop within %g s", self.netns, _THREAD_TIMEOUT)
