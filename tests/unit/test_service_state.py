"""The service instance state machine: which transitions are allowed, and that every change is reported."""

from __future__ import annotations

import pytest
from statemachine.exceptions import TransitionNotAllowed

from golem_api.events import EventBus, ServiceStateChanged
from golem_api.services.service import Service
from golem_api.services.state import AVAILABLE_STATES, ServiceState


def _machine() -> tuple[ServiceState, list[tuple[str, str, str | None]]]:
    changes: list[tuple[str, str, str | None]] = []
    return ServiceState(on_change=lambda old, new, reason: changes.append((old, new, reason))), changes


def _walk(machine: ServiceState, *transitions: str) -> None:
    for transition in transitions:
        machine.send(transition)


def test_a_new_machine_is_pending() -> None:
    machine, changes = _machine()
    assert machine.state == ServiceState.pending
    assert machine.state.id == "pending"
    assert changes == []


def test_the_normal_lifecycle_reports_every_change_with_its_reason() -> None:
    machine, changes = _machine()
    machine.send("start", reason="agreement with 'p1'")
    machine.send("ready")
    machine.send("stop", reason="the cluster was stopped")
    machine.send("terminate", reason="done")
    assert changes == [
        ("pending", "starting", "agreement with 'p1'"),
        ("starting", "running", None),
        ("running", "stopping", "the cluster was stopped"),
        ("stopping", "terminated", "done"),
    ]
    assert machine.state == ServiceState.terminated


@pytest.mark.parametrize(
    ("path", "end"),
    [
        (("terminate",), "terminated"),  # a cluster stopped before the instance got an agreement
        (("start", "terminate"), "terminated"),
        (("start", "stop"), "stopping"),  # stopped while deploying: shutdown still runs
        (("start", "ready", "terminate"), "terminated"),
        (("start", "mark_unresponsive"), "unresponsive"),
        (("start", "ready", "mark_unresponsive"), "unresponsive"),
        (("start", "ready", "stop", "mark_unresponsive"), "unresponsive"),
        (("start", "restart"), "pending"),  # respawn after a failed start
        (("start", "mark_unresponsive", "restart", "start"), "starting"),
    ],
)
def test_allowed_transitions(path: tuple[str, ...], end: str) -> None:
    machine, changes = _machine()
    _walk(machine, *path)
    assert machine.state.id == end
    assert len(changes) == len(path)


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ((), "ready"),
        ((), "stop"),
        ((), "mark_unresponsive"),
        ((), "restart"),
        (("start", "ready"), "start"),
        (("start", "ready"), "restart"),  # a running instance is never respawned
        (("start", "ready", "stop"), "ready"),
        (("start", "ready", "stop", "terminate"), "start"),  # terminated is final
        (("start", "ready", "stop", "terminate"), "mark_unresponsive"),
        (("start", "ready", "stop", "terminate"), "restart"),
        (("start", "mark_unresponsive"), "ready"),
        (("start", "mark_unresponsive"), "terminate"),
    ],
)
def test_refused_transitions_leave_the_state_alone(path: tuple[str, ...], refused: str) -> None:
    machine, changes = _machine()
    _walk(machine, *path)
    before = machine.state
    with pytest.raises(TransitionNotAllowed):
        machine.send(refused)
    assert machine.state == before
    assert len(changes) == len(path)


def test_terminated_is_the_only_final_state() -> None:
    assert [state.id for state in ServiceState.final_states] == ["terminated"]
    assert {"starting", "running", "stopping"} == AVAILABLE_STATES


class _Echo(Service):
    def __init__(self, *, instance_name: str) -> None:
        self.name = instance_name


def test_an_instance_reports_its_changes_on_the_bus_and_shows_its_state() -> None:
    bus = EventBus()
    seen: list[ServiceStateChanged] = []
    bus.subscribe(seen.append, ServiceStateChanged)  # type: ignore[arg-type]
    instance = _Echo(instance_name="echo-1")
    assert instance.state == ServiceState.pending  # before it belongs to a cluster
    instance._attach(name="ignored, the instance named itself", bus=bus)
    instance._change("start", reason="agreement")
    assert instance.is_available
    instance._change("ready")
    assert instance.state == ServiceState.running
    assert instance.state == "running"
    instance._change("stop")
    instance._change("terminate")
    assert not instance.is_available
    assert [(e.instance, e.old, e.new) for e in seen] == [
        ("echo-1", "pending", "starting"),
        ("echo-1", "starting", "running"),
        ("echo-1", "running", "stopping"),
        ("echo-1", "stopping", "terminated"),
    ]
    assert seen[0].reason == "agreement"
    assert seen[0].service == "_Echo"
    assert repr(instance) == "<_Echo 'echo-1' terminated>"
    assert instance.exc_info == (None, None, None)
