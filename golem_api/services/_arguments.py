"""The arguments of ``Golem.run_service``, checked before anything is sent, with yapapi's rules.

* each dict of ``instance_params`` becomes one instance, ``ServiceClass(**params)``;
* ``num_instances`` takes precedence: that many instances, parameters taken from ``instance_params`` in order
  (``ValueError`` "instance_params iterable depleted after N spawned instances" when it runs out);
* omitting both spawns one instance without parameters;
* every handler must be an asynchronous generator (``TypeError`` otherwise);
* the payload is ``payload=`` when given, else ``await ServiceClass.get_payload()``;
* ``network_addresses`` (with ``network=``) gives the first instances their VPN addresses, in order; the others
  get the next free ones. Each must be inside the network and free (``NetworkAddressError`` otherwise).

Other bad values raise :class:`~golem_api.errors.ConfigurationError` (a ``ValueError``) naming the argument.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from golem_api.errors import ConfigurationError, NetworkAddressError
from golem_api.payload import Payload
from golem_api.services.service import Service, check_handlers

if TYPE_CHECKING:
    from golem_api.network.network import Network

__all__ = ["MAX_INSTANCES", "check_network_addresses", "check_service_class", "plan_instances", "resolve_payload"]

_log = logging.getLogger(__name__)

_DEPLETED = object()

MAX_INSTANCES = 1000
"""Most instances one ``run_service``/``spawn_instances`` call makes when ``num_instances`` is not given."""


def check_service_class(service_class: object) -> type[Service]:
    """``service_class`` itself, when it is a :class:`Service` subclass whose handlers are async generators."""
    if not (isinstance(service_class, type) and issubclass(service_class, Service)):
        raise ConfigurationError(
            f"service_class must be a subclass of golem_api.services.service.Service, got {service_class!r}"
        )
    check_handlers(service_class)
    return service_class


def _params(index: int, params: object, service_class: type[Service]) -> dict[str, Any]:
    if not isinstance(params, Mapping) or not all(isinstance(key, str) for key in params):
        raise ConfigurationError(
            f"instance_params[{index}] must be a dict of keyword arguments for {service_class.__name__}(), "
            f"got {params!r}"
        )
    try:
        signature = inspect.signature(service_class)
    except ValueError:  # no signature to check against: the constructor will say
        return dict(params)
    try:
        signature.bind(**params)
    except TypeError as exc:
        raise ConfigurationError(
            f"instance_params[{index}] = {dict(params)!r} does not fit {service_class.__name__}{signature}: {exc}"
        ) from None
    return dict(params)


def plan_instances(
    service_class: type[Service],
    num_instances: int | None = None,
    instance_params: Iterable[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The constructor keywords of each instance to spawn, in order."""
    if num_instances is not None and (
        isinstance(num_instances, bool) or not isinstance(num_instances, int) or num_instances < 0
    ):
        raise ConfigurationError(
            f"num_instances must be a whole number of instances (0 or more), got {num_instances!r}"
        )
    if instance_params is None:
        return [{} for _ in range(1 if num_instances is None else num_instances)]
    if isinstance(instance_params, Mapping | str | bytes):
        raise ConfigurationError(
            f"instance_params must be an iterable of dicts, one per instance, got {instance_params!r}; "
            "for one instance write instance_params=[{...}]"
        )
    try:
        source = iter(instance_params)
    except TypeError:
        raise ConfigurationError(
            f"instance_params must be an iterable of dicts, one per instance, got {instance_params!r}"
        ) from None
    if num_instances is None:
        taken = list(itertools.islice(source, MAX_INSTANCES + 1))
        if len(taken) > MAX_INSTANCES:
            raise ConfigurationError(
                f"instance_params yields more than {MAX_INSTANCES} parameter sets; pass num_instances= to take "
                "only the first ones"
            )
        return [_params(i, params, service_class) for i, params in enumerate(taken)]
    planned: list[dict[str, Any]] = []
    for i in range(num_instances):
        params = next(source, _DEPLETED)
        if params is _DEPLETED:
            raise ValueError(f"instance_params iterable depleted after {i} spawned instances")
        planned.append(_params(i, params, service_class))
    return planned


async def resolve_payload(service_class: type[Service], payload: object = None) -> Payload:
    """``payload`` when given, else what ``service_class.get_payload()`` returns; it must be a :class:`Payload`."""
    if payload is None:
        payload = await service_class.get_payload()
        if payload is None:
            raise ConfigurationError(
                f"{service_class.__name__}.get_payload() returned None and no payload= was given: define "
                "`@staticmethod async def get_payload()` returning e.g. VmPayload(...), or pass payload="
            )
        where = f"{service_class.__name__}.get_payload()"
    else:
        where = "payload"
    if not isinstance(payload, Payload):
        raise ConfigurationError(
            f"{where} must have demand_properties() and demand_constraints() (e.g. VmPayload), got {payload!r}"
        )
    return payload


def check_network_addresses(
    network: Network | None, addresses: Sequence[str] | None, instances: int
) -> list[str | None]:
    """The VPN address of each of ``instances`` new instances (``None``: the next free one when it starts)."""
    if addresses is None:
        return []
    if network is None:
        raise ConfigurationError(
            f"network_addresses={addresses!r} was given without a network: pass network=await golem.create_network(…)"
        )
    if isinstance(addresses, str) or not isinstance(addresses, Sequence):
        raise ConfigurationError(
            f"network_addresses must be a list of addresses, one per instance, got {addresses!r}; "
            "for one instance write network_addresses=['192.168.0.2']"
        )
    if len(addresses) > instances:
        _log.warning(
            "network_addresses has %d addresses for %d instance(s); the last %d are not used",
            len(addresses),
            instances,
            len(addresses) - instances,
        )
    chosen = list(addresses[:instances])
    for index, address in enumerate(chosen):
        network.check_free_address(address, f"network_addresses[{index}]")
        if chosen.index(address) != index:
            raise NetworkAddressError(
                f"network_addresses[{index}] {address!r} is also network_addresses[{chosen.index(address)}]; "
                "give each instance its own address",
                network_id=network.network_id,
            )
    return [*chosen, *([None] * (instances - len(chosen)))]
