"""The VPN examples as a user runs them (slow: real processes, images and sandboxes; needs root for the VPN).

``examples/http_proxy/http_proxy.py`` serves a page from two instances behind ``HttpProxy`` and sends four
requests itself: the answers alternate between the two providers. ``examples/webapp/webapp.py`` posts two
messages through the front end, which stores them in the db instance over the VPN, and lists them. Each runs
as a subprocess with a registry of its own (its image is built anew), bounded in time.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from golem_local.net import netns
from tests.processes import ROOT, example_env, run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(netns.unavailable_reason() is not None, reason=str(netns.unavailable_reason())),
]

RUN_BOUND = 90.0


async def run_example(tmp_path: Path, script: str, *args: str) -> list[str]:
    env = example_env(tmp_path / "golem-api-home")
    done = await run(sys.executable, str(ROOT / "examples" / script), *args, bound=RUN_BOUND, cwd=tmp_path, env=env)
    assert done.returncode == 0, f"{script} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout.splitlines()


async def test_the_http_proxy_example_spreads_requests_over_its_instances(tmp_path: Path) -> None:
    lines = await run_example(
        tmp_path, "http_proxy/http_proxy.py", "--port", "0", "--requests", "4", "--running-time", "0"
    )
    answers = [line for line in lines if line.startswith("request ")]
    assert len(answers) == 4
    where = [re.fullmatch(r"request \d: 200 \.\.\. running on (\S+) at (192\.168\.0\.\d+)", line) for line in answers]
    assert all(where), answers
    places = [match.groups() for match in where if match]
    assert places[0] != places[1]  # two instances, on two providers, at two addresses
    assert places[:2] == places[2:]  # round-robin
    assert re.fullmatch(r"Local HTTP server listening on http://127\.0\.0\.1:\d+", lines[1])
    assert lines[-2:] == ["HTTP server stopped", "done"]


async def test_the_webapp_example_front_end_uses_its_db_over_the_vpn(tmp_path: Path) -> None:
    lines = await run_example(
        tmp_path, "webapp/webapp.py", "--port", "0", "--running-time", "0", "--messages", "hello", "über VPN"
    )
    assert re.fullmatch(r"DbService-1 on \S+ at 192\.168\.0\.2", lines[0])
    assert re.fullmatch(r"FrontEnd-1 on \S+ at 192\.168\.0\.3", lines[1])
    assert lines[3:] == [
        "posted 'hello': 201",
        "posted 'über VPN': 201",
        "front end golem-vm, db at http://192.168.0.2:4001/messages: 2 message(s)",
        "- hello",
        "- über VPN",
        "done",
    ]
