from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from engine.definition import templates
from engine.definition.loader import parse_workflow
from engine.definition.templates import (
    MarkdownTemplate,
    check_value,
    compile_template,
    escape_markdown,
    evaluate_expression,
    has_template,
    references,
    render_text,
    render_value,
)
from engine.errors import TemplateError, WorkflowInvalid


@pytest.fixture
def make_scope():
    """Build a run-time scope as the runner does, overriding parts per test."""

    def create(**overrides: Any) -> dict[str, Any]:
        scope: dict[str, Any] = {
            "event": {
                "count": 3,
                "hosts": ["web-1", "web-2"],
                "alerts": [{"host": {"name": "web-1"}, "rule": "Malware"}],
                "user": {"name": "Zoë"},
            },
            "inputs": {"ticket": "SEC-42"},
            "consts": {"channel": "#soc"},
            "variables": {},
            "steps": {
                "classify": {
                    "output": {"category": "malware", "score": 0.9},
                    "error": None,
                    "status": "COMPLETED",
                },
                "investigate": {
                    "output": {"hits": {"hits": [{"_id": "a"}, {"_id": "b"}]}},
                    "error": None,
                    "status": "COMPLETED",
                },
                "review": {"output": {"approved": True}, "error": None, "status": "COMPLETED"},
            },
            "execution": {"id": "ex-1", "startedAt": "2025-01-02T03:04:05Z"},
            "workflow": {"name": "isolate-host"},
        }
        scope.update(overrides)
        return scope

    return create


def test_has_template_spots_outputs_and_tags():
    assert has_template("Host {{ event.host }}")
    assert has_template("{% if a %}x{% endif %}")
    assert has_template("${{ event.count }}")
    assert not has_template("plain text with { braces }")


def test_render_text_fills_in_variables(make_scope):
    text = "{{ event.alerts[0].rule }} on {{ event.alerts.0.host.name }} ({{ execution.id }})"

    assert render_text(text, make_scope()) == "Malware on web-1 (ex-1)"


def test_render_text_leaves_plain_text_alone(make_scope):
    assert render_text("nothing to see: ${ }", make_scope()) == "nothing to see: ${ }"


def test_undefined_variable_renders_empty_in_text(make_scope):
    assert render_text("[{{ steps.missing.output.x }}]", make_scope()) == "[]"


def test_tags_loops_and_conditions_render(make_scope):
    text = (
        "{% for hit in steps.investigate.output.hits.hits %}"
        "{{ forloop.index }}={{ hit._id }}{% unless forloop.last %},{% endunless %}"
        "{% endfor %}"
        "{% if steps.classify.output.score > 0.5 and not steps.review.error %} high{% endif %}"
    )

    assert render_text(text, make_scope()) == "1=a,2=b high"


def test_standard_filters(make_scope):
    scope = make_scope()

    assert render_text("{{ event.user.name | upcase }}", scope) == "ZOË"
    assert render_text("{{ 'ABC' | downcase }}", scope) == "abc"
    assert render_text("{{ event.hosts | join: ', ' }}", scope) == "web-1, web-2"
    assert render_text("{{ event.hosts | first }}/{{ event.hosts | last }}", scope) == (
        "web-1/web-2"
    )
    assert render_text("{{ event.hosts | size }}", scope) == "2"
    assert render_text("{{ execution.startedAt | date: '%Y-%m-%d' }}", scope) == "2025-01-02"
    assert render_text("{{ 'hi' | base64_encode }}", scope) == "aGk="
    assert render_text("{{ 'a b' | url_encode }}", scope) == "a+b"


def test_default_filter_fills_missing_and_empty_values(make_scope):
    scope = make_scope(inputs={"reason": ""})

    assert render_text("{{ inputs.missing | default: 'n/a' }}", scope) == "n/a"
    assert render_text("{{ inputs.reason | default: 'none given' }}", scope) == "none given"


