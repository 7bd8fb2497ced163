"""Attack: an event whose text makes a KQL wildcard backtrack, to pin a worker's CPU.

`*failed*login*` over 128 KB of "failed" took 7 s of worker CPU when wildcards were a
regex; a 1 MB event would have held the worker for minutes. The run is started over the
API and executed by a real `signoff worker` process; it must finish promptly and take
the branch the text calls for.
"""

from __future__ import annotations

import pytest

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from tests.support.services import wait_until

TRIAGE = """
name: triage
steps:
  - name: brute-force
    type: console
    if: "event.msg : *failed*login*"
    with: {message: "brute force"}
  - name: noise
    type: console
    if: "not event.msg : *failed*login*"
    with: {message: "noise"}
"""
SIZE = 1_000_000  # the API takes bodies up to 1 MiB


@pytest.fixture
def api(runtime, served, workflow_file, settings):
    workflow_file(TRIAGE, "triage.yaml")
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="test-token")
    client = served(app).client(headers={"Authorization": "Bearer test-token"})
    yield client
    client.close()


def run_to_the_end(api, msg: str) -> dict:
    response = api.post("/api/workflows/triage/run", json={"msg": msg})
    assert response.status_code == 201, response.text
    execution_id = response.json()["executionId"]

    def finished() -> dict | None:
        body = api.get(f"/api/workflowExecutions/{execution_id}").json()
        return body if body["status"] not in ("PENDING", "RUNNING") else None

    # The fixed matcher needs microseconds; the regex needed minutes for this value.
    return wait_until(finished, timeout=30, message="the run to finish")


def test_a_megabyte_of_near_misses_is_matched_promptly(api, worker_process):
    worker_process()
    body = run_to_the_end(api, ("failed " * (SIZE // 7 + 1))[:SIZE])
    assert body["status"] == "COMPLETED"
    assert body["steps"]["brute-force"]["status"] == "SKIPPED"
    assert body["steps"]["noise"]["output"] == "noise"


def test_a_match_inside_a_megabyte_takes_its_branch_promptly(api, worker_process):
    worker_process()
    near_misses = "failed " * (SIZE // 7 + 1)
    msg = (near_misses[:20_000] + "login " + near_misses)[:SIZE]
    body = run_to_the_end(api, msg)
    assert body["status"] == "COMPLETED"
    assert body["steps"]["brute-force"]["output"] == "brute force"
    assert body["steps"]["noise"]["status"] == "SKIPPED"
