"""Typed reading of the daemon's JSON: every failure names the model and the field.

Models raise :class:`ValueError` here; ``RestClient._request`` turns it into a ``ServerError`` that also
names the request, so a user sees which call answered what.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from golem_shared.timestamps import parse_timestamp

__all__ = ["Fields", "parse_id", "parse_list", "parse_nothing"]

T = TypeVar("T")


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _as_dict(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _as_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def _as_time(value: object) -> datetime | None:
    try:
        return parse_timestamp(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _as_decimal(value: object) -> Decimal | None:
    if not (isinstance(value, str) or _is_number(value)):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _as_floats(value: object) -> tuple[float, ...] | None:
    if isinstance(value, list) and all(_is_number(item) for item in value):
        return tuple(float(item) for item in value)
    return None


def _as_strs(value: object) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return None


class Fields:
    """One JSON object of model ``model``; getters convert a field or raise a ValueError naming it."""

    def __init__(self, model: str, data: object) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"{model}: expected a JSON object, got {_describe(data)}")
        self.model = model
        self.raw: dict[str, Any] = data

    def _optional(self, key: str, convert: Callable[[object], T | None], expected: str) -> T | None:
        value = self.raw.get(key)
        if value is None:
            return None
        converted = convert(value)
        if converted is None:
            raise ValueError(f"{self.model}: field {key!r} should be {expected}, got {_describe(value)}")
        return converted

    def _required(self, key: str, value: T | None) -> T:
        if value is None:
            raise ValueError(f"{self.model}: required field {key!r} is missing")
        return value

    def text(self, key: str) -> str:
        """A required string."""
        return self._required(key, self.opt_text(key))

    def opt_text(self, key: str) -> str | None:
        """A string, or ``None`` when absent or null."""
        return self._optional(key, _as_str, "a string")

    def obj(self, key: str) -> dict[str, Any]:
        """A required JSON object."""
        return self._required(key, self.opt_obj(key))

    def opt_obj(self, key: str) -> dict[str, Any] | None:
        """A JSON object, or ``None``."""
        return self._optional(key, _as_dict, "an object")

    def nested(self, key: str) -> Fields:
        """A required JSON object, read with the same error reporting (``Model.key: …``)."""
        return Fields(f"{self.model}.{key}", self.obj(key))

    def time(self, key: str) -> datetime:
        """A required RFC 3339 timestamp, in UTC."""
        return self._required(key, self.opt_time(key))

    def opt_time(self, key: str) -> datetime | None:
        """An RFC 3339 timestamp, or ``None``."""
        return self._optional(key, _as_time, "an RFC 3339 timestamp")

    def money(self, key: str) -> Decimal:
        """A required decimal amount, exact: strings are parsed as written."""
        return self._required(key, self._optional(key, _as_decimal, "a decimal amount"))

    def flag(self, key: str, default: bool) -> bool:
        """A boolean, ``default`` when absent."""
        value = self._optional(key, _as_bool, "true or false")
        return default if value is None else value

    def integer(self, key: str) -> int:
        """A required integer (a float is truncated)."""
        return self._required(key, self._optional(key, _as_int, "an integer"))

    def opt_numbers(self, key: str) -> tuple[float, ...] | None:
        """A list of numbers as floats, or ``None``."""
        return self._optional(key, _as_floats, "a list of numbers")

    def texts(self, key: str) -> tuple[str, ...]:
        """A list of strings; empty when absent."""
        return self._optional(key, _as_strs, "a list of strings") or ()


def parse_id(data: Any) -> str:
    """An identifier answered as a bare JSON string."""
    if not isinstance(data, str) or not data:
        raise ValueError(f"expected an identifier as a JSON string, got {_describe(data)}")
    return data


def parse_nothing(data: Any) -> None:
    """Ignore the answer (the daemon sends ``null``, an empty body, or a value the spec does not define)."""
    del data


def parse_list(item: Callable[[Any], T], *, skip: Callable[[Any], bool] | None = None) -> Callable[[Any], list[T]]:
    """A parser of a JSON array whose items ``item`` parses (leaving out those ``skip`` is true of, unparsed)."""

    def parse(data: Any) -> list[T]:
        if not isinstance(data, list):
            raise ValueError(f"expected a JSON array, got {_describe(data)}")
        if skip is not None:
            return [item(entry) for entry in data if not skip(entry)]
        return [item(entry) for entry in data]

    return parse