def test_json_filter_is_compact_keeps_order_and_unicode(make_scope):
    scope = make_scope(event={"z": 1, "a": ["é", None, True]})

    assert render_text("{{ event | json }}", scope) == '{"z":1,"a":["é",null,true]}'
    assert render_text("{{ nothing | json }}", scope) == ""  # JSON.stringify(undefined)
    assert render_text("{{ event.a[1] | json }}", scope) == "null"
    assert render_text("{{ event.z | json: 2 }}", scope) == "1"


def test_json_filter_serializes_read_only_scopes(make_scope):
    frozen = MappingProxyType({"host": MappingProxyType({"name": "web-1"}), "ids": ("a", "b")})
    scope = make_scope(event=frozen)

    assert render_text("{{ event | json }}", scope) == '{"host":{"name":"web-1"},"ids":["a","b"]}'


def test_autoescape_is_off(make_scope):
    scope = make_scope(inputs={"note": "<b>&</b>"})

    assert render_text("{{ inputs.note }}", scope) == "<b>&</b>"


def test_typed_value_keeps_lists_dicts_and_numbers(make_scope):
    scope = make_scope()

    hits = render_value("${{ steps.investigate.output.hits.hits }}", scope)
    assert hits == [{"_id": "a"}, {"_id": "b"}]
    assert hits is scope["steps"]["investigate"]["output"]["hits"]["hits"]
    assert render_value("${{ steps.classify.output }}", scope) == {
        "category": "malware",
        "score": 0.9,
    }
    assert render_value("${{event.count}}", scope) == 3
    # As in Kibana, only a value that starts with "${{" and ends with "}}" is typed.
    assert render_value("  ${{ event.count }}\n", scope) == "  $3\n"
    assert render_value("${{ steps.review.output.approved }}", scope) is True


def test_typed_value_applies_filters(make_scope):
    assert render_value("${{ event.hosts | first }}", make_scope()) == "web-1"
    assert render_value("${{ event.hosts | size }}", make_scope()) == 2


def test_typed_value_of_missing_variable_is_none(make_scope):
    assert render_value("${{ steps.nope.output.items }}", make_scope()) is None


def test_dollar_inside_longer_text_is_just_a_dollar(make_scope):
    assert render_value("Cost: ${{ event.count }}", make_scope()) == "Cost: $3"


def test_ternary_picks_a_branch(make_scope):
    text = '{{ steps.review.output.approved ? "isolated" : "no action" }}'

    assert render_text(text, make_scope()) == "isolated"
    denied = make_scope(steps={"review": {"output": {"approved": False}}})
    assert render_text(text, denied) == "no action"


def test_ternary_ignores_question_marks_and_colons_in_strings(make_scope):
    text = "{{ steps.review.output.approved ? 'ok? yes: really' : 'no: why?' }}"

    assert render_text(text, make_scope()) == "ok? yes: really"
    assert render_text("{{ 'a ? b : c' }}", make_scope()) == "a ? b : c"


def test_ternary_with_comparison_and_filter_arguments(make_scope):
    scope = make_scope()

    text = "{{ event.count > 2 ? event.hosts | join: ', ' : 'few' | upcase }}"
    assert render_text(text, scope) == "web-1, web-2"
    assert render_text("{{ event.count < 2 ? 'many' : 'few' | upcase }}", scope) == "FEW"


def test_ternary_in_typed_value_keeps_type(make_scope):
    assert render_value("${{ steps.review.output.approved ? 1 : 0 }}", make_scope()) == 1


def test_render_value_walks_nested_structures(make_scope):
    with_options = MappingProxyType(
        {
            "channel": "{{ consts.channel }}",
            "text": "Isolate {{ event.alerts[0].host.name }}?",
            "hosts": "${{ event.hosts }}",
            "retries": 3,
            "blocks": ({"ticket": "{{ inputs.ticket }}", "{{ key }}": None},),
        }
    )

    rendered = render_value(with_options, make_scope())

    assert rendered == {
        "channel": "#soc",
        "text": "Isolate web-1?",
        "hosts": ["web-1", "web-2"],
        "retries": 3,
        "blocks": [{"ticket": "SEC-42", "{{ key }}": None}],
    }


