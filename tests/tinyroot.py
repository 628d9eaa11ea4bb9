"""A tiny but real root file system, made in milliseconds from this machine's own programs, for tests that need a
GVMI without building one from Debian's archive: ``sh`` (dash), a few coreutils, the shared libraries they load
(found with ``ldd``, copied to the same paths), ``/etc/passwd`` with ``root`` and ``www-data``. No Python: the
sandbox's agent must run on the host's interpreter. No ``/var``, ``/run``, ``/tmp``: the sandbox must add them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

PROGRAMS = ("sh", "cat", "ls", "id", "mkdir", "rm", "touch", "stat", "chown", "sleep", "head", "env", "mount")
_LDD = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def _copy(source: str, tree: Path) -> None:
    target = tree / source.lstrip("/")
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(source), target)


def make_tiny_root(tree: Path, extra: tuple[str, ...] = ()) -> Path:
    """Fill the new directory ``tree`` (see the module docstring), with the programs ``extra`` too, and return it."""
    tree.mkdir(parents=True)
    for name in (*PROGRAMS, *extra):
        program = shutil.which(name, path="/usr/bin:/bin")
        assert program is not None, f"{name} is not installed on this machine"
        target = tree / "bin" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(program), target)
        listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=False).stdout
        for library in _LDD.findall(listed):
            _copy(library, tree)
    etc = tree / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nwww-data:x:33:\n")
    (etc / "motd").write_text("tiny root\n")
    (tree / "golem" / "app").mkdir(parents=True)
    (tree / "golem" / "app" / "hello.txt").write_text("hello from the image\n")
    return tree
