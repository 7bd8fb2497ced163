"""Composition: workflow.execute, workflow.executeAsync and workflow.output, with real child
executions on real RQ workers (each child its own job, lease and audit trail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.api import execution_view
from engine.definition.loader import parse_workflow, validate_paths
from engine.errors import WorkflowInvalid
from engine.notify import Actor
from engine.state import keys
from engine.state.execution import ExecutionStatus, StepStatus
from engine.state.store import Change
from engine.steps.composition import MAX_WORKFLOW_DEPTH
from tests.support.services import ROOT

ENRICH = """
name: shared--enrich
triggers:
  - type: manual
    inputs:
      - {name: host, type: string, required: true}
outputs:
  - {name: verdict, type: string, required: true}
  - {name: score, type: number}
steps:
  - name: look
    type: console
    with: {message: "looking at {{ inputs.host }}"}
  - name: give
    type: workflow.output
    with:
      verdict: "clean:{{ inputs.host }}"
      score: "${{ 7 }}"
"""

PARENT = """
name: triage
steps:
  - name: enrich
    type: workflow.execute
    with:
      workflow-id: shared--enrich
      inputs: {host: "{{ event.host }}"}
  - name: after
    type: console
    with: {message: "verdict {{ steps.enrich.output.verdict }} score {{ steps.enrich.output.score }}"}
"""


def child_of(runtime, parent_id: str, step: str = "enrich") -> str:
    """The child a step started, as the parent's audit trail names it."""
    started = [e["child"] for e in events(runtime, parent_id)
               if e["type"] == "child.started" and e["step"] == step]
    assert len(started) == 1
    return started[0]


def events(runtime, execution_id: str) -> list[dict]:
    return [entry.event for entry in runtime.engine.audit_entries(execution_id)]


def test_a_child_runs_as_its_own_execution_and_gives_its_outputs(runtime, work,
                                                                 workflow_file):
    workflow_file(ENRICH, "enrich.yaml")
    parent_id = runtime.engine.run(parse_workflow(PARENT), {"host": "web-1"})
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.COMPLETED, parent.error
    assert parent.results["enrich"].output == {"verdict": "clean:web-1", "score": 7}
    assert parent.results["after"].output == "verdict clean:web-1 score 7"
    child = runtime.engine.get(child_of(runtime, parent_id))
    assert child.workflow == "shared--enrich"
    assert child.status is ExecutionStatus.COMPLETED
    assert child.outputs == {"verdict": "clean:web-1", "score": 7}
    view = execution_view(child)
    assert view["outputs"] == {"verdict": "clean:web-1", "score": 7}
    assert view["parent"] == {"id": parent_id, "step": "enrich", "awaited": True}
    # Each trail names the other execution, and each chain holds.
    started = [e for e in events(runtime, parent_id) if e["type"] == "child.started"]
    finished = [e for e in events(runtime, parent_id) if e["type"] == "child.finished"]
    assert [e["child"] for e in started] == [child.id]
    assert [(e["child"], e["status"]) for e in finished] == [(child.id, "COMPLETED")]
    child_events = events(runtime, child.id)
    assert child_events[0]["parentExecution"] == parent_id
    assert [e["parent"] for e in child_events if e["type"] == "parent.told"] == [parent_id]
    assert runtime.engine.verify_audit(parent_id).ok and runtime.engine.verify_audit(child.id).ok


def test_the_parent_waits_parked_while_its_child_waits_for_a_human(runtime, work,
                                                                  workflow_file):
    workflow_file("""
name: ask-child
outputs:
  - {name: answer, type: boolean}
steps:
  - name: ask
    type: waitForInput
    with:
      message: Go?
      schema:
        type: object
        properties: {go: {type: boolean}}
        required: [go]
  - name: give
    type: workflow.output
    with: {answer: "${{ steps.ask.output.go }}"}
""", "ask.yaml")
    parent_id = runtime.engine.run(parse_workflow("""
name: asker
steps:
  - name: call
    type: workflow.execute
    with: {workflow-id: ask-child}
  - name: then
    type: console
    with: {message: "got {{ steps.call.output.answer }}"}
"""))
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.WAITING
    assert parent.results["call"].status is StepStatus.WAITING
    child_id = child_of(runtime, parent_id, "call")
    assert runtime.engine.get(child_id).status is ExecutionStatus.WAITING_FOR_INPUT
    # No worker holds the parent while it waits: no lease, not in the running index.
    assert not runtime.store.redis.exists(keys.lease(parent_id))
    assert runtime.store.redis.zscore(keys.INDEX_RUNNING, parent_id) is None
    runtime.engine.resume(child_id, {"go": True}, Actor(id="U1", name="ann", source="slack"))
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.COMPLETED, parent.error
    assert parent.results["call"].output == {"answer": True}
    assert parent.results["then"].output == "got true"
    # The report that woke it is in the parent's children hash; no wake-up timer is left.
    reports = runtime.store.child_reports(parent_id)
    assert [r.id for r in reports.values()] == [child_id]
    assert runtime.store.overdue_timers(1e12, 10) == []


