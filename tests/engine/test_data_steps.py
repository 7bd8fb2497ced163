"""Elastic's data.* steps, each in the shape of its documented example, run by a real worker
(real Redis, real RQ jobs); and what `signoff validate` refuses in them."""

from __future__ import annotations

import json
import textwrap

import pytest

from engine.definition import step_types as registry
from engine.definition.loader import parse_workflow
from engine.errors import Problem, WorkflowInvalid
from engine.state.execution import ExecutionStatus, StepStatus

ALERTS = [
    {"_id": "a1", "_source": {"kibana": {"alert": {"severity": "critical"}}, "host": {"name": "web-1"}}},
    {"_id": "a2", "_source": {"kibana": {"alert": {"severity": "low"}}, "host": {"name": "web-2"}}},
    {"_id": "a3", "_source": {"kibana": {"alert": {"severity": "critical"}}, "host": {"name": "web-1"}}},
]


def run(runtime, work, workflow_file, text, event=None):
    path = workflow_file(textwrap.dedent(text))
    execution_id = runtime.engine.run(parse_workflow(path.read_text(), str(path)), event or {})
    work()
    return runtime.engine.get(execution_id)


def problems_in(text: str) -> list[Problem]:
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(textwrap.dedent(text), "wf.yml")
    return caught.value.problems


# -- data.map -------------------------------------------------------------------------


def test_map_reshapes_each_element_with_item_and_index(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, """
        name: map
        steps:
          - name: normalize_alerts
            type: data.map
            items: "${{ event.hits.hits }}"
            with:
              fields:
                id: "{{ item._id }}"
                host: "{{ item._source.host.name }}"
                position: "${{ index }}"
        """, {"hits": {"hits": ALERTS[:2]}})
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["normalize_alerts"].output == [
        {"id": "a1", "host": "web-1", "position": 0},
        {"id": "a2", "host": "web-2", "position": 1},
    ]


def test_map_of_one_mapping_outputs_one_mapping(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, """
        name: map-one
        steps:
          - name: one
            type: data.map
            items: "${{ event.alert }}"
            with: {fields: {id: "{{ item._id }}"}}
        """, {"alert": ALERTS[0]})
    assert state.results["one"].output == {"id": "a1"}


# -- data.filter and data.find ----------------------------------------------------------


def test_filter_keeps_the_elements_the_kql_condition_holds_for(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, """
        name: filter
        steps:
          - name: only_critical
            type: data.filter
            items: "${{ event.hits }}"
            with:
              condition: "item._source.kibana.alert.severity : critical"
              limit: 10
          - name: first_two
            type: data.filter
            items: "${{ event.hits }}"
            with:
              condition: "index < 2"
          - name: capped
            type: data.filter
            items: "${{ event.hits }}"
            with: {condition: "item._source.host.name : web-*", limit: 1}
        """, {"hits": ALERTS})
    assert [a["_id"] for a in state.results["only_critical"].output] == ["a1", "a3"]
    assert [a["_id"] for a in state.results["first_two"].output] == ["a1", "a2"]
    assert [a["_id"] for a in state.results["capped"].output] == ["a1"]


def test_find_outputs_the_first_match_and_its_index_or_nulls(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, """
        name: find
        steps:
          - name: first_low
            type: data.find
            items: "${{ event.alerts }}"
            with:
              condition: "item._source.kibana.alert.severity : low"
              errorIfEmpty: false
          - name: none
            type: data.find
            items: "${{ event.alerts }}"
            with: {condition: "item._id : nope"}
        """, {"alerts": ALERTS})
    assert state.results["first_low"].output == {"item": ALERTS[1], "index": 1}
    assert state.results["none"].output == {"item": None, "index": None}


def test_find_with_error_if_empty_fails_the_step_and_on_failure_applies(runtime, work,
                                                                         workflow_file):
    state = run(runtime, work, workflow_file, """
        name: find-or-fail
        steps:
          - name: must_find
            type: data.find
            items: "${{ event.alerts }}"
            with: {condition: "item._id : nope", errorIfEmpty: true}
            on-failure:
              retry: {max-attempts: 3, delay: 0}
              fallback:
                - name: noted
                  type: console
                  with: {message: "not found: {{ steps.must_find.error }}"}
        """, {"alerts": ALERTS})
    result = state.results["must_find"]
    assert result.status is StepStatus.FAILED and result.attempts == 1  # data errors: no retry
    assert result.error == "No item matching the condition was found"
    assert state.results["noted"].status is StepStatus.COMPLETED


