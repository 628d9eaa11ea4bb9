"""Payloads: what a demand asks a provider to run, as market properties and constraints."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from attrs import evolve, field, frozen

from golem_api.errors import ConfigurationError

__all__ = ["CustomPayload", "Payload", "VmPayload", "with_capabilities"]


@runtime_checkable
class Payload(Protocol):
    """Anything that can say which properties a demand announces and which constraints offers must meet."""

    def demand_properties(self) -> dict[str, Any]:
        """Flat properties added to the demand."""
        ...

    def demand_constraints(self) -> list[str]:
        """Constraint filters an offer must satisfy, each a complete ``(…)`` expression."""
        ...


@frozen
class CustomPayload:
    """A payload given directly as properties and constraints."""

    properties: dict[str, Any] = field(factory=dict)
    constraints: tuple[str, ...] = ()

    def demand_properties(self) -> dict[str, Any]:
        return dict(self.properties)

    def demand_constraints(self) -> list[str]:
        return list(self.constraints)


def _positive(_instance: object, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ConfigurationError(f"{attribute.name} must be greater than 0, got {value!r}")


def _capabilities(values: Any) -> tuple[str, ...]:
    if isinstance(values, str):
        return (values,)
    return tuple(str(value) for value in values or ())


@frozen(kw_only=True)
class VmPayload:
    """A payload for the ``vm`` runtime with minimum resources, and the image to run.

    ``task_package`` is the ``hash:sha3:<hex>:<url>`` of the image, when there is one. A payload made by
    :func:`golem_api.vm.repo` names its image by ``image_hash``, ``image_tag`` or ``image_url`` instead, and
    ``Golem`` resolves that into the task package when it creates the demand (against the local node's
    registry on the local network, else ``repo_url`` or the public Golem registry; see
    :mod:`golem_api._images`). ``capabilities`` (e.g. ``vpn``) must all be offered by the runtime.
    """

    min_mem_gib: float = field(default=0.5, validator=_positive)
    min_storage_gib: float = field(default=2.0, validator=_positive)
    min_cpu_threads: int = field(default=1, validator=_positive)
    runtime: str = "vm"
    task_package: str | None = None
    image_hash: str | None = None
    image_tag: str | None = None
    image_url: str | None = None
    image_use_https: bool = False
    repo_url: str | None = None
    capabilities: tuple[str, ...] = field(default=(), converter=_capabilities)

    @property
    def needs_resolving(self) -> bool:
        """Whether the payload names an image that is not yet resolved into a ``task_package``."""
        return self.task_package is None and any((self.image_hash, self.image_tag, self.image_url))

    def demand_properties(self) -> dict[str, Any]:
        if self.needs_resolving:
            what = f"tag {self.image_tag!r}" if self.image_tag else f"hash {self.image_hash or self.image_url!r}"
            raise ConfigurationError(
                f"the image ({what}) of this VmPayload is not resolved yet: Golem.create_demand and run_service "
                "resolve it; elsewhere, await golem_api._images.resolve_image(payload) first"
            )
        if self.task_package is None:
            return {}
        return {
            "golem.srv.comp.task_package": self.task_package,
            "golem.srv.comp.vm.package_format": "gvmkit-squash",
        }

    def demand_constraints(self) -> list[str]:
        return [
            f"(golem.inf.mem.gib>={self.min_mem_gib})",
            f"(golem.inf.storage.gib>={self.min_storage_gib})",
            f"(golem.inf.cpu.threads>={self.min_cpu_threads})",
            f"(golem.runtime.name={self.runtime})",
            *(f"(golem.runtime.capabilities={capability})" for capability in self.capabilities),
        ]


@frozen
class _WithCapabilities:
    """Another payload, whose offers must also list ``capabilities`` in ``golem.runtime.capabilities``."""

    payload: Payload
    capabilities: tuple[str, ...]

    def demand_properties(self) -> dict[str, Any]:
        return self.payload.demand_properties()

    def demand_constraints(self) -> list[str]:
        return [
            *self.payload.demand_constraints(),
            *(f"(golem.runtime.capabilities={capability})" for capability in self.capabilities),
        ]


def with_capabilities(payload: Payload, *capabilities: str) -> Payload:
    """``payload`` asking also for ``capabilities`` (e.g. ``vpn``) of the runtime, unless it already does."""
    if isinstance(payload, VmPayload):
        missing = tuple(c for c in capabilities if c not in payload.capabilities)
        return evolve(payload, capabilities=(*payload.capabilities, *missing)) if missing else payload
    present = " ".join(payload.demand_constraints())
    missing = tuple(c for c in capabilities if f"(golem.runtime.capabilities={c})" not in present)
    return _WithCapabilities(payload, missing) if missing else payload
