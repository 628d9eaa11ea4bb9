"""The shape of an embedded local Golem network: its providers, the requestor's funds, the payment platform.

Everything here is a frozen value checked when it is built, so that a bad setting fails with
:class:`~golem_api.errors.ConfigurationError` naming the value before any node starts::

    config = LocalNetworkConfig.with_providers(5, cpu_threads=4)
    async with LocalNode(config) as node: ...
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from attrs import evolve, field, fields, frozen

from golem_local.runtime.base import DEFAULT_STOP_GRACE
from golem_local.runtime.image import Image
from golem_local.runtime.registry import RuntimeDescriptor
from golem_shared.errors import ConfigurationError
from golem_shared.pricing import CPU_SEC, DURATION_SEC, LinearPricing

__all__ = [
    "DEFAULT_DEBIT_NOTE_INTERVAL_SEC",
    "DEFAULT_STOP_GRACE",
    "MAX_STOP_GRACE",
    "LocalNetworkConfig",
    "ProviderSpec",
]

MAX_STOP_GRACE = 300.0
"""The longest ``ProviderSpec.stop_grace`` taken, in seconds."""

DEFAULT_DEBIT_NOTE_INTERVAL_SEC = 120
"""Seconds between two debit notes of an activity that a provider offers by default: yagna's provider offers
2 minutes (``ya-provider``'s ``--debit-note-interval``, and the interval it bills at when the agreement names
none) and takes any interval a requestor proposes within its bounds. A thousand providers billing every five
seconds would send two hundred debit notes a second, which no real network of a thousand does by default."""


def _to_decimal(value: Any) -> Any:
    """Money as ``Decimal``: ints, decimal strings and ``Decimal`` as given, floats through ``str`` (no binary
    noise). Anything else is left as it is, for the field's validator to refuse by name."""
    if isinstance(value, (Decimal, bool)) or not isinstance(value, (int, float, str)):
        return value
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        return value


def _check_amount(attribute: Any, value: object) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ConfigurationError(
            f"{attribute.name} must be an amount (a Decimal, an int or a decimal string), not {value!r}"
        )
    return value


