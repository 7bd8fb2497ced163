"""The driver acting as users against a stand-in app that checks signatures like Bolt."""

from __future__ import annotations

from datetime import UTC, date, datetime
from datetime import time as clock_time
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from slack_emulator import DriverError, SlackDriver, SlackEmulator, Tamper


def review_message(slack: WebClient, channel: str = "C0REVIEWS") -> Any:
    return slack.chat_postMessage(
        channel=channel,
        text="Deploy to prod?",
        blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy to prod?*"}},
            {
                "type": "actions",
                "block_id": "decide",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "approve",
                        "text": {"type": "plain_text", "text": "Approve"},
                        "value": "run-1",
                        "style": "primary",
                    },
                    {
                        "type": "button",
                        "action_id": "reject",
                        "text": {"type": "plain_text", "text": "Reject"},
                        "value": "run-1",
                        "style": "danger",
                    },
                ],
            },
        ],
    )


def option(value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": value.title()}, "value": value}


def field(block_id: str, element: dict[str, Any], *, optional: bool = False) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "optional": optional,
        "label": {"type": "plain_text", "text": block_id},
        "element": {"action_id": block_id, **element},
    }


DECISION_FORM = {
    "type": "modal",
    "callback_id": "decide",
    "private_metadata": "run-1",
    "title": {"type": "plain_text", "text": "Decide"},
    "submit": {"type": "plain_text", "text": "Submit"},
    "close": {"type": "plain_text", "text": "Cancel"},
    "blocks": [
        field("reason", {"type": "plain_text_input", "multiline": True}),
        field(
            "outcome",
            {"type": "static_select", "options": [option("approve"), option("reject")]},
        ),
        field("checks", {"type": "checkboxes", "options": [option("tests"), option("backup")]}),
        field("when", {"type": "datepicker"}),
        field("at", {"type": "timepicker"}),
        field("until", {"type": "datetimepicker"}),
        field("owner", {"type": "users_select"}),
        field("watchers", {"type": "multi_users_select"}, optional=True),
        field("note", {"type": "plain_text_input", "initial_value": "n/a"}, optional=True),
    ],
}


def open_form(driver: SlackDriver, slack: WebClient, app, user: str) -> str:
    """Click Approve as ``user`` and open the decision modal with the click's trigger_id."""
    driver.click(user, review_message(slack), "approve")
    return slack.views_open(trigger_id=app.last["trigger_id"], view=DECISION_FORM)["view"]["id"]


# -- signing ------------------------------------------------------------------


def test_requests_carry_a_signature_slack_sdk_verifies(
    driver: SlackDriver, slack: WebClient, app, emulator: SlackEmulator
):
    response = driver.click("U0ALICE", review_message(slack), "approve")

    assert response.status == 200
    received = app.received[-1]
    assert received.headers["content-type"] == "application/x-www-form-urlencoded"
    assert received.body.startswith(b"payload=")
    assert SignatureVerifier(emulator.signing_secret).is_valid_request(
        received.body, received.headers
    )
    assert received.headers["x-slack-signature"] == driver.sign(
        received.body, int(received.headers["x-slack-request-timestamp"])
    )


@pytest.mark.parametrize("tamper", list(Tamper))
def test_tampered_requests_are_refused_by_a_verifying_app(
    driver: SlackDriver, slack: WebClient, app, tamper: Tamper
):
    response = driver.click("U0ALICE", review_message(slack), "approve", tamper=tamper)

    assert response.status == 401
    assert app.received == []


# -- block_actions ------------------------------------------------------------


def test_a_click_sends_the_block_actions_payload_slack_sends(
    driver: SlackDriver, slack: WebClient, app, emulator: SlackEmulator
):
    posted = review_message(slack)

    driver.click("U0ALICE", posted, "reject")

    payload = app.last
    assert payload["type"] == "block_actions"
    assert payload["user"] == {
        "id": "U0ALICE",
        "username": "alice",
        "name": "alice",
        "team_id": "T0SIGNOFF",
    }
    assert payload["api_app_id"] == "A0SIGNOFF" and payload["token"]
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": "C0REVIEWS",
        "is_ephemeral": False,
    }
    assert payload["team"] == {"id": "T0SIGNOFF", "domain": "signoff-dev"}
    assert payload["enterprise"] is None and payload["is_enterprise_install"] is False
    assert payload["channel"] == {"id": "C0REVIEWS", "name": "reviews"}
    assert payload["message"] == emulator.workspace.message("C0REVIEWS", posted["ts"])
    assert payload["state"] == {"values": {}}
    assert payload["response_url"].startswith(emulator.base_url)
    [action] = payload["actions"]
    assert {k: v for k, v in action.items() if k != "action_ts"} == {
        "action_id": "reject",
        "block_id": "decide",
        "text": {"type": "plain_text", "text": "Reject"},
        "value": "run-1",
        "style": "danger",
        "type": "button",
    }
    assert float(action["action_ts"]) > float(posted["ts"])


