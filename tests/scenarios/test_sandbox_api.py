"""The sandbox's JSON endpoints: what each person sees, and acting through them reaches the app."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bot.blocks import ACTION_APPROVE
from engine.state.execution import ExecutionStatus
from slack_emulator import SlackEmulator
from slack_emulator.sandbox import Panel, Sandbox, attach_sandbox
from tests.bot.conftest import REVIEWS, Signoff

GATE = """
name: gate
steps:
  - name: review
    type: waitForInput
    with:
      message: "Restart *payments*?"
      approvers: [U0ALICE]
"""


@pytest.fixture(scope="module")
def module_sandbox(running_slack: SlackEmulator) -> Sandbox:
    return attach_sandbox(running_slack, panels=lambda: [Panel("Log", ["one", "two"])])


@pytest.fixture
def sandbox(module_sandbox: Sandbox, signoff: Signoff) -> Any:
    module_sandbox.app_url = f"{signoff.web.url}/slack/events"
    with httpx.Client(base_url=module_sandbox.url, timeout=10) as client:
        yield client
    module_sandbox.close()


def state(sandbox: httpx.Client, user: str, since: str = "") -> dict[str, Any]:
    answer = sandbox.get("/api/state", params={"user": user, "since": since})
    assert answer.status_code == 200
    return dict(answer.json())


def test_the_page_and_its_assets_are_served_with_a_strict_policy(sandbox: httpx.Client):
    page = sandbox.get("")
    assert page.status_code == 200 and '<script type="module"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for name, kind in (("app.js", "text/javascript"), ("sandbox.css", "text/css")):
        asset = sandbox.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    assert sandbox.get("/static/..%2Fsandbox.py").status_code == 404
    assert sandbox.get("/static/index.py").status_code == 404


def test_each_person_sees_their_own_ephemerals_and_the_same_channel(
        sandbox: httpx.Client, signoff: Signoff):
    execution_id = signoff.run(GATE)
    alice = state(sandbox, "U0ALICE")
    [reviews] = [c for c in alice["conversations"] if c["id"] == REVIEWS]
    [message] = reviews["messages"]
    assert message["blocks"][0]["text"]["text"] == "Restart payments?"
    assert alice["me"]["tz"] == "Europe/Paris" and alice["panels"][0]["lines"] == ["one", "two"]
    assert state(sandbox, "U0ALICE", alice["version"]) == {
        "version": alice["version"], "unchanged": True}

    button = message["blocks"][-1]["elements"][0]
    refused = sandbox.post("/api/click", json={
        "user": "U0BOB", "channel": REVIEWS, "ts": message["ts"],
        "action_id": ACTION_APPROVE, "value": button["value"]})
    assert refused.status_code == 200 and refused.json()["status"] == 200
    signoff.drain()
    [told] = state(sandbox, "U0BOB")["ephemeral"]
    assert "not one of its approvers" in told["message"]["text"]
    assert state(sandbox, "U0ALICE")["ephemeral"] == []

    approved = sandbox.post("/api/click", json={
        "user": "U0ALICE", "channel": REVIEWS, "ts": message["ts"],
        "action_id": ACTION_APPROVE, "value": button["value"]})
    assert approved.json()["status"] == 200
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert state(sandbox, "U0CAROL")["version"] != alice["version"]


def test_what_the_driver_refuses_comes_back_as_a_422(sandbox: httpx.Client, signoff: Signoff):
    signoff.run(GATE)
    [message] = signoff.messages()
    answer = sandbox.post("/api/click", json={"user": "U0ALICE", "channel": REVIEWS,
                                              "ts": message["ts"], "action_id": "nope"})
    assert answer.status_code == 422 and "no element with action_id 'nope'" in answer.json()["error"]
    assert sandbox.post("/api/view/submit", json={"user": "U0ALICE"}).status_code == 422
    assert sandbox.post("/api/command", json={"user": "U0ALICE", "channel": REVIEWS,
                                              "command": "approvals"}).status_code == 422
    assert sandbox.post("/api/click", content=b"[1]",
                        headers={"Content-Type": "application/json"}).status_code == 400
    # What another site could make a browser send without asking: refused.
    assert sandbox.post("/api/click", content=b'{"user": "U0ALICE"}',
                        headers={"Content-Type": "text/plain"}).status_code == 415
    assert sandbox.get("/api/state", params={"user": "U0ALICE"},
                       headers={"Host": "evil.example:3900"}).status_code == 403
    assert sandbox.get("/api/state", params={"user": "U0NOBODY"}).status_code == 404


def test_a_slash_command_reaches_the_app_and_its_answer_is_returned(sandbox: httpx.Client):
    answer = sandbox.post("/api/command", json={"user": "U0ALICE", "channel": REVIEWS,
                                                "command": "/approvals", "text": "help"})
    assert answer.status_code == 200
    assert isinstance(answer.json()["status"], int)  # whatever the app says, it is shown
