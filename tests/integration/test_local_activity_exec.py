"""ExeScript on the local node's exe-unit, over real HTTP: exec, results (poll and SSE), state, sandbox faults."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from golem_api.errors import SandboxUnavailableError
from golem_local.config import LocalNetworkConfig
from golem_local.node import LocalNode
from golem_local.runtime.image import Image
from golem_local.runtime.vm import VmRuntime
from golem_shared.timestamps import parse_timestamp
from tests.integration.agreements import ACTIVITY, call, new_activity

pytestmark = pytest.mark.integration

NETWORK = LocalNetworkConfig.with_providers(2, debit_note_interval_sec=3600, env={"PROVIDER_TAG": "local"})
DEPLOY_START: list[dict[str, Any]] = [{"deploy": {}}, {"start": {}}]


def run(script: str, **capture: Any) -> dict[str, Any]:
    """A ``run`` of ``/bin/sh -c script`` with the given capture (``stdout=…``, ``stderr=…``)."""
    body: dict[str, Any] = {"entry_point": "/bin/sh", "args": ["-c", script]}
    if capture:
        body["capture"] = capture
    return {"run": body}


AT_END: dict[str, Any] = {"atEnd": {}}
STREAM: dict[str, Any] = {"stream": {}}


@pytest.fixture
async def local_node() -> AsyncIterator[LocalNode]:
    """Overrides the conftest's node: two providers that bill hourly (no debit notes during a test)."""
    async with LocalNode(NETWORK) as node:
        yield node


class Exe:
    """One activity of the node, driven over HTTP."""

    def __init__(self, http: aiohttp.ClientSession, activity_id: str) -> None:
        self.http = http
        self.activity_id = activity_id
        self.path = f"{ACTIVITY}/activity/{activity_id}"

    async def exec(self, commands: list[dict[str, Any]]) -> str:
        status, batch_id = await call(self.http, "POST", f"{self.path}/exec", {"text": json.dumps(commands)})
        assert status == 200, batch_id
        assert isinstance(batch_id, str)
        return batch_id

    async def results(self, batch_id: str, **params: Any) -> tuple[int, Any]:
        return await call(self.http, "GET", f"{self.path}/exec/{batch_id}", **params)

    async def finished(self, batch_id: str, count: int) -> list[dict[str, Any]]:
        """The results once command ``count - 1`` has finished (long-poll, 20 s at most)."""
        status, results = await self.results(batch_id, commandIndex=count - 1, timeout=20)
        assert status == 200, results
        return list(results)

    async def state(self) -> dict[str, Any]:
        status, state = await call(self.http, "GET", f"{self.path}/state")
        assert status == 200
        return dict(state)


@pytest.fixture
async def exe(local_node: LocalNode, http: aiohttp.ClientSession) -> Exe:
    return Exe(http, await new_activity(http, local_node))


async def read_sse(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any], int]]:
    """(event name, data, id) of each frame of a raw server-sent event stream; comments are skipped."""
    buffer = b""
    async for piece in response.content.iter_any():
        buffer += piece
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in frame.decode().split("\n") if not line.startswith(":"))
            if fields:
                yield fields["event"], json.loads(fields["data"]), int(fields["id"])


