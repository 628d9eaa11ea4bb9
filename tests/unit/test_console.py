"""The run's figures (``SummaryLogger``) and how they are shown (``golem_api.console``): tables, HTML, lines."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from golem_api._summary import SummaryLogger, token_name
from golem_api.console import LiveStatus, format_amount, format_duration, status_table, summary_table, to_html
from golem_api.errors import ConfigurationError
from golem_api.events import (
    ActivityCreated,
    ActivityDestroyed,
    AgreementConfirmed,
    AllocationCreated,
    DebitNoteAccepted,
    EventBus,
    InvoiceAccepted,
    ServiceStateChanged,
)
from golem_api.services.service import Service

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def state(instance: str, old: str, new: str, seconds: float, provider: str | None = "p1") -> ServiceStateChanged:
    return ServiceStateChanged(
        service="Svc", instance=instance, old=old, new=new, provider_name=provider, timestamp=at(seconds)
    )


def run_of_two_providers() -> SummaryLogger:
    """p1 ran one activity for 10 s and was paid 0.25; p2's activity still runs, with one debit note so far."""
    summary = SummaryLogger()
    for event in (
        AllocationCreated(allocation_id="al", amount=Decimal(1), platform="erc20-holesky-tglm"),
        AgreementConfirmed(agreement_id="a1", provider_id="n1", provider_name="p1"),
        AgreementConfirmed(agreement_id="a2", provider_id="n2", provider_name="p2"),
        ActivityCreated(activity_id="x1", agreement_id="a1", provider_name="p1", timestamp=at(0)),
        ActivityCreated(activity_id="x2", agreement_id="a2", provider_name="p2", timestamp=at(5)),
        DebitNoteAccepted(
            debit_note_id="d1", agreement_id="a1", activity_id="x1", provider_name="p1", amount=Decimal("0.1")
        ),
        DebitNoteAccepted(
            debit_note_id="d2", agreement_id="a2", activity_id="x2", provider_name="p2", amount=Decimal("0.05")
        ),
        ActivityDestroyed(activity_id="x1", agreement_id="a1", provider_name="p1", timestamp=at(10)),
        InvoiceAccepted(invoice_id="i1", agreement_id="a1", provider_name="p1", amount=Decimal("0.25")),
    ):
        summary(event)
    return summary


