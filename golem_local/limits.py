"""What the local node refuses as malformed before it acts on it: the limits every route shares.

A request that breaks one is answered 400 with a message naming the limit, never a 500 or a hang:

* JSON nested deeper than :data:`MAX_JSON_DEPTH` (the daemon's deserialiser refuses documents that do not fit
  its types long before such depths; Python's parser would fail with a ``RecursionError``);
* a wait (``timeout``) that is negative, not finite, or of :data:`MAX_TIMEOUT` seconds or more: the daemon keeps
  waits in a Rust ``Duration``, which cannot hold such values (it drops the connection without an answer; the
  local node says why instead);
* an amount out of the range of money (:func:`check_amount`): at least ``10**MAX_AMOUNT_DIGITS`` or finer than
  the token's 18 decimals;
* a NUL byte in the text of a command (a path, an argument, a variable): no file name or argument can hold one.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, localcontext
from typing import Any

__all__ = [
    "MAX_AMOUNT_DIGITS",
    "MAX_DECIMALS",
    "MAX_JSON_DEPTH",
    "MAX_TIMEOUT",
    "amount_problem",
    "find_nul",
    "json_depth",
    "load_json",
    "may_hold_nul",
    "timeout_problem",
]

MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays and objects a JSON body may have."""

MAX_TIMEOUT = float(2**64)
"""Seconds: a wait of this or more is refused (the daemon's ``Duration`` holds less)."""

MAX_AMOUNT_DIGITS = 30
"""An amount must be below ``10**MAX_AMOUNT_DIGITS`` tokens."""

MAX_DECIMALS = 18
"""An amount may have at most this many decimal places (one wei)."""


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (0 for a scalar); iterative, so any depth is safe."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:  # past the limit the answer is known: stop descending
            stack.extend((child, depth) for child in children)
    return deepest


def load_json(text: str | bytes, what: str) -> Any:
    """Parse JSON ``text``; ``ValueError`` naming ``what`` when it is not JSON or nests too deeply."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"{what} nests arrays or objects more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if _openings(text) > MAX_JSON_DEPTH and json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"{what} nests arrays or objects more than {MAX_JSON_DEPTH} levels deep")
    return value


def _openings(text: str | bytes) -> int:
    """How many ``[`` and ``{`` ``text`` holds: a bound of its nesting that costs no walk of the parsed value
    (most bodies hold a handful; a request's cost is mostly in such walks otherwise)."""
    if isinstance(text, str):
        return text.count("[") + text.count("{")
    return text.count(b"[") + text.count(b"{")


def may_hold_nul(text: str) -> bool:
    """False when the JSON ``text`` cannot parse to anything holding a NUL character: it has neither a raw one
    nor the escape ``\\u0000``. (True says only that :func:`find_nul` must look.)"""
    return "\x00" in text or "\\u0000" in text


def find_nul(value: Any) -> str | None:
    """A description of where ``value`` (JSON data) holds a NUL character, or ``None`` when it holds none."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return f"the text {item[:60]!r}{' at ' + where if where else ''}"
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return f"the key {key[:60]!r}"
                stack.append((child, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None


def timeout_problem(value: float) -> str | None:
    """Why ``value`` cannot be a wait in seconds, or ``None`` when it can."""
    if math.isnan(value) or value < 0:
        return "must be a number of seconds, 0 or more"
    if value >= MAX_TIMEOUT:
        return f"must be less than {MAX_TIMEOUT:.0f} seconds (2^64, the most the daemon can wait)"
    return None


def amount_problem(amount: Decimal) -> str | None:
    """Why ``amount`` is not an amount of money, or ``None`` when it is one."""
    if not amount.is_finite():
        return "must be a finite amount"
    if amount != 0 and amount.adjusted() >= MAX_AMOUNT_DIGITS:
        return f"is out of range: amounts are below 10^{MAX_AMOUNT_DIGITS}"
    with localcontext() as context:  # room for every digit of the largest amount at 18 decimals
        context.prec = MAX_AMOUNT_DIGITS + MAX_DECIMALS + 2
        if amount.quantize(Decimal(1).scaleb(-MAX_DECIMALS)) != amount:
            return f"has more than {MAX_DECIMALS} decimal places (one wei is the smallest amount)"
    return None
