"""Elastic 9.5's `with.channels.slack` (an incoming webhook) and `slack_api` connections named
in SIGNOFF_CONNECTORS, end to end through the Slack emulator: the review posted with its
buttons, the webhook given a notification that links to it, Slack's answers honoured, and
the webhook's URL (its credential) never written anywhere."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import redis

from bot.blocks import ACTION_APPROVE
from bot.outbox import QUEUE
from bot.settings import BotSettings
from bot.webhooks import WebhookUnavailable
from engine.connectors import CONNECTOR_TYPES, Connectors, parse_connectors
from engine.errors import ConnectorsInvalid
from engine.settings import Settings
from engine.state.execution import ExecutionStatus
from slack_emulator import SlackEmulator
from tests.bot.conftest import REVIEWS, Signoff
from tests.support.services import ROOT

ALERTS = "C0ALERTS"  # where the team's incoming webhook posts
SECOPS = "C0SECOPS"
OPS = "C0OPS"

ROTATE = """
name: rotate-key
steps:
  - name: review
    type: waitForApproval
    timeout: 2h
    with:
      message: "Rotate the key of `{{{{ event.service }}}}`?"
      channels:
        slack:
          connector-id: team-webhook
          {message}
  - name: rotate
    type: console
    if: "steps.review.output.response.approved : true"
    with: {{message: "rotating {{{{ event.service }}}}"}}
"""


def rotate(message: str = "") -> str:
    return ROTATE.format(message=message)


@pytest.fixture(autouse=True)
def channels(slack: SlackEmulator) -> None:
    everyone = ["U0ALICE", "U0BOB", "U0CAROL", "U0DAVE", slack.workspace.app.bot_user_id]
    for channel, name in ((ALERTS, "alerts"), (SECOPS, "secops"), (OPS, "ops")):
        slack.workspace.add_channel(channel, name, everyone)


@pytest.fixture
def webhook_url(slack: SlackEmulator) -> str:
    return slack.webhooks.add(ALERTS)


CONNECTORS = """
team-webhook:
  type: slack-webhook
  url: ${TEAM_WEBHOOK_URL}
secops-slack:
  type: slack
  allowed-channels: [C0SECOPS]
"""


@pytest.fixture
def connectors(webhook_url: str) -> Connectors:
    return parse_connectors(CONNECTORS, "connectors.yml", {"TEAM_WEBHOOK_URL": webhook_url})


@pytest.fixture
def hooked(start_signoff: Callable[..., Signoff], bot_settings: BotSettings,
           connectors: Connectors) -> Signoff:
    """Signoff with the connections above: #reviews by default, the webhook into #alerts."""
    return start_signoff(bot_settings, connectors=connectors)


def audit_events(signoff: Signoff, execution_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.event for e in signoff.engine.audit_entries(execution_id)
            if e.event.get("type") == kind]


def everything_in(client: redis.Redis) -> str:
    """Every key and value in Redis, as text, to search for what must never be there."""
    dump = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            value: Any = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = client.smembers(key)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            value = client.xrange(key)
        else:
            value = kind
        dump.append(f"{key!r}={value!r}")
        dump.extend(_unzipped(value))  # RQ keeps a job's data and traceback zlib-compressed
    return "\n".join(dump)


def _unzipped(value: Any) -> list[str]:
    if isinstance(value, bytes):
        try:
            return [repr(zlib.decompress(value))]
        except zlib.error:
            return []
    if isinstance(value, dict):
        return [text for item in value.values() for text in _unzipped(item)]
    if isinstance(value, list | set | tuple):
        return [text for item in value for text in _unzipped(item)]
    return []


def test_the_review_is_posted_with_buttons_and_the_webhook_gets_a_link_to_it(
        hooked: Signoff, slack: SlackEmulator, webhook_url: str):
    execution_id = hooked.run(rotate(), {"service": "billing"})

    [review] = hooked.messages(REVIEWS)
    [notice] = slack.webhooks.posted(webhook_url)
    link = slack.workspace.permalink(REVIEWS, review["ts"])
    assert "Rotate the key of" in notice["text"] and "billing" in notice["text"]
    assert f"<{link}|Open the review>" in notice["text"]
    assert "<!date^" in notice["text"]  # due when: the step's timeout
    assert notice["unfurl_links"] is False
    [shown] = hooked.messages(ALERTS)
    assert shown["text"] == notice["text"]

    assert hooked.driver.click("U0ALICE", (REVIEWS, review["ts"]), ACTION_APPROVE).ok
    hooked.drain()
    assert hooked.engine.get(execution_id).results["rotate"].output == "rotating billing"
    assert len(slack.webhooks.posted(webhook_url)) == 1  # closing posts nothing more


