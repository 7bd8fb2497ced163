"""The HTTP API over real loopback HTTP, served by uvicorn, with a real Redis and RQ jobs."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.api import WebExtension, build_api
from engine.definition.loader import WorkflowCatalog
from engine.errors import CannotEscalate, Contention

GATE = """
name: refund
steps:
  - name: review
    type: waitForInput
    with:
      message: "Refund {{ event.amount }} EUR to {{ event.customer }}?"
      approvers: ["U0ALICE", "alice@example.com", "bob"]
      schema:
        type: object
        properties:
          approved: {type: boolean}
          notes: {type: string, maxLength: 20}
        required: [approved]
  - name: payout
    type: console
    if: "steps.review.output.approved : true"
    with: {message: "paid {{ event.amount }}"}
"""


@pytest.fixture
def api(runtime, served, workflow_file, settings):
    workflow_file(GATE, "refund.yaml")
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="test-token", workers_seen=lambda: 0)
    server = served(app)
    client = server.client(headers={"Authorization": "Bearer test-token"})
    yield client
    client.close()


AS_ALICE = {"X-Signoff-Actor": "U0ALICE"}


def start(api, work, event=None):
    response = api.post("/api/workflows/refund/run", json=event or {"amount": 40,
                                                                    "customer": "ACME"})
    assert response.status_code == 201, response.text
    execution_id = response.json()["executionId"]
    work()
    return execution_id


def test_run_then_read_shows_waiting_for(api, work):
    execution_id = start(api, work)
    body = api.get(f"/api/workflowExecutions/{execution_id}").json()
    assert body["status"] == "WAITING_FOR_INPUT"
    assert body["workflow"] == "refund"
    assert body["waitingFor"]["step"] == "review"
    assert body["waitingFor"]["message"] == "Refund 40 EUR to ACME?"
    assert body["waitingFor"]["approvers"] == ["U0ALICE", "alice@example.com", "bob"]
    assert body["steps"]["review"]["status"] == "WAITING_FOR_INPUT"


def test_resume_with_elastic_body_then_conflict_names_the_first_decider(api, work):
    execution_id = start(api, work)
    first = api.post(f"/api/workflowExecutions/{execution_id}/resume",
                     json={"approved": True, "notes": "ok"},
                     headers={"X-Signoff-Actor": "alice@example.com"})
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "approved"
    second = api.post(f"/api/workflowExecutions/{execution_id}/resume", json={"approved": False})
    assert second.status_code == 409
    assert second.json()["error"] == "already_decided"
    assert second.json()["decidedBy"] == "alice@example.com"
    work()
    body = api.get(f"/api/workflowExecutions/{execution_id}").json()
    assert body["status"] == "COMPLETED"
    assert body["steps"]["payout"]["output"] == "paid 40"
    assert body["steps"]["review"]["resumedBy"]["id"] == "alice@example.com"


def test_resume_on_elastic_current_path_takes_wrapped_input(api, work):
    execution_id = start(api, work)
    response = api.post(f"/api/workflows/executions/{execution_id}/resume",
                        json={"input": {"approved": False}}, headers=AS_ALICE)
    assert response.status_code == 200
    assert response.json()["outcome"] == "denied"
    bad = api.post(f"/api/workflows/executions/{execution_id}/resume", json={"approved": True})
    assert bad.status_code in (400, 409)


def test_schema_violations_are_listed_with_422(api, work):
    execution_id = start(api, work)
    response = api.post(f"/api/workflowExecutions/{execution_id}/resume",
                        json={"approved": "yes", "notes": "x" * 30}, headers=AS_ALICE)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "input_invalid"
    assert {v["path"] for v in body["violations"]} == {"approved", "notes"}
    assert api.get(f"/api/workflowExecutions/{execution_id}").json()["status"] == \
        "WAITING_FOR_INPUT"


def test_errors_are_json_with_the_right_status(api, work):
    assert api.get("/api/workflowExecutions/nope").status_code == 404
    assert api.get("/api/workflowExecutions/nope").json()["error"] == "not_found"
    missing = api.post("/api/workflows/nope/run", json={})
    assert missing.status_code == 404 and "refund" in missing.json()["message"]
    broken = api.post("/api/workflows/refund/run", content=b"{not json",
                      headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["message"]
    assert api.get("/api/workflowExecutions?status=BOGUS").status_code == 400
    assert api.get("/api/workflowExecutions?size=0").status_code == 400


def test_write_contention_and_the_last_level_are_409_with_their_own_codes(
        runtime, served, settings):
    # Both need races or reviews that are hard to stage over HTTP; a plug-in route raises
    # them, so what is tested is the API's mapping, over real HTTP.
    def contended(request: Request) -> Response:
        raise Contention("x-1", "record the decision on")

    def last_level(request: Request) -> Response:
        raise CannotEscalate("review is at its last level", execution_id="x-2")

    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir), api_token=None,
                    extensions=[WebExtension(routes=[
                        Route("/api/test/contended", contended),
                        Route("/api/test/last-level", last_level)])])
    with served(app).client() as client:
        first = client.get("/api/test/contended")
        second = client.get("/api/test/last-level")
    assert first.status_code == 409
    assert first.json()["error"] == "contention" and first.json()["executionId"] == "x-1"
    assert "try again" in first.json()["message"]
    assert second.status_code == 409
    assert second.json() == {"error": "cannot_escalate", "executionId": "x-2",
                             "message": "review is at its last level"}


def test_missing_or_wrong_token_is_401(api, served, runtime, settings):
    bare = api.__class__(base_url=str(api.base_url))
    assert bare.get("/api/workflowExecutions").status_code == 401
    wrong = bare.get("/api/workflowExecutions", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized"
    assert bare.get("/healthz").status_code == 200
    bare.close()


def test_cancel_then_cancel_again_is_409(api, work):
    execution_id = start(api, work)
    assert api.post(f"/api/workflowExecutions/{execution_id}/cancel").status_code == 200
    again = api.post(f"/api/workflowExecutions/{execution_id}/cancel")
    assert again.status_code == 409
    assert again.json()["status"] == "CANCELLED"
    resumed = api.post(f"/api/workflowExecutions/{execution_id}/resume", json={"approved": True})
    assert resumed.status_code == 409


def test_list_filters_by_status_and_workflow_and_pages(api, work):
    ids = [start(api, work, {"amount": n, "customer": "c"}) for n in range(5)]
    api.post(f"/api/workflowExecutions/{ids[0]}/resume", json={"approved": True},
             headers=AS_ALICE)
    work()
    waiting = api.get("/api/workflowExecutions",
                      params={"status": "WAITING_FOR_INPUT", "workflow": "refund"}).json()
    assert waiting["total"] == 4
    assert ids[0] not in {r["id"] for r in waiting["results"]}
    page = api.get("/api/workflowExecutions", params={"size": 2, "page": 2}).json()
    assert page["total"] == 5 and len(page["results"]) == 2
    done = api.get("/api/workflowExecutions", params={"status": "COMPLETED"}).json()
    assert [r["id"] for r in done["results"]] == [ids[0]]


def test_audit_endpoint_returns_a_verified_chain(api, work):
    execution_id = start(api, work)
    api.post(f"/api/workflowExecutions/{execution_id}/resume", json={"approved": True},
             headers={"X-Signoff-Actor": "bob"})
    work()
    body = api.get(f"/api/workflowExecutions/{execution_id}/audit").json()
    assert body["verified"] is True
    types = [e["type"] for e in body["events"]]
    assert types[0] == "execution.created" and types[-1] == "execution.completed"
    decided = [e for e in body["events"] if e["type"] == "step.decided"]
    assert decided[0]["actor"]["id"] == "bob"


def test_healthz_is_503_when_redis_is_unreachable(runtime, served, settings):
    from engine.notify import NullNotifier
    from engine.settings import Settings
    from engine.state.store import connect
    from engine.worker.runtime import build_runtime

    dead = connect("redis://127.0.0.1:1/0")
    dead_runtime = build_runtime(Settings(redis_url="redis://127.0.0.1:1/0"), dead,
                                 notifier=NullNotifier())
    app = build_api(dead_runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="t")
    with served(app).client() as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["redis"] is False


def test_a_stored_token_with_redis_unreachable_is_503_not_500(served, settings):
    import redis

    from engine.notify import NullNotifier
    from engine.settings import Settings
    from engine.worker.runtime import build_runtime

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # no retries
    dead_runtime = build_runtime(Settings(redis_url="redis://127.0.0.1:1/0"), dead,
                                 notifier=NullNotifier())
    app = build_api(dead_runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="t")
    with served(app).client(headers={"Authorization": "Bearer signoff_x"}) as client:
        response = client.get("/api/workflowExecutions")
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"


def test_the_operator_acts_as_operator_unless_a_header_names_someone(api, work):
    execution_id = start(api, work)
    assert api.get(f"/api/workflowExecutions/{execution_id}").json()["requestedBy"] == \
        "operator"
    named = api.post("/api/workflows/refund/run", json={"amount": 1, "customer": "c"},
                     headers={"X-Signoff-Requested-By": "erin@example.com"})
    assert api.get(named.headers["Location"]).json()["requestedBy"] == "erin@example.com"
    work()
    # The operator decides as "operator": the requester of this run, and no approver.
    resumed = api.post(f"/api/workflowExecutions/{execution_id}/resume", json={"approved": True})
    assert resumed.status_code == 403
    assert resumed.json()["error"] == "self_approval"
    other = api.post(f"/api/workflowExecutions/{named.json()['executionId']}/resume",
                     json={"approved": True})
    assert other.status_code == 403 and other.json()["error"] == "not_an_approver"
    resumed = api.post(f"/api/workflowExecutions/{execution_id}/resume", json={"approved": True},
                       headers={"X-Signoff-Actor": "<@u0alice>"})
    # The audit keeps which token vouched for the actor it named.
    assert resumed.json()["decidedBy"] == {"id": "U0ALICE", "name": "U0ALICE", "source": "api",
                                           "token": "operator"}
