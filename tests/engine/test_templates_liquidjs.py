"""Templates mean what they mean in Elastic Workflows, which renders them with LiquidJS.

Each expected value below is LiquidJS's documented result: an output (``{{ }}``,
``${{ }}``, ``echo``) is an expression with operators followed by filters; ``and`` and
``or`` give booleans and group from the right; a property may be named like a keyword;
``${{ }}`` keeps the value's type and ``{{ }}`` renders it as text (``true``, ``""`` for
nothing). Kibana adds ``json_parse``, ``entries`` and ``pick``.
"""

from __future__ import annotations

import pytest

from engine.definition.loader import parse_workflow
from engine.definition.templates import (
    MarkdownTemplate,
    compile_template,
    evaluate_expression,
    references,
    render_text,
    render_value,
)
from engine.errors import TemplateError

SCOPE = {
    "inputs": {"kind": "page", "limit": 5, "offset": 2, "reversed": True, "cols": 3,
               "count": 0, "tags": ["db", "prod"], "note": "", "nothing": None, "empty_object": {},
               "for": "f", "with": "w", "in": "i", "as": "a", "continue": "c"},
    "event": {"alert": {"score": 72, "host": "web-1", "labels": {"team": "sre", "tier": 1}},
              "wrapped": [{"host": {"name": "a"}}, {"host": {"name": "b"}}, 7],
              "mixed": [{"n": 1}, {"n": 1.0}, {"n": "1"}, 5, None],
              "items": [{"host": "a", "cpu": 10, "zone": "eu"},
                        {"host": "b", "cpu": 90, "zone": "us"},
                        {"host": "c", "cpu": 55, "zone": "eu"}]},
    "steps": {"fetch": {"output": {"body": '{"hits": [1, 2], "ok": true}'}}},
}


# (expression inside ${{ }}, LiquidJS's value)
TYPED = [
    ("inputs.kind == 'page'", True),
    ("inputs.kind != 'page'", False),
    ('inputs.kind == "ticket"', False),
    ("inputs.limit > 3", True),
    ("inputs.limit >= 5", True),
    ("inputs.limit < 5", False),
    ("inputs.limit <= 4", False),
    ("inputs.limit > 3 and inputs.kind == 'page'", True),
    ("inputs.limit > 30 and inputs.kind == 'page'", False),
    ("inputs.limit > 30 or inputs.kind == 'page'", True),
    # and/or return booleans, not an operand
    ("inputs.kind and inputs.limit", True),
    ("inputs.missing or inputs.limit", True),
    # right to left: true or (false and false)
    ("true or false and false", True),
    ("false and false or true", False),
    ("inputs.tags contains 'db'", True),
    ("inputs.tags contains 'dev'", False),
    ("event.alert.host contains 'web'", True),
    # 0 and "" are truthy in Liquid; only false and nil are not
    ("inputs.count and inputs.note", True),
    ("inputs.nothing or false", False),
    ("inputs.missing == nil", True),
    ("inputs.missing > 3", False),
    ("inputs.note == empty", True),
    ("inputs.tags == empty", False),
    ("event.alert.score > 50 and event.alert.labels.team == 'sre'", True),
    ("not (inputs.limit > 3)", False),
    ("inputs.limit", 5),
    ("inputs.tags", ["db", "prod"]),
    ("inputs.missing", None),
    ("inputs.limit | plus: 1", 6),
    ("inputs.tags | size", 2),
    ("'yes' if inputs.limit > 3 else 'no'", "yes"),
]


@pytest.mark.parametrize(("expression", "expected"), TYPED, ids=[e for e, _ in TYPED])
def test_a_typed_value_is_the_expressions_value(expression: str, expected: object) -> None:
    assert render_value(f"${{{{ {expression} }}}}", SCOPE) == expected
    assert evaluate_expression(expression, SCOPE) == expected


