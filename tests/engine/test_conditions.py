from __future__ import annotations

import pickle
import re
import sys
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.definition.conditions import (
    MAX_LIST_DEPTH,
    Condition,
    is_template_condition,
    parse_condition,
    resolve_path,
)
from engine.errors import ConditionError

REVIEW = {
    "steps": {"review": {"output": {"approved": True, "reviewer": "ana", "score": 7}}},
    "event": {
        "alerts": [
            {"host": {"name": "web-01"}, "severity": "high"},
            {"host": {"name": "db-01"}, "severity": "low"},
        ],
        "kibana": {"alert": {"rule-name": "Brute force"}},
    },
    "tags": ["prod", "eu", "pci"],
    "count": 5,
    "ratio": 0.25,
    "nothing": None,
    "empty": [],
    "text_count": "12",
    "created": "2024-05-01T10:00:00Z",
}


def holds(text: str, scope: dict[str, Any] | None = None) -> bool:
    return parse_condition(text).evaluate(REVIEW if scope is None else scope)


def error_for(text: str) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert caught.value.condition == text
    return caught.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps.review.output.approved : true", True),
        ("steps.review.output.approved : false", False),
        ("steps.review.output.reviewer : ana", True),
        ("steps.review.output.reviewer : Ana", False),  # case-sensitive
        ('steps.review.output.reviewer : "ana"', True),
        ("steps.review.output.reviewer:ana", True),
        ("count : 5", True),
        ("count : 5.0", True),
        ("count : 6", False),
        ("ratio : 0.25", True),
        ("nothing : null", False),  # null equals nothing, as in Kibana
        ('nothing : "null"', False),
        ("count : null", False),
        ("steps.review.output : ana", False),  # a mapping equals no value
    ],
)
def test_field_equals_value(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_quoted_values_keep_escapes_spaces_and_keywords_literal() -> None:
    scope = {"title": 'say "hi" and go', "op": "or", "star": "a*", "path": "c:\\tmp"}
    assert holds(r'title : "say \"hi\" and go"', scope)
    assert holds('op : "or"', scope)
    assert holds('star : "a*"', scope)
    assert not holds('star : "a*"', {"star": "abc"})
    assert holds(r'path : "c:\\tmp"', scope)


@pytest.mark.parametrize(
    ("text", "scope", "expected"),
    [
        ("approved : true", {"approved": True}, True),
        ("approved : true", {"approved": "true"}, True),
        ("approved : TRUE", {"approved": True}, False),  # only the text "true" is true
        ("approved : TRUE", {"approved": False}, True),  # ...so anything else equals false
        ("approved : no", {"approved": False}, True),
        ('approved : "true"', {"approved": True}, True),
        ("approved : true", {"approved": 1}, False),
        ("approved : false", {"approved": False}, True),
        ("approved : false", {"approved": 0}, False),
        ("count : 5", {"count": 5}, True),
        ("count : 5", {"count": 5.0}, True),
        ("count : 5", {"count": "5"}, True),
        ('count : "5"', {"count": 5}, True),
        ("count : 5", {"count": True}, False),
        ("count : five", {"count": 5}, False),
        ("count : -2.5e1", {"count": -25}, True),
        ("count : 5abc", {"count": 5}, True),  # parseFloat reads the number it starts with
        ("count : 05", {"count": "5"}, False),  # a string compares as text
    ],
)
def test_values_are_coerced_like_kibana(text: str, scope: dict[str, Any], expected: bool) -> None:
    assert holds(text, scope) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count : *", True),
        ("tags : *", True),
        ("steps.review : *", True),
        ("nothing : *", False),
        ("empty : *", False),
        ("missing : *", False),
        ("steps.review.output.missing : *", False),
        ("not missing : *", True),
    ],
)
def test_star_means_the_field_exists_and_is_not_null(text: str, expected: bool) -> None:
    assert holds(text) is expected


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("host : web-*", "web-01", True),
        ("host : web-*", "web-", True),
        ("host : web-*", "db-01", False),
        ("host : web-*", "WEB-01", False),
        ("host : *-01", "db-01", True),
        ("host : w*b*", "web-01", True),
        ("host : w*x*", "web-01", False),
        ("host : a.c*", "abc", False),  # '.' is literal, not a regex dot
        ("host : a+*", "aaa", False),
        ("host : [ab]*", "a", False),
        ("host : [ab]*", "[ab]x", True),
        (r"host : web\*", "web*", True),
        (r"host : web\*", "web-01", False),
        ("host : web-*", 5, False),
        ("host : 5*", 55, True),  # a number matches as its text
        ("host : 5*", 65, False),
        ("host : 2.5*", 2.5, True),
        ("host : 2.0", 2.0, True),
        ("host : 2*", 2.0, True),  # 2.0 is the text "2"
        ("host : 2.*", 2.0, False),
        ("host : tr*", True, True),
        ("host : *", {"a": 1}, True),  # an object exists
        ("host : x*", {"a": 1}, True),  # ...whatever the pattern
        # a prefix, a suffix, an infix: the first piece is anchored at the start, the last at the end
        ("host : *failed*login*", "sshd: failed password; login refused", True),
        ("host : *failed*login*", "login failed", False),  # pieces in order
        ("host : failed*", "sshd failed", False),
        ("host : *failed", "failed sshd", False),
        ("host : *fail*", "fail", True),
        ("host : a*b*c", "abc", True),
        ("host : a*b*c", "a-b-c-c", True),
        ("host : a*b*c", "a-b-c-d", False),
        ("host : a*b*c", "acb", False),
        ("host : a*a", "a", False),  # the first and the last piece may not overlap
        ("host : a*a", "aa", True),
        ("host : ab*ba", "aba", False),
        ("host : *aab", "aaab", True),  # a suffix after a false start
        ("host : *ab*ab", "abab", True),
        ("host : *ab*ab", "aba", False),
        # empty pieces: stars next to each other, or at both ends
        ("host : **", "", True),
        ("host : web**01", "web01", True),
        ("host : web**01", "web-01", True),
        ("host : *-*", "-", True),
        ("host : *-*", "", False),
        # `?` is a literal character, as in Kibana (only `*` is a KQL wildcard)
        ("host : web-0?", "web-01", False),
        ("host : web-0?", "web-0?", True),
        ("host : ?*", "?x", True),
        ("host : ?*", "x", False),
        ("host : *b?d*", "ab?de", True),
        ("host : *b?d*", "abcde", False),
        ("host : a*", "a\nb", True),  # a star spans line breaks
        # case-sensitive, as an equality is
        ("host : *LOGIN*", "failed login", False),
        ("host : *Login*", "failed Login", True),
    ],
)
def test_wildcards_match_whole_strings_without_regex(text: str, value: Any, expected: bool) -> None:
    assert holds(text, {"host": value}) is expected


