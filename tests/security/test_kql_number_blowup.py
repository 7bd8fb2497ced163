"""Attack: a long almost-number in an event, compared with `<`/`>` to pin a worker's CPU.

A range condition once read a string as a number when it looked like one; the regex that
decided that backtracked, so 16,384 digits and an "x" took 11 s, and 5,000 digits made
`int()` raise instead of comparing. As in Kibana, a string now compares with the bound as
text ("1…" after "100"), and must still do so promptly. The run goes through the API and a
real worker.
"""

from __future__ import annotations

import pytest

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from tests.support.services import wait_until

PAGE = """
name: page
steps:
  - name: page-on-call
    type: console
    if: "event.failures > 100"
    with: {message: "paged"}
  - name: log-only
    type: console
    if: "not event.failures > 100"
    with: {message: "logged"}
"""


@pytest.fixture
def api(runtime, served, workflow_file, settings):
    workflow_file(PAGE, "page.yaml")
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="test-token")
    client = served(app).client(headers={"Authorization": "Bearer test-token"})
    yield client
    client.close()


@pytest.mark.parametrize(("failures", "paged"), [
    ("1" * 65_000 + "x", True),  # text: "11…" sorts after "100"
    ("9" * 5_000, True),  # text too: "9…" sorts after "100"
    ("0" * 65_000 + "x", False),  # "00…" sorts before "100"
])
def test_a_long_number_like_value_is_compared_promptly(api, worker_process, failures, paged):
    worker_process()
    response = api.post("/api/workflows/page/run", json={"failures": failures})
    assert response.status_code == 201, response.text
    execution_id = response.json()["executionId"]

    def finished() -> dict | None:
        body = api.get(f"/api/workflowExecutions/{execution_id}").json()
        return body if body["status"] not in ("PENDING", "RUNNING") else None

    body = wait_until(finished, timeout=30, message="the run to finish")
    assert body["status"] == "COMPLETED"
    taken, skipped = ("page-on-call", "log-only") if paged else ("log-only", "page-on-call")
    assert body["steps"][taken]["status"] == "COMPLETED"
    assert body["steps"][skipped]["status"] == "SKIPPED"
