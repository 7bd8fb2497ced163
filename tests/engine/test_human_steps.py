"""Human steps as Elastic 9.5 has them: the answer's output shape (9.4 and 9.5 at once) and
Kibana's default wait timeouts, on a real Redis with real RQ jobs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import WorkflowInvalid
from engine.notify import Actor
from engine.state.execution import ExecutionStatus, StepStatus, parse_iso

ALICE = Actor(id="U0ALICE", name="alice", source="slack")

# One run that reads a waitForInput and a waitForApproval answer both ways.
BOTH_WAYS = """
name: both-ways
steps:
  - name: review
    type: waitForInput
    with:
      message: "Isolate?"
      schema:
        type: object
        properties:
          approved: {type: boolean}
          notes: {type: string}
        required: [approved]
  - name: old_style
    type: console
    if: "steps.review.output.approved : true"
    with:
      message: "9.4 {{ steps.review.output.notes }} by {{ steps.review.resumedBy.name }}"
  - name: new_style
    type: console
    if: "steps.review.output.response.approved : true"
    with:
      message: >-
        9.5 {{ steps.review.output.response.notes }} by {{ steps.review.output.respondedBy }}
        via {{ steps.review.output.channel }}
  - name: sign
    type: waitForApproval
    with:
      message: "Sign off?"
  - name: signed_old
    type: console
    if: "steps.sign.output.approved : false"
    with: {message: "9.4 declined at {{ steps.sign.resumedAt }}"}
  - name: signed_new
    type: console
    if: "not steps.sign.output.response.approved : true"
    with: {message: "9.5 declined at {{ steps.sign.output.respondedAt }}"}
"""


def start(runtime, work, text, event=None):
    execution_id = runtime.engine.run(parse_workflow(text), event or {})
    work()
    return execution_id


def test_an_answer_reads_as_elastic_9_4_and_9_5_had_it_in_one_run(runtime, work):
    execution_id = start(runtime, work, BOTH_WAYS)
    runtime.engine.resume(execution_id, {"approved": True, "notes": "confirmed"}, ALICE)
    work()
    runtime.engine.resume(execution_id, {"approved": False}, ALICE)
    work()

    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["old_style"].output == "9.4 confirmed by alice"
    assert state.results["new_style"].output == "9.5 confirmed by alice via slack"
    review = state.results["review"]
    assert review.output == {
        "approved": True, "notes": "confirmed",
        "response": {"approved": True, "notes": "confirmed"},
        "respondedBy": "alice", "respondedAt": review.resumed_at, "channel": "slack"}
    sign = state.results["sign"]
    assert sign.output["response"] == {"approved": False}
    assert sign.output["approved"] is False
    assert state.results["signed_old"].output == f"9.4 declined at {sign.resumed_at}"
    assert state.results["signed_new"].output == f"9.5 declined at {sign.resumed_at}"


def test_a_denial_through_the_api_skips_both_gated_steps(runtime, work):
    execution_id = start(runtime, work, BOTH_WAYS)
    runtime.engine.resume(execution_id, {"approved": False}, Actor(id="ops", name="ops"))
    work()
    review = runtime.engine.get(execution_id).results["review"]
    assert review.output["response"] == {"approved": False}
    assert review.output["channel"] == "api" and review.output["respondedBy"] == "ops"
    assert review.resumed_by is not None and review.resumed_by["id"] == "ops"
    skipped = runtime.engine.get(execution_id).results
    assert skipped["old_style"].status is StepStatus.SKIPPED
    assert skipped["new_style"].status is StepStatus.SKIPPED


WAIT = """
name: defaults
steps:
  - name: review
    type: {type}
    with:
      message: "Go?"
{extra}
  - name: after
    type: console
    with: {{message: "after"}}
"""


@pytest.mark.parametrize(("step_type", "default"), [("waitForApproval", timedelta(hours=24)),
                                                    ("waitForInput", timedelta(hours=72))])
def test_a_step_without_timeout_waits_as_long_as_kibanas_default_then_fails(
        runtime, work, step_type, default):
    execution_id = start(runtime, work, WAIT.format(type=step_type, extra=""))
    waiting = runtime.engine.get(execution_id).waiting
    assert waiting is not None
    since, due = parse_iso(waiting.since), parse_iso(waiting.due_at)
    assert since is not None and due is not None and due - since == default

    runtime.engine.clock = lambda: due - timedelta(seconds=1)
    assert runtime.engine.step_timed_out(execution_id, "review") is False  # not yet
    runtime.engine.clock = lambda: due
    assert runtime.engine.step_timed_out(execution_id, "review") is True
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.FAILED
    failed = state.results["review"]
    assert failed.status is StepStatus.FAILED and "after" not in state.results
    assert failed.output["respondedBy"] == "system" and failed.output["channel"] == "timeout"
    assert failed.output["timedOut"] is True


def test_on_timeout_chooses_the_outcome_of_the_default_timeout(runtime, work):
    execution_id = start(runtime, work, WAIT.format(type="waitForApproval",
                                                    extra="      on-timeout: deny"))
    due = parse_iso(runtime.engine.get(execution_id).waiting.due_at)
    runtime.engine.clock = lambda: due
    assert runtime.engine.step_timed_out(execution_id, "review") is True
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    review = state.results["review"].output
    assert review["response"] == {"approved": False} and review["approved"] is False
    assert review["respondedBy"] == "system" and review["channel"] == "timeout"


SHORTER = """
name: shorter
settings:
  timeout: 1h
steps:
  - name: approve
    type: waitForApproval
    timeout: 10m
  - name: answer
    type: waitForInput
"""


def test_a_step_timeout_or_the_run_timeout_wins_over_the_default(runtime, work):
    execution_id = start(runtime, work, SHORTER)
    waiting = runtime.engine.get(execution_id).waiting
    assert parse_iso(waiting.due_at) - parse_iso(waiting.since) == timedelta(minutes=10)
    runtime.engine.resume(execution_id, {"approved": True}, ALICE)
    work()
    waiting = runtime.engine.get(execution_id).waiting
    assert waiting is not None and waiting.step == "answer"
    assert parse_iso(waiting.due_at) - parse_iso(waiting.since) <= timedelta(hours=1)


CHANNELS = """
name: channels
steps:
  - name: review
    type: {type}
    with:
      message: "Go?"
      channels: {channels}
"""


@pytest.mark.parametrize("step_type", ["waitForApproval", "waitForInput"])
def test_elastic_9_5_channels_load_as_kibana_declares_them(step_type):
    parse_workflow(CHANNELS.format(type=step_type, channels=(
        "{slack: {connector-id: hook, message: 'Respond'}, "
        "slack_api: {connector-id: api, channels: [C0OPS, C0SECOPS]}}")))


@pytest.mark.parametrize("channels", [
    "{slack_api: {connector-id: api}}",  # no channel ids
    "{slack_api: {connector-id: api, channels: []}}",
    "{slack: {channel: C0OPS}}",  # no connector-id
    "{email: {connector-id: smtp}}",  # not a 9.5 channel
])
def test_malformed_channels_fail_validation(channels):
    with pytest.raises(WorkflowInvalid):
        parse_workflow(CHANNELS.format(type="waitForApproval", channels=channels))


def test_a_channel_message_with_kibanas_form_link_does_not_stop_the_review(runtime, work):
    execution_id = start(runtime, work, CHANNELS.format(type="waitForInput", channels=(
        "{slack: {connector-id: hook, "
        "message: 'Respond here: {{context.hitl.externalFormLink}}'}}")))
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
