"""``run_service``'s argument rules (yapapi's), checked without a node: instance parameters, handlers, payload."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from golem_api.errors import ConfigurationError, GolemError
from golem_api.payload import Payload, VmPayload
from golem_api.services._arguments import check_service_class, plan_instances, resolve_payload
from golem_api.services.service import Handler, Service


class Plain(Service):
    """No constructor of its own: takes no parameters."""


class Named(Service):
    def __init__(self, *, instance_name: str, show_usage: bool = False) -> None:
        self.name = instance_name
        self.show_usage = show_usage


class WithPayload(Service):
    @staticmethod
    async def get_payload() -> Payload:
        return VmPayload(min_mem_gib=1.0)


def _params(count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield {"instance_name": f"n-{i}"}


def test_omitting_both_spawns_one_instance_without_parameters() -> None:
    assert plan_instances(Plain) == [{}]


def test_num_instances_alone_spawns_that_many() -> None:
    assert plan_instances(Plain, num_instances=3) == [{}, {}, {}]
    assert plan_instances(Plain, num_instances=0) == []


def test_each_dict_of_instance_params_becomes_one_instance() -> None:
    params: list[dict[str, Any]] = [{"instance_name": "a"}, {"instance_name": "b", "show_usage": True}]
    assert plan_instances(Named, instance_params=params) == params


def test_num_instances_takes_precedence_over_a_longer_iterable() -> None:
    assert plan_instances(Named, num_instances=2, instance_params=_params(5)) == [
        {"instance_name": "n-0"},
        {"instance_name": "n-1"},
    ]


def test_a_short_iterable_raises_value_error_saying_how_many_were_spawned() -> None:
    with pytest.raises(ValueError, match="instance_params iterable depleted after 2 spawned instances"):
        plan_instances(Named, num_instances=3, instance_params=_params(2))


def test_an_endless_generator_needs_num_instances() -> None:
    def endless() -> Iterator[dict[str, Any]]:
        while True:
            yield {"instance_name": "x"}

    with pytest.raises(ConfigurationError, match="pass num_instances="):
        plan_instances(Named, instance_params=endless())
    assert len(plan_instances(Named, num_instances=4, instance_params=endless())) == 4


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_a_bad_num_instances_is_named(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="num_instances"):
        plan_instances(Plain, num_instances=bad)


def test_a_single_dict_instead_of_a_list_is_explained() -> None:
    with pytest.raises(ConfigurationError, match=r"instance_params=\[\{\.\.\.\}\]"):
        plan_instances(Named, instance_params={"instance_name": "a"})  # type: ignore[dict-item]


def test_parameters_that_do_not_fit_the_constructor_are_named_with_their_index() -> None:
    with pytest.raises(ConfigurationError, match=r"instance_params\[1\].*'colour'"):
        plan_instances(Named, instance_params=[{"instance_name": "a"}, {"instance_name": "b", "colour": "red"}])
    with pytest.raises(ConfigurationError, match=r"instance_params\[0\]"):
        plan_instances(Plain, instance_params=[{"anything": 1}])
    with pytest.raises(ConfigurationError, match=r"instance_params\[0\] must be a dict"):
        plan_instances(Plain, instance_params=["not a dict"])  # type: ignore[list-item]


def test_configuration_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="num_instances"):
        plan_instances(Plain, num_instances=-3)


def test_handlers_that_are_not_async_generators_raise_type_error() -> None:
    class NotAGenerator(Service):
        async def run(self) -> None:  # type: ignore[override]
            return None

    class PlainFunction(Service):
        def start(self) -> list[int]:  # type: ignore[override]
            return []

    with pytest.raises(TypeError, match=r"NotAGenerator\.run must be an asynchronous generator"):
        check_service_class(NotAGenerator)
    with pytest.raises(TypeError, match=r"PlainFunction\.start must be an asynchronous generator"):
        check_service_class(PlainFunction)


def test_only_service_subclasses_are_accepted() -> None:
    with pytest.raises(ConfigurationError, match="subclass of"):
        check_service_class(object)
    assert check_service_class(Named) is Named


def test_async_generator_handlers_pass() -> None:
    class Custom(Service):
        async def run(self) -> Handler:
            yield self.ctx.new_script()

    assert check_service_class(Custom) is Custom


async def test_the_payload_comes_from_the_argument_or_from_get_payload() -> None:
    given = VmPayload(min_mem_gib=2.0)
    assert await resolve_payload(WithPayload, given) is given
    assert await resolve_payload(WithPayload) == VmPayload(min_mem_gib=1.0)
    with pytest.raises(ConfigurationError, match=r"Plain\.get_payload\(\) returned None"):
        await resolve_payload(Plain)
    with pytest.raises(ConfigurationError, match="payload must have demand_properties"):
        await resolve_payload(Plain, "vm")


def test_ctx_outside_an_activity_says_why() -> None:
    with pytest.raises(GolemError, match="has no activity"):
        _ = Named(instance_name="lonely").ctx
