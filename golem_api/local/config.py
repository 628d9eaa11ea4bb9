"""The shape of an embedded local Golem network: its providers, the requestor's funds, the payment platform.

Everything here is a frozen value checked when it is built, so that a bad setting fails with
:class:`~golem_api.errors.ConfigurationError` naming the value before any node starts::

    config = LocalNetworkConfig.with_providers(5, cpu_threads=4)
    async with LocalNode(config) as node: ...
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from attrs import evolve, field, fields, frozen

from golem_api.errors import ConfigurationError
from golem_api.market.pricing import CPU_SEC, DURATION_SEC, LinearPricing

__all__ = ["LocalNetworkConfig", "ProviderSpec"]


def _to_decimal(value: object) -> Decimal:
    """Money as ``Decimal``: ints, strings and ``Decimal`` as given; floats through ``str`` (no binary noise)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigurationError(f"{value!r} is not an amount: give a Decimal, an int or a decimal string")
    try:
        return Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ConfigurationError(f"{value!r} is not an amount: give a Decimal, an int or a decimal string") from exc


def _non_empty(_instance: object, attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{attribute.name} must be a non-empty string, not {value!r}")


def _positive(_instance: object, attribute: Any, value: float | int | Decimal) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or not value > 0:
        raise ConfigurationError(f"{attribute.name} must be a positive number, not {value!r}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ConfigurationError(f"{attribute.name} must be a finite number, not {value!r}")


def _positive_int(instance: object, attribute: Any, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError(f"{attribute.name} must be a whole number, not {value!r}")
    _positive(instance, attribute, value)


def _price(_instance: object, attribute: Any, value: Decimal) -> None:
    if not value.is_finite() or value < 0:
        raise ConfigurationError(f"{attribute.name} must be a price of zero or more, not {value!r}")


@frozen
class ProviderSpec:
    """One local provider: its resources, its prices (per second of each counter, in GLM) and its payment terms.

    ``overcharge`` is not announced: the offer states the honest prices, and the provider multiplies what it
    bills by ``overcharge`` (1 = honest), so that a requestor's checks of debit notes can be exercised.
    """

    name: str = field(validator=_non_empty)
    cpu_threads: int = field(default=2, validator=_positive_int)
    mem_gib: float = field(default=4.0, validator=_positive)
    storage_gib: float = field(default=20.0, validator=_positive)
    price_duration_sec: Decimal = field(default=Decimal("0.0001"), converter=_to_decimal, validator=_price)
    price_cpu_sec: Decimal = field(default=Decimal("0.0002"), converter=_to_decimal, validator=_price)
    start_price: Decimal = field(default=Decimal("0.001"), converter=_to_decimal, validator=_price)
    debit_note_interval_sec: int = field(default=5, validator=_positive_int)
    payment_timeout_sec: int = field(default=120, validator=_positive_int)
    runtime: str = field(default="vm", validator=_non_empty)
    subnet: str = field(default="public", validator=_non_empty)
    overcharge: Decimal = field(default=Decimal(1), converter=_to_decimal, validator=_positive)

    @property
    def pricing(self) -> LinearPricing:
        """The linear price model this provider announces: duration, then CPU time, then the start price."""
        return LinearPricing(
            usage_vector=(DURATION_SEC, CPU_SEC),
            coeffs=(self.price_duration_sec, self.price_cpu_sec),
            start_price=self.start_price,
        )


def _default_spec(index: int, **overrides: Any) -> ProviderSpec:
    """Provider ``index`` (1-based) of a default network: each a tenth dearer than the one before."""
    factor = 1 + Decimal(index - 1) / 10
    base = ProviderSpec(name=f"local-provider-{index}")
    values: dict[str, Any] = {
        "price_duration_sec": base.price_duration_sec * factor,
        "price_cpu_sec": base.price_cpu_sec * factor,
        "start_price": base.start_price * factor,
    }
    values.update(overrides)
    if "name" in overrides:
        values["name"] = f"{overrides['name']}-{index}"
    return evolve(base, **values)


def _default_providers() -> tuple[ProviderSpec, ...]:
    return tuple(_default_spec(i) for i in (1, 2, 3))


def _to_providers(value: Any) -> tuple[ProviderSpec, ...]:
    providers = tuple(value)
    for spec in providers:
        if not isinstance(spec, ProviderSpec):
            raise ConfigurationError(f"providers must be ProviderSpec values, not {spec!r}")
    return providers


@frozen
class LocalNetworkConfig:
    """The embedded network: its providers, what the requestor holds, and where payments are made.

    ``subnet`` is the subnet tag requestors should use (the CLI prints it); each provider announces its own
    ``ProviderSpec.subnet``, so a provider on another subnet is only found by demands for that subnet.
    """

    providers: tuple[ProviderSpec, ...] = field(factory=_default_providers, converter=_to_providers)
    requestor_balance: Decimal = field(default=Decimal(1000), converter=_to_decimal, validator=_price)
    payment_platform: str = field(default="erc20-holesky-tglm", validator=_non_empty)
    subnet: str = field(default="public", validator=_non_empty)

    @providers.validator
    def _check_providers(self, _attribute: Any, providers: tuple[ProviderSpec, ...]) -> None:
        seen: set[str] = set()
        for spec in providers:
            if spec.name in seen:
                raise ConfigurationError(f"provider names must be unique; {spec.name!r} is given twice")
            seen.add(spec.name)

    @payment_platform.validator
    def _check_platform(self, _attribute: Any, platform: str) -> None:
        if len(platform.split("-")) != 3 or not all(platform.split("-")):
            raise ConfigurationError(
                f"payment_platform {platform!r} is not of the form driver-network-token, e.g. 'erc20-holesky-tglm'"
            )

    @classmethod
    def with_providers(cls, count: int, **spec_overrides: Any) -> LocalNetworkConfig:
        """A network of ``count`` default providers, each built with ``spec_overrides`` (a ``name`` becomes a prefix).

        ``subnet`` among the overrides is also the network's subnet.
        """
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ConfigurationError(f"count must be a whole number of providers (0 or more), not {count!r}")
        known = {a.name for a in fields(ProviderSpec)}
        unknown = sorted(set(spec_overrides) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown provider setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        providers = tuple(_default_spec(i, **spec_overrides) for i in range(1, count + 1))
        if "subnet" in spec_overrides:
            return cls(providers=providers, subnet=spec_overrides["subnet"])
        return cls(providers=providers)
