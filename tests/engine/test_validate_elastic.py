"""`signoff validate --elastic`: what Kibana 9.5 would refuse in a file Signoff accepts.

Each workflow here is our own and has one thing Kibana's schema (kbn-workflows
spec/schema.ts, spec/schema/triggers, common/hitl.ts) does not take; the test asserts
where it is reported (file:line:column) and why. A file written for Elastic alone passes
with no report.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from engine.cli import main
from engine.definition import step_types as registry
from engine.definition.kibana_rules import kibana_problems, knows_step_type
from engine.definition.step_types import StepKind, StepType

PURE_ELASTIC = """\
version: "1"
name: triage-alert
description: Enrich an alert, ask a human, then act.
triggers:
  - type: alert
  - type: manual
    inputs:
      - name: host
        type: string
        required: true
      - name: severity
        type: choice
        options: [low, high]
  - type: scheduled
    with:
      rrule:
        freq: DAILY
        interval: 1
        tzid: Europe/Paris
        dtstart: 2026-01-05T09:00:00Z
        byhour: [9]
        byminute: [0]
settings:
  timeout: 2h
  max-step-size: 10mb
  concurrency:
    key: "{{ inputs.host }}"
    strategy: queue
    max: 2
    queue-ttl: 12h
  liquid:
    renderLimit: 2000
consts:
  threshold: 5
steps:
  - name: fetch
    type: http
    timeout: 30s
    with:
      url: https://example.org/hosts
      method: GET
    on-failure:
      retry:
        max-attempts: 3
        delay: 5s
        strategy: exponential
        max-delay: 1m
        condition: "${{ error.type == 'NetworkError' }}"
      continue: true
  - name: hosts
    type: data.map
    items: "${{ steps.fetch.output.data.hosts }}"
    with:
      fields:
        id: "{{ item.id }}"
  - name: each
    type: foreach
    foreach: "{{ steps.hosts.output | json }}"
    max-iterations: {limit: 10, on-limit: continue}
    iteration-timeout: 5m
    steps:
      - name: say
        type: console
        if: "foreach.index < 5"
        with:
          message: "{{ foreach.item.id }}"
  - name: approve
    type: waitForApproval
    timeout: 1d
    with:
      message: Isolate the host?
      approveLabel: Isolate
      rejectLabel: Leave it
      channels:
        slack_api:
          connector-id: slack-ops
          channels: [C0123456]
  - name: route
    type: switch
    expression: "{{ steps.approve.output.approved }}"
    cases:
      - match: true
        steps:
          - name: isolate
            type: http
            with:
              url: https://example.org/isolate
              method: POST
              body: {host: "{{ inputs.host }}"}
    default:
      - name: note
        type: data.set
        with:
          outcome: left alone
  - name: pause
    type: wait
    with:
      duration: 90s
"""


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def validate_elastic(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["validate", "--elastic", str(path)])
    return code, capsys.readouterr().out.splitlines()


@pytest.fixture(autouse=True)
def acme_ticket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plug-in's step type, as `signoff.steps` would register it."""
    registry.get_step_type("console")  # the built-ins register first
    monkeypatch.setitem(registry._registry, "acme.ticket", StepType(
        name="acme.ticket", kind=StepKind.ACTION, run=lambda ctx: {"id": 1},
        options_schema={"type": "object"}))


def test_a_file_written_for_elastic_alone_passes_with_no_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, PURE_ELASTIC)
    assert kibana_problems(path.read_text(), str(path)) == []
    assert validate_elastic(path, capsys) == (0, ["all workflows are valid"])


HEAD = """\
name: gate
triggers:
  - type: manual
steps:
"""

