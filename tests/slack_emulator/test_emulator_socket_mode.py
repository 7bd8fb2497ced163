"""Socket Mode as the emulator speaks it: apps.connections.open, hello, envelopes and acks,
disconnects; checked with a bare websocket client, slack_sdk's own client and a Bolt app."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from slack_emulator import AckOutcome, DriverError, SlackDriver, SlackEmulator, SocketModeServer, Tamper
from slack_emulator.socket_mode import MAX_CONNECTIONS
from tests.slack_emulator.test_emulator_with_bolt import build_bolt_app
from tests.support.services import wait_until


@pytest.fixture
def sockets(emulator: SlackEmulator) -> Iterator[SocketModeServer]:
    """The emulator's Socket Mode server; every connection a test left open is closed after it."""
    yield emulator.socket_mode
    if emulator.socket_mode.running:
        emulator.socket_mode.close_connections()
        emulator.socket_mode.wait_for_no_connections(timeout=5)


@pytest.fixture
def open_url(emulator: SlackEmulator) -> Callable[[], str]:
    """Call apps.connections.open with the app-level token, as an app does."""
    web = WebClient(base_url=emulator.api_url)
    return lambda: str(web.apps_connections_open(app_token=emulator.app_token)["url"])


@pytest.fixture
def raw_client() -> Iterator[Callable[[str], ClientConnection]]:
    """A bare websocket client (the ``websockets`` library's), closed after the test."""
    with contextlib.ExitStack() as opened:
        yield lambda url: opened.enter_context(connect(url, open_timeout=5, close_timeout=1))


@pytest.fixture
def sdk_client(emulator: SlackEmulator) -> Iterator[Callable[..., SocketModeClient]]:
    """slack_sdk's built-in Socket Mode client (Bolt's default), closed after the test."""
    started: list[SocketModeClient] = []

    def start(**kwargs: Any) -> SocketModeClient:
        client = SocketModeClient(
            app_token=emulator.app_token,
            web_client=WebClient(base_url=emulator.api_url),
            **kwargs,
        )
        started.append(client)
        return client

    yield start
    # Slack's side closes first: the client's close() would otherwise wait out its 3 s
    # socket read timeout before it can shut the socket.
    emulator.socket_mode.close_connections()
    for client in started:
        client.close()


def receive(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout=5))
    assert isinstance(message, dict)
    return message


def answer_in_thread(ws: ClientConnection, answer: Callable[[dict[str, Any]], Any]) -> threading.Thread:
    """Receive one envelope on ``ws`` in a thread and send back what ``answer`` makes of it."""

    def run() -> None:
        reply = answer(receive(ws))
        if reply is not None:
            ws.send(json.dumps(reply))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def button_message(slack: WebClient) -> Any:
    return slack.chat_postMessage(
        channel="C0REVIEWS",
        text="Deploy?",
        blocks=[
            {
                "type": "actions",
                "block_id": "decide",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "approve",
                        "value": "run-1",
                        "text": {"type": "plain_text", "text": "Approve"},
                    }
                ],
            }
        ],
    )


# -- apps.connections.open ---------------------------------------------------


def test_apps_connections_open_hands_out_a_socket_url_for_the_app_level_token(
    emulator: SlackEmulator, sockets: SocketModeServer
):
    web = WebClient(base_url=emulator.api_url)

    answer = web.apps_connections_open(app_token=emulator.app_token)

    assert answer["ok"] is True
    assert emulator.app_token.startswith("xapp-")
    assert answer["url"].startswith(f"ws://127.0.0.1:{sockets.port}/link/?ticket=")
    assert answer["url"].endswith("&app_id=A0SIGNOFF")
    assert answer["url"] != web.apps_connections_open(app_token=emulator.app_token)["url"]
    assert emulator.calls_to("apps.connections.open") == [{}, {}]  # the token is not recorded