def render(renderable: Any, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def cells(text: str, first: str) -> list[str]:
    """The cells of the table row (or header) of ``text`` whose first cell is ``first``."""
    for line in text.splitlines():
        parts = [part.strip() for part in line.replace("┃", "│").split("│")[1:-1]]
        if parts and parts[0] == first:
            return parts
    raise AssertionError(f"no row starting with {first!r} in:\n{text}")


def test_the_summary_keeps_costs_per_agreement_and_activity_time_per_provider() -> None:
    summary = run_of_two_providers()
    assert summary.token == "tGLM"
    assert summary.cost_of("a1") == Decimal("0.25"), "the invoice replaces the debit notes once paid"
    assert summary.cost_of("a2") == Decimal("0.05"), "until then, the last accepted debit note counts"
    assert summary.cost_of("unknown") == 0
    assert summary.total_paid == Decimal("0.25")
    assert summary.activity_seconds("p1", at(100)) == 10.0
    assert summary.activity_seconds("p2", at(20)) == 15.0, "a live activity counts until now"


def test_the_summary_table_has_a_row_per_provider_and_the_total() -> None:
    text = render(summary_table(run_of_two_providers(), now=at(20)))
    assert cells(text, "provider") == ["provider", "agreements", "activity time", "paid (tGLM)"]
    assert cells(text, "p1") == ["p1", "1", "10.0 s", "0.250000"]
    assert cells(text, "p2") == ["p2", "1", "15.0 s", "0.000000"]
    assert cells(text, "total") == ["total", "2", "25.0 s", "0.250000"]


def test_the_summary_renders_itself_for_rich_and_for_notebooks() -> None:
    summary = run_of_two_providers()
    assert "total" in render(summary)
    html = summary._repr_html_()
    assert html.lstrip().startswith("<")
    assert "0.250000" in html


def test_uptime_counts_only_the_time_spent_running() -> None:
    summary = SummaryLogger()
    summary(state("s-1", "pending", "starting", 0))
    summary(state("s-1", "starting", "running", 2))
    record = summary.instances["s-1"]
    assert record.uptime(at(7)) == 5.0
    summary(state("s-1", "running", "stopping", 12))
    summary(state("s-1", "stopping", "terminated", 13))
    assert record.uptime(at(100)) == 10.0
    assert record.provider_name == "p1"


class _Svc(Service):
    pass


def test_the_status_table_shows_each_instance_with_provider_state_uptime_and_cost() -> None:
    summary = run_of_two_providers()
    bus = EventBus()
    bus.subscribe(summary)
    running, waiting = _Svc(), _Svc()
    running._attach(name="svc-1", bus=bus)
    waiting._attach(name="svc-2", bus=bus)
    running._agreement = SimpleNamespace(agreement_id="a2", provider_name="p2")  # type: ignore[assignment]
    running._change("start")
    running._change("ready")
    text = render(status_table([running, waiting], summary))
    assert cells(text, "instance") == ["instance", "provider", "state", "uptime", "cost so far (tGLM)"]
    name, provider, status, uptime, cost = cells(text, "svc-1")
    assert (name, provider, status, cost) == ("svc-1", "p2", "running", "0.050000")
    assert uptime.endswith(" s")
    assert cells(text, "svc-2") == ["svc-2", "-", "pending", "-", "-"], "no provider, uptime or cost yet"


def test_a_cluster_renders_as_its_status_table() -> None:
    from golem_api.services._runner import InstanceSettings
    from golem_api.services.cluster import Cluster

    cluster: Cluster[_Svc] = Cluster(
        _Svc,
        demand=SimpleNamespace(),  # type: ignore[arg-type]
        storage=SimpleNamespace(),  # type: ignore[arg-type]
        bus=EventBus(),
        settings=InstanceSettings(),
        summary=SummaryLogger(),
    )
    text = render(cluster)
    assert "<Cluster _Svc: 0 instance(s)>" in text
    assert cells(text, "instance") == ["instance", "provider", "state", "uptime", "cost so far (GLM)"]
    assert "&lt;Cluster _Svc: 0 instance(s)&gt;" in cluster._repr_html_()


def test_amounts_and_durations_read_well() -> None:
    assert format_amount(Decimal("0.0025507761737")) == "0.002551"
    assert format_amount(Decimal(1), "GLM") == "1.000000 GLM"
    assert format_duration(7.34) == "7.3 s"
    assert format_duration(125) == "2 min 05 s"
    assert format_duration(3720) == "1 h 02 min"
    assert token_name("erc20-polygon-glm") == "GLM"
    assert token_name("erc20-holesky-tglm") == "tGLM"


def test_to_html_is_a_self_contained_fragment() -> None:
    html = to_html(summary_table(run_of_two_providers()))
    assert html.startswith("<pre")
    assert "<html" not in html
    assert "p2" in html


async def test_without_a_terminal_live_status_prints_one_line_per_state_change() -> None:
    out = io.StringIO()
    console = Console(file=out, width=40, color_system=None)
    bus = EventBus()
    golem: Any = SimpleNamespace(bus=bus, summary=None, clusters=[])
    async with LiveStatus(golem, console=console) as status:
        assert status.mode == "lines"
        bus.emit(state("simple-service-1", "pending", "starting", 0, provider="local-provider-1"))
        bus.emit(state("simple-service-1", "starting", "running", 1, provider="local-provider-1"))
    bus.emit(state("simple-service-1", "running", "stopping", 2, provider="local-provider-1"))  # after: not shown
    assert out.getvalue().splitlines() == [
        "simple-service-1: pending -> starting on 'local-provider-1'",
        "simple-service-1: starting -> running on 'local-provider-1'",
    ], "one unwrapped line each, even on a narrow console"


def test_live_status_refuses_a_silly_refresh_rate() -> None:
    golem: Any = SimpleNamespace(bus=EventBus(), summary=None, clusters=[])
    with pytest.raises(ConfigurationError, match="refresh_per_second"):
        LiveStatus(golem, refresh_per_second=0)