def test_read_only_scope_values_work(make_scope):
    scope = MappingProxyType(
        make_scope(event=MappingProxyType({"hosts": ("a", "b"), "meta": MappingProxyType({})}))
    )

    assert render_text("{{ event.hosts | join: '+' }} {{ event.hosts.size }}", scope) == "a+b 2"
    assert render_text("{% for h in event.hosts %}{{ h }}{% endfor %}", scope) == "ab"
    assert render_value("${{ event.hosts }}", scope) == ("a", "b")


def test_evaluate_expression_accepts_bare_and_wrapped(make_scope):
    scope = make_scope()

    assert evaluate_expression("steps.investigate.output.hits.hits | first", scope) == {"_id": "a"}
    assert evaluate_expression("{{ event.hosts }}", scope) == ["web-1", "web-2"]
    assert evaluate_expression(" ${{ event.count }} ", scope) == 3
    assert evaluate_expression("(1..3)", scope) == [1, 2, 3]
    assert evaluate_expression("steps.review.output.approved ? 'yes' : 'no'", scope) == "yes"
    assert evaluate_expression("inputs.missing", scope) is None


def test_evaluate_expression_rejects_more_than_one_expression(make_scope):
    with pytest.raises(TemplateError, match="expected one Liquid expression"):
        evaluate_expression("a }} and {{ b", make_scope())


def test_evaluate_expression_reports_column_within_the_expression(make_scope):
    with pytest.raises(TemplateError, match="unknown filter 'nope'") as caught:
        evaluate_expression("event.hosts | nope", make_scope())

    assert caught.value.column == 15
    assert caught.value.template == "event.hosts | nope"


def test_syntax_error_names_the_problem_and_column():
    with pytest.raises(TemplateError, match=r"expected word, found .\|. \(at column 8\)") as caught:
        compile_template("{{ a | | b }}")

    assert caught.value.column == 8
    assert caught.value.template == "{{ a | | b }}"


def test_words_after_a_whole_expression_are_passed_over_as_liquidjs_does(make_scope):
    """LiquidJS reads one expression and ignores what follows it, before the filters in an
    output and to the end in a condition; Elastic's own library has `{% if wd ends with
    '\\' %}`, which tests `wd` (LiquidJS 10.31, measured)."""
    scope = {"a": 1, "b": 2, "wd": "", "flag": True}
    assert render_value("{{ a b | plus: 1 }}", scope) == "2"
    assert render_value("{{ missing b }}", scope) == ""
    assert render_value("{% if missing b %}A{% else %}B{% endif %}", scope) == "B"
    assert render_value("{% if wd ends with '\\\\' %}A{% else %}B{% endif %}", scope) == "A"
    assert render_value("{% if a == 1 b %}A{% endif %}{% unless missing x %}U{% endunless %}",
                        scope) == "AU"
    assert render_value("{% assign y = a b %}{{ y }}", scope) == "1"


def test_unclosed_tag_is_a_template_error():
    with pytest.raises(TemplateError, match="endif"):
        compile_template("{% if event.count %}open")


def test_unknown_filter_is_caught_when_compiling():
    with pytest.raises(TemplateError, match=r"unknown filter 'shout' \(at column 16\)") as caught:
        compile_template("Host {{ host | shout }}")

    assert caught.value.column == 16


def test_unknown_filter_on_later_line_names_line_and_column():
    with pytest.raises(TemplateError, match=r"line 2, column 8"):
        compile_template("line one\n{{ a | nope }}")


def test_unknown_filter_in_typed_value_is_caught():
    with pytest.raises(TemplateError, match="unknown filter 'nope'") as caught:
        compile_template("${{ event.hosts | nope }}")

    assert caught.value.column == 19


