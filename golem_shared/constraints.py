"""The Golem constraint language: parse, print and evaluate the filters of demands and offers.

A demand (or an offer) carries constraints that the market checks against the other side's flat
properties. The language is LDAP-like::

    filter     := "(" body ")"
    body       := ""                          empty: true
                | "&" filter*                 all of; "(&)" is true
                | "|" filter*                 any of; "(|)" is false
                | "!" filter                  not
                | attribute "=*"              presence: the property exists
                | attribute operator value    comparison
    attribute  := [A-Za-z0-9._?-]+            e.g. golem.com.scheme.payu.debit-note.interval-sec?
    operator   := "=" | "<=" | "<" | ">=" | ">"
    value      := raw text up to the next ")", surrounding whitespace stripped

Whitespace (newlines included) may stand between filters and around attributes and operators. There is
no escaping: a value cannot contain ``)`` nor begin with ``<``, ``>`` or ``=``. Empty or whitespace-only
text is an empty ``And``, i.e. no constraint at all.

A comparison is typed by the property it meets:

* number (int or float, not bool): the value is read as a number and compared numerically; a value that
  is not a number never matches;
* bool: only ``=``, against ``true`` / ``false`` in any case;
* string: ``=`` is equality, with ``*`` as a wildcard for any run of characters; ``<``, ``<=``, ``>``,
  ``>=`` compare lexicographically;
* list: ``=`` matches if any element matches under the rules above; ordering operators never match;
* anything else (``null``, objects) never matches.

A comparison against a missing property is false. ``(!F)`` is plain negation of ``F``'s result, so
``(!(golem.missing=1))`` is *true*: we use two-valued logic, with "undefined" counted as a mismatch
before negation.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from operator import eq, ge, gt, le, lt
from typing import Any

from attrs import field, frozen

from golem_shared.errors import ConfigurationError, ConstraintSyntaxError

__all__ = [
    "And",
    "Comparison",
    "Constraint",
    "Not",
    "Or",
    "Presence",
    "all_of",
    "any_of",
    "constraints_match",
    "parse_constraints",
]

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": eq,
    "<": lt,
    "<=": le,
    ">": gt,
    ">=": ge,
}
_ATTRIBUTE = re.compile(r"[A-Za-z0-9._?-]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_OPERATOR_START = "<>=!~"  # '!' and '~' only so that "!=" and "~=" are reported as unknown operators
_OPERATOR_REST = "<>="
_MAX_DEPTH = 200  # well below Python's recursion limit


class Constraint(ABC):
    """A parsed filter. ``str()`` gives its canonical text, and ``parse_constraints(str(c)) == c``."""

    __slots__ = ()

    @abstractmethod
    def matches(self, properties: Mapping[str, Any]) -> bool:
        """Whether the flat ``properties`` (JSON values) satisfy this filter."""

    @abstractmethod
    def __str__(self) -> str: ...


def _check_attribute(_instance: object, _attribute: object, name: str) -> None:
    if not _ATTRIBUTE.fullmatch(name):
        raise ConfigurationError(f"{name!r} is not an attribute name: use letters, digits and '._?-'")


def _check_value(instance: Comparison, _attribute: object, value: str) -> None:
    if not value or value != value.strip() or ")" in value or value[0] in _OPERATOR_REST:
        raise ConfigurationError(
            f"{value!r} cannot be written as a constraint value: it must be non-empty, without "
            "surrounding whitespace or ')', and must not begin with '<', '>' or '='"
        )
    if instance.operator == "=" and value == "*":
        raise ConfigurationError("'=*' tests presence: use Presence(attribute)")


def _to_parts(parts: Iterable[Constraint]) -> tuple[Constraint, ...]:
    result = tuple(parts)
    for part in result:
        if not isinstance(part, Constraint):
            raise ConfigurationError(f"{part!r} is not a Constraint (all_of() and any_of() parse strings)")
    return result


@frozen
class And(Constraint):
    """All ``parts`` match; true when there are none."""

    parts: tuple[Constraint, ...] = field(converter=_to_parts)

    def matches(self, properties: Mapping[str, Any]) -> bool:
        return all(part.matches(properties) for part in self.parts)

    def __str__(self) -> str:
        return "(&" + "".join(map(str, self.parts)) + ")" if self.parts else "()"


@frozen
class Or(Constraint):
    """At least one of ``parts`` matches; false when there are none."""

    parts: tuple[Constraint, ...] = field(converter=_to_parts)

    def matches(self, properties: Mapping[str, Any]) -> bool:
        return any(part.matches(properties) for part in self.parts)

    def __str__(self) -> str:
        return "(|" + "".join(map(str, self.parts)) + ")"


@frozen
class Not(Constraint):
    """``part`` does not match (a comparison against a missing property counts as not matching)."""

    part: Constraint

    def matches(self, properties: Mapping[str, Any]) -> bool:
        return not self.part.matches(properties)

    def __str__(self) -> str:
        return f"(!{self.part})"


@frozen
class Presence(Constraint):
    """``(attribute=*)``: the property exists, whatever its value (``null`` included)."""

    attribute: str = field(validator=_check_attribute)

    def matches(self, properties: Mapping[str, Any]) -> bool:
        return self.attribute in properties

    def __str__(self) -> str:
        return f"({self.attribute}=*)"


@frozen
class Comparison(Constraint):
    """``(attribute operator value)``, typed by the property's value (see the module docstring)."""

    attribute: str = field(validator=_check_attribute)
    operator: str = field()
    value: str = field(validator=_check_value)

    @operator.validator
    def _check_operator(self, _attribute: object, op: str) -> None:
        if op not in _OPERATORS:
            raise ConfigurationError(f"unknown operator {op!r}: use one of =, <, <=, >, >=")

    def matches(self, properties: Mapping[str, Any]) -> bool:
        if self.attribute not in properties:
            return False
        prop = properties[self.attribute]
        if isinstance(prop, (list, tuple)):
            return self.operator == "=" and any(_scalar_matches(item, "=", self.value) for item in prop)
        return _scalar_matches(prop, self.operator, self.value)

    def __str__(self) -> str:
        return f"({self.attribute}{self.operator}{self.value})"


