"""Attack: Alice approves a quorum-of-two review (1 of 2), reassigns it to Dave, who was
never named, and Dave's approval completes the run: one approver met the quorum alone.

Reassigning is a hand-off of one's own seat, allowed only to someone who has not voted;
the one who hands it on loses it. Tried in Slack (the Reassign… menu and its modal) and
on the API (``POST …/reassign``)."""

from __future__ import annotations

import pytest

from bot.blocks import ACTION_APPROVE, ACTION_REASSIGN, APPROVER_BLOCK
from engine.state.execution import ExecutionStatus
from tests.bot.conftest import REVIEWS, Signoff

QUORUM = """
name: prod-change
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Deploy 4.2 to production?"
      approvers: [U0ALICE, U0BOB, U0CAROL]
      approvals-required: 2
"""


def _reassign_option(message) -> str:
    return next(e for b in message["blocks"] if b["type"] == "actions"
                for e in b["elements"] if e["action_id"] == ACTION_REASSIGN)["options"][0]["value"]


def test_in_slack_an_approver_who_voted_cannot_hand_her_seat_on(signoff: Signoff):
    execution_id = signoff.run(QUORUM)
    [message] = signoff.messages(REVIEWS)
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    [message] = signoff.messages(REVIEWS)

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_REASSIGN,
                                _reassign_option(message)).ok
    signoff.drain()

    assert signoff.slack.workspace.views.modals("U0ALICE") == []  # no picker opened
    assert signoff.ephemerals("U0ALICE")[-1] == (
        "You can't decide this review: you approved it already; each person counts once "
        "towards its quorum.")
    waiting = signoff.engine.get(execution_id).waiting
    assert "U0DAVE" not in waiting.approvers and waiting.handed == ()


def test_in_slack_a_hand_off_takes_the_seat_from_who_handed_it_on(signoff: Signoff):
    execution_id = signoff.run(QUORUM)
    [message] = signoff.messages(REVIEWS)
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_REASSIGN,
                                _reassign_option(message)).ok
    [picker] = signoff.slack.workspace.views.modals("U0BOB")
    assert signoff.driver.submit_view("U0BOB", picker["id"], {APPROVER_BLOCK: "U0DAVE"}).ok
    signoff.drain()

    # Bob gave his seat away: his approval no longer counts.
    [message] = signoff.messages(REVIEWS)
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.ephemerals("U0BOB")[-1] == (
        "You can't decide this review: you handed it to someone else.")
    assert signoff.engine.get(execution_id).waiting.approvals == ()

    # Dave holds it now; with Alice, two distinct holders decide.
    for user in ("U0DAVE", "U0ALICE"):
        assert signoff.driver.click(user, (REVIEWS, message["ts"]), ACTION_APPROVE).ok
        signoff.drain()
    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    [decided] = [e.event for e in signoff.engine.audit_entries(execution_id)
                 if e.event["type"] == "step.decided"]
    assert [a["id"] for a in decided["approvals"]] == ["U0DAVE", "U0ALICE"]


@pytest.fixture
def waiting_change(workflow_file, operator, work):
    workflow_file(QUORUM, "prod-change.yaml")
    started = operator.post("/api/workflows/prod-change/run", json={},
                            headers={"X-Signoff-Requested-By": "U0ERIN01"})
    assert started.status_code == 201, started.text
    work()
    return str(started.json()["executionId"])


def test_on_the_api_alice_approves_then_reassigns_and_is_refused(operator, waiting_change):
    base = f"/api/workflowExecutions/{waiting_change}"
    as_alice = {"X-Signoff-Actor": "U0ALICE"}
    assert operator.post(f"{base}/resume", json={"approved": True},
                         headers=as_alice).status_code == 202

    handed = operator.post(f"{base}/reassign", json={"to": "U0DAVE", "reason": "away"},
                           headers=as_alice)

    assert handed.status_code == 403, handed.text
    assert handed.json()["error"] == "already_voted"
    dave = operator.post(f"{base}/resume", json={"approved": True},
                         headers={"X-Signoff-Actor": "U0DAVE"})
    assert dave.status_code == 403 and dave.json()["error"] == "not_an_approver"
    events = operator.get(f"{base}/audit").json()["events"]
    assert [e["reason"] for e in events if e["type"] == "decision.refused"] == [
        "already_voted", "not_an_approver"]


@pytest.mark.parametrize(("who", "to", "error"), [
    ("U0DAVE", "U0FRANK1", "not_an_approver"),  # only a seat holder hands one on
    ("U0ALICE", "U0BOB", "already_an_approver"),
    ("U0ALICE", "<@u0erin01>", "reassign_to_requester"),
])
def test_on_the_api_a_hand_off_is_refused_with_its_reason(operator, waiting_change, who, to,
                                                          error):
    answer = operator.post(f"/api/workflowExecutions/{waiting_change}/reassign",
                           json={"to": to}, headers={"X-Signoff-Actor": who})
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == error


def test_on_the_api_a_hand_off_moves_the_seat(operator, waiting_change, work):
    base = f"/api/workflowExecutions/{waiting_change}"
    handed = operator.post(f"{base}/reassign", json={"to": "U0DAVE"},
                           headers={"X-Signoff-Actor": "U0BOB"})
    assert handed.status_code == 200, handed.text
    assert handed.json() == {"executionId": waiting_change, "reassignedTo": "U0DAVE",
                             "handedOffBy": "U0BOB"}
    bob = operator.post(f"{base}/resume", json={"approved": True},
                        headers={"X-Signoff-Actor": "U0BOB"})
    assert bob.status_code == 403 and bob.json()["error"] == "handed_off"
    for who in ("U0DAVE", "U0CAROL"):
        operator.post(f"{base}/resume", json={"approved": True}, headers={"X-Signoff-Actor": who})
    work()
    assert operator.get(base).json()["status"] == "COMPLETED"


def test_reassign_needs_the_decide_scope_and_a_person(make_token, client_for, waiting_change):
    reader = client_for(make_token("reader", "read"))
    denied = reader.post(f"/api/workflowExecutions/{waiting_change}/reassign",
                         json={"to": "U0DAVE"})
    assert denied.status_code == 403 and denied.json()["error"] == "missing_scope"
    bob = client_for(make_token("bob", "decide", principal="U0BOB"))
    empty = bob.post(f"/api/workflowExecutions/{waiting_change}/reassign", json={"to": " "})
    assert empty.status_code == 400 and '"to"' in empty.json()["message"]
