"""Incoming webhooks on the emulator, spoken to over HTTP as Slack's would be: httpx for the
raw wire format, slack_sdk's WebhookClient (with its retry handlers) for the client's view;
and ``bots.info``, which the bot asks for the app's Home tab link."""

from __future__ import annotations

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from slack_emulator import SlackEmulator
from slack_emulator.errors import SlackApiFailure

REVIEWS = "C0REVIEWS"


def test_a_post_lands_in_the_webhooks_channel_and_is_answered_ok_in_plain_text(
        emulator: SlackEmulator):
    url = emulator.webhooks.add(REVIEWS)
    assert url.startswith(f"{emulator.base_url}/services/{emulator.workspace.team.id}/B")

    answer = httpx.post(url, json={"text": "Rotate the key? <https://x.example|open>"})

    assert (answer.status_code, answer.text) == (200, "ok")
    assert answer.headers["content-type"].startswith("text/plain")
    [message] = emulator.workspace.messages(REVIEWS)
    assert message["text"] == "Rotate the key? <https://x.example|open>"
    assert emulator.webhooks.posted(url) == [{"text": "Rotate the key? <https://x.example|open>"}]


def test_a_form_encoded_payload_is_read_too(emulator: SlackEmulator):
    url = emulator.webhooks.add(REVIEWS)
    answer = httpx.post(url, data={"payload": '{"text": "legacy form"}'})
    assert (answer.status_code, answer.text) == (200, "ok")
    assert emulator.workspace.messages(REVIEWS)[0]["text"] == "legacy form"


@pytest.mark.parametrize(("body", "status", "error"), [
    (b"not json", 400, "invalid_payload"),
    (b"[1, 2]", 400, "invalid_payload"),
    (b"{}", 400, "no_text"),
    (b'{"text": ""}', 400, "no_text"),
    (b'{"blocks": [{"type": "nonsense"}]}', 400, "invalid_blocks"),
])
def test_a_bad_payload_gets_slacks_plain_text_error(emulator: SlackEmulator, body, status, error):
    url = emulator.webhooks.add(REVIEWS)
    answer = httpx.post(url, content=body, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.text) == (status, error)
    assert emulator.workspace.messages(REVIEWS) == []
    assert emulator.webhooks.posted(url) == []
    assert len(emulator.webhooks.attempts(url)) == 1


def test_a_removed_webhook_answers_no_service_and_a_wrong_secret_invalid_token(
        emulator: SlackEmulator):
    url = emulator.webhooks.add(REVIEWS)
    wrong_secret = url.rsplit("/", 1)[0] + "/not-the-secret"
    answer = httpx.post(wrong_secret, json={"text": "x"})
    assert (answer.status_code, answer.text) == (403, "invalid_token")

    emulator.webhooks.remove(url)
    answer = httpx.post(url, json={"text": "x"})
    assert (answer.status_code, answer.text) == (404, "no_service")
    never_made = f"{emulator.base_url}/services/{emulator.workspace.team.id}/B0NONE/secret"
    assert httpx.post(never_made, json={"text": "x"}).status_code == 404
    assert emulator.workspace.messages(REVIEWS) == []


def test_a_prohibited_or_archived_channel_refuses_the_post(emulator: SlackEmulator):
    url = emulator.webhooks.add(REVIEWS)
    emulator.webhooks.prohibit(url)
    answer = httpx.post(url, json={"text": "x"})
    assert (answer.status_code, answer.text) == (403, "action_prohibited")

    other = emulator.webhooks.add(REVIEWS)
    emulator.workspace.archive_channel(REVIEWS)
    answer = httpx.post(other, json={"text": "x"})
    assert (answer.status_code, answer.text) == (410, "channel_is_archived")
    assert emulator.workspace.messages(REVIEWS) == []


def test_archiving_a_channel_refuses_chat_post_message_as_slack_does(emulator: SlackEmulator):
    emulator.workspace.archive_channel(REVIEWS)
    with pytest.raises(SlackApiFailure, match="is_archived"):
        emulator.workspace.post_message(REVIEWS, {"text": "x"})


def test_a_webhook_is_made_only_for_a_channel_that_exists(emulator: SlackEmulator):
    with pytest.raises(SlackApiFailure, match="channel_not_found"):
        emulator.webhooks.add("C0NOWHERE")


def test_a_rate_limited_post_carries_retry_after_and_the_sdk_waits_it_out(
        emulator: SlackEmulator):
    url = emulator.webhooks.add(REVIEWS)
    emulator.webhooks.fail_next(url, status=429, retry_after=1)
    raw = httpx.post(url, json={"text": "first"})
    assert (raw.status_code, raw.text, raw.headers["retry-after"]) == (429, "rate_limited", "1")

    emulator.webhooks.fail_next(url, status=429, retry_after=1)
    client = WebhookClient(url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    response = client.send(text="second")

    assert (response.status_code, response.body) == (200, "ok")
    assert [m["text"] for m in emulator.workspace.messages(REVIEWS)] == ["second"]
    assert [a.get("text") for a in emulator.webhooks.attempts(url)] == [
        "first", "second", "second"]


def test_reset_forgets_the_webhooks(emulator: SlackEmulator):
    url = emulator.webhooks.add(REVIEWS)
    emulator.reset()
    assert httpx.post(url, json={"text": "x"}).status_code == 404


def test_bots_info_names_the_app_behind_the_bot(emulator: SlackEmulator):
    client = WebClient(token=emulator.bot_token, base_url=emulator.api_url)
    me = client.auth_test()
    bot = client.bots_info(bot=me["bot_id"])["bot"]
    assert (bot["id"], bot["app_id"], bot["user_id"]) == (
        emulator.workspace.app.bot_id, emulator.workspace.app.app_id, me["user_id"])
    with pytest.raises(SlackApiError, match="bot_not_found"):
        client.bots_info(bot="B0NOBODY")