def _scalar_matches(prop: object, op: str, value: str) -> bool:
    if isinstance(prop, bool):  # before int: bool is an int subclass
        return op == "=" and value.lower() == ("true" if prop else "false")
    if isinstance(prop, (int, float)):
        if not _NUMBER.fullmatch(value):
            return False
        try:
            number: float = int(value) if value.lstrip("+-").isdigit() else float(value)
        except ValueError:  # more digits than int() will read (sys.set_int_max_str_digits)
            number = float(value)
        return _OPERATORS[op](prop, number)
    if isinstance(prop, str):
        if op == "=" and "*" in value:
            return _glob(value).fullmatch(prop) is not None
        return _OPERATORS[op](prop, value)
    return False


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(map(re.escape, pattern.split("*"))), re.DOTALL)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, reason: str, position: int | None = None) -> ConstraintSyntaxError:
        where = self.pos if position is None else position
        return ConstraintSyntaxError(reason, text=self.text, position=where)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def parse(self) -> Constraint:
        self.skip_space()
        if not self.peek():
            return And(())
        result = self.filter(0)
        self.skip_space()
        if self.peek():
            raise self.error("unexpected text after the end of the filter")
        return result

    def filter(self, depth: int) -> Constraint:
        if self.peek() != "(":
            raise self.error("expected '(' to start a filter")
        if depth > _MAX_DEPTH:
            raise self.error(f"filters nested more than {_MAX_DEPTH} deep")
        opened = self.pos
        self.pos += 1
        self.skip_space()
        kind = self.peek()
        if kind == ")":
            result: Constraint = And(())
        elif kind in ("&", "|"):
            self.pos += 1
            parts = self.filters(opened, depth)
            result = And(parts) if kind == "&" else Or(parts)
        elif kind == "!":
            self.pos += 1
            self.skip_space()
            if self.peek() != "(":
                raise self.error("expected '(' to start the filter that '!' negates")
            result = Not(self.filter(depth + 1))
            self.skip_space()
            if self.peek() == "(":
                raise self.error(f"expected ')' to close the filter opened at position {opened}: '!' takes one filter")
        else:
            result = self.comparison(opened)
        if self.peek() != ")":
            raise self.error(f"expected ')' to close the filter opened at position {opened}")
        self.pos += 1
        return result

    def filters(self, opened: int, depth: int) -> list[Constraint]:
        parts = []
        self.skip_space()
        while self.peek() == "(":
            parts.append(self.filter(depth + 1))
            self.skip_space()
        if self.peek() not in ("", ")"):
            raise self.error(f"expected '(' to start a filter or ')' to close the filter opened at position {opened}")
        return parts

    def comparison(self, opened: int) -> Constraint:
        match = _ATTRIBUTE.match(self.text, self.pos)
        name = match.group() if match else ""
        self.pos += len(name)
        if not name:
            char = self.peek()
            if char in _OPERATOR_START and char:
                raise self.error("missing attribute name")
            if char:
                raise self.error(f"unexpected {char!r}: expected '&', '|', '!' or an attribute name")
            raise self.error(f"expected ')' to close the filter opened at position {opened}")
        if self.peek() and not self.peek().isspace() and self.peek() not in _OPERATOR_START + ")":
            raise self.error(f"unexpected {self.peek()!r} in attribute name {name!r}")
        self.skip_space()
        op_start = self.pos
        if self.peek() and self.peek() in _OPERATOR_START:
            self.pos += 1
            while self.peek() and self.peek() in _OPERATOR_REST:
                self.pos += 1
        op = self.text[op_start : self.pos]
        if not op:
            raise self.error(f"expected an operator (=, <, <=, >, >=) after attribute {name!r}")
        if op not in _OPERATORS:
            raise self.error(f"unknown operator {op!r}: use one of =, <, <=, >, >=", op_start)
        close = self.text.find(")", self.pos)
        if close < 0:
            raise self.error(f"expected ')' to close the filter opened at position {opened}", len(self.text))
        value = self.text[self.pos : close].strip()
        self.pos = close
        if not value:
            raise self.error(f"missing value after {op!r}")
        if op == "=" and value == "*":
            return Presence(name)
        return Comparison(name, op, value)


def parse_constraints(text: str) -> Constraint:
    """Parse constraint ``text``; raise :class:`ConstraintSyntaxError` pointing at the first problem."""
    return _Parser(text).parse()


def _as_constraints(parts: Iterable[Constraint | str]) -> list[Constraint]:
    return [parse_constraints(part) if isinstance(part, str) else part for part in parts]


def all_of(*parts: Constraint | str) -> Constraint:
    """An ``And`` of ``parts`` (strings are parsed); empty ``And`` parts are dropped, one part is returned."""
    kept = [part for part in _as_constraints(parts) if part != And(())]
    return kept[0] if len(kept) == 1 else And(kept)


def any_of(*parts: Constraint | str) -> Constraint:
    """An ``Or`` of ``parts`` (strings are parsed); empty ``Or`` parts are dropped, one part is returned."""
    kept = [part for part in _as_constraints(parts) if part != Or(())]
    return kept[0] if len(kept) == 1 else Or(kept)


def constraints_match(constraints: Constraint | str, properties: Mapping[str, Any]) -> bool:
    """Whether ``properties`` satisfy ``constraints`` (parsed first if given as text)."""
    if isinstance(constraints, str):
        constraints = parse_constraints(constraints)
    return constraints.matches(properties)