def test_dangling_ternary_is_a_syntax_error():
    with pytest.raises(TemplateError, match="'\\?'"):
        compile_template("{{ a ? 'b' }}")


def test_render_time_filter_failure_is_a_template_error(make_scope):
    with pytest.raises(TemplateError, match="bad expression"):
        render_text("{{ event.hosts | where_exp: 'h', 'h >' }}", make_scope())
    # Dividing by 0 is no failure: JavaScript's arithmetic, as in LiquidJS.
    assert render_text("{{ event.count | divided_by: 0 }}", make_scope()) == "Infinity"


def test_break_outside_a_loop_is_a_template_error(make_scope):
    with pytest.raises(TemplateError, match="break"):
        render_text("{% break %}", make_scope())
    in_loop = "{% for h in event.hosts %}{{ h }}{% break %}{% endfor %}"
    assert render_text(in_loop, make_scope()) == "web-1"


def test_check_value_reports_every_bad_template_by_path():
    step = {
        "with": {
            "body": {"host": "{{ event.host | shout }}", "ok": "{{ event.host }}"},
            "lines": ["fine", "{% if %}"],
            "count": 3,
        }
    }

    problems = check_value(step)

    assert [path for path, _ in problems] == ["with.body.host", "with.lines[1]"]
    assert all(isinstance(error, TemplateError) for _, error in problems)
    assert check_value({"host": "{{ a | shout }}"}, path="steps[0].with")[0][0] == (
        "steps[0].with.host"
    )
    assert check_value({"fine": "{{ a }}", "n": None}) == []


def test_references_lists_dotted_paths_across_nested_values():
    value = {
        "text": "{{ steps.classify.output.category | upcase }} on {{ event.alerts[0].host.name }}",
        "items": [
            "${{ steps.investigate.output.hits.hits | first }}",
            '{{ event["user-info"].name | default: consts.unknown }}',
        ],
        "plain": "no templates here",
    }

    assert references(value) == {
        "steps.classify.output.category",
        "event.alerts.0.host.name",
        "steps.investigate.output.hits.hits",
        "event.user-info.name",
        "consts.unknown",
    }


def test_references_skip_names_bound_inside_the_template():
    text = (
        "{% for hit in steps.investigate.output.hits.hits %}{{ hit._id }}{{ forloop.index }}"
        "{% endfor %}{% assign c = steps.classify.output %}{{ c.category }}"
    )

    assert references(text) == {"steps.investigate.output.hits.hits", "steps.classify.output"}


def test_references_include_ternary_branches_and_dynamic_indexes():
    text = "{{ steps.review.output.approved ? inputs.yes : inputs.no }}{{ event.hosts[inputs.i] }}"

    assert references(text) == {
        "steps.review.output.approved",
        "inputs.yes",
        "inputs.no",
        "event.hosts",
        "inputs.i",
    }


def test_references_ignore_templates_that_do_not_compile():
    assert references(["{{ a | nope }}", "{{ b }}"]) == {"b"}


def test_compiled_templates_are_cached(make_scope):
    text = "cache probe {{ event.count }} / " + __name__
    before = templates._compile.cache_info()

    compile_template(text)
    compile_template(text)
    render_text(text, make_scope())

    after = templates._compile.cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 2


# -- Markdown shown to a reviewer ---------------------------------------------------------------

FORGED_LINK = "[https://runbooks.corp.example](https://evil.example/login)"


@pytest.mark.parametrize("char", list("\\`*[]<>&~|_"))
def test_escape_markdown_backslashes_inline_syntax_anywhere(char):
    assert escape_markdown(f"a {char}b") == f"a \\{char}b"
    assert escape_markdown(f"{char}") == f"\\{char}"