# (workflow, line, column, what the message must say): one problem each.
CASES = {
    "combined-duration": (HEAD + """\
  - name: ask
    type: waitForApproval
    timeout: 1h30m
""", 7, 14, "Kibana 9.5 would refuse this file: timeout '1h30m' is not a Kibana duration: Kibana "
            "takes one number and one unit (ms, s, m, h, d or w), e.g. 90m, not a combination "
            "such as 1h30m or a bare number"),
    "bare-number-duration": (HEAD + """\
  - name: ask
    type: waitForApproval
    timeout: 3600
""", 7, 14, "timeout 3600 is not a Kibana duration"),
    "cron": ("""\
name: nightly
triggers:
  - type: scheduled
    with:
      cron: "0 2 * * *"
steps:
  - {name: hello, type: console, with: {message: hi}}
""", 5, 7, "Kibana 9.5 would refuse this file: a scheduled trigger takes `every` or `rrule`; "
           "`cron` is Signoff's own (write the schedule as an rrule)"),
    "every-under-a-minute": ("""\
name: often
triggers:
  - type: scheduled
    with:
      every: 30s
steps:
  - {name: hello, type: console, with: {message: hi}}
""", 5, 14, "`every: 30s` is not a Kibana interval: one number and one unit (s, m, h or d), one "
            "minute at least"),
    "version-as-a-number": ("""\
version: 1
""" + HEAD + """\
  - {name: hello, type: console, with: {message: hi}}
""", 1, 10, "Kibana 9.5 would refuse this file: `version` must be the string '1', not 1 "
            "(quote it)"),
    "no-trigger": ("""\
name: bare
steps:
  - {name: hello, type: console, with: {message: hi}}
""", 1, 1, "Kibana 9.5 would refuse this file: a workflow needs at least one trigger under "
           "`triggers`"),
    "webhook-trigger": ("""\
name: hook
triggers:
  - type: webhook
steps:
  - {name: hello, type: console, with: {message: hi}}
""", 3, 11, "trigger type 'webhook' is not one of Kibana 9.5's triggers (alert, manual, "
            "scheduled)"),
    "top-level-inputs": ("""\
name: older-form
inputs:
  - name: host
    type: string
triggers:
  - type: manual
steps:
  - {name: hello, type: console, with: {message: "{{ inputs.host }}"}}
""", 2, 1, "Kibana 9.5 would not accept key 'inputs' at the top level: Kibana 9.5 reads a "
           "run's inputs under the manual trigger (`triggers[].inputs`); top-level `inputs` is "
           "the form of earlier versions"),
    "alert-trigger-with": ("""\
name: on-alert
triggers:
  - type: alert
    with: {rule: disk-full}
steps:
  - {name: hello, type: console, with: {message: hi}}
""", 4, 5, "Kibana 9.5 would not accept key 'with' in an alert trigger: Kibana's alert trigger "
           "takes no key but `type`"),
    "integer-input": ("""\
name: ask-days
triggers:
  - type: manual
    inputs:
      - name: days
        type: integer
steps:
  - {name: hello, type: console, with: {message: hi}}
""", 6, 15, "input type 'integer' is not one of Kibana's legacy input types"),
    "approvers": (HEAD + """\
  - name: ask
    type: waitForApproval
    with:
      message: Ship it?
      approvers: [U0123ABCD]
""", 9, 7, "Kibana 9.5 would not accept key 'approvers' in `with` of a waitForApproval step: it "
           "is Signoff's own (Slack routing, approvers and timers); Kibana's editor marks it as "
           "an error and its parser drops it, so Kibana would wait without it"),
    "sla": (HEAD + """\
  - name: ask
    type: waitForInput
    with:
      sla: 2h
""", 8, 7, "key 'sla' in `with` of a waitForInput step: it is Signoff's own"),
    "escalation": (HEAD + """\
  - name: ask
    type: waitForApproval
    with:
      approvals-required: 2
""", 8, 7, "key 'approvals-required' in `with` of a waitForApproval step"),
    "plug-in-step-type": (HEAD + """\
  - name: ticket
    type: acme.ticket
    with: {title: Disk full}
""", 6, 11, "Kibana 9.5 would refuse this file: Kibana has no step type 'acme.ticket': it is "
            "Signoff's or a plug-in's; Kibana knows its built-in steps and the steps of its "
            "connectors"),
    "boolean-if": (HEAD + """\
  - name: hello
    type: console
    if: true
    with: {message: hi}
""", 7, 9, "`if` must be a string in Kibana, not True (quote it)"),
    "if-on-a-wait-step": (HEAD + """\
  - name: pause
    type: wait
    if: "inputs.slow : true"
    with: {duration: 5s}
""", 7, 5, "Kibana 9.5 would not accept key 'if' in step 'pause': Kibana's `wait` step has no "
           "such key"),
    "retry-condition-boolean": (HEAD + """\
  - name: fetch
    type: http
    with: {url: "https://example.org"}
    on-failure:
      retry:
        max-attempts: 2
        condition: true
""", 11, 20, "a retry's `condition` must be a string (quote it)"),
    "long-message": (HEAD + """\
  - name: ask
    type: waitForApproval
    with:
      message: "%s"
""" % ("x" * 10_241), 8, 16, "with.message is 10,241 characters long; Kibana allows 10,240 at "
                             "most"),
    "concurrency-key": ("""\
name: keyed
triggers:
  - type: manual
settings:
  concurrency:
    key: "%s"
steps:
  - {name: hello, type: console, with: {message: hi}}
""" % ("k" * 513), 6, 10, "settings.concurrency.key is 513 characters long; Kibana allows 512"),
    "settings-timeout": ("""\
name: slow
triggers:
  - type: manual
settings:
  timeout: 1d12h
steps:
  - {name: hello, type: console, with: {message: hi}}
""", 5, 12, "settings.timeout '1d12h' is not a Kibana duration"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_thing_kibana_would_refuse_is_reported_where_it_is(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, line, column, message = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 0, capsys.readouterr().out  # Signoff takes it
    capsys.readouterr()

    code, lines = validate_elastic(path, capsys)

    assert code == 1
    assert len(lines) == 1, lines
    prefix = f"{path}:{line}:{column}: "
    assert lines[0].startswith(prefix), lines[0]
    assert message in lines[0]


def test_signoff_and_kibana_problems_come_together_file_by_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, HEAD + "  - {name: hello, type: consol}\n", "a.yaml")
    write(tmp_path, HEAD.replace("gate", "pause") + "  - {name: pause, type: wait, with: "
                                                    "{duration: 1h30m}}\n", "b.yaml")

    code, lines = validate_elastic(tmp_path, capsys)

    assert code == 1
    assert [line.split(":")[0].rsplit("/", 1)[-1] for line in lines] == ["a.yaml", "b.yaml"]
    assert "unknown step type 'consol'" in lines[0]  # said once: Signoff knows it no more
    assert "with.duration '1h30m' is not a Kibana duration" in lines[1]


def test_connector_shaped_step_types_are_kibanas_and_signoff_only_ones_are_not() -> None:
    for kibana_type in ("cases.createCase", "elasticsearch.esql.query", "kibana.request",
                        "ai.agent", "http", "slack", "slack2.sendMessage", "console",
                        "data.regexExtract", "waitForApproval", "parallel", "loop.break"):
        assert knows_step_type(kibana_type), kibana_type
    for other in ("acme.ticket", "jenkins.build", "waitForVote"):
        assert not knows_step_type(other), other


def kibana_messages(text: str) -> list[tuple[int, int, str]]:
    return [(p.line, p.column, p.message)
            for p in kibana_problems(textwrap.dedent(text), "f.yaml")]


def test_parallel_steps_follow_kibanas_refinements() -> None:
    one_branch = HEAD + """\
  - name: fan
    type: parallel
    branches:
      - name: only
        steps: [{name: a, type: console, with: {message: a}}]
"""
    assert kibana_messages(one_branch) == [
        (8, 7, "Kibana 9.5 would refuse this file: a static `parallel` step needs at least two "
               "branches")]

    twins = HEAD + """\
  - name: fan
    type: parallel
    concurrency: 25
    branches:
      - name: same
        steps: [{name: a, type: console, with: {message: a}}]
      - name: same
        steps: [{name: b, type: console, with: {message: b}}]
"""
    assert kibana_messages(twins) == [
        (7, 18, "Kibana 9.5 would refuse this file: parallel concurrency must be a whole number "
                "from 1 to 20, not 25"),
        (11, 15, "Kibana 9.5 would refuse this file: branch name 'same' is used twice in this "
                 "parallel step; each must be unique")]

    both = HEAD + """\
  - name: fan
    type: parallel
    foreach: "{{ inputs.hosts | json }}"
    branches:
      - {name: a, steps: [{name: a, type: console}]}
      - {name: b, steps: [{name: b, type: console}]}
"""
    assert kibana_messages(both)[0] == (
        5, 5, "Kibana 9.5 would refuse this file: a `parallel` step takes either `foreach` with "
              "`steps` or `branches`, one of the two")


def test_loop_bounds_and_liquid_limits_are_kibanas() -> None:
    text = """\
name: loops
triggers:
  - type: manual
settings:
  liquid:
    renderLimit: 5000
steps:
  - name: each
    type: foreach
    foreach: "[1, 2]"
    max-iterations: {limit: 0, on-limit: stop}
    steps: []
"""
    assert kibana_messages(text) == [
        (6, 18, "Kibana 9.5 would refuse this file: settings.liquid.renderLimit must be a whole "
                "number from 1 to 2000, not 5000"),
        (11, 21, "Kibana 9.5 would refuse this file: max-iterations must be a whole number of "
                 "at least 1, not 0"),
        (11, 21, "Kibana 9.5 would refuse this file: max-iterations needs `on-limit: continue` "
                 "or `on-limit: fail`"),
        (12, 12, "Kibana 9.5 would refuse this file: `steps` needs at least one step")]


CORPUS = Path(__file__).parent / "elastic_corpus"


def test_the_corpus_written_for_elastic_is_also_what_kibana_takes(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Every corpus file passes Kibana's rules but three: Signoff's `cron`, a plug-in's step
    type (acme.ticket, registered above), which Kibana does not have, and inputs at the top
    level, as Elastic 9.3 and 9.4 wrote them."""
    reported = {Path(line.split(":")[0]).name
                for path in sorted(CORPUS.glob("*.yaml"))
                for line in map(str, kibana_problems(path.read_text(), str(path)))}
    assert reported == {"scheduled-every-and-cron.yaml", "custom-step-keys.yaml",
                        "top-level-inputs.yaml"}


def test_a_library_template_runs_with_its_header_its_input_names_and_its_dates(
        runtime, work) -> None:
    from engine.definition.loader import load_workflow

    workflow = load_workflow(CORPUS / "library-template.yaml")
    assert [spec["name"] for spec in workflow.inputs] == [".index", "doc.id"]
    scheduled = next(t for t in workflow.triggers if t.type == "scheduled")
    assert scheduled.with_["rrule"]["dtstart"] == "2026-01-05T09:00:00.000Z"  # a string

    execution_id = runtime.engine.run(workflow, {"inputs": {".index": "logs-web", "doc.id": "7"}})
    work()
    state = runtime.engine.get(execution_id)
    assert state.results["show"].output == "logs-web/7"


def test_the_data_steps_of_the_corpus_run_as_the_library_uses_them(runtime, work) -> None:
    from engine.definition.loader import load_workflow

    execution_id = runtime.engine.run(load_workflow(CORPUS / "data-map-and-json.yaml"), {})
    work()
    state = runtime.engine.get(execution_id)
    assert state.results["hosts"].output == [{"host_id": "h1", "platform": "LINUX"},
                                             {"host_id": "h2", "platform": "WINDOWS"}]
    assert json.loads(state.results["show"].output) == state.results["hosts"].output
