"""Attack on the API's escalate (``POST …/escalate``): replay one escalation (or send two
at once) to skip a level, escalate without saying from where, or escalate a review one
may not decide."""

from __future__ import annotations

import pytest

CHAIN = """
name: contain
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Isolate web-01?"
      approvers: [U0ALICE]
      escalation:
        - approvers: [U0CAROL]
        - approvers: [U0DAVE]
"""


@pytest.fixture
def waiting_chain(workflow_file, operator, work):
    workflow_file(CHAIN, "contain.yaml")
    started = operator.post("/api/workflows/contain/run", json={},
                            headers={"X-Signoff-Requested-By": "U0BOB"})
    assert started.status_code == 201, started.text
    work()
    return f"/api/workflowExecutions/{started.json()['executionId']}"


def test_a_replayed_escalation_is_told_who_moved_it_and_skips_nothing(operator, waiting_chain):
    request = {"json": {"reason": "no answer", "fromLevel": 1},
               "headers": {"X-Signoff-Actor": "U0ALICE"}}
    first = operator.post(f"{waiting_chain}/escalate", **request)
    assert first.status_code == 200, first.text
    assert first.json()["level"] == 2 and first.json()["levels"] == 3

    replayed = operator.post(f"{waiting_chain}/escalate", **request)

    assert replayed.status_code == 409, replayed.text
    body = replayed.json()
    assert body["error"] == "already_escalated"
    assert body["level"] == 2 and body["escalatedBy"] == "U0ALICE"
    assert operator.get(waiting_chain).json()["waitingFor"]["level"] == 2


def test_an_escalation_must_say_the_level_it_saw(operator, waiting_chain):
    answer = operator.post(f"{waiting_chain}/escalate", json={"reason": "now"},
                           headers={"X-Signoff-Actor": "U0ALICE"})
    assert answer.status_code == 400 and "fromLevel" in answer.json()["message"]
    answer = operator.post(f"{waiting_chain}/escalate", json={"fromLevel": 1},
                           headers={"X-Signoff-Actor": "U0ALICE"})
    assert answer.status_code == 400 and '"reason"' in answer.json()["message"]


@pytest.mark.parametrize(("who", "error"), [("U0DAVE", "not_an_approver"),
                                            ("U0BOB", "self_approval")])
def test_only_who_may_decide_escalates(operator, waiting_chain, who, error):
    answer = operator.post(f"{waiting_chain}/escalate",
                           json={"reason": "skip the queue", "fromLevel": 1},
                           headers={"X-Signoff-Actor": who})
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == error
    assert operator.get(waiting_chain).json()["waitingFor"]["level"] == 1


def test_a_token_without_decide_cannot_escalate(make_token, client_for, waiting_chain):
    reader = client_for(make_token("dash", "read"))
    answer = reader.post(f"{waiting_chain}/escalate", json={"reason": "x", "fromLevel": 1})
    assert answer.status_code == 403 and answer.json()["error"] == "missing_scope"
