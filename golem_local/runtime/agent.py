"""The agent inside a local ``vm`` sandbox: it starts the activity's commands and reports on them.

The runtime (:mod:`golem_local.runtime.vm`) starts it as the sandbox's first process, PID 1 of the
sandbox's PID namespace, and drives it over the sandbox's stdin and stdout. As PID 1 it reaps every process
that ends in the sandbox, orphaned daemons included, and when it exits the kernel kills whatever is left
before the agent's own exit is reported to bubblewrap: the sandbox is empty once bubblewrap has exited.

This file runs *inside* the sandbox under the host's ``/usr/bin/python3`` with ``-I -S`` (or, on a host
without one, the interpreter running golem-api; see :func:`~golem_local.runtime.sandbox.agent_interpreter`),
so it uses the standard library only, runs on Python 3.7 or newer, and imports nothing of golem_api (the
package is not visible in the sandbox).

Protocol: one JSON object per line, UTF-8, in both directions; an output event's line is followed by the
output's raw bytes (``size`` of them), so that output crosses the channel without being re-encoded.

Requests (runtime → agent, on stdin)::

    {"op": "run", "id": 7, "argv": ["sh", "-c", "…"], "env": {"PATH": "…"}, "cwd": "/golem/work"}
    {"op": "chain", "env": {…}, "commands": [{"id": 8, "argv": […], "cwd": "…"}, {"id": 9, …, "env": {…}}, …]}
                                   run the commands one after the other (see "Chains" below); a command without
                                   an ``env`` of its own gets the chain's
    {"op": "kill", "id": 7}        SIGKILL the command's process group (it was started in a session of its own);
                                   for a command of a chain: end the whole chain (see below)
    {"op": "exit"}                 kill the running commands and end; the sandbox ends with the agent
    {"op": "exit", "grace": 5.0}   SIGTERM every process of the sandbox, end once they are all gone or the
                                   grace has passed (what is left is then killed with the agent)

Events (agent → runtime, on stdout)::

    {"ev": "ready", "pid": 1, "python": "3.11.2"}
    {"ev": "out", "id": 7, "fd": 1, "size": N} + N bytes    fd 1 is stdout, 2 stderr; sent as read, not by line
    {"ev": "exit", "id": 7, "code": 0}                        a negative code -N: killed by signal N
    {"ev": "failed", "id": 7, "message": "No such file…"}     the command could not be started
    {"ev": "error", "message": "…"}                           a request the agent could not read

A command ends when its main process exits, not when its output pipes close: a daemon it left in the
background keeps the pipes open. After the exit the agent forwards what is still readable for
``DRAIN_SECONDS`` and then reports the exit; from then on it reads and discards what the daemon writes
there, so that the daemon never gets ``EPIPE``.

Chains. The commands of a chain run in order, each started the moment the one before it has exited with code 0
(that exit is reported right after; a ``failed`` event of the next may come before it), without waiting for the
runtime: a batch of many short commands then costs a
spawn and a reap per command, not a round trip to the runtime as well. A command that cannot be started, exits
with another code or is killed ends its chain: the commands after it never run, and nothing is reported for them
(the runtime applies the same rule). A kill naming any command of a chain that has not ended (running or still
queued) ends the whole chain: its running command is killed and the queued ones are dropped. An exit request
drops every queued command at once, so that nothing starts during the stop's grace.

The channel is the agent's alone. Before anything else the agent makes itself non-dumpable
(``prctl(PR_SET_DUMPABLE, 0)``; it refuses to serve if it cannot): commands, which have no capabilities, can
then neither open its pipes through ``/proc/1/fd``, nor take them with ``pidfd_getfd``, nor ``ptrace`` it
or read its memory, even as the same user. It stays so: the agent never executes anything itself and
never changes its credentials. Nothing the runtime bills comes from here: CPU time is measured from outside
the sandbox (:mod:`golem_local.runtime.launch`), so the agent has no usage request any more.

Each command gets ``oom_score_adj`` 500, so that when the sandbox's memory limit is reached the kernel ends
a command rather than the agent (and with it the sandbox). ``--rlimits nproc=N,as=B`` (where the host has no
control groups to limit the sandbox) sets those limits on the agent, so on every command; without
``CAP_SYS_RESOURCE``, which nothing in the sandbox has, no command can raise them again.

A command's stdout pipe (and the agent's own stdout) is grown to ``PIPE_SIZE`` where the kernel allows it, and
read ``CHUNK`` bytes at a time: a command that prints a lot then costs one event per mebibyte, not per 64 KiB.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing alone costs more than the rest of the start-up
if TYPE_CHECKING:  # loaded by _load_machinery() once the first request comes (see main)
    import contextlib
    import json
    import selectors
    import signal
    import subprocess
    import time
    from typing import Any

__all__ = [
    "COMMAND_OOM_SCORE_ADJ",
    "DRAIN_SECONDS",
    "Agent",
    "harden",
    "main",
    "set_rlimits",
]

CHUNK = 1 << 20
"""Bytes read from a command's pipe at once: at most this many in one output event."""
PIPE_SIZE = 1 << 20
"""The size asked for the output pipes and the agent's stdout (Linux caps it at ``/proc/sys/fs/pipe-max-size``)."""
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ names it)
DRAIN_SECONDS = 0.05
COMMAND_OOM_SCORE_ADJ = b"500"
PR_SET_DUMPABLE = 4
_RLIMITS = {"nproc": "RLIMIT_NPROC", "as": "RLIMIT_AS"}
_STDIN = 0
_STDOUT = 1
_POSIX_SPAWN = hasattr(os, "posix_spawn") and hasattr(os, "POSIX_SPAWN_DUP2")
_DEFAULT_SIGNALS: tuple[int, ...] = ()  # what Python ignores and a command gets back as the default: set by
# _load_machinery (``signal`` is not imported before the first request)


