"""Which runtimes a local provider can run, by name: the built-in ones, those a program passes, and those
installed packages announce.

A runtime is described by a :class:`RuntimeDescriptor`: its ``name`` (what ``ProviderSpec.runtime`` and the
offer's ``golem.runtime.name`` say), ``version``, ``description``, the ``counters`` it reports beyond duration
and CPU seconds (each with the price a provider asks per unit unless its ``ProviderSpec.counter_prices`` says
otherwise), and a ``factory`` that makes the runtime of one activity from a :class:`RuntimeContext`.

Runtimes are found, first match wins:

1. in ``LocalNetworkConfig.runtimes`` (descriptors a program passes);
2. among the built-in ones: ``vm`` (a bubblewrap sandbox running the demand's image), ``idle`` (runs nothing)
   and ``test-counters`` (:mod:`golem_local.runtime.counters`);
3. among the runtime programs of the descriptor files in ``LocalNetworkConfig.runtime_dirs`` and
   ``$GOLEM_LOCAL_RUNTIMES_DIR`` (:mod:`golem_local.runtime.program`: the runtime SDK's Command mode), whose
   names may not be those of the runtimes above;
4. in the entry-point group :data:`ENTRY_POINT_GROUP` of the installed distributions: each entry point names
   a :class:`RuntimeDescriptor` (``my_runtime = "my_package.runtime:DESCRIPTOR"``), as the runtime SDK's
   plugin directory names a runtime by its descriptor file. The entry point's name must be the runtime's.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from attrs import field, frozen

from golem_local.runtime.base import DEFAULT_STOP_GRACE, Runtime
from golem_shared.errors import ConfigurationError, LocalNodeError

__all__ = [
    "ENTRY_POINT_GROUP",
    "RuntimeContext",
    "RuntimeDescriptor",
    "RuntimeFactory",
    "RuntimeRegistry",
]

ENTRY_POINT_GROUP = "golem_local.runtimes"
"""The entry-point group where installed packages announce their runtimes (each a :class:`RuntimeDescriptor`)."""


@frozen
class RuntimeContext:
    """What a runtime factory is told about the activity it makes a runtime for.

    ``work_dir`` is a directory of the activity's own (not yet created; the node removes it when it stops),
    ``env`` the provider's ``ProviderSpec.env``, ``demand`` the properties of the requestor's demand (its
    ``golem.srv.comp.task_package``, …), ``provider`` the provider's name, ``stop_grace`` the seconds the
    runtime's ``stop`` gives the activity's processes between SIGTERM and SIGKILL (the provider's
    ``ProviderSpec.stop_grace``; the exe-unit abandons a ``stop`` that overruns it by much). For the self-test
    at node start and for ``golem-api runtime test`` the ``activity_id`` is ``"self-test"`` and ``demand`` is
    empty.
    """

    activity_id: str
    work_dir: Path
    provider: str = ""
    env: Mapping[str, str] = field(factory=dict)
    demand: Mapping[str, Any] = field(factory=dict)
    stop_grace: float = DEFAULT_STOP_GRACE


RuntimeFactory = Callable[[RuntimeContext], Runtime]
"""Makes the runtime of one activity."""


def _name(_instance: object, _attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigurationError(f"a runtime name must be a non-empty word without spaces, not {value!r}")


def _to_counters(value: Mapping[str, Decimal | float | str]) -> dict[str, Decimal]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"counters must map counter names to prices, not {value!r}")
    counters: dict[str, Decimal] = {}
    for name, price in value.items():
        if not isinstance(name, str) or not name.startswith("golem.usage."):
            raise ConfigurationError(f"a usage counter's name starts with 'golem.usage.', not {name!r}")
        try:
            amount = Decimal(str(price))
        except InvalidOperation:
            raise ConfigurationError(f"the price of counter {name} must be an amount, not {price!r}") from None
        if not amount.is_finite() or amount < 0:
            raise ConfigurationError(f"the price of counter {name} must be an amount of zero or more, not {price!r}")
        counters[name] = amount
    return counters


@frozen
class RuntimeDescriptor:
    """A runtime by name (see the module docstring): how to make it and what it reports."""

    name: str = field(validator=_name)
    factory: RuntimeFactory
    version: str = "0.1.0"
    description: str = ""
    counters: Mapping[str, Decimal] = field(factory=dict, converter=_to_counters, hash=False)

    def __attrs_post_init__(self) -> None:
        if not callable(self.factory):
            raise ConfigurationError(
                f"runtime {self.name}: factory must be a callable taking a RuntimeContext, not {self.factory!r}"
            )


class RuntimeRegistry:
    """The runtimes known by name: ``given`` first, then ``builtin``, then ``programs`` (runtime programs of
    descriptor files, whose names must be new), then the entry points (when ``entry_points``); see the module
    docstring."""

    def __init__(
        self,
        given: Iterable[RuntimeDescriptor] = (),
        *,
        builtin: Iterable[RuntimeDescriptor] = (),
        programs: Iterable[RuntimeDescriptor] = (),
        entry_points: bool = True,
    ) -> None:
        self._known: dict[str, RuntimeDescriptor] = {}
        for descriptor in (*given, *builtin):
            self._known.setdefault(descriptor.name, descriptor)
        for descriptor in programs:
            if descriptor.name in self._known:
                raise LocalNodeError(
                    f"a runtime descriptor file names runtime {descriptor.name!r} ({descriptor.description}), but "
                    "that name is taken by a built-in runtime or one of LocalNetworkConfig.runtimes; rename it"
                )
            self._known[descriptor.name] = descriptor
        self._entry_points: dict[str, importlib.metadata.EntryPoint] = {}
        if entry_points:
            for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if point.name not in self._known:
                    self._entry_points.setdefault(point.name, point)

    def names(self) -> list[str]:
        """Every runtime name known, sorted."""
        return sorted({*self._known, *self._entry_points})

    def get(self, name: str) -> RuntimeDescriptor:
        """The runtime called ``name``; :class:`LocalNodeError` saying which exist and how to add one if none."""
        known = self._known.get(name)
        if known is not None:
            return known
        point = self._entry_points.get(name)
        if point is None:
            raise LocalNodeError(
                f"no runtime is called {name!r}; known runtimes: {', '.join(self.names())}. Pass a "
                f"RuntimeDescriptor in LocalNetworkConfig(runtimes=...), describe a runtime program in a JSON file "
                f"of LocalNetworkConfig(runtime_dirs=...), or install a package announcing it in the entry-point "
                f"group {ENTRY_POINT_GROUP!r}"
            )
        try:
            loaded = point.load()
        except Exception as exc:
            raise LocalNodeError(
                f"runtime {name!r} (entry point {point.value!r} of group {ENTRY_POINT_GROUP!r}) cannot be loaded: "
                f"{exc!r}"
            ) from exc
        if not isinstance(loaded, RuntimeDescriptor):
            raise LocalNodeError(
                f"entry point {point.value!r} of group {ENTRY_POINT_GROUP!r} names {loaded!r}, not a "
                "golem_local.runtime.registry.RuntimeDescriptor"
            )
        if loaded.name != name:
            raise LocalNodeError(
                f"entry point {name!r} of group {ENTRY_POINT_GROUP!r} describes runtime {loaded.name!r}: "
                "an entry point must be named as its runtime"
            )
        self._known[name] = loaded
        return loaded
