"""A Slack user, as the app under test sees one: signed requests to its Request URL.

:class:`SlackDriver` clicks buttons, submits modals, runs slash commands and opens
the App Home, sending the payloads Slack sends (``block_actions``,
``view_submission``, slash command forms, ``app_home_opened`` events), signed with
the app's signing secret the way Slack signs them. Interactions carry a trigger_id
the emulator accepts for ``views.open`` and a response_url the emulator serves.
What Slack's client does with the app's answer (close or update the modal, show
a slash command reply) is applied to the workspace too.

``SlackDriver(emulator, socket_mode=True)`` sends the same payloads over the app's
Socket Mode connection instead: in envelopes on the emulator's websocket, each waited
for until the app acks it (3 s, as Slack), the ack's payload standing in for the HTTP
answer's body. A missing ack comes back as a failed :class:`AppResponse` (status 504,
502 when the connection closed first, 503 without a connection), as Slack shows the
user an error then.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import httpx

from slack_emulator.errors import DriverError, SlackApiFailure
from slack_emulator.server import SlackEmulator
from slack_emulator.socket_mode import Ack, AckOutcome
from slack_emulator.state import element_state, find_element, view_state
from slack_emulator.web_api import view_payload
from slack_emulator.workspace import MessageRef, Workspace

STALE_BY_SECONDS = 6 * 60  # Bolt rejects requests older than five minutes
# An AppResponse's status when a Socket Mode envelope got no ack.
SOCKET_FAILURE_STATUS = {
    AckOutcome.TIMED_OUT: 504,
    AckOutcome.CONNECTION_CLOSED: 502,
    AckOutcome.NOT_CONNECTED: 503,
}


class Tamper(StrEnum):
    """Ways to spoil a request's signature, for security tests."""

    STALE_TIMESTAMP = "stale_timestamp"
    WRONG_SIGNATURE = "wrong_signature"
    NO_SIGNATURE = "no_signature"


@dataclass(frozen=True)
class AppResponse:
    """What the app answered: status, body (parsed JSON when it is JSON) and timing.

    Over Socket Mode: status 200 and the ack's ``payload`` as body when the app acked,
    else a 5xx status (see :data:`SOCKET_FAILURE_STATUS`) and why in ``text``;
    ``envelope_id`` says which envelope it was.
    """

    status: int
    body: Any
    text: str
    elapsed: float
    sent: dict[str, Any] = field(repr=False)
    envelope_id: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @classmethod
    def from_ack(cls, ack: Ack) -> AppResponse:
        """The answer to a Socket Mode envelope, shaped like the HTTP path's."""
        payload = ack.envelope["payload"]
        if ack.acked:
            body = ack.payload
            text = "" if body is None else json.dumps(body)
            return cls(200, body, text, ack.elapsed, payload, ack.envelope_id)
        reasons = {
            AckOutcome.TIMED_OUT: f"the app did not ack the envelope in {ack.elapsed:.1f}s",
            AckOutcome.CONNECTION_CLOSED: "the connection closed before the app acked",
            AckOutcome.NOT_CONNECTED: "the app has no Socket Mode connection open",
        }
        return cls(
            SOCKET_FAILURE_STATUS[ack.outcome], None, reasons[ack.outcome], ack.elapsed,
            payload, ack.envelope_id,
        )


MessageLike = MessageRef | Mapping[str, Any] | tuple[str, str]


