"""yapapi 0.13.1, unmodified, runs a service against ``golem-api node``; ``golem-api gftp server`` is its gftp.

The first test is what a yapapi user does with the local network: build an image (``golem-api image build``
into a registry of the test's own), start ``golem-api node`` on a free port, put a ``gftp`` program on
``PATH`` (a two-line script running ``golem-api gftp``), and run ``yapapi_simple_service.py`` with yapapi's own
interpreter (``.venv-yapapi``, made by ``scripts/bootstrap.sh`` when ``GOLEM_API_WITH_YAPAPI=1``). It checks what
the yapapi user sees: exit 0, no ``ERROR`` in yapapi's debug log, the files its ``download_file`` calls brought
back, and an "Accepted invoice" line for every "Agreement confirmed" line, provider by provider.

The second test runs ``yapapi_simple_service_poc.py``, a requestor shaped like yapapi's own simple-service-poc,
against the image built from that example's own Dockerfile (``examples/simple_service/image``: ``FROM
python:3.8-slim``, ``pip install numpy matplotlib``, a pid file in ``/var/run``), and checks the statistics and the
plots it downloaded.

The third test speaks the gftp JSON-RPC to ``golem-api gftp server`` directly, as yapapi's driver does (one
line out, one line back), including the calls yapapi never gets wrong but a user's own driver might.
Every process is started with a bound on each read and on its exit, and killed if a check fails.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from golem_local.config import LocalNetworkConfig, ProviderSpec
from golem_local.node import LocalNode
from golem_shared.timestamps import utc_now
from tests.processes import (
    APP_KEY,
    EXIT_BOUND,
    LINE_BOUND,
    NodeProcess,
    build_image,
    clean_env,
    client_env,
    gftp_shim,
    holding_requestor,
    kill,
    run,
    running_node,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
YAPAPI_PYTHON = ROOT / ".venv-yapapi" / "bin" / "python"
PROGRAM = Path(__file__).resolve().parent / "yapapi_simple_service.py"
POC_PROGRAM = Path(__file__).resolve().parent / "yapapi_simple_service_poc.py"
IMAGE_CONTEXT = Path(__file__).resolve().parent / "yapapi_image"
IMAGE_TAG = "golem-api/yapapi-simple-service:1.0"
POC_CONTEXT = ROOT / "examples" / "simple_service" / "image"
POC_TAG = "golem-api/simple-service-poc:1.0"
INSTANCES = 2
ROUNDS = 3
RUN_BOUND = 50.0  # seconds the whole yapapi program may take

needs_yapapi = pytest.mark.skipif(
    not YAPAPI_PYTHON.exists(),
    reason=f"yapapi's own environment is missing ({YAPAPI_PYTHON}); "
    "run `GOLEM_API_WITH_YAPAPI=1 scripts/bootstrap.sh` (scripts/test does) to create it",
)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeProcess]:
    registry = tmp_path / "registry"
    await build_image(registry, IMAGE_CONTEXT, IMAGE_TAG)
    await build_image(registry, POC_CONTEXT, POC_TAG)
    async with running_node(registry) as running:
        yield running


async def run_yapapi(tmp_path: Path, url: str, program: Path, *args: str, bound: float, **env: str) -> tuple[str, str]:
    """Run ``program`` with yapapi's interpreter against the node at ``url``, a ``gftp`` on its ``PATH`` and ``env``
    added; it must exit 0 within ``bound`` seconds: ``(its stdout, yapapi's log)``."""
    log_file = tmp_path / "yapapi.log"
    env_vars = client_env(url, gftp_shim(tmp_path / "bin").parent, **env)
    done = await run(
        str(YAPAPI_PYTHON), str(program), *args, "--log-file", str(log_file), bound=bound, cwd=tmp_path, env=env_vars
    )
    assert done.returncode == 0, f"yapapi exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout, log_file.read_text()


async def run_service_program(
    tmp_path: Path, url: str, program: Path, tag: str, *, instances: int, rounds: int, timeout: int, bound: float
) -> tuple[Path, str, str]:
    """:func:`run_yapapi` for a service program (``yapapi_simple_service*.py``): ``instances`` of the image ``tag``,
    ``rounds`` each, downloads into ``tmp_path/downloads``: ``(that folder, its stdout, yapapi's log)``."""
    output = tmp_path / "downloads"
    output.mkdir()
    out, log = await run_yapapi(
        tmp_path,
        url,
        program,
        *("--image-tag", tag, "--num-instances", str(instances), "--rounds", str(rounds)),
        *("--output-dir", str(output), "--timeout", str(timeout)),
        bound=bound,
    )
    return output, out, log


def assert_no_errors(log: str) -> None:
    errors = [line for line in log.splitlines() if re.search(r"\bERROR\b", line)]
    assert errors == [], "yapapi logged errors:\n" + "\n".join(errors)


def provider_names(pattern: str, log: str) -> Counter[str]:
    return Counter(re.findall(pattern, log))


def paid_agreements(log: str) -> Counter[str]:
    """The providers that confirmed agreements in yapapi's ``log``, each as often as it did; each was paid."""
    confirmed = provider_names(r"Agreement confirmed by provider '([^']+)'", log)
    assert provider_names(r"Accepted invoice from '([^']+)'", log) == confirmed
    return confirmed


@needs_yapapi
@pytest.mark.timeout(900)
async def test_yapapi_runs_the_simple_service_against_the_local_node_and_pays_every_agreement(
    tmp_path: Path, node: NodeProcess
) -> None:
    output, out, log = await run_service_program(
        tmp_path, node.url, PROGRAM, IMAGE_TAG, instances=INSTANCES, rounds=ROUNDS, timeout=30, bound=RUN_BOUND
    )

    assert out.splitlines()[-3:] == ["all instances ran; stopping the cluster", "all instances stopped", "done"]
    assert_no_errors(log)
    assert "gftp version: 0.17.6 (golem-api)" in log  # yapapi found our gftp on PATH and closes URLs it no longer needs

    for index in range(1, INSTANCES + 1):
        name = f"simple-service-{index}"
        running = ["started", f"hello {name}", *(f"observation {n}" for n in range(1, ROUNDS + 1))]
        assert (output / f"{name}.log").read_text().splitlines() == running  # downloaded in the run loop
        assert (output / f"{name}.final.log").read_text().splitlines() == [*running, "stopped"]  # in shutdown
        stats = [json.loads(line.split(": ", 1)[1]) for line in out.splitlines() if line.startswith(f"{name} on ")]
        assert stats == [{"observations": n} for n in range(1, ROUNDS + 1)]

    assert sum(paid_agreements(log).values()) == INSTANCES

    rest = await node.stop_cleanly()
    assert rest.splitlines()[-1] == "Stopped."


@needs_yapapi
@pytest.mark.timeout(900)
async def test_yapapi_runs_the_simple_service_poc_with_the_image_of_its_own_dockerfile(
    tmp_path: Path, node: NodeProcess
) -> None:
    output, out, log = await run_service_program(
        tmp_path, node.url, POC_PROGRAM, POC_TAG, instances=INSTANCES, rounds=2, timeout=40, bound=120
    )

    lines = out.splitlines()
    steps = ["all instances ran; stopping the cluster", "all instances stopped", "done"]
    assert [line for line in lines if line in steps] == steps
    assert lines[-1] == "done"
    assert_no_errors(log)
    for index in range(1, INSTANCES + 1):
        name = f"simple-service-{index}"
        started = [line for line in out.splitlines() if line.startswith(f"{name}: simulation ")]
        assert len(started) == 2, out
        assert '"running"' in started[0], "ctl --start wrote its pid file in /var/run and started the simulation"
        assert '"stopped"' in started[1], "ctl --stop found the pid file again"
        stats = [json.loads(line.split(": ", 1)[1]) for line in out.splitlines() if line.startswith(f"{name} stats: ")]
        assert len(stats) == 2
        assert all({"min", "max", "median", "mean", "size"} <= set(report) for report in stats)
        for number in (1, 2):
            plot = output / f"{name}-{number}.png"
            assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{plot} is not the PNG matplotlib drew"
    assert sum(paid_agreements(log).values()) == INSTANCES
    await node.stop_cleanly()


class GftpProcess:
    """``golem-api gftp server`` driven line by line, as yapapi's driver does."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.next_id = 0

    @classmethod
    async def start(cls, env: Mapping[str, str]) -> GftpProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "golem_api",
            "gftp",
            "server",
            env=dict(env),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def send_line(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()
        raw = await asyncio.wait_for(self.process.stdout.readline(), LINE_BOUND)
        assert raw, "gftp server ended without answering"
        answer: dict[str, Any] = json.loads(raw)
        return answer

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        answer = await self.send_line(
            json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": self.next_id})
        )
        assert answer["jsonrpc"] == "2.0"
        assert answer["id"] == self.next_id
        return answer


async def test_gftp_server_answers_the_json_rpc_calls_yapapi_makes_and_names_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_text("to the providers\n")
    async with LocalNode(LocalNetworkConfig.with_providers(1)) as local:
        gftp = await GftpProcess.start(clean_env(YAGNA_APPKEY=local.app_key, YAGNA_API_URL=local.url))
        try:
            assert (await gftp.call("version"))["result"] == "0.17.6 (golem-api)"

            published = (await gftp.call("publish", files=[str(tmp_path / "input.txt")]))["result"]
            assert len(published) == 1
            assert published[0]["file"] == str(tmp_path / "input.txt")
            assert re.fullmatch(rf"gftp://{local.requestor_id}/[0-9a-f]+", published[0]["url"])

            received = (await gftp.call("receive", output_file=str(tmp_path / "output.txt")))["result"]
            assert received["file"] == str(tmp_path / "output.txt")
            assert received["url"].startswith(f"gftp://{local.requestor_id}/")
            assert received["url"] != published[0]["url"]
            assert (tmp_path / "output.txt").exists()  # created at once, filled as the provider uploads

            closed = await gftp.call("close", urls=[published[0]["url"], "gftp://0xabc/unknown"])
            assert closed["result"] == ["ok", "error"]

            missing = await gftp.call("publish", files=[str(tmp_path / "nosuch.txt")])
            assert missing["error"]["code"] == -32000
            assert "nosuch.txt" in missing["error"]["message"]
            bad_params = await gftp.call("receive", output=str(tmp_path / "x"))
            assert bad_params["error"]["code"] == -32602
            assert "output_file" in bad_params["error"]["message"]
            unknown = await gftp.call("upload", file="a", url="gftp://0xabc/1")
            assert unknown["error"]["code"] == -32601
            assert "upload" in unknown["error"]["message"]
            not_json = await gftp.send_line("{not json")
            assert not_json["id"] is None
            assert not_json["error"]["code"] == -32700

            assert (await gftp.call("shutdown"))["result"] == "ok"
            assert await asyncio.wait_for(gftp.process.wait(), EXIT_BOUND) == 0
        finally:
            await kill(gftp.process)


async def test_gftp_server_binds_and_unbinds_its_urls_on_the_real_daemon(tmp_path: Path, yagna_daemon: Any) -> None:
    (tmp_path / "input.txt").write_text("to the providers\n")
    env = clean_env(YAGNA_APPKEY=yagna_daemon.app_key, YAGNA_API_URL=yagna_daemon.url, RUST_LOG="debug")
    gftp = await GftpProcess.start(env)
    try:
        published = (await gftp.call("publish", files=[str(tmp_path / "input.txt")]))["result"]
        assert re.fullmatch(rf"gftp://{yagna_daemon.identity}/[0-9a-f]+", published[0]["url"])
        received = (await gftp.call("receive", output_file=str(tmp_path / "output.txt")))["result"]
        assert received["url"].startswith(f"gftp://{yagna_daemon.identity}/")
        closed = await gftp.call("close", urls=[published[0]["url"], received["url"]])
        assert closed["result"] == ["ok", "ok"]
        assert (await gftp.call("shutdown"))["result"] == "ok"
        assert await asyncio.wait_for(gftp.process.wait(), EXIT_BOUND) == 0
        assert gftp.process.stderr is not None
        log = (await asyncio.wait_for(gftp.process.stderr.read(), EXIT_BOUND)).decode()
        assert "receiving gftp://" in log  # the debug log is on (RUST_LOG=debug, as yapapi's DEBUG_GFTP sets)
        assert "failed" not in log  # every binding and unbinding succeeded
    finally:
        await kill(gftp.process)


ACCEPT_TIMEOUT = 2  # seconds the only provider gives a requestor to accept a debit note


@needs_yapapi
async def test_yapapi_gets_the_provider_of_a_killed_requestor_within_seconds(tmp_path: Path) -> None:
    """A golem-api requestor process holding the only provider is SIGKILLed; yapapi's service example, started
    right after, gets an agreement with that provider within seconds (the provider ends the old agreement when
    its debit notes go unaccepted for ``ACCEPT_TIMEOUT`` s). yapapi's Task API hello example would need a
    task image and gftp uploads of its own; its service example is what this suite already runs."""
    registry = tmp_path / "registry"
    await build_image(registry, IMAGE_CONTEXT, IMAGE_TAG)
    solo = ProviderSpec(name="solo", debit_note_interval_sec=1, debit_note_accept_timeout_sec=ACCEPT_TIMEOUT)
    async with LocalNode(LocalNetworkConfig(providers=[solo], image_registry=registry), app_key=APP_KEY) as local:
        (provider,) = local.providers
        async with holding_requestor(APP_KEY, local.url, bound=LINE_BOUND * 2, env=clean_env()) as held:
            pass  # SIGKILLed on leaving
        killed_at = asyncio.get_running_loop().time()
        since = utc_now()

        async def next_approval() -> float:
            after = since
            while True:
                for event in await local.market.agreement_events(
                    provider.node_id, after=after, timeout=RUN_BOUND, max_events=10
                ):
                    after = event.event_date
                    if event.event_type == "AgreementApprovedEvent" and event.agreement_id != held:
                        return asyncio.get_running_loop().time() - killed_at

        approved = asyncio.ensure_future(asyncio.wait_for(next_approval(), RUN_BOUND))
        _output, out, log = await run_service_program(
            tmp_path, local.url, PROGRAM, IMAGE_TAG, instances=1, rounds=1, timeout=30, bound=RUN_BOUND
        )
        waited = await approved

    print(f"\nyapapi got the provider {waited:.2f} s after the requestor holding it was killed")
    assert out.splitlines()[-1] == "done"
    assert waited < ACCEPT_TIMEOUT + 8
    assert paid_agreements(log) == {"solo": 1}