# -- data.aggregate ---------------------------------------------------------------------


def test_aggregate_counts_by_host_in_descending_order(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, """
        name: aggregate
        steps:
          - name: count_by_host
            type: data.aggregate
            items: "${{ event.alerts }}"
            with:
              group_by: ["host.name"]
              metrics:
                - name: "count"
                  operation: "count"
                - name: "worst"
                  operation: "max"
                  field: "risk"
              order: "desc"
              order_by: "count"
              limit: 10
        """, {"alerts": [{"host": {"name": "a"}, "risk": 3}, {"host": {"name": "b"}, "risk": 9},
                         {"host": {"name": "b"}, "risk": 4}, {"host": {"name": "c"}}]})
    assert state.results["count_by_host"].output == [
        {"host.name": "b", "count": 2, "worst": 9},
        {"host.name": "a", "count": 1, "worst": 3},
        {"host.name": "c", "count": 1, "worst": None},
    ]


def test_aggregate_in_buckets_of_ranges(runtime, work, workflow_file):
    users = [{"department": "ops", "age": 25}, {"department": "ops", "age": 41},
             {"department": "ops", "age": 29}, {"department": "dev", "age": 55},
             {"department": "dev", "age": "unknown"}]
    state = run(runtime, work, workflow_file, """
        name: buckets
        steps:
          - name: age_distribution
            type: data.aggregate
            items: "${{ event.users }}"
            with:
              group_by: ["department"]
              metrics:
                - {name: "count", operation: "count"}
                - {name: "mean_age", operation: "avg", field: "age"}
              order: "desc"
              buckets:
                field: "age"
                ranges:
                  - {to: 30, label: "junior"}
                  - {from: 30, to: 50, label: "mid"}
                  - {from: 50}
        """, {"users": users})
    assert state.results["age_distribution"].output == [
        {"department": "ops", "_bucket": "junior", "count": 2, "mean_age": 27},
        {"department": "ops", "_bucket": "mid", "count": 1, "mean_age": 41},
        {"department": "dev", "_bucket": "50+", "count": 1, "mean_age": 55},
    ]


# -- data.concat and data.dedupe -------------------------------------------------------


def test_concat_joins_flattens_and_dedupes(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, """
        name: concat
        steps:
          - name: combine_lists
            type: data.concat
            arrays:
              - "${{ event.a }}"
              - "${{ event.b }}"
              - "${{ event.missing }}"
            with:
              dedupe: true
          - name: flat
            type: data.concat
            arrays:
              - [["a", "b"], ["c"]]
              - [["d"]]
            with:
              flatten: true
        """, {"a": [1, {"x": 1, "y": 2}], "b": [{"y": 2, "x": 1}, 1, 3]})
    assert state.results["combine_lists"].output == [1, {"x": 1, "y": 2}, 3]
    assert state.results["flat"].output == ["a", "b", "c", "d"]


def test_dedupe_keeps_the_first_or_the_last_per_key(runtime, work, workflow_file):
    alerts = [{"id": 1, "host": {"name": "a"}}, {"id": 2, "host": {"name": "b"}},
              {"id": 3, "host": {"name": "a"}}]
    state = run(runtime, work, workflow_file, """
        name: dedupe
        steps:
          - name: unique_hosts
            type: data.dedupe
            items: "${{ event.alerts }}"
            strategy: "keep_first"
            with:
              keys: ["host.name"]
          - name: latest
            type: data.dedupe
            items: "${{ event.alerts }}"
            strategy: keep_last
            with: {keys: ["host.name"]}
        """, {"alerts": alerts})
    assert [a["id"] for a in state.results["unique_hosts"].output] == [1, 2]
    assert [a["id"] for a in state.results["latest"].output] == [3, 2]


# -- JSON ------------------------------------------------------------------------------