# (template, LiquidJS's text)
TEXT = [
    ("{{ inputs.kind == 'page' }}", "true"),
    ("{{ inputs.limit > 3 and inputs.kind == 'x' }}", "false"),
    ("{{ inputs.missing }}", ""),
    ("kind={{ inputs.kind }} over={{ event.alert.score > 50 }}", "kind=page over=true"),
    ("{% echo inputs.limit > 3 %}", "true"),
    ("{{ inputs.limit > 3 ? 'many' : 'few' }}", "many"),
    ("{% if inputs.limit > 3 and inputs.kind == 'page' %}page{% endif %}", "page"),
    ("{% assign big = inputs.limit > 3 %}{{ big }}", "true"),
]


@pytest.mark.parametrize(("template", "expected"), TEXT, ids=[t for t, _ in TEXT])
def test_text_renders_the_expression_as_liquidjs_does(template: str, expected: str) -> None:
    assert render_text(template, SCOPE) == expected


KEYWORDS = ["limit", "offset", "reversed", "cols", "for", "with", "in", "as", "continue"]


@pytest.mark.parametrize("name", KEYWORDS)
def test_a_property_may_be_named_like_a_liquid_keyword(name: str) -> None:
    expected = SCOPE["inputs"][name]
    assert render_value(f"${{{{ inputs.{name} }}}}", SCOPE) == expected
    rendered = "true" if expected is True else str(expected)
    assert render_text(f"{{{{ inputs.{name} }}}}", SCOPE) == rendered
    assert render_text(f"{{% if inputs.{name} %}}y{{% endif %}}", SCOPE) == "y"
    assert references(f"{{{{ inputs.{name} | default: 1 }}}}") == {f"inputs.{name}"}


def test_keywords_keep_their_meaning_where_they_are_keywords() -> None:
    loop = "{% for t in inputs.tags limit: inputs.limit offset: 1 reversed %}{{ t }}{% endfor %}"
    assert render_text(loop, SCOPE) == "prod"
    assert render_text("{% for i in (1..inputs.limit) %}{{ i }}{% endfor %}", SCOPE) == "12345"
    esql = "FROM logs | LIMIT {{ inputs.limit }} | OFFSET {{ inputs.offset }}"
    assert render_text(esql, SCOPE) == "FROM logs | LIMIT 5 | OFFSET 2"


def test_a_human_message_escapes_a_comparisons_interpolated_value() -> None:
    message = MarkdownTemplate("**{{ inputs.limit > 3 }}** on `{{ event.alert.host }}` "
                               "{{ inputs.tags | push: '*x*' | join: ' ' }}")
    assert render_value(message, SCOPE) == r"**true** on `web-1` db prod \*x\*"


