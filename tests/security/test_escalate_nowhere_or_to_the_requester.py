"""Escalate is always on the message, and cannot be turned against the rules: past the
last level it goes to the workspace's escalation contacts (SIGNOFF_ESCALATE_TO) once, or,
without them, to someone the reviewer picks, who may not be the run's requester. A review
whose approvers are only its requester (an owner taken from the event who also asked)
says so and goes to the escalation contacts instead of waiting for a vote that can never
count."""

from __future__ import annotations

from bot.blocks import ACTION_APPROVE, ACTION_ESCALATE, APPROVER_BLOCK, REASON_BLOCK
from engine.state.execution import ExecutionStatus
from tests.bot.conftest import REVIEWS, Signoff

ONE_LEVEL = """
name: grant
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Grant prod access to {{ event.user }}?"
      approvers: ["{{ event.owner }}"]
"""


def _escalated(signoff: Signoff, execution_id: str) -> list[dict]:
    return [e.event for e in signoff.engine.audit_entries(execution_id)
            if e.event["type"] == "review.escalated"]


def test_past_the_last_level_the_reviewer_picks_whom_and_cannot_pick_the_requester(
        signoff: Signoff):
    execution_id = signoff.run(ONE_LEVEL, {"user": "bob", "owner": "U0ALICE"},
                               requested_by="U0BOB")
    [message] = signoff.messages(REVIEWS)
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_ESCALATE).ok
    [picker] = signoff.slack.workspace.views.modals("U0ALICE")
    assert any(b.get("block_id") == APPROVER_BLOCK for b in picker["blocks"])

    to_requester = signoff.driver.submit_view("U0ALICE", picker["id"], {
        APPROVER_BLOCK: "U0BOB", REASON_BLOCK: "he knows the system"})
    assert to_requester.body == {"response_action": "errors", "errors": {APPROVER_BLOCK: (
        "They requested this run, and its step does not allow self-approval.")}}
    assert _escalated(signoff, execution_id) == []

    assert signoff.driver.submit_view("U0ALICE", picker["id"], {
        APPROVER_BLOCK: "U0CAROL", REASON_BLOCK: "needs the team lead"}).ok
    signoff.drain()
    [event] = _escalated(signoff, execution_id)
    assert event["approvers"] == ["U0CAROL"] and event["target"] == "chosen"
    assert event["reason"] == "needs the team lead"
    [lead_copy] = signoff.messages("D0CAROL")
    assert signoff.driver.click("U0CAROL", ("D0CAROL", lead_copy["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).results["review"].resumed_by["id"] == "U0CAROL"


def test_a_review_only_its_requester_could_decide_says_so_and_waits_for_an_admin(
        signoff: Signoff):
    execution_id = signoff.run(ONE_LEVEL, {"user": "bob", "owner": "U0BOB"},
                               requested_by="U0BOB")
    [message] = signoff.messages(REVIEWS)
    assert "Nobody named can decide this review: its only approvers requested it" in str(
        message["blocks"])
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    assert _escalated(signoff, execution_id) == []


def test_with_escalation_contacts_it_goes_to_them(start_signoff, bot_settings):
    signoff = start_signoff(bot_settings, escalate_to=("U0DAVE",))
    execution_id = signoff.run(ONE_LEVEL, {"user": "bob", "owner": "U0BOB"},
                               requested_by="bob@signoff.test")
    [event] = _escalated(signoff, execution_id)
    assert event["actor"]["id"] == "system:escalation" and event["target"] == "default"
    assert event["approvers"] == ["U0DAVE"]
    [dave_copy] = signoff.messages("D0DAVE")
    assert signoff.driver.click("U0DAVE", ("D0DAVE", dave_copy["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).results["review"].resumed_by["id"] == "U0DAVE"

    # Escalating once more goes nowhere: the contacts were the end of the line.
    again = signoff.run(ONE_LEVEL, {"user": "carol", "owner": "U0ALICE"})
    [*_, message] = signoff.messages(REVIEWS)
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_ESCALATE).ok
    [modal] = signoff.slack.workspace.views.modals("U0ALICE")
    assert not any(b.get("block_id") == APPROVER_BLOCK for b in modal["blocks"])
    assert "<@U0DAVE>" in str(modal["blocks"])
    assert signoff.driver.submit_view("U0ALICE", modal["id"], {REASON_BLOCK: "on leave"}).ok
    signoff.drain()
    assert [e["target"] for e in _escalated(signoff, again)] == ["default"]
    [*_, message] = signoff.messages(REVIEWS)
    assert ACTION_ESCALATE not in str(message["blocks"])