def test_parse_and_stringify_json(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, """
        name: json
        steps:
          - name: parse_payload
            type: data.parseJson
            source: "${{ event.body }}"
          - name: to_string
            type: data.stringifyJson
            source: "${{ steps.parse_payload.output }}"
          - name: pretty
            type: data.stringifyJson
            source: "${{ steps.parse_payload.output }}"
            with:
              pretty: true
          - name: already
            type: data.parseJson
            source: "${{ event.object }}"
        """, {"body": '{"user": "ann", "ids": [1, 2]}', "object": {"a": 1}})
    assert state.results["parse_payload"].output == {"user": "ann", "ids": [1, 2]}
    assert state.results["to_string"].output == '{"user":"ann","ids":[1,2]}'
    assert state.results["pretty"].output == json.dumps({"user": "ann", "ids": [1, 2]}, indent=2)
    assert state.results["already"].output == {"a": 1}


def test_invalid_json_is_a_step_error_that_on_failure_continue_lets_pass(runtime, work,
                                                                        workflow_file):
    state = run(runtime, work, workflow_file, """
        name: bad-json
        steps:
          - name: parse_payload
            type: data.parseJson
            source: "${{ event.body }}"
            on-failure: {continue: true}
          - name: after
            type: console
            with: {message: "went on"}
        """, {"body": "{not json"})
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["parse_payload"].status is StepStatus.FAILED
    assert state.results["parse_payload"].error.startswith("Invalid JSON: ")
    assert state.results["after"].output == "went on"


# -- regex -----------------------------------------------------------------------------


def test_regex_extract_maps_named_and_numbered_groups(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, r"""
        name: extract
        steps:
          - name: pull_user_id
            type: data.regexExtract
            source: "${{ event.message }}"
            errorIfNoMatch: false
            with:
              pattern: "user_id=(?<id>[a-f0-9]+) ip=(\\d+\\.\\d+\\.\\d+\\.\\d+)"
              fields:
                user_id: "id"
                ip: "$2"
                nothing: "$7"
              flags: "i"
          - name: each_line
            type: data.regexExtract
            source: "${{ event.lines }}"
            with:
              pattern: "^code=(\\d+)$"
              fields: {code: "$1"}
        """, {"message": "login USER_ID=AB12 ip=10.0.0.7 ok", "lines": ["code=7", "none", 3]})
    assert state.results["pull_user_id"].output == {"user_id": "AB12", "ip": "10.0.0.7",
                                                    "nothing": None}
    assert state.results["each_line"].output == [{"code": "7"}, None, None]


def test_regex_extract_error_if_no_match_fails_the_step(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, """
        name: extract-or-fail
        steps:
          - name: pull
            type: data.regexExtract
            source: "nothing here"
            errorIfNoMatch: true
            with: {pattern: "id=(\\\\d+)", fields: {id: "$1"}}
        """)
    assert state.status is ExecutionStatus.FAILED
    assert state.results["pull"].status is StepStatus.FAILED
    assert "did not match" in state.results["pull"].error


def test_regex_replace_first_all_and_detailed(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, r"""
        name: replace
        steps:
          - name: redact_ssn
            type: data.regexReplace
            source: "${{ event.message }}"
            with:
              pattern: "\\b\\d{3}-\\d{2}-\\d{4}\\b"
              replacement: "[REDACTED]"
              flags: "g"
          - name: first_only
            type: data.regexReplace
            source: "${{ event.message }}"
            with: {pattern: "\\d{3}-(\\d{2})-(?<last>\\d{4})", replacement: "$$<$1/$<last>>"}
          - name: counted
            type: data.regexReplace
            source: "${{ event.message }}"
            detailed: true
            with: {pattern: "\\d", replacement: "#", flags: "g"}
        """, {"message": "a 123-45-6789 b 987-65-4321"})
    assert state.results["redact_ssn"].output == "a [REDACTED] b [REDACTED]"
    assert state.results["first_only"].output == "a $<45/6789> b 987-65-4321"
    assert state.results["counted"].output == {
        "original": "a 123-45-6789 b 987-65-4321", "replaced": "a ###-##-#### b ###-##-####",
        "matchCount": 18}


def test_a_regex_source_over_100_000_characters_fails_the_step(runtime, work, workflow_file):
    state = run(runtime, work, workflow_file, """
        name: too-long
        steps:
          - name: big
            type: data.regexReplace
            source: "${{ event.text }}"
            with: {pattern: "a", replacement: "b"}
        """, {"text": "a" * 100_001})
    assert state.results["big"].status is StepStatus.FAILED
    assert "100,000" in state.results["big"].error