async def test_deploy_start_run_capture_at_end_and_in_stream(exe: Exe) -> None:
    assert (await exe.state())["state"] == ["Initialized", None]
    script = "printf 'hello world'; printf 'oops' >&2; printf '%s' 0123456789 > /golem/work/digits"
    batch = await exe.exec(
        [
            *DEPLOY_START,
            run(script, stdout=AT_END, stderr=STREAM),
            run("cat /golem/work/digits", stdout={"atEnd": {"head": 3}}),
            run("cat /golem/work/digits", stdout={"atEnd": {"tail": 3}}, stderr=AT_END),
            run("cat /golem/work/digits", stdout={"atEnd": {"headTail": 5}}),
            run("cat /golem/work/digits", stdout={"stream": {"limit": 4, "format": "bin"}}),
            run("echo discarded"),
            {
                "run": {
                    "entry_point": "/bin/sh",
                    "args": ["-c", 'printf "$PROVIDER_TAG $MINE"'],
                    "env": {"MINE": "x"},
                    "capture": {"stdout": AT_END},
                }
            },
        ]
    )
    results = await exe.finished(batch, 9)

    assert [r["index"] for r in results] == list(range(9))
    assert all(r["result"] == "Ok" and r["message"] is None for r in results)
    assert [r["isBatchFinished"] for r in results] == [False] * 8 + [True]
    for result in results:
        parse_timestamp(result["eventDate"])
        assert set(result) == {"index", "eventDate", "result", "stdout", "stderr", "message", "isBatchFinished"}
    assert (results[2]["stdout"], results[2]["stderr"]) == ("hello world", "oops")
    assert results[3]["stdout"] == "012"
    assert (results[4]["stdout"], results[4]["stderr"]) == ("789", None)  # empty output is null
    assert results[5]["stdout"] == "01289"  # three of the head, two of the tail
    assert results[6]["stdout"] == list(b"0123")
    assert (results[7]["stdout"], results[7]["stderr"]) == (None, None)
    assert results[8]["stdout"] == "local x"  # the provider's env, then the command's
    assert (await exe.state())["state"] == ["Ready", None]


async def test_long_poll_waits_for_a_command_and_408_when_it_does_not_finish(
    exe: Exe, http: aiohttp.ClientSession
) -> None:
    batch = await exe.exec([*DEPLOY_START, run("sleep 30")])
    status, first = await exe.results(batch, commandIndex=1, timeout=20)
    assert status == 200
    assert [r["index"] for r in first] == [0, 1]

    status, body = await exe.results(batch, commandIndex=2, timeout=0.2)
    assert status == 408
    assert "command 2" in body["message"]
    assert (await exe.results(batch, commandIndex=2))[0] == 408  # no timeout: at once
    assert await exe.results(batch, timeout=0.2) == (200, first)  # without commandIndex: what there is
    assert await exe.results(batch) == (200, first)

    assert await exe.state() == {"state": ["Ready", "Ready"]}
    status, running = await call(http, "GET", f"{exe.path}/command")
    assert status == 200
    assert running == [{"command": "Run", "params": ["/bin/sh", "-c", "sleep 30"], "batchId": batch}]

    assert (await call(http, "DELETE", exe.path))[0] == 200
    results = await exe.finished(batch, 3)
    assert results[2]["result"] == "Error"
    assert results[2]["isBatchFinished"] is True
    assert "destroyed by the requestor" in results[2]["message"]
    state = await exe.state()
    assert state["state"] == ["Terminated", None]
    assert (await call(http, "GET", f"{exe.path}/command"))[0] == 404
    status, body = await call(http, "POST", f"{exe.path}/exec", {"text": json.dumps(DEPLOY_START)})
    assert status == 410
    assert "Terminated" in body["message"]

    assert (await exe.results(batch, commandIndex=7, timeout=1))[0] == 400
    assert (await exe.results(batch, timeout="soon"))[0] == 400
    assert (await exe.results("no-such-batch"))[0] == 404


