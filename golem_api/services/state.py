"""The lifecycle of a service instance, as a state machine whose every change is reported.

::

    pending --start--> starting --ready--> running --stop--> stopping --terminate--> terminated (final)
       |                 |   \\--stop--> stopping            |                          ^
       |                 |                                    \\-----terminate----------/
       \\--terminate------+--terminate-----------------------------------------------/
    starting / running / stopping --mark_unresponsive--> unresponsive
    starting / unresponsive --restart--> pending                        (a respawn on a new agreement)

``stop`` is allowed from ``starting`` too: a cluster stopped while an instance deploys runs its ``shutdown``
handler, so that whatever ``start`` left behind is cleaned up. ``pending --terminate-->`` covers a cluster
stopped before the instance got an agreement. ``unresponsive`` is where an instance rests when its activity
died under it (the cluster does not respawn a running instance); ``restart`` takes it back to ``pending``.

The state changes only through these transitions (anything else raises
:class:`statemachine.exceptions.TransitionNotAllowed`), and every change calls the ``on_change`` hook given
to the machine with the old and new state ids and the reason passed as ``reason=`` to the transition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from statemachine import Event, State, StateMachine
from statemachine.exceptions import TransitionNotAllowed

__all__ = ["AVAILABLE_STATES", "ServiceState", "StateChangeHook"]

StateChangeHook = Callable[[str, str, "str | None"], None]
"""Called after every transition with ``(old state id, new state id, reason)``."""


class _Chart(StateMachine):
    """The states and transitions, declared once; read into :data:`_MOVES` for every machine to share.

    A python-statemachine machine registers its callbacks anew for each instance (some 1.4 ms and 36 KB on the
    2-core machine, a thousand instances' worth of a second and 36 MB), so an instance holds a
    :class:`ServiceState` instead: its current state, and the shared table of what each transition allows.
    """

    pending = State(initial=True)
    starting = State()
    running = State()
    stopping = State()
    terminated = State(final=True)
    unresponsive = State()

    start = pending.to(starting)
    ready = starting.to(running)
    stop = running.to(stopping) | starting.to(stopping)
    terminate = pending.to(terminated) | starting.to(terminated) | running.to(terminated) | stopping.to(terminated)
    mark_unresponsive = starting.to(unresponsive) | running.to(unresponsive) | stopping.to(unresponsive)
    restart = starting.to(pending) | unresponsive.to(pending)


_MOVES: dict[tuple[str, str], State] = {
    (str(getattr(event, "id", event)), state.id): transition.target
    for state in _Chart.states
    for transition in state.transitions
    for event in transition.events
}
"""(transition name, source state id) → target state, from the chart."""


class ServiceState:
    """States and transitions of one service instance.

    Compare an instance's state with the class attributes: ``instance.state == ServiceState.running``;
    ``state.id`` (also ``state.value``) is the plain name, ``"running"``.
    """

    __slots__ = ("_on_change", "_state")

    pending: State = _Chart.pending
    starting: State = _Chart.starting
    running: State = _Chart.running
    stopping: State = _Chart.stopping
    terminated: State = _Chart.terminated
    unresponsive: State = _Chart.unresponsive
    final_states: ClassVar[tuple[State, ...]] = tuple(_Chart.final_states)
    """The states no transition leaves."""

    def __init__(self, on_change: StateChangeHook | None = None) -> None:
        self._on_change = on_change
        self._state: State = _Chart.pending

    @property
    def state(self) -> State:
        """The current state (one of the class attributes, e.g. ``ServiceState.running``)."""
        return self._state

    def send(self, transition: str, reason: str | None = None) -> None:
        """Fire ``transition`` (``start``, ``ready``, ``stop``, …); ``TransitionNotAllowed`` from this state."""
        source = self._state
        target = _MOVES.get((transition, source.id))
        if target is None:
            raise TransitionNotAllowed(Event(transition), {source})
        self._state = target
        if self._on_change is not None:
            self._on_change(source.id, target.id, reason)


AVAILABLE_STATES: frozenset[str] = frozenset({"starting", "running", "stopping"})
"""Ids of the states in which an instance holds an agreement and an activity (``is_available``)."""