@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("bot", "not_allowed_token_type"),
        ("xapp-1-A0SIGNOFF-1-forged", "invalid_auth"),
        ("xoxb-made-up", "invalid_auth"),
    ],
)
def test_apps_connections_open_refuses_other_tokens(emulator: SlackEmulator, token: str, error: str):
    web = WebClient(base_url=emulator.api_url)

    with pytest.raises(SlackApiError) as refused:
        web.apps_connections_open(app_token=emulator.bot_token if token == "bot" else token)

    assert refused.value.response.status_code == 200
    assert refused.value.response["error"] == error


def test_the_app_level_token_goes_in_the_authorization_header_only(emulator: SlackEmulator):
    url = f"{emulator.api_url}apps.connections.open"

    as_parameter = httpx.post(url, data={"token": emulator.app_token}).json()
    no_token = httpx.post(url).json()
    in_header = httpx.post(url, headers={"Authorization": f"Bearer {emulator.app_token}"}).json()

    assert as_parameter == {"ok": False, "error": "not_authed"}
    assert no_token == {"ok": False, "error": "not_authed"}
    assert in_header["ok"] is True


def test_the_app_level_token_cannot_call_bot_methods(emulator: SlackEmulator):
    web = WebClient(token=emulator.app_token, base_url=emulator.api_url)

    with pytest.raises(SlackApiError) as refused:
        web.chat_postMessage(channel="C0REVIEWS", text="hi")

    assert refused.value.response["error"] == "not_allowed_token_type"
    assert emulator.workspace.messages("C0REVIEWS") == []


# -- the websocket -----------------------------------------------------------


def test_connecting_gets_hello_and_a_ticket_opens_one_connection(
    sockets: SocketModeServer, open_url: Callable[[], str], raw_client
):
    url = open_url()

    first = receive(raw_client(url))

    assert first["type"] == "hello"
    assert first["num_connections"] == 1
    assert first["connection_info"] == {"app_id": "A0SIGNOFF"}
    assert set(first["debug_info"]) == {"host", "started", "build_number", "approximate_connection_time"}
    assert first["debug_info"]["approximate_connection_time"] == 3600
    with pytest.raises(InvalidStatus) as reused:
        raw_client(url)
    assert reused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        raw_client(url.replace("ticket=", "ticket=made-up-"))

    second = receive(raw_client(open_url() + "&debug_reconnects=true"))

    assert second["num_connections"] == 2
    assert second["debug_info"]["approximate_connection_time"] == 360
    assert [c.id for c in sockets.connections()] == ["link-1", "link-2"]
    assert sockets.connections()[1].debug_reconnects is True


def test_an_envelope_comes_back_acked_with_its_payload(
    sockets: SocketModeServer, open_url: Callable[[], str], raw_client
):
    ws = raw_client(open_url())
    assert receive(ws)["type"] == "hello"
    seen: list[dict[str, Any]] = []

    def errors(envelope: dict[str, Any]) -> dict[str, Any]:
        seen.append(envelope)
        return {
            "envelope_id": envelope["envelope_id"],
            "payload": {"response_action": "errors", "errors": {"reason": "Say more"}},
        }

    answering = answer_in_thread(ws, errors)
    ack = sockets.deliver("interactive", {"type": "view_submission", "view": {"id": "V1"}})
    answering.join(5)

    [envelope] = seen
    assert set(envelope) == {"envelope_id", "type", "accepts_response_payload", "payload"}
    assert envelope["type"] == "interactive" and envelope["accepts_response_payload"] is True
    assert envelope["payload"] == {"type": "view_submission", "view": {"id": "V1"}}
    assert ack.outcome is AckOutcome.ACKED and ack.acked
    assert ack.envelope_id == envelope["envelope_id"] and ack.connection_id == "link-1"
    assert ack.payload == {"response_action": "errors", "errors": {"reason": "Say more"}}
    assert ack.elapsed < 1
    assert sockets.envelopes == [ack]

    answering = answer_in_thread(ws, lambda envelope: {"envelope_id": envelope["envelope_id"]})
    plain = sockets.deliver("slash_commands", {"command": "/signoff", "text": ""})
    answering.join(5)

    assert plain.acked and plain.payload is None
    assert plain.envelope["accepts_response_payload"] is True
    assert sockets.received == []