def _as_regex(pattern: str) -> str:
    # Kibana's wildcard test as a regex: `*` is any run of characters, everything else literal.
    return "".join(".*" if c == "*" else re.escape(c) for c in pattern)


@given(st.text(alphabet="ab*?", min_size=1, max_size=8), st.text(alphabet="ab", max_size=12))
def test_wildcards_agree_with_a_whole_string_regex(pattern: str, value: str) -> None:
    expected = re.fullmatch(_as_regex(pattern), value, re.DOTALL) is not None
    if pattern == "*":
        expected = True  # `field : *` is "exists": any non-null value
    assert holds(f"host : {pattern}", {"host": value}) is expected


def test_a_wildcard_reads_the_whole_string_in_linear_time() -> None:
    long = "x" * 1_000_000 + "failed login"
    assert holds("msg : *failed*login", {"msg": long})
    assert not holds("msg : *failed*login*x", {"msg": long})
    assert holds("msg : *login", {"msg": long})


def test_a_path_through_lists_nested_too_deep_matches_nothing() -> None:
    def nest(depth: int) -> Any:
        value: Any = {"name": "web-01"}
        for _ in range(depth):
            value = [value]
        return value

    assert holds("host.name : web-01", {"host": nest(MAX_LIST_DEPTH)})
    assert not holds("host.name : web-01", {"host": nest(MAX_LIST_DEPTH + 1)})
    assert not holds("host.name : web-01", {"host": nest(sys.getrecursionlimit() * 2)})