def test_the_channel_message_is_rendered_with_event_data_escaped_and_the_form_link(
        hooked: Signoff, slack: SlackEmulator, webhook_url: str):
    template = ('message: "*{{ event.service }}* needs a key rotation: '
                '[decide]({{ context.hitl.externalFormLink }})"')
    hooked.run(rotate(template), {"service": "<!channel> *evil*"})

    [review] = hooked.messages(REVIEWS)
    link = slack.workspace.permalink(REVIEWS, review["ts"])
    [notice] = slack.webhooks.posted(webhook_url)
    # Markdown's *emphasis* is mrkdwn's _italics_; the event's markup is shown, not acted on.
    assert notice["text"] == (f"_&lt;!channel&gt; *evil*_ needs a key rotation: "
                              f"<{link}|decide>")


def test_a_rate_limited_webhook_is_posted_once_retry_after_has_passed(
        hooked: Signoff, slack: SlackEmulator, webhook_url: str):
    slack.webhooks.fail_next(webhook_url, status=429, retry_after=1)

    execution_id = hooked.run(rotate(), {"service": "billing"})

    assert [a["text"] for a in slack.webhooks.attempts(webhook_url)] == [
        slack.webhooks.posted(webhook_url)[0]["text"]] * 2
    assert len(hooked.messages(ALERTS)) == 1
    assert audit_events(hooked, execution_id, "review.notification_failed") == []


@pytest.mark.parametrize(("break_it", "answer"), [
    (lambda slack, url: slack.webhooks.remove(url), "404 no_service"),
    (lambda slack, url: slack.workspace.archive_channel(ALERTS), "410 channel_is_archived"),
    (lambda slack, url: slack.webhooks.prohibit(url), "403 action_prohibited"),
])
def test_a_webhook_refusing_for_good_is_recorded_and_not_tried_again(
        hooked: Signoff, slack: SlackEmulator, webhook_url: str, break_it, answer):
    break_it(slack, webhook_url)

    execution_id = hooked.run(rotate(), {"service": "billing"})

    assert len(hooked.messages(REVIEWS)) == 1  # the review itself is out, buttons and all
    [failed] = audit_events(hooked, execution_id, "review.notification_failed")
    assert failed["step"] == "review"
    assert failed["reason"] == f"webhook team-webhook refused the notification: {answer}"
    assert len(slack.webhooks.attempts(webhook_url)) == 1
    # The post job running again (a retry, a second worker) does not knock again.
    hooked.bot.deliverer.deliver(execution_id, "review")
    assert len(slack.webhooks.attempts(webhook_url)) == 1
    assert len(audit_events(hooked, execution_id, "review.notification_failed")) == 1
    assert hooked.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT


def test_a_webhook_failing_for_now_fails_the_job_and_its_retry_posts_it(
        hooked: Signoff, slack: SlackEmulator, webhook_url: str, redis_client: redis.Redis):
    # 500 three times: the call and its two in-call retries.
    slack.webhooks.fail_next(webhook_url, status=500, count=3)

    execution_id = hooked.run(rotate(), {"service": "billing"})

    assert slack.webhooks.posted(webhook_url) == []
    assert len(slack.webhooks.attempts(webhook_url)) == 3
    retrying = hooked.bot.deliverer  # what RQ runs again after DELIVERY_RETRY's first wait
    assert redis_client.zcard(f"rq:scheduled:{QUEUE}") == 1
    delivery = retrying.deliver(execution_id, "review")
    assert delivery is not None and len(delivery.posts) == 1  # the review was not posted twice
    assert len(slack.webhooks.posted(webhook_url)) == 1
    assert len(hooked.messages(REVIEWS)) == 1


def test_a_webhook_still_failing_raises_without_its_url(
        hooked: Signoff, slack: SlackEmulator, webhook_url: str):
    hooked.run(rotate(), {"service": "billing"})
    slack.webhooks.fail_next(webhook_url, status=503, count=3)
    execution_id = hooked.started[0]
    with pytest.raises(WebhookUnavailable) as failure:
        hooked.bot.deliverer.deliver(execution_id, "review", again=True)
    assert str(failure.value) == "webhook team-webhook answered 503 service_unavailable"
    assert failure.value.__cause__ is None and failure.value.__context__ is None


def test_the_webhook_url_is_never_in_redis_the_audit_trail_or_the_log(
        hooked: Signoff, slack: SlackEmulator, webhook_url: str, redis_client: redis.Redis,
        caplog: pytest.LogCaptureFixture):
    secret = webhook_url.rsplit("/", 1)[1]
    caplog.set_level(logging.DEBUG)
    slack.webhooks.fail_next(webhook_url, status=500, count=3)  # the worker logs the failure
    execution_id = hooked.run(rotate(), {"service": "billing"})
    assert "webhook team-webhook answered 500 internal_error" in caplog.text
    slack.webhooks.remove(webhook_url)
    hooked.bot.deliverer.deliver(execution_id, "review")  # refused: audited
    assert audit_events(hooked, execution_id, "review.notification_failed")

    assert secret not in everything_in(redis_client)
    assert secret not in str([e.event for e in hooked.engine.audit_entries(execution_id)])
    assert secret not in repr(hooked.bot.connectors) + repr(hooked.runtime.settings)
    assert secret not in caplog.text