def test_a_click_on_a_missing_button_or_an_unseen_message_is_refused(
    driver: SlackDriver, slack: WebClient, emulator: SlackEmulator
):
    posted = review_message(slack, channel="U0ALICE")

    with pytest.raises(DriverError, match="no element with action_id 'escalate'"):
        driver.click("U0ALICE", posted, "escalate")
    with pytest.raises(DriverError, match="U0BOB is not in D0ALICE"):
        driver.click("U0BOB", posted, "approve")


def test_ephemeral_messages_are_clicked_without_a_message_body(
    driver: SlackDriver, slack: WebClient, app, emulator: SlackEmulator
):
    sent = slack.chat_postEphemeral(
        channel="C0REVIEWS",
        user="U0BOB",
        text="Confirm?",
        blocks=[
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "confirm",
                        "text": {"type": "plain_text", "text": "Confirm"},
                    }
                ],
            }
        ],
    )
    [record] = emulator.workspace.ephemeral_messages("U0BOB")

    driver.click("U0BOB", record, "confirm")

    assert app.last["container"]["is_ephemeral"] is True
    assert app.last["container"]["message_ts"] == sent["message_ts"]
    assert "message" not in app.last
    with pytest.raises(DriverError, match="cannot see the ephemeral message"):
        driver.click("U0ALICE", record, "confirm")


def test_the_click_trigger_opens_a_modal_once_and_a_made_up_one_does_not(
    driver: SlackDriver, slack: WebClient, app, emulator: SlackEmulator
):
    driver.click("U0CAROL", review_message(slack), "approve")
    trigger_id = app.last["trigger_id"]

    opened = slack.views_open(trigger_id=trigger_id, view=DECISION_FORM)

    assert emulator.workspace.views.modals("U0CAROL")[0]["id"] == opened["view"]["id"]
    for bad, error in [(trigger_id, "exchanged_trigger_id"), ("1.2.made-up", "invalid_trigger_id")]:
        with pytest.raises(SlackApiError) as caught:
            slack.views_open(trigger_id=bad, view=DECISION_FORM)
        assert caught.value.response["error"] == error


# -- response_url -------------------------------------------------------------


def test_the_response_url_replaces_posts_and_deletes_like_slack(
    driver: SlackDriver, slack: WebClient, app, emulator: SlackEmulator
):
    posted = review_message(slack)
    driver.click("U0ALICE", posted, "approve")
    respond = WebhookClient(app.last["response_url"])

    replaced = respond.send(text="Approved by alice", replace_original=True)
    respond.send(text="Thanks, noted")
    respond.send_dict(
        {"text": "Approved", "response_type": "in_channel", "thread_ts": posted["ts"]}
    )

    assert replaced.status_code == 200
    original = emulator.workspace.message("C0REVIEWS", posted["ts"])
    assert original["text"] == "Approved by alice"
    assert [r["message"]["text"] for r in emulator.workspace.ephemeral_messages("U0ALICE")] == [
        "Thanks, noted"
    ]
    assert [m["text"] for m in emulator.workspace.replies("C0REVIEWS", posted["ts"])] == [
        "Approved"
    ]
    assert len(emulator.calls_to("response_url")) == 3

    respond.send_dict({"delete_original": True})
    assert emulator.workspace.messages("C0REVIEWS") == []


def test_a_response_url_refuses_invalid_blocks(driver: SlackDriver, slack: WebClient, app):
    driver.click("U0ALICE", review_message(slack), "approve")

    answer = WebhookClient(app.last["response_url"]).send(
        text="x", blocks=[{"type": "section"}], replace_original=True
    )

    assert answer.status_code == 400 and "invalid_blocks" in answer.body


# -- view_submission ----------------------------------------------------------