def test_lists_nested_deeper_than_the_recursion_limit_evaluate() -> None:
    nested: Any = "web-01"
    for _ in range(sys.getrecursionlimit() * 2):
        nested = [nested]
    assert holds("host : web-*", {"host": nested})
    assert not holds("host : db-*", {"host": nested})


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("n > 5", "1" * 5000, False),  # text against text: "1…" sorts before "5"
        ("n < 5", "1" * 5000, True),
        ("n > 5", 10**400, True),  # a number past a double's range is Infinity
        ("n : 5", 5 * 10**400, False),
        ("n < 7", "6." + "0" * 5000, True),
        ("n : 1" + "0" * 400, 10**400, True),  # both Infinity, as in JavaScript
    ],
)
def test_long_numbers_and_strings_compare_without_raising(text: str, value: Any,
                                                          expected: bool) -> None:
    assert holds(text, {"n": value}) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count < 6", True),
        ("count < 5", False),
        ("count <= 5", True),
        ("count > 4.5", True),
        ("count >= 5", True),
        ("count > 5", False),
        ("count>=5", True),
        ("ratio < 1", True),
        ("text_count > 9", False),  # a string compares as text: "12" sorts before "9"
        ("text_count > 10", True),
        ('created > "2024-01-01"', True),
        ('created < "2024-05-01T09:00:00Z"', False),
        ("created < 2024-06", True),
        ("created > 2024", True),  # text: "2024-05-01…" sorts after "2024"
        ("steps.review.output.reviewer > 5", True),  # text: "a" sorts after "5"
        ("steps.review.output.approved > 0", True),  # true > false: "0" is not "true"
        ("steps.review.output.approved > true", False),
        ("nothing < 1", False),
        ("steps.review < 1", False),
        ("missing < 1", False),
        ("count < abc", False),
    ],
)
def test_range_operators(text: str, expected: bool) -> None:
    assert holds(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count : 5 and tags : prod", True),
        ("count : 5 AND tags : nope", False),
        ("count : 4 or tags : prod", True),
        ("count : 4 Or tags : nope", False),
        ("not count : 4", True),
        ("NOT count : 5", False),
        # not binds tighter than and, and tighter than or
        ("count : 4 or count : 5 and tags : nope", False),
        ("count : 5 or count : 4 and tags : nope", True),
        ("not count : 4 and tags : prod", True),
        ("not count : 5 or tags : prod", True),
        ("(count : 4 or count : 5) and tags : nope", False),
        ("count : 4 or (count : 5 and tags : nope)", False),
        ("not (count : 5 and tags : nope)", True),
        ("((count : 5))", True),
    ],
)
def test_boolean_operators_and_precedence(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_keywords_inside_words_are_plain_words() -> None:
    scope = {"order": "android", "notes": "not-approved", "origin": "orange"}
    assert holds("order : android and notes : not-approved and origin : orange", scope)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tags : (eu or us)", True),
        ("tags : (us or apac)", False),
        ("tags : (prod and pci)", True),  # on a list, `and` means all are present
        ("tags : (prod and dev)", False),
        ("tags : (prod and not dev)", True),
        ("tags : (prod and (eu or us))", True),
        ("count : (4 or 5 or 6)", True),
        ("count : (4 or 6)", False),
        ("steps.review.output.reviewer : (bob or ana)", True),
        ('steps.review.output.reviewer : ("bob" or "ana")', True),
        ("missing : (not x)", True),  # as `not missing : x`
        ("missing : (x or y)", False),
    ],
)
def test_value_groups(text: str, expected: bool) -> None:
    assert holds(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tags : eu", True),
        ("tags : us", False),
        ("tags : e*", True),
        ("event.alerts.host.name : db-01", True),  # a name reads every item of a list
        ("event.alerts.host.name : mail-*", False),
        ("event.alerts.severity : (high and low)", True),  # the values found, as one list
        ("event.alerts[1].host.name : db-01", True),
        ("event.alerts[0].host.name : web-*", True),
        ("event.alerts.0.severity : high", True),
        ("event.alerts[2].host.name : *", False),
        ("event.kibana.alert.rule-name : \"Brute force\"", True),
        ("not event.kibana.alert.rule-name : x", True),
    ],
)
def test_lists_indexes_and_dashes(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_lists_match_any_element_for_every_operator() -> None:
    scope = {"scores": [1, 9, None], "nested": [[1, 2], [3]]}
    assert holds("scores > 8", scope)
    assert not holds("scores > 9", scope)
    assert holds("scores : 9", scope)
    assert holds("nested : 3", scope)
    assert holds("scores : *", scope)
    assert not holds("nones : *", {"nones": [None, None]})


@pytest.mark.parametrize(
    "text",
    [
        "missing : x",
        "missing : *",
        "missing < 3",
        "steps.nope.output.approved : true",
        "count.deeper : 5",
        "tags.x : prod",
        "tags[9] : prod",
    ],
)
def test_missing_fields_make_comparisons_false_and_negations_true(text: str) -> None:
    assert holds(text) is False
    assert holds(f"not {text}") is True


def test_whole_condition_may_be_a_boolean_literal() -> None:
    assert holds("true", {}) is True
    assert holds("  FALSE ", {}) is False
    assert holds("false or count : 5") is True
    assert holds(" true\n", {}) is True  # trimmed as JavaScript trims
    assert parse_condition(True).evaluate({}) is True
    assert parse_condition(False).evaluate({}) is False
    assert parse_condition(True) != parse_condition("true")  # a YAML boolean is no text


def test_a_dotted_key_is_not_a_path() -> None:
    # Kibana reads one property per segment: "kibana.alert.rule.name" as one key is not found.
    alert = {"kibana.alert.rule.name": "Brute force", "host": {"os.name": "linux"}}
    assert not holds('kibana.alert.rule.name : "Brute force"', alert)
    assert not holds("host.os.name : linux", alert)
    assert holds("host['os.name'] : linux", alert)


def test_references_list_field_paths_with_indexes_normalized() -> None:
    condition = parse_condition(
        "steps.review.output.approved : true and not (event.alerts[0].host.name : web-* "
        "or count > 3 or tags : (a or b) or x : *) or true"
    )
    assert condition.references == frozenset(
        {"steps.review.output.approved", "event.alerts.0.host.name", "count", "tags", "x"}
    )
    assert parse_condition("true").references == frozenset()


def test_resolve_path() -> None:
    assert resolve_path(REVIEW, "steps.review.output.score") == (True, 7)
    assert resolve_path(REVIEW, "event.alerts[1].host.name") == (True, "db-01")
    assert resolve_path(REVIEW, "event.alerts.1.host.name") == (True, "db-01")
    assert resolve_path(REVIEW, "nothing") == (True, None)
    assert resolve_path(REVIEW, "event.alerts[5]") == (False, None)
    assert resolve_path(REVIEW, "tags.first") == (False, None)
    assert resolve_path(REVIEW, "count.value") == (False, None)
    assert resolve_path({"a": "text"}, "a.0") == (False, None)
    assert resolve_path({"a": ("x", "y")}, "a[1]") == (True, "y")
    assert resolve_path(REVIEW, "event.alerts.host.name") == (True, ["web-01", "db-01"])
    assert resolve_path(REVIEW, "event.alerts.severity.x") == (False, None)
    items = {"i": [{"v": [1, [2]]}, {"v": 3}, {"w": 4}, {"v": [5]}]}
    assert resolve_path(items, "i.v") == (True, [1, [2], 3, 5])  # one level merged
    assert resolve_path({"i": [{"v": [[1]]}]}, "i.v") == (True, [[1]])  # a single find as is
    assert resolve_path({"i": [1, 2]}, "i.01") == (True, 2)


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("a :", 4, "expected a value at column 4, found the end"),
        ("a : (b or", 5, "unclosed '(' at column 5"),
        ('a : "unfinished', 5, "unterminated string starting at column 5"),
        ('a : "x" and b : "y', 17, "unterminated string starting at column 17"),
        ("a : (b or c", 5, "unclosed '(' at column 5"),
        ("(a : b", 1, "unclosed '(' at column 1"),
        ("a : b)", 6, "unmatched ')' at column 6"),
        ("a : 10:00", 7, "expected 'and', 'or' or the end of the condition at column 7"),
        ("a : b c : d", 9, "expected 'and', 'or' or the end of the condition at column 9"),
        ("a < ", 4, "expected a value at column 4, found the end"),
        ("a : b and ", 10, "expected a field or a value at column 10, found the end"),
        ("a : )", 5, "expected a value at column 5, found ')'"),
        ("a : cannot be", 8, "found the keyword 'not' (quote a value that holds it)"),
        ("not not a : b", 5, "found the keyword 'not'"),
        ("a : c:\\tmp", 6, "expected 'and', 'or'"),
        ("a : c\\d", 6, "'\\' at column 6 escapes only a special character"),
        ("(" * 101 + "a : b" + ")" * 101, 101, "nested more than 100 deep at column 101"),
        ("${{ inputs.go }}", 1, "the template engine evaluates it"),
    ],
)
def test_syntax_errors_say_what_was_expected_and_where(
    text: str, column: int, message: str
) -> None:
    error = error_for(text)
    assert error.column == column
    assert message in str(error)


