"""Attack: one caller makes up both votes of a quorum of two, by approving twice or by
approving under two spellings of the same person."""

from __future__ import annotations

import pytest

from tests.security.conftest import decisions, status

QUORUM = """
name: deploy
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Deploy 4.2 to production?"
      approvers: ["U0ALICE", "U0DAVE", "carol@signoff.test"]
      approvals-required: 2
"""


@pytest.fixture
def waiting_deploy(workflow_file, operator, work, make_token):
    workflow_file(QUORUM, "deploy.yaml")
    make_token("ci-bot", "run")  # the pipeline that asks; a principal, not a person

    def start() -> str:
        started = operator.post("/api/workflows/deploy/run", json={},
                                headers={"X-Signoff-Requested-By": "ci-bot"})
        assert started.status_code == 201, started.text
        work()
        return str(started.json()["executionId"])

    return start


@pytest.mark.parametrize("second", ["U0ALICE", "u0alice", "<@U0ALICE>"])
def test_the_same_approver_twice_is_refused_as_already_voted(operator, waiting_deploy, second):
    execution_id = waiting_deploy()
    url = f"/api/workflowExecutions/{execution_id}/resume"
    first = operator.post(url, json={"approved": True}, headers={"X-Signoff-Actor": "U0ALICE"})
    assert first.status_code == 202 and first.json()["approvals"] == 1

    again = operator.post(url, json={"approved": True}, headers={"X-Signoff-Actor": second})

    assert again.status_code == 403, again.text
    assert again.json()["error"] == "already_voted"
    assert status(operator, execution_id) == "WAITING_FOR_INPUT"


def test_an_address_counts_as_the_same_person_under_another_case_or_tag(operator,
                                                                        waiting_deploy):
    execution_id = waiting_deploy()
    url = f"/api/workflowExecutions/{execution_id}/resume"
    assert operator.post(url, json={"approved": True},
                         headers={"X-Signoff-Actor": "carol@signoff.test"}).status_code == 202
    again = operator.post(url, json={"approved": True},
                          headers={"X-Signoff-Actor": "Carol+2nd@Signoff.test"})
    assert again.status_code == 403 and again.json()["error"] == "already_voted"


def test_two_distinct_approvers_decide(operator, waiting_deploy, work):
    execution_id = waiting_deploy()
    url = f"/api/workflowExecutions/{execution_id}/resume"
    operator.post(url, json={"approved": True}, headers={"X-Signoff-Actor": "U0ALICE"})
    second = operator.post(url, json={"approved": True}, headers={"X-Signoff-Actor": "U0DAVE"})
    assert second.status_code == 200 and second.json()["outcome"] == "approved"
    work()
    [decided] = decisions(operator, execution_id)
    assert [a["id"] for a in decided["approvals"]] == ["U0ALICE", "U0DAVE"]
