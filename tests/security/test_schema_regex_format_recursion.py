"""Attack: an answer to a `format: regex` field nested deeper than Python's `re` can parse.

jsonschema checks `format: regex` by compiling the answer with `re`, whose parser recurses
once per group: 3,000 nested parentheses raised RecursionError out of the validator, a 500
from the API. The format is now checked by compiling with RE2, the engine that would run
the pattern, so the answer gets a verdict: valid, or a 422 naming the field.
"""

from __future__ import annotations

import pytest

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog

FILTER = """
name: filter
steps:
  - name: review
    type: waitForInput
    with:
      message: "Which hosts?"
      schema:
        type: object
        properties:
          approved: {type: boolean}
          hosts: {type: string, format: regex}
        required: [approved, hosts]
"""


@pytest.fixture
def api(runtime, served, workflow_file, settings):
    workflow_file(FILTER, "filter.yaml")
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="test-token")
    client = served(app).client(headers={"Authorization": "Bearer test-token"})
    yield client
    client.close()


@pytest.mark.parametrize(("hosts", "status"), [
    ("(" * 3000 + "web" + ")" * 3000, 200),  # deep, and a pattern RE2 runs
    ("(web)-\\1", 422),  # a backreference: not a pattern Signoff can run
])
def test_a_regex_answer_gets_a_verdict_not_a_500(api, work, hosts, status):
    started = api.post("/api/workflows/filter/run", json={},  # the operator only decides
                       headers={"X-Signoff-Requested-By": "requester@corp.test"})
    assert started.status_code == 201, started.text
    work()
    execution_id = started.json()["executionId"]
    response = api.post(f"/api/workflowExecutions/{execution_id}/resume",
                        json={"approved": True, "hosts": hosts})
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["violations"] == [
            {"path": "hosts", "message": f"{hosts!r} is not a 'regex'"}]
