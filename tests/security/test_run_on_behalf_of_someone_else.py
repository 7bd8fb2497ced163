"""Attack: with a token that may start runs, name someone else as the requester
(``X-Signoff-Requested-By``), so that they look like they asked (and, say, a review
that refuses self-approval lets the real requester approve)."""

from __future__ import annotations

from tests.security.conftest import REQUESTER

EVENT = {"amount": 9000, "iban": "DE00 1234"}


def created(operator, execution_id: str) -> dict:
    events = operator.get(f"/api/workflowExecutions/{execution_id}/audit").json()["events"]
    assert events[0]["type"] == "execution.created"
    return events[0]


def test_a_run_token_cannot_name_another_requester(make_token, client_for, operator,
                                                   redis_client):
    ci = client_for(make_token("ci", "run", principal="U0ALICE"))

    answer = ci.post("/api/workflows/payout/run", json=EVENT,
                     headers={"X-Signoff-Requested-By": REQUESTER})

    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert body["error"] == "act_as_required"
    assert body["header"] == "X-Signoff-Requested-By" and body["named"] == REQUESTER
    assert operator.get("/api/workflowExecutions").json()["total"] == 0
    assert not list(redis_client.scan_iter("signoff:x:*"))  # no run was started
    assert redis_client.llen("rq:queue:signoff") == 0


def test_without_a_header_the_requester_is_the_principal(make_token, client_for, operator):
    ci = client_for(make_token("ci", "run", principal="U0ALICE"))

    answer = ci.post("/api/workflows/payout/run", json=EVENT)

    assert answer.status_code == 201, answer.text
    execution_id = answer.json()["executionId"]
    assert operator.get(f"/api/workflowExecutions/{execution_id}").json()["requestedBy"] == \
        "U0ALICE"
    first = created(operator, execution_id)
    assert first["requestedBy"] == "U0ALICE" and first["actor"]["id"] == "U0ALICE"


def test_a_token_without_a_principal_requests_as_its_name(make_token, client_for, operator):
    ci = client_for(make_token("nightly-ci", "run"))

    execution_id = ci.post("/api/workflows/payout/run", json=EVENT).json()["executionId"]

    assert created(operator, execution_id)["requestedBy"] == "nightly-ci"


def test_a_front_end_with_act_as_names_the_user_it_authenticated(make_token, client_for,
                                                                 operator):
    portal = client_for(make_token("portal", "run,act-as", principal="portal"))

    answer = portal.post("/api/workflows/payout/run", json=EVENT,
                         headers={"X-Signoff-Requested-By": REQUESTER})

    assert answer.status_code == 201, answer.text
    execution_id = answer.json()["executionId"]
    first = created(operator, execution_id)
    assert first["requestedBy"] == REQUESTER
    assert first["actor"]["id"] == "portal"  # who called is on the record too