# Filters: (expression inside ${{ }}, value)
FILTERS = [
    # Kibana's
    ("steps.fetch.output.body | json_parse", {"hits": [1, 2], "ok": True}),
    ("steps.fetch.output.body | json_parse | map: 'ok'", [True]),
    ("'not json' | json_parse", "not json"),
    ("inputs.limit | json_parse", 5),
    ("event.alert.labels | entries",
     [{"key": "team", "value": "sre"}, {"key": "tier", "value": 1}]),
    ("inputs.tags | entries", ["db", "prod"]),
    ("event.alert | pick: 'host', 'labels.team'",
     {"host": "web-1", "labels": {"team": "sre"}}),
    ("event | pick: 'items.1.host'", {"items": [None, {"host": "b"}]}),
    ("event.alert | pick: 'nope', 'host.deeper'", {}),
    ("inputs.kind | pick: 'a'", "page"),
    # LiquidJS's array filters return new lists
    ("inputs.tags | push: 'eu'", ["db", "prod", "eu"]),
    ("inputs.missing | push: 'eu'", ["eu"]),
    ("inputs.tags | pop", ["db"]),
    ("inputs.tags | shift", ["prod"]),
    ("inputs.tags | unshift: 'eu'", ["eu", "db", "prod"]),
    ("event.items | group_by: 'zone' | map: 'name'", ["eu", "us"]),
    ("event.items | where_exp: 'i', 'i.cpu > 50' | map: 'host'", ["b", "c"]),
    ("event.items | find_exp: 'i', \"i.zone == 'us'\"", {"host": "b", "cpu": 90, "zone": "us"}),
    ("event.items | group_by_exp: 'i', 'i.cpu > 50' | map: 'name'", [False, True]),
    ("inputs.tags | array_to_sentence_string", "db and prod"),
    ("event.items | map: 'host' | array_to_sentence_string: 'or'", "a, b, or c"),
    # `where` reads a property path, compares strictly, and passes over what has none
    ("event.items | where: 'zone', 'eu' | map: 'host'", ["a", "c"]),
    ("event.wrapped | where: 'host.name', 'b' | size", 1),
    ("event.mixed | where: 'n', 1 | size", 2),  # 1 and 1.0, not '1', not an int item
    ("event.mixed | where: 'n' | size", 3),  # truthy
    # `first` / `last`: a list's item or a string's character; anything else is ""
    ("inputs.tags | first", "db"),
    ("inputs.kind | last", "e"),
    ("event.alert.labels | first", ""),
    ("inputs.missing | first", ""),
    # LiquidJS reads the argument `[]` as nothing: `default: []` gives undefined
    ("inputs.missing | default: []", None),
    ("inputs.missing | default", None),
    ("inputs.tags | default: []", ["db", "prod"]),
    ("inputs.missing | default: [] | push: 1", [1]),
    ("inputs.missing | default: [] | size", 0),
    ("inputs.missing | default: [] | json", None),
    ("'' | default: 'x'", "x"),
    ("false | default: 'x'", "x"),
    ("false | default: 'x', allow_false: true", False),
    ("0 | default: 'x'", 0),
    ("inputs.empty_object | default: 'x'", {}),  # an object is kept, even empty
    # strings, numbers, dates
    ("'4.7' | to_integer", 4),
    ("'x' | to_integer", 0),
    ("'  a \n\t b ' | normalize_whitespace", " a b "),
    ("'one two  three' | number_of_words", 3),
    ("'<a & b>' | xml_escape", "&lt;a &amp; b&gt;"),
    ("'a b&c=d/é' | cgi_escape", "a+b%26c%3Dd%2F%C3%A9"),
    ("'https://x.example/a b?q=[1]' | uri_escape", "https://x.example/a%20b?q=[1]"),
    ("'Hello, World!  Again' | slugify", "hello-world-again"),
    ("'Hello, World!' | slugify: 'pretty'", "hello,-world!"),
    ("'Hello World' | slugify: 'default', true", "Hello-World"),
    ("'2026-03-05T10:20:30Z' | date_to_xmlschema", "2026-03-05T10:20:30+00:00"),
    ("'2026-03-05T10:20:30Z' | date_to_rfc822", "Thu, 05 Mar 2026 10:20:30 +0000"),
    ("'2026-03-05T10:20:30Z' | date_to_string", "05 Mar 2026"),
    ("'2026-03-05T10:20:30Z' | date_to_long_string", "05 March 2026"),
    ("inputs.tags | jsonify", '["db","prod"]'),
    ("inputs.tags | inspect", '["db","prod"]'),
    ("inputs.kind | raw", "page"),
]


@pytest.mark.parametrize(("expression", "expected"), FILTERS, ids=[e for e, _ in FILTERS])
def test_each_filter_gives_liquidjs_or_kibanas_value(expression: str, expected: object) -> None:
    assert render_value(f"${{{{ {expression} }}}}", SCOPE) == expected


def test_array_filters_leave_the_input_list_alone() -> None:
    scope = {"xs": [1, 2]}
    for expression in ("xs | push: 3", "xs | pop", "xs | shift", "xs | unshift: 0"):
        render_value(f"${{{{ {expression} }}}}", scope)
    assert scope == {"xs": [1, 2]}


def test_pick_copies_what_it_picks() -> None:
    scope = {"o": {"a": {"b": [1]}}}
    picked = render_value("${{ o | pick: 'a.b' }}", scope)
    picked["a"]["b"].append(2)
    assert scope == {"o": {"a": {"b": [1]}}}


