"""Tests of the constraint language: parsing, printing, evaluation and syntax errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golem_api.errors import ConfigurationError, ConstraintSyntaxError
from golem_shared.constraints import (
    And,
    Comparison,
    Constraint,
    Not,
    Or,
    Presence,
    all_of,
    any_of,
    constraints_match,
    parse_constraints,
)

OPERATORS = ("=", "<", "<=", ">", ">=")
MODEST = settings(max_examples=200, deadline=None)

# --- strategies ---------------------------------------------------------------------------------------

any_attribute = st.text(alphabet="abcXYZ019._?-", min_size=1, max_size=20)


def _printable(op: str, value: str) -> bool:
    return bool(value) and ")" not in value and value[0] not in "<>=" and not (op == "=" and value == "*")


@st.composite
def any_comparison(draw: st.DrawFn, attributes: st.SearchStrategy[str], values: st.SearchStrategy[str]) -> Constraint:
    op = draw(st.sampled_from(OPERATORS))
    value = draw(values.filter(lambda v: _printable(op, v)))
    return Comparison(draw(attributes), op, value)


def trees(attributes: st.SearchStrategy[str], values: st.SearchStrategy[str]) -> st.SearchStrategy[Constraint]:
    leaves = st.one_of(attributes.map(Presence), any_comparison(attributes, values))
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(And),
            st.lists(children, max_size=4).map(Or),
            children.map(Not),
        ),
        max_leaves=12,
    )


any_value_text = st.text(min_size=1, max_size=15).map(str.strip)
any_tree = trees(any_attribute, any_value_text)

# Evaluation: small pools of names and values so that comparisons often hit.
POOL = ("a", "b.c", "d-e?", "f_1")
word = st.text(alphabet="ab1.-+e*", min_size=1, max_size=3)
small_int = st.integers(-5, 5)
small_float = st.one_of(st.sampled_from([0.5, 1.0, -1.5, 1e-3, 2.25]), st.floats(-5, 5, allow_nan=False))
pool_attribute = st.sampled_from(POOL)
pool_value_text = st.one_of(
    word,
    small_int.map(str),
    small_float.map(repr),
    st.sampled_from(["true", "false", "TRUE", "False"]),
    st.sampled_from(["a*", "*1", "*a*", "a*b", "*-*", "*", "**"]),
    st.sampled_from(["1.", ".5", "+2", "1e0", "-.5e1"]),
)
pool_tree = trees(pool_attribute, pool_value_text)
scalar = st.one_of(small_int, small_float, st.booleans(), word.filter(lambda w: "*" not in w), st.none())
property_value = st.one_of(scalar, st.lists(scalar, max_size=4))
properties = st.dictionaries(pool_attribute, property_value, min_size=2, max_size=len(POOL))


# --- an independent reference evaluator ---------------------------------------------------------------


def _ref_number(text: str) -> int | float | None:
    try:
        exact = Fraction(text)  # accepts exactly the decimal literals we allow; rejects inf and nan
    except (ValueError, ZeroDivisionError):
        return None
    if "/" in text or "_" in text:
        return None
    return int(exact) if text.lstrip("+-").isdigit() else float(text)


def _ref_glob(pattern: str, text: str) -> bool:
    if not pattern:
        return not text
    if pattern[0] == "*":
        return any(_ref_glob(pattern[1:], text[i:]) for i in range(len(text) + 1))
    return bool(text) and text[0] == pattern[0] and _ref_glob(pattern[1:], text[1:])


COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda x, y: x == y,
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


def _ref_scalar(prop: Any, op: str, text: str) -> bool:
    if type(prop) is bool:
        return op == "=" and text.lower() == str(prop).lower()
    if type(prop) in (int, float):
        number = _ref_number(text)
        return number is not None and COMPARE[op](prop, number)
    if type(prop) is str:
        return _ref_glob(text, prop) if op == "=" else COMPARE[op](prop, text)
    return False


def reference(c: Constraint, props: Mapping[str, Any]) -> bool:
    if isinstance(c, And):
        return all(reference(p, props) for p in c.parts)
    if isinstance(c, Or):
        return any(reference(p, props) for p in c.parts)
    if isinstance(c, Not):
        return not reference(c.part, props)
    if isinstance(c, Presence):
        return c.attribute in props
    assert isinstance(c, Comparison)
    if c.attribute not in props:
        return False
    prop = props[c.attribute]
    if type(prop) is list:
        return c.operator == "=" and any(_ref_scalar(item, "=", c.value) for item in prop)
    return _ref_scalar(prop, c.operator, c.value)


# --- property tests -----------------------------------------------------------------------------------


@MODEST
@given(any_tree)
def test_printing_then_parsing_gives_the_same_tree(c: Constraint) -> None:
    assert parse_constraints(str(c)) == c


def _spaced(c: Constraint, gap: Callable[[], str]) -> str:
    """Print ``c`` with whitespace from ``gap()`` wherever the grammar allows it."""
    if isinstance(c, (And, Or)):
        kind = "&" if isinstance(c, And) else "|"
        inner = "".join(gap() + _spaced(p, gap) for p in c.parts)
        return f"({gap()}{kind}{inner}{gap()})"
    if isinstance(c, Not):
        return f"({gap()}!{gap()}{_spaced(c.part, gap)}{gap()})"
    if isinstance(c, Presence):
        return f"({gap()}{c.attribute}{gap()}={gap()}*{gap()})"
    assert isinstance(c, Comparison)
    return f"({gap()}{c.attribute}{gap()}{c.operator}{gap()}{c.value}{gap()})"


@pytest.mark.slow  # hundreds of generated examples: 1–4 s each (the quick run stays under a minute)
@MODEST
@given(pool_tree, st.data())
def test_whitespace_between_tokens_does_not_change_the_tree(c: Constraint, data: st.DataObject) -> None:
    def gap() -> str:
        return data.draw(st.text(alphabet=" \t\n\r", max_size=2))

    text = gap() + _spaced(c, gap) + gap()
    assert parse_constraints(text) == c


@pytest.mark.slow  # hundreds of generated examples: 1–4 s each (the quick run stays under a minute)
@MODEST
@given(pool_tree, properties)
def test_evaluation_agrees_with_the_reference(c: Constraint, props: dict[str, Any]) -> None:
    assert c.matches(props) == reference(c, props)
    assert constraints_match(str(c), props) == reference(c, props)


def _texts_near(prop: Any) -> list[str]:
    """Value texts that equal, bracket or glob-match ``prop`` (or its elements)."""
    texts: list[str] = []
    for item in prop if isinstance(prop, list) else [prop]:
        if isinstance(item, bool):
            texts += [str(item), str(item).lower(), str(item).upper()]
        elif isinstance(item, (int, float)):
            texts += [repr(item), repr(item + 1), repr(item - 0.5), f"{item:e}"]
        elif isinstance(item, str):
            texts += [item, item[:1] + "*", "*" + item[-1:], item + "a", item[:-1]]
    return [text for text in texts if text]


@pytest.mark.slow  # hundreds of generated examples: 1–4 s each (the quick run stays under a minute)
@settings(max_examples=400, deadline=None)
@given(property_value, st.sampled_from(("=", *OPERATORS)), st.data())
def test_a_single_comparison_agrees_with_the_reference(prop: Any, op: str, data: st.DataObject) -> None:
    near = _texts_near(prop)
    texts = st.one_of(pool_value_text, st.sampled_from(near)) if near else pool_value_text
    value = data.draw(texts.filter(lambda v: _printable(op, v)), label="value")
    c = Comparison("x", op, value)
    assert c.matches({"x": prop}) == reference(c, {"x": prop})


@pytest.mark.slow  # hundreds of generated examples: 1–4 s each (the quick run stays under a minute)
@MODEST
@given(pool_tree, properties)
def test_negation_is_the_complement(c: Constraint, props: dict[str, Any]) -> None:
    assert Not(c).matches(props) is not c.matches(props)


# --- examples -----------------------------------------------------------------------------------------

DEMAND = (
    "(&(golem.node.debug.subnet=public)\n\t(golem.com.pricing.model=linear)\n\t"
    "(&(golem.inf.mem.gib>=0.5)(golem.inf.storage.gib>=2.0)(golem.runtime.name=vm)))"
)
OFFER = {
    "golem.activity.caps.transfer.protocol": ["gftp", "https", "http"],
    "golem.com.payment.debit-notes.accept-timeout?": 240,
    "golem.com.payment.platform.erc20-holesky-tglm.address": "0x86a269498fb5270f20bdc6fdcf6039122b0d3b23",
    "golem.com.pricing.model": "linear",
    "golem.com.pricing.model.linear.coeffs": [0.0001, 0.0002, 0.0],
    "golem.com.scheme": "payu",
    "golem.com.scheme.payu.debit-note.interval-sec?": 120,
    "golem.com.scheme.payu.payment-timeout-sec?": 120,
    "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
    "golem.inf.cpu.architecture": "x86_64",
    "golem.inf.cpu.threads": 4,
    "golem.inf.mem.gib": 7.5,
    "golem.inf.storage.gib": 40.0,
    "golem.node.debug.subnet": "public",
    "golem.node.id.name": "testnet-c1-3",
    "golem.runtime.capabilities": ["inet", "vpn", "manifest-support", "start-entrypoint"],
    "golem.runtime.name": "vm",
    "golem.runtime.version": "0.4.2",
    "golem.srv.caps.multi-activity": True,
}


def test_the_real_demand_parses_and_matches_a_real_offer() -> None:
    c = parse_constraints(DEMAND)
    assert c == And(
        (
            Comparison("golem.node.debug.subnet", "=", "public"),
            Comparison("golem.com.pricing.model", "=", "linear"),
            And(
                (
                    Comparison("golem.inf.mem.gib", ">=", "0.5"),
                    Comparison("golem.inf.storage.gib", ">=", "2.0"),
                    Comparison("golem.runtime.name", "=", "vm"),
                )
            ),
        )
    )
    assert str(c) == DEMAND.replace("\n\t", "")
    assert c.matches(OFFER)
    assert not c.matches({**OFFER, "golem.inf.mem.gib": 0.25})
    assert not c.matches({**OFFER, "golem.node.debug.subnet": "devnet-beta"})
    small = {k: v for k, v in OFFER.items() if k != "golem.runtime.name"}
    assert not c.matches(small)


def test_whitespace_and_newlines_are_allowed_around_everything() -> None:
    text = "  \n( &\n  ( golem.inf.cpu.threads >= 2 )\r\n\t( ! (golem.runtime.name = wasmtime ) ) )\n"
    c = parse_constraints(text)
    assert str(c) == "(&(golem.inf.cpu.threads>=2)(!(golem.runtime.name=wasmtime)))"
    assert c.matches(OFFER)


def test_inner_whitespace_of_a_value_is_kept() -> None:
    c = parse_constraints("(golem.node.id.name=  my  node \n)")
    assert c == Comparison("golem.node.id.name", "=", "my  node")
    assert c.matches({"golem.node.id.name": "my  node"})


def test_question_marks_dashes_and_underscores_in_names() -> None:
    c = parse_constraints("(&(golem.com.scheme.payu.debit-note.interval-sec?<=120)(golem.inf.cpu_x?=*))")
    assert c == And(
        (
            Comparison("golem.com.scheme.payu.debit-note.interval-sec?", "<=", "120"),
            Presence("golem.inf.cpu_x?"),
        )
    )
    assert not c.matches(OFFER)
    assert c.matches({**OFFER, "golem.inf.cpu_x?": None})


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("testnet-*", True),
        ("*-c1-*", True),
        ("*", True),
        ("test*3", True),
        ("testnet", False),
        ("*-c2-*", False),
        ("testnet-c1-3", True),
        ("t?stnet-c1-3", False),  # only '*' is special
    ],
)
def test_wildcards(pattern: str, expected: bool) -> None:
    assert constraints_match(f"(golem.node.id.name={pattern})", OFFER) is expected


def test_a_lone_star_is_presence_but_a_star_pattern_only_matches_strings() -> None:
    assert parse_constraints("(a=*)") == Presence("a")
    assert constraints_match("(a=*)", {"a": 3})
    assert constraints_match("(a=**)", {"a": "x"})
    assert not constraints_match("(a=**)", {"a": 3})


def test_list_membership() -> None:
    assert constraints_match("(golem.runtime.capabilities=vpn)", OFFER)
    assert constraints_match("(golem.runtime.capabilities=manifest-*)", OFFER)
    assert not constraints_match("(golem.runtime.capabilities=gpu)", OFFER)
    assert constraints_match("(golem.com.pricing.model.linear.coeffs=0.0002)", OFFER)
    assert constraints_match("(golem.com.pricing.model.linear.coeffs=2e-4)", OFFER)
    assert constraints_match("(flags=TRUE)", {"flags": [False, True]})
    # ordering operators never match a list
    assert not constraints_match("(golem.runtime.capabilities>=a)", OFFER)
    assert not constraints_match("(golem.com.pricing.model.linear.coeffs<1)", OFFER)
    assert not constraints_match("(empty=x)", {"empty": []})


def test_numbers_compare_numerically_and_strings_lexicographically() -> None:
    assert constraints_match("(golem.inf.cpu.threads>=10)", {"golem.inf.cpu.threads": 12})
    assert not constraints_match("(golem.inf.cpu.threads>=10)", {"golem.inf.cpu.threads": 2})
    # the same texts as strings: "2" > "10"
    assert constraints_match("(v>=10)", {"v": "2"})
    assert constraints_match("(v>=10)", {"v": "12"})
    assert not constraints_match("(v>=10)", {"v": "09"})
    assert constraints_match("(golem.runtime.version>=0.4.10)", OFFER)  # lexicographic, not semver
    assert constraints_match("(golem.inf.mem.gib=7.50)", OFFER)
    assert constraints_match("(golem.inf.cpu.threads=4.0)", OFFER)
    assert constraints_match("(golem.inf.cpu.threads<4.5)", OFFER)
    assert constraints_match("(golem.inf.cpu.threads>-1e3)", OFFER)
    assert constraints_match("(big=9007199254740993)", {"big": 9007199254740993})  # exact for ints
    assert not constraints_match("(big=9007199254740992)", {"big": 9007199254740993})
    assert constraints_match(f"(big<{'9' * 5000})", {"big": 10**100})  # longer than int() reads


@pytest.mark.parametrize("text", ["four", "4x", "inf", "nan", "1_000", "0x10", "1/2", "--1", "."])
def test_a_value_that_is_not_a_number_never_matches_a_number(text: str) -> None:
    for op in OPERATORS:
        assert not constraints_match(f"(n{op}{text})", {"n": 4})
        assert not constraints_match(f"(n{op}{text})", {"n": 4.0})


def test_booleans() -> None:
    assert constraints_match("(golem.srv.caps.multi-activity=true)", OFFER)
    assert constraints_match("(golem.srv.caps.multi-activity=True)", OFFER)
    assert not constraints_match("(golem.srv.caps.multi-activity=false)", OFFER)
    assert not constraints_match("(golem.srv.caps.multi-activity=1)", OFFER)
    assert not constraints_match("(golem.srv.caps.multi-activity>=false)", OFFER)
    assert constraints_match("(x=FALSE)", {"x": False})
    assert constraints_match("(x=True)", {"x": "True"})  # a string compares as a string
    assert not constraints_match("(x=true)", {"x": "True"})


def test_null_and_objects_never_compare() -> None:
    for op in OPERATORS:
        assert not constraints_match(f"(x{op}null)", {"x": None})
        assert not constraints_match(f"(x{op}a)", {"x": {"a": 1}})
    assert constraints_match("(x=*)", {"x": None})


def test_a_missing_property_never_compares_and_its_negation_is_true() -> None:
    for op in OPERATORS:
        assert not constraints_match(f"(golem.missing{op}1)", OFFER)
        assert constraints_match(f"(!(golem.missing{op}1))", OFFER)
    assert not constraints_match("(golem.missing=*)", OFFER)
    assert constraints_match("(!(golem.missing=*))", OFFER)


@pytest.mark.parametrize(
    ("text", "expected", "value"),
    [
        ("", And(()), True),
        ("   \n\t ", And(()), True),
        ("()", And(()), True),
        ("( \n )", And(()), True),
        ("(&)", And(()), True),
        ("(|)", Or(()), False),
        ("(!())", Not(And(())), False),
        ("(!(|))", Not(Or(())), True),
        ("(&()(a=*))", And((And(()), Presence("a"))), False),
    ],
)
def test_empty_filters(text: str, expected: Constraint, value: bool) -> None:
    c = parse_constraints(text)
    assert c == expected
    assert c.matches({}) is value


def test_canonical_text() -> None:
    assert str(And(())) == "()"
    assert str(Or(())) == "(|)"
    assert str(And((Comparison("a", "=", "1"), Comparison("b", ">=", "2")))) == "(&(a=1)(b>=2))"
    assert str(Not(Or((Presence("a"),)))) == "(!(|(a=*)))"
    assert parse_constraints("(&(a=1)(b>=2))") == And((Comparison("a", "=", "1"), Comparison("b", ">=", "2")))


def test_values_may_hold_odd_characters() -> None:
    c = parse_constraints("(golem.node.id.name=a(b & c|!d*)")
    assert c == Comparison("golem.node.id.name", "=", "a(b & c|!d*")
    assert c.matches({"golem.node.id.name": "a(b & c|!d-and-more"})
    assert parse_constraints("(a=!x)") == Comparison("a", "=", "!x")


# --- all_of / any_of ----------------------------------------------------------------------------------


def test_all_of() -> None:
    a, b = Comparison("a", "=", "1"), Presence("b")
    assert all_of() == And(())
    assert all_of(a) is a
    assert all_of("(a=1)") == a
    assert all_of(a, "(b=*)") == And((a, b))
    assert all_of("", a, And(()), "  ()  ") == a
    assert all_of("", "(&)") == And(())
    assert all_of(And((a, b)), a) == And((And((a, b)), a))  # non-empty parts are kept as they are
    assert all_of(Or(()), a) == And((Or(()), a))  # only neutral parts are dropped


def test_any_of() -> None:
    a, b = Comparison("a", "=", "1"), Presence("b")
    assert any_of() == Or(())
    assert any_of(a) is a
    assert any_of(a, "(b=*)") == Or((a, b))
    assert any_of("(|)", a, Or(())) == a
    assert any_of(And(()), a) == Or((And(()), a))
    assert any_of(a, b).matches({"b": 0})
    assert not any_of().matches(OFFER)


def test_all_of_with_bad_text_raises() -> None:
    with pytest.raises(ConstraintSyntaxError):
        all_of("(a=1)", "(b=")


# --- the classes refuse what they could not print -----------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Comparison("a", "=>", "1"),
        lambda: Comparison("a", "==", "1"),
        lambda: Comparison("a b", "=", "1"),
        lambda: Comparison("", "=", "1"),
        lambda: Comparison("a", "=", ""),
        lambda: Comparison("a", "=", " 1"),
        lambda: Comparison("a", "=", "1)"),
        lambda: Comparison("a", "=", "=1"),
        lambda: Comparison("a", "<", ">1"),
        lambda: Comparison("a", "=", "*"),
        lambda: Presence("a(b"),
        lambda: And(("(a=1)",)),  # type: ignore[arg-type]
        lambda: Or([Presence("a"), 3]),  # type: ignore[list-item]
    ],
)
def test_constructors_refuse_unprintable_filters(build: Callable[[], Constraint]) -> None:
    with pytest.raises(ConfigurationError):
        build()


def test_constructors_accept_lists_and_the_results_are_hashable() -> None:
    c = And([Presence("a"), Or([Comparison("b", ">", "*")])])
    assert c.parts == (Presence("a"), Or((Comparison("b", ">", "*"),)))
    assert hash(c) == hash(parse_constraints(str(c)))


# --- syntax errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("(a=1", 4, "expected ')' to close the filter opened at position 0"),
        ("(&(a=1)(b=2)", 12, "expected ')' to close the filter opened at position 0"),
        ("(&(a=1)(|(b=2)", 14, "expected ')' to close the filter opened at position 7"),
        ("(&(a=1)(|(b=2)(c=3)", 19, "expected ')' to close the filter opened at position 7"),
        ("(a=>1)", 2, "unknown operator '=>'"),
        ("(a==1)", 2, "unknown operator '=='"),
        ("(a!=1)", 2, "unknown operator '!='"),
        ("(a ~= 1)", 3, "unknown operator '~='"),
        ("(a<>1)", 2, "unknown operator '<>'"),
        ("(=1)", 1, "missing attribute name"),
        ("(&( >=1))", 4, "missing attribute name"),
        ("(a=1))", 5, "unexpected text after the end of the filter"),
        ("(a=1) (b=2)", 6, "unexpected text after the end of the filter"),
        ("(a=1)x", 5, "unexpected text after the end of the filter"),
        ("a=1", 0, "expected '(' to start a filter"),
        (")", 0, "expected '(' to start a filter"),
        ("(a b=1)", 3, "expected an operator"),
        ("(a)", 2, "expected an operator"),
        ("(a", 2, "expected an operator"),
        ("(a:b=1)", 2, "unexpected ':' in attribute name 'a'"),
        ("(a=)", 3, "missing value after '='"),
        ("(a>=  \n)", 7, "missing value after '>='"),
        ("((a=1))", 1, "unexpected '('"),
        ("(", 1, "expected ')' to close the filter opened at position 0"),
        ("(&(a=1)x)", 7, "expected '(' to start a filter or ')' to close the filter opened at position 0"),
        ("(&(a=1)", 7, "expected ')' to close the filter opened at position 0"),
        ("(!)", 2, "expected '(' to start the filter that '!' negates"),
        ("(!a=1)", 2, "expected '(' to start the filter that '!' negates"),
        ("(!(a=1)(b=1))", 7, "expected ')' to close the filter opened at position 0"),
        ("(!(a=1)", 7, "expected ')' to close the filter opened at position 0"),
        ("(&(a=1)\n\t(b>=2)\n\t(c=>3))", 19, "unknown operator '=>'"),
    ],
)
def test_syntax_errors_point_at_the_offending_character(text: str, position: int, message: str) -> None:
    with pytest.raises(ConstraintSyntaxError) as info:
        parse_constraints(text)
    error = info.value
    assert error.position == position
    assert message in error.reason
    assert error.text == text
    assert isinstance(error, ConfigurationError)


def test_the_error_shows_a_caret_under_the_offending_character() -> None:
    with pytest.raises(ConstraintSyntaxError) as info:
        parse_constraints("(&(a=1)(b=>2))")
    assert str(info.value) == (
        "unknown operator '=>': use one of =, <, <=, >, >= at position 9:\n  (&(a=1)(b=>2))\n           ^"
    )


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    text = "(!" * 1000 + "(a=1)" + ")" * 1000
    with pytest.raises(ConstraintSyntaxError, match="nested more than") as info:
        parse_constraints(text)
    assert text[info.value.position] == "("
    shallow = "(!" * 100 + "(a=1)" + ")" * 100
    assert parse_constraints(shallow).matches({"a": 1})
