"""What a run shows a person: a live table of service instances, progress for long waits, the final summary.

* :func:`status_table`: one row per instance (instance, provider, state, uptime, cost so far from accepted
  debit notes). ``Cluster`` renders as this table (``rich.print(cluster)``, or a notebook cell's last line).
* :func:`summary_table`: one row per provider (agreements, activity time, amount paid) and the total; the
  :class:`~golem_api._summary.SummaryLogger` at ``golem.summary`` renders as it.
* :class:`LiveStatus`: ``async with LiveStatus(golem, cluster):`` keeps the status table on screen while the
  services run, redrawn a few times per second, when the output is a terminal; in a notebook the table is one
  output updated in place; otherwise (a pipe, a file, a test) it prints one plain line per state change.
* :func:`progress`: a spinner with a message for a long wait on a terminal, a log line otherwise.
* :func:`to_html`: any of these as HTML (what ``_repr_html_`` returns).

All drawing happens on the event loop's thread (the live table is redrawn by a task that :class:`LiveStatus`
owns), so it reads the engine's state without locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from golem_api._summary import SummaryLogger
from golem_api.errors import ConfigurationError
from golem_api.events import Event, ServiceStateChanged, Subscription
from golem_shared.timestamps import utc_now

if TYPE_CHECKING:
    from golem_api.golem import Golem
    from golem_api.services.cluster import Cluster
    from golem_api.services.service import Service

__all__ = [
    "STATE_STYLES",
    "LiveStatus",
    "format_amount",
    "format_duration",
    "progress",
    "status_table",
    "summary_table",
    "to_html",
]

_log = logging.getLogger(__name__)

STATE_STYLES: dict[str, str] = {
    "pending": "yellow",
    "starting": "cyan",
    "running": "bold green",
    "stopping": "magenta",
    "terminated": "dim",
    "unresponsive": "bold red",
}
"""The colour of each service state in the tables."""


def format_amount(amount: Decimal, token: str = "") -> str:
    """An amount for display, to 6 decimal places (the values themselves stay exact ``Decimal``)."""
    text = f"{amount:.6f}"
    return f"{text} {token}" if token else text


def format_duration(seconds: float) -> str:
    """``7.3 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _agreement_id(instance: Service) -> str | None:
    agreement = instance._agreement
    return agreement.agreement_id if agreement is not None else None


def status_table(
    instances: Iterable[Service],
    summary: SummaryLogger | None = None,
    *,
    now: datetime | None = None,
    title: str | None = "Service instances",
) -> Table:
    """One row per instance: name, provider, state, uptime (time ``running``), cost so far.

    Uptime and cost come from ``summary`` (``golem.summary``); without one those cells show ``-``.
    """
    now = now or utc_now()
    token = summary.token if summary is not None else ""
    table = Table(title=title, title_justify="left")
    table.add_column("instance")
    table.add_column("provider")
    table.add_column("state")
    table.add_column("uptime", justify="right")
    table.add_column(f"cost so far{f' ({token})' if token else ''}", justify="right")
    for instance in instances:
        state = instance.state.id
        uptime = "-"
        cost = "-"
        if summary is not None:
            record = summary.instances.get(instance.name)
            if record is not None and (record.state != "pending" or record.ran_seconds):
                uptime = format_duration(record.uptime(now))
            agreement_id = _agreement_id(instance)
            if agreement_id is not None:
                cost = format_amount(summary.cost_of(agreement_id))
        table.add_row(
            instance.name,
            instance.provider_name or "-",
            Text(state, style=STATE_STYLES.get(state, "")),
            uptime,
            cost,
        )
    return table


def summary_table(summary: SummaryLogger, *, now: datetime | None = None, title: str | None = "Summary") -> Table:
    """One row per provider (agreements, activity time, amount paid) and a total row."""
    now = now or utc_now()
    table = Table(title=title, title_justify="left", show_footer=True)
    names = sorted(summary.providers)
    agreements = sum(summary.providers[name].agreements for name in names)
    seconds = {name: summary.activity_seconds(name, now) for name in names}
    table.add_column("provider", footer=Text("total", style="bold"))
    table.add_column("agreements", justify="right", footer=str(agreements))
    table.add_column("activity time", justify="right", footer=format_duration(sum(seconds.values())))
    table.add_column(
        f"paid ({summary.token})", justify="right", footer=Text(format_amount(summary.total_paid), style="bold")
    )
    for name in names:
        totals = summary.providers[name]
        table.add_row(name, str(totals.agreements), format_duration(seconds[name]), format_amount(totals.paid))
    return table


def to_html(renderable: RenderableType, *, width: int = 100) -> str:
    """``renderable`` drawn by rich as a self-contained HTML fragment (inline styles), for notebooks."""
    # force_jupyter=False: in a notebook rich would otherwise also display what it renders here, as a side effect
    console = Console(
        record=True,
        file=io.StringIO(),
        width=width,
        force_terminal=True,
        force_jupyter=False,
        color_system="truecolor",
    )
    console.print(renderable)
    return console.export_html(
        inline_styles=True,
        code_format="<pre style=\"font-family: Menlo, 'DejaVu Sans Mono', consolas, monospace; "
        'line-height: 1.2">{code}</pre>',
    )