def _emit(event: dict[str, Any], payload: bytes = b"") -> None:
    """Write one event line to stdout, and ``payload`` after it."""
    _write_event((json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8"), payload)


def _emit_exit(command_id: int, code: int) -> None:
    """The exit event of a command, written without ``json`` (nothing but numbers in it)."""
    _write_event(b'{"ev":"exit","id":%d,"code":%d}\n' % (command_id, code))


def _write_event(line: bytes, payload: bytes = b"") -> None:
    """Write an event's ``line`` and ``payload`` to stdout, all of it (stdout stays blocking: the runtime
    always reads)."""
    written = os.writev(_STDOUT, [line, payload]) if payload else os.write(_STDOUT, line)
    if written < len(line) + len(payload):  # a signal came mid-write: the rest, from where it stopped
        view = memoryview(line + payload)[written:]
        while view:
            view = view[os.write(_STDOUT, view) :]


def _grow_pipe(fd: int) -> None:
    """Ask for a ``PIPE_SIZE`` pipe buffer; a kernel that refuses (a user over its pipe quota) keeps the default."""
    try:  # noqa: SIM105 - no contextlib: this runs before the machinery is loaded
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


class _Command:
    """A started command: its process id, its open output pipes (fd → 1 or 2) and, once known, its exit code."""

    def __init__(self, command_id: int, pid: int, pipes: dict[int, int]) -> None:
        self.command_id = command_id
        self.pid = pid
        self.pipes = pipes
        self.code: int | None = None
        self.drain_until = 0.0


class _Chain:
    """The commands of a chain not started yet (id, argv, env, cwd, in order) and the one running now."""

    def __init__(self, queue: list[tuple[int, list[str], dict[str, str], str]]) -> None:
        self.queue = queue
        self.next = 0  # the index in ``queue`` of the next command to start
        self.running: int | None = None


def _spawn(argv: list[str], env: dict[str, str], cwd: str, stdout: int, stderr: int) -> int:
    """Start ``argv`` in a session of its own (so that a kill reaches what it starts) with ``stdin`` on
    ``/dev/null``; its pid. ``OSError`` (naming the program, or ``cwd``) when it cannot be started.

    ``os.posix_spawn`` where there is one (Python 3.8+): a vfork-style spawn without ``subprocess``'s work
    around it (some 25 µs less of the agent's CPU per command, measured). The program is looked up in ``env``'s
    ``PATH`` as ``subprocess`` does; every descriptor of the agent but the three given is close-on-exec
    (:func:`_close_on_exec`), so the command inherits none of them.
    """
    global _POSIX_SPAWN
    if not _POSIX_SPAWN:
        process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True
        )
        process.returncode = 0  # not its code: the agent reaps it (_reap), and Popen must never wait for it
        return process.pid
    os.chdir("/")
    os.chdir(cwd)  # as subprocess's child does first (a relative cwd is taken from /)
    program = _find_program(argv[0], env)
    try:
        return os.posix_spawn(
            program,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, stdout, 1),
                (os.POSIX_SPAWN_DUP2, stderr, 2),
            ],
            setsid=True,
            setsigdef=_DEFAULT_SIGNALS,  # what Python ignores (SIGPIPE…) is the default again, as subprocess does
        )
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, argv[0]) from None  # the program as asked for, as subprocess
    except NotImplementedError:  # a C library without POSIX_SPAWN_SETSID: subprocess from now on
        _POSIX_SPAWN = False
        return _spawn(argv, env, cwd, stdout, stderr)


