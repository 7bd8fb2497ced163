"""Attack: Alice asks for a run under another spelling of herself (``u0alice``,
``<@U0ALICE>``, ``alice+ci@…`` in another case) and then approves it in Slack as if she
were someone else; or names a requester nobody can tie to a person.

The requester is normalised when the run starts, and compared as a person: a Slack id
in any case or mention, an e-mail address by the address Slack shows for the clicker
(case and ``+tag`` aside). When the clicker's address cannot be looked up, the approval
is refused (fail closed) and the reviewer is told why."""

from __future__ import annotations

import pytest

from bot.blocks import ACTION_APPROVE
from engine.errors import RequesterInvalid
from engine.state.execution import ExecutionStatus
from slack_emulator.directory import User
from tests.bot.conftest import REVIEWS, Signoff

GRANT = """
name: grant
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Grant prod access?"
      approvers: [S0SOCL1, U0CAROL, U0FRANK1]
"""
SELF = "You can't decide this review: you requested this run, and its step does not allow " \
       "self-approval."


@pytest.mark.parametrize("spelling", ["u0alice", "<@U0ALICE>", "<@u0alice|alice>",
                                      "alice+ci@signoff.test", "ALICE@Signoff.Test"])
def test_alice_cannot_approve_her_own_run_under_another_spelling(signoff: Signoff, spelling):
    execution_id = signoff.run(GRANT, requested_by=spelling)
    [message] = signoff.messages(REVIEWS)

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()

    assert signoff.ephemerals("U0ALICE") == [SELF]
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    refused = [e.event for e in signoff.engine.audit_entries(execution_id)
               if e.event["type"] == "decision.refused"]
    assert [(e["actor"]["id"], e["reason"]) for e in refused] == [("U0ALICE", "self_approval")]


def test_a_clicker_whose_address_slack_does_not_show_is_refused_when_the_requester_is_one(
        signoff: Signoff):
    signoff.slack.workspace.add_user(User(id="U0FRANK1", name="frank", real_name="Frank Li"))
    signoff.slack.workspace.add_member(REVIEWS, "U0FRANK1")
    execution_id = signoff.run(GRANT, requested_by="erin@signoff.test")
    [message] = signoff.messages(REVIEWS)

    assert signoff.driver.click("U0FRANK1", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()

    [said] = signoff.ephemerals("U0FRANK1")
    assert "its requester is named by e-mail address and Slack does not show yours" in said
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT

    # Carol's address is known and is not the requester's: she decides.
    assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).results["review"].resumed_by["id"] == "U0CAROL"


@pytest.mark.parametrize("requester", ["alice", "Alice Martin", "@alice", "U0", "<!here>"])
def test_a_requester_that_names_nobody_is_refused_at_the_start(signoff: Signoff, requester):
    with pytest.raises(RequesterInvalid):
        signoff.run(GRANT, requested_by=requester)


def test_the_api_answers_422_requester_invalid(operator):
    answer = operator.post("/api/workflows/payout/run", json={"amount": 1, "iban": "x"},
                           headers={"X-Signoff-Requested-By": "alice"})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "requester_invalid" and body["requester"] == "alice"
    assert operator.get("/api/workflowExecutions").json()["total"] == 0


def test_a_token_principal_is_a_valid_requester(operator, make_token):
    make_token("deploy-pipeline", "run", principal="ci:deploy")
    answer = operator.post("/api/workflows/payout/run", json={"amount": 1, "iban": "x"},
                           headers={"X-Signoff-Requested-By": "ci:deploy"})
    assert answer.status_code == 201, answer.text
    view = operator.get(answer.headers["Location"]).json()
    assert view["requestedBy"] == "ci:deploy"
