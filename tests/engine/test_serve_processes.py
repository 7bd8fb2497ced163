"""`signoff serve --processes N`: N processes answer on one port, each with the whole web
app (the API and its token check, Slack's Request URL and the bot); one that dies is
started again; one whose app cannot be built stops them all. Real processes, a real
worker, Redis and the Slack emulator, over loopback HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bot.blocks import ACTION_APPROVE
from engine.settings import Settings
from engine.state.embedded_redis import free_port
from slack_emulator import SlackDriver, SlackEmulator
from tests.security.test_attacks_through_the_real_processes import GRANT  # Bob approves
from tests.support.services import ServeProcess, wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "operator-secret"


def fresh(url: str) -> httpx.Client:
    """A client that opens a new connection for every request, so the processes sharing
    the port take turns (a kept connection stays with the process that accepted it)."""
    return httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"},
                        limits=httpx.Limits(max_keepalive_connections=0))


def answering(serve: ServeProcess, count: int) -> list[int]:
    """The serving processes once there are ``count`` of them and each answers."""
    def ready() -> list[int] | None:
        pids = serve.serving()
        if len(pids) != count:
            return None
        with fresh(serve.url) as client:  # each process builds its app before it accepts
            if not all(client.get("/healthz").status_code == 200 for _ in range(4 * count)):
                return None
        return pids
    return wait_until(ready, timeout=60, interval=0.1, message=f"{count} serving processes")


def test_every_process_serves_the_whole_app_and_one_that_dies_is_replaced(
        redis_url, tmp_path, worker_process):
    (tmp_path / "grant.yaml").write_text(GRANT)
    with SlackEmulator() as slack:
        env = {"SIGNOFF_API_TOKEN": TOKEN, "SLACK_BOT_TOKEN": slack.bot_token,
               "SLACK_SIGNING_SECRET": slack.signing_secret, "SLACK_API_URL": slack.api_url,
               "SIGNOFF_WORKFLOWS": str(tmp_path), "SIGNOFF_SLACK_CHANNEL": "C0REVIEWS"}
        worker_process(extra_env=env)
        serve = ServeProcess(redis_url, tmp_path / "serve.log", env, ["--processes", "2"])
        try:
            first = answering(serve, 2)
            # Each first process killed in turn: another takes its place.
            for pid in first:
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda pid=pid: pid not in serve.serving(), timeout=10,
                           message=f"process {pid} to go")
                answering(serve, 2)
            now = serve.serving()
            assert len(now) == 2 and not set(now) & set(first), (first, now)
            assert serve.process.poll() is None  # the supervisor stayed

            # Only processes the supervisor started again answer now: each has the API,
            # its token check and the bot.
            with fresh(serve.url) as api:
                started = api.post("/api/workflows/grant/run", json={"user": "alice"},
                                   headers={"X-Signoff-Requested-By": "U0ALICE"})
                assert started.status_code == 201, started.text
                execution_id = started.json()["executionId"]
                wait_until(lambda: slack.workspace.messages("C0REVIEWS"), timeout=30,
                           message="the review to be posted")
                with SlackDriver(slack, f"{serve.url}/slack/events") as driver:
                    for _ in range(4):
                        listing = driver.slash_command("U0BOB", "/approvals")
                        assert listing.status == 200 and "Grant prod access" in listing.text
                    [message] = slack.workspace.messages("C0REVIEWS")
                    assert driver.click("U0BOB", ("C0REVIEWS", message["ts"]),
                                        ACTION_APPROVE).ok

                def status() -> str:
                    return str(api.get(f"/api/workflowExecutions/{execution_id}")
                               .json()["status"])
                wait_until(lambda: status() == "COMPLETED", timeout=30,
                           message="the approved run to finish")
        finally:
            serve.stop()
        assert serve.process.returncode == 0, serve.log()
        assert not [pid for pid in now if Path(f"/proc/{pid}").exists()]


def test_a_process_whose_app_cannot_be_built_stops_the_command(redis_url, tmp_path):
    """Started again, it would fail the same way forever: the command stops, saying so."""
    port = free_port()
    code = ("import sys; from engine.cli import UserError, serve_processes\n"
            "try:\n"
            f"    serve_processes('tests.support.unbuildable:app', '127.0.0.1', {port}, 2)\n"
            "except UserError as exc:\n"
            "    print('signoff:', exc); sys.exit(1)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "REDIS_URL": redis_url})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "signoff: a web process could not start" in done.stdout
    assert "this app cannot be built" in done.stderr  # the process's own error, logged


def test_web_concurrency_sets_the_count_and_is_checked():
    assert Settings.from_env({}).web_processes == 1
    assert Settings.from_env({"WEB_CONCURRENCY": "4"}).web_processes == 4
    for wrong in ("0", "two", "-1"):
        with pytest.raises(Exception, match="WEB_CONCURRENCY"):
            Settings.from_env({"WEB_CONCURRENCY": wrong})