@pytest.mark.parametrize("char", list("#+=-"))
def test_escape_markdown_backslashes_block_syntax_at_the_start_of_a_line(char):
    assert escape_markdown(f"{char}{char} a{char}b") == f"\\{char}{char} a{char}b"
    assert escape_markdown(f"x\n  {char} y\r{char}") == f"x\n  \\{char} y\r\\{char}"


@pytest.mark.parametrize("delimiter", [".", ")"])
def test_escape_markdown_stops_an_ordered_list_at_the_start_of_a_line(delimiter):
    assert escape_markdown(f"1986{delimiter} a year, 3{delimiter}") == (
        f"1986\\{delimiter} a year, 3{delimiter}")


def test_escape_markdown_leaves_harmless_text_alone():
    text = "Zoë 42 ✅ prod-db.corp (eu-1): svc_backup! #7 \"ok\" 'x' {a} $5 %2 ^ @ ; , ? / ="
    assert escape_markdown(text) == text


def test_escape_markdown_escapes_an_underscore_that_could_emphasize():
    assert escape_markdown("_a_ __init__ snake_case a_ _b") == (
        "\\_a\\_ \\_\\_init\\_\\_ snake_case a\\_ \\_b")


def test_escape_markdown_covers_slack_specials_and_mentions():
    assert escape_markdown("<!channel> <@U0ALICE> <https://x|label> &amp;") == (
        "\\<!channel\\> \\<@U0ALICE\\> \\<https://x\\|label\\> \\&amp;")


def test_a_message_escapes_interpolated_values_and_keeps_the_authors_markdown():
    message = MarkdownTemplate("## Isolate {{ host }}?\n**Runbook:** {{ link }}")
    scope = {"host": "## web-01", "link": FORGED_LINK}

    assert render_value(message, scope) == (
        "## Isolate \\## web-01?\n**Runbook:** " + escape_markdown(FORGED_LINK))
    assert render_text(message, scope) == render_value(message, scope)


def test_the_markdown_filter_lets_a_trusted_value_through():
    message = MarkdownTemplate("{{ link | markdown }} / {{ link }}")
    assert render_value(message, {"link": FORGED_LINK}) == (
        f"{FORGED_LINK} / {escape_markdown(FORGED_LINK)}")


def test_a_filter_after_markdown_makes_the_value_untrusted_again():
    message = MarkdownTemplate("{{ title | markdown | upcase }}")
    assert render_value(message, {"title": "## hi"}) == "\\## HI"


def test_echo_and_loops_in_a_message_escape_too():
    message = MarkdownTemplate("{% for h in hosts %}{{ h }};{% endfor %}{% echo hosts | first %}")
    assert render_value(message, {"hosts": ["*a*", "[b]"]}) == "\\*a\\*;\\[b\\];\\*a\\*"


def test_a_capture_in_a_message_is_escaped_once():
    message = MarkdownTemplate("{% capture x %}*{{ a }}*{% endcapture %}{{ x }}")
    assert render_value(message, {"a": "*a*"}) == "*\\*a\\**"


def test_literals_and_numbers_in_a_message():
    message = MarkdownTemplate("{{ missing | default: '-' }} {{ n }} {{ ok }}")
    assert render_value(message, {"n": 1.5, "ok": True}) == "\\- 1\\.5 true"


def test_a_value_inside_a_code_span_is_not_backslashed_and_cannot_close_it():
    message = MarkdownTemplate("Isolate `{{ host }}` now {{ host }}")
    assert render_value(message, {"host": "*web-01*`x\n\n## y"}) == (
        "Isolate `*web-01*ˋx  ## y` now \\*web-01\\*\\`x\n\n\\## y")


def test_code_is_tracked_across_loop_outputs_and_lines():
    message = MarkdownTemplate("`{% for h in hosts %}{{ h }} {% endfor %}` {{ hosts[0] }}\n"
                               "``{{ hosts[1] }}`x``\n{{ hosts[0] }}")
    assert render_value(message, {"hosts": ["*a*", "_c_"]}) == (
        "`*a* _c_ ` \\*a\\*\n``_c_`x``\n\\*a\\*")


