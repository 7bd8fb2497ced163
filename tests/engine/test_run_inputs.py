"""A run's `inputs` are checked when it starts: undeclared, missing, of another type.

Through the engine, the API and the CLI, on a real Redis; the shipped examples and the
demo's seeds must still start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from demo.seeds import SEEDS
from engine.api import build_api
from engine.definition.loader import WorkflowCatalog, parse_workflow
from engine.errors import WorkflowInputsInvalid
from tests.support.services import ROOT

DECLARING = """
name: declaring
inputs:
  - {name: url, type: string, default: "https://iam.example.com"}
  - {name: limit, type: number}
  - {name: count, type: integer}
  - {name: dry_run, type: boolean}
  - {name: level, type: choice, options: [low, high]}
  - {name: hosts, type: array}
  - {name: extra, type: object}
  - {name: ticket, type: string, required: true}
  - {name: region, type: string, required: true, default: eu}
steps:
  - name: say
    type: console
    with: {message: "{{ inputs.ticket }} in {{ inputs.region }} for {{ inputs.url }}"}
"""
VALID = {"url": "https://iam.corp.example", "limit": 2.5, "count": 3, "dry_run": False,
         "level": "high", "hosts": ["a", "b"], "extra": {"k": 1}, "ticket": "SEC-1"}


@pytest.fixture
def declaring():
    return parse_workflow(DECLARING)


def refusal(runtime, workflow, event) -> list[dict[str, str]]:
    with pytest.raises(WorkflowInputsInvalid) as caught:
        runtime.engine.run(workflow, event)
    assert runtime.engine.list_executions()[1] == 0  # nothing was started
    return caught.value.problems


def test_declared_inputs_of_the_right_types_start_a_run(runtime, work, declaring):
    execution_id = runtime.engine.run(declaring, {"inputs": VALID})
    work()
    assert runtime.engine.get(execution_id).results["say"].output == (
        "SEC-1 in eu for https://iam.corp.example")
    # An integral float is an integer; a required input with a default may be left out.
    runtime.engine.run(declaring, {"inputs": {"ticket": "SEC-2", "count": 4.0}})


def test_undeclared_inputs_are_refused_each_by_name(runtime, declaring):
    problems = refusal(runtime, declaring,
                       {"inputs": {**VALID, "iam_url": "http://127.0.0.1:6379", "admin": True}})
    assert [p["input"] for p in problems] == ["iam_url", "admin"]
    assert problems[0]["message"].startswith("is not an input of workflow 'declaring' "
                                             "(it declares: url, limit, count,")


def test_a_workflow_without_inputs_refuses_any(runtime):
    bare = parse_workflow("name: bare\nsteps:\n  - {name: x, type: console, with: {message: hi}}\n")
    problems = refusal(runtime, bare, {"inputs": {"url": "http://127.0.0.1"}})
    assert problems == [{"input": "url", "message": "is not an input of workflow 'bare' "
                                                     "(it declares: none)"}]
    runtime.engine.run(bare, {"other": "event data is not an input"})
    runtime.engine.run(bare, {"inputs": {}})


@pytest.mark.parametrize(("name", "value", "message"), [
    ("url", 5, "must be a string, not a number"),
    ("limit", "5", "must be a number, not a string"),
    ("limit", True, "must be a number, not a boolean"),
    ("count", 2.5, "must be an integer, not a number"),
    ("dry_run", "false", "must be a boolean, not a string"),
    ("level", "medium", 'must be one of "low", "high", not "medium"'),
    ("hosts", "a,b", "must be an array, not a string"),
    ("extra", [1], "must be an object, not an array"),
    ("ticket", None, "must be a string, not null"),
])
def test_declared_inputs_are_type_checked(runtime, declaring, name, value, message):
    assert refusal(runtime, declaring, {"inputs": {**VALID, name: value}}) == [
        {"input": name, "message": message}]


def test_a_required_input_without_default_must_be_given(runtime, declaring):
    given = {k: v for k, v in VALID.items() if k != "ticket"}
    assert refusal(runtime, declaring, {"inputs": given}) == [
        {"input": "ticket", "message": "is required"}]
    assert refusal(runtime, declaring, {}) == [{"input": "ticket", "message": "is required"}]


def test_inputs_that_are_not_an_object_are_refused(runtime, declaring):
    assert refusal(runtime, declaring, {"inputs": ["ticket"]}) == [
        {"input": "inputs", "message": "must be an object, not an array"}]


def test_the_api_answers_422_inputs_invalid_listing_each(runtime, served, workflow_file,
                                                         settings):
    workflow_file(DECLARING, "declaring.yaml")
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="test-token")
    with served(app).client(headers={"Authorization": "Bearer test-token"}) as client:
        answer = client.post("/api/workflows/declaring/run",
                             json={"inputs": {"limit": "many", "iam_url": "x"}})
        assert answer.status_code == 422
        body = answer.json()
        assert body["error"] == "inputs_invalid"
        assert body["workflow"] == "declaring"
        assert body["problems"] == [
            {"input": "iam_url", "message": body["problems"][0]["message"]},
            {"input": "limit", "message": "must be a number, not a string"},
            {"input": "ticket", "message": "is required"}]
        assert client.get("/api/workflowExecutions").json()["total"] == 0
        assert client.post("/api/workflows/declaring/run",
                           json={"inputs": {"ticket": "SEC-3"}}).status_code == 201


def test_the_cli_exits_1_and_says_what_is_wrong(tmp_path, redis_url, redis_client):
    path = tmp_path / "declaring.yaml"
    path.write_text(DECLARING)
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", str(path), "--event",
         json.dumps({"inputs": {"ticket": 7, "admin": True}})],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "REDIS_URL": redis_url})
    assert done.returncode == 1
    assert done.stdout == ""
    assert "the inputs of workflow 'declaring' are invalid" in done.stderr
    assert "admin: is not an input" in done.stderr
    assert "ticket: must be a string, not a number" in done.stderr


def test_the_shipped_examples_and_the_demo_seeds_still_start(runtime):
    catalog = WorkflowCatalog(str(ROOT / "examples"))
    for seed in SEEDS:
        runtime.engine.run(catalog.get(seed.workflow), seed.body("http://127.0.0.1:9"))
    assert runtime.engine.list_executions()[1] == len(SEEDS)
