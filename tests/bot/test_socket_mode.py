"""Signoff over Socket Mode, end to end: ``signoff serve --socket-mode`` and ``signoff worker``
as real processes, the Slack emulator's websocket in between, the driver clicking as people.

No Request URL and no signing secret: the served process connects out to Slack with the
app-level token (apps.connections.open, then the websocket), the worker posts reviews with
the bot token, and every click, modal submission and ack crosses the socket.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.blocks import ACTION_APPROVE
from engine.definition.loader import parse_workflow
from engine.state.embedded_redis import free_port
from engine.state.execution import ExecutionStatus
from slack_emulator import AckOutcome, SlackDriver, SlackEmulator
from tests.bot.conftest import ISOLATE, REVIEWS, TICKET
from tests.support.services import ROOT, WorkerProcess, reviewer_answer, wait_until

API_TOKEN = "socket-mode-test-token"
START_TIMEOUT = 30.0  # two Python processes importing the engine, the bot and Bolt

class SignoffProcess:
    """``signoff serve --socket-mode`` (or another command) as a real process, its output
    in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path,
                 command: tuple[str, ...] = ("serve", "--socket-mode")) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        args = [*command, "--port", str(self.port)] if command[0] == "serve" else list(command)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *args],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Deployment:
    """A running Signoff on Socket Mode, and what a test does with it."""

    serve: SignoffProcess
    worker: WorkerProcess
    slack: SlackEmulator
    driver: SlackDriver
    api: httpx.Client

    def run(self, workflow: str, event: dict[str, Any] | None = None) -> str:
        started = self.api.post(f"/api/workflows/{workflow}/run", json=event or {})
        assert started.status_code == 201, started.text
        return str(started.json()["executionId"])

    def execution(self, execution_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/api/workflowExecutions/{execution_id}")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def wait_for_status(self, execution_id: str, status: str) -> dict[str, Any]:
        found: dict[str, Any] = wait_until(
            lambda: (e := self.execution(execution_id))["status"] == status and e,
            timeout=15, interval=0.05, message=f"{execution_id} to be {status}")
        return found

    def review_message(self) -> dict[str, Any]:
        """The review the worker posted to #reviews, once it is there."""
        message: dict[str, Any] = wait_until(
            lambda: next(iter(self.slack.workspace.messages(REVIEWS)), None),
            timeout=15, interval=0.05, message="the review to be posted")
        return message

    def message_text(self, ts: str) -> str:
        message = self.slack.workspace.message(REVIEWS, ts)
        return str(message.get("text", "")) + str(message.get("blocks", ""))


def signoff_env(slack: SlackEmulator, redis_url: str, workflows: Path, *,
                app_token: str | None = None) -> dict[str, str]:
    """What a Socket Mode deployment is configured with: no signing secret, no Request URL."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SLACK_", "SIGNOFF_"))}
    env.update({
        "REDIS_URL": redis_url,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token if app_token is None else app_token,
        "SLACK_API_URL": slack.api_url,
        "SIGNOFF_SLACK_CHANNEL": REVIEWS,
        "SIGNOFF_WORKFLOWS": str(workflows),
        "SIGNOFF_API_TOKEN": API_TOKEN,
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def workflows(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "isolate-host.yaml").write_text(ISOLATE)
    (folder / "change-window.yaml").write_text(TICKET)
    return folder


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[Callable[..., SignoffProcess]]:
    started: list[SignoffProcess] = []

    def start(env: dict[str, str], *command: str) -> SignoffProcess:
        serve = SignoffProcess(env, tmp_path / f"signoff-{len(started)}.log",
                               command or ("serve", "--socket-mode"))
        started.append(serve)
        return serve

    yield start
    for serve in started:
        serve.stop()


@pytest.fixture
def deployment(slack: SlackEmulator, redis_client: Any, redis_url: str, workflows: Path,
               worker_process: Callable[..., WorkerProcess],
               start_serve: Callable[..., SignoffProcess]) -> Iterator[Deployment]:
    env = signoff_env(slack, redis_url, workflows)
    serve = start_serve(env)
    worker = worker_process(extra_env={k: env[k] for k in (
        "SLACK_BOT_TOKEN", "SLACK_API_URL", "SIGNOFF_SLACK_CHANNEL", "SIGNOFF_WORKFLOWS")})
    try:
        slack.socket_mode.wait_for_connections(1, timeout=START_TIMEOUT)
        wait_until(serve.healthy, timeout=START_TIMEOUT, interval=0.05, message="the API to serve")
    except (AssertionError, TimeoutError) as exc:
        raise AssertionError(f"signoff serve --socket-mode did not come up:\n{serve.log()}") from exc
    with SlackDriver(slack, socket_mode=True) as driver, httpx.Client(
            base_url=serve.url, timeout=10,
            headers={"Authorization": f"Bearer {API_TOKEN}"}) as api:
        yield Deployment(serve, worker, slack, driver, api)
    if slack.socket_mode.running:
        slack.socket_mode.close_connections()  # before the process goes, like Slack would


def click_approve(deployment: Deployment, user: str = "U0ALICE") -> tuple[dict[str, Any], Any]:
    message = deployment.review_message()
    return message, deployment.driver.click(user, (REVIEWS, message["ts"]), ACTION_APPROVE)


def test_an_approve_click_over_the_socket_completes_the_run(deployment: Deployment):
    assert deployment.slack.calls_to("apps.connections.open") == [{}]
    [link] = deployment.slack.socket_mode.connections()
    execution_id = deployment.run("isolate-host", {"host": "web-01"})

    message, answer = click_approve(deployment)

    assert answer.status == 200 and answer.body is None  # acked, nothing to show
    assert answer.elapsed < 3.0
    [ack] = deployment.slack.socket_mode.envelopes
    assert ack.envelope_id == answer.envelope_id and ack.connection_id == link.id
    assert ack.envelope["type"] == "interactive"
    assert ack.envelope["payload"]["actions"][0]["action_id"] == ACTION_APPROVE
    done = deployment.wait_for_status(execution_id, "COMPLETED")
    assert done["steps"]["isolate"]["status"] == "COMPLETED"
    assert done["steps"]["record"]["output"] == "decided by alice"
    assert done["steps"]["review"]["resumedBy"]["id"] == "U0ALICE"
    wait_until(lambda: "Approved by <@U0ALICE>" in deployment.message_text(message["ts"]),
               timeout=15, interval=0.05, message="the review to say who approved")


def test_a_modal_over_the_socket_shows_inline_errors_then_resumes_the_run(
        deployment: Deployment):
    slack = deployment.slack
    execution_id = deployment.run("change-window")

    _, clicked = click_approve(deployment, "U0CAROL")

    assert clicked.ok
    assert slack.calls_to("views.open")  # the click's trigger opened the form
    [modal] = slack.workspace.views.modals("U0CAROL")
    invalid = deployment.driver.submit_view("U0CAROL", modal["id"], {"ticket": "tomorrow"})
    assert invalid.status == 200
    assert invalid.body["response_action"] == "errors"  # in the ack's payload
    assert set(invalid.body["errors"]) == {"ticket"}
    assert slack.workspace.views.modals("U0CAROL")  # still open
    assert deployment.execution(execution_id)["status"] == "WAITING_FOR_INPUT"

    valid = deployment.driver.submit_view("U0CAROL", modal["id"], {"ticket": "CHG-42"})

    assert valid.status == 200 and valid.body is None
    assert slack.workspace.views.modals("U0CAROL") == []
    done = deployment.wait_for_status(execution_id, "COMPLETED")
    assert reviewer_answer(done["steps"]["review"]["output"]) == {"approved": True,
                                                                 "ticket": "CHG-42"}
    assert done["steps"]["open"]["output"] == "opening for CHG-42"
    assert [a.envelope["payload"]["type"] for a in slack.socket_mode.envelopes] == [
        "block_actions", "view_submission", "view_submission"]
    assert all(a.outcome is AckOutcome.ACKED for a in slack.socket_mode.envelopes)


@pytest.mark.parametrize(("token", "error"), [
    ("xapp-1-A0SIGNOFF-1000000000001-forged", "invalid_auth"),
    ("bot", "not_allowed_token_type"),
])
def test_a_forged_or_wrong_kind_of_app_token_is_refused(
        slack: SlackEmulator, redis_client: Any, redis_url: str, workflows: Path,
        start_serve: Callable[..., SignoffProcess], token: str, error: str):
    app_token = slack.bot_token if token == "bot" else token
    serve = start_serve(signoff_env(slack, redis_url, workflows, app_token=app_token))

    exit_code = serve.process.wait(timeout=START_TIMEOUT)

    assert exit_code != 0
    assert error in serve.log()
    assert slack.calls_to("apps.connections.open") == [{}]
    assert slack.socket_mode.connections() == []
    assert not serve.healthy()


def test_after_slack_asks_for_a_refresh_the_client_reconnects_and_clicks_still_work(
        deployment: Deployment):
    sockets = deployment.slack.socket_mode
    [old] = sockets.connections()

    assert sockets.disconnect("refresh_requested") == [old.id]

    # The client connects again at once, then closes the old connection itself.
    [new] = wait_until(lambda: (links := sockets.connections()) and old not in links and links,
                       timeout=10, interval=0.05, message="the app to move to a new connection")
    assert deployment.slack.calls_to("apps.connections.open") == [{}, {}]  # a fresh URL
    execution_id = deployment.run("isolate-host", {"host": "web-02"})
    _, answer = click_approve(deployment, "U0BOB")
    assert answer.ok
    assert sockets.envelopes[-1].connection_id == new.id
    deployment.wait_for_status(execution_id, "COMPLETED")


def test_after_slack_closes_the_connection_the_client_reconnects_and_clicks_still_work(
        deployment: Deployment):
    sockets = deployment.slack.socket_mode
    [old] = sockets.connections()
    opened = len(sockets.opened)
    closed_at = time.monotonic()

    assert sockets.close_connections() == [old.id]

    # slack_sdk's built-in client notices on its next state check (every ping_interval,
    # 10 s under Bolt's SocketModeHandler), then opens a new URL and connects.
    [new] = sockets.wait_for_connections(1, opened_after=opened, timeout=15)
    reconnected_in = time.monotonic() - closed_at
    assert new.id != old.id and reconnected_in < 15
    execution_id = deployment.run("isolate-host", {"host": "web-03"})
    _, answer = click_approve(deployment)
    assert answer.ok
    assert sockets.envelopes[-1].connection_id == new.id
    deployment.wait_for_status(execution_id, "COMPLETED")


def test_signoff_slack_socket_alone_serves_the_clicks(
        slack: SlackEmulator, runtime: Any, redis_url: str, workflows: Path,
        worker_process: Callable[..., WorkerProcess],
        start_serve: Callable[..., SignoffProcess]):
    env = signoff_env(slack, redis_url, workflows)
    bot = start_serve(env, "slack-socket")  # Socket Mode only: no API, no web server
    worker_process(extra_env={k: env[k] for k in (
        "SLACK_BOT_TOKEN", "SLACK_API_URL", "SIGNOFF_SLACK_CHANNEL")})
    try:
        slack.socket_mode.wait_for_connections(1, timeout=START_TIMEOUT)
    except TimeoutError as exc:
        raise AssertionError(f"signoff slack-socket did not connect:\n{bot.log()}") from exc
    execution_id = runtime.engine.run(parse_workflow(ISOLATE), {"host": "web-05"})
    message = wait_until(lambda: next(iter(slack.workspace.messages(REVIEWS)), None),
                         timeout=15, interval=0.05, message="the review to be posted")

    with SlackDriver(slack, socket_mode=True) as driver:
        answer = driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_APPROVE)

    assert answer.ok, answer.text
    wait_until(lambda: runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED,
               timeout=15, interval=0.05, message="the run to complete")
    assert bot.process.poll() is None  # still serving
    slack.socket_mode.close_connections()


def test_serve_with_processes_keeps_one_socket_connection(
        slack: SlackEmulator, redis_client: Any, redis_url: str, workflows: Path,
        worker_process: Callable[..., WorkerProcess],
        start_serve: Callable[..., SignoffProcess]):
    """`serve --socket-mode --processes 2`: the HTTP processes answer the API; Slack's
    traffic comes over one connection, held by the supervisor, whatever the count."""
    env = signoff_env(slack, redis_url, workflows)
    serve = start_serve(env, "serve", "--socket-mode", "--processes", "2")
    worker_process(extra_env={k: env[k] for k in (
        "SLACK_BOT_TOKEN", "SLACK_API_URL", "SIGNOFF_SLACK_CHANNEL", "SIGNOFF_WORKFLOWS")})
    slack.socket_mode.wait_for_connections(1, timeout=START_TIMEOUT)
    wait_until(serve.healthy, timeout=START_TIMEOUT, interval=0.05, message="the API to serve")
    with SlackDriver(slack, socket_mode=True) as driver, httpx.Client(
            base_url=serve.url, timeout=10,
            headers={"Authorization": f"Bearer {API_TOKEN}"}) as api:
        deployment = Deployment(serve, None, slack, driver, api)  # type: ignore[arg-type]
        execution_id = deployment.run("isolate-host", {"host": "web-01"})
        _, answer = click_approve(deployment)
        assert answer.status == 200
        deployment.wait_for_status(execution_id, "COMPLETED")
    assert len(slack.socket_mode.connections()) == 1
    assert slack.calls_to("apps.connections.open") == [{}]
    if slack.socket_mode.running:
        slack.socket_mode.close_connections()
