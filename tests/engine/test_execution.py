"""Runs pausing at waitForInput and resuming, on a real Redis with real RQ jobs."""

from __future__ import annotations

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import AlreadyDecided, InputInvalid, NotWaiting
from engine.notify import Actor
from engine.state.execution import ExecutionStatus, StepStatus
from tests.support.services import reviewer_answer

ISOLATE = """
name: isolate-host-with-approval
triggers:
  - type: alert
consts:
  edr: https://edr.example.invalid
steps:
  - name: classify
    type: data.set
    with:
      category: confirmed_compromise
      host: "{{ event.alerts[0].host.name }}"
  - name: review
    type: waitForInput
    with:
      message: |
        ## Isolate `{{ event.alerts[0].host.name }}`?
        **AI classification:** {{ variables.category }}
      schema:
        type: object
        properties:
          approved: {type: boolean, title: Isolate the host}
          notes: {type: string, title: Analyst notes}
        required: [approved]
  - name: isolate
    type: console
    if: "steps.review.output.approved : true"
    with:
      message: "isolating {{ variables.host }}: {{ steps.review.output.notes }}"
  - name: record_decision
    type: console
    with:
      message: >-
        {{ steps.review.output.approved ? "isolated" : "no action" }}
        by {{ steps.review.resumedBy.name }}
"""

EVENT = {"alerts": [{"host": {"name": "web-01"}}]}
ALICE = Actor(id="U0ALICE", name="alice", source="slack")


def start(runtime, work, text=ISOLATE, event=EVENT):
    workflow = parse_workflow(text)
    execution_id = runtime.engine.run(workflow, event)
    work()
    return execution_id


def test_run_pauses_at_wait_for_input_with_rendered_message(runtime, work):
    execution_id = start(runtime, work)
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    assert state.results["classify"].status is StepStatus.COMPLETED
    assert state.results["review"].status is StepStatus.WAITING_FOR_INPUT
    assert "isolate" not in state.results
    assert state.waiting is not None
    assert state.waiting.message.startswith("## Isolate `web-01`?")
    assert "confirmed_compromise" in state.waiting.message
    reviews, total = runtime.engine.pending()
    assert total == 1 and reviews[0].execution_id == execution_id
    assert reviews[0].title == "Isolate `web-01`?"


def test_approval_resumes_and_runs_the_gated_step(runtime, work):
    execution_id = start(runtime, work)
    result = runtime.engine.resume(execution_id, {"approved": True, "notes": "confirmed"}, ALICE)
    assert result.decision.outcome == "approved"
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["isolate"].status is StepStatus.COMPLETED
    assert state.results["isolate"].output == "isolating web-01: confirmed"
    assert state.results["record_decision"].output == "isolated by alice"
    assert state.results["review"].resumed_by["id"] == "U0ALICE"
    assert runtime.engine.pending()[1] == 0


def test_denial_skips_the_gated_step(runtime, work):
    execution_id = start(runtime, work)
    runtime.engine.resume(execution_id, {"approved": False}, ALICE)
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["isolate"].status is StepStatus.SKIPPED
    assert state.results["record_decision"].output == "no action by alice"


def test_invalid_input_lists_every_violation_and_changes_nothing(runtime, work):
    execution_id = start(runtime, work)
    with pytest.raises(InputInvalid) as caught:
        runtime.engine.resume(execution_id, {"approved": "yes", "notes": 5}, ALICE)
    paths = sorted(v["path"] for v in caught.value.violations)
    assert paths == ["approved", "notes"]
    assert runtime.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT


def test_second_resume_says_who_decided_first(runtime, work):
    execution_id = start(runtime, work)
    runtime.engine.resume(execution_id, {"approved": True}, ALICE)
    with pytest.raises(AlreadyDecided) as caught:
        runtime.engine.resume(execution_id, {"approved": False},
                              Actor(id="U0BOB", name="bob", source="slack"))
    assert caught.value.by == "alice"
    assert caught.value.outcome == "approved"
    work()
    assert reviewer_answer(runtime.engine.get(execution_id).results["review"].output) == {"approved": True}


def test_resume_of_a_run_that_never_waited_is_refused(runtime, work):
    execution_id = start(runtime, work, text="""
name: plain
steps:
  - name: hello
    type: console
    with: {message: hi}
""")
    assert runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    with pytest.raises(NotWaiting):
        runtime.engine.resume(execution_id, {}, ALICE)


def test_audit_trail_records_the_decision_and_verifies(runtime, work):
    execution_id = start(runtime, work)
    runtime.engine.resume(execution_id, {"approved": True}, ALICE)
    work()
    entries = runtime.engine.audit_entries(execution_id)
    types = [e.event["type"] for e in entries]
    assert types[0] == "execution.created"
    assert "step.waiting_for_input" in types and types[-1] == "execution.completed"
    decided = next(e.event for e in entries if e.event["type"] == "step.decided")
    waiting = next(e.event for e in entries if e.event["type"] == "step.waiting_for_input")
    assert decided["actor"]["id"] == "U0ALICE"
    assert decided["messageSha256"] == waiting["sha256"]
    assert runtime.engine.verify_audit(execution_id).ok


def test_waiting_for_a_status_is_told_of_the_change_and_gives_up_on_time(runtime, work):
    execution_id = runtime.engine.run(parse_workflow(ISOLATE), EVENT)
    pending = runtime.store.wait_for_status(
        execution_id, lambda s: s is ExecutionStatus.WAITING_FOR_INPUT, timeout=0.2)
    assert pending is ExecutionStatus.PENDING  # no worker ran it: gave up after the timeout
    work()
    reached = runtime.store.wait_for_status(
        execution_id, lambda s: s is ExecutionStatus.WAITING_FOR_INPUT, timeout=5)
    assert reached is ExecutionStatus.WAITING_FOR_INPUT