@contextlib.contextmanager
def progress(message: str, console: Console | None = None) -> Iterator[None]:
    """Show ``message`` with a spinner while the block runs (on a terminal); elsewhere log it once."""
    console = console or Console()
    if console.is_terminal and not console.is_jupyter:
        with console.status(message):
            yield
    else:
        _log.info("%s", message)
        yield


class _Screen:
    """What :class:`LiveStatus` draws: a spinner line while instances wait for providers, then the table."""

    def __init__(self, golem: Golem, cluster: Cluster[Any] | None, summary: SummaryLogger) -> None:
        self.golem = golem
        self.cluster = cluster
        self.summary = summary
        self.spinner = Spinner("dots", text="waiting for agreements with providers…")

    def instances(self) -> list[Service]:
        clusters = [self.cluster] if self.cluster is not None else list(self.golem.clusters)
        return [instance for cluster in clusters for instance in cluster.instances]

    def __rich__(self) -> RenderableType:
        instances = self.instances()
        table = status_table(instances, self.summary)
        if any(instance.state.id == "pending" for instance in instances):
            return Group(self.spinner, table)
        return table

    def _repr_html_(self) -> str:
        return to_html(status_table(self.instances(), self.summary))


class LiveStatus:
    """Shows the service instances of ``cluster`` (or of every cluster of ``golem``) while they run.

    ``async with LiveStatus(golem, cluster): …``. On a terminal: a live table redrawn
    ``refresh_per_second`` times per second by an owned task (cancelled and awaited on exit, when the table
    is drawn one last time); anything printed meanwhile appears above it. In a Jupyter notebook: one output,
    updated in place. Otherwise: one plain line per state change, e.g.
    ``simple-service-1: starting -> running on 'local-provider-2'``.

    Uptime and cost come from ``golem.summary``; when the ``Golem`` has no summary (``event_consumer=`` was
    replaced), a private one is subscribed for the duration of the block.
    """

    def __init__(
        self,
        golem: Golem,
        cluster: Cluster[Any] | None = None,
        *,
        console: Console | None = None,
        refresh_per_second: float = 4.0,
    ) -> None:
        if isinstance(refresh_per_second, bool) or not (
            isinstance(refresh_per_second, int | float) and 0 < refresh_per_second <= 60
        ):
            raise ConfigurationError(f"refresh_per_second must be a number in (0, 60], got {refresh_per_second!r}")
        self.golem = golem
        self.cluster = cluster
        self.console = console or Console()
        self.refresh_per_second = float(refresh_per_second)
        self._summary = golem.summary
        self._subscriptions: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None
        self._handle: Any = None
        self._screen: _Screen | None = None

    @property
    def mode(self) -> str:
        """``"terminal"``, ``"notebook"`` or ``"lines"``: how the status is shown (see the class docstring)."""
        if self.console.is_jupyter:
            return "notebook"
        return "terminal" if self.console.is_terminal else "lines"

    async def __aenter__(self) -> LiveStatus:
        if self._screen is not None:
            raise ConfigurationError("this LiveStatus is already showing; use one `async with` at a time")
        bus = self.golem.bus
        if self._summary is None:
            self._summary = SummaryLogger()
            self._subscriptions.append(bus.subscribe(self._summary))
        screen = _Screen(self.golem, self.cluster, self._summary)
        self._screen = screen
        mode = self.mode
        if mode == "terminal":
            self._live = Live(screen, console=self.console, auto_refresh=False, transient=False)
            self._live.start(refresh=True)
            self._task = asyncio.create_task(self._redraw(), name="live status")
        elif mode == "notebook":
            display = importlib.import_module("IPython.display")
            self._handle = display.display(screen, display_id=True)
            self._task = asyncio.create_task(self._redraw(), name="live status")
        else:
            self._subscriptions.append(bus.subscribe(self._line, ServiceStateChanged))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            self._draw()
        finally:
            live, self._live = self._live, None
            if live is not None:
                live.stop()
            for subscription in self._subscriptions:
                self.golem.bus.unsubscribe(subscription)
            self._subscriptions.clear()
            self._handle = None
            self._screen = None

    def _draw(self) -> None:
        if self._live is not None:
            self._live.refresh()
        elif self._handle is not None and self._screen is not None:
            self._handle.update(self._screen)

    async def _redraw(self) -> None:
        while True:
            await asyncio.sleep(1 / self.refresh_per_second)  # the refresh period, not a wait for an event
            try:
                self._draw()
            except Exception:
                _log.exception("drawing the live status failed; it stops updating")
                return

    def _line(self, event: Event) -> None:
        if not isinstance(event, ServiceStateChanged):
            return
        if self.cluster is not None and event.instance not in {i.name for i in self.cluster.instances}:
            return
        where = f" on '{event.provider_name}'" if event.provider_name else ""
        why = f" ({event.reason})" if event.reason and event.new in ("terminated", "unresponsive") else ""
        self.console.print(
            f"{event.instance}: {event.old} -> {event.new}{where}{why}", markup=False, highlight=False, soft_wrap=True
        )
