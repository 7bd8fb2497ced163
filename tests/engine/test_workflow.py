"""Loading, validating and freezing workflow files: every problem at its file:line:column."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from textwrap import dedent

import pytest

from engine.definition import step_types as registry
from engine.definition.conditions import Condition
from engine.definition.loader import (
    TemplateCondition,
    WorkflowCatalog,
    load_workflow,
    parse_workflow,
    stored_workflow,
    validate_paths,
)
from engine.definition.model import Step, Workflow
from engine.definition.step_types import StepKind, StepType
from engine.errors import Problem, StepTypeInvalid, WorkflowInvalid, WorkflowNotFound

WORKFLOWS = Path(__file__).parent / "workflows"
SEED = WORKFLOWS / "isolate-host-with-approval.yml"
SEED_TYPES = ("cases.createCase", "elasticsearch.search", "ai.classify", "cases.addComment")

RegisterTypes = Callable[..., None]


@pytest.fixture
def register_types(monkeypatch: pytest.MonkeyPatch) -> RegisterTypes:
    """Register step types for one test; they are gone afterwards."""
    registry.registered_step_types()  # built-ins and entry points first, so ours are not lost

    def register(*names: str, options_schema: dict[str, object] | None = None) -> None:
        for name in names:
            spec = StepType(name=name, kind=StepKind.ACTION, run=lambda ctx: None,
                            options_schema=options_schema or {"type": "object"})
            monkeypatch.setitem(registry._registry, name, spec)

    return register


@pytest.fixture(autouse=True)
def note_type(register_types: RegisterTypes) -> None:
    if registry.get_step_type("http") is None:  # the seed's one built-in action
        register_types("http")
    # A small custom type of our own, so the tests do not depend on built-in options.
    register_types("test.note", options_schema={
        "type": "object",
        "properties": {"text": {"type": "string"}, "level": {"enum": ["info", "warn"]}},
        "additionalProperties": False,
    })


def problems_in(text: str, source: str = "wf.yml") -> list[Problem]:
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(dedent(text), source)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return caught.value.problems


def the_problem(problems: list[Problem], fragment: str) -> Problem:
    found = [p for p in problems if fragment in p.message]
    assert len(found) == 1, f"{fragment!r} in {[str(p) for p in problems]}"
    return found[0]


def at(problem: Problem) -> tuple[int, int]:
    return problem.line, problem.column


def kind_of(step: Step) -> StepKind | None:
    spec = registry.get_step_type(step.type)
    return spec.kind if spec else None


# -- the Elastic example ---------------------------------------------------------------


def test_seed_reports_its_custom_step_types_as_unknown() -> None:
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow(SEED)

    problems = caught.value.problems
    assert [(p.line, p.message.split(" in step")[0]) for p in problems] == [
        (9, "unknown step type 'cases.createCase'"),
        (16, "unknown step type 'elasticsearch.search'"),
        (65, "unknown step type 'cases.addComment'"),
    ]
    assert all(p.source == str(SEED) and p.column == 11 for p in problems)
    assert all("`signoff.steps` entry point group" in p.message for p in problems)
    assert str(problems[0]).startswith(f"{SEED}:9:11: unknown step type 'cases.createCase'")


def test_seed_loads_once_its_step_types_are_registered(register_types: RegisterTypes) -> None:
    register_types(*SEED_TYPES)

    workflow = load_workflow(SEED)

    text = SEED.read_text(encoding="utf-8")
    assert workflow.name == "isolate-host-with-approval"
    assert workflow.enabled is True
    assert workflow.source == str(SEED)
    assert workflow.text == text
    assert workflow.digest == hashlib.sha256(text.encode()).hexdigest()
    assert [t.type for t in workflow.triggers] == ["alert"]
    assert [s.name for s in workflow.steps] == [
        "open_case", "investigate", "classify", "review", "isolate", "record_decision"]
    review = workflow.step("review")
    assert kind_of(review) is StepKind.HUMAN and review.type == "waitForInput"
    assert review.with_["schema"]["required"] == ["approved"]
    assert (review.location.line, review.location.column) == (31, 5)
    isolate = workflow.step("isolate")
    assert isinstance(isolate.if_, Condition)
    assert isolate.if_.references == {"steps.review.output.approved"}
    assert isolate.if_.evaluate({"steps": {"review": {"output": {"approved": True}}}})
    assert isolate.connector_id == "edr-connector"
    assert workflow.step("classify").with_["input"] == "${{ steps.investigate.output.hits.hits }}"


# -- YAML itself -------------------------------------------------------------------------


def test_yaml_syntax_error_is_located_at_the_mark() -> None:
    problems = problems_in("""\
        name: broken
        steps:
          - name: a
            type: test.note
            with: {text: "unclosed}
        """)

    assert [str(p) for p in problems] == [
        "wf.yml:6:1: YAML syntax error: while scanning a quoted scalar at line 5, column 18: "
        "found unexpected end of stream"]


def test_yaml_syntax_error_points_at_the_bad_indentation() -> None:
    problems = problems_in("""\
        name: broken
        steps:
          - name: a
           type: test.note
        """)

    assert [at(p) for p in problems] == [(4, 4)]
    assert "YAML syntax error" in problems[0].message


def test_duplicate_keys_are_problems_though_yaml_accepts_them() -> None:
    problems = problems_in("""\
        name: twice
        steps:
          - name: a
            type: test.note
            with:
              text: one
              text: two
        name: again
        """)

    assert [(at(p), p.message) for p in problems] == [
        ((7, 7), "duplicate key 'text' in `with` of step 'a' (type 'test.note') (first on line 6);"
                 " YAML keeps only the last one, so remove one of them"),
        ((8, 1), "duplicate key 'name' at the top level (first on line 1);"
                 " YAML keeps only the last one, so remove one of them"),
    ]


def test_empty_file_and_non_mapping() -> None:
    assert [p.message for p in problems_in("")] == [
        "the file is empty; a workflow needs at least `name` and `steps`"]
    assert [p.message for p in problems_in("- just\n- a list\n")] == [
        "the workflow must be a mapping, not a list"]


# -- the schema --------------------------------------------------------------------------


def test_schema_errors_name_the_path_and_suggest_the_key() -> None:
    problems = problems_in("""\
        name: schema
        enabled: "yes"
        triggers:
          - type: alarm
        steps:
          - name: first
            type: console
            tiemout: 5m
          - name: second
          - name: ""
            type: test.note
        sttings: {}
        """)

    assert at(the_problem(problems, "enabled must be true or false")) == (2, 10)
    alarm = the_problem(problems, "triggers[0].type must be one of")
    assert at(alarm) == (4, 11)
    assert alarm.message.endswith("not 'alarm' (did you mean 'alert'?)")
    typo = the_problem(problems, "unknown key 'tiemout'")
    assert at(typo) == (8, 5)
    assert typo.message == "unknown key 'tiemout' in step 'first' (did you mean 'timeout'?)"
    assert at(the_problem(problems, "steps[1].type is required (step 'second')")) == (9, 5)
    assert at(the_problem(problems, "steps[2].name must not be empty")) == (10, 11)
    top = the_problem(problems, "unknown key 'sttings'")
    assert (at(top), top.message) == (
        (12, 1), "unknown key 'sttings' at the top level (did you mean 'settings'?)")
    assert [p.line for p in problems] == sorted(p.line for p in problems)


def test_missing_name_and_steps_and_flow_requirements() -> None:
    problems = problems_in("""\
        description: nothing else
        """)
    assert [p.message for p in problems] == ["name is required", "steps is required"]

    problems = problems_in("""\
        name: flows
        steps:
          - name: branch
            type: if
            steps:
              - {name: inside, type: test.note}
          - name: loop
            type: foreach
            foreach: "{{ consts.items }}"
            steps: []
        """)
    assert at(the_problem(problems, "steps[0].condition is required (step 'branch')")) == (3, 5)
    assert at(the_problem(problems, "steps[1].steps must not be empty (step 'loop')")) == (10, 12)


def test_flow_keys_on_other_step_types() -> None:
    problems = problems_in("""\
        name: misplaced
        steps:
          - name: note
            type: test.note
            steps:
              - {name: inner, type: test.note}
            condition: "a : b"
        """)

    assert at(the_problem(problems, "key 'steps' in step 'note' only applies to steps of type "
                                    "if or foreach or while or parallel, not 'test.note'")) == (5, 5)
    assert at(the_problem(problems, "key 'condition' in step 'note'")) == (7, 5)


# -- step types and their options ------------------------------------------------------


def test_unknown_type_lists_close_matches() -> None:
    problems = problems_in("""\
        name: typo
        steps:
          - name: ask
            type: waitForAproval
        """)

    (problem,) = problems
    assert at(problem) == (4, 11)
    assert problem.message.startswith(
        "unknown step type 'waitForAproval' in step 'ask' (did you mean 'waitForApproval'")
    assert "known types: " in problem.message and "test.note" in problem.message
    assert problem.message.endswith("register through the `signoff.steps` entry point group")


def test_a_step_type_is_refused_unless_its_kind_is_a_step_kind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_registry", registry.registered_step_types())

    with pytest.raises(StepTypeInvalid, match=r"^step type 'test.odd' has kind 'fancy', which is "
                                              r"not a step kind \(one of action, human, timer, "
                                              r"flow, children\)$"):
        registry.register_step_type(StepType(name="test.odd", kind="fancy", run=lambda ctx: None,
                                             options_schema={"type": "object"}))
    with pytest.raises(StepTypeInvalid, match="'test.idle' is an action but has no function"):
        registry.register_step_type(StepType(name="test.idle", kind=StepKind.ACTION, run=None,
                                             options_schema={"type": "object"}))
    registry.register_step_type(StepType(name="test.nap", kind="timer", run=None,
                                         options_schema={"type": "object"}))

    assert registry.get_step_type("test.odd") is None and registry.get_step_type("test.idle") is None
    nap = registry.get_step_type("test.nap")
    assert nap is not None and nap.kind is StepKind.TIMER  # a kind's value is that kind


def test_options_are_checked_against_the_step_types_schema() -> None:
    problems = problems_in("""\
        name: options
        steps:
          - name: note
            type: test.note
            with:
              txt: hello
              level: loud
          - name: ask
            type: waitForApproval
            with:
              aprovers: [U0123ABCD]
              sla: 15x
              approvals-required: "{{ consts.how_many }}"
        """)

    txt = the_problem(problems, "unknown key 'txt'")
    assert (at(txt), txt.message) == (
        (6, 7), "unknown key 'txt' in `with` of step 'note' (type 'test.note') "
                "(did you mean 'text'?)")
    assert at(the_problem(problems, "steps[0].with.level must be one of 'info', 'warn'")) == (7, 14)
    assert at(the_problem(problems, "unknown key 'aprovers'")) == (11, 7)
    assert "(did you mean 'approvers'?)" in the_problem(problems, "'aprovers'").message
    sla = the_problem(problems, "steps[1].with.sla: '15x' is not a duration")
    assert at(sla) == (12, 12)
    assert sla.message.endswith("(step 'ask')")
    # a templated value is only known at run time
    assert not [p for p in problems if "approvals-required" in p.message]


def test_wait_for_input_schema_must_be_a_json_schema_for_an_object() -> None:
    problems = problems_in("""\
        name: forms
        steps:
          - name: bad_schema
            type: waitForInput
            with:
              schema:
                type: object
                properties:
                  approved: {type: bool}
          - name: not_object
            type: waitForInput
            with:
              schema: {type: string}
        """)

    invalid = the_problem(problems, "is not valid in a JSON Schema")
    assert at(invalid) == (9, 28)
    assert invalid.message.startswith(
        "steps[0].with.schema.properties.approved.type is not valid in a JSON Schema: 'bool'")
    assert at(the_problem(problems, "steps[1].with.schema must have `type: object`")) == (13, 15)


def test_answer_patterns_must_run_in_linear_time() -> None:
    problems = problems_in("""\
        name: patterns
        steps:
          - name: review
            type: waitForInput
            with:
              schema:
                type: object
                properties:
                  ticket: {type: string, pattern: '^(CHG)-[0-9]+-\\1$'}
                  pattern: {type: string, pattern: "(?=x)y"}
                  host: {type: string, pattern: "^(a+)+$"}
                  later: {type: string, pattern: "{{ event.pattern }}"}
                patternProperties:
                  '(?<!x)y': {type: string}
          - name: unevaluated
            type: waitForInput
            with:
              schema:
                type: object
                patternProperties: {'^x': {type: string}}
                unevaluatedProperties: false
        """)

    backreference = the_problem(problems, "ticket.pattern")
    assert at(backreference) == (9, 43)
    assert backreference.message == (
        "steps[0].with.schema.properties.ticket.pattern '^(CHG)-[0-9]+-\\\\1$' cannot be used: "
        "invalid escape sequence: \\1. Signoff matches patterns in linear time (RE2), which has "
        "no backreferences or lookaround")
    assert at(the_problem(problems, "properties.pattern.pattern '(?=x)y'")) == (10, 44)
    assert at(the_problem(problems, "patternProperties key '(?<!x)y'")) == (14, 11)
    assert at(the_problem(problems, "unevaluatedProperties cannot be checked")) == (21, 9)
    # RE2 runs ^(a+)+$ in linear time, and a templated pattern is only known at run time.
    assert len(problems) == 4


def test_approvals_required_cannot_exceed_the_listed_people() -> None:
    problems = problems_in("""\
        name: quorum
        steps:
          - name: two_of_one
            type: waitForApproval
            with:
              approvers: [U0123ABCD, alice@example.com, U0123ABCD]
              approvals-required: 3
          - name: group_is_fine
            type: waitForApproval
            with:
              approvers: [S0SECURITY]
              approvals-required: 3
        """)

    (problem,) = problems
    assert at(problem) == (7, 27)
    assert problem.message.startswith(
        "approvals-required is 3 but only 2 approver(s) are listed, so it can never be met")


def test_durations_everywhere() -> None:
    problems = problems_in("""\
        name: durations
        settings:
          timeout: 2 days
        triggers:
          - type: scheduled
            with: {every: 5 mins}
          - type: scheduled
            with: {every: 5m, cron: "0 9 * * 1-5"}
          - type: scheduled
            with: {}
          - type: scheduled
            with: {cron: "every monday"}
        steps:
          - name: slow
            type: test.note
            timeout: 15x
            on-failure:
              retry: {max-attempts: 0, delay: soon}
        """)

    assert at(the_problem(problems, "settings.timeout: '2 days' is not a duration")) == (3, 12)
    assert at(the_problem(problems, "triggers[0].with.every: '5 mins'")) == (6, 19)
    both = the_problem(problems, "triggers[1]: a scheduled trigger needs exactly one")
    assert at(both) == (8, 11) and both.message.endswith(", not both")
    neither = the_problem(problems, "triggers[2]: a scheduled trigger needs exactly one")
    assert at(neither) == (10, 11)
    assert at(the_problem(problems, "'every monday' is not a cron expression")) == (12, 18)
    assert at(the_problem(problems, "steps[0].timeout: '15x' is not a duration")) == (16, 14)
    assert at(the_problem(problems, "max-attempts must be at least 1, not 0")) == (18, 29)
    assert at(the_problem(problems, "retry.delay: 'soon' is not a duration")) == (18, 39)


# -- names, conditions, templates and references ---------------------------------------


def test_duplicate_step_names_across_nesting_point_at_the_second() -> None:
    problems = problems_in("""\
        name: names
        steps:
          - name: check
            type: test.note
          - name: branch
            type: if
            condition: "true"
            steps:
              - name: check
                type: test.note
        """)

    (problem,) = problems
    assert at(problem) == (9, 15)
    assert problem.message.startswith("step name 'check' is already used by the step on line 3")


def test_condition_errors_are_located_within_the_line() -> None:
    problems = problems_in("""\
        name: conditions
        steps:
          - name: plain
            type: test.note
            if: 'steps.x.output.y : (a or'
          - name: quoted
            type: if
            condition: "approved :: true"
            steps:
              - {name: inner, type: test.note}
          - name: block
            type: test.note
            if: |
              steps.plain.output.ok : true and
              steps.quoted.output : (
        """)

    # plain, quoted and block scalars: the column within the condition, placed in the file
    dangling = the_problem(problems, "invalid condition in steps[0].if")
    assert at(dangling) == (5, 29)  # `a or` is a value (no space after `or`): the '(' is open
    assert dangling.message.endswith("unclosed '(' at column 20")
    assert at(the_problem(problems, "invalid condition in steps[1].condition")) == (8, 27)
    assert at(the_problem(problems, "invalid condition in steps[2].if")) == (15, 30)


def test_template_conditions_are_checked_like_templates() -> None:
    problems = problems_in("""\
        name: template_conditions
        steps:
          - name: first
            type: test.note
            if: "{{ steps.first.output | nosuch }}"
          - name: second
            type: test.note
            if: "${{ steps.third.output.ok }}"
          - name: third
            type: test.note
            if: false
        """)

    assert [(at(p), p.message.split(";")[0]) for p in problems] == [
        ((5, 34), "invalid condition in steps[0].if: unknown filter 'nosuch' (at column 25)"),
        ((8, 14), "step 'second' reads steps.third (line 9), which does not run before it"),
    ]


def test_template_errors_are_located_within_the_line() -> None:
    problems = problems_in("""\
        name: templates
        steps:
          - name: note
            type: test.note
            with:
              text: "Hello {{ event.user | shout }}"
          - name: loop
            type: foreach
            foreach: "steps.note.output.items | nosuch"
            steps:
              - {name: each, type: test.note}
          - name: route
            type: switch
            expression: "{{ steps.note.output.level "
            cases:
              - match: info
                steps: [{name: info, type: test.note}]
        """)

    assert at(the_problem(problems, "template error in steps[0].with.text: unknown filter "
                                    "'shout'")) == (6, 36)
    assert at(the_problem(problems, "invalid expression in steps[1].foreach")) == (9, 41)
    assert the_problem(problems, "invalid expression in steps[2].expression").line == 14


def test_references_must_point_at_steps_that_ran_before() -> None:
    problems = problems_in("""\
        name: references
        steps:
          - name: first
            type: test.note
            with:
              text: "{{ steps.frist.output }} {{ steps.later.output }} {{ steps.first.output }}"
          - name: branch
            type: if
            condition: "steps.first.output.ok : true"
            steps:
              - name: then_step
                type: test.note
                with:
                  text: "{{ steps.branch.output }}"
            else:
              - name: else_step
                type: test.note
                if: "steps.then_step.output.done : true"
          - name: later
            type: test.note
            with:
              text: "{{ steps.then_step.output }} {{ steps.else_step.output }}"
        """)

    assert [(at(p), p.message.split(";")[0]) for p in problems] == [
        ((6, 17), "step 'first' reads steps.frist, but no step is named 'frist' "
                  "(did you mean 'first'?)"),
        ((6, 42), "step 'first' reads steps.later (line 19), which does not run before it"),
        ((6, 67), "step 'first' reads its own output (steps.first)"),
        ((14, 21), "step 'then_step' reads steps.branch, which contains it and has not "
                   "finished when it runs"),
        ((18, 14), "step 'else_step' reads steps.then_step (line 11), which does not run "
                   "before it"),
    ]
    assert problems[-1].message.endswith(
        "a step can only read the output of steps that ran before it: earlier steps in its "
        "list or before its enclosing if/foreach/switch")


def test_fallback_may_read_the_failing_step() -> None:
    workflow = parse_workflow(dedent("""\
        name: fallback
        steps:
          - name: risky
            type: test.note
            on-failure:
              retry: {max-attempts: 3, delay: 2s, strategy: exponential}
              fallback:
                - name: explain
                  type: test.note
                  with: {text: "{{ steps.risky.error.message }}"}
        settings:
          on-failure:
            continue: true
            fallback:
              - name: alert_team
                type: test.note
                with: {text: "{{ steps.explain.output }}"}
        """))

    risky = workflow.steps[0]
    assert risky.on_failure is not None and risky.on_failure.retry is not None
    assert risky.on_failure.retry.max_attempts == 3
    assert risky.on_failure.retry.delay_before(3) == timedelta(seconds=4)
    assert [s.name for s in risky.on_failure.fallback] == ["explain"]
    assert workflow.settings.on_failure is not None
    assert workflow.settings.on_failure.continue_ is True
    assert [s.name for s in workflow.iter_steps()] == ["risky", "explain", "alert_team"]


def test_several_problems_are_reported_at_once_sorted_by_line() -> None:
    problems = problems_in("""\
        name: many
        steps:
          - name: a
            type: nope
          - name: b
            type: test.note
            timeout: forever
            with: {text: "{{ steps.c.output }}"}
          - name: a
            type: test.note
        """, source="flows/many.yml")

    assert [str(p).split(" ")[0] for p in problems] == [
        "flows/many.yml:4:11:", "flows/many.yml:7:14:", "flows/many.yml:8:22:",
        "flows/many.yml:9:11:"]


# -- freezing --------------------------------------------------------------------------


NESTED = """\
name: nested
description: every kind of nesting
consts: {threshold: 3}
inputs:
  - {name: host, type: string, required: true}
triggers:
  - type: scheduled
    with: {every: 5m}
settings: {timeout: 1h}
steps:
  - name: gather
    type: test.note
    if: true
    timeout: 30s
  - name: decide
    type: if
    condition: "steps.gather.output.count > 2"
    steps:
      - name: loop
        type: foreach
        foreach: "{{ steps.gather.output.items }}"
        steps:
          - name: ask
            type: waitForApproval
            with: {message: "Approve {{ foreach.item }}?"}
    else:
      - name: route
        type: switch
        expression: "steps.gather.output.level"
        cases:
          - match: high
            steps:
              - {name: page, type: test.note, if: "{{ steps.gather.output.urgent }}"}
          - match: 2
            steps:
              - {name: two, type: test.note}
        default:
          - name: log
            type: test.note
            on-failure:
              continue: true
              fallback:
                - {name: log_failed, type: test.note}
"""


def test_nested_steps_freeze_into_records() -> None:
    workflow = parse_workflow(NESTED, "nested.yml")

    assert isinstance(workflow, Workflow)
    assert workflow.description == "every kind of nesting"
    assert workflow.consts == {"threshold": 3}
    assert workflow.inputs == ({"name": "host", "type": "string", "required": True},)
    assert workflow.triggers[0].with_ == {"every": "5m"}
    assert workflow.settings.timeout == timedelta(hours=1)
    gather, decide = workflow.steps
    assert gather.if_ is not None and gather.if_.text == "true" and gather.if_.evaluate({})
    assert gather.timeout == timedelta(seconds=30)
    assert kind_of(decide) is StepKind.FLOW and decide.condition is not None
    assert decide.condition.references == {"steps.gather.output.count"}
    (loop,) = decide.steps
    assert loop.foreach == "{{ steps.gather.output.items }}"
    assert [s.name for s in loop.steps] == ["ask"] and kind_of(loop.steps[0]) is StepKind.HUMAN
    (route,) = decide.else_
    assert route.expression == "steps.gather.output.level"
    assert [case.match for case in route.cases] == ["high", 2]
    page = route.cases[0].steps[0]
    # A `{{ }}` condition is text: rendered, then read as KQL ("true" is true).
    assert not isinstance(page.if_, TemplateCondition) and page.if_.templated
    assert page.if_.evaluate({"steps": {"gather": {"output": {"urgent": True}}}})
    assert not page.if_.evaluate({"steps": {"gather": {"output": {"urgent": False}}}})
    assert not page.if_.evaluate({})
    (log,) = route.default
    assert log.on_failure is not None and log.on_failure.continue_
    assert [s.name for s in log.on_failure.fallback] == ["log_failed"]
    assert [s.name for s in workflow.iter_steps()] == [
        "gather", "decide", "loop", "ask", "route", "page", "two", "log", "log_failed"]
    located: Step = workflow.step("two")
    assert (located.location.source, located.location.line, located.location.column) == (
        "nested.yml", 36, 17)


def test_stored_workflow_reads_a_digest_once_and_checks_it_on_that_read() -> None:
    text = NESTED + "\n# stored_workflow test\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    reads: list[str] = []

    def read() -> str:
        reads.append(digest)
        return text

    first = stored_workflow(digest, read)
    again = stored_workflow(digest, read)

    assert first is again and reads == [digest]  # the second run of it costs no Redis read
    assert first.digest == digest
    altered = hashlib.sha256(b"another text").hexdigest()
    with pytest.raises(WorkflowInvalid, match="does not match its sha256 digest"):
        stored_workflow(altered, lambda: text)
    edited = hashlib.sha256(NESTED.encode()).hexdigest()
    with pytest.raises(WorkflowInvalid, match="does not match its sha256 digest"):
        stored_workflow(edited, lambda: NESTED + "\n# edited\n")
    with pytest.raises(WorkflowInvalid):  # not remembered: the next read checks again
        stored_workflow(altered, lambda: text)


# -- files, directories and the catalog ------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text), encoding="utf-8")
    return path


def note_workflow(name: str, text: str = "hi") -> str:
    return f"name: {name}\nsteps:\n  - name: say\n    type: test.note\n    with: {{text: {text}}}\n"


def test_validate_paths_searches_directories(tmp_path: Path) -> None:
    write(tmp_path / "good.yml", note_workflow("good"))
    write(tmp_path / "team" / "bad.yaml", "name: bad\nsteps:\n  - name: x\n    type: nope\n")
    write(tmp_path / "team" / "same-name.yml", note_workflow("good"))
    write(tmp_path / "notes.txt", "not: [a workflow")
    write(tmp_path / ".hidden" / "ignored.yml", "not: [a workflow")
    (tmp_path / "latin1.yml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    missing = tmp_path / "missing.yml"

    problems = validate_paths([tmp_path, missing])

    assert [(Path(p.source).relative_to(tmp_path).as_posix(), p.line, p.message.split(":")[0])
            for p in problems] == [
        ("latin1.yml", 1, "cannot read"),
        ("team/bad.yaml", 4, "unknown step type 'nope' in step 'x'; known types"),
        ("team/same-name.yml", 1, "workflow name 'good' is already used by "
                                  f"{tmp_path / 'good.yml'}"),
        ("missing.yml", 1, "cannot read"),
    ]


def test_validate_paths_on_clean_files_finds_nothing(register_types: RegisterTypes) -> None:
    assert [p.line for p in validate_paths([SEED])] == [9, 16, 65]

    register_types(*SEED_TYPES)

    assert validate_paths([SEED, WORKFLOWS]) == []


def test_validate_paths_reports_a_step_plugin_that_cannot_be_imported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = tmp_path / "site"
    write(plugins / "broken_steps" / "__init__.py", "import acme_sdk_that_is_not_installed\n")
    write(plugins / "broken_steps-1.0.dist-info" / "METADATA",
          "Metadata-Version: 2.1\nName: broken-steps\nVersion: 1.0\n")
    write(plugins / "broken_steps-1.0.dist-info" / "entry_points.txt",
          "[signoff.steps]\nbroken = broken_steps\n")
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_plugin_failures", [])
    workflow = write(tmp_path / "uses-it.yml",
                     "name: uses-it\nsteps:\n  - name: open\n    type: broken.ticket\n")

    problems = validate_paths([workflow])

    assert [str(p) for p in problems][0] == (
        "<signoff.steps plug-in broken>:1:1: the signoff.steps plug-in 'broken' (broken_steps) "
        "could not be imported: ModuleNotFoundError: No module named "
        "'acme_sdk_that_is_not_installed'; the step types it registers are unknown until it "
        "imports")
    assert [p.message.split(" in step")[0] for p in problems[1:]] == [
        "unknown step type 'broken.ticket'"]
    assert registry.get_step_type("test.note") is not None  # the rest of the registry still works


def test_catalog_finds_by_name_and_reloads_changed_files(tmp_path: Path) -> None:
    path = write(tmp_path / "greet.yml", note_workflow("greet", "hello"))
    catalog = WorkflowCatalog(tmp_path)

    first = catalog.get("greet")
    assert first.step("say").with_ == {"text": "hello"}
    assert catalog.get("greet") is first  # unchanged file: not read again

    write(path, note_workflow("greet", "hello again"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    changed = catalog.get("greet")
    assert changed is not first and changed.step("say").with_ == {"text": "hello again"}

    write(tmp_path / "deploy.yaml", note_workflow("deploy"))
    assert catalog.names() == ["deploy", "greet"]
    with pytest.raises(WorkflowNotFound, match=r"no workflow named 'gret' .*available: "
                                               r"deploy, greet"):
        catalog.get("gret")


def test_catalog_reports_invalid_files_by_their_name(tmp_path: Path) -> None:
    write(tmp_path / "broken.yml", "name: broken\nsteps:\n  - name: x\n    type: nope\n")
    write(tmp_path / "unparsable.yml", "name: [oops\n")
    catalog = WorkflowCatalog(tmp_path)

    assert catalog.names() == ["broken", "unparsable"]
    with pytest.raises(WorkflowInvalid) as caught:
        catalog.get("broken")
    assert [(p.line, p.column) for p in caught.value.problems] == [(4, 11)]
    with pytest.raises(WorkflowInvalid, match="YAML syntax error"):
        catalog.get("unparsable")
    with pytest.raises(WorkflowNotFound, match=r"available: none"):
        WorkflowCatalog(tmp_path / "nowhere").get("broken")


def test_catalog_loads_the_seed_copied_into_a_directory(
        tmp_path: Path, register_types: RegisterTypes) -> None:
    register_types(*SEED_TYPES)
    shutil.copy(SEED, tmp_path / "seed.yml")

    workflow = WorkflowCatalog(tmp_path).get("isolate-host-with-approval")

    assert workflow.source == str(tmp_path / "seed.yml")
    assert len(workflow.iter_steps()) == 6
