"""yapapi's names and conventions that a port writes, checked without a provider (see ``docs/yapapi.md``).

Each test is code as a yapapi program has it: ``Golem`` without a subnet or payment settings (then from
``YAGNA_*``), ``new_script(timeout=timedelta(…))``, ``run(stdout=CaptureContext.build(…))``,
``download_bytes(src, on_download, limit)``, ``vm.VM_CAPS_VPN`` and ``vm.repo(repository_url=…)``, a strategy
that scores offers (``score_offer``, ``SCORE_REJECTED``), ``enable_default_logger`` and ``pluralize``, and the
awaitable results a handler's ``yield`` gives. The ones that need a provider are in
``tests/integration/test_yapapi_port.py`` and ``tests/integration/test_tasks.py``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from golem_api import (
    SCORE_NEUTRAL,
    SCORE_REJECTED,
    SCORE_TRUSTED,
    CaptureContext,
    CommandResult,
    ConfigurationError,
    Golem,
    MarketStrategy,
    Offer,
    ScoringStrategy,
    ScriptResults,
    Task,
    TaskError,
    vm,
)
from golem_api.activity.script import Script
from golem_api.activity.usage import cost_of_usage, usage_by_name
from golem_api.log import enable_default_logger, pluralize
from golem_api.services import Service, ServiceState
from golem_shared.pricing import CPU_SEC, DURATION_SEC, LinearPricing
from tests.unit.test_script import FakeActivity, context, ok, sent_json

# ---- Golem(subnet_tag=None, payment_driver=None, payment_network=None) and YAGNA_* ----


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("YAGNA_SUBNET", "YAGNA_PAYMENT_DRIVER", "YAGNA_PAYMENT_NETWORK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_golem_takes_none_for_the_defaults_as_yapapi_examples_pass_them(clean_env: pytest.MonkeyPatch) -> None:
    golem = Golem(budget=1.0, subnet_tag=None, payment_driver=None, payment_network=None)
    assert (golem.subnet_tag, golem.payment_driver, golem.payment_network) == ("public", "erc20", "holesky")
    assert golem.payment_platform == "erc20-holesky-tglm"


def test_golem_reads_yagna_subnet_driver_and_network_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("YAGNA_SUBNET", "devnet-beta")
    clean_env.setenv("YAGNA_PAYMENT_DRIVER", "ERC20")
    clean_env.setenv("YAGNA_PAYMENT_NETWORK", "polygon")
    golem = Golem(budget=1.0)
    assert (golem.subnet_tag, golem.payment_driver, golem.payment_network) == ("devnet-beta", "erc20", "polygon")
    assert golem.payment_platform == "erc20-polygon-glm"
    # What is given wins over the environment.
    assert Golem(budget=1.0, subnet_tag="public").subnet_tag == "public"


def test_a_bad_setting_names_where_it_came_from(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("YAGNA_SUBNET", "bad(subnet")
    with pytest.raises(ConfigurationError, match=r"YAGNA_SUBNET='bad\(subnet' \(from the environment\)"):
        Golem(budget=1.0)
    clean_env.delenv("YAGNA_SUBNET")
    with pytest.raises(ConfigurationError, match="payment_network=''"):
        Golem(budget=1.0, payment_network="")


# ---- scripts: timedelta timeouts, wait_for_results, capture modes, download callbacks ----


def test_new_script_takes_a_timedelta_timeout_and_wait_for_results() -> None:
    ctx, _ = context()
    script = ctx.new_script(timeout=timedelta(minutes=10))
    assert script.timeout == 600.0
    assert script.wait_for_results is True
    assert ctx.new_script(timeout=30, wait_for_results=False).wait_for_results is False
    for bad in (timedelta(0), timedelta(seconds=-1), 0, "10", True):
        with pytest.raises(ConfigurationError, match="timeout"):
            ctx.new_script(timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="wait_for_results"):
        ctx.new_script(wait_for_results="no")  # type: ignore[arg-type]


async def test_run_capture_modes_send_the_daemons_capture_shapes() -> None:
    def build(s: Script) -> None:
        s.run("/bin/a", stdout=CaptureContext.build("all"), stderr=CaptureContext.build(mode="stream", limit=100))
        s.run("/bin/b", stdout=CaptureContext.build("head", limit=10, fmt="bin"), stderr="discard")
        s.run("/bin/c", stdout="stream", stderr=CaptureContext.build("headTail", limit=64))
        s.run("/bin/d", stdout="all")

    captures = [command["run"]["capture"] for command in await sent_json(build)]
    assert captures == [
        {"stdout": {"atEnd": {}}, "stderr": {"stream": {"limit": 100}}},
        {"stdout": {"atEnd": {"head": 10, "format": "bin"}}},
        {"stdout": {"stream": {"format": "str"}}, "stderr": {"atEnd": {"headTail": 64}}},
        {"stdout": {"atEnd": {}}, "stderr": {"stream": {"format": "str"}}},
    ]


def test_bad_capture_modes_say_what_to_write() -> None:
    ctx, _ = context()
    script = ctx.new_script()
    with pytest.raises(ConfigurationError, match="unknown capture mode 'everything'"):
        CaptureContext.build("everything")
    with pytest.raises(ConfigurationError, match="needs limit="):
        CaptureContext.build("tail")
    with pytest.raises(ConfigurationError, match=r"stdout='tail' needs a limit: .*CaptureContext\.build"):
        script.run("/bin/true", stdout="tail")

    class CaptureContext2:  # stands for another library's CaptureContext
        def to_dict(self) -> dict[str, Any]:
            return {}

    CaptureContext2.__name__ = "CaptureContext"
    with pytest.raises(ConfigurationError, match="another library's CaptureContext"):
        script.run("/bin/true", stderr=CaptureContext2())  # type: ignore[arg-type]
    assert CaptureContext.build().is_streaming() is False
    assert CaptureContext.build("stream").is_streaming() is True


async def test_download_bytes_calls_on_download_given_second_as_in_yapapi() -> None:
    from tests.unit.test_script import FakeStorage

    got: list[Any] = []

    async def on_download(data: bytes) -> None:
        got.append(data)

    activity = FakeActivity()
    ctx, _ = context(activity, FakeStorage(download=b'{"a": 1}'))
    script = ctx.new_script()
    as_bytes = script.download_bytes("/golem/out/x", on_download, 1024)
    as_json = script.download_json("/golem/out/x", got.append)
    activity.outcomes = [ok(0), ok(1)]
    await ctx.run_script(script)
    assert got == [b'{"a": 1}', {"a": 1}]
    assert await as_bytes == b'{"a": 1}'
    assert await as_json == {"a": 1}
    with pytest.raises(ConfigurationError, match="write limit=1024"):
        ctx.new_script().download_bytes("/golem/out/x", 1024)  # type: ignore[arg-type]


async def test_what_a_yield_gives_back_is_a_list_that_can_also_be_awaited() -> None:
    results = ScriptResults([CommandResult(index=0, command="run", success=True, stdout="hi\n")])
    assert results[0].stdout == "hi\n"
    assert await results is results
    assert await asyncio.wait_for(asyncio.ensure_future(_await(results)), 1) == results


async def _await(value: Any) -> Any:
    return await value


# ---- WorkContext usage by name, cost ----


def test_usage_is_named_after_the_agreed_counters_and_costed_at_the_agreed_prices() -> None:
    from golem_api._rest.models import ActivityUsage as RawUsage

    pricing = LinearPricing(
        usage_vector=(DURATION_SEC, CPU_SEC), coeffs=(Decimal("0.1"), Decimal("0.2")), start_price=Decimal("1")
    )
    usage = usage_by_name(RawUsage(current_usage=(10.0, 5.0), timestamp=1_700_000_000), pricing)
    assert usage.current_usage == {DURATION_SEC: 10.0, CPU_SEC: 5.0}
    assert usage.timestamp is not None
    assert usage.timestamp.isoformat(sep=" ") == "2023-11-14 22:13:20+00:00"
    assert cost_of_usage(RawUsage(current_usage=(10.0, 5.0), timestamp=1), pricing) == Decimal("3.0")
    assert cost_of_usage(RawUsage(current_usage=None, timestamp=1), pricing) is None


# ---- services: id, super().__init__, get_deploy_args, the package's names ----


def test_service_id_super_init_and_get_deploy_args() -> None:
    class CustomCounterService(Service):
        def __init__(self, *args: Any, running_time_sec: int, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._running_time_sec = running_time_sec

    first, second = CustomCounterService(running_time_sec=1), CustomCounterService(running_time_sec=1)
    assert first.id != second.id
    assert first.id == first.id
    assert CustomCounterService(_id="fixed", running_time_sec=1).id == "fixed"
    assert first.get_deploy_args() == {}
    assert first.state == ServiceState.pending
    assert first.state.value == "pending"

    class NoSuper(Service):
        def __init__(self, colour: str) -> None:
            self.colour = colour

    assert len(NoSuper("red").id) == 36


# ---- vm: capability names and yapapi's registry argument ----


async def test_vm_capability_names_and_repository_url() -> None:
    assert (vm.VM_CAPS_VPN, vm.VM_CAPS_MANIFEST_SUPPORT, vm.VM_CAPS_INET) == ("vpn", "manifest-support", "inet")
    payload = await vm.repo(image_tag="svc:1.0", capabilities=[vm.VM_CAPS_VPN], repository_url="http://r.example")
    assert payload.repo_url == "http://r.example"
    assert "(golem.runtime.capabilities=vpn)" in payload.demand_constraints()
    with pytest.raises(ConfigurationError, match="give the registry once"):
        await vm.repo(image_tag="svc:1.0", repo_url="http://a", repository_url="http://b")
    assert vm.DEFAULT_REPOSITORY_URL == "https://registry.golem.network"


# ---- strategies that score offers ----


def offer(provider_id: str = "0xaaa") -> Offer:
    return Offer("proposal-1", provider_id, {"golem.node.id.name": "node-a"})


def test_a_yapapi_style_strategy_ports_as_a_scoring_strategy() -> None:
    scanned = {"0xbbb"}

    class ScanStrategy(ScoringStrategy):
        async def score_offer(self, offer: Any) -> float:
            if offer.issuer in scanned:
                return SCORE_REJECTED
            return SCORE_TRUSTED

    strategy = ScanStrategy()
    assert strategy.judge(offer("0xaaa")).score == SCORE_TRUSTED
    refused = strategy.judge(offer("0xbbb"))
    assert refused.score is None
    assert "ScanStrategy.score_offer gave -1 (rejected)" in refused.reason
    assert ScoringStrategy().judge(offer()).score == SCORE_TRUSTED
    assert SCORE_NEUTRAL == 0.0
    Golem(budget=1.0, strategy=strategy)  # accepted as a strategy

    class Waits(ScoringStrategy):
        async def score_offer(self, offer: Any) -> float:
            await asyncio.sleep(0)
            return 1.0

    with pytest.raises(ConfigurationError, match="must come at once"):
        Waits().judge(offer())

    class Names(ScoringStrategy):
        def score_offer(self, offer: Any) -> float:
            assert (offer.issuer, offer.id, offer.props["golem.node.id.name"]) == ("0xaaa", "proposal-1", "node-a")
            assert offer.provider_name == "node-a"
            return 5

    assert Names().judge(offer()).score == 5.0


def test_a_yapapi_market_strategy_subclass_is_pointed_to_scoring_strategy() -> None:
    class ScanStrategy(MarketStrategy):  # yapapi's base class name, golem-api's protocol
        async def score_offer(self, offer: Any) -> float:
            return SCORE_TRUSTED

    with pytest.raises(ConfigurationError, match=r"subclass golem_api\.ScoringStrategy instead"):
        Golem(budget=1.0, strategy=ScanStrategy())
    with pytest.raises(ConfigurationError, match="must define judge"):
        Golem(budget=1.0, strategy=object())  # type: ignore[arg-type]


# ---- logging as yapapi's examples set it up ----


def test_enable_default_logger_logs_info_to_stderr_and_everything_to_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = logging.getLogger("golem_api")
    before = list(logger.handlers), logger.level
    log_file = tmp_path / "run.log"
    try:
        enable_default_logger(log_file=str(log_file))
        enable_default_logger(log_file=str(log_file))  # no second handler for the same targets
        logging.getLogger("golem_api.tasks").debug("a detail")
        logging.getLogger("golem_api.tasks").info("a summary line")
        assert len([h for h in logger.handlers if h not in before[0]]) == 2
    finally:
        for handler in list(logger.handlers):
            if handler not in before[0]:
                logger.removeHandler(handler)
                logging.getLogger("golem_local").removeHandler(handler)
                handler.close()
        logger.setLevel(before[1])
    text = log_file.read_text()
    assert "a detail" in text
    assert "a summary line" in text
    assert "a summary line" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="directory"):
        enable_default_logger(log_file=tmp_path / "missing" / "run.log")
    assert (pluralize(1, "node"), pluralize(3, "worker")) == ("1 node", "3 workers")


# ---- Task, outside a job ----


def test_a_task_outside_a_job_cannot_be_settled() -> None:
    task: Task[int, int] = Task(data=7)
    assert (task.data, task.result, task.running_time, task.attempts) == (7, None, None, ())
    assert repr(task) == f"Task(id={task.id}, data=7)"
    with pytest.raises(TaskError, match=r"cannot accept .* it is waiting"):
        task.accept_result(1)
    with pytest.raises(TaskError, match="cannot reject"):
        task.reject_task("no", retry=True)
    with pytest.raises(TaskError, match="retry must be True or False"):
        task.reject_result("no", retry="yes")  # type: ignore[arg-type]


# ---- driving a handler: what comes back at the yield ----


async def test_drive_handler_sends_results_throws_errors_and_reports_unawaited_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from golem_api.activity.handlers import PendingResults, drive_handler
    from tests.unit.test_script import error

    activity = FakeActivity()
    ctx, _ = context(activity)
    seen: list[Any] = []

    async def handler() -> Any:
        try:
            yield "not a script"
        except TypeError as exc:
            seen.append(str(exc))
        script = ctx.new_script()
        script.run("/bin/echo", "hi")
        activity.outcomes = [ok(0, stdout="hi\n")]
        future_results = yield script
        seen.append([result.stdout for result in await future_results])
        script = ctx.new_script(wait_for_results=False)
        script.run("/bin/false")
        activity.outcomes = [error(0, "exit 1")]
        pending = yield script
        seen.append(isinstance(pending, PendingResults))
        await asyncio.wait({pending._task}, timeout=5)  # it ends; nobody awaits it through `pending`

    with caplog.at_level(logging.WARNING, logger="golem_api.activity.handlers"):
        await asyncio.wait_for(drive_handler(handler(), ctx, name="the test handler"), 5)

    assert seen[0] == "the test handler yielded 'not a script'; yield a script made with ctx.new_script()"
    assert seen[1:] == [["hi\n"], True]
    assert "wait_for_results=False failed and nobody awaited it" in caplog.text