def test_slack_api_channels_outside_the_connections_allowed_channels_are_not_posted_to(
        hooked: Signoff):
    execution_id = hooked.run("""
name: delete-index
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Delete index `{{ event.index }}`?"
      channels:
        slack_api:
          connector-id: secops-slack
          channels: [C0SECOPS, C0OPS]
          message: "Index *{{ event.index }}* is about to go"
""", {"index": "<@U0ALICE>"})

    [posted] = hooked.messages(SECOPS)
    assert hooked.messages(OPS) == [] and hooked.messages(REVIEWS) == []
    assert posted["blocks"][0]["text"]["text"] == "Index _&lt;@U0ALICE&gt;_ is about to go"
    assert posted["text"] == "Index _&lt;@U0ALICE&gt;_ is about to go"  # what notifications show
    [failed] = audit_events(hooked, execution_id, "review.notification_failed")
    assert failed["reason"] == ("not posted to C0OPS: connector secops-slack's "
                                "allowed-channels leave it out")


# -- the connections file ------------------------------------------------------------------------

def test_a_bad_connections_file_names_each_fault_at_its_line_without_quoting_secrets(tmp_path):
    path = tmp_path / "connectors.yml"
    path.write_text(textwrap.dedent("""\
        team-webhook:
          type: slack-hook
        other-webhook:
          type: slack-webhook
          url: ${MISSING_WEBHOOK_URL}
        pasted:
          type: slack-webhook
          url: https://hooks.slack.com/services/T0/B0/pasted-secret
        secops:
          type: slack
          token: ${SECOPS_TOKEN}
    """))

    with pytest.raises(ConnectorsInvalid) as failure:
        Settings.from_env({"SIGNOFF_CONNECTORS": str(path), "SECOPS_TOKEN": "xoxb-1"})

    assert [str(p) for p in failure.value.problems] == [
        f"{path}:2:3: connector 'team-webhook': unknown type 'slack-hook'; known types: "
        + ", ".join(sorted(CONNECTOR_TYPES)),
        f"{path}:5:3: connector 'other-webhook': environment variable MISSING_WEBHOOK_URL "
        "is not set",
        f"{path}:8:3: connector 'pasted': `url` is a secret: write it as a ${{ENV_VAR}} "
        "reference, not in the file",
        f"{path}:11:3: connector 'secops': Additional properties are not allowed ('token' was "
        "unexpected) (allowed: allowed-channels)",
    ]
    assert "pasted-secret" not in str(failure.value)


def test_a_resolved_secret_that_is_no_url_is_refused_without_showing_it():
    with pytest.raises(ConnectorsInvalid) as failure:
        parse_connectors("hook:\n  type: slack-webhook\n  url: ${HOOK}\n", "c.yml",
                         {"HOOK": "not-a-url-but-a-secret"})
    assert str(failure.value) == "c.yml:3:3: connector 'hook': `url` does not look right for " \
                                 "a slack-webhook"


def test_validate_reports_a_channel_whose_connector_has_the_wrong_type(tmp_path, redis_url):
    (tmp_path / "connectors.yml").write_text(CONNECTORS)
    workflow = tmp_path / "workflows" / "rotate.yaml"
    workflow.parent.mkdir()
    workflow.write_text(textwrap.dedent("""\
        name: crossed
        steps:
          - name: review
            type: waitForInput
            with:
              message: "Go?"
              channels:
                slack:
                  connector-id: secops-slack
                slack_api:
                  connector-id: team-webhook
                  channels: [C0SECOPS]
          - name: other
            type: waitForApproval
            with:
              channels:
                slack_api: {connector-id: secops-slack, channels: [C0SECOPS, C0OPS]}
                slack: {connector-id: not-configured}
    """))

    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "validate", str(workflow.parent)], cwd=ROOT,
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "REDIS_URL": redis_url,
             "SIGNOFF_CONNECTORS": str(tmp_path / "connectors.yml"),
             "TEAM_WEBHOOK_URL": "https://hooks.example/services/T/B/x"})

    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{workflow}:9:25: with.channels.slack: connector 'secops-slack' is a slack in "
        f"{tmp_path / 'connectors.yml'}, and `slack` takes a slack-webhook",
        f"{workflow}:11:25: with.channels.slack_api: connector 'team-webhook' is a "
        f"slack-webhook in {tmp_path / 'connectors.yml'}, and `slack_api` takes a slack",
        f"{workflow}:17:70: with.channels.slack_api: channel 'C0OPS' is not among connector "
        f"'secops-slack''s allowed-channels in {tmp_path / 'connectors.yml'}",
    ]