def test_an_objects_keys_can_be_looped_over() -> None:
    entries = ("{% assign pairs = event.alert.labels | entries %}"
               "{% for kv in pairs %}{{ kv.key }}={{ kv.value }};{% endfor %}")
    assert render_text(entries, SCOPE) == "team=sre;tier=1;"
    # LiquidJS loops over an object as [key, value] pairs
    pairs = "{% for kv in event.alert.labels %}{{ kv[0] }}={{ kv[1] }};{% endfor %}"
    assert render_text(pairs, SCOPE) == "team=sre;tier=1;"


def test_a_filter_in_a_for_tag_is_ignored_as_liquidjs_ignores_it() -> None:
    # LiquidJS reads a for tag's collection and options up to a `|` and drops the rest.
    labels = "{% for kv in event.alert.labels | entries %}{{ kv[0] }}={{ kv.key }};{% endfor %}"
    assert render_text(labels, SCOPE) == "team=;tier=;"
    scope = {"xs": [1, 2, 3]}
    assert render_text("{% for x in xs | reverse %}{{ x }}{% endfor %}", scope) == "123"
    assert render_text("{% for x in xs | reverse limit: 1 %}{{ x }}{% endfor %}", scope) == "123"
    assert render_text("{% for x in xs limit: 1 | reverse %}{{ x }}{% endfor %}", scope) == "1"
    assert render_text("{% for x in xs | nosuch: 1 %}{{ x }}{% endfor %}", scope) == "123"
    assert render_text("{% for x in none | default: [] %}{{ x }}{% endfor %}", scope) == ""
    compile_template("{% for x in xs | nosuch %}{% endfor %}")  # never applied: no error


# `<`, `>`, `<=`, `>=` and `contains` as LiquidJS evaluates them: in JavaScript.
OPERATORS = [
    ("'10' > 9", True),  # a string against a number: the string as a number
    ("'10' > '9'", False),  # two strings: text, character by character
    ("'abc' > 3", False),  # NaN is neither
    ("'abc' < 3", False),
    ("'' < 1", True),  # the empty string is 0
    ("' 5' >= 5", True),
    ("'0x10' > 15", True),
    ("inputs.limit > '4'", True),
    ("inputs.limit <= '5.0'", True),
    ("inputs.nothing < 1", True),  # null from the data is 0
    ("nil < 1", False),  # the literal nil compares with nothing
    ("inputs.missing < 1", False),  # undefined is NaN
    ("true > 0", True),
    ("inputs.tags > 1", False),  # a list is its text: "db,prod"
    ("event.alert.labels > 1", False),  # an object: "[object Object]"
    ("empty < 1", False),
    ("(1..3) > 0", False),
    ("inputs.tags contains 'db'", True),
    ("inputs.tags contains 'd'", False),  # items are compared whole
    ("event.alert.labels contains 'team'", False),  # an object contains nothing
    ("inputs.kind contains 'ag'", True),
    ("inputs.kind contains ''", True),
    ("'truex' contains true", True),  # the value as its text
    ("'a1b' contains 1.0", True),  # 1.0 is "1"
    ("'xnullx' contains inputs.nothing", True),
    ("inputs.limit contains 5", False),  # a number contains nothing
    ("(1..3) contains 2", True),
    ("empty contains ''", True),  # `empty` is the empty string to JavaScript
    ("nil contains ''", False),
]


@pytest.mark.parametrize(("expression", "expected"), OPERATORS, ids=[e for e, _ in OPERATORS])
def test_comparisons_and_contains_are_javascripts(expression: str, expected: bool) -> None:
    assert render_value(f"${{{{ {expression} }}}}", SCOPE) is expected
    text = render_text(f"{{% if {expression} %}}y{{% else %}}n{{% endif %}}", SCOPE)
    assert text == ("y" if expected else "n")