def _find_program(name: str, env: dict[str, str]) -> str:
    """``name`` itself when it holds a ``/``; else the first executable file of that name in ``env``'s ``PATH``.
    ``FileNotFoundError``, or ``PermissionError`` when one was there but could not be executed."""
    if "/" in name:
        return name
    denied = False
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
        denied = denied or os.path.lexists(candidate)
    code = errno.EACCES if denied else errno.ENOENT
    raise (PermissionError if denied else FileNotFoundError)(code, os.strerror(code), name)


def _close_on_exec() -> None:
    """Mark every descriptor above stderr close-on-exec (those the sandbox started the agent with included): a
    spawned command gets stdin, stdout and stderr only, as ``subprocess``'s ``close_fds`` would see to."""
    try:
        descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        descriptors = list(range(3, 1024))
    for fd in descriptors:
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                os.set_inheritable(fd, False)


class Agent:
    """The agent's event loop: requests on stdin, command output pipes, and child exits (SIGCHLD)."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.commands: dict[int, _Command] = {}
        self.chains: dict[int, _Chain] = {}  # each command of a chain that has not ended (running or queued)
        self.orphans: set[int] = set()  # pipes of reported commands, held open by daemons; read and discarded
        self.pending = b""
        self.running = True
        self.childless = False  # set by _reap when the agent has no child left: the sandbox is empty
        self.ending_at: float | None = None  # the end of the stop grace, once an exit with a grace came
        self.wake_read, wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(wake_write, False)
        # A Python-level SIGCHLD handler makes the interpreter write to the wakeup fd: the select() below
        # then returns as soon as a command's main process exits.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        self.selector.register(self.wake_read, selectors.EVENT_READ)
        self.selector.register(_STDIN, selectors.EVENT_READ)

    def serve(self, *, ready: bool = True) -> None:
        """Say ready (unless ``ready`` is false: said already), run until asked to exit or until stdin closes,
        then kill what still runs."""
        if ready:
            _say_ready()
        while self.running:
            for key, _events in self.selector.select(self._timeout()):
                if key.fd == _STDIN:
                    self._read_requests()
                elif key.fd == self.wake_read:
                    self._drain_wakeups()
                else:
                    self._read_pipe(key.fd)
            self._check_exits()
            if self.ending_at is not None and (self.childless or time.monotonic() >= self.ending_at):
                self.running = False
        for command in self.commands.values():
            self._kill(command)

    def _timeout(self) -> float | None:
        deadlines = [c.drain_until for c in self.commands.values() if c.code is not None]
        if self.ending_at is not None:
            deadlines.append(self.ending_at)
        return max(min(deadlines) - time.monotonic(), 0.0) if deadlines else None

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_read, 512):
                pass
        except BlockingIOError:
            pass

    def _read_requests(self) -> None:
        self.take(os.read(_STDIN, CHUNK))

    def take(self, data: bytes) -> None:
        """Handle the requests completed by ``data`` read from stdin (``b""``: stdin closed, the end)."""
        if not data:
            self.running = False
            return
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            if line.strip():
                self._handle(line)

    def _handle(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            op = request["op"]
            if op == "run":
                self._run(int(request["id"]), request["argv"], request["env"], request["cwd"])
            elif op == "chain":
                self._chain(request)
            elif op == "kill":
                command_id = int(request["id"])
                chain = self.chains.get(command_id)
                if chain is not None:
                    self._drop(chain)
                    command_id = chain.running if chain.running is not None else command_id
                command = self.commands.get(command_id)
                if command is not None and command.code is None:
                    self._kill(command)
            elif op == "exit":
                self._exit(float(request.get("grace", 0)))
            else:
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, KeyError, TypeError) as exc:
            _emit({"ev": "error", "message": f"cannot handle request {line[:200]!r}: {exc}"})

    def _exit(self, grace: float) -> None:
        """End now (no grace), or SIGTERM every process of the sandbox and end when they are gone or in
        ``grace`` seconds. As PID 1 of the sandbox, ``kill(-1)`` reaches every process in it but the agent;
        anywhere else (never, as started by the runtime) only the commands' process groups are signalled."""
        for chain in list(self.chains.values()):  # nothing queued starts any more
            self._drop(chain)
        if grace <= 0 or self.ending_at is not None:
            self.running = False
            return
        self.ending_at = time.monotonic() + grace
        if os.getpid() == 1:
            with contextlib.suppress(OSError):  # ESRCH: nothing else runs
                os.kill(-1, signal.SIGTERM)
        else:
            for command in self.commands.values():
                with contextlib.suppress(OSError):
                    os.killpg(command.pid, signal.SIGTERM)
        self._reap()  # nothing may have been running at all

    def _chain(self, request: dict[str, Any]) -> None:
        """Queue a chain's commands (every one checked first: a malformed chain runs nothing) and start the first."""
        default_env = request.get("env")
        queue = []
        for command in request["commands"]:
            env = command.get("env", default_env)
            argv = command["argv"]
            if not isinstance(env, dict) or not isinstance(argv, list) or not isinstance(command["cwd"], str):
                raise ValueError("a chained command needs argv (a list), env (an object) and cwd (a string)")
            command_id = int(command["id"])
            if command_id in self.chains or command_id in self.commands:
                raise ValueError(f"command id {command_id} is in use")
            queue.append((command_id, argv, env, command["cwd"]))
        chain = _Chain(queue)
        for entry in queue:
            self.chains[entry[0]] = chain
        self._advance(chain)

    def _advance(self, chain: _Chain) -> None:
        """Start the chain's next command; one that cannot be started ends the chain."""
        if chain.next >= len(chain.queue):
            return
        command_id, argv, env, cwd = chain.queue[chain.next]
        chain.next += 1
        chain.running = command_id
        if not self._run(command_id, argv, env, cwd):
            self.chains.pop(command_id, None)
            self._drop(chain)

    def _drop(self, chain: _Chain) -> None:
        """End a chain: its queued commands never run (its running command, if any, runs on unless killed)."""
        for entry in chain.queue[chain.next :]:
            self.chains.pop(entry[0], None)
        chain.next = len(chain.queue)

    def _run(self, command_id: int, argv: list[str], env: dict[str, str], cwd: str) -> bool:
        """Start a command; whether it started (a ``failed`` event says why not)."""
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            if not argv:
                raise ValueError("no program to run: the argument list is empty")
            pid = _spawn(argv, env, cwd, out_write, err_write)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            os.close(out_read)
            os.close(err_read)
            if isinstance(exc, OSError) and exc.errno is not None:
                message = os.strerror(exc.errno)
                if exc.filename is not None:
                    message += f": {exc.filename!r}"
            else:
                message = str(exc)
            _emit({"ev": "failed", "id": command_id, "message": message})
            return False
        finally:
            os.close(out_write)
            os.close(err_write)
        self.childless = False
        _prefer_as_oom_victim(pid)
        pipes = {out_read: 1, err_read: 2}
        _grow_pipe(out_read)  # stdout only: a user's pipe buffers count against a quota (pipe-user-pages-soft)
        for fd in pipes:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ)
        self.commands[command_id] = _Command(command_id, pid, pipes)
        return True

    def _owner(self, fd: int) -> _Command | None:
        for command in self.commands.values():
            if fd in command.pipes:
                return command
        return None

    def _read_pipe(self, fd: int) -> bool:
        """Forward (or, for an orphaned pipe, discard) one read; return whether more may be readable now."""
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        owner = self._owner(fd)
        if not data:
            self.selector.unregister(fd)
            os.close(fd)
            self.orphans.discard(fd)
            if owner is not None:
                del owner.pipes[fd]
            return False
        if owner is not None:
            _emit({"ev": "out", "id": owner.command_id, "fd": owner.pipes[fd], "size": len(data)}, data)
        return True

    def _reap(self) -> None:
        """Collect every child that ended: commands' main processes and orphans (the agent is PID 1)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.childless = True
                return
            if pid == 0:
                self.childless = False
                return
            command = self._by_pid(pid)
            if command is None:
                continue  # an orphaned daemon: reaped, so its CPU time moves into the agent's cutime
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            command.code = code
            command.drain_until = time.monotonic() + DRAIN_SECONDS
            for fd in list(command.pipes):  # everything the main process wrote is in the pipes by now
                while fd in command.pipes and self._read_pipe(fd):
                    pass

    def _by_pid(self, pid: int) -> _Command | None:
        for command in self.commands.values():
            if command.pid == pid:
                return command
        return None

    def _check_exits(self) -> None:
        self._reap()
        now = time.monotonic()
        for command in list(self.commands.values()):
            if command.code is None or (command.pipes and now < command.drain_until):
                continue
            self.orphans.update(command.pipes)
            del self.commands[command.command_id]
            chain = self.chains.pop(command.command_id, None)
            if chain is not None:  # the next one starts now, or never
                if command.code == 0 and self.ending_at is None:
                    # Before the exit is reported: the write wakes the runtime, which could take this core from
                    # the agent before the spawn. The next command's output is read only later, after the exit.
                    self._advance(chain)
                else:
                    self._drop(chain)
            _emit_exit(command.command_id, command.code)

    def _kill(self, command: _Command) -> None:
        try:
            os.killpg(command.pid, signal.SIGKILL)
        except OSError:  # the group is gone already (or was never formed): kill the process itself
            with contextlib.suppress(OSError):
                os.kill(command.pid, signal.SIGKILL)


def _prefer_as_oom_victim(pid: int) -> None:
    """Raise a just-started command's ``oom_score_adj`` (raising needs no privilege; its children inherit it).

    Written after the start rather than in a ``preexec_fn``, which would make every start a fork instead of
    a vfork (about 1.3 ms more per command).
    """
    try:
        fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return  # the command has already ended
    try:
        os.write(fd, COMMAND_OOM_SCORE_ADJ)
    except OSError:
        pass
    finally:
        os.close(fd)


def harden() -> None:
    """Make the agent non-dumpable (see the module docstring); ``OSError`` when the kernel refuses."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def set_rlimits(setting: str) -> None:
    """Apply ``nproc=N,as=B`` (soft and hard) to the agent, and so to every command it starts."""
    import resource

    for item in filter(None, setting.split(",")):
        name, _, value = item.partition("=")
        limit = int(value)
        resource.setrlimit(getattr(resource, _RLIMITS[name]), (limit, limit))