def test_an_envelope_not_acked_within_3_seconds_is_reported_and_its_late_ack_noted(
    emulator: SlackEmulator, sockets: SocketModeServer, open_url: Callable[[], str], raw_client, slack
):
    ws = raw_client(open_url())
    assert receive(ws)["type"] == "hello"
    late: list[dict[str, Any]] = []
    answering = answer_in_thread(ws, lambda envelope: late.append(envelope))
    message = button_message(slack)

    with SlackDriver(emulator, socket_mode=True) as driver:
        response = driver.click("U0ALICE", message, "approve")
    answering.join(5)

    assert response.status == 504 and not response.ok
    assert "did not ack" in response.text
    assert 3.0 <= response.elapsed < 4.0
    [envelope] = late
    assert response.envelope_id == envelope["envelope_id"]
    assert response.sent == envelope["payload"] and response.sent["type"] == "block_actions"
    [ack] = sockets.envelopes
    assert ack.outcome is AckOutcome.TIMED_OUT

    ws.send(json.dumps({"envelope_id": envelope["envelope_id"]}))  # too late now
    wait_until(lambda: sockets.received, timeout=5, message="the late ack")
    [stray] = sockets.received
    assert stray.kind == "late_ack" and stray.message == {"envelope_id": envelope["envelope_id"]}


def test_without_a_connection_nothing_is_delivered(emulator: SlackEmulator, sockets, slack):
    message = button_message(slack)
    with SlackDriver(emulator, socket_mode=True) as driver:
        response = driver.click("U0ALICE", message, "approve")
        with pytest.raises(DriverError, match="not signed"):
            driver.click("U0ALICE", message, "approve", tamper=Tamper.WRONG_SIGNATURE)

    assert response.status == 503 and "no Socket Mode connection" in response.text
    assert [a.outcome for a in sockets.envelopes] == [AckOutcome.NOT_CONNECTED]


def test_a_connection_closing_before_the_ack_fails_the_envelope_at_once(
    sockets: SocketModeServer, open_url: Callable[[], str], raw_client
):
    ws = raw_client(open_url())
    assert receive(ws)["type"] == "hello"
    answering = answer_in_thread(ws, lambda envelope: ws.close())

    ack = sockets.deliver("interactive", {"type": "block_actions"})
    answering.join(5)

    assert ack.outcome is AckOutcome.CONNECTION_CLOSED
    assert ack.elapsed < 2


def test_disconnect_and_close_as_slack_does(
    sockets: SocketModeServer, open_url: Callable[[], str], raw_client
):
    old = raw_client(open_url())
    assert receive(old)["type"] == "hello"
    new = raw_client(open_url())
    assert receive(new)["type"] == "hello"

    assert sockets.disconnect("warning", connection_id="link-1") == ["link-1"]
    assert receive(old) == {
        "type": "disconnect", "reason": "warning", "debug_info": {"host": "applink-emulator"},
    }
    # A connection told to go is not given new envelopes while another is open.
    answering = answer_in_thread(new, lambda envelope: {"envelope_id": envelope["envelope_id"]})
    assert sockets.deliver("interactive", {"type": "block_actions"}).connection_id == "link-2"
    answering.join(5)

    sockets.disconnect("refresh_requested", connection_id="link-1", close_after=0.05)
    assert receive(old)["reason"] == "refresh_requested"
    with pytest.raises(ConnectionClosed) as closed:
        old.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    wait_until(lambda: [c.id for c in sockets.connections()] == ["link-2"], timeout=5,
               message="the emulator to let go of link-1")

    assert sockets.close_connections() == ["link-2"]
    with pytest.raises(ConnectionClosed):
        new.recv(timeout=5)
    sockets.wait_for_no_connections(timeout=5)
    assert [c.id for c in sockets.opened] == ["link-1", "link-2"]


def test_a_network_cut_drops_the_connection_without_a_close_frame(
    sockets: SocketModeServer, open_url: Callable[[], str], raw_client
):
    ws = raw_client(open_url())
    assert receive(ws)["type"] == "hello"

    assert sockets.close_connections(abrupt=True) == ["link-1"]

    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is None  # no close frame came
    sockets.wait_for_no_connections(timeout=5)


