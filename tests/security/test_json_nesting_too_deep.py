"""Attack: a request body nested deeper than Python's JSON parser can follow.

`json.loads` raised RecursionError on `[` * 100000, which escaped the API's error mapping
as a 500 with a plain-text body. Over real HTTP, it is now a 400 that says why, in JSON,
and the process goes on serving.
"""

from __future__ import annotations

import pytest

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog

NOTE = """
name: note
steps:
  - name: say
    type: console
    with: {message: "hello"}
"""


@pytest.fixture
def api(runtime, served, workflow_file, settings):
    workflow_file(NOTE, "note.yaml")
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="test-token")
    client = served(app).client(headers={"Authorization": "Bearer test-token",
                                         "Content-Type": "application/json"})
    yield client
    client.close()


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000])
def test_a_body_nested_too_deep_is_a_bad_request(api, body):
    response = api.post("/api/workflows/note/run", content=body)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "bad_request",
                               "message": "the body nests arrays or objects too deeply"}
    assert api.post("/api/workflows/note/run", json={"ok": True}).status_code == 201


def test_a_deep_body_the_parser_can_read_still_starts_a_run(api):
    deep = b'{"x":' + b"[" * 500 + b"1" + b"]" * 500 + b"}"
    assert api.post("/api/workflows/note/run", content=deep).status_code == 201
