"""The attack: `signoff serve --processes 2` builds its app in fresh processes, from a
factory rather than from the command line the operator typed. If a process were built
without the API's token check, anyone reaching the port would decide reviews through it.

Bob resumes a waiting run with no token, then with a wrong one, on new connections (so
every process takes some), before and after a process is killed and started again: each
is refused with 401 and the run still waits. Only ``--insecure-no-auth``, given on the
command line, serves the API without a token, from every process."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from uvicorn.config import STARTUP_FAILURE

from engine.cli import UserError, build_web_app, web_app
from engine.settings import Settings
from tests.support.services import ServeProcess, wait_until

TOKEN = "operator-secret"
HOLD = """
name: hold
steps:
  - name: review
    type: waitForInput
    with:
      message: "Push to production?"
      schema:
        type: object
        properties:
          approved: {type: boolean}
"""


def _client(url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, timeout=10, headers=headers,
                        limits=httpx.Limits(max_keepalive_connections=0))  # a connection each


def _waiting_run(url: str, token: str | None) -> str:
    with _client(url, token) as api:
        started = api.post("/api/workflows/hold/run", json={},
                           headers={"X-Signoff-Requested-By": "U0ALICE"})
        assert started.status_code == 201, started.text
        execution_id = str(started.json()["executionId"])
        wait_until(lambda: api.get(f"/api/workflowExecutions/{execution_id}").json()["status"]
                   == "WAITING_FOR_INPUT", timeout=30, message="the run to wait")
    return execution_id


def _refused_everywhere(serve: ServeProcess, execution_id: str) -> None:
    resume = f"/api/workflowExecutions/{execution_id}/resume"
    for token in (None, "guessed-token", TOKEN + "x"):
        with _client(serve.url, token) as bob:
            for _ in range(6):
                answer = bob.post(resume, json={"approved": True},
                                  headers={"X-Signoff-Actor": "U0BOB"})
                assert answer.status_code == 401, answer.text
    with _client(serve.url, TOKEN) as api:
        assert api.get(f"/api/workflowExecutions/{execution_id}").json()["status"] == \
            "WAITING_FOR_INPUT"


def test_every_process_refuses_the_api_without_the_token(redis_url, tmp_path, worker_process):
    (tmp_path / "hold.yaml").write_text(HOLD)
    env = {"SIGNOFF_API_TOKEN": TOKEN, "SIGNOFF_WORKFLOWS": str(tmp_path)}
    worker_process(extra_env=env)
    serve = ServeProcess(redis_url, tmp_path / "serve.log", env, ["--processes", "2"])
    try:
        wait_until(lambda: len(serve.serving()) == 2, timeout=30, message="two processes")
        execution_id = _waiting_run(serve.url, TOKEN)
        _refused_everywhere(serve, execution_id)

        # A process started again by the supervisor is built the same way.
        [killed, _] = serve.serving()
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: killed not in serve.serving() and len(serve.serving()) == 2,
                   timeout=30, message="the killed process to be replaced")
        wait_until(lambda: httpx.get(f"{serve.url}/healthz").status_code == 200, timeout=30)
        _refused_everywhere(serve, execution_id)
    finally:
        serve.stop()


def test_insecure_no_auth_is_only_what_the_command_line_says(redis_url, tmp_path,
                                                              worker_process):
    """The control: with --insecure-no-auth every process serves the API without a token,
    though one is set (so the refusals above are the token check's, not something
    else's); without a token and without the option, no process starts."""
    (tmp_path / "hold.yaml").write_text(HOLD)
    env = {"SIGNOFF_API_TOKEN": TOKEN, "SIGNOFF_WORKFLOWS": str(tmp_path)}
    worker_process(extra_env=env)
    serve = ServeProcess(redis_url, tmp_path / "serve.log", env,
                         ["--processes", "2", "--insecure-no-auth"])
    try:
        wait_until(lambda: len(serve.serving()) == 2, timeout=30, message="two processes")
        execution_id = _waiting_run(serve.url, None)
        with _client(serve.url) as anyone:
            for _ in range(6):
                answer = anyone.get(f"/api/workflowExecutions/{execution_id}")
                assert answer.status_code == 200, answer.text
    finally:
        serve.stop()


def test_no_process_serves_an_api_without_a_token_unless_told(redis_url, monkeypatch):
    """A process's app is built from its environment: one without SIGNOFF_API_TOKEN
    refuses to build unless --insecure-no-auth chose the open app (an API without the
    operator's token would answer anyone as the operator)."""
    monkeypatch.delenv("SIGNOFF_API_TOKEN", raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    with pytest.raises(SystemExit) as stopped:
        web_app()
    assert stopped.value.code == STARTUP_FAILURE
    with pytest.raises(UserError, match="SIGNOFF_API_TOKEN is not set"):
        build_web_app(Settings(redis_url=redis_url))
