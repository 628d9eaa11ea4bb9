"""A private docker daemon for tests: its own socket, data and state under a temporary directory, no iptables
rules and no bridge (containers get ``--network none`` or a namespace of the local VPN anyway).

:func:`private_dockerd` starts ``dockerd`` (root only), waits (bounded) for the line saying its API listens,
yields the ``DOCKER_HOST`` to use, and at the end stops it (``SIGTERM``, then ``SIGKILL`` after a bound) and
removes its directory. :func:`why_no_dockerd` says why it cannot be started here, or ``None``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT = 60.0
"""Seconds the daemon has to say that its API listens."""
STOP_TIMEOUT = 30.0
"""Seconds the daemon has to end after ``SIGTERM``."""
_READY = b"API listen on"


def why_no_dockerd() -> str | None:
    """Why a private docker daemon cannot be started here, or ``None``."""
    if os.geteuid() != 0:
        return "a private docker daemon needs root"
    for program, package in (("dockerd", "docker.io"), ("docker", "docker.io")):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install -y {package})"
    return None


@contextlib.contextmanager
def private_dockerd() -> Iterator[str]:
    """Run a docker daemon of its own for the block; yields its ``DOCKER_HOST`` (``unix:///…/docker.sock``).

    Raises ``RuntimeError`` with the daemon's last words when it does not come up within :data:`START_TIMEOUT`.
    """
    base = Path(tempfile.mkdtemp(prefix="golem-dockerd-"))  # short: the socket's path has at most 107 bytes
    socket = base / "docker.sock"
    log_path = base / "dockerd.log"
    argv = [
        "dockerd",
        "--iptables=false",
        "--bridge=none",
        "--data-root",
        str(base / "data"),
        "--exec-root",
        str(base / "exec"),
        "--pidfile",
        str(base / "dockerd.pid"),
        "-H",
        f"unix://{socket}",
    ]
    ready = threading.Event()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def drain() -> None:  # the daemon's log to a file, and the event when its API listens
        assert process.stderr is not None
        with open(log_path, "ab") as log:
            for line in process.stderr:
                log.write(line)
                log.flush()
                if _READY in line:
                    ready.set()
        ready.set()  # it ended: whoever waits looks at why

    reader = threading.Thread(target=drain, name="dockerd log", daemon=True)
    reader.start()
    try:
        if not ready.wait(START_TIMEOUT) or process.poll() is not None:
            said = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            raise RuntimeError(f"the private dockerd did not come up within {START_TIMEOUT:g} s: {said}")
        yield f"unix://{socket}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(STOP_TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


def _unmount_under(base: Path) -> None:
    """Lazily unmount whatever the daemon left mounted under ``base`` (deepest first)."""
    with open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts]
    for point in sorted((p for p in points if p.startswith(f"{base}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=STOP_TIMEOUT, check=False)