class SlackDriver:
    """Acts as workspace users against the app's Request URL (``.../slack/events``), or
    over its Socket Mode connection with ``socket_mode=True``."""

    def __init__(
        self,
        emulator: SlackEmulator,
        app_url: str | None = None,
        *,
        signing_secret: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        socket_mode: bool = False,
        ack_timeout: float | None = None,
    ) -> None:
        if app_url is None and not socket_mode:
            raise ValueError("the driver needs the app's Request URL, or socket_mode=True")
        self.emulator = emulator
        self.app_url = app_url
        self.socket_mode = socket_mode
        self.ack_timeout = ack_timeout  # None: the emulator's, 3 s as Slack
        self._signing_secret = signing_secret or emulator.signing_secret
        self._clock = clock
        self._http = httpx.Client(timeout=timeout)

    def __repr__(self) -> str:
        if self.socket_mode:
            return "<SlackDriver over Socket Mode>"
        return f"<SlackDriver app_url={self.app_url!r}>"

    @property
    def workspace(self) -> Workspace:
        return self.emulator.workspace

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SlackDriver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- interactions --------------------------------------------------------

    def click(
        self,
        user_id: str,
        message: MessageLike,
        action_id: str,
        value: Any = None,
        *,
        block_id: str | None = None,
        tamper: Tamper | None = None,
    ) -> AppResponse:
        """Use an interactive element of a message: press a button, pick an option.

        ``message`` is a :class:`MessageRef`, a ``(channel, ts)`` pair, or anything with
        ``channel`` and ``ts`` keys (a ``chat.postMessage`` response, an ephemeral record).
        For buttons, ``value`` picks among buttons sharing ``action_id``; for selects,
        pickers and checkboxes it is what the user chooses.
        """
        channel, ts = _message_address(message)
        ws = self.workspace
        try:
            channel_id, stored, ephemeral_for = ws.locate(ts)
            if ws.resolve_channel(channel) != channel_id:
                raise SlackApiFailure("message_not_found")
        except SlackApiFailure as exc:
            raise DriverError(f"no message {ts} in {channel}") from exc
        if ephemeral_for not in (None, user_id):
            raise DriverError(
                f"{user_id} cannot see the ephemeral message {ts} for {ephemeral_for}"
            )
        if user_id not in ws.members(channel_id):
            raise DriverError(f"{user_id} is not in {channel_id} and cannot see message {ts}")
        found_block, element = find_element(stored.get("blocks", []), action_id, block_id, value)
        is_ephemeral = ephemeral_for is not None
        hook = ws.register_hook(
            "actions", channel_id, user_id, message_ts=ts, is_ephemeral=is_ephemeral
        )
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": ws.app.app_id,
            "token": ws.app.verification_token,
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel_id,
                "is_ephemeral": is_ephemeral,
            },
            "trigger_id": ws.issue_trigger(user_id),
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": ws.channel_name(channel_id)},
            "state": {"values": {}},
            "response_url": self.emulator.response_url(hook),
            "actions": [self._action(found_block, element, value)],
        }
        if not is_ephemeral:
            payload["message"] = stored
        return self.send_interaction(payload, tamper=tamper)

    def click_in_view(
        self,
        user_id: str,
        view_id: str,
        action_id: str,
        value: Any = None,
        *,
        block_id: str | None = None,
        tamper: Tamper | None = None,
    ) -> AppResponse:
        """Use an interactive element of an open modal or of the user's App Home."""
        ws = self.workspace
        view = self._own_view(user_id, view_id)
        found_block, element = find_element(view["blocks"], action_id, block_id, value)
        payload = {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": ws.app.app_id,
            "token": ws.app.verification_token,
            "container": {"type": "view", "view_id": view_id},
            "trigger_id": ws.issue_trigger(user_id),
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "view": view,
            "state": view["state"],
            "actions": [self._action(found_block, element, value)],
        }
        return self.send_interaction(payload, tamper=tamper)

    def submit_view(
        self,
        user_id: str,
        view_id: str,
        values: Mapping[str, Any] | None = None,
        *,
        tamper: Tamper | None = None,
    ) -> AppResponse:
        """Fill a modal's inputs (``{block_id: python value}``) and press its submit button.

        Values become Slack's state shapes by element type: text for text inputs, option
        values for selects/radios/checkboxes, ``date``/``time``/``datetime`` for pickers,
        user or conversation ids for those selects. Untouched inputs keep their initial
        values; a required input left empty raises :class:`DriverError`, as Slack's client
        would refuse to submit. The app's answer is applied: an empty 200 closes the
        modal, ``response_action`` ``errors``/``update``/``push``/``clear`` do what Slack does.
        """
        ws = self.workspace
        view = self._own_view(user_id, view_id)
        stack = ws.views.modals(user_id)
        if not stack or stack[-1]["id"] != view_id:
            raise DriverError(f"view {view_id} is not the modal {user_id} has in front")
        state = view_state(view["blocks"], dict(values or {}))
        ws.views.set_state(view_id, state)
        view = ws.views.get(view_id)
        payload = {
            "type": "view_submission",
            "team": self._team(),
            "user": self._user(user_id),
            "api_app_id": ws.app.app_id,
            "token": ws.app.verification_token,
            "trigger_id": ws.issue_trigger(user_id),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        response = self.send_interaction(payload, tamper=tamper)
        if response.ok:
            self._apply_view_answer(user_id, view_id, response)
        return response

    def close_view(
        self, user_id: str, view_id: str, *, tamper: Tamper | None = None
    ) -> AppResponse | None:
        """Press a modal's close button; the app hears ``view_closed`` if it asked to."""
        ws = self.workspace
        view = self._own_view(user_id, view_id)
        ws.views.close(view_id)
        if not view.get("notify_on_close"):
            return None
        payload = {
            "type": "view_closed",
            "team": self._team(),
            "user": self._user(user_id),
            "api_app_id": ws.app.app_id,
            "token": ws.app.verification_token,
            "view": view,
            "is_cleared": False,
            "is_enterprise_install": False,
            "enterprise": None,
        }
        return self.send_interaction(payload, tamper=tamper)

    def slash_command(
        self,
        user_id: str,
        command: str,
        text: str = "",
        channel_id: str = "C0REVIEWS",
        *,
        tamper: Tamper | None = None,
    ) -> AppResponse:
        """Type ``/command text`` in a channel; a reply in the HTTP answer is shown to the user."""
        ws = self.workspace
        user = ws.user(user_id)
        channel_id = ws.resolve_channel(channel_id)
        hook = ws.register_hook("commands", channel_id, user_id)
        fields = {
            "token": ws.app.verification_token,
            "team_id": ws.team.id,
            "team_domain": ws.team.domain,
            "channel_id": channel_id,
            "channel_name": ws.channel_name(channel_id),
            "user_id": user_id,
            "user_name": user.name,
            "command": command,
            "text": text,
            "api_app_id": ws.app.app_id,
            "is_enterprise_install": "false",
            "response_url": self.emulator.response_url(hook),
            "trigger_id": ws.issue_trigger(user_id),
        }
        response = self.send_form(fields, tamper=tamper)
        reply = _command_reply(response)
        if reply is not None:
            try:
                self.emulator.web_api.respond(hook.id, reply)
            except SlackApiFailure as exc:
                raise DriverError(
                    f"Slack could not show the app's reply to {command}: {exc.to_json()}"
                ) from exc
        return response

    def open_app_home(self, user_id: str, *, tamper: Tamper | None = None) -> AppResponse:
        """Open the app's Home tab: the ``app_home_opened`` event."""
        ws = self.workspace
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user_id,
            "channel": ws.open_dm(user_id),
            "tab": "home",
            "event_ts": ws.next_ts(),
        }
        home = ws.views.home(user_id)
        if home is not None:
            event["view"] = home
        body = {
            "token": ws.app.verification_token,
            "team_id": ws.team.id,
            "api_app_id": ws.app.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev0EMU{secrets.token_hex(4).upper()}",
            "event_time": int(self._clock()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": ws.team.id,
                    "user_id": ws.app.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        return self.send_json(body, tamper=tamper)

    # -- raw, signed requests ------------------------------------------------

    def send_interaction(
        self, payload: dict[str, Any], *, tamper: Tamper | None = None
    ) -> AppResponse:
        """POST ``payload=<json>`` form-encoded, as Slack sends interactivity payloads
        (over Socket Mode: the payload in an ``interactive`` envelope)."""
        if self.socket_mode:
            return self._deliver("interactive", payload, tamper)
        body = urlencode({"payload": json.dumps(payload)}).encode("utf-8")
        return self._post(body, "application/x-www-form-urlencoded", payload, tamper)

    def send_form(self, fields: dict[str, Any], *, tamper: Tamper | None = None) -> AppResponse:
        """POST a slash command's form (over Socket Mode: its fields as the JSON payload
        of a ``slash_commands`` envelope)."""
        if self.socket_mode:
            return self._deliver("slash_commands", fields, tamper)
        body = urlencode(fields).encode("utf-8")
        return self._post(body, "application/x-www-form-urlencoded", fields, tamper)

    def send_json(self, body: dict[str, Any], *, tamper: Tamper | None = None) -> AppResponse:
        """POST an Events API callback (over Socket Mode: an ``events_api`` envelope)."""
        if self.socket_mode:
            return self._deliver(
                "events_api", body, tamper, extra={"retry_attempt": 0, "retry_reason": ""}
            )
        return self._post(json.dumps(body).encode("utf-8"), "application/json", body, tamper)

    def sign(self, body: bytes, timestamp: int) -> str:
        """``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the signing secret."""
        base = b"v0:" + str(timestamp).encode("ascii") + b":" + body
        digest = hmac.new(self._signing_secret.encode("utf-8"), base, hashlib.sha256)
        return "v0=" + digest.hexdigest()

    def _deliver(
        self,
        kind: str,
        payload: dict[str, Any],
        tamper: Tamper | None,
        *,
        extra: dict[str, Any] | None = None,
    ) -> AppResponse:
        if tamper is not None:
            raise DriverError(
                "Socket Mode envelopes are not signed (the websocket is authenticated): "
                "nothing to tamper with"
            )
        ack = self.emulator.socket_mode.deliver(
            kind, payload, extra=extra, timeout=self.ack_timeout
        )
        return AppResponse.from_ack(ack)

    def _post(
        self, body: bytes, content_type: str, sent: dict[str, Any], tamper: Tamper | None
    ) -> AppResponse:
        if self.app_url is None:  # socket_mode=True: _deliver() sends everything
            raise DriverError("this driver has no Request URL to POST to")
        timestamp = int(self._clock())
        if tamper is Tamper.STALE_TIMESTAMP:
            timestamp -= STALE_BY_SECONDS
        signature = self.sign(body, timestamp)
        if tamper is Tamper.WRONG_SIGNATURE:
            signature = "v0=" + hashlib.sha256(body).hexdigest()
        headers = {"Content-Type": content_type}
        if tamper is not Tamper.NO_SIGNATURE:
            headers["X-Slack-Request-Timestamp"] = str(timestamp)
            headers["X-Slack-Signature"] = signature
        started = time.monotonic()
        response = self._http.post(self.app_url, content=body, headers=headers)
        elapsed = time.monotonic() - started
        try:
            parsed: Any = response.json() if response.content else None
        except ValueError:
            parsed = None
        return AppResponse(response.status_code, parsed, response.text, elapsed, sent)

    # -- building blocks -----------------------------------------------------

    def _user(self, user_id: str) -> dict[str, str]:
        user = self.workspace.user(user_id)
        return {
            "id": user.id,
            "username": user.name,
            "name": user.name,
            "team_id": self.workspace.team.id,
        }

    def _team(self) -> dict[str, str]:
        return {"id": self.workspace.team.id, "domain": self.workspace.team.domain}

    def _own_view(self, user_id: str, view_id: str) -> dict[str, Any]:
        try:
            owner = self.workspace.views.owner(view_id)
        except SlackApiFailure as exc:
            raise DriverError(f"no view {view_id}") from exc
        if owner != user_id:
            raise DriverError(f"view {view_id} belongs to {owner}, not {user_id}")
        return self.workspace.views.get(view_id)

    def _action(self, block_id: str, element: dict[str, Any], value: Any) -> dict[str, Any]:
        action: dict[str, Any] = {"action_id": element.get("action_id"), "block_id": block_id}
        if element["type"] == "button":
            action["text"] = element.get("text")
            for key in ("value", "style", "url"):
                if key in element:
                    action[key] = element[key]
            action["type"] = "button"
        else:
            action.update(element_state(element, value, given=True))
        action["action_ts"] = self.workspace.next_ts()
        return action

    def _apply_view_answer(self, user_id: str, view_id: str, response: AppResponse) -> None:
        ws = self.workspace
        answer = response.body if isinstance(response.body, dict) else {}
        action = answer.get("response_action")
        if action is None:
            ws.views.close(view_id)
        elif action == "clear":
            ws.views.clear_modals(user_id)
        elif action in ("update", "push"):
            try:
                view = view_payload({"view": answer.get("view")}, "modal")
            except SlackApiFailure as exc:
                raise DriverError(
                    f"the app answered response_action={action} with a view Slack rejects: "
                    f"{exc.to_json()}"
                ) from exc
            if action == "update":
                ws.views.update(view, view_id=view_id)
            else:
                ws.views.push(user_id, view)
        elif action != "errors":
            raise DriverError(f"the app answered an unknown response_action {action!r}")


def _message_address(message: MessageLike) -> tuple[str, str]:
    if isinstance(message, MessageRef):
        return message.channel, message.ts
    if isinstance(message, tuple):
        return message
    ts = message.get("ts") or message.get("message_ts")
    if not message.get("channel") or not ts:
        raise DriverError("a message needs a channel and a ts to be clicked")
    return str(message["channel"]), str(ts)


def _command_reply(response: AppResponse) -> dict[str, Any] | None:
    """The message a slash command's HTTP answer asks Slack to show, if any."""
    if not response.ok:
        return None
    if isinstance(response.body, dict):
        if response.body.get("text") or response.body.get("blocks"):
            return response.body
        return None
    if response.text.strip():
        return {"text": response.text}
    return None