def test_a_hundred_nested_parentheses_parse() -> None:
    assert holds("(" * 100 + "count : 5" + ")" * 100)
    assert holds("not (" * 49 + "count : 4" + ")" * 49)  # each `not (` nests twice


def test_parse_condition_is_cached_by_text() -> None:
    first = parse_condition("count : 5 and tags : prod")
    assert parse_condition("count : 5 and tags : prod") is first
    assert parse_condition("count : 5  and tags : prod") is not first


def test_conditions_are_values_that_survive_pickling() -> None:
    condition = parse_condition("event.alerts[0].host.name : web-* and count >= 5")
    assert condition == Condition("event.alerts[0].host.name : web-* and count >= 5")
    assert hash(condition) == hash(Condition(condition.text))
    restored = pickle.loads(pickle.dumps(condition))
    assert restored == condition
    assert restored.evaluate(REVIEW) is True
    with pytest.raises(ConditionError):
        Condition("a :")


def test_parsing_and_evaluating_are_fast() -> None:
    texts = [f"steps.s{i}.output.approved : true and count >= {i}" for i in range(200)]
    started = time.perf_counter()
    for text in texts:
        parse_condition(text).evaluate(REVIEW)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ steps.review.output.approved }}", False),  # text: rendered, then read as KQL
        ("${{ inputs.enabled }}", True),
        ("${{inputs.enabled}}", True),
        ("  ${{ x | default: false }}  ", False),  # as Elastic: "$" must come first
        ("${{ a }} and {{ b }}", True),
        ("${{ a }} and b", False),
        ("a : {{ x }}", False),
        ("approved : true", False),
        ("{{ unfinished", False),
    ],
)
def test_is_template_condition(text: str, expected: bool) -> None:
    assert is_template_condition(text) is expected


