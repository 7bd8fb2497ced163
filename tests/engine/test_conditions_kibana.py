"""Conditions agree with Kibana: what its KQL grammar parses, and what its workflow engine
makes of the result against a run's context.

The cases are ours, worked out from Kibana's grammar (``kbn-es-query``'s
``kuery/grammar/grammar.peggy``) and the rules of its workflow engine's KQL evaluator
(``evaluateKql``: free text, wildcard field names and nested queries match nothing; only
``*`` is a wildcard); the comment on a case says how Kibana reads it.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from typing import Any

import pytest

from engine.definition.conditions import parse_condition
from engine.definition.loader import TemplateCondition, load_workflow, validate_paths
from engine.errors import ConditionError
from engine.state.execution import ExecutionStatus, StepStatus

PARSES = [
    # fields and values
    ("status: active", "field, value"),
    ("status:active", "no spaces needed"),
    ("status : active", "spaces around ':'"),
    ("user.name: John Doe", "an unquoted value runs over spaces: 'John Doe'"),
    ("user.name: J*n Doe", "a wildcard in a multi-word value"),
    ("user.name: John Doe and status: active", "' and ' ends the value"),
    ('user.name: "John Doe"', "quoted value"),
    ('"user.name": "John Doe"', "quoted field"),
    ("first name: John", "a field name may hold spaces: 'first name'"),
    ("users[0].name: Alice", "brackets are field-name characters"),
    ("a['b-c']: x", "quotes inside brackets too"),
    ("count: 42", "numbers are text until compared"),
    ("flag: true", "typed true"),
    ("value: null", "typed null"),
    ("host: web-01", "dashes"),
    ("v: 1.2.3", "dots in values"),
    ("url: https\\://example.com/x", "an escaped ':'"),
    ("name: J?hn", "'?' is an ordinary character"),
    ("a: b or", "'or' with nothing after it is part of the value 'b or'"),
    ("a: b and", "likewise 'b and'"),
    ("a: notable", "'not' inside a word"),
    ("a: android", "'and' inside a word"),
    ("order: origin", "'or' at the start of words"),
    ("not: x", "'not' as a field name (no space after it)"),
    ("a: \\or", "an escaped keyword"),
    ("a: \\(x\\)", "escaped parentheses"),
    ("a: x\\*", "an escaped star is a literal star"),
    ("a: \\u0041", "a unicode escape"),
    ("a: x\\ty", "an escaped tab"),
    ('a: "c:\\tmp\\x"', "a backslash inside quotes is itself unless it escapes"),
    ('a: "say \\"hi\\""', "escaped quotes"),
    ("a: *", "exists"),
    ("a: web-*", "suffix wildcard"),
    ("a: *-01", "leading wildcard"),
    ("a: **", "two stars"),
    ("a: (x or y)", "value group"),
    ("a: (x and not y)", "not inside a value group"),
    ("a: (x or (y and z))", "nested value groups"),
    ('a: ("x y" or z)', "quoted values in a group"),
    ("a: ( x or y )", "spaces inside the group's parentheses"),
    ("a: (not x)", "a group of one negation"),
    # ranges
    ("count > 5", "range"),
    ("count>=5", "range without spaces"),
    ("count <= -1.5", "negative decimals"),
    ("date < 2024-01-01", "dates"),
    ('date < "2024-01-01T00:00:00Z"', "quoted range value"),
    ("date < now-1d", "date math is text to the grammar"),
    ("name < John Doe", "a multi-word range value"),
    # logic
    ("a: 1 and b: 2", "and"),
    ("a: 1 AND b: 2", "keywords in any case"),
    ("a: 1 Or b: 2", "mixed case"),
    ("not a: 1", "not"),
    ("NOT a: 1", "NOT"),
    ("not (a: 1 or b: 2)", "not before a group"),
    ("a: 1 or b: 2 and c: 3", "and binds tighter"),
    ("(a: 1)", "parentheses"),
    ("((a: 1))", "nested parentheses"),
    ("( a: 1 )", "spaces inside parentheses"),
    ("a: 1\tand\nb: 2", "tabs and newlines are spaces"),
    ("  a: 1  ", "leading and trailing spaces"),
    # what Kibana parses and its workflow engine matches nothing with
    ("approved", "free text"),
    ('"two words"', "quoted free text"),
    ("web*", "free text with a wildcard"),
    ("and b", "'and' at the start is a word: free text 'and b'"),
    ("true and a: 1", "'true' here is free text"),
    ("user.*: john", "a wildcard in a field name"),
    ("*: john", "any field"),
    ("items:{ name: x and price > 5 }", "nested query"),
    ("items: { name: x }", "nested query with spaces"),
    ("a:{b:{c: d}}", "nested inside nested"),
    ("", "empty: match all in KQL"),
    ("   ", "only spaces"),
    ("a = b", "no '=' in KQL: the whole text is free text"),
    ("a: {b}", "a nested query of the free text 'b'"),
    ("a: b and or c: d", "'or c' after 'and ' is a field name: 'or' needs a space before it"),
    ("a: b or and c: d", "likewise the field 'and c'"),
    # whole-condition booleans (Elastic reads a trimmed "true"/"false" as the boolean)
    ("true", "the boolean true"),
    (" false ", "the boolean false"),
]

DOES_NOT_PARSE = [
    ("a:", "no value"),
    ("a: ", "no value after spaces"),
    ("a <", "no range value"),
    ("a: )", "no value before ')'"),
    ("a: b)", "unmatched ')'"),
    ("(a: b", "unclosed '('"),
    ("a: (b or c", "unclosed value group"),
    ('a: "open', "unterminated string"),
    ('a: "x\\"', "the closing quote is escaped"),
    ("a: b c: d", "a second ':' after a multi-word value"),
    ("a: 10:00", "an unescaped ':' in a value"),
    ("a: b and ", "'and ' with nothing after it"),
    ("a: b or ", "'or ' with nothing after it"),
    ("a: cannot be", "'not ' is a keyword even inside a word"),
    ("a: not b", "not needs a value group after ':'"),
    ("not not a: b", "not takes a sub-query, not another not"),
    ("not(a: b)", "not needs a space after it"),
    ("a: (not not b)", "likewise in a value group"),
    ("a: \\x", "a backslash escapes only special characters and keywords"),
    ("a: c:\\tmp", "an unescaped ':'"),
    ("a: \\u12", "a short unicode escape"),
    ("a: b}", "a stray '}'"),
    ("a < b < c", "a second range operator"),
    ('a: "x" y', "text after a quoted value"),
    ("a: b and (", "an open parenthesis after 'and '"),
    ("(", "lone '('"),
    ("a: ()", "an empty value group"),
]


@pytest.mark.parametrize(("text", "kibana"), PARSES, ids=[row[0] for row in PARSES])
def test_parses_as_in_kibana(text: str, kibana: str) -> None:
    assert isinstance(parse_condition(text).evaluate({}), bool)


@pytest.mark.parametrize(("text", "kibana"), DOES_NOT_PARSE,
                         ids=[row[0] for row in DOES_NOT_PARSE])
def test_does_not_parse_as_in_kibana(text: str, kibana: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert 1 <= caught.value.column <= len(text) + 1


CONTEXT: dict[str, Any] = {
    "user": {"name": "John Doe", "first name": "Ann"},
    "status": "active",
    "count": 42,
    "ratio": 0.5,
    "flag": True,
    "nothing": None,
    "tags": ["prod", "eu"],
    "users": [{"name": "Alice"}, {"name": "Bob"}],
    "host": "web-01",
    "q": "J?hn",
    "star": "x*",
    "path": "c:\\tmp",
    "b-c": "dash",
    "a": {"b-c": "x"},
    "null": "a field named null",
    "items": [{"name": "x", "price": 9}],
}

EVALUATES = [
    ("user.name: John Doe", True, "multi-word value"),
    ("user.name: John  Doe", False, "the spaces inside a value count"),
    ("user.name: John", False, "a value is the whole string"),
    ("user.name: J*n Doe", True, "wildcard over a multi-word value"),
    ("user.name: J* D*", True, "two wildcards"),
    ("user.name: *Doe", True, "leading wildcard"),
    ("user.name: J??n Doe", False, "'?' is literal"),
    ("q: J?hn", True, "'?' is literal: it matches itself"),
    ("q: J?*", True, "a literal '?' before a wildcard"),
    ("star: x\\*", True, "an escaped star is a literal star"),
    ("star: x*", True, "a wildcard star matches a literal one too"),
    ('star: "x*"', True, "a quoted star is literal"),
    ('host: "web-*"', False, "quoted: no wildcard"),
    ("host: web-*", True, "wildcard"),
    ('path: "c:\\tmp"', False, "'\\t' inside quotes is a tab"),
    ('path: "c:\\\\tmp"', True, "an escaped backslash"),
    ("path: c\\:\\\\tmp", True, "escapes outside quotes"),
    ('"user.first name": Ann', True, "a quoted field with a space"),
    ("user.first name: Ann", True, "an unquoted field with a space"),
    ("users[1].name: Bob", True, "an index in brackets"),
    ("users.0.name: Alice", True, "an index as a segment"),
    ("a['b-c']: x", True, "a quoted key in brackets"),
    ("status: active and count > 40", True, "and"),
    ("status: inactive or count: 42", True, "or"),
    ("not status: inactive", True, "not"),
    ("status: (inactive or active)", True, "value group"),
    ("tags: (prod and eu)", True, "and over a list: both present"),
    ("tags: (prod and not us)", True, "not inside a group"),
    ("flag: true", True, "boolean"),
    ("count >= 42", True, "range"),
    ("count: *", True, "exists"),
    ("nothing: *", False, "null does not exist"),
    ("missing: *", False, "missing does not exist"),
    ("not missing: x", True, "a negated missing field"),
    # parsed by KQL, matched by nothing in Kibana's workflow engine
    ("active", False, "free text"),
    ("John Doe", False, "free text over spaces"),
    ("null", False, "free text 'null' (a value, though a key is named null)"),
    ("not active", True, "negated free text"),
    ("user.*: John Doe", False, "a wildcard field name"),
    ("*: active", False, "any field"),
    ("items:{ name: x }", False, "nested query"),
    ("not items:{ name: x }", True, "negated nested query"),
    ("", False, "the empty condition"),
    ("true and status: active", False, "'true' inside KQL is free text"),
    ("true", True, "the whole condition 'true'"),
    ("false", False, "the whole condition 'false'"),
    ("  true\n", True, "trimmed"),
]


@pytest.mark.parametrize(("text", "expected", "kibana"), EVALUATES,
                         ids=[row[0] or "(empty)" for row in EVALUATES])
def test_evaluates_as_kibanas_workflow_engine(text: str, expected: bool, kibana: str) -> None:
    assert parse_condition(text).evaluate(CONTEXT) is expected


# Kibana's workflow engine (evaluateKql in @kbn/eval-kql) case by case: each row is a
# condition, the context it runs against and what Kibana answers, with why. Worked out
# from its evaluator and its tests; the values are ours.
NOW = dt.datetime(2025, 3, 12, 9, 30, tzinfo=dt.UTC)
ALERTS = {"alerts": [{"host": {"name": "web-01"}, "score": 40, "tags": ["ssh", "prod"]},
                     {"host": {"name": "db-01"}, "score": [75, 12], "tags": ["db"]}]}
CASES: list[tuple[str, dict[str, Any], bool, str]] = [
    # a field is a path, read a property at a time
    ("user: ana", {"user": {"name": "ana"}}, False, "an object equals no value"),
    ("a.b.c: x", {"a": {"b": {"c": "x"}}}, True, "nested objects"),
    ("a.b.c: x", {"a.b.c": "x"}, False, "a dotted key is not a path"),
    ("a.b.c: x", {"a": {"b.c": "x"}}, False, "nor half of one"),
    ("out.value: true", {"out": "hello"}, False, "no path through a string"),
    ("out.value: true", {"out": 42}, False, "nor through a number"),
    ("out.value: true", {"out": None}, False, "nor through null"),
    ("out.value.deeper > 5", {"out": "hello"}, False, "a range through a string"),
    # through a list: an index picks an item, a name reads them all
    ("alerts[1].host.name: db-01", ALERTS, True, "an index in brackets"),
    ("alerts.0.host.name: web-01", ALERTS, True, "an index as a segment"),
    ("alerts.2.host.name: *", ALERTS, False, "an index past the end reads no item"),
    ("alerts.host.name: db-01", ALERTS, True, "a name reads every item"),
    ("alerts.host.name: mail-01", ALERTS, False, "none of them matches"),
    ("alerts.tags: ssh", ALERTS, True, "lists found in the items, merged"),
    ("alerts.tags: (ssh and db)", ALERTS, True, "across items: one list"),
    ("alerts.score > 70", ALERTS, True, "a range over the merged list"),
    ("alerts.score < 20", ALERTS, True, "12 is there too"),
    ("alerts.host.name: db-01 and not alerts.tags: spam", ALERTS, True, "both ways"),
    # equality converts the value to the field's type
    ("status: active", {"status": "active"}, True, "text"),
    ("status: Active", {"status": "active"}, False, "case-sensitive"),
    ("n: 2339", {"n": 2339}, True, "a number"),
    ("n: 2339.0", {"n": 2339}, True, "parseFloat: the same number"),
    ("n: 2339xyz", {"n": 2339}, True, "parseFloat reads the number it starts with"),
    ("n: abc", {"n": 0}, False, "NaN equals nothing"),
    ("n: 2339", {"n": "2339"}, True, "a string field: compared as text"),
    ("n: 2339.0", {"n": "2339"}, False, "as text they differ"),
    ('n: "2339"', {"n": 2339}, True, "quotes do not matter to a number field"),
    ("flag: true", {"flag": True}, True, "a boolean"),
    ("flag: false", {"flag": False}, True, "false"),
    ("flag: TRUE", {"flag": True}, False, "only the text 'true' is true"),
    ("flag: TRUE", {"flag": False}, True, "so any other value is false"),
    ('flag: "true"', {"flag": True}, True, "quoted: still the text 'true'"),
    ("flag: true", {"flag": "true"}, True, "a string field: the text 'true'"),
    ("n: null", {"n": None}, False, "null equals nothing, not even null"),
    ("n: null", {"n": "null"}, True, "the text 'null'"),
    ("tags: prod", {"tags": ["dev", "prod"]}, True, "a list: any item"),
    ("tags: prod", {"tags": [["dev"], ["prod"]]}, True, "nested lists too"),
    ("tags: prod", {"tags": []}, False, "an empty list: nothing"),
    # wildcards
    ("n: *", {"n": 0}, True, "exists: any value but null"),
    ("n: *", {"n": {"k": "v"}}, True, "an object exists"),
    ("n: *", {"n": None}, False, "null does not"),
    ("n: *", {"n": []}, False, "nor an empty list"),
    ("n: *", {"m": 1}, False, "nor a missing field"),
    ("n: 23*", {"n": 2339}, True, "a number matches as its text"),
    ("n: 23*", {"n": 2339.5}, True, "'2339.5'"),
    ("n: 2.*", {"n": 2.0}, False, "2.0 is the text '2'"),
    ("n: tr*", {"n": True}, True, "a boolean as its text"),
    ("n: foo*", {"n": 5}, False, "text that does not match"),
    ("n: x*", {"n": {"k": "v"}}, True, "an object exists, whatever the pattern"),
    ("tags: pr*", {"tags": ["dev", "prod"]}, True, "a list: any item"),
    ("user.name: J*n D*", {"user": {"name": "John Doe"}}, True, "several stars"),
    ('user.name: "J*"', {"user": {"name": "J*"}}, True, "a quoted star is a star"),
    # ranges compare as JavaScript does
    ("n >= 1000 and n <= 5000", {"n": 2339}, True, "numbers"),
    ("n > 9", {"n": "12"}, False, "a string is compared as text: '12' < '9'"),
    ("n > 10", {"n": "12"}, True, "'12' > '10'"),
    ("day < 2025-06-01", {"day": "2025-05-31"}, True, "ISO dates compare as text"),
    ("name > 5", {"name": "ana"}, True, "text: 'a' after '5'"),
    ("n > abc", {"n": 5}, False, "NaN compares false"),
    ("flag > false", {"flag": True}, True, "true > false"),
    ("flag >= whatever", {"flag": False}, True, "'whatever' is false, false >= false"),
    ("n < 1", {"n": None}, False, "null compares with nothing"),
    ("user < 90", {"user": {"name": "x"}}, False, "nor does an object"),
    ("scores >= 10", {"scores": [1, 5, 12]}, True, "a list: any item"),
    ("scores >= 10", {"scores": [[12]]}, False, "but a range looks one list deep"),
    ("scores >= 10", {"scores": []}, False, "an empty list"),
    ("n > 5*", {"n": 7}, True, "a range value with a star: parseFloat reads 5"),
    # date math
    ("at: now", {"at": "2025-03-12T09:30:00.000Z"}, True, "now, as ISO text"),
    ("at: now-1d", {"at": "2025-03-11T09:30:00.000Z"}, True, "a day before"),
    ("at: now/d", {"at": "2025-03-12T00:00:00.000Z"}, True, "rounded to the day"),
    ("at: now/w", {"at": "2025-03-09T00:00:00.000Z"}, True, "weeks start on Sunday"),
    ("at >= now-7d", {"at": "2025-03-06T00:00:00.000Z"}, True, "a range from a week ago"),
    ("at >= now-7d", {"at": "2025-03-01T00:00:00.000Z"}, False, "too old"),
    ("at >= now-7d/d", {"at": "2025-03-05T00:00:00.000Z"}, True, "from the start of that day"),
    ("at < now", {"at": "2025-03-13T00:00:00.000Z"}, False, "in the future"),
    ('at: "2025-01-31||+1M"', {"at": "2025-02-28T00:00:00.000Z"}, True, "an anchor"),
    ("at: now-1x", {"at": "now-1x"}, True, "not date math: compared as written"),
    ("at: now", {"at": 1}, False, "a number field: parseFloat('now') is NaN"),
    ("label: nowhere", {"label": "nowhere"}, True, "not date math either"),
]


@pytest.mark.parametrize(("text", "context", "expected", "kibana"), CASES,
                         ids=[f"{row[0]} | {row[3]}" for row in CASES])
def test_evaluates_case_by_case_as_kibana(text: str, context: dict[str, Any], expected: bool,
                                          kibana: str) -> None:
    assert parse_condition(text).evaluate(context, now=NOW) is expected


# A condition that is one whole `${{ }}` is the expression's value, as Elastic takes it.
WHOLE_TEMPLATES: list[tuple[str, dict[str, Any], bool | type[Exception]]] = [
    ("${{ inputs.go }}", {"inputs": {"go": True}}, True),
    ("${{ inputs.go }}", {"inputs": {"go": False}}, False),
    ("${{ inputs.n > 3 }}", {"inputs": {"n": 5}}, True),
    ("${{ inputs.missing }}", {"inputs": {}}, False),  # undefined is false
    ("${{ inputs.kind }}", {"inputs": {"kind": "true"}}, True),  # text "true"
    ("${{ inputs.kind }}", {"inputs": {"kind": "status: active"}}, True),  # text is KQL
    ("${{ inputs.kind }}", {"inputs": {"kind": "status: idle"}}, False),
    ("${{ inputs.kind }}", {"inputs": {"kind": "yes"}}, False),  # free text
    ("${{ inputs.kind }}", {"inputs": {"kind": 'status: "{{ inputs.v }}"', "v": "active"}},
     False),  # what the value holds is not rendered again
    ("${{ inputs.kind }}", {"inputs": {"kind": "a : (b"}}, ConditionError),  # not KQL
    ("${{ inputs.n }}", {"inputs": {"n": 1}}, ConditionError),  # a number is an error
    ("${{ inputs.n }}", {"inputs": {"n": None}}, ConditionError),  # null too
    ("${{ inputs.list }}", {"inputs": {"list": [1]}}, ConditionError),
    ("${{ inputs }}", {"inputs": {"a": 1}}, ConditionError),
]


@pytest.mark.parametrize(("text", "context", "expected"), WHOLE_TEMPLATES,
                         ids=[f"{row[0]} {row[1]}" for row in WHOLE_TEMPLATES])
def test_a_whole_template_condition_is_its_value(
        text: str, context: dict[str, Any], expected: bool | type[Exception]) -> None:
    condition = TemplateCondition(text)
    scope = {**context, "status": "active"}
    if isinstance(expected, bool):
        assert condition.evaluate(scope) is expected
    else:
        with pytest.raises(expected):
            condition.evaluate(scope)


@pytest.mark.parametrize(("text", "context", "expected"), [
    ("{{ inputs.go }}", {"inputs": {"go": True}}, True),  # renders "true"
    ("{{ inputs.n > 3 }}", {"inputs": {"n": 5}}, True),
    ("{{ inputs.n > 3 }}", {"inputs": {"n": 1}}, False),
    ("{{ inputs.kind }}", {"inputs": {"kind": "yes"}}, False),  # "yes" is free text
    ("{{ inputs.missing }}", {"inputs": {}}, False),  # "" is the empty condition
    ("{{ inputs.n }}", {"inputs": {"n": 1}}, False),  # "1" is free text: no error
])
def test_a_whole_text_template_condition_renders_then_reads_as_kql(
        text: str, context: dict[str, Any], expected: bool) -> None:
    assert parse_condition(text).evaluate(context) is expected


@pytest.mark.parametrize(
    ("text", "rendered_against", "expected"),
    [
        ("status: {{ inputs.kind }}", {"inputs": {"kind": "active"}}, True),
        ("status: {{ inputs.kind }}", {"inputs": {"kind": "inactive"}}, False),
        ("user.name: {{ inputs.who }}", {"inputs": {"who": "John Doe"}}, True),
        ("{{ inputs.field }}: active", {"inputs": {"field": "status"}}, True),
        ("status: active {{ inputs.conj }} count: 1", {"inputs": {"conj": "and"}}, False),
        ("status: active {{ inputs.conj }} count: 1", {"inputs": {"conj": "or"}}, True),
        # rendered to exactly "true" or "false": that boolean, as in Elastic
        ("{{ inputs.a }}{{ inputs.b }}", {"inputs": {"a": "tr", "b": "ue"}}, True),
        ("{{ inputs.a }}{{ inputs.b }}", {"inputs": {"a": "fal", "b": "se"}}, False),
    ],
)
def test_templates_inside_a_condition_render_before_it_is_parsed(
        text: str, rendered_against: dict[str, Any], expected: bool) -> None:
    condition = parse_condition(text)
    assert condition.templated
    assert condition.evaluate({**CONTEXT, **rendered_against}) is expected


def test_a_template_rendering_to_something_that_is_not_kql_raises() -> None:
    condition = parse_condition("status: {{ inputs.kind }}")
    with pytest.raises(ConditionError):
        condition.evaluate({**CONTEXT, "inputs": {"kind": "a:b"}})


def test_a_templated_condition_reports_what_it_reads() -> None:
    condition = parse_condition("steps.x.output.kind : {{ inputs.kind }} and count > 1")
    assert condition.references == frozenset({"steps.x.output.kind", "inputs.kind", "count"})
    # It parses only once rendered: still accepted, and its template's reads still known.
    condition = parse_condition("status: active {{ inputs.conj }} count: 1")
    assert "inputs.conj" in condition.references


BRANCHES = """\
name: kinds
inputs:
  - {name: kind, type: string}
