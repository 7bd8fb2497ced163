"""Attack: an answer that makes a schema's `pattern` backtrack, to pin the web process.

With Python's `re`, `^(a+)+$` took 1.9 s for 25 characters and doubles with each one more;
a Slack text input takes 3,000. Patterns now run in RE2, in linear time, both where the
engine checks an answer (the API's resume) and where the bot checks a modal. A pattern RE2
cannot run never falls back to `re`: `signoff validate` refuses it, and one rendered from
the event at run time refuses the answer.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from bot.forms import validation_errors
from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from tests.support.services import ROOT

PATTERN = "^(a+)+$"
TICKET = f"""
name: change
steps:
  - name: review
    type: waitForInput
    with:
      message: "Change ticket?"
      schema:
        type: object
        properties:
          approved: {{type: boolean}}
          ticket: {{type: string, pattern: "{PATTERN}"}}
          pattern-from-the-event: {{type: string, pattern: "{{{{ event.pattern }}}}"}}
        patternProperties: {{"{PATTERN}": {{type: integer}}}}
        additionalProperties: false
        required: [approved, ticket]
"""
SCHEMA = {"type": "object", "properties": {"ticket": {"type": "string", "pattern": PATTERN}}}
EVIL = "a" * 3000 + "!"  # as long as a Slack text input allows


@pytest.fixture
def api(runtime, served, workflow_file, settings):
    workflow_file(TICKET, "change.yaml")
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="test-token")
    # httpx gives up after 10 s; RE2 answers in well under a millisecond.
    client = served(app).client(headers={"Authorization": "Bearer test-token"})
    yield client
    client.close()


def start(api, work, event: dict) -> str:
    # Asked for by someone else: the operator (who answers below) may not decide a run
    # it requested itself.
    started = api.post("/api/workflows/change/run", json=event,
                       headers={"X-Signoff-Requested-By": "requester@corp.test"})
    assert started.status_code == 201, started.text
    work()
    return started.json()["executionId"]


def test_the_api_refuses_a_backtracking_answer_promptly(api, work):
    execution_id = start(api, work, {})
    refused = api.post(f"/api/workflowExecutions/{execution_id}/resume",
                       json={"approved": True, "ticket": EVIL})
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "input_invalid"
    assert body["violations"] == [
        {"path": "ticket", "message": f"{EVIL!r} does not match {PATTERN!r}"}]
    assert api.get(f"/api/workflowExecutions/{execution_id}").json()["status"] == \
        "WAITING_FOR_INPUT"

    accepted = api.post(f"/api/workflowExecutions/{execution_id}/resume",
                        json={"approved": True, "ticket": EVIL[:-1]})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["outcome"] == "approved"


def test_answer_keys_are_matched_against_pattern_properties_promptly(api, work):
    execution_id = start(api, work, {})
    refused = api.post(f"/api/workflowExecutions/{execution_id}/resume",
                       json={"approved": True, "ticket": "a", EVIL: 1, EVIL[:-1]: "one"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["violations"] == [
        {"path": "", "message": f"{EVIL!r} does not match any of the regexes: {PATTERN!r}"},
        {"path": EVIL[:-1], "message": "'one' is not of type 'integer'"}]


@pytest.mark.parametrize("pattern", [PATTERN, "^(a)\\1$"])
def test_a_pattern_the_event_supplies_is_run_by_re2_or_refuses_the_answer(api, work, pattern):
    execution_id = start(api, work, {"pattern": pattern})
    refused = api.post(f"/api/workflowExecutions/{execution_id}/resume",
                       json={"approved": True, "ticket": "a", "pattern-from-the-event": EVIL})
    assert refused.status_code == 422, refused.text
    (violation,) = refused.json()["violations"]
    assert violation["path"] == "pattern-from-the-event"
    if pattern == PATTERN:
        assert violation["message"] == f"{EVIL!r} does not match {PATTERN!r}"
    else:  # RE2 has no backreferences, and nothing falls back to `re`
        assert violation["message"] == (
            "'^(a)\\\\1$' cannot be checked: invalid escape sequence: \\1; Signoff matches "
            "patterns in linear time (RE2), which has no backreferences or lookaround")


@pytest.mark.timeout(10)
def test_the_modal_refuses_a_backtracking_answer_promptly():
    assert validation_errors(SCHEMA, {"ticket": EVIL}) == {
        "ticket": f"Doesn't match the expected format ({PATTERN})."}
    assert validation_errors(SCHEMA, {"ticket": EVIL[:-1]}) == {}


def test_validate_refuses_a_pattern_re2_cannot_run(tmp_path):
    path = tmp_path / "backreference.yaml"
    path.write_text(textwrap.dedent("""\
        name: backreference
        steps:
          - name: review
            type: waitForInput
            with:
              schema:
                type: object
                properties:
                  ticket: {type: string, pattern: '^(CHG|INC)-[0-9]+ \\1$'}
        """))
    done = subprocess.run([sys.executable, "-m", "engine.cli", "validate", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"{path}:9:43: steps[0].with.schema.properties.ticket.pattern" in done.stdout
    assert "invalid escape sequence: \\1" in done.stdout
    assert "Signoff matches patterns in linear time (RE2)" in done.stdout