def test_comparisons_inside_item_expressions_are_javascripts_too() -> None:
    scope = {"xs": ["10", "9", 3, "x"]}
    assert render_value("${{ xs | where_exp: 'i', 'i > 5' }}", scope) == ["10", "9"]


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ f }}", "2"),  # a number as JavaScript writes it
    ("{{ 10 | times: 1.5 }}", "15"),
    ("{{ big }}", "1e+21"),
    ("{{ small }}", "1e-7"),
    ("{{ o }}", "[object Object]"),
    ("{{ l }}", "12x"),  # a list: its items one after another, nil as nothing
    ("{{ t }}|{{ n }}|{{ missing }}", "true||"),
    ("{% for kv in o %}{{ kv }};{% endfor %}", "a1;"),  # a [key, value] pair
    ("{{ (1..3) }}", "123"),
    ("{% echo f %}", "2"),
])
def test_an_output_prints_its_value_as_liquidjs_does(template: str, expected: str) -> None:
    scope = {"f": 2.0, "big": 1e21, "small": 1e-7, "o": {"a": 1}, "l": [1, [2.0, None], "x"],
             "t": True, "n": None}
    assert render_text(template, scope) == expected


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ 10 | divided_by: 3 }}", "3.3333333333333335"),  # JavaScript division, not Ruby's
    ("{{ 10 | divided_by: 5 }}", "2"),
    ("{{ 10 | divided_by: 3, true }}", "3"),  # LiquidJS's integer division, rounded down
    ("{{ -7 | divided_by: 2, true }}", "-4"),
    ("{{ 10 | divided_by: 0 }}", "Infinity"),
    ("{{ 0 | divided_by: 0 }}", "NaN"),
    ("{{ 0.1 | plus: 0.2 }}", "0.30000000000000004"),
    ("{{ -7 | modulo: 3 }}", "2"),
    ("{{ 2.5 | round }}", "3"),  # half up, not to even
    ("{{ 1.005 | round: 2 }}", "1.01"),
    ("{{ 1234.5 | round: -2 }}", "1200"),
    ("{{ '5' | plus: 1 }}", "6"),
    ("{{ 'abc' | plus: 1 }}", "1"),  # not a number: 0
    ("{{ missing | times: 3 }}", "0"),
    ("{{ 4.2 | ceil }}|{{ -4.2 | floor }}|{{ -4.2 | abs }}", "5|-5|4.2"),
    ("{{ 5 | at_least: 7 }}|{{ 5 | at_most: 3 }}", "7|3"),
])
def test_arithmetic_is_javascripts(template: str, expected: str) -> None:
    assert render_text(template, {}) == expected


def test_arithmetic_keeps_whole_numbers_whole() -> None:
    assert render_value("${{ 3 | times: 2 }}", {}) == 6
    assert isinstance(render_value("${{ 10 | divided_by: 5 }}", {}), int)
    assert render_value("${{ 10 | divided_by: 4 }}", {}) == 2.5


@pytest.mark.parametrize(("template", "expected"), [
    (r'{{ text | split: "\n" | size }}', "3"),  # LiquidJS unescapes string literals
    (r'{{ "a\tb" }}', "a\tb"),
    (r'{{ "a\\b" }}', "a\\b"),
    (r'{{ "\u0041\101\q" }}', "AAq"),  # \uXXXX, octal, and any other character as itself
    (r'{% if text contains "\n" %}lines{% endif %}', "lines"),
])
def test_string_literals_take_javascripts_escapes(template: str, expected: str) -> None:
    assert render_text(template, {"text": "a\nb\nc"}) == expected