steps:
  - name: x
    type: console
    with: {message: "malware"}
  - name: check
    type: if
    condition: "steps.x.output : {{ inputs.kind }}"
    steps:
      - {name: isolate, type: console, with: {message: "isolated"}}
    else:
      - {name: ignore, type: console, with: {message: "ignored"}}
  - name: guarded
    type: console
    if: "steps.x.output : {{ inputs.kind }} or inputs.kind : *ware"
    with: {message: "guarded ran"}
"""


@pytest.mark.parametrize(("kind", "taken", "skipped", "guarded"), [
    ("malware", "isolate", "ignore", StepStatus.COMPLETED),
    ("phishing", "ignore", "isolate", StepStatus.SKIPPED),
])
def test_a_templated_condition_takes_the_branch_its_rendering_calls_for(
        runtime, work, workflow_file, kind, taken, skipped, guarded) -> None:
    path = workflow_file(BRANCHES, "kinds.yaml")
    assert validate_paths([path]) == []
    execution_id = runtime.engine.run(load_workflow(path), {"inputs": {"kind": kind}})
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results[taken].status is StepStatus.COMPLETED
    assert skipped not in state.results
    assert state.results["guarded"].status is guarded


def test_a_run_whose_condition_renders_to_bad_kql_fails_with_the_reason(
        runtime, work, workflow_file) -> None:
    path = workflow_file(BRANCHES, "kinds.yaml")
    execution_id = runtime.engine.run(load_workflow(path), {"inputs": {"kind": "a:b"}})
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.FAILED
    assert "condition of step 'check'" in (state.error or "")


def test_validate_accepts_a_condition_that_parses_only_once_rendered(workflow_file) -> None:
    path = workflow_file(textwrap.dedent("""\
        name: joined
        inputs:
          - {name: conj, type: string}
        steps:
          - name: only
            type: console
            if: "inputs.conj : x {{ inputs.conj }} inputs.conj : y"
            with: {message: hi}
        """), "joined.yaml")
    assert validate_paths([path]) == []


def test_validate_still_rejects_a_broken_template_inside_a_condition(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(textwrap.dedent("""\
        name: broken
        steps:
          - name: only
            type: console
            if: "status : {{ inputs.kind | nosuch }}"
            with: {message: hi}
        """))
    (problem,) = validate_paths([path])
    assert "invalid condition in steps[0].if" in problem.message
