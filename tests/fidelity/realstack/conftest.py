"""The session's real stack (see ``stack.py``): anvil, our token, a requestor and a provider yagna daemon.

It starts once per session, the first time a test asks for ``real_stack`` (about 1.5 s with the token's bytecode
cached), and is stopped at the end. It is not optional: where the chain or a daemon cannot start, the test that
asked for it fails with the reason and the log to read, since ``./scripts/test`` installs everything it needs.
``tests/fidelity/conftest.py`` imports the fixture, so that the tests of ``tests/fidelity/`` see it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fidelity.realstack.stack import Processes, RealStack, StackError, start_stack

__all__ = ["real_stack"]


@pytest.fixture(scope="session")
def real_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    """The running stack; fails (does not skip) the test with the reason when a part cannot start."""
    processes = Processes()
    started = False
    try:
        try:
            stack = start_stack(tmp_path_factory.mktemp("realstack"), processes)
        except StackError as exc:
            pytest.fail(f"the real stack could not start: {exc}", pytrace=False)
        started = True
        yield stack
    finally:
        # A daemon stuck in its start (say on the public fallback config) ignores SIGTERM for long: 1 s, then KILL.
        took = processes.stop_all() if started else processes.stop_all(grace=1.0)
        if took:
            print("\nreal stack stopped: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in took.items()))
