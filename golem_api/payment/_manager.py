"""Paying providers: one allocation for the budget, debit notes and invoices accepted exactly once.

Two owned tasks long-poll the node's debit-note and invoice events, starting at the allocation's own
timestamp (the node's clock), so documents of earlier runs are not touched. A document is accepted only
when it belongs to an agreement of this run, asks no more than the agreed prices allow, and its new charge
fits in what is left of the budget; otherwise it is refused (an event says why) and the agreement is
terminated, since the daemon cannot reject documents.

What the prices allow: the agreement's linear price model (:class:`~golem_shared.pricing.LinearPricing`)
applied to the usage the activity API reports, read after the document arrived (so it covers at least the
usage the document bills), plus a tolerance (``price_tolerance``, relative, and ``amount_epsilon``,
absolute). For a debit note that is the price of its activity's usage; for an invoice, the sum over its
activities. A provider caught asking for more (:class:`~golem_api.events.DocumentRefused`) is paid nothing
more under that agreement, its invoice included.

Exactly once, under faults: a document counts as handled only once the node confirmed its acceptance (or
the manager decided not to pay it). Reads and acceptances are retried on transient failures with the one
policy of :mod:`golem_api._retry` (accepting twice answers as the first time, so a repeat after a lost answer
is harmless; a refused repeat is checked against the document's status, and an accepted document counts as
done). A document still not confirmed after that is kept and tried again on every later poll, until it is.

Documents are handled side by side, up to ``concurrency`` at once (a thousand providers billing every five
seconds send two hundred debit notes a second, more than one round trip after another keeps up with), but
one agreement's documents one at a time, in turn: its checks, acceptance and booking. While a document is
being accepted its charge is held out of the budget, so that documents accepted at the same time never pay
more than the budget between them.

A document the budget cannot pay is refused with :class:`~golem_api.events.BudgetExhausted` (and a line
saying so), its agreement is terminated with a :class:`~golem_api.errors.BudgetExceededError` as the cause,
and its invoice is not waited for on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from golem_api._retry import DEFAULT_POLICY, is_transient, retry
from golem_api.errors import (
    ApiError,
    BadRequestError,
    BudgetExceededError,
    GolemError,
    GoneError,
    InsufficientFundsError,
    MarketError,
    NodeUnreachableError,
    NotFoundError,
    PaymentError,
)
from golem_api.events import (
    ActivityCreated,
    AllocationCreated,
    AllocationReleased,
    BudgetExhausted,
    DebitNoteAccepted,
    DebitNoteRejected,
    DocumentRefused,
    EventBus,
    InvoiceAccepted,
    InvoiceReceived,
    PaymentFailed,
)
from golem_shared.pricing import DURATION_SEC
from golem_shared.tasks import TaskSet, within

if TYPE_CHECKING:
    from golem_api._rest.client import RestClient
    from golem_api._rest.models import Allocation, DebitNote, Invoice, PaymentEvent
    from golem_api.market.agreement import Agreement

__all__ = ["PaymentManager"]

_log = logging.getLogger(__name__)

_USAGE_TIMEOUT = 10.0  # seconds allowed for reading an activity's usage


_HANDLED_FOR = 300.0  # seconds a handled document is remembered at least (at most twice that)


class _Remembered:
    """A set of strings that forgets what was added more than ``keep`` to ``2 × keep`` seconds ago."""

    def __init__(self, keep: float) -> None:
        self._keep = keep
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._turned = time.monotonic()

    def add(self, item: str) -> None:
        now = time.monotonic()
        if now - self._turned >= self._keep:
            self._previous, self._current, self._turned = self._current, set(), now
        self._current.add(item)

    def __contains__(self, item: object) -> bool:
        return item in self._current or item in self._previous

    def __len__(self) -> int:
        return len(self._current | self._previous)


class PaymentManager:
    """Holds the allocation and accepts the documents of this run's agreements.

    ``price_tolerance`` (relative, default 1 %) and ``amount_epsilon`` (absolute) are how much more than
    price × reported usage a document may ask, for rounding and clocks that differ a little. ``concurrency``
    is how many documents are checked and accepted at once (of different agreements).
    """

    def __init__(
        self,
        rest: RestClient,
        bus: EventBus,
        *,
        budget: Decimal,
        platform: str,
        price_tolerance: Decimal = Decimal("0.01"),
        amount_epsilon: Decimal = Decimal("1e-9"),
        concurrency: int = 64,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise PaymentError(f"concurrency must be a positive number of documents, got {concurrency!r}")
        if not price_tolerance >= 0 or not amount_epsilon >= 0:
            raise PaymentError(
                f"price_tolerance and amount_epsilon must not be negative, got {price_tolerance}, {amount_epsilon}"
            )
        self._rest = rest
        self._bus = bus
        self.budget = budget
        self.platform = platform
        self.price_tolerance = Decimal(str(price_tolerance))  # str(): no binary noise from a float
        self.amount_epsilon = Decimal(str(amount_epsilon))
        self._refused: dict[str, str] = {}  # agreement id -> why nothing more is paid under it
        self.allocation: Allocation | None = None
        self._agreements: dict[str, Agreement] = {}
        self._accepted_debit: dict[str, Decimal] = {}  # activity id -> cumulative amount accepted
        self._activity_agreement: dict[str, str] = {}
        self._invoiced: dict[str, Decimal] = {}  # agreement id -> invoice amount accepted
        # Running totals, so that `spent` (asked for every document) costs the same at any number of agreements:
        self._debit_of_agreement: dict[str, Decimal] = {}  # agreement id -> debit notes accepted for its activities
        self._spent = Decimal(0)  # invoices accepted + debit notes accepted under agreements not invoiced yet
        # Documents accepted, refused, or of another run: not looked at again. Kept for two generations of
        # _HANDLED_FOR s: the events are read after a timestamp, so a document comes round again only if the
        # node announces it twice, and not minutes apart (200 debit notes a second would otherwise fill 14 MB
        # in ten minutes). Handling one again would do no harm either: acceptances are idempotent.
        self._handled = _Remembered(_HANDLED_FOR)
        self._received_announced: set[str] = set()  # invoices whose InvoiceReceived was emitted
        self._invoice_paid: dict[str, asyncio.Future[Decimal]] = {}
        self._unpaid: dict[str, str] = {}  # agreement id -> why its invoice is not (or not fully) paid
        self._tasks = TaskSet("payment manager", logger=_log)
        self._activity_seen: dict[str, float] = {}  # activity id -> time.monotonic() when its creation was answered
        self._subscription = bus.subscribe(self._on_activity_created, ActivityCreated)
        self.concurrency = concurrency
        self._reserved = Decimal(0)  # charges of documents being accepted right now, not booked yet
        self._turns: dict[str, asyncio.Lock] = {}  # agreement id -> held while one of its documents is handled

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the allocation for the budget and start accepting documents."""
        try:
            self.allocation = await self._rest.payment.create_allocation(
                payment_platform=self.platform, total_amount=self.budget
            )
        except BadRequestError as exc:
            if "insufficient" in exc.message.lower():
                raise InsufficientFundsError(
                    f"the budget of {self.budget} is more than the account holds on {self.platform}: "
                    f"{exc.message}. Lower budget=, release old allocations, or fund the account "
                    f"(on a testnet: `yagna payment fund`)",
                    requested=self.budget,
                    platform=self.platform,
                ) from exc
            raise PaymentError(
                f"the node refused an allocation of {self.budget} on {self.platform}: {exc.message}. "
                "Check payment_driver= and payment_network="
            ) from exc
        allocation = self.allocation
        self._bus.emit(
            AllocationCreated(allocation_id=allocation.allocation_id, amount=self.budget, platform=self.platform)
        )
        since = allocation.timestamp
        self._tasks.spawn(
            self._poll(self._rest.payment.collect_debit_note_events, since, self._on_debit_note, "debit note"),
            name="debit-note events",
        )
        self._tasks.spawn(
            self._poll(self._rest.payment.collect_invoice_events, since, self._on_invoice, "invoice"),
            name="invoice events",
        )

    async def aclose(self) -> None:
        """Stop accepting documents and release the allocation.

        A node that does not answer is logged, not raised: there is nothing the user could do about it here.
        """
        await self._tasks.aclose()
        self._bus.unsubscribe(self._subscription)
        if self.allocation is not None:
            allocation_id, self.allocation = self.allocation.allocation_id, None
            try:
                await retry(
                    lambda: self._rest.payment.release_allocation(allocation_id),
                    what=f"releasing allocation {allocation_id}",
                )
            except (NotFoundError, GoneError):
                pass
            except GolemError as exc:
                _log.error("could not release allocation %s (it expires on the node by itself): %s", allocation_id, exc)
            self._bus.emit(AllocationReleased(allocation_id=allocation_id, spent=self.spent))

    # --- what the engine asks -------------------------------------------------------------------

    @property
    def allocation_id(self) -> str:
        if self.allocation is None:
            raise PaymentError("no allocation: the payment manager is not started")
        return self.allocation.allocation_id

    @property
    def refused(self) -> dict[str, str]:
        """Agreements under which nothing more is paid (ids → why), after a document asked too much."""
        return dict(self._refused)

    @property
    def spent(self) -> Decimal:
        """What this run has accepted to pay so far: each accepted invoice, and the debit notes accepted under
        agreements not invoiced yet (an invoice covers its agreement's debit notes)."""
        return self._spent

    def _owed_under(self, agreement_id: str) -> Decimal:
        """What :attr:`spent` counts for one agreement."""
        invoiced = self._invoiced.get(agreement_id)
        return invoiced if invoiced is not None else self._debit_of_agreement.get(agreement_id, Decimal(0))

    def _assign(self, activity_id: str, agreement_id: str, debit: Decimal | None = None) -> None:
        """Book ``activity_id`` under ``agreement_id`` (and its accepted debit notes at ``debit``, if given),
        moving its debit notes from the agreement it was booked under; the caller fixes :attr:`spent`."""
        already = self._accepted_debit.get(activity_id, Decimal(0))
        previous = self._activity_agreement.get(activity_id)
        if previous is not None:
            self._debit_of_agreement[previous] -= already
        self._activity_agreement[activity_id] = agreement_id
        if debit is not None:
            self._accepted_debit[activity_id] = already = debit
        self._debit_of_agreement[agreement_id] = self._debit_of_agreement.get(agreement_id, Decimal(0)) + already

    def _agreements_of(self, agreement_id: str, activity_ids: Iterable[str]) -> set[str]:
        found = {agreement_id}
        found.update(self._activity_agreement[a] for a in activity_ids if a in self._activity_agreement)
        return found

    def _book_debit_note(self, activity_id: str, agreement_id: str, total: Decimal) -> None:
        """A debit note of ``activity_id`` was accepted for ``total`` (cumulative)."""
        touched = self._agreements_of(agreement_id, [activity_id])
        before = sum((self._owed_under(a) for a in touched), start=Decimal(0))
        self._assign(activity_id, agreement_id, total)
        self._spent += sum((self._owed_under(a) for a in touched), start=Decimal(0)) - before

    def _book_invoice(self, agreement_id: str, amount: Decimal, activity_ids: Iterable[str]) -> None:
        """The invoice of ``agreement_id`` was accepted for ``amount``; it covers ``activity_ids``."""
        activity_ids = list(activity_ids)
        touched = self._agreements_of(agreement_id, activity_ids)
        before = sum((self._owed_under(a) for a in touched), start=Decimal(0))
        self._invoiced[agreement_id] = amount
        for activity_id in activity_ids:
            self._assign(activity_id, agreement_id)
        self._spent += sum((self._owed_under(a) for a in touched), start=Decimal(0)) - before

    def track(self, agreement: Agreement) -> None:
        """Pay the documents of ``agreement`` (checked against its prices, ``agreement.pricing``)."""
        self._agreements[agreement.agreement_id] = agreement
        self._invoice_paid.setdefault(agreement.agreement_id, asyncio.get_running_loop().create_future())

    @property
    def unpaid(self) -> dict[str, str]:
        """Agreements whose invoice arrived and was not paid (ids → why: the budget, or it asked too much)."""
        return dict(self._unpaid)

    def settled(self, agreement_id: str) -> bool:
        """Whether nothing more is owed under the agreement: its invoice was paid, or refused with a reason."""
        future = self._invoice_paid.get(agreement_id)
        return future is not None and future.done()

    async def wait_for_invoices(self, agreement_ids: Iterable[str], timeout: float) -> list[str]:
        """Wait up to ``timeout`` s for the invoices of these agreements; return the ids still unpaid.

        An agreement whose documents were refused (for asking too much, or for the budget) is not waited for:
        its invoice has come or will not be paid (see :attr:`unpaid` and :attr:`refused`).
        """
        futures = {a: self._invoice_paid[a] for a in agreement_ids if a in self._invoice_paid}
        pending = [f for f in futures.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return [a for a, f in futures.items() if not f.done()]

    # --- polling ----------------------------------------------------------------------------------

    async def _poll(
        self,
        collect: Callable[..., Awaitable[list[PaymentEvent]]],
        since: datetime,
        handle: Callable[[str], Awaitable[None]],
        kind: str,
    ) -> None:
        """Read the node's events from ``since`` and handle each received document until it is done.

        Each document is handled by a task of its own, up to ``concurrency`` at once (reading more events
        waits for a free place), so that one slow document holds up no other. A document whose handling
        failed on a transient fault (after the retries of :func:`retry`) goes back to ``pending`` and is
        handled again on the next round; the next read of events is then short, so that it comes round soon.
        """
        after = since
        pending: dict[str, None] = {}  # document ids to handle, in the order they arrived
        in_flight: set[str] = set()
        gate = asyncio.Semaphore(self.concurrency)
        delays = None

        async def work(document_id: str) -> None:
            done = False
            try:
                done = await self._process(kind, document_id, handle)
            finally:
                in_flight.discard(document_id)
                gate.release()
                if done:
                    self._handled.add(document_id)
                else:
                    pending[document_id] = None

        while True:
            try:
                events = await collect(after=after, timeout=1.0 if pending else 5.0, max_events=100)
            except (NodeUnreachableError, ApiError) as exc:
                delays = delays or DEFAULT_POLICY.delays()
                pause = next(delays)
                _log.warning("reading %s events failed, retrying in %.1f s: %s", kind, pause, exc)
                await asyncio.sleep(pause)  # a back-off pause, not a wait for an event
                continue
            delays = None
            for event in events:
                after = max(after, event.event_date)
                document_id = event.document_id
                received = event.event_type.endswith("ReceivedEvent")
                if received and document_id not in self._handled and document_id not in in_flight:
                    pending[document_id] = None
            while pending:
                document_id = next(iter(pending))
                del pending[document_id]
                await gate.acquire()
                in_flight.add(document_id)
                self._tasks.spawn(work(document_id), name=f"{kind} {document_id}")

    async def _process(self, kind: str, document_id: str, handle: Callable[[str], Awaitable[None]]) -> bool:
        """Handle one document; True when it is done with (paid, refused, not ours), False to try again later."""
        try:
            await handle(document_id)
        except GolemError as exc:
            if is_transient(exc):
                _log.warning("could not handle %s %s yet, will try again: %s", kind, document_id, exc)
                return False
            _log.error("could not handle %s %s: %s", kind, document_id, exc)
        return True

    async def _accept(self, kind: str, document_id: str, amount: Decimal) -> None:
        """Accept a document for ``amount``, retried; a refused repeat of an acceptance that went through is done."""
        payment = self._rest.payment
        accept = payment.accept_invoice if kind == "invoice" else payment.accept_debit_note
        allocation_id = self.allocation_id
        try:
            await retry(
                lambda: accept(document_id, amount=amount, allocation_id=allocation_id),
                what=f"accepting {kind} {document_id}",
            )
        except ApiError as exc:
            if is_transient(exc) or not await self._already_accepted(kind, document_id):
                raise
            _log.info("%s %s was accepted already (the node said %s): counted as done", kind, document_id, exc)

    async def _already_accepted(self, kind: str, document_id: str) -> bool:
        """Whether the node holds the document as accepted (or settled)."""
        if kind == "invoice":
            status = (await retry(lambda: self._rest.payment.get_invoice(document_id), what=f"reading {kind}")).status
        else:
            status = (
                await retry(lambda: self._rest.payment.get_debit_note(document_id), what=f"reading {kind}")
            ).status
        return status in ("ACCEPTED", "SETTLED")

    def _remaining(self) -> Decimal:
        """What the budget can still pay: neither spent nor held for an acceptance under way."""
        return self.budget - self.spent - self._reserved

    @contextlib.asynccontextmanager
    async def _reserve(self, charge: Decimal) -> AsyncIterator[None]:
        """Hold ``charge`` of the budget while a document is accepted, so that documents accepted at the same
        time never pay more than the budget between them; released once it is booked (or failed)."""
        self._reserved += charge
        try:
            yield
        finally:
            self._reserved -= charge

    @contextlib.asynccontextmanager
    async def _agreement_turn(self, agreement_id: str) -> AsyncIterator[None]:
        """One document of an agreement at a time: its checks, acceptance and booking."""
        lock = self._turns.get(agreement_id)
        if lock is None:
            lock = self._turns[agreement_id] = asyncio.Lock()
        async with lock:
            yield

    async def _on_debit_note(self, debit_note_id: str) -> None:
        note = await retry(
            lambda: self._rest.payment.get_debit_note(debit_note_id), what=f"reading debit note {debit_note_id}"
        )
        agreement = self._agreements.get(note.agreement_id)
        if agreement is None:
            _log.debug("debit note %s is for agreement %s of another run", debit_note_id, note.agreement_id)
            return
        async with self._agreement_turn(note.agreement_id):
            await self._check_and_accept_debit_note(agreement, note)

    async def _check_and_accept_debit_note(self, agreement: Agreement, note: DebitNote) -> None:
        debit_note_id = note.debit_note_id
        if await self._overcharged_debit_note(agreement, note):
            return
        already = self._accepted_debit.get(note.activity_id, Decimal(0))
        charge = note.total_amount_due - already
        if charge > self._remaining():
            await self._refuse_for_budget(agreement, "debit note", debit_note_id, note.total_amount_due, charge)
            return
        async with self._reserve(charge):
            await self._accept("debit note", debit_note_id, note.total_amount_due)
            total = max(self._accepted_debit.get(note.activity_id, Decimal(0)), note.total_amount_due)
            self._book_debit_note(note.activity_id, note.agreement_id, total)
        self._bus.emit(
            DebitNoteAccepted(
                debit_note_id=debit_note_id,
                agreement_id=note.agreement_id,
                activity_id=note.activity_id,
                provider_name=agreement.provider_name,
                amount=note.total_amount_due,
            )
        )

    # --- price checks ---------------------------------------------------------------------------

    def _allowance(self, cost: Decimal) -> Decimal:
        return cost * (1 + self.price_tolerance) + self.amount_epsilon

    async def _usage_cost(self, agreement: Agreement, activity_id: str) -> Decimal | None:
        """The agreed price of the activity's usage as the activity API reports it now; ``None`` if unknown."""
        try:
            usage = await within(self._rest.activity.get_usage(activity_id), _USAGE_TIMEOUT)
        except (GolemError, asyncio.TimeoutError) as exc:
            _log.warning("could not read the usage of activity %s: %r", activity_id, exc)
            return None
        if usage.current_usage is None:
            return None
        try:
            return agreement.pricing.cost(usage.current_usage)
        except MarketError as exc:
            _log.warning("activity %s reports a usage the agreement does not price: %s", activity_id, exc)
            return None

    def _on_activity_created(self, event: object) -> None:
        if isinstance(event, ActivityCreated):
            self._activity_seen.setdefault(event.activity_id, time.monotonic())

    def _certain_cost(self, agreement: Agreement, activity_id: str) -> Decimal | None:
        """A floor of what the activity costs by now: the agreed price of the time it has surely run.

        The provider created the activity before the requestor got its id, so its ``duration_sec`` is at least
        the time since then. With no negative price, a note asking no more than this floor (plus the tolerance)
        asks no more than the price of the activity's real usage either, and needs no usage query.
        """
        seen = self._activity_seen.get(activity_id)
        pricing = agreement.pricing
        if seen is None or DURATION_SEC not in pricing.usage_vector:
            return None
        if pricing.start_price < 0 or any(c < 0 for c in pricing.coeffs):
            return None
        elapsed = max(time.monotonic() - seen, 0.0)
        return pricing.cost_of({DURATION_SEC: Decimal(str(round(elapsed, 6)))})

    async def _overcharged_debit_note(self, agreement: Agreement, note: DebitNote) -> bool:
        """Refuse the note (and the agreement) when it asks more than the prices allow; True if refused."""
        if self._refused_before(agreement, "debit note", note.debit_note_id, note.total_amount_due):
            return True
        floor = self._certain_cost(agreement, note.activity_id)
        if floor is not None and note.total_amount_due <= self._allowance(floor):
            return False  # within the price of the time the activity has surely run: no need to ask its usage
        cost = await self._usage_cost(agreement, note.activity_id)
        if cost is None and note.usage_counter_vector is not None:
            # The activity API did not answer: price the usage the note itself claims.
            with contextlib.suppress(MarketError):
                cost = agreement.pricing.cost(note.usage_counter_vector)
        return await self._over_allowance(
            agreement,
            "debit note",
            note.debit_note_id,
            note.total_amount_due,
            cost,
            f"activity {note.activity_id}",
            "its reported usage",
        )

    async def _overcharged_invoice(self, agreement: Agreement, invoice: Invoice) -> bool:
        """Refuse the invoice (and the agreement) when it asks more than the prices allow; True if refused."""
        if self._refused_before(agreement, "invoice", invoice.invoice_id, invoice.amount):
            return True
        cost = Decimal(0)
        for activity_id in invoice.activity_ids:
            activity_cost = await self._usage_cost(agreement, activity_id)
            if activity_cost is None:  # unknown now: what was already checked and accepted for it
                activity_cost = self._accepted_debit.get(activity_id, Decimal(0))
            cost += activity_cost
        return await self._over_allowance(
            agreement,
            "invoice",
            invoice.invoice_id,
            invoice.amount,
            cost,
            f"{len(invoice.activity_ids)} activit(ies)",
            "their final usage",
        )

    def _refused_before(self, agreement: Agreement, kind: str, document_id: str, amount: Decimal) -> bool:
        """True (and an event) when an earlier document of ``agreement`` was refused: nothing more is paid."""
        earlier = self._refused.get(agreement.agreement_id)
        if earlier is None:
            return False
        reason = f"nothing more is paid under agreement {agreement.agreement_id}: {earlier}"
        _log.info("not paying %s %s from %r: %s", kind, document_id, agreement.provider_name, reason)
        self._emit_refused(agreement, kind, document_id, amount, Decimal(0), reason)
        return True

    async def _over_allowance(
        self,
        agreement: Agreement,
        kind: str,
        document_id: str,
        amount: Decimal,
        cost: Decimal | None,
        charged_for: str,
        usage: str,
    ) -> bool:
        """Refuse the document (and end the agreement) when ``amount`` exceeds what ``cost`` allows; True if so."""
        if cost is None:
            reason = f"the usage of {charged_for} is unknown, so {amount} cannot be checked"
            allowed = Decimal(0)
        else:
            allowed = self._allowance(cost)
            if amount <= allowed:
                return False
            reason = (
                f"it asks {amount} for {charged_for}, but {usage} at the agreed prices costs {cost} "
                f"(at most {allowed} with the tolerance)"
            )
        self._refused[agreement.agreement_id] = f"its {kind} {document_id} was refused: {reason}"
        _log.error("refusing %s %s from %r: %s", kind, document_id, agreement.provider_name, reason)
        self._emit_refused(agreement, kind, document_id, amount, allowed, reason)
        # Nothing is owed any more under this agreement: nobody should wait for its invoice.
        future = self._invoice_paid.get(agreement.agreement_id)
        if future is not None and not future.done():
            future.set_result(Decimal(0))
        try:
            await agreement.terminate(f"{kind} refused: {reason}", success=False)
        except GolemError as exc:
            _log.warning("could not terminate %r after its %s was refused: %s", agreement, kind, exc)
        return True

    def _emit_refused(
        self, agreement: Agreement, kind: str, document_id: str, amount: Decimal, allowed: Decimal, reason: str
    ) -> None:
        self._bus.emit(
            DocumentRefused(
                kind=kind,
                document_id=document_id,
                agreement_id=agreement.agreement_id,
                provider_name=agreement.provider_name,
                amount=amount,
                allowed=allowed,
                reason=reason,
            )
        )

    # --- budget -----------------------------------------------------------------------------------

    async def _refuse_for_budget(
        self, agreement: Agreement, kind: str, document_id: str, amount: Decimal, charge: Decimal
    ) -> None:
        """Refuse a document the rest of the budget cannot pay: an event, a line, the agreement ended for it."""
        remaining = self._remaining()
        message = (
            f"budget {self.budget} spent: refusing {kind} {document_id} of {amount} from {agreement.provider_name!r}; "
            f"it would charge {charge} more, but only {remaining} is left ({self.spent} spent). "
            "Give Golem(budget=…) more to keep this provider working"
        )
        _log.error("%s", message)
        self._bus.emit(
            BudgetExhausted(
                kind=kind,
                document_id=document_id,
                agreement_id=agreement.agreement_id,
                provider_name=agreement.provider_name,
                amount=amount,
                charge=charge,
                budget=self.budget,
                spent=self.spent,
                message=message,
            )
        )
        if kind == "debit note":
            self._bus.emit(
                DebitNoteRejected(
                    debit_note_id=document_id,
                    agreement_id=agreement.agreement_id,
                    provider_name=agreement.provider_name,
                    amount=amount,
                    reason=message,
                )
            )
        else:
            self._bus.emit(
                PaymentFailed(
                    document_id=document_id,
                    agreement_id=agreement.agreement_id,
                    provider_name=agreement.provider_name,
                    reason=message,
                )
            )
            # The invoice is here and will not be paid: nobody should wait for it.
            self._unpaid[agreement.agreement_id] = message
            future = self._invoice_paid.get(agreement.agreement_id)
            if future is not None and not future.done():
                future.set_result(Decimal(0))
        try:
            failure = BudgetExceededError(message)
            await agreement.terminate(f"payment refused: {message}", success=False, failure=failure)
        except GolemError as exc:
            _log.warning("could not terminate %r after its %s was refused: %s", agreement, kind, exc)

    async def _on_invoice(self, invoice_id: str) -> None:
        invoice = await retry(lambda: self._rest.payment.get_invoice(invoice_id), what=f"reading invoice {invoice_id}")
        agreement = self._agreements.get(invoice.agreement_id)
        if agreement is None:
            _log.debug("invoice %s is for agreement %s of another run", invoice_id, invoice.agreement_id)
            return
        if invoice_id not in self._received_announced:
            self._received_announced.add(invoice_id)
            self._bus.emit(
                InvoiceReceived(
                    invoice_id=invoice_id,
                    agreement_id=invoice.agreement_id,
                    provider_name=agreement.provider_name,
                    amount=invoice.amount,
                )
            )
        async with self._agreement_turn(invoice.agreement_id):
            await self._check_and_accept_invoice(agreement, invoice)

    async def _check_and_accept_invoice(self, agreement: Agreement, invoice: Invoice) -> None:
        invoice_id = invoice.invoice_id
        if await self._overcharged_invoice(agreement, invoice):
            return
        covered = sum((self._accepted_debit.get(a, Decimal(0)) for a in invoice.activity_ids), start=Decimal(0))
        charge = max(invoice.amount - covered, Decimal(0))
        if charge > self._remaining():
            await self._refuse_for_budget(agreement, "invoice", invoice_id, invoice.amount, charge)
            return
        async with self._reserve(charge):
            await self._accept("invoice", invoice_id, invoice.amount)
            self._book_invoice(invoice.agreement_id, invoice.amount, invoice.activity_ids)
        future = self._invoice_paid.get(invoice.agreement_id)
        if future is not None and not future.done():
            future.set_result(invoice.amount)
        self._bus.emit(
            InvoiceAccepted(
                invoice_id=invoice_id,
                agreement_id=invoice.agreement_id,
                provider_name=agreement.provider_name,
                amount=invoice.amount,
            )
        )
