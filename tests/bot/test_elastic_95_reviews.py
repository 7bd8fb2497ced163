"""A workflow written as Elastic 9.5's human-in-the-loop docs write one, run end to end
through the Slack emulator: `with.channels`, `output.response.approved`, `respondedBy`."""

from __future__ import annotations

from typing import Any

import pytest

from bot.blocks import ACTION_APPROVE, ACTION_DENY
from engine.state.execution import ExecutionStatus, StepStatus
from tests.bot.conftest import REVIEWS, Signoff

SECOPS = "C0SECOPS"
OPS = "C0OPS"

# The 9.5 docs' shape: a waitForApproval posted to Slack channels through a Slack API
# connector, and branches gated on `output.response.approved`.
DELETE_INDEX = """
name: delete-index-with-approval
enabled: true
triggers:
  - type: manual
steps:
  - name: request_approval
    type: waitForApproval
    timeout: 1h
    with:
      message: "Delete index `{{ event.index }}`?"
      approveLabel: Delete it
      rejectLabel: Keep it
      channels:
        slack_api:
          connector-id: secops-slack
          channels: [C0SECOPS, C0OPS]
  - name: delete_index
    type: console
    if: "steps.request_approval.output.response.approved : true"
    with:
      message: "deleting {{ event.index }}, approved by {{ steps.request_approval.output.respondedBy }}"
  - name: keep_index
    type: console
    if: "steps.request_approval.output.response.approved : false"
    with:
      message: "keeping {{ event.index }}, declined by {{ steps.request_approval.output.respondedBy }}"
  - name: legacy_gate
    type: console
    if: "steps.request_approval.output.approved : true"
    with:
      message: "9.4 sees it too: {{ steps.request_approval.resumedBy.name }}"
"""

EVENT = {"index": "logs-old"}


@pytest.fixture(autouse=True)
def channels(signoff: Signoff) -> None:
    """#secops and #ops besides the workspace's #reviews (the default channel)."""
    workspace = signoff.slack.workspace
    everyone = ["U0ALICE", "U0BOB", "U0CAROL", "U0DAVE", workspace.app.bot_user_id]
    workspace.add_channel(SECOPS, "secops", everyone)
    workspace.add_channel(OPS, "ops", everyone)


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for block in message.get("blocks", []) if block["type"] == "actions"
            for e in block["elements"] if e["type"] == "button"]


def test_the_review_goes_to_the_slack_api_channels_and_approve_takes_the_approved_branch(
        signoff: Signoff):
    execution_id = signoff.run(DELETE_INDEX, EVENT)

    assert signoff.messages(REVIEWS) == []  # the step names its channels: not the default
    [secops] = signoff.messages(SECOPS)
    [ops] = signoff.messages(OPS)
    assert [b["text"]["text"] for b in buttons(secops)][:2] == ["Delete it", "Keep it"]
    assert "logs-old" in str(ops["blocks"])

    assert signoff.driver.click("U0ALICE", (SECOPS, secops["ts"]), ACTION_APPROVE).ok
    signoff.drain()

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["delete_index"].output == "deleting logs-old, approved by alice"
    assert state.results["keep_index"].status is StepStatus.SKIPPED
    assert state.results["legacy_gate"].output == "9.4 sees it too: alice"
    output = state.results["request_approval"].output
    assert output["response"] == {"approved": True}
    assert output["channel"] == "slack" and output["respondedAt"]
    # Both messages are closed, not only the one clicked.
    for channel in (SECOPS, OPS):
        [closed] = signoff.messages(channel)
        assert buttons(closed) == []


def test_decline_takes_the_declined_branch(signoff: Signoff):
    execution_id = signoff.run(DELETE_INDEX, EVENT)
    [ops] = signoff.messages(OPS)

    assert signoff.driver.click("U0BOB", (OPS, ops["ts"]), ACTION_DENY).ok
    signoff.drain()

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["delete_index"].status is StepStatus.SKIPPED
    assert state.results["legacy_gate"].status is StepStatus.SKIPPED
    assert state.results["keep_index"].output == "keeping logs-old, declined by bob"
    assert state.results["request_approval"].output["response"] == {"approved": False}


WEBHOOK = """
name: webhook-review
steps:
  - name: review
    type: waitForInput
    with:
      message: "Rotate the key?"
      channels:
        slack:
          connector-id: team-webhook
        {extra}
  - name: rotate
    type: console
    if: "steps.review.output.response.approved : true"
    with: {{message: "rotating"}}
"""


@pytest.mark.parametrize(("extra", "posted_to"), [
    ("", [REVIEWS]),
    ("slack_api: {connector-id: unknown-connector, channels: [C0OPS]}", [OPS, REVIEWS]),
])
def test_an_unconfigured_webhook_connector_means_the_default_connection(
        signoff: Signoff, extra, posted_to):
    # No SIGNOFF_CONNECTORS: `team-webhook` is not a configured webhook, so the workspace's
    # own connection stands in for it and the review, buttons and all, goes to the default
    # channel; an unconfigured slack_api connector-id posts through it too.
    execution_id = signoff.run(WEBHOOK.format(extra=extra))
    assert sorted(c for c in (REVIEWS, OPS) if signoff.messages(c)) == sorted(posted_to)
    [message] = signoff.messages(posted_to[-1])

    assert signoff.driver.click("U0ALICE", (posted_to[-1], message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    state = signoff.engine.get(execution_id)
    assert state.results["rotate"].output == "rotating"
    assert state.results["review"].output["response"] == {"approved": True}


LEAD = """
name: lead-text
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Delete index `{{ event.index }}`?"
      channels:
        slack_api:
          connector-id: secops-slack
          channels: [C0SECOPS]
          message: "**{{ event.index }}** goes unless you say no: {{ context.hitl.externalFormLink }}"
"""


def test_a_slack_api_message_leads_the_post_escaped_with_the_link_to_app_home(signoff: Signoff):
    execution_id = signoff.run(LEAD, {"index": "<!here> logs"})

    [posted] = signoff.messages(SECOPS)
    app = signoff.slack.workspace.app
    home = f"slack://app?team={signoff.slack.workspace.team.id}&amp;id={app.app_id}&amp;tab=home"
    lead = f"*&lt;!here&gt; logs* goes unless you say no: <{home}>"
    assert posted["text"] == lead  # what notifications show
    assert posted["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn", "text": lead},
                                   "block_id": posted["blocks"][0]["block_id"]}
    assert [b["text"]["text"] for b in buttons(posted)][:2] == ["Approve", "Decline"]

    assert signoff.driver.click("U0BOB", (SECOPS, posted["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    [closed] = signoff.messages(SECOPS)
    assert closed["blocks"][0]["text"]["text"] == lead  # the lead stays on the closed message
    assert buttons(closed) == []
