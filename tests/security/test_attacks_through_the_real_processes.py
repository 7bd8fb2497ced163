"""The integrity attacks once more, end to end through the processes production runs: a
real `signoff serve` (the API and /slack/events, with its Slack directory), a real
`signoff worker`, Redis and the Slack emulator, all over loopback HTTP.

Alice asks for access under an e-mail spelling of herself and then tries to approve it,
on the API (with the operator's token naming her) and with a signed Slack click; Carol,
who is in no approver group, tries too. Only Bob, in the approver group and not the
requester, decides."""

from __future__ import annotations

import httpx
import pytest

from bot.blocks import ACTION_APPROVE
from engine.state.execution import ExecutionStatus
from slack_emulator import SlackDriver, SlackEmulator
from tests.support.services import ServeProcess, wait_until

GRANT = """
name: grant
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Grant prod access to {{ event.user }}?"
      approvers: [S0SOCL1]
      channel: C0REVIEWS
  - name: granted
    type: console
    if: "steps.review.output.approved : true"
    with: {message: "granted"}
"""


@pytest.fixture
def stack(redis_url, tmp_path, worker_process):
    (tmp_path / "grant.yaml").write_text(GRANT)
    with SlackEmulator() as slack:
        env = {"SIGNOFF_API_TOKEN": "operator-secret", "SLACK_BOT_TOKEN": slack.bot_token,
               "SLACK_SIGNING_SECRET": slack.signing_secret, "SLACK_API_URL": slack.api_url,
               "SIGNOFF_WORKFLOWS": str(tmp_path), "SIGNOFF_SLACK_CHANNEL": "C0REVIEWS"}
        worker_process(extra_env=env)
        serve = ServeProcess(redis_url, tmp_path / "serve.log", env)
        api = httpx.Client(base_url=serve.url, timeout=10,
                           headers={"Authorization": "Bearer operator-secret"})
        driver = SlackDriver(slack, f"{serve.url}/slack/events")
        try:
            yield api, slack, driver
        finally:
            driver.close()
            api.close()
            serve.stop()


def _start(api: httpx.Client, requester: str) -> str:
    started = api.post("/api/workflows/grant/run", json={"user": "alice"},
                       headers={"X-Signoff-Requested-By": requester})
    assert started.status_code == 201, started.text
    execution_id = str(started.json()["executionId"])
    wait_until(lambda: _status(api, execution_id) == "WAITING_FOR_INPUT", timeout=30,
               message="the run to reach its review")
    return execution_id


def _status(api: httpx.Client, execution_id: str) -> str:
    return str(api.get(f"/api/workflowExecutions/{execution_id}").json()["status"])


def test_self_approval_and_outsiders_are_refused_on_the_api_and_in_slack(stack):
    api, slack, driver = stack
    execution_id = _start(api, "Alice+access@Signoff.test")
    resume = f"/api/workflowExecutions/{execution_id}/resume"

    # The API: the serve process asks Slack for Alice's address and expands the group.
    alice = api.post(resume, json={"approved": True}, headers={"X-Signoff-Actor": "U0ALICE"})
    assert alice.status_code == 403 and alice.json()["error"] == "self_approval", alice.text
    carol = api.post(resume, json={"approved": True}, headers={"X-Signoff-Actor": "U0CAROL"})
    assert carol.status_code == 403 and carol.json()["error"] == "not_an_approver"

    # Slack: a signed click by Alice is acked, handed to the worker, and refused there.
    wait_until(lambda: slack.workspace.messages("C0REVIEWS"), timeout=30,
               message="the review to be posted")
    [message] = slack.workspace.messages("C0REVIEWS")
    assert driver.click("U0ALICE", ("C0REVIEWS", message["ts"]), ACTION_APPROVE).ok
    wait_until(lambda: slack.workspace.ephemeral_messages("U0ALICE"), timeout=30,
               message="Alice to be told why")
    [told] = slack.workspace.ephemeral_messages("U0ALICE")
    assert "you requested this run" in told["message"]["text"]
    assert _status(api, execution_id) == ExecutionStatus.WAITING_FOR_INPUT.value

    bob = api.post(resume, json={"approved": True}, headers={"X-Signoff-Actor": "U0BOB"})
    assert bob.status_code == 200, bob.text
    wait_until(lambda: _status(api, execution_id) == "COMPLETED", timeout=30,
               message="the run to finish")
    events = api.get(f"/api/workflowExecutions/{execution_id}/audit").json()
    assert events["verified"] is True
    refused = [(e["actor"]["id"], e["reason"]) for e in events["events"]
               if e["type"] == "decision.refused"]
    assert sorted(refused) == [("U0ALICE", "self_approval"), ("U0CAROL", "not_an_approver")]
