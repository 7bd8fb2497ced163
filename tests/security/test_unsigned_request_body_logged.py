"""Attack: post anything to /slack/events and have it written to the web process's log.

slack_bolt logs every request that fails the signature check at INFO, with its whole body,
and `signoff serve` logs at INFO: whoever can reach the Request URL could fill the log, or
plant lines in it. A real `signoff serve` process, logging at INFO as in production, gets an
unsigned request and one with a wrong signature, each carrying a marker; it answers 401, and
the marker must not be in its log.
"""

from __future__ import annotations

import time

import httpx
import pytest

from slack_emulator import SlackEmulator
from tests.support.services import ServeProcess

MARKER = "planted-log-line-7d2e"


@pytest.fixture
def serve(redis_url, tmp_path):
    """`signoff serve` with Slack configured, as a process; yields its URL and log path."""
    with SlackEmulator() as slack:
        process = ServeProcess(redis_url, tmp_path / "serve.log", {
            "SIGNOFF_API_TOKEN": "t", "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": slack.signing_secret, "SLACK_API_URL": slack.api_url,
            "SIGNOFF_WORKFLOWS": str(tmp_path)})
        try:
            yield process.url, process.log_path
        finally:
            process.stop()


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