@pytest.mark.parametrize(("template", "expected"), [
    ('{{ "2024-01-15T10:05:03+02:00" | date: "%H:%M %z" }}', "08:05 +0000"),  # shown in UTC
    ('{{ "2024-01-15T10:05:03" | date: "%H:%M %z" }}', "10:05 +0000"),  # no offset: UTC
    ('{{ 1705312800 | date: "%Y-%m-%d %H:%M" }}', "2024-01-15 10:00"),  # epoch seconds
    ('{{ "1705312800" | date: "%Y-%m-%d" }}', "2024-01-15"),
    ('{{ "2024-01-15T10:05:03.123Z" | date: "%S.%L" }}', "03.123"),  # LiquidJS's %L
    ('{{ "2024-01-02" | date: "%-d%q" }}', "2nd"),  # and %q
    ('{{ "2024-01-15T10:05:03Z" | date: "100%% %s" }}', "100% 1705313103"),
    ('{{ "2024-01-15T10:05:03Z" | date }}', "Monday, January 15, 2024 at 10:05 am +0000"),
    ('{{ "not a date" | date: "%Y" }}', "not a date"),
])
def test_dates_format_as_liquidjs_on_a_server_in_utc(template: str, expected: str) -> None:
    assert render_text(template, {}) == expected


@pytest.mark.parametrize("template", [
    "{% tablerow x in xs %}{{ x }}{% endtablerow %}",
    "{% ifchanged %}x{% endifchanged %}",
    '{% include "part" %}',
    '{% render "part" %}',
])
def test_tags_kibana_removes_are_refused_at_load(template: str) -> None:
    with pytest.raises(TemplateError, match="unexpected tag"):
        compile_template(template)


def test_unknown_filters_and_bad_expressions_still_fail_at_load() -> None:
    with pytest.raises(TemplateError, match="unknown filter 'to_json'"):
        compile_template("{{ x | to_json }}")
    with pytest.raises(TemplateError, match="at column"):
        compile_template("{{ inputs.limit > }}")
    with pytest.raises(TemplateError, match="bad expression"):
        render_text("{{ event.items | where_exp: 'i', 'i.cpu >' }}", SCOPE)


RUN = """
name: liquidjs-run
inputs:
  - {name: kind, type: string}
  - {name: limit, type: integer}
  - {name: hosts, type: array}
steps:
  - name: facts
    type: data.set
    with:
      paging: "${{ inputs.kind == 'page' and inputs.limit > 3 }}"
      limit: "${{ inputs.limit }}"
      targets: "${{ inputs.hosts | default: [] | push: 'bastion' }}"
  - name: page
    type: if
    condition: "${{ variables.paging and inputs.limit >= 5 }}"
    steps:
      - name: paged
        type: console
        with: {message: "paging, LIMIT {{ inputs.limit }}, over={{ inputs.limit > 3 }}"}
    else:
      - name: quiet
        type: console
        with: {message: "quiet"}
  - name: ticket
    type: console
    if: "${{ inputs.kind != 'page' }}"
    with: {message: "ticket"}
  - name: each
    type: foreach
    foreach: "${{ variables.targets }}"
    steps:
      - name: touch
        type: console
        with: {message: "{{ foreach.index }}:{{ foreach.item }} last={{ foreach.index == 2 }}"}
"""


def test_a_workflow_using_liquidjs_expressions_runs_on_a_worker(runtime, work,
                                                                 workflow_file) -> None:
    workflow = parse_workflow(workflow_file(RUN).read_text())
    paging = runtime.engine.run(workflow, {"inputs": {"kind": "page", "limit": 5,
                                                      "hosts": ["web-1", "web-2"]}})
    quiet = runtime.engine.run(workflow, {"inputs": {"kind": "ticket", "limit": 5}})
    work()

    state = runtime.engine.get(paging)
    assert state.status.value == "COMPLETED"
    assert state.results["facts"].output == {"paging": True, "limit": 5,
                                             "targets": ["web-1", "web-2", "bastion"]}
    assert state.results["paged"].output == "paging, LIMIT 5, over=true"
    assert state.results["ticket"].status.value == "SKIPPED"
    assert [state.results[f"each[{i}].touch"].output for i in range(3)] == [
        "0:web-1 last=false", "1:web-2 last=false", "2:bastion last=true"]

    other = runtime.engine.get(quiet)
    assert other.status.value == "COMPLETED"
    assert other.results["facts"].output["paging"] is False
    assert other.results["quiet"].output == "quiet" and "paged" not in other.results
    assert other.results["ticket"].output == "ticket"
    assert other.results["each[0].touch"].output == "0:bastion last=false"
