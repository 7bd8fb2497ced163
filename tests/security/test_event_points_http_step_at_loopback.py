"""Attack: an event points the shipped access-request example's `http` step at loopback.

`access-request` posts grants to `{{ inputs.iam_url }}/grants`, and `iam_url` comes from the
event: whoever may start a run could aim the worker at its own loopback services (Redis,
the API, sidecars) and read their answer back from the run. The run is started over the
API and executed by a real `signoff worker` process on the production default policy. A
service on loopback records every request and answers with a secret: it must never be
hit, the step must fail with `egress_blocked` naming the address, and nothing of the
secret may be stored.
"""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from tests.support.services import ROOT, wait_until

SECRET = "loopback-secret-5f1c"
EVENT = {"request": {"user": "mallory", "resource": "billing-db", "role": "admin",
                     "level": "standard", "duration": "8h", "justification": "none",
                     "owner": "alice@signoff.test"}}


def everything_stored(redis_client) -> str:
    """Every value of every key in the test's Redis database, as one string (DUMP would not
    do: it compresses)."""
    read = {"string": redis_client.get, "hash": redis_client.hgetall,
            "list": lambda key: redis_client.lrange(key, 0, -1), "set": redis_client.smembers,
            "zset": lambda key: redis_client.zrange(key, 0, -1, withscores=True),
            "stream": lambda key: redis_client.xrange(key),
            "none": lambda key: None}  # a key that expired between SCAN and TYPE
    return repr([(key, read[_text(redis_client.type(key))](key)) for key in redis_client.scan_iter()])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture
def loopback_service(served):
    """A service on 127.0.0.1 that records each request and answers with a secret."""
    hits: list[str] = []

    async def answer(request: Request) -> JSONResponse:
        hits.append(f"{request.method} {request.url.path}")
        return JSONResponse({"secret": SECRET})

    app = Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])
    return served(app).url, hits


@pytest.fixture
def api(runtime, served):
    app = build_api(runtime.engine, WorkflowCatalog(str(ROOT / "examples")),
                    api_token="test-token")
    client = served(app).client(headers={"Authorization": "Bearer test-token"})
    yield client
    client.close()


def test_an_event_cannot_point_an_http_step_at_loopback(api, loopback_service, worker_process,
                                                        redis_client):
    url, hits = loopback_service
    worker = worker_process(extra_env={"SIGNOFF_HTTP_ALLOW": ""})  # production's default

    started = api.post("/api/workflows/access-request/run",
                       json={**EVENT, "inputs": {"iam_url": url}})
    assert started.status_code == 201, started.text
    execution_id = started.json()["executionId"]

    def finished():
        view = api.get(f"/api/workflowExecutions/{execution_id}").json()
        return view if view["status"] in ("COMPLETED", "FAILED") else None

    view = wait_until(finished, timeout=30, message=f"the run to end; worker log:\n{worker.log()}")
    assert view["status"] == "FAILED"
    [(path, grant)] = [(p, s) for p, s in view["steps"].items() if p.endswith("grant_standard")]
    assert grant["status"] == "FAILED"
    assert grant["error"].startswith(f"egress_blocked: POST {url}/grants: 127.0.0.1, refused:")
    assert grant["output"]["address"] == "127.0.0.1"
    assert "attempts" not in grant or grant["attempts"] == 1
    assert hits == []
    assert SECRET not in everything_stored(redis_client)
    audit = api.get(f"/api/workflowExecutions/{execution_id}/audit").json()
    assert audit["verified"] is True
    assert any(e["type"] == "step.failed" and e["step"] == path and "egress_blocked" in e["error"]
               for e in audit["events"])
