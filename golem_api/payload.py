"""Payloads: what a demand asks a provider to run, as market properties and constraints."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from attrs import field, frozen

from golem_api.errors import ConfigurationError

__all__ = ["CustomPayload", "Payload", "VmPayload"]


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


@frozen(kw_only=True)
class VmPayload:
    """A payload for the ``vm`` runtime with minimum resources.

    ``task_package`` is the ``hash:sha3:<hex>:<url>`` of the image, when there is one.
    """

    min_mem_gib: float = field(default=0.5, validator=_positive)
    min_storage_gib: float = field(default=2.0, validator=_positive)
    min_cpu_threads: int = field(default=1, validator=_positive)
    runtime: str = "vm"
    task_package: str | None = None

    def demand_properties(self) -> dict[str, Any]:
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
        ]