# -- signoff validate ----------------------------------------------------------------


def test_validate_refuses_a_backreference_and_lookaround_at_their_lines():
    problems = problems_in(r"""
        name: refused
        steps:
          - name: repeated
            type: data.regexExtract
            source: "x"
            with:
              pattern: "(a)\\1"
              fields: {a: "$1"}
          - name: ahead
            type: data.regexReplace
            source: "x"
            with: {pattern: "a(?=b)", replacement: "", flags: "gy"}
        """)
    messages = [(p.line, p.column, p.message) for p in problems]
    assert messages[0][:2] == (8, 16)
    assert "steps[0].with.pattern" in messages[0][2] and "backreferences" in messages[0][2]
    assert messages[1][0] == 13
    assert "unknown regex flag 'y'" in messages[1][2]
    assert len(messages) == 2


def test_validate_reports_missing_and_mistyped_top_level_keys():
    problems = problems_in("""
        name: keys
        steps:
          - name: no_items
            type: data.filter
            with: {condition: "item.a : 1"}
          - name: wrong_strategy
            type: data.dedupe
            items: []
            strategy: newest
            with: {keys: [id]}
          - name: typo
            type: data.find
            itms: []
            with: {condition: "item.a : (1"}
          - name: not_here
            type: console
            source: "x"
            with: {message: hi}
        """)
    found = {(p.line, p.column): p.message for p in problems}
    assert found[4, 5] == "steps[0].items is required (step 'no_items')"
    assert found[10, 15].startswith("steps[1].strategy must be one of 'keep_first', 'keep_last'")
    assert found[12, 5] == "steps[2].items is required (step 'typo')"
    assert found[14, 5].startswith("unknown key 'itms' in step 'typo' (did you mean 'items'?)")
    assert found[15, 23].startswith("steps[2].with.condition: invalid KQL condition")
    assert found[18, 5].startswith("unknown key 'source' in step 'not_here'")
    assert len(found) == 6


def test_templated_top_level_keys_are_checked_when_the_step_runs():
    workflow = parse_workflow(textwrap.dedent("""
        name: templated
        steps:
          - name: first
            type: console
            with: {message: hi}
          - name: later
            type: data.dedupe
            items: "${{ steps.first.output }}"
            strategy: "{{ consts.strategy }}"
            with: {keys: [id]}
        """))
    assert workflow.steps[1].params == {"items": "${{ steps.first.output }}",
                                        "strategy": "{{ consts.strategy }}"}
    assert problems_in("""
        name: reads-ahead
        steps:
          - name: early
            type: data.parseJson
            source: "${{ steps.late.output }}"
          - name: late
            type: console
            with: {message: "{}"}
        """)[0].message.startswith("step 'early' reads steps.late")


# -- top-level keys of any step type -------------------------------------------------


@pytest.fixture
def echo_params(monkeypatch):
    """A step type `test.echo`, for one test, that takes `target` and `count` at the top
    level and outputs what reached it."""
    registry.registered_step_types()  # built-ins and entry points first, so ours is not lost
    monkeypatch.setitem(registry._registry, "test.echo", registry.StepType(
        name="test.echo", kind=registry.StepKind.ACTION, options_schema={"type": "object"},
        run=lambda ctx: {"params": dict(ctx.params), "options": dict(ctx.options)},
        params_schema={"type": "object", "required": ["target"],
                       "properties": {"target": {"type": "string"},
                                      "count": {"type": "integer"}}}))


def test_a_step_types_declared_top_level_keys_are_rendered_and_reach_it(runtime, work,
                                                                        workflow_file,
                                                                        echo_params):
    state = run(runtime, work, workflow_file, """
        name: echo
        steps:
          - name: echo
            type: test.echo
            target: "host {{ event.host }}"
            count: 2
            with: {note: "{{ event.host }}"}
        """, {"host": "web-1"})
    assert state.results["echo"].output == {"params": {"target": "host web-1", "count": 2},
                                            "options": {"note": "web-1"}}
    problems = problems_in("""
        name: echo-wrong
        steps:
          - name: echo
            type: test.echo
            count: two
        """)
    assert [(p.line, p.message) for p in problems] == [
        (4, "steps[0].target is required (step 'echo')"),
        (6, "steps[0].count must be an integer, not the string 'two' (step 'echo')")]
