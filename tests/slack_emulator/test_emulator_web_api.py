"""The real slack_sdk WebClient against the emulator, over loopback HTTP."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from slack_emulator import SlackEmulator, default_workspace

TS = re.compile(r"^\d{10}\.\d{6}$")


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def approve_button(**overrides: Any) -> dict[str, Any]:
    button = {
        "type": "button",
        "action_id": "approve",
        "text": {"type": "plain_text", "text": "Approve"},
        "value": "run-1",
        "style": "primary",
    }
    return {**button, **overrides}


def slack_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        call()
    return caught.value


# -- messages -----------------------------------------------------------------


def test_a_posted_message_is_stored_and_can_be_updated(slack: WebClient, emulator: SlackEmulator):
    posted = slack.chat_postMessage(
        channel="C0REVIEWS", text="Review waiting", blocks=[section("*Deploy to prod?*")]
    )

    assert posted["ok"] and posted["channel"] == "C0REVIEWS"
    assert TS.match(posted["ts"])
    assert posted["message"]["bot_id"] == emulator.workspace.app.bot_id
    stored = emulator.workspace.messages("C0REVIEWS")
    assert [m["text"] for m in stored] == ["Review waiting"]
    assert stored[0]["blocks"][0]["block_id"]  # Slack fills in block ids

    updated = slack.chat_update(
        channel="C0REVIEWS", ts=posted["ts"], text="Approved", blocks=[section("Approved by alice")]
    )

    assert updated["ts"] == posted["ts"] and updated["text"] == "Approved"
    message = emulator.workspace.message("C0REVIEWS", posted["ts"])
    assert message["blocks"][0]["text"]["text"] == "Approved by alice"
    assert "edited" in message


def test_timestamps_strictly_increase_and_replies_join_the_thread(
    slack: WebClient, emulator: SlackEmulator
):
    parent = slack.chat_postMessage(channel="#reviews", text="Review waiting")
    replies = [
        slack.chat_postMessage(channel="C0REVIEWS", text=f"reminder {n}", thread_ts=parent["ts"])
        for n in range(3)
    ]

    stamps = [parent["ts"], *(r["ts"] for r in replies)]
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 4
    assert [m["text"] for m in emulator.workspace.replies("C0REVIEWS", parent["ts"])] == [
        "reminder 0",
        "reminder 1",
        "reminder 2",
    ]
    assert emulator.workspace.message("C0REVIEWS", parent["ts"])["reply_count"] == 3
    assert len(emulator.workspace.messages("C0REVIEWS")) == 1


def test_posting_to_a_user_id_lands_in_their_dm(slack: WebClient, emulator: SlackEmulator):
    posted = slack.chat_postMessage(channel="U0ALICE", text="You have a review")
    opened = slack.conversations_open(users="U0ALICE")

    assert posted["channel"] == opened["channel"]["id"] == "D0ALICE"
    assert opened["already_open"] is True
    assert emulator.workspace.last_message("D0ALICE")["text"] == "You have a review"


def test_ephemeral_messages_are_kept_per_user(slack: WebClient, emulator: SlackEmulator):
    sent = slack.chat_postEphemeral(channel="C0REVIEWS", user="U0BOB", text="Only you see this")

    assert TS.match(sent["message_ts"])
    [record] = emulator.workspace.ephemeral_messages("U0BOB")
    assert record["channel"] == "C0REVIEWS" and record["message"]["text"] == "Only you see this"
    assert emulator.workspace.ephemeral_messages("U0ALICE") == []
    assert emulator.workspace.messages("C0REVIEWS") == []

    slack.conversations_open(users="U0ALICE")
    error = slack_error(
        lambda: slack.chat_postEphemeral(channel="D0ALICE", user="U0BOB", text="not for bob")
    )
    assert error.response["error"] == "user_not_in_channel"


def test_permalinks_point_at_the_message_and_its_thread(slack: WebClient):
    parent = slack.chat_postMessage(channel="C0REVIEWS", text="Review waiting")
    reply = slack.chat_postMessage(channel="C0REVIEWS", text="Reminder", thread_ts=parent["ts"])

    link = slack.chat_getPermalink(channel="C0REVIEWS", message_ts=parent["ts"])["permalink"]
    reply_link = slack.chat_getPermalink(channel="C0REVIEWS", message_ts=reply["ts"])["permalink"]

    assert link == (
        f"https://signoff-dev.slack.com/archives/C0REVIEWS/p{parent['ts'].replace('.', '')}"
    )
    assert reply_link.endswith(f"?thread_ts={parent['ts']}&cid=C0REVIEWS")
    missing = slack_error(
        lambda: slack.chat_getPermalink(channel="C0REVIEWS", message_ts="1.000001")
    )
    assert missing.response["error"] == "message_not_found"


def test_form_encoded_calls_with_json_string_blocks_work_too(
    slack: WebClient, emulator: SlackEmulator
):
    # slack_sdk form-encodes methods called through params=; blocks then travel as a JSON string.
    blocks = json.dumps([section("from a form")])
    posted = slack.api_call(
        "chat.postMessage", params={"channel": "C0REVIEWS", "text": "form", "blocks": blocks}
    )

    assert posted["message"]["blocks"][0]["text"]["text"] == "from a form"
    assert emulator.calls_to("chat.postMessage")[0]["blocks"] == json.loads(blocks)


@pytest.mark.parametrize(
    ("channel", "error"),
    [
        ("C0NOPE", "channel_not_found"),
        ("#nope", "channel_not_found"),
        ("U0NOBODY", "channel_not_found"),
    ],
)
def test_unknown_channels_are_refused(slack: WebClient, channel: str, error: str):
    assert (
        slack_error(lambda: slack.chat_postMessage(channel=channel, text="x")).response["error"]
        == error
    )


def test_text_over_40000_characters_is_refused(slack: WebClient):
    error = slack_error(lambda: slack.chat_postMessage(channel="C0REVIEWS", text="x" * 40_001))
    assert error.response["error"] == "msg_too_long"


# -- Block Kit validation -----------------------------------------------------

TOO_LONG_SECTION = "x" * 3001


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        (
            [section(f"line {n}") for n in range(51)],
            "no more than 50 items allowed [json-pointer:/blocks]",
        ),
        (
            [section(TOO_LONG_SECTION)],
            "must be less than 3001 characters [json-pointer:/blocks/0/text/text]",
        ),
        ([{"type": "section"}], "must provide either text or fields [json-pointer:/blocks/0]"),
        ([{"type": "sparkles"}], "failed to match all allowed schemas [json-pointer:/blocks/0]"),
        (
            [{"type": "section", "text": "a bare string"}],
            "must be an object [json-pointer:/blocks/0/text]",
        ),
        (
            [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            "must be less than 151 characters [json-pointer:/blocks/0/text/text]",
        ),
        (
            [
                {
                    "type": "actions",
                    "elements": [approve_button(text={"type": "plain_text", "text": "b" * 76})],
                }
            ],
            "must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]",
        ),
        (
            [{"type": "actions", "elements": [approve_button(value="v" * 2001)]}],
            "must be less than 2001 characters [json-pointer:/blocks/0/elements/0/value]",
        ),
        (
            [{"type": "actions", "elements": [approve_button(action_id="a" * 256)]}],
            "must be less than 256 characters [json-pointer:/blocks/0/elements/0/action_id]",
        ),
        (
            [{**section("x"), "block_id": "b" * 256}],
            "must be less than 256 characters [json-pointer:/blocks/0/block_id]",
        ),
    ],
    ids=[
        "51-blocks",
        "long-section",
        "section-without-text",
        "unknown-type",
        "bare-string-text",
        "long-header",
        "long-button-text",
        "long-button-value",
        "long-action-id",
        "long-block-id",
    ],
)
def test_blocks_slack_would_refuse_answer_invalid_blocks(
    slack: WebClient, emulator: SlackEmulator, blocks: list[dict[str, Any]], expected: str
):
    error = slack_error(
        lambda: slack.chat_postMessage(channel="C0REVIEWS", text="t", blocks=blocks)
    )

    assert error.response.status_code == 200
    assert error.response["error"] == "invalid_blocks"
    assert expected in error.response["errors"]
    assert f"[ERROR] {expected}" in error.response["response_metadata"]["messages"]
    assert emulator.workspace.messages("C0REVIEWS") == []


def test_blocks_that_are_not_json_answer_invalid_blocks_format(slack: WebClient):
    error = slack_error(
        lambda: slack.api_call(
            "chat.postMessage", params={"channel": "C0REVIEWS", "text": "t", "blocks": "[{"}
        )
    )
    assert error.response["error"] == "invalid_blocks_format"


# -- directory ----------------------------------------------------------------


def test_users_and_groups_are_looked_up_like_slack(slack: WebClient):
    alice = slack.users_info(user="U0ALICE")["user"]
    assert alice["name"] == "alice" and alice["profile"]["email"] == "alice@signoff.test"
    assert alice["tz"] == "Europe/Paris" and alice["is_bot"] is False
    assert slack.users_lookupByEmail(email="Carol@signoff.test")["user"]["id"] == "U0CAROL"
    assert slack.usergroups_users_list(usergroup="S0SOCL1")["users"] == ["U0ALICE", "U0BOB"]
    assert slack.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U0DAVE"]

    assert slack_error(lambda: slack.users_info(user="U0NOBODY")).response["error"] == (
        "user_not_found"
    )
    assert slack_error(lambda: slack.users_lookupByEmail(email="x@y.z")).response["error"] == (
        "users_not_found"
    )
    assert (
        slack_error(lambda: slack.usergroups_users_list(usergroup="S0NOPE")).response["error"]
        == "no_such_subteam"
    )


def test_auth_test_describes_the_bot(slack: WebClient):
    answer = slack.auth_test()
    assert (answer["team_id"], answer["user_id"], answer["bot_id"]) == (
        "T0SIGNOFF",
        "U0SIGNOFFBOT",
        "B0SIGNOFF01",
    )


# -- authentication and faults ------------------------------------------------


def test_missing_or_wrong_tokens_are_refused_with_http_200(emulator: SlackEmulator):
    anonymous = WebClient(base_url=emulator.api_url)
    impostor = WebClient(token="xoxb-not-the-bot", base_url=emulator.api_url)

    not_authed = slack_error(lambda: anonymous.chat_postMessage(channel="C0REVIEWS", text="x"))
    invalid = slack_error(lambda: impostor.chat_postMessage(channel="C0REVIEWS", text="x"))

    assert (not_authed.response.status_code, not_authed.response["error"]) == (200, "not_authed")
    assert (invalid.response.status_code, invalid.response["error"]) == (200, "invalid_auth")
    assert emulator.workspace.messages("C0REVIEWS") == []


def test_a_rate_limit_answers_429_with_retry_after(slack: WebClient, emulator: SlackEmulator):
    emulator.fail_next("chat.postMessage", status=429, retry_after=7)

    error = slack_error(lambda: slack.chat_postMessage(channel="C0REVIEWS", text="x"))

    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "7"
    assert error.response["error"] == "ratelimited"
    assert slack.chat_postMessage(channel="C0REVIEWS", text="later")["ok"]


def test_the_rate_limit_retry_handler_delivers_the_message_once(emulator: SlackEmulator):
    slack = WebClient(token=emulator.bot_token, base_url=emulator.api_url)
    slack.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
    emulator.fail_next("chat.postMessage", status=429, retry_after=1)

    started = time.monotonic()
    posted = slack.chat_postMessage(channel="C0REVIEWS", text="Review waiting")

    assert posted["ok"]
    assert time.monotonic() - started >= 1.0  # it honoured Retry-After
    assert len(emulator.calls_to("chat.postMessage")) == 2
    assert [m["text"] for m in emulator.workspace.messages("C0REVIEWS")] == ["Review waiting"]


def test_server_errors_and_error_codes_can_be_injected(slack: WebClient, emulator: SlackEmulator):
    emulator.fail_next("users.info", status=503)
    emulator.fail_next("chat.postMessage", error="channel_not_found", count=2)

    unavailable = slack_error(lambda: slack.users_info(user="U0ALICE"))
    first = slack_error(lambda: slack.chat_postMessage(channel="C0REVIEWS", text="x"))
    second = slack_error(lambda: slack.chat_postMessage(channel="C0REVIEWS", text="x"))

    assert unavailable.response.status_code == 503
    assert (first.response.status_code, first.response["error"]) == (200, "channel_not_found")
    assert second.response["error"] == "channel_not_found"
    assert slack.chat_postMessage(channel="C0REVIEWS", text="third time")["ok"]


def test_every_call_is_recorded_without_the_token(slack: WebClient, emulator: SlackEmulator):
    slack.auth_test()
    slack.chat_postMessage(channel="C0REVIEWS", text="hello")

    assert [method for method, _ in emulator.calls] == ["auth.test", "chat.postMessage"]
    assert emulator.calls_to("chat.postMessage") == [{"channel": "C0REVIEWS", "text": "hello"}]


def test_methods_the_emulator_lacks_answer_unknown_method(slack: WebClient):
    error = slack_error(lambda: slack.api_call("reactions.add", json={"name": "tada"}))
    assert error.response["error"] == "unknown_method"


# -- views --------------------------------------------------------------------


def modal(**overrides: Any) -> dict[str, Any]:
    view = {
        "type": "modal",
        "callback_id": "decide",
        "title": {"type": "plain_text", "text": "Review"},
        "submit": {"type": "plain_text", "text": "Submit"},
        "private_metadata": "run-1",
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "text"},
            }
        ],
    }
    return {**view, **overrides}


def options(count: int) -> list[dict[str, Any]]:
    return [
        {"text": {"type": "plain_text", "text": f"Option {n}"}, "value": f"o{n}"}
        for n in range(count)
    ]


def input_with(element: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": "choice",
        "label": {"type": "plain_text", "text": "Pick"},
        "element": element,
    }


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (
            modal(title={"type": "plain_text", "text": "t" * 25}),
            "must be less than 25 characters [json-pointer:/view/title/text]",
        ),
        (
            modal(private_metadata="m" * 3001),
            "must be less than 3001 characters [json-pointer:/view/private_metadata]",
        ),
        (
            modal(
                blocks=[
                    input_with({"type": "static_select", "action_id": "s", "options": options(101)})
                ]
            ),
            "no more than 100 items allowed [json-pointer:/view/blocks/0/element/options]",
        ),
        (
            modal(
                blocks=[
                    input_with({"type": "checkboxes", "action_id": "c", "options": options(11)})
                ]
            ),
            "no more than 10 items allowed [json-pointer:/view/blocks/0/element/options]",
        ),
        (
            modal(
                blocks=[
                    {
                        **input_with({"type": "plain_text_input", "action_id": "t"}),
                        "label": {"type": "plain_text", "text": "l" * 2001},
                    }
                ]
            ),
            "must be less than 2001 characters [json-pointer:/view/blocks/0/label/text]",
        ),
        (
            modal(blocks=[section(f"{n}") for n in range(101)]),
            "no more than 100 items allowed [json-pointer:/view/blocks]",
        ),
    ],
    ids=["long-title", "long-metadata", "101-options", "11-checkboxes", "long-label", "101-blocks"],
)
def test_views_slack_would_refuse_answer_invalid_arguments(
    slack: WebClient, emulator: SlackEmulator, view: dict[str, Any], expected: str
):
    trigger_id = emulator.workspace.issue_trigger("U0ALICE")

    error = slack_error(lambda: slack.views_open(trigger_id=trigger_id, view=view))

    assert error.response["error"] == "invalid_arguments"
    assert f"[ERROR] {expected}" in error.response["response_metadata"]["messages"]


def test_views_open_needs_a_trigger_slack_issued(slack: WebClient, emulator: SlackEmulator):
    made_up = slack_error(lambda: slack.views_open(trigger_id="12345.98765.abcd", view=modal()))
    assert made_up.response["error"] == "invalid_trigger_id"

    trigger_id = emulator.workspace.issue_trigger("U0ALICE")
    opened = slack.views_open(trigger_id=trigger_id, view=modal())["view"]
    assert opened["id"].startswith("V") and opened["root_view_id"] == opened["id"]
    assert opened["private_metadata"] == "run-1" and opened["callback_id"] == "decide"
    assert [v["id"] for v in emulator.workspace.views.modals("U0ALICE")] == [opened["id"]]

    reused = slack_error(lambda: slack.views_open(trigger_id=trigger_id, view=modal()))
    assert reused.response["error"] == "exchanged_trigger_id"


def test_triggers_expire_after_three_seconds(slack: WebClient, emulator: SlackEmulator):
    now = [1732240000.0]
    workspace = emulator.reset(default_workspace(clock=lambda: now[0]))
    trigger_id = workspace.issue_trigger("U0ALICE")
    now[0] += 3.5

    error = slack_error(lambda: slack.views_open(trigger_id=trigger_id, view=modal()))

    assert error.response["error"] == "expired_trigger_id"


def test_views_update_push_and_publish(slack: WebClient, emulator: SlackEmulator):
    root = slack.views_open(trigger_id=emulator.workspace.issue_trigger("U0BOB"), view=modal())
    root_view = root["view"]

    updated = slack.views_update(
        view_id=root_view["id"], hash=root_view["hash"], view=modal(private_metadata="run-2")
    )["view"]
    stale = slack_error(
        lambda: slack.views_update(view_id=root_view["id"], hash=root_view["hash"], view=modal())
    )
    pushed = slack.views_push(
        trigger_id=emulator.workspace.issue_trigger("U0BOB"), view=modal(callback_id="confirm")
    )["view"]
    home = slack.views_publish(
        user_id="U0BOB", view={"type": "home", "blocks": [section("Your reviews")]}
    )["view"]

    assert updated["id"] == root_view["id"] and updated["private_metadata"] == "run-2"
    assert updated["hash"] != root_view["hash"]
    assert stale.response["error"] == "hash_conflict"
    assert pushed["previous_view_id"] == root_view["id"]
    assert pushed["root_view_id"] == root_view["id"]
    assert [v["callback_id"] for v in emulator.workspace.views.modals("U0BOB")] == [
        "decide",
        "confirm",
    ]
    assert emulator.workspace.views.home("U0BOB")["id"] == home["id"]
    missing = slack_error(lambda: slack.views_update(view_id="V0NOPE", view=modal()))
    assert missing.response["error"] == "not_found"