FAILING_CHILD = """
name: breaks
steps:
  - name: stop
    type: workflow.fail
    with: {message: "the feed is down"}
"""


def test_a_failing_child_fails_the_parent_step_with_its_error(runtime, work, workflow_file):
    workflow_file(FAILING_CHILD, "breaks.yaml")
    parent_id = runtime.engine.run(parse_workflow("""
name: caller
steps:
  - name: call
    type: workflow.execute
    with: {workflow-id: breaks}
  - name: never
    type: console
    with: {message: unreachable}
"""))
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.FAILED
    assert parent.results["call"].status is StepStatus.FAILED
    assert "the feed is down" in (parent.results["call"].error or "")
    assert "never" not in parent.results
    child = runtime.engine.get(child_of(runtime, parent_id, "call"))
    assert child.status is ExecutionStatus.FAILED


def test_on_failure_of_the_call_step_applies_to_a_child_failure(runtime, work, workflow_file):
    workflow_file(FAILING_CHILD, "breaks.yaml")
    parent_id = runtime.engine.run(parse_workflow("""
name: tolerant
steps:
  - name: call
    type: workflow.execute
    with: {workflow-id: breaks}
    on-failure: {continue: true}
  - name: after
    type: console
    with: {message: "error was {{ steps.call.error }}"}
"""))
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.COMPLETED
    assert "the feed is down" in parent.results["after"].output


def test_inputs_are_checked_like_a_manual_run_before_any_child_starts(runtime, work,
                                                                      workflow_file):
    workflow_file(ENRICH, "enrich.yaml")
    parent_id = runtime.engine.run(parse_workflow("""
name: sloppy
steps:
  - name: enrich
    type: workflow.execute
    with:
      workflow-id: shared--enrich
      inputs: {hots: web-1}
"""))
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.FAILED
    error = parent.results["enrich"].error or ""
    assert "hots: is not an input of workflow 'shared--enrich'" in error
    assert "host: is required" in error
    assert runtime.engine.list_executions(workflow="shared--enrich")[1] == 0


def test_a_workflow_not_in_the_catalog_fails_the_step(runtime, work):
    parent_id = runtime.engine.run(parse_workflow("""
name: lost
steps:
  - name: call
    type: workflow.execute
    with: {workflow-id: nowhere}
"""))
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.FAILED
    assert "workflow not found: 'nowhere'" in (parent.results["call"].error or "")


def test_execute_async_fires_and_forgets_in_kibanas_shape(runtime, work, workflow_file):
    workflow_file(FAILING_CHILD, "breaks.yaml")
    parent_id = runtime.engine.run(parse_workflow("""
name: fire
steps:
  - name: bg
    type: workflow.executeAsync
    with: {workflow-id: breaks}
  - name: after
    type: console
    with: {message: "started {{ steps.bg.output.executionId }}"}
"""))
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.COMPLETED  # the child's failure is its own
    output = parent.results["bg"].output
    assert set(output) == {"workflowId", "executionId", "awaited", "status", "startedAt"}
    assert (output["workflowId"], output["awaited"], output["status"]) == (
        "breaks", False, "pending")
    child = runtime.engine.get(output["executionId"])
    assert child.status is ExecutionStatus.FAILED
    assert child.parent is not None and not child.parent.awaited
    assert runtime.store.child_reports(parent_id) == {}


@pytest.mark.parametrize(("status", "expected"), [("cancelled", ExecutionStatus.CANCELLED),
                                                  ("failed", ExecutionStatus.FAILED)])
def test_workflow_output_status_sets_the_runs_end(runtime, work, status, expected):
    execution_id = runtime.engine.run(parse_workflow(f"""
name: ender
outputs:
  - {{name: why, type: string}}
steps:
  - name: out
    type: workflow.output
    status: {status}
    with: {{why: enough}}
  - name: never
    type: console
    with: {{message: unreachable}}
"""))
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is expected
    assert state.outputs == {"why": "enough"}
    assert "never" not in state.results
    assert state.error == f"step 'out' ended the run as {status}"