def _non_empty(_instance: object, attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{attribute.name} must be a non-empty string, not {value!r}")


def _positive(_instance: object, attribute: Any, value: float | int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigurationError(f"{attribute.name} must be a positive number, not {value!r}")


def _positive_amount(_instance: object, attribute: Any, value: Decimal) -> None:
    if not _check_amount(attribute, value) > 0:
        raise ConfigurationError(f"{attribute.name} must be more than zero, not {value}")


def _positive_int(instance: object, attribute: Any, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError(f"{attribute.name} must be a whole number, not {value!r}")
    _positive(instance, attribute, value)


def _to_env(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _env(_instance: object, attribute: Any, value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigurationError(f"{attribute.name} must map variable names to string values, not {value!r}")


def _to_images(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return {key.strip().lower() if isinstance(key, str) else key: image for key, image in value.items()}


def _images(_instance: object, attribute: Any, value: Any) -> None:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{attribute.name} must map image hashes to Image values, not {value!r}")
    for key, image in value.items():
        if not isinstance(key, str) or not key or not all(c in "0123456789abcdef" for c in key):
            raise ConfigurationError(f"{attribute.name}: {key!r} is not an image hash (the sha3 hex digest)")
        if not isinstance(image, Image):
            raise ConfigurationError(f"{attribute.name}[{key!r}] must be an Image, not {image!r}")


def _to_path(value: Any) -> Any:
    return Path(value).expanduser() if isinstance(value, str) else value


def _to_dirs(value: Any) -> Any:
    if isinstance(value, (str, Path)):
        value = (value,)
    try:
        return tuple(_to_path(item) for item in value)
    except TypeError:
        return value


def _dirs(_instance: object, attribute: Any, value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(item, Path) for item in value):
        raise ConfigurationError(f"{attribute.name} must be directory paths (a path or a list of them), not {value!r}")


def _registry(_instance: object, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, Path):
        raise ConfigurationError(f"{attribute.name} must be a directory path (or None for the default), not {value!r}")


def _stop_grace(_instance: object, attribute: Any, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_STOP_GRACE:
        raise ConfigurationError(
            f"{attribute.name} must be seconds from 0 to {MAX_STOP_GRACE:g} (how long an activity's processes have "
            f"between SIGTERM and SIGKILL when it ends; default {DEFAULT_STOP_GRACE:g}), not {value!r}"
        )


def _price(_instance: object, attribute: Any, value: Decimal) -> None:
    if _check_amount(attribute, value) < 0:
        raise ConfigurationError(f"{attribute.name} must be an amount of zero or more, not {value}")


def _to_counter_prices(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return {name: _to_decimal(price) for name, price in value.items()}


def _counter_prices(_instance: object, attribute: Any, value: Any) -> None:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{attribute.name} must map usage counter names to prices, not {value!r}")
    for name, price in value.items():
        if not isinstance(name, str) or not name.startswith("golem.usage."):
            raise ConfigurationError(
                f"{attribute.name}: a usage counter's name starts with 'golem.usage.', not {name!r}"
            )
        if name in (DURATION_SEC, CPU_SEC):
            raise ConfigurationError(
                f"{attribute.name}: {name} is priced by price_duration_sec / price_cpu_sec; leave it out here"
            )
        if not isinstance(price, Decimal) or not price.is_finite() or price < 0:
            raise ConfigurationError(f"{attribute.name}[{name!r}] must be an amount of zero or more, not {price!r}")


@frozen
class ProviderSpec:
    """One local provider: its resources, its prices (per second of each counter, in GLM) and its payment terms.

    ``overcharge`` is not announced: the offer states the honest prices, and the provider multiplies what it
    bills by ``overcharge`` (1 = honest), so that a requestor's checks of debit notes can be exercised.
    The payment terms are announced and enforced as a real provider does: a debit note every
    ``debit_note_interval_sec`` (:data:`DEFAULT_DEBIT_NOTE_INTERVAL_SEC`, yagna's provider default, unless the
    requestor proposes another); each must be accepted within ``debit_note_accept_timeout_sec``
    (``golem.com.payment.debit-notes.accept-timeout?``) and paid within ``payment_timeout_sec``
    (``golem.com.scheme.payu.payment-timeout-sec?``), or the provider terminates the agreement and offers again.
    ``env`` is added to the environment of every command run in this provider's sandboxes. ``cpu_threads``,
    ``mem_gib`` and ``storage_gib`` are what the offer announces and, as far as the machine allows, what each
    activity is limited to (see the local network's documentation); ``max_processes`` caps the processes and
    threads an activity runs at once. ``runtime`` names what runs the activities (``vm``, ``idle``,
    ``test-counters`` or a runtime of one's own: ``docs/runtimes.md``); ``counter_prices`` prices the usage
    counters that runtime reports beyond duration and CPU (name -> GLM per unit; a counter left out costs what
    the runtime's descriptor says). ``stop_grace`` is how many seconds the processes of an ending activity
    get between SIGTERM and SIGKILL (:data:`DEFAULT_STOP_GRACE`, as the daemon's exe-unit); a runtime's
    ``stop`` that overruns it by more than the exe-unit's reap bound is abandoned (``docs/runtimes.md``).
    """

    name: str = field(validator=_non_empty)
    cpu_threads: int = field(default=2, validator=_positive_int)
    mem_gib: float = field(default=4.0, validator=_positive)
    storage_gib: float = field(default=20.0, validator=_positive)
    price_duration_sec: Decimal = field(default=Decimal("0.0001"), converter=_to_decimal, validator=_price)
    price_cpu_sec: Decimal = field(default=Decimal("0.0002"), converter=_to_decimal, validator=_price)
    start_price: Decimal = field(default=Decimal("0.001"), converter=_to_decimal, validator=_price)
    debit_note_interval_sec: int = field(default=DEFAULT_DEBIT_NOTE_INTERVAL_SEC, validator=_positive_int)
    payment_timeout_sec: int = field(default=120, validator=_positive_int)
    debit_note_accept_timeout_sec: int = field(default=240, validator=_positive_int)
    runtime: str = field(default="vm", validator=_non_empty)
    subnet: str = field(default="public", validator=_non_empty)
    overcharge: Decimal = field(default=Decimal(1), converter=_to_decimal, validator=_positive_amount)
    env: Mapping[str, str] = field(factory=dict, converter=_to_env, validator=_env, hash=False)
    max_processes: int = field(default=1024, validator=_positive_int)
    counter_prices: Mapping[str, Decimal] = field(
        factory=dict, converter=_to_counter_prices, validator=_counter_prices, hash=False
    )
    stop_grace: float = field(default=DEFAULT_STOP_GRACE, validator=_stop_grace)

    @property
    def pricing(self) -> LinearPricing:
        """The linear price model of this spec alone: duration, CPU time, then each of ``counter_prices``."""
        return self.pricing_for({})

    def pricing_for(self, runtime_counters: Mapping[str, Decimal]) -> LinearPricing:
        """The linear price model the provider announces when its runtime reports ``runtime_counters`` (name ->
        the runtime's default price): duration, CPU time, then each counter of the runtime, priced by
        ``counter_prices`` when it names it, then any other counter of ``counter_prices``."""
        names = [*runtime_counters, *(name for name in self.counter_prices if name not in runtime_counters)]
        prices = [self.counter_prices.get(name, runtime_counters.get(name, Decimal(0))) for name in names]
        return LinearPricing(
            usage_vector=(DURATION_SEC, CPU_SEC, *names),
            coeffs=(self.price_duration_sec, self.price_cpu_sec, *prices),
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


def _to_runtimes(value: Any) -> tuple[RuntimeDescriptor, ...]:
    runtimes = tuple(value.values()) if isinstance(value, Mapping) else tuple(value)
    seen: set[str] = set()
    for runtime in runtimes:
        if not isinstance(runtime, RuntimeDescriptor):
            raise ConfigurationError(
                f"runtimes must be RuntimeDescriptor values (golem_local.runtime.registry), not {runtime!r}"
            )
        if runtime.name in seen:
            raise ConfigurationError(f"runtime names must be unique; {runtime.name!r} is given twice")
        seen.add(runtime.name)
    if isinstance(value, Mapping):
        for key, runtime in value.items():
            if key != runtime.name:
                raise ConfigurationError(f"runtimes[{key!r}] describes runtime {runtime.name!r}: use its name as key")
    return runtimes


@frozen
class LocalNetworkConfig:
    """The embedded network: its providers, what the requestor holds, and where payments are made.

    ``subnet`` is the subnet tag requestors should use (the CLI prints it); each provider announces its own
    ``ProviderSpec.subnet``, so a provider on another subnet is only found by demands for that subnet.

    A demand's ``golem.srv.comp.task_package`` (``hash:sha3:<hash>:<url>``) names the image its activities
    run: the providers download ``<url>`` at the first ``deploy``, check its hash, unpack it and keep it for
    the node's life (:class:`~golem_local.images.cache.ImageCache`). ``images`` maps image hashes to an
    :class:`~golem_local.runtime.image.Image` to run instead, without a download; a demand without a task
    package gets the default image. ``image_registry`` is the directory of the image registry the node serves
    at ``/v1/image/…`` (where ``vm.repo`` finds images on the local network; default
    :func:`~golem_local.images.registry.default_registry_dir`, where ``golem-api image build`` puts them).
    ``bwrap`` is the bubblewrap program the sandboxes use (a name on ``PATH`` or a path).
    ``sse_ping_interval`` is how many seconds of silence make an activity's event stream send a ``:ping``
    comment (the daemon's 15 s). ``activity_runtime`` is what runs activities: ``"vm"`` (a bubblewrap
    sandbox each) or ``"idle"`` (nothing is spawned; every command exits 0 with no output), for measuring the
    requestor at scale (``bench/``). ``vpn`` lets the ``vm`` sandboxes join the requestor's VPNs where the
    machine allows it (root: see ``docs/local-network.md``); the providers then offer the ``vpn`` capability.
    ``False`` keeps every sandbox off any network (the net API still answers). ``output_limit`` is how many
    bytes of each output of a command the node keeps for its result (its first sixteenth and its end, with a
    note of what was left out) and for event streams that connect late; streamed output beyond it reaches
    whoever listens as it is written. ``runtimes`` adds runtimes of the program's own
    (:class:`~golem_local.runtime.registry.RuntimeDescriptor` values, or a mapping of their names to them) to the
    built-in ones and those installed packages announce; a provider runs the one its ``ProviderSpec.runtime``
    names (``docs/runtimes.md``). ``runtime_dirs`` are directories of runtime descriptor files (JSON, as a
    provider's plugins directory holds) naming runtime programs run in the runtime SDK's Command mode
    (:mod:`golem_local.runtime.program`), read at node start with those of ``$GOLEM_LOCAL_RUNTIMES_DIR``.
    ``activity_runtime="idle"`` overrides every provider's runtime.
    """

    providers: tuple[ProviderSpec, ...] = field(factory=_default_providers, converter=_to_providers)
    requestor_balance: Decimal = field(default=Decimal(1000), converter=_to_decimal, validator=_price)
    payment_platform: str = field(default="erc20-holesky-tglm", validator=_non_empty)
    subnet: str = field(default="public", validator=_non_empty)
    images: Mapping[str, Image] = field(factory=dict, converter=_to_images, validator=_images, hash=False)
    image_registry: Path | None = field(default=None, converter=_to_path, validator=_registry)
    bwrap: str = field(default="bwrap", validator=_non_empty)
    activity_runtime: str = field(default="vm")
    sse_ping_interval: float = field(default=15.0, validator=_positive)
    vpn: bool = True
    output_limit: int = field(default=1 << 20, validator=_positive_int)
    runtimes: tuple[RuntimeDescriptor, ...] = field(default=(), converter=_to_runtimes)
    runtime_dirs: tuple[Path, ...] = field(default=(), converter=_to_dirs, validator=_dirs)

    @activity_runtime.validator
    def _check_activity_runtime(self, _attribute: Any, runtime: str) -> None:
        if runtime not in ("vm", "idle"):
            raise ConfigurationError(f"activity_runtime must be 'vm' or 'idle', not {runtime!r}")

    @providers.validator
    def _check_providers(self, _attribute: Any, providers: tuple[ProviderSpec, ...]) -> None:
        seen: set[str] = set()
        for spec in providers:
            if spec.name in seen:
                raise ConfigurationError(f"provider names must be unique; {spec.name!r} is given twice")
            seen.add(spec.name)

    @subnet.validator
    def _check_subnet(self, _attribute: Any, subnet: str) -> None:
        if self.providers and all(spec.subnet != subnet for spec in self.providers):
            raise ConfigurationError(
                f"no provider is on subnet {subnet!r} (theirs: {sorted({p.subnet for p in self.providers})}); "
                "use with_providers(..., subnet=...) to move them all"
            )

    @payment_platform.validator
    def _check_platform(self, _attribute: Any, platform: str) -> None:
        if len(platform.split("-")) != 3 or not all(platform.split("-")):
            raise ConfigurationError(
                f"payment_platform {platform!r} is not of the form driver-network-token, e.g. 'erc20-holesky-tglm'"
            )

    @classmethod
    def with_providers(cls, count: int, **settings: Any) -> LocalNetworkConfig:
        """A network of ``count`` default providers (``local-provider-1`` …, each a tenth dearer).

        Each keyword sets a network field (``requestor_balance``, ``payment_platform``, ``subnet``) or a
        provider field of every provider (``cpu_threads``, ``overcharge``, …; a ``name`` becomes a prefix);
        ``subnet`` sets both.
        """
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ConfigurationError(f"count must be a whole number of providers (0 or more), not {count!r}")
        network_fields = {a.name for a in fields(cls)} - {"providers"}
        provider_fields = {a.name for a in fields(ProviderSpec)}
        unknown = sorted(set(settings) - network_fields - provider_fields)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(network_fields | provider_fields))}"
            )
        spec_settings = {k: v for k, v in settings.items() if k in provider_fields}
        providers = tuple(_default_spec(i, **spec_settings) for i in range(1, count + 1))
        return cls(providers=providers, **{k: v for k, v in settings.items() if k in network_fields})
