"""Attack: use a token for more than its scopes allow (decide with a read token, start
runs with a decide token, read with a run token, cancel without admin)."""

from __future__ import annotations

from tests.security.conftest import decisions, status


def refused_for(answer, scope: str) -> None:
    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert body["error"] == "missing_scope"
    assert body["scope"] == scope
    assert scope in body["message"]


def test_a_token_without_decide_cannot_resume(make_token, client_for, operator,
                                              waiting_payout):
    execution_id = waiting_payout()
    reader = client_for(make_token("dashboard", "read,run", principal="U0ALICE"))

    refused_for(reader.post(f"/api/workflowExecutions/{execution_id}/resume",
                            json={"approved": True}), "decide")
    refused_for(reader.post(f"/api/workflows/executions/{execution_id}/resume",
                            json={"input": {"approved": True}}), "decide")

    assert status(reader, execution_id) == "WAITING_FOR_INPUT"  # its read scope works
    assert decisions(operator, execution_id) == []


def test_a_token_without_run_cannot_start_a_run(make_token, client_for, operator):
    decider = client_for(make_token("approver-bot", "decide,read", principal="U0ALICE"))

    refused_for(decider.post("/api/workflows/payout/run", json={"amount": 1, "iban": "x"}),
                "run")

    assert operator.get("/api/workflowExecutions").json()["total"] == 0


def test_a_token_without_read_cannot_read(make_token, client_for, waiting_payout):
    execution_id = waiting_payout()
    starter = client_for(make_token("ci", "run"))

    refused_for(starter.get(f"/api/workflowExecutions/{execution_id}"), "read")
    refused_for(starter.get("/api/workflowExecutions"), "read")
    refused_for(starter.get(f"/api/workflowExecutions/{execution_id}/audit"), "read")
    # Nor does the refusal say whether the execution exists.
    refused_for(starter.get("/api/workflowExecutions/no-such-run"), "read")

    started = starter.post("/api/workflows/payout/run", json={"amount": 1, "iban": "x"})
    assert started.status_code == 201  # its run scope works


def test_a_token_without_admin_cannot_cancel(make_token, client_for, operator, waiting_payout):
    execution_id = waiting_payout()
    everyone_but_admin = client_for(make_token("front-end", "run,read,decide,act-as"))

    refused_for(everyone_but_admin.post(f"/api/workflowExecutions/{execution_id}/cancel",
                                        json={"reason": "no"}), "admin")

    assert status(operator, execution_id) == "WAITING_FOR_INPUT"
    admin = client_for(make_token("ops", "admin"))
    assert admin.post(f"/api/workflowExecutions/{execution_id}/cancel").status_code == 200
    assert status(operator, execution_id) == "CANCELLED"
