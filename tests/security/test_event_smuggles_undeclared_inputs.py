"""Attack: an event brings `inputs` the workflow never declared, or declared ones of another type.

Templates read `inputs.*`, and every key under the event's `inputs` used to land there, so an
event could set inputs the author never offered (or give a URL input an object whose
rendering the author never saw). The run is started over the API against the shipped
access-request example: the API must answer 422 `inputs_invalid`, naming each input, and
start nothing.
"""

from __future__ import annotations

import pytest

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from tests.support.services import ROOT

EVENT = {"request": {"user": "mallory", "resource": "billing-db", "role": "admin",
                     "level": "privileged", "duration": "8h", "justification": "none",
                     "owner": "mallory@signoff.test"}}


@pytest.fixture
def api(runtime, served):
    app = build_api(runtime.engine, WorkflowCatalog(str(ROOT / "examples")),
                    api_token="test-token")
    client = served(app).client(headers={"Authorization": "Bearer test-token"})
    yield client
    client.close()


def test_undeclared_and_mistyped_inputs_start_nothing(api):
    answer = api.post("/api/workflows/access-request/run", json={**EVENT, "inputs": {
        "iam_url": {"host": "127.0.0.1", "port": 6379},
        "approvers": ["U0MALLORY"],
        "allow_self_approval": True}})

    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "inputs_invalid"
    assert {p["input"]: p["message"] for p in body["problems"]} == {
        "approvers": "is not an input of workflow 'access-request' (it declares: iam_url)",
        "allow_self_approval": "is not an input of workflow 'access-request' "
                               "(it declares: iam_url)",
        "iam_url": "must be a string, not an object"}
    assert api.get("/api/workflowExecutions").json()["total"] == 0
