"""Attack: with the operator's token (which may act as others), name the run's own
requester in ``X-Signoff-Actor`` and approve her request; or send no actor at all and let
the operator's token decide a review restricted to named approvers."""

from __future__ import annotations

from tests.security.conftest import REQUESTER, decisions, status


def _refusals(client, execution_id: str) -> list[dict]:
    events = client.get(f"/api/workflowExecutions/{execution_id}/audit").json()["events"]
    return [e for e in events if e["type"] == "decision.refused"]


def test_naming_the_requester_as_the_actor_is_refused_and_audited(operator, waiting_payout):
    execution_id = waiting_payout()  # requested by Bob

    answer = operator.post(f"/api/workflowExecutions/{execution_id}/resume",
                           json={"approved": True}, headers={"X-Signoff-Actor": REQUESTER})

    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "self_approval"
    assert status(operator, execution_id) == "WAITING_FOR_INPUT"
    assert decisions(operator, execution_id) == []
    [refused] = _refusals(operator, execution_id)
    assert refused["actor"]["id"] == REQUESTER and refused["reason"] == "self_approval"


def test_the_operator_token_without_a_named_approver_cannot_decide(operator, waiting_payout):
    execution_id = waiting_payout()

    answer = operator.post(f"/api/workflowExecutions/{execution_id}/resume",
                           json={"approved": True})

    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "not_an_approver"
    assert answer.json()["actor"] == "operator"
    assert status(operator, execution_id) == "WAITING_FOR_INPUT"


def test_a_decide_token_whose_principal_is_no_approver_cannot_decide(
        make_token, client_for, operator, waiting_payout):
    execution_id = waiting_payout()
    carol = client_for(make_token("carol-laptop", "decide", principal="U0CAROL"))

    answer = carol.post(f"/api/workflowExecutions/{execution_id}/resume",
                        json={"approved": False})

    assert answer.status_code == 403 and answer.json()["error"] == "not_an_approver"
    assert status(operator, execution_id) == "WAITING_FOR_INPUT"


def test_a_named_approver_still_decides(operator, waiting_payout, work):
    execution_id = waiting_payout()
    answer = operator.post(f"/api/workflowExecutions/{execution_id}/resume",
                           json={"approved": True}, headers={"X-Signoff-Actor": "<@u0dave>"})
    assert answer.status_code == 200, answer.text
    work()
    assert status(operator, execution_id) == "COMPLETED"
    assert [d["actor"]["id"] for d in decisions(operator, execution_id)] == ["U0DAVE"]