def test_outputs_that_break_the_declaration_fail_the_output_step(runtime, work):
    execution_id = runtime.engine.run(parse_workflow("""
name: liar
outputs:
  type: object
  properties:
    count: {type: integer}
  required: [count]
steps:
  - name: out
    type: workflow.output
    with: {count: "many", extra: 1}
"""))
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.FAILED
    error = state.results["out"].error or ""
    assert "extra: is not an output of workflow 'liar'" in error
    assert "'many' is not of type 'integer'" in error
    assert state.outputs is None


def test_a_child_without_workflow_output_gives_its_last_steps_output(runtime, work,
                                                                     workflow_file):
    workflow_file("""
name: plain
steps:
  - name: first
    type: console
    with: {message: one}
  - name: last
    type: data.set
    with: {n: 2}
""", "plain.yaml")
    parent_id = runtime.engine.run(parse_workflow("""
name: wrapper
steps:
  - name: call
    type: workflow.execute
    with: {workflow-id: plain}
"""))
    work()
    assert runtime.engine.get(parent_id).results["call"].output == {"n": 2}


def test_a_workflow_calling_itself_is_refused_at_validate_and_at_run_time(runtime, work):
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow("""
name: ouroboros
steps:
  - name: again
    type: workflow.execute
    with: {workflow-id: ouroboros}
""", "ouroboros.yaml")
    assert "ouroboros.yaml:6:25: workflow 'ouroboros' calls itself" in str(caught.value)
    execution_id = runtime.engine.run(parse_workflow("""
name: sneaky
consts: {me: sneaky}
steps:
  - name: again
    type: workflow.execute
    with: {workflow-id: "{{ consts.me }}"}
"""))
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.FAILED
    assert "cannot call itself" in (state.results["again"].error or "")


def test_calls_deeper_than_kibanas_limit_fail_at_the_depth_check(runtime, work, workflow_file):
    last = MAX_WORKFLOW_DEPTH + 1
    for n in range(last):
        workflow_file(f"""
name: level-{n}
steps:
  - name: down
    type: workflow.execute
    with: {{workflow-id: level-{n + 1}}}
""", f"level-{n}.yaml")
    workflow_file(f"""
name: level-{last}
steps:
  - name: bottom
    type: console
    with: {{message: bottom}}
""", f"level-{last}.yaml")
    top = runtime.engine.run(runtime.catalog.get("level-0"))
    for _ in range(last + 2):
        work()
    assert runtime.engine.get(top).status is ExecutionStatus.FAILED
    deepest = max((runtime.engine.get(s.id) for s in runtime.engine.list_executions(
        limit=100)[0]), key=lambda state: state.depth)
    assert deepest.workflow == f"level-{MAX_WORKFLOW_DEPTH}"
    assert deepest.depth == MAX_WORKFLOW_DEPTH
    assert f"depth limit ({MAX_WORKFLOW_DEPTH}) exceeded" in (
        deepest.results["down"].error or "")
    assert runtime.engine.list_executions(workflow=f"level-{last}")[1] == 0


def test_a_parent_that_parks_after_a_child_reported_looks_again(runtime):
    """The park is guarded by the number of reports the parent saw: a report written in
    between makes it fail, so a wake-up dropped because the parent was busy is not lost."""
    state_id = runtime.engine.run(parse_workflow(FAILING_CHILD))
    state = runtime.engine.get(state_id)
    kids = keys.children(state_id)
    runtime.store.redis.hset(kids, "call#0", "{}")
    refused = runtime.store.commit(state, Change(status=ExecutionStatus.WAITING),
                                   guard_status=(ExecutionStatus.PENDING,), guard_hlen=(kids, 0))
    assert (refused.ok, refused.reason) == (False, "hlen")
    assert runtime.store.status(state_id) is ExecutionStatus.PENDING
    parked = runtime.store.commit(state, Change(status=ExecutionStatus.WAITING),
                                  guard_status=(ExecutionStatus.PENDING,), guard_hlen=(kids, 1))
    assert parked.ok


def test_validate_names_an_unknown_workflow_id_when_given_the_catalog(tmp_path: Path):
    (tmp_path / "enrich.yaml").write_text(ENRICH)
    (tmp_path / "parent.yaml").write_text(PARENT.replace("shared--enrich", "shared--enrch"))
    problems = [str(p) for p in validate_paths([tmp_path])]
    assert problems == [f"{tmp_path / 'parent.yaml'}:7:20: with.workflow-id names "
                        "'shared--enrch', but no workflow of that name is among the files "
                        "validated (did you mean 'shared--enrich'?)"]
    # One file alone says nothing of what else exists: no problem.
    assert validate_paths([tmp_path / "parent.yaml"]) == []


