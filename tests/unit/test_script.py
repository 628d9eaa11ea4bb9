"""Scripts: the ExeScript JSON each method sends, how awaiting commands behaves once a script ran, and the
requestor's end of gftp transfers (what it answers to the node's frames).

The activity and the storage are in-memory fakes that answer as the node does (results by index, an event
stream that never ends by itself), so these tests need no sockets; the integration tests run the same code
against the real local node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from attrs import define, field

from golem_api._rest.client import RestClient
from golem_api._rest.config import ApiConfig
from golem_api._rest.models import ExeScriptCommandResult, RuntimeEvent
from golem_api.activity import work_context
from golem_api.activity.activity import Activity
from golem_api.activity.script import ENV_PROGRAM, Command, CommandResult, Download, Script
from golem_api.activity.storage import GsbStorage, Published, Receiving
from golem_api.activity.work_context import WorkContext
from golem_api.errors import (
    ActivityError,
    BadRequestError,
    BatchTimeoutError,
    CommandExecutionError,
    ConfigurationError,
    GolemTimeoutError,
    NodeUnreachableError,
    RequestTimeoutError,
    TransferError,
)
from golem_api.events import CommandExecuted, CommandOutput, Event, EventBus, ScriptFinished, ScriptSent
from golem_shared.gftp import (
    GsbRequest,
    GsbResponse,
    decode_request,
    decode_response,
    encode_request,
)

WHEN = datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
BOUND = 5.0  # seconds any await here may take; the semantics under test are "at once"


def ok(index: int, stdout: str | None = None, stderr: str | None = None) -> ExeScriptCommandResult:
    return ExeScriptCommandResult(index=index, event_date=WHEN, result="Ok", stdout=stdout, stderr=stderr)


def error(index: int, message: str, stderr: str | None = None) -> ExeScriptCommandResult:
    return ExeScriptCommandResult(index=index, event_date=WHEN, result="Error", message=message, stderr=stderr)


@define
class FakeAgreement:
    agreement_id: str = "agr-1"
    provider_name: str = "testnet-1"
    provider_id: str = "0xprovider"


@define
class FakeActivity:
    """Results by command index (``None``: the command never finishes); events streamed once asked for."""

    outcomes: list[ExeScriptCommandResult | None] = field(factory=list)
    events: list[RuntimeEvent] = field(factory=list)
    exec_error: Exception | None = None
    stream_error: Exception | None = None
    activity_id: str = "act-1"
    agreement: FakeAgreement = field(factory=FakeAgreement)
    sent: list[list[dict[str, Any]]] = field(factory=list)
    polls: list[int | None] = field(factory=list)
    streamed_all: asyncio.Event = field(factory=asyncio.Event)
    polled: asyncio.Event = field(factory=asyncio.Event)
    end_reason: str | None = None

    @property
    def ending(self) -> bool:
        return self.end_reason is not None

    async def destroy(self, reason: str = "destroyed") -> None:
        self.end_reason = self.end_reason or reason

    async def exec(self, commands: list[dict[str, Any]]) -> str:
        self.sent.append(commands)
        if self.exec_error is not None:
            raise self.exec_error
        return "batch-1"

    async def results(
        self, batch_id: str, command_index: int | None = None, timeout: float | None = None, *, since: int = 0
    ) -> list[ExeScriptCommandResult]:
        assert command_index is not None
        assert timeout is not None
        assert since == command_index  # the poller asks for the first result it lacks, and only for those after
        self.polls.append(command_index)
        self.polled.set()
        if self.events:  # like the node: a command's result comes after its events
            await self.streamed_all.wait()
        outcome = self.outcomes[command_index]
        if outcome is None:  # never finishes: the long-poll times out, as the node's does (408)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.Event().wait(), timeout)
            raise RequestTimeoutError(method="GET", path="/exec", status=408, message="timeout")
        return [outcome]

    @contextlib.asynccontextmanager
    async def stream(self, batch_id: str) -> AsyncIterator[AsyncIterator[RuntimeEvent]]:
        if self.stream_error is not None:
            raise self.stream_error

        async def events() -> AsyncIterator[RuntimeEvent]:
            for event in self.events:
                yield event
            self.streamed_all.set()
            await asyncio.Event().wait()  # the daemon's stream does not end with the batch

        yield events()


@define
class FakeService:
    url: str
    data: bytes = b""
    closed: bool = False

    async def aclose(self) -> None:
        self.closed = True

    async def wait(self, timeout: float) -> int:
        return len(self.data)

    async def result(self, timeout: float) -> bytes:
        return self.data


@define
class FakeStorage:
    """Publishes and receives in memory; ``download`` is what a provider "uploads" to every receiver."""

    download: bytes = b""
    services: list[FakeService] = field(factory=list)
    published: list[bytes | Path] = field(factory=list)

    def _service(self, data: bytes = b"") -> FakeService:
        service = FakeService(f"gftp://0xrequestor/{len(self.services)}", data)
        self.services.append(service)
        return service

    async def publish_bytes(self, data: bytes) -> FakeService:
        self.published.append(data)
        return self._service()

    async def publish_file(self, path: Path) -> FakeService:
        self.published.append(path)
        return self._service()

    async def receive_bytes(self, *, limit: int | None = None) -> FakeService:
        return self._service(self.download)

    async def receive_file(self, path: Path) -> FakeService:
        return self._service(self.download)


def context(
    activity: FakeActivity | None = None, storage: FakeStorage | None = None, *, stream_output: bool = False
) -> tuple[WorkContext, list[Event]]:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    ctx = WorkContext(
        cast(Activity, activity or FakeActivity()),
        cast(GsbStorage, storage or FakeStorage()),
        bus,
        stream_output=stream_output,
    )
    return ctx, seen


async def sent_json(build: Callable[[Script], object], storage: FakeStorage | None = None) -> list[dict[str, Any]]:
    """The ExeScript a script built by ``build`` sends (every command answered Ok)."""
    activity = FakeActivity()
    ctx, _ = context(activity, storage)
    script = ctx.new_script()
    build(script)
    activity.outcomes = [ok(i) for i in range(len(script.commands))]
    await ctx.run_script(script)
    (commands,) = activity.sent
    return commands


# ---- the JSON of each command ----


async def test_deploy_start_and_terminate_send_the_daemons_shapes() -> None:
    def build(s: Script) -> None:
        s.deploy(env={"A": "1"}, hostname="svc", volumes=["/golem/work"])
        s.start("--fast")
        s.terminate()

    assert await sent_json(build) == [
        {"deploy": {"env": {"A": "1"}, "hostname": "svc", "volumes": ["/golem/work"]}},
        {"start": {"args": ["--fast"]}},
        {"terminate": {}},
    ]


async def test_run_streams_both_outputs_and_keeps_entry_point_snake_case() -> None:
    (run,) = await sent_json(lambda s: s.run("/bin/sh", "-c", "echo hi"))
    capture = {"stream": {"format": "str"}}
    assert run == {
        "run": {"entry_point": "/bin/sh", "args": ["-c", "echo hi"], "capture": {"stdout": capture, "stderr": capture}}
    }


async def test_run_env_reaches_the_command_through_usr_bin_env() -> None:
    (run,) = await sent_json(lambda s: s.run("/bin/sh", "-c", "echo $GREETING", env={"GREETING": "hi there"}))
    body = run["run"]
    assert body["entry_point"] == ENV_PROGRAM == "/usr/bin/env"
    assert body["args"] == ["GREETING=hi there", "/bin/sh", "-c", "echo $GREETING"]
    assert "env" not in body  # the daemon's run command has no env field: it would be dropped silently


@pytest.mark.parametrize(
    ("env", "cmd", "match"),
    [
        ({"": "x"}, "/bin/sh", "variable name"),
        ({"A=B": "x"}, "/bin/sh", "variable name"),
        ({"A": 1}, "/bin/sh", "must be a string"),
        ({"A": "x"}, "/bin/X=1", "cannot contain '='"),
    ],
)
def test_bad_env_is_refused_before_anything_is_sent(env: dict[str, Any], cmd: str, match: str) -> None:
    ctx, _ = context()
    with pytest.raises(ConfigurationError, match=match):
        ctx.new_script().run(cmd, env=env)


def test_arguments_must_be_strings() -> None:
    script = context()[0].new_script()
    with pytest.raises(ConfigurationError, match=r"str\(\)"):
        script.run("/bin/echo", 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="JSON"):
        script.deploy(env=object())
    assert script.commands == []


async def test_transfers_name_the_gftp_urls_and_container_paths(tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(b"file")
    storage = FakeStorage(download=b"[1, 2]")

    def build(s: Script) -> None:
        s.upload_bytes(b"raw", "/golem/in/raw")
        s.upload_json({"k": [1]}, "/golem/in/k.json")
        s.upload_file(source, "container:/golem/in/in.bin")
        s.download_bytes("/golem/out/a")
        s.download_json("/golem/out/b.json")
        s.download_file("/golem/out/c", tmp_path / "c")

    commands = await sent_json(build, storage)
    urls = [service.url for service in storage.services]
    assert commands == [
        {"transfer": {"from": urls[0], "to": "container:/golem/in/raw"}},
        {"transfer": {"from": urls[1], "to": "container:/golem/in/k.json"}},
        {"transfer": {"from": urls[2], "to": "container:/golem/in/in.bin"}},
        {"transfer": {"from": "container:/golem/out/a", "to": urls[3]}},
        {"transfer": {"from": "container:/golem/out/b.json", "to": urls[4]}},
        {"transfer": {"from": "container:/golem/out/c", "to": urls[5]}},
    ]
    assert storage.published == [b"raw", b'{"k": [1]}', source]
    assert all(service.closed for service in storage.services), "every GSB service is released after the script"


def test_transfers_check_their_local_files_at_once(tmp_path: Path) -> None:
    script = context()[0].new_script()
    with pytest.raises(ConfigurationError, match="not a file"):
        script.upload_file(tmp_path / "missing", "/golem/in/x")
    with pytest.raises(ConfigurationError, match="directory"):
        script.download_file("/golem/out/x", tmp_path / "no" / "x")
    with pytest.raises(ConfigurationError, match="limit"):
        script.download_bytes("/golem/out/x", limit=-1)


# ---- results and await semantics ----


async def test_results_settle_every_command_and_downloads_give_their_data() -> None:
    activity = FakeActivity()
    ctx, seen = context(activity, FakeStorage(download=b'{"answer": 42}'))
    script = ctx.new_script()
    deploy = script.deploy()
    run = script.run("/bin/echo", "hi")
    data = script.download_json("/golem/out/answer.json")
    activity.outcomes = [ok(0), ok(1, stdout="hi\n"), ok(2)]
    results = await ctx.run_script(script)
    assert results == [
        CommandResult(index=0, command="deploy", success=True),
        CommandResult(index=1, command="run", success=True, stdout="hi\n"),
        CommandResult(index=2, command="transfer", success=True),
    ]
    assert isinstance(data, Download)
    assert isinstance(run, Command)
    assert await asyncio.wait_for(data, BOUND) == {"answer": 42}
    assert (await asyncio.wait_for(run, BOUND)).stdout == "hi\n"
    assert deploy.done()
    assert deploy.result().success
    assert activity.polls == [0, 1, 2]
    kinds = [type(event) for event in seen]
    assert kinds == [ScriptSent, CommandExecuted, CommandExecuted, CommandExecuted, ScriptFinished]
    finished = seen[-1]
    assert isinstance(finished, ScriptFinished)
    assert finished.success


async def test_a_failed_command_raises_and_so_do_it_and_the_ones_after_it_when_awaited() -> None:
    activity = FakeActivity()
    ctx, seen = context(activity)
    script = ctx.new_script()
    first = script.run("/bin/true")
    failing = script.run("/bin/sh", "-c", "echo oops >&2; exit 3")
    skipped = script.run("/bin/echo", "never")
    activity.outcomes = [ok(0), error(1, "exited with code 3", stderr="oops\n"), None]
    with pytest.raises(CommandExecutionError) as raised:
        await asyncio.wait_for(ctx.run_script(script), BOUND)
    assert (raised.value.index, raised.value.command, raised.value.stderr) == (1, "run", "oops\n")
    assert "exited with code 3" in str(raised.value)
    assert "oops" in str(raised.value)
    assert raised.value.activity_id == "act-1"
    # Awaiting afterwards never hangs: the failed command and the skipped one raise at once, every time.
    assert (await asyncio.wait_for(first, BOUND)).success
    for _ in range(2):
        with pytest.raises(CommandExecutionError, match="exited with code 3"):
            await asyncio.wait_for(failing, BOUND)
    with pytest.raises(CommandExecutionError, match=r"not run: command #1 run failed") as not_run:
        await asyncio.wait_for(skipped, BOUND)
    assert not_run.value.index == 2
    with pytest.raises(CommandExecutionError):
        skipped.result()
    assert activity.polls == [0, 1], "nothing is asked about commands after the failed one"
    finished = seen[-1]
    assert isinstance(finished, ScriptFinished)
    assert not finished.success


async def test_a_timed_out_script_raises_and_settles_the_unfinished_commands() -> None:
    activity = FakeActivity()
    ctx, _ = context(activity)
    script = ctx.new_script(timeout=0.2)
    done = script.run("/bin/true")
    stuck = script.run("/bin/sleep", "1000")
    after = script.download_bytes("/golem/out/x")
    activity.outcomes = [ok(0), None, None]
    with pytest.raises(BatchTimeoutError, match=r"within its timeout of 0\.2 s") as raised:
        await asyncio.wait_for(ctx.run_script(script), BOUND)
    assert raised.value.batch_id == "batch-1"
    assert isinstance(raised.value, GolemTimeoutError)
    assert raised.value.timeout == 0.2
    assert done.result().success
    for command in (stuck, after):
        with pytest.raises(CommandExecutionError, match="timeout"):
            await asyncio.wait_for(command, BOUND)
    # No later script may queue behind the command still running: the activity was ended, and says why.
    assert "the activity was ended" in str(raised.value)
    assert activity.end_reason is not None
    assert "timeout of 0.2 s" in activity.end_reason
    later = ctx.new_script()
    later.run("/bin/true")
    with pytest.raises(ActivityError, match="no more scripts run on it"):
        await asyncio.wait_for(ctx.run_script(later), BOUND)
    assert len(activity.sent) == 1, "nothing was sent after the timeout"


async def test_a_batch_the_node_refuses_settles_every_command_with_the_reason() -> None:
    refusal = BadRequestError(method="POST", path="/exec", status=400, message="command #0: bad")
    ctx, seen = context(FakeActivity(exec_error=refusal))
    script = ctx.new_script()
    command = script.deploy()
    with pytest.raises(BadRequestError):
        await ctx.run_script(script)
    with pytest.raises(CommandExecutionError, match="command #0: bad"):
        await asyncio.wait_for(command, BOUND)
    assert seen == [], "no batch was sent, so no script events"


async def test_a_cancelled_script_leaves_no_command_pending() -> None:
    activity = FakeActivity(outcomes=[None])
    ctx, _ = context(activity)
    script = ctx.new_script()
    command = script.run("/bin/sleep", "1000")
    task = asyncio.ensure_future(ctx.run_script(script))
    await asyncio.wait_for(activity.polled.wait(), BOUND)  # the batch is sent and its first result asked for
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(CommandExecutionError, match="cancelled"):
        await asyncio.wait_for(command, BOUND)


@pytest.mark.parametrize("finishes", [True, False])
async def test_a_script_never_queues_unawares_behind_a_cut_short_batch(
    finishes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(work_context, "UNFINISHED_GRACE", 0.2)
    activity = FakeActivity(outcomes=[None])
    ctx, _ = context(activity)
    first = ctx.new_script()
    first.run("/bin/sleep", "1000")
    task = asyncio.ensure_future(ctx.run_script(first))
    await asyncio.wait_for(activity.polled.wait(), BOUND)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctx.unfinished_batch == "batch-1"
    if finishes:  # the cut-short batch ends within the grace: the next script runs on the same activity
        activity.outcomes = [ExeScriptCommandResult(index=0, event_date=WHEN, result="Ok", is_batch_finished=True)]
    second = ctx.new_script()
    second.run("/bin/true")
    if finishes:
        await asyncio.wait_for(ctx.run_script(second), BOUND)
        assert activity.end_reason is None
        assert len(activity.sent) == 2
    else:  # still running after the grace: the activity is ended (killing it) and the script fails at once
        with pytest.raises(ActivityError, match="no more scripts run on it") as raised:
            await asyncio.wait_for(ctx.run_script(second), BOUND)
        assert "still running 0.2 s later" in str(raised.value)
        assert len(activity.sent) == 1
    assert ctx.unfinished_batch is None


async def test_a_script_runs_once_and_takes_no_commands_afterwards() -> None:
    activity = FakeActivity(outcomes=[ok(0)])
    ctx, _ = context(activity)
    script = ctx.new_script()
    script.start()
    await ctx.run_script(script)
    with pytest.raises(ConfigurationError, match="runs once"):
        await ctx.run_script(script)
    with pytest.raises(ConfigurationError, match="already run"):
        script.terminate()
    assert len(activity.sent) == 1


async def test_a_command_before_its_script_ran_has_no_result() -> None:
    ctx, _ = context()
    command = ctx.new_script().start()
    assert not command.done()
    with pytest.raises(ActivityError, match="run its script first"):
        command.result()


async def test_a_script_of_another_context_is_refused() -> None:
    ctx, _ = context()
    other, _ = context()
    with pytest.raises(ConfigurationError, match="was made for"):
        await ctx.run_script(other.new_script())


# ---- streaming ----


def event(index: int, kind: str, payload: Any) -> RuntimeEvent:
    return RuntimeEvent(batch_id="batch-1", index=index, timestamp=WHEN, kind=kind, payload=payload)


async def test_streamed_output_reaches_the_callbacks_line_by_line() -> None:
    activity = FakeActivity(
        outcomes=[ok(0, stdout="one\ntwo\npartial", stderr="warn\n")],
        events=[
            event(0, "started", {"command": {}}),
            event(0, "stdout", "one\ntw"),
            event(0, "stderr", "warn\n"),
            event(0, "stdout", "o\npartial"),
            event(0, "finished", {"return_code": 0, "message": None}),
        ],
    )
    ctx, seen = context(activity)
    lines: list[str] = []
    errors: list[str] = []
    script = ctx.new_script()
    run = script.run("/bin/sh", "-c", "…", on_stdout=lines.append, on_stderr=errors.append)
    await asyncio.wait_for(ctx.run_script(script), BOUND)
    assert lines == ["one", "two", "partial"]
    assert errors == ["warn"]
    assert run.result().stdout == "one\ntwo\npartial"
    pieces = [(e.stream, e.text) for e in seen if isinstance(e, CommandOutput)]
    assert pieces == [("stdout", "one\ntw"), ("stderr", "warn\n"), ("stdout", "o\npartial")]


async def test_without_a_stream_the_callbacks_get_the_output_from_the_result() -> None:
    activity = FakeActivity(
        outcomes=[ok(0, stdout="a\nb\n")],
        stream_error=NodeUnreachableError("the stream broke", url="http://node"),
    )
    ctx, _ = context(activity)
    lines: list[str] = []
    script = ctx.new_script()
    script.run("/bin/sh", on_stdout=lines.append)
    await asyncio.wait_for(ctx.run_script(script), BOUND)
    assert lines == ["a", "b"]


async def test_a_callback_that_raises_does_not_break_the_script() -> None:
    activity = FakeActivity(
        outcomes=[ok(0, stdout="x\n")],
        events=[event(0, "stdout", "x\n"), event(0, "finished", {"return_code": 0, "message": None})],
    )
    ctx, _ = context(activity)

    def explode(line: str) -> None:
        raise RuntimeError(line)

    script = ctx.new_script()
    run = script.run("/bin/echo", "x", on_stdout=explode)
    await asyncio.wait_for(ctx.run_script(script), BOUND)
    assert run.result().success


# ---- the requestor's end of a gftp transfer (frames as the node sends them) ----


def storage_without_node() -> GsbStorage:
    return GsbStorage(RestClient(ApiConfig.for_node("http://127.0.0.1:1", "key")))


async def call(service: Published | Receiving, component: str, payload: Any = None) -> GsbResponse:
    request = decode_request(encode_request(GsbRequest(id="1", component=component, payload=payload)), views=True)
    _masked, frame = await (await service._answer(request, None))  # no WebSocket: the frame as it is
    return decode_response(bytes(frame))


def chunk(offset: int, content: bytes) -> dict[str, Any]:
    return {"chunk": {"offset": offset, "content": content}}


async def test_chunks_in_any_order_are_assembled_and_checked_against_the_hash() -> None:
    receiving = Receiving(storage_without_node(), "f1", "0xrequestor")
    assert receiving.url == "gftp://0xrequestor/f1"
    for offset, content in [(6, b"world"), (0, b"hello ")]:
        assert (await call(receiving, "UploadChunk", chunk(offset, content))).error is None
    digest = hashlib.sha3_256(b"hello world").hexdigest()
    assert (await call(receiving, "UploadFinished", {"hash": digest})).error is None
    assert await receiving.result(timeout=BOUND) == b"hello world"
    await receiving.aclose()


async def test_chunks_in_order_are_hashed_as_they_come_and_the_file_is_not_read_again(tmp_path: Path) -> None:
    target = tmp_path / "received"
    receiving = Receiving(storage_without_node(), "f1", "0xrequestor", path=target)
    for offset, content in [(0, b"hello "), (6, b"world")]:
        assert (await call(receiving, "UploadChunk", chunk(offset, content))).error is None
    target.write_bytes(b"changed behind its back")  # a second hash of the whole file would see this
    digest = hashlib.sha3_256(b"hello world").hexdigest()
    assert (await call(receiving, "UploadFinished", {"hash": digest})).error is None
    assert await receiving.wait(timeout=BOUND) == 11
    await receiving.aclose()


@pytest.mark.parametrize(
    ("chunks", "finished", "variant", "match"),
    [
        ([chunk(0, b"abc")], {"hash": "00" * 32}, "IntegrityError", "SHA3-256"),
        ([chunk(0, b"ab"), chunk(5, b"cd")], {}, "WriteError", "misses bytes 2..4"),
    ],
)
async def test_a_corrupt_upload_is_refused_and_its_result_raises(
    chunks: list[dict[str, Any]], finished: dict[str, Any], variant: str, match: str
) -> None:
    receiving = Receiving(storage_without_node(), "f1", "0xrequestor")
    for payload in chunks:
        await call(receiving, "UploadChunk", payload)
    answer = await call(receiving, "UploadFinished", finished)
    assert answer.error is not None
    assert list(answer.error) == [variant]
    with pytest.raises(TransferError, match=match):
        await receiving.result(timeout=BOUND)
    await receiving.aclose()


async def test_an_upload_the_provider_never_finishes_times_out_as_a_golem_timeout() -> None:
    receiving = Receiving(storage_without_node(), "f1", "0xrequestor")
    await call(receiving, "UploadChunk", chunk(0, b"abc"))
    with pytest.raises(GolemTimeoutError, match=r"did not finish within 0\.01 s") as raised:
        await receiving.result(timeout=0.01)
    assert isinstance(raised.value, TransferError)
    await receiving.aclose()


async def test_an_upload_over_the_limit_is_refused_at_the_chunk() -> None:
    receiving = Receiving(storage_without_node(), "f1", "0xrequestor", limit=4)
    answer = await call(receiving, "UploadChunk", chunk(0, b"12345"))
    assert answer.error is not None
    assert "limit of 4 bytes" in answer.error["WriteError"]
    with pytest.raises(TransferError, match="limit"):
        await receiving.result(timeout=BOUND)
    await receiving.aclose()


async def test_a_receiver_closed_before_the_upload_ended_fails_its_waiters() -> None:
    receiving = Receiving(storage_without_node(), "f1", "0xrequestor")
    await receiving.aclose()
    with pytest.raises(TransferError, match="closed before"):
        await receiving.wait(timeout=BOUND)


async def test_published_data_is_served_by_metadata_and_chunks(tmp_path: Path) -> None:
    source = tmp_path / "data"
    source.write_bytes(b"0123456789")
    for published in (
        Published(storage_without_node(), "p1", "0xr", data=b"0123456789"),
        Published(storage_without_node(), "p2", "0xr", path=source),
    ):
        assert (await call(published, "GetMetadata")).payload == {"fileSize": 10}
        assert (await call(published, "GetChunk", {"offset": 8, "size": 5})).payload == {"offset": 8, "content": b"89"}
        beyond = await call(published, "GetChunk", {"offset": 11, "size": 1})
        assert beyond.error is not None
        assert "beyond the end" in beyond.error["ReadError"]
        await published.aclose()
