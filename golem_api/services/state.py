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
from typing import Any

from statemachine import State, StateMachine

__all__ = ["AVAILABLE_STATES", "ServiceState", "StateChangeHook"]

StateChangeHook = Callable[[str, str, "str | None"], None]
"""Called after every transition with ``(old state id, new state id, reason)``."""


class ServiceState(StateMachine):
    """States and transitions of one service instance.

    Compare an instance's state with the class attributes: ``instance.state == ServiceState.running``;
    ``state.id`` (also ``state.value``) is the plain name, ``"running"``.
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

    def __init__(self, on_change: StateChangeHook | None = None) -> None:
        self._on_change = on_change
        super().__init__()

    @property
    def state(self) -> State:
        """The current state (one of the class attributes, e.g. ``ServiceState.running``)."""
        current: State = self.states_map[self.current_state_value]
        return current

    def after_transition(self, source: State, target: State, reason: str | None = None, **_: Any) -> None:
        """Report the change (python-statemachine calls this after every transition)."""
        if self._on_change is not None:
            self._on_change(source.id, target.id, reason)


AVAILABLE_STATES: frozenset[str] = frozenset({"starting", "running", "stopping"})
"""Ids of the states in which an instance holds an agreement and an activity (``is_available``)."""