def test_past_ten_connections_slack_says_too_many_websockets(
    sockets: SocketModeServer, open_url: Callable[[], str], raw_client
):
    for _ in range(MAX_CONNECTIONS):
        assert receive(raw_client(open_url()))["type"] == "hello"

    extra = raw_client(open_url())

    assert receive(extra)["reason"] == "too_many_websockets"
    with pytest.raises(ConnectionClosed):
        extra.recv(timeout=5)
    assert len(sockets.connections()) == MAX_CONNECTIONS


# -- with Slack's own client -------------------------------------------------


def test_slack_sdk_client_connects_pings_acks_and_follows_a_disconnect(
    sockets: SocketModeServer, sdk_client
):
    client = sdk_client(ping_interval=10)
    received: list[SocketModeRequest] = []

    def listener(client: SocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        client.send_socket_mode_response(
            SocketModeResponse(envelope_id=request.envelope_id, payload={"text": "got it"})
        )

    client.socket_mode_request_listeners.append(listener)  # type: ignore[arg-type]
    client.connect()
    [first] = sockets.wait_for_connections(1, timeout=5)
    # Its first ping went out right after the handshake; the pong came back.
    wait_until(lambda: client.current_session and client.current_session.last_ping_pong_time,
               timeout=5, message="a pong for the client's ping")

    ack = sockets.deliver("slash_commands", {"command": "/signoff", "text": "status"})
    assert ack.acked and ack.payload == {"text": "got it"}
    assert received[0].type == "slash_commands"
    assert received[0].payload == {"command": "/signoff", "text": "status"}

    sockets.disconnect()  # refresh_requested: the client opens a new connection, drops the old
    wait_until(lambda: [c.id for c in sockets.connections()] == ["link-2"], timeout=5,
               message="the client to move to a new connection")
    ack = sockets.deliver("interactive", {"type": "block_actions"})
    assert ack.acked and ack.connection_id == "link-2"
    assert first.id == "link-1"


def test_a_bolt_app_over_socket_mode_handles_clicks_modals_and_commands(
    emulator: SlackEmulator, sockets: SocketModeServer, slack: WebClient
):
    client = WebClient(token=emulator.bot_token, base_url=emulator.api_url)
    seen: list[str] = []
    handler = SocketModeHandler(build_bolt_app(client, "", seen), emulator.app_token)
    handler.connect()
    try:
        sockets.wait_for_connections(1, timeout=5)
        driver = SlackDriver(emulator, socket_mode=True)
        posted = client.chat_postMessage(
            channel="U0ALICE",
            text="Deploy?",
            blocks=[{"type": "actions", "elements": [{
                "type": "button", "action_id": "reject", "value": "run-7",
                "text": {"type": "plain_text", "text": "Reject"},
            }]}],
        )

        clicked = driver.click("U0ALICE", (posted["channel"], posted["ts"]), "reject")
        assert clicked.status == 200 and clicked.body is None
        assert emulator.workspace.message("D0ALICE", posted["ts"])["text"] == "Rejecting…"
        [modal] = emulator.workspace.views.modals("U0ALICE")

        too_short = driver.submit_view("U0ALICE", modal["id"], {"reason": "no"})
        assert too_short.body == {"response_action": "errors", "errors": {"reason": "Say a bit more"}}
        assert emulator.workspace.views.modals("U0ALICE") != []

        assert driver.submit_view("U0ALICE", modal["id"], {"reason": "Risky on Friday"}).ok
        assert seen == ["run-7: Risky on Friday"]
        assert emulator.workspace.views.modals("U0ALICE") == []

        assert driver.slash_command("U0BOB", "/signoff", "help").body == {
            "text": "Hi bob, try /signoff status"
        }
        [reply] = emulator.workspace.ephemeral_messages("U0BOB")
        assert reply["message"]["text"] == "Hi bob, try /signoff status"
        assert [a.envelope["type"] for a in sockets.envelopes] == [
            "interactive", "interactive", "interactive", "slash_commands",
        ]
    finally:
        sockets.close_connections()  # see sdk_client: spares close() a 3 s read timeout
        handler.close()
