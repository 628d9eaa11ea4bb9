"""Run as root, just before bubblewrap: show host directories the sandbox's user cannot reach, then drop to it.

Used by :mod:`golem_local.runtime.launch` only when a path bubblewrap must bind lies under a directory the
sandbox's unprivileged host uid cannot search (a Python under ``/root/.pyenv``, a work directory under a
``0700`` parent). Usage::

    python -I -S _stage.py UID GID N SRC1 DST1 … SRCN DSTN -- bwrap …

In a new, private mount namespace of its own (nothing leaks to the host's, and it goes away with the
sandbox) it binds each ``SRC`` on the empty ``DST`` the launcher made for it, which the sandbox's user can
reach; then it drops every group and capability by becoming ``UID``/``GID`` and executes bubblewrap, which
binds ``DST`` instead of ``SRC``. Standard library only (it is run as a file, not imported); Linux only.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def main(argv: list[str]) -> None:
    """Bind, drop, execute (see the module docstring)."""
    uid, gid, count = int(argv[0]), int(argv[1]), int(argv[2])
    pairs = argv[3 : 3 + 2 * count]
    if argv[3 + 2 * count] != "--":
        raise SystemExit("_stage.py: malformed arguments")
    command = argv[4 + 2 * count :]
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
    for source, target in zip(pairs[0::2], pairs[1::2], strict=True):
        _check(libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND | MS_REC, None), f"bind {source}")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    os.execv(command[0], command)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except OSError as exc:
        sys.stderr.write(f"golem sandbox staging failed: {exc}\n")
        raise SystemExit(125) from None
