"""A node's work directory outlives a SIGKILL; the next node to start removes it, and nothing else.

Real processes hold the lock of their work directory (as a running node does) and one of them is SIGKILLed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from golem_local.node import LOCK_FILE, WORK_DIR_PREFIX, remove_stale_work_dirs

_HOLDER = """
import sys, tempfile
from pathlib import Path
from golem_local.node import WORK_DIR_PREFIX, _lock_work_dir
work_dir = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX, dir=sys.argv[1]))
(work_dir / "activity").mkdir()
fd = _lock_work_dir(work_dir)
print(work_dir, flush=True)
sys.stdin.read()  # holds the lock until its stdin closes, or until it is killed
"""


def _holder(parent: Path) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(parent)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


@pytest.mark.slow  # over a second of real processes and waits (the quick run keeps its minute)
def test_only_the_work_dirs_of_dead_nodes_are_removed(tmp_path: Path) -> None:
    dead, dead_dir = _holder(tmp_path)
    alive, alive_dir = _holder(tmp_path)
    unlocked = tmp_path / f"{WORK_DIR_PREFIX}older-version"
    unlocked.mkdir()
    try:
        dead.kill()  # SIGKILL: no clean-up of its own
        dead.wait(timeout=10)
        assert (dead_dir / LOCK_FILE).read_text().strip() == str(dead.pid)
        assert remove_stale_work_dirs(tmp_path) == [dead_dir]
        assert not dead_dir.exists()
        assert alive_dir.exists(), "a live node's directory is left alone"
        assert unlocked.exists(), "a directory without a lock file is not ours to judge"
    finally:
        alive.kill()
        alive.wait(timeout=10)
        for process in (dead, alive):
            if process.stdin is not None:
                process.stdin.close()
            if process.stdout is not None:
                process.stdout.close()
    assert remove_stale_work_dirs(tmp_path) == [alive_dir]