LINK = "[x](https://evil.example)"


@pytest.mark.parametrize(("template", "values"), [
    ("{{ a }} {{ b }}", {"a": "`", "b": LINK}),  # an escaped backtick opens no span
    ("Cost: 5` {{ b }}", {"b": LINK}),  # a backtick that never closes is text
    ("`a\\` {{ b }}", {"b": LINK}),  # a backslash in a span is literal: the span closed
    ("{{ a }}`\n`{{ b }}`", {"a": "x", "b": LINK}),  # a span may go on past a line's end
    ("- `x\n- `{{ b }}`", {"b": LINK}),
    ("``` a`b\n{{ b }}\n```", {"b": LINK}),  # a backtick in the info string: no fence
    ("{% capture x %}`{{ b }}{% endcapture %}{{ x }}", {"b": LINK}),
])
def test_a_value_counts_as_code_only_inside_code_that_closes(template, values):
    rendered = render_value(MarkdownTemplate(template), values)
    assert "\\[x\\](https://evil.example)" in rendered


def test_a_value_inside_a_fenced_block_is_not_backslashed_and_cannot_close_it():
    message = MarkdownTemplate("```\n{{ body }}\n```\n{{ body }}")
    body = "a_b\n```\n## y"
    assert render_value(message, {"body": body}) == (
        "```\na_b\nˋˋˋ\n## y\n```\n" + escape_markdown(body))


def test_a_value_inside_a_tilde_fence_cannot_close_it():
    message = MarkdownTemplate("~~~json\n{{ body | json }}\n~~~")
    assert render_value(message, {"body": {"k": "~~~"}}) == '~~~json\n{"k":"∼∼∼"}\n~~~'


def test_a_typed_message_renders_as_escaped_text():
    assert render_value(MarkdownTemplate("${{ title }}"), {"title": "# hi"}) == "\\# hi"


def test_the_markdown_filter_is_known_only_in_a_message():
    compile_template(MarkdownTemplate("{{ x | markdown }}"))
    with pytest.raises(TemplateError, match="unknown filter 'markdown'"):
        compile_template("{{ x | markdown }}")
    assert references(MarkdownTemplate("{{ event.x | markdown }}")) == {"event.x"}
    assert check_value({"message": MarkdownTemplate("{{ x | markdown }}")}) == []


def test_plain_templates_are_not_escaped(make_scope):
    assert render_value("{{ link }}", {"link": FORGED_LINK}) == FORGED_LINK


WORKFLOW = """
name: escaping
steps:
  - name: review
    type: waitForApproval
    with:
      message: "## {{ event.title }}"
      approveLabel: "Isolate {{ event.host }}"
  - name: form
    type: waitForInput
    with:
      message: "{{ event.title | markdown }}"
  - name: call
    type: http
    with:
      url: "https://example.com/{{ event.host }}"
      body: "{{ event.title }}"
  - name: log
    type: console
    with:
      message: "{{ event.title }}"
"""


def test_only_a_human_steps_message_is_markdown():
    workflow = parse_workflow(WORKFLOW)
    review, form, call, log = workflow.steps
    scope = {"event": {"title": "*x*", "host": "a_b"}}

    assert render_value(dict(review.with_), scope) == {
        "message": "## \\*x\\*", "approveLabel": "Isolate a_b"}
    assert render_value(dict(form.with_), scope) == {"message": "*x*"}
    assert render_value(dict(call.with_), scope)["body"] == "*x*"
    assert render_value(dict(log.with_), scope) == {"message": "*x*"}


def test_the_markdown_filter_outside_a_message_fails_validation():
    text = WORKFLOW.replace('body: "{{ event.title }}"', 'body: "{{ event.title | markdown }}"')
    with pytest.raises(WorkflowInvalid, match="unknown filter 'markdown' .it applies only in "
                                              "a human step's message."):
        parse_workflow(text)