@given(st.text(alphabet='ab:*()<>=" \\-.[]0{}$', max_size=40) | st.text(max_size=40))
def test_any_text_parses_or_raises_condition_error_with_a_column(text: str) -> None:
    try:
        condition = parse_condition(text)
    except ConditionError as error:
        assert 1 <= error.column <= len(text) + 1
    else:
        assert isinstance(condition.evaluate({"a": [1, "b", None, {"c": 2}]}), bool)


@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.booleans())
def test_ranges_compare_numbers_as_numbers_and_strings_as_text(
    actual: int, bound: int, as_text: bool
) -> None:
    # A number compares as a number; a numeric string as text, as JavaScript compares them.
    x: Any = str(actual) if as_text else actual
    y: Any = str(bound) if as_text else bound
    scope = {"x": x}
    assert holds(f"x < {bound}", scope) is (x < y)
    assert holds(f"x <= {bound}", scope) is (x <= y)
    assert holds(f"x > {bound}", scope) is (x > y)
    assert holds(f"x >= {bound}", scope) is (x >= y)
    assert holds(f"x : {bound}", scope) is (x == y)


@given(st.booleans(), st.booleans(), st.booleans())
def test_boolean_logic_matches_python(a: bool, b: bool, c: bool) -> None:
    scope = {"a": a, "b": b, "c": c}
    assert holds("a : true or b : true and c : true", scope) is (a or (b and c))
    assert holds("not a : true and b : true", scope) is ((not a) and b)
    assert holds("not (a : true or b : true)", scope) is (not a and not b)
    assert holds("(a : true or b : true) and not c : true", scope) is ((a or b) and not c)
