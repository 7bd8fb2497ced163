"""Attack: with a token that may decide, name someone else as the decider
(``X-Signoff-Actor``), or decide without naming anyone and hope to be recorded as "api"."""

from __future__ import annotations

from tests.security.conftest import decisions, status


def test_a_decide_token_cannot_name_another_actor(make_token, client_for, operator,
                                                  waiting_payout):
    execution_id = waiting_payout()
    carol = client_for(make_token("carol-laptop", "decide,read", principal="U0CAROL"))

    answer = carol.post(f"/api/workflowExecutions/{execution_id}/resume",
                        json={"approved": True}, headers={"X-Signoff-Actor": "U0ALICE"})

    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert body["error"] == "act_as_required"
    assert body["header"] == "X-Signoff-Actor" and body["named"] == "U0ALICE"
    assert body["principal"] == "U0CAROL" and "act-as" in body["message"]
    assert status(operator, execution_id) == "WAITING_FOR_INPUT"
    assert decisions(operator, execution_id) == []


def test_without_a_header_the_decision_is_the_principals(make_token, client_for, operator,
                                                         waiting_payout, work):
    execution_id = waiting_payout()
    alice = client_for(make_token("alice-phone", "decide", principal="U0ALICE"))

    answer = alice.post(f"/api/workflowExecutions/{execution_id}/resume",
                        json={"approved": True})

    assert answer.status_code == 200, answer.text
    assert answer.json()["decidedBy"]["id"] == "U0ALICE"
    work()
    decided = decisions(operator, execution_id)
    assert [d["actor"] for d in decided] == [{"id": "U0ALICE", "name": "U0ALICE",
                                              "source": "api", "token": "alice-phone"}]
    view = operator.get(f"/api/workflowExecutions/{execution_id}").json()
    assert view["steps"]["review"]["resumedBy"]["id"] == "U0ALICE"
    assert view["status"] == "COMPLETED"


def test_a_token_without_a_principal_decides_as_its_name(make_token, client_for, operator,
                                                         waiting_payout):
    execution_id = waiting_payout()
    bot = client_for(make_token("U0DAVE", "decide"))

    answer = bot.post(f"/api/workflowExecutions/{execution_id}/resume", json={"approved": False})

    assert answer.status_code == 200, answer.text
    assert [d["actor"]["id"] for d in decisions(operator, execution_id)] == ["U0DAVE"]


def test_naming_its_own_principal_needs_no_act_as(make_token, client_for, waiting_payout):
    execution_id = waiting_payout()
    alice = client_for(make_token("alice-phone", "decide", principal="U0ALICE"))

    answer = alice.post(f"/api/workflowExecutions/{execution_id}/resume",
                        json={"approved": True}, headers={"X-Signoff-Actor": "U0ALICE"})

    assert answer.status_code == 200, answer.text


def test_a_front_end_with_act_as_decides_for_the_user_it_authenticated(
        make_token, client_for, operator, waiting_payout):
    execution_id = waiting_payout()
    portal = client_for(make_token("portal", "decide,act-as", principal="portal"))

    answer = portal.post(f"/api/workflowExecutions/{execution_id}/resume",
                         json={"approved": True}, headers={"X-Signoff-Actor": "U0ALICE"})

    assert answer.status_code == 200, answer.text
    assert [d["actor"]["id"] for d in decisions(operator, execution_id)] == ["U0ALICE"]


def test_cancel_cannot_name_another_actor_either(make_token, client_for, operator,
                                                 waiting_payout):
    execution_id = waiting_payout()
    ops = client_for(make_token("ops", "admin", principal="U0ERIN"))

    answer = ops.post(f"/api/workflowExecutions/{execution_id}/cancel",
                      headers={"X-Signoff-Actor": "U0ALICE"})

    assert answer.status_code == 403 and answer.json()["error"] == "act_as_required"
    assert status(operator, execution_id) == "WAITING_FOR_INPUT"