def test_the_composition_corpus_means_what_elastic_means(runtime, work):
    corpus = ROOT / "tests" / "engine" / "elastic_corpus"
    for name in ("composition-child.yaml", "composition-parent.yaml"):
        (Path(runtime.settings.workflows_dir) / name).write_text((corpus / name).read_text())
    parent = runtime.catalog.get("corpus-triage-with-scoring")
    assert parent.outputs_schema is not None and parent.outputs_schema["required"] == ["score"]
    assert [spec["name"] for spec in runtime.catalog.get("corpus-shared--score-host").outputs] == [
        "score", "notes"]
    parent_id = runtime.engine.run(parent, {"host": "db-1"})
    work()
    state = runtime.engine.get(parent_id)
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert state.outputs == {"score": 42}
    assert state.results["score"].output == {"score": 42, "notes": "looked at db-1"}


def test_cancelling_a_parent_cancels_the_child_it_waits_on(runtime, work, workflow_file):
    workflow_file("""
name: slow-child
steps:
  - name: ask
    type: waitForInput
    with: {message: "Go?"}
""", "slow.yaml")
    parent_id = runtime.engine.run(parse_workflow("""
name: impatient
steps:
  - name: call
    type: workflow.execute
    with: {workflow-id: slow-child}
"""))
    work()
    child_id = child_of(runtime, parent_id, "call")
    assert runtime.engine.get(child_id).status is ExecutionStatus.WAITING_FOR_INPUT
    runtime.engine.cancel(parent_id, Actor(id="U9", name="ops", source="api"), "not needed")
    work()
    assert runtime.engine.get(parent_id).status is ExecutionStatus.CANCELLED
    child = runtime.engine.get(child_id)
    assert child.status is ExecutionStatus.CANCELLED
    assert child.error == f"its parent {parent_id} ended: not needed"
    assert runtime.engine.review(child_id) is None  # no review is left waiting


def test_the_api_and_the_cli_show_a_runs_outputs(runtime, work, workflow_file, served,
                                                 settings, redis_url):
    import json

    from engine.api import build_api
    from engine.definition.loader import WorkflowCatalog
    from tests.engine.test_cli import signoff

    workflow_file(ENRICH, "enrich.yaml")
    execution_id = runtime.engine.run(runtime.catalog.get("shared--enrich"),
                                      {"inputs": {"host": "db-2"}})
    work()
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="test-token", workers_seen=lambda: 0)
    client = served(app).client(headers={"Authorization": "Bearer test-token"})
    try:
        body = client.get(f"/api/workflowExecutions/{execution_id}").json()
    finally:
        client.close()
    assert body["outputs"] == {"verdict": "clean:db-2", "score": 7}
    shown = signoff(redis_url, "status", execution_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["outputs"] == {"verdict": "clean:db-2", "score": 7}


def test_a_report_whose_wake_up_was_never_enqueued_is_fired_by_the_sweep(runtime, work,
                                                                         workflow_file):
    """A worker that dies right after a child's final commit, before it enqueues the
    parent's advance: the report and its overdue-timer entry are in Redis, and the
    workers' sweep fires the entry."""
    from datetime import timedelta

    from engine.run import children
    from engine.state.execution import utcnow

    workflow_file("""
name: held
steps:
  - name: ask
    type: waitForInput
    with: {message: "Go?"}
""", "held.yaml")
    parent_id = runtime.engine.run(parse_workflow("""
name: holder
steps:
  - name: call
    type: workflow.execute
    with: {workflow-id: held}
"""))
    work()
    child = runtime.engine.get(child_of(runtime, parent_id, "call"))
    # The child's final commit, as the runner makes it, and then nothing: the worker died.
    change = Change(status=ExecutionStatus.COMPLETED, waiting="remove")
    children.report_end(change, child, ExecutionStatus.COMPLETED, utcnow(), outputs={"ok": 1})
    assert runtime.store.commit(child, change).ok
    work()
    assert runtime.engine.get(parent_id).status is ExecutionStatus.WAITING  # nobody woke it
    assert runtime.engine.scheduler.fire_overdue(timedelta(0)) == 1  # the workers' sweep
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.COMPLETED
    assert parent.results["call"].output == {"ok": 1}


def test_workflow_fail_takes_elastics_reason_and_the_caller_reads_it(runtime, work,
                                                                     workflow_file):
    workflow_file("""
name: validator
steps:
  - name: abort
    type: workflow.fail
    with: {message: "Required input missing", reason: missing_input}
""", "validator.yaml")
    parent_id = runtime.engine.run(parse_workflow("""
name: checks
steps:
  - name: validate
    type: workflow.execute
    with: {workflow-id: validator}
    on-failure: {continue: true}
  - name: say
    type: console
    with: {message: "{{ steps.validate.error }}"}
"""))
    work()
    assert runtime.engine.get(parent_id).results["say"].output == (
        "Required input missing (reason: missing_input)")
