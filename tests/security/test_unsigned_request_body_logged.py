"""Attack: post anything to /slack/events and have it written to the web process's log.

slack_bolt logs every request that fails the signature check at INFO, with its whole body,
and `signoff serve` logs at INFO: whoever can reach the Request URL could fill the log, or
plant lines in it. A real `signoff serve` process, logging at INFO as in production, gets an
unsigned request and one with a wrong signature, each carrying a marker; it answers 401, and
the marker must not be in its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from engine.state.embedded_redis import free_port
from slack_emulator import SlackEmulator
from tests.support.services import ROOT, wait_until

MARKER = "planted-log-line-7d2e"


@pytest.fixture
def serve(redis_url, tmp_path):
    """`signoff serve` with Slack configured, as a process; yields its URL and log path."""
    with SlackEmulator() as slack:
        port = free_port()
        log_path = tmp_path / "serve.log"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SIGNOFF_"))},
               "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", "SIGNOFF_API_TOKEN": "t",
               "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": slack.signing_secret,
               "SLACK_API_URL": slack.api_url, "SIGNOFF_WORKFLOWS": str(tmp_path)}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "serve", "--port", str(port)], cwd=ROOT,
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            return False

        try:
            wait_until(healthy, timeout=30, message="signoff serve to answer")
            yield url, log_path
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)


def test_an_invalid_request_body_is_not_logged(serve):
    url, log_path = serve
    body = f'payload={{"type": "block_actions", "note": "{MARKER}"}}'.encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    unsigned = httpx.post(f"{url}/slack/events", content=body, headers=headers)
    forged = httpx.post(f"{url}/slack/events", content=body, headers={
        **headers, "X-Slack-Request-Timestamp": str(int(time.time())),
        "X-Slack-Signature": "v0=" + "0" * 64})
    assert (unsigned.status_code, forged.status_code) == (401, 401)

    time.sleep(0.5)  # let the process flush what it would log
    log = log_path.read_text(errors="replace")
    assert "INFO" in log  # the process logs at INFO, as in production
    assert MARKER not in log