def _load_machinery() -> None:
    """Import what serving requests takes (``json`` alone brings ``re`` and ``enum``, ``subprocess`` brings
    ``threading`` and ``locale``): together they were half the agent's start-up, 20–25 ms of CPU of 45."""
    global contextlib, json, selectors, signal, subprocess, time, _DEFAULT_SIGNALS
    import contextlib
    import json
    import selectors
    import signal
    import subprocess
    import time

    _DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))


def _say_ready() -> None:
    """The ready event, written without ``json`` (nothing but numbers in it)."""
    version = ".".join(str(int(part)) for part in sys.version_info[:3])
    os.write(_STDOUT, b'{"ev":"ready","pid":%d,"python":"%s"}\n' % (os.getpid(), version.encode()))


def main(argv: list[str] | None = None) -> None:
    """Harden, apply the limits of ``--rlimits``, say ready, then serve the runtime until it says exit or goes
    away.

    Ready comes before the request machinery is imported (:func:`_load_machinery`): that happens when the
    first request arrives, so a sandbox that is started and never asked anything (an idle instance, or one
    ended without a command, which the runtime ends by closing the channel) never pays for it, and the
    first command pays once. Hundreds of sandboxes starting at once on a few cores were CPU-bound on it.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        harden()
        if args[:1] == ["--rlimits"]:
            set_rlimits(args[1])
    except (OSError, ValueError, KeyError, IndexError) as exc:
        _load_machinery()
        _emit({"ev": "error", "message": f"the agent cannot protect itself or apply the limits: {exc}"})
        sys.exit(70)
    _grow_pipe(_STDOUT)
    _say_ready()
    first = os.read(_STDIN, CHUNK)  # blocks until the runtime says something (or goes away)
    if not first:
        return  # the channel closed before any request: nothing was ever started, nothing is left to end
    _load_machinery()
    if _POSIX_SPAWN:
        _close_on_exec()
    agent = Agent()
    agent.take(first)
    agent.serve(ready=False)


if __name__ == "__main__":
    main()