def test_submitting_a_modal_sends_slack_state_shapes_and_closes_it(
    driver: SlackDriver, slack: WebClient, app, emulator: SlackEmulator
):
    view_id = open_form(driver, slack, app, "U0ALICE")
    until = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)

    response = driver.submit_view(
        "U0ALICE",
        view_id,
        {
            "reason": "Looks safe",
            "outcome": "approve",
            "checks": ["tests", "backup"],
            "when": date(2026, 1, 2),
            "at": clock_time(9, 30),
            "until": until,
            "owner": "U0CAROL",
        },
    )

    assert response.status == 200
    payload = app.last
    assert payload["type"] == "view_submission" and payload["response_urls"] == []
    assert payload["user"]["id"] == "U0ALICE" and payload["trigger_id"]
    view = payload["view"]
    assert (view["id"], view["callback_id"], view["private_metadata"]) == (
        view_id,
        "decide",
        "run-1",
    )
    assert view["type"] == "modal" and view["root_view_id"] == view_id and view["hash"]
    assert view["app_id"] == "A0SIGNOFF" and view["bot_id"] == "B0SIGNOFF01"
    assert view["title"]["text"] == "Decide" and view["submit"]["text"] == "Submit"
    values = view["state"]["values"]
    assert values["reason"]["reason"] == {"type": "plain_text_input", "value": "Looks safe"}
    assert values["outcome"]["outcome"] == {
        "type": "static_select",
        "selected_option": option("approve"),
    }
    assert values["checks"]["checks"]["selected_options"] == [option("tests"), option("backup")]
    assert values["when"]["when"] == {"type": "datepicker", "selected_date": "2026-01-02"}
    assert values["at"]["at"] == {"type": "timepicker", "selected_time": "09:30"}
    assert values["until"]["until"]["selected_date_time"] == int(until.timestamp())
    assert values["owner"]["owner"] == {"type": "users_select", "selected_user": "U0CAROL"}
    assert values["watchers"]["watchers"] == {
        "type": "multi_users_select",
        "selected_users": [],
    }
    assert values["note"]["note"] == {"type": "plain_text_input", "value": "n/a"}
    assert emulator.workspace.views.modals("U0ALICE") == []


def test_a_required_input_left_empty_cannot_be_submitted(
    driver: SlackDriver, slack: WebClient, app
):
    view_id = open_form(driver, slack, app, "U0ALICE")

    with pytest.raises(
        DriverError, match="input 'checks', 'when', 'at', 'until', 'owner' is required"
    ):
        driver.submit_view("U0ALICE", view_id, {"reason": "x", "outcome": "approve"})
    with pytest.raises(DriverError, match="offers no option with value 'maybe'"):
        driver.submit_view("U0ALICE", view_id, {"outcome": "maybe"})


def test_response_actions_keep_update_or_clear_the_modal(
    driver: SlackDriver, slack: WebClient, app, emulator: SlackEmulator
):
    view_id = open_form(driver, slack, app, "U0DAVE")
    complete = {
        "reason": "ok",
        "outcome": "reject",
        "checks": ["tests"],
        "when": "2026-01-02",
        "at": "10:00",
        "until": 1767225600,
        "owner": "U0DAVE",
    }

    app.answer = lambda payload: (
        200,
        {"response_action": "errors", "errors": {"reason": "Say more"}},
    )
    kept = driver.submit_view("U0DAVE", view_id, complete)
    assert kept.body["errors"] == {"reason": "Say more"}
    assert [v["id"] for v in emulator.workspace.views.modals("U0DAVE")] == [view_id]

    thanks = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Done"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Recorded"}}],
    }
    app.answer = lambda payload: (200, {"response_action": "update", "view": thanks})
    driver.submit_view("U0DAVE", view_id, complete)
    [shown] = emulator.workspace.views.modals("U0DAVE")
    assert shown["id"] == view_id and shown["title"]["text"] == "Done"

    app.answer = lambda payload: (200, {"response_action": "clear"})
    driver.submit_view("U0DAVE", view_id)
    assert emulator.workspace.views.modals("U0DAVE") == []


def test_only_the_modal_owner_can_submit_it(driver: SlackDriver, slack: WebClient, app):
    view_id = open_form(driver, slack, app, "U0ALICE")

    with pytest.raises(DriverError, match="belongs to U0ALICE"):
        driver.submit_view("U0BOB", view_id, {})


# -- slash commands and App Home ---------------------------------------------


def test_a_slash_command_is_form_encoded_and_its_reply_shown(
    driver: SlackDriver, app, emulator: SlackEmulator
):
    app.answer = lambda payload: (200, {"text": f"Usage: {payload['command']} status"})

    response = driver.slash_command("U0BOB", "/signoff", "help", "C0REVIEWS")

    assert response.status == 200
    sent = app.received[-1]
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert {k: app.last[k] for k in ("command", "text", "user_id", "user_name", "channel_id")} == {
        "command": "/signoff",
        "text": "help",
        "user_id": "U0BOB",
        "user_name": "bob",
        "channel_id": "C0REVIEWS",
    }
    assert app.last["team_id"] == "T0SIGNOFF" and app.last["api_app_id"] == "A0SIGNOFF"
    assert app.last["response_url"].startswith(emulator.base_url) and app.last["trigger_id"]
    [reply] = emulator.workspace.ephemeral_messages("U0BOB")
    assert reply["message"]["text"] == "Usage: /signoff status"


def test_opening_the_app_home_sends_app_home_opened(driver: SlackDriver, app):
    driver.open_app_home("U0CAROL")

    assert app.received[-1].headers["content-type"] == "application/json"
    assert app.last["type"] == "event_callback"
    assert app.last["event"]["type"] == "app_home_opened"
    assert app.last["event"]["user"] == "U0CAROL" and app.last["event"]["tab"] == "home"