async def test_event_stream_is_live_and_replays_for_late_readers(exe: Exe, http: aiohttp.ClientSession) -> None:
    ticker = "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done; echo done >&2"
    batch = await exe.exec([*DEPLOY_START, run(ticker, stdout=STREAM, stderr=STREAM)])
    url = f"{exe.path}/exec/{batch}"
    frames: list[tuple[str, dict[str, Any], int]] = []
    running_at_first_line = None
    async with http.get(url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for frame in read_sse(response):
            frames.append(frame)
            if "stdout" in frame[1]["kind"] and running_at_first_line is None:
                # the first line is here while the command still runs: events are sent as they happen
                running_at_first_line = await call(http, "GET", f"{exe.path}/command")
    assert running_at_first_line is not None
    assert running_at_first_line[0] == 200
    assert running_at_first_line[1][0]["command"] == "Run"

    assert [event for event, _, _ in frames] == ["runtime"] * len(frames)
    assert [n for _, _, n in frames] == list(range(len(frames)))
    kinds = [(data["index"], next(iter(data["kind"]))) for _, data, _ in frames]
    assert kinds[:4] == [(0, "started"), (0, "finished"), (1, "started"), (1, "finished")]
    assert kinds[4] == (2, "started")
    assert kinds[-1] == (2, "finished")
    outputs = [data["kind"] for _, data, _ in frames[5:-1]]
    assert "".join(k.get("stdout", "") for k in outputs) == "".join(f"line {i}\n" for i in range(1, 6))
    assert "".join(k.get("stderr", "") for k in outputs) == "done\n"
    first = frames[4][1]
    assert first["batch_id"] == batch
    assert first["kind"]["started"]["command"] == run(ticker, stdout=STREAM, stderr=STREAM)
    assert frames[-1][1]["kind"] == {"finished": {"return_code": 0, "message": None}}

    async with http.get(url, headers={"Accept": "text/event-stream"}) as response:
        late = [frame async for frame in read_sse(response)]
    assert [data for _, data, _ in late] == [data for _, data, _ in frames]


async def test_a_silent_event_stream_sends_ping_comments_until_the_batch_ends(tmp_path: Path) -> None:
    """While a command says nothing, the stream keeps the connection alive with ``:ping`` comments."""
    network = LocalNetworkConfig.with_providers(1, debit_note_interval_sec=3600, sse_ping_interval=0.1)
    async with (
        LocalNode(network) as node,
        aiohttp.ClientSession(base_url=node.url, headers={"Authorization": f"Bearer {node.app_key}"}) as session,
    ):
        exe = Exe(session, await new_activity(session, node))
        # the command ends when the test has seen two pings: it waits for a file the test writes then
        batch = await exe.exec([*DEPLOY_START, run("while [ ! -f /golem/in/go ]; do sleep 0.05; done")])
        await exe.finished(batch, 2)  # deployed and started: the run is next
        volume = node.activities.get(exe.activity_id).runtime.container_path("/golem/in/go")
        received = b""
        async with session.get(f"{exe.path}/exec/{batch}", headers={"Accept": "text/event-stream"}) as response:
            async for piece in response.content.iter_any():
                received += piece
                if received.count(b":ping\n\n") == 2:
                    volume.write_text("go")
        frames = [frame for frame in received.split(b"\n\n") if frame]
        pings = [i for i, frame in enumerate(frames) if frame == b":ping"]
        assert len(pings) >= 2
        last = json.loads(frames[-1].decode().split("data: ", 1)[1].split("\n", 1)[0])
        assert last["kind"] == {"finished": {"return_code": 0, "message": None}}
        assert pings[-1] < len(frames) - 1, "the stream ends with the batch's last finished event"


async def test_a_command_in_the_wrong_state_fails_and_stops_the_batch(exe: Exe) -> None:
    batch = await exe.exec([run("echo never"), *DEPLOY_START])
    results = await exe.finished(batch, 1)
    assert len(results) == 1
    assert results[0]["result"] == "Error"
    assert results[0]["isBatchFinished"] is True
    assert results[0]["message"] == "the activity is Initialized; send deploy and start before run"
    assert (await exe.state())["state"] == ["Initialized", None]

    batch = await exe.exec([{"deploy": {}}, {"deploy": {}}])
    results = await exe.finished(batch, 2)
    assert [r["result"] for r in results] == ["Ok", "Error"]
    assert results[1]["message"] == "the activity is Deployed; deploy runs once, on an Initialized activity"
    batch = await exe.exec([{"transfer": {"from": "container:/golem/in/a", "to": "container:/golem/in/b"}}])
    assert (await exe.finished(batch, 1))[0]["message"] == "the activity is Deployed; send start before transfer"


async def test_a_failing_run_stops_the_batch_with_its_exit_code(exe: Exe) -> None:
    batch = await exe.exec(
        [*DEPLOY_START, run("echo partial; echo broken >&2; exit 3", stdout=AT_END, stderr=AT_END), run("echo no")]
    )
    results = await exe.finished(batch, 4)  # the batch ends at index 2: waiting for index 3 returns then
    assert len(results) == 3
    failed = results[2]
    assert failed["result"] == "Error"
    assert failed["isBatchFinished"] is True
    assert failed["message"] == "ExeScript command exited with code 3"
    assert (failed["stdout"], failed["stderr"]) == ("partial\n", "broken\n")

    batch = await exe.exec([run("exec /no/such/program")])
    assert (await exe.finished(batch, 1))[0]["message"] == "ExeScript command exited with code 127"
    batch = await exe.exec([{"run": {"entry_point": "/no/such/program"}}])
    result = (await exe.finished(batch, 1))[0]
    assert result["result"] == "Error"
    assert result["message"].startswith("run failed: ")
    assert (await exe.state())["state"] == ["Ready", None]  # a failed command leaves the activity usable


async def test_malformed_scripts_are_refused_with_400_naming_the_command(exe: Exe, http: aiohttp.ClientSession) -> None:
    cases = [
        ({"text": "[{"}, "not valid JSON"),
        ({"text": json.dumps([{"deploy": {}}, {"launch": {}}])}, "command #1: unknown command 'launch'"),
        ({"text": json.dumps([{"run": {"args": []}}])}, "command #0: run: 'entry_point' must be a non-empty string"),
        ({"text": json.dumps([run("x", stdout={"atEnd": {"format": "hex"}})])}, "format must be 'str' or 'bin'"),
        ({"script": "[]"}, '{"text"'),
    ]
    for body, expected in cases:
        status, answer = await call(http, "POST", f"{exe.path}/exec", body)
        assert status == 400, body
        assert expected in answer["message"], answer
    assert (await call(http, "POST", f"{ACTIVITY}/activity/nope/exec", {"text": "[]"}))[0] == 404


async def test_terminate_and_sign(exe: Exe, http: aiohttp.ClientSession) -> None:
    batch = await exe.exec([*DEPLOY_START, {"sign": {}}])
    results = await exe.finished(batch, 3)
    assert results[2]["result"] == "Error"
    assert "sign is not supported" in results[2]["message"]

    batch = await exe.exec([{"terminate": {}}, run("echo late")])
    results = await exe.finished(batch, 2)
    assert [r["result"] for r in results] == ["Ok", "Error"]
    assert results[1]["message"] == "the activity is Terminated; it runs no more commands: create a new activity"
    state = await exe.state()
    assert state["state"] == ["Terminated", None]
    assert state["reason"] == "terminated by the ExeScript terminate command"
    assert (await call(http, "POST", f"{exe.path}/exec", {"text": json.dumps([{"deploy": {}}])}))[0] == 410
    assert (await call(http, "DELETE", exe.path))[0] == 200


async def test_a_sandbox_killed_from_outside_makes_the_activity_unresponsive(
    local_node: LocalNode, exe: Exe, http: aiohttp.ClientSession
) -> None:
    batch = await exe.exec([*DEPLOY_START, run("sleep 30")])
    await exe.finished(batch, 2)
    runtime = local_node.activities.get(exe.activity_id).runtime
    assert isinstance(runtime, VmRuntime)
    assert runtime.sandbox_pid is not None
    status, notes_before = await call(http, "GET", "/payment-api/v1/debitNotes")
    assert status == 200

    os.kill(runtime.sandbox_pid, signal.SIGKILL)
    results = await exe.finished(batch, 3)
    assert results[2]["result"] == "Error"
    assert "runtime ended by itself" in results[2]["message"]

    state = await exe.state()
    assert state["state"] == ["Unresponsive", None]
    assert state["errorMessage"]
    status, notes = await call(http, "GET", "/payment-api/v1/debitNotes")
    assert len(notes) == len(notes_before) + 1  # metering stopped with a last debit note
    status, body = await call(http, "POST", f"{exe.path}/exec", {"text": json.dumps([run("true")])})
    assert status == 410
    assert "Unresponsive" in body["message"]
    assert (await call(http, "DELETE", exe.path))[0] == 200
    assert (await exe.state())["state"] == ["Terminated", None]
    assert len((await call(http, "GET", "/payment-api/v1/debitNotes"))[1]) == len(notes)  # no second last note


async def test_an_unknown_image_fails_deploy_naming_the_hash(
    local_node: LocalNode, http: aiohttp.ClientSession
) -> None:
    digest = "ab" * 28
    package = {"golem.srv.comp.task_package": f"hash:sha3:{digest}:http://registry.example/image.gvmi"}
    exe = Exe(http, await new_activity(http, local_node, extra_properties=package))
    results = await exe.finished(await exe.exec(DEPLOY_START), 2)
    assert len(results) == 1
    assert results[0]["result"] == "Error"
    assert digest in results[0]["message"]
    assert "LocalNetworkConfig(images=" in results[0]["message"]


async def test_a_known_image_shows_its_files_and_environment(tmp_path: Path) -> None:
    root = tmp_path / "image"
    (root / "golem" / "app").mkdir(parents=True)
    (root / "golem" / "app" / "hello.txt").write_text("from the image")
    digest = "cd" * 28
    image = Image(root=root, env={"IMAGE_VAR": "set"}, volumes=("/golem/work",))
    config = LocalNetworkConfig.with_providers(1, images={digest.upper(): image})
    package = {"golem.srv.comp.task_package": f"hash:sha3:{digest}:http://registry.example/image.gvmi"}
    async with LocalNode(config) as node:
        headers = {"Authorization": f"Bearer {node.app_key}"}
        async with aiohttp.ClientSession(base_url=node.url, headers=headers) as http:
            exe = Exe(http, await new_activity(http, node, extra_properties=package))
            script = 'cat /golem/app/hello.txt; printf " $IMAGE_VAR"'
            results = await exe.finished(await exe.exec([*DEPLOY_START, run(script, stdout=AT_END)]), 3)
    assert results[2]["stdout"] == "from the image set"


async def test_offers_carry_the_runtime_and_usage_counts_cpu(
    local_node: LocalNode, exe: Exe, http: aiohttp.ClientSession
) -> None:
    properties = local_node.providers[0].offer_properties(0)
    assert properties["golem.runtime.name"] == "vm"
    assert properties["golem.srv.comp.vm.package_format"] == "gvmkit-squash"
    burn = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"
    results = await exe.finished(await exe.exec([*DEPLOY_START, run(burn)]), 3)
    assert results[2]["result"] == "Ok"
    runtime = local_node.activities.get(exe.activity_id).runtime
    assert isinstance(runtime, VmRuntime)
    measured = await runtime.refresh_cpu_seconds()
    status, usage = await call(http, "GET", f"{exe.path}/usage")
    assert status == 200
    _duration, cpu = usage["currentUsage"]
    assert 0 < measured <= cpu <= runtime.cpu_seconds()  # the runtime's figure, which never goes down


async def test_node_start_reports_a_missing_bubblewrap() -> None:
    node = LocalNode(LocalNetworkConfig(bwrap="/nonexistent/bwrap"))
    with pytest.raises(SandboxUnavailableError, match="bubblewrap") as failure:
        await node.start()
    assert "install" in str(failure.value)
    assert not node.running
    assert node.work_dir is None
    await node.aclose()


async def test_batches_of_one_activity_run_one_after_another(exe: Exe) -> None:
    first = await exe.exec([*DEPLOY_START, run("sleep 0.3; echo first >> /golem/work/log")])
    second = await exe.exec([run("echo second >> /golem/work/log; cat /golem/work/log", stdout=AT_END)])
    results = await exe.finished(second, 1)
    assert results[0]["stdout"] == "first\nsecond\n"
    assert len(await exe.finished(first, 3)) == 3
    assert (await exe.state())["state"] == ["Ready", None]


async def test_runs_in_a_row_keep_their_events_in_order_and_a_failure_stops_the_rest(
    exe: Exe, http: aiohttp.ClientSession
) -> None:
    """Runs in a row go to the sandbox as one chain (golem_local.pipeline): each starts the moment the one before it
    ended well, and still every command's events come between its own started and finished, output whole."""
    big = 2_500_000  # three pieces of the agent's output: the later ones come while the chain has moved on
    batch = await exe.exec(
        [
            *DEPLOY_START,
            run("echo a; echo 1 >> /golem/work/log", stdout=STREAM),
            run(f"head -c {big} /dev/zero | tr '\\0' x; echo b >&2", stdout=STREAM, stderr=STREAM),
            run("printf c; echo 3 >> /golem/work/log", stdout=AT_END),
            run("echo d; exit 4", stdout=STREAM),
            run("echo never >> /golem/work/log", stdout=STREAM),
        ]
    )
    async with http.get(f"{exe.path}/exec/{batch}", headers={"Accept": "text/event-stream"}) as response:
        frames = [data async for _, data, _ in read_sse(response)]
    results = await exe.finished(batch, 7)

    assert [(r["index"], r["result"], r["isBatchFinished"]) for r in results] == [
        (0, "Ok", False),
        (1, "Ok", False),
        (2, "Ok", False),
        (3, "Ok", False),
        (4, "Ok", False),
        (5, "Error", True),
    ]
    assert results[5]["message"] == "ExeScript command exited with code 4"
    assert (results[2]["stdout"], results[4]["stdout"]) == ("a\n", "c")
    assert results[3]["stdout"].startswith("xxx")  # kept within the node's bound; the events carry it all
    dates = [parse_timestamp(r["eventDate"]) for r in results]
    assert dates == sorted(dates)

    order: list[tuple[int, str]] = []
    for frame in frames:
        step = (frame["index"], next(iter(frame["kind"])))
        if not order or order[-1] != step:  # output comes in pieces: one step each
            order.append(step)
    assert order == [
        (0, "started"),
        (0, "finished"),
        (1, "started"),
        (1, "finished"),
        (2, "started"),
        (2, "stdout"),
        (2, "finished"),
        (3, "started"),
        (3, "stdout"),
        (3, "stderr"),
        (3, "finished"),
        (4, "started"),
        (4, "finished"),
        (5, "started"),
        (5, "stdout"),
        (5, "finished"),
    ]
    streamed = "".join(frame["kind"].get("stdout", "") for frame in frames if frame["index"] == 3)
    assert streamed == "x" * big
    stamps = [frame["timestamp"] for frame in frames]
    assert stamps == sorted(stamps)

    log = await exe.exec([run("cat /golem/work/log", stdout=AT_END)])
    assert (await exe.finished(log, 1))[0]["stdout"] == "1\n3\n"  # the command after the failure never ran


async def test_destroying_the_activity_mid_chain_kills_the_running_command_and_runs_nothing_queued(
    exe: Exe, http: aiohttp.ClientSession
) -> None:
    batch = await exe.exec(
        [*DEPLOY_START, run("echo started; exec sleep 30", stdout=STREAM), run("echo never", stdout=STREAM)]
    )
    async with http.get(f"{exe.path}/exec/{batch}", headers={"Accept": "text/event-stream"}) as response:
        async for _, data, _ in read_sse(response):
            if data["kind"].get("stdout") == "started\n":
                break
    running = (await call(http, "GET", f"{exe.path}/command"))[1]
    assert running[0]["params"] == ["/bin/sh", "-c", "echo started; exec sleep 30"]

    assert (await call(http, "DELETE", exe.path))[0] == 200
    results = await exe.finished(batch, 4)
    assert [(r["index"], r["result"], r["isBatchFinished"]) for r in results] == [
        (0, "Ok", False),
        (1, "Ok", False),
        (2, "Error", True),
    ]
    assert "destroyed by the requestor" in results[2]["message"]
    assert (await exe.state())["state"] == ["Terminated", None]
