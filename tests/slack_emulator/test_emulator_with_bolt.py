"""A real Bolt app accepts what the driver sends and its answers land in the workspace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from slack_bolt import Ack, App, Respond
from slack_bolt.adapter.starlette import SlackRequestHandler
from slack_sdk import WebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from slack_emulator import SlackDriver, SlackEmulator, Tamper
from slack_emulator.server import BackgroundServer

REASON_MODAL = {
    "type": "modal",
    "callback_id": "reject_reason",
    "title": {"type": "plain_text", "text": "Reject"},
    "submit": {"type": "plain_text", "text": "Reject"},
    "blocks": [
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Why?"},
            "element": {"type": "plain_text_input", "action_id": "text"},
        }
    ],
}


def build_bolt_app(client: WebClient, signing_secret: str, seen: list[str]) -> App:
    app = App(client=client, signing_secret=signing_secret, process_before_response=True)

    @app.action("reject")
    def open_reason(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        view = {**REASON_MODAL, "private_metadata": body["actions"][0]["value"]}
        client.views_open(trigger_id=body["trigger_id"], view=view)
        respond(text="Rejecting…", replace_original=True)

    @app.view("reject_reason")
    def record_reason(ack: Ack, view: dict[str, Any]) -> None:
        reason = view["state"]["values"]["reason"]["text"]["value"]
        if len(reason) < 5:
            ack(response_action="errors", errors={"reason": "Say a bit more"})
            return
        seen.append(f"{view['private_metadata']}: {reason}")
        ack()

    @app.command("/signoff")
    def help_text(ack: Ack, command: dict[str, Any]) -> None:
        ack(f"Hi {command['user_name']}, try /signoff status")

    return app


@pytest.fixture
def bolt(emulator: SlackEmulator) -> Iterator[tuple[SlackDriver, WebClient, list[str]]]:
    client = WebClient(token=emulator.bot_token, base_url=emulator.api_url)
    seen: list[str] = []
    handler = SlackRequestHandler(build_bolt_app(client, emulator.signing_secret, seen))

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    server = BackgroundServer(Starlette(routes=[Route("/slack/events", events, methods=["POST"])]))
    with server, SlackDriver(emulator, f"{server.base_url}/slack/events") as driver:
        yield driver, client, seen


def test_a_bolt_app_handles_clicks_modals_and_commands(bolt, emulator: SlackEmulator):
    driver, client, seen = bolt
    posted = client.chat_postMessage(
        channel="U0ALICE",
        text="Deploy?",
        blocks=[
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "reject",
                        "value": "run-7",
                        "text": {"type": "plain_text", "text": "Reject"},
                    }
                ],
            }
        ],
    )

    assert driver.click("U0ALICE", posted, "reject").status == 200
    assert emulator.workspace.message("D0ALICE", posted["ts"])["text"] == "Rejecting…"
    [modal] = emulator.workspace.views.modals("U0ALICE")

    too_short = driver.submit_view("U0ALICE", modal["id"], {"reason": "no"})
    assert too_short.body == {"response_action": "errors", "errors": {"reason": "Say a bit more"}}
    assert emulator.workspace.views.modals("U0ALICE") != []

    assert driver.submit_view("U0ALICE", modal["id"], {"reason": "Risky on Friday"}).ok
    assert seen == ["run-7: Risky on Friday"]
    assert emulator.workspace.views.modals("U0ALICE") == []

    assert driver.slash_command("U0BOB", "/signoff", "help").status == 200
    [reply] = emulator.workspace.ephemeral_messages("U0BOB")
    assert reply["message"]["text"] == "Hi bob, try /signoff status"

    assert driver.slash_command("U0BOB", "/signoff", tamper=Tamper.WRONG_SIGNATURE).status == 401
