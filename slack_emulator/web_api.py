"""The Slack Web API methods Signoff uses, answered the way Slack answers them.

:class:`WebApi` takes a method name, its parameters (already merged from the
query string, the form body or the JSON body) and the caller's token, and returns
the JSON body Slack would send: ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
Response URLs (``respond()`` in Bolt) are answered here too. HTTP is the server's job.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from slack_emulator.blockkit import (
    MESSAGE_TEXT_MAX,
    VIEW_SIZE_MAX,
    as_slack_messages,
    message_errors,
    parse_json_field,
    view_errors,
    view_size,
)
from slack_emulator.errors import SlackApiFailure
from slack_emulator.workspace import Workspace

Params = Mapping[str, Any]
Handler = Callable[[Params], dict[str, Any]]
# Methods called with the app-level (xapp-) token rather than the bot token.
APP_LEVEL_METHODS = frozenset({"apps.connections.open"})


class WebApi:
    """Slack Web API methods over a :class:`Workspace`."""

    def __init__(
        self, workspace: Workspace, *, socket_url: Callable[[str], str] | None = None
    ) -> None:
        self.workspace = workspace
        self._socket_url = socket_url  # app_id -> a one-time Socket Mode URL
        self.methods: dict[str, Handler] = {
            "api.test": lambda params: {"ok": True, "args": dict(params)},
            "apps.connections.open": self.apps_connections_open,
            "auth.test": self.auth_test,
            "bots.info": self.bots_info,
            "chat.postMessage": self.chat_post_message,
            "chat.update": self.chat_update,
            "chat.delete": self.chat_delete,
            "chat.postEphemeral": self.chat_post_ephemeral,
            "chat.getPermalink": self.chat_get_permalink,
            "conversations.open": self.conversations_open,
            "conversations.history": self.conversations_history,
            "conversations.replies": self.conversations_replies,
            "conversations.members": self.conversations_members,
            "users.info": self.users_info,
            "users.lookupByEmail": self.users_lookup_by_email,
            "usergroups.users.list": self.usergroups_users_list,
            "views.open": self.views_open,
            "views.push": self.views_push,
            "views.update": self.views_update,
            "views.publish": self.views_publish,
        }

    def call(self, method: str, params: Params, token: str | None) -> dict[str, Any]:
        """The JSON body Slack answers ``method`` with."""
        try:
            if method in APP_LEVEL_METHODS:
                self.authenticate_app(token)
            elif method != "api.test":
                self.authenticate(token)
            handler = self.methods.get(method)
            if handler is None:
                raise SlackApiFailure(
                    "unknown_method", detail=f"the Slack emulator does not implement {method}"
                )
            return handler(params)
        except SlackApiFailure as failure:
            return failure.to_json()

    def authenticate(self, token: str | None) -> None:
        if not token:
            raise SlackApiFailure("not_authed")
        if token == self.workspace.app_token:
            raise SlackApiFailure("not_allowed_token_type")  # an app-level token can't post
        if token != self.workspace.app.bot_token:
            raise SlackApiFailure("invalid_auth")

    def authenticate_app(self, token: str | None) -> None:
        """The app-level token, as apps.connections.open wants it."""
        if not token:
            raise SlackApiFailure("not_authed")
        if token == self.workspace.app.bot_token:
            raise SlackApiFailure("not_allowed_token_type")
        if token != self.workspace.app_token:
            raise SlackApiFailure("invalid_auth")

    # -- Socket Mode ---------------------------------------------------------

    def apps_connections_open(self, params: Params) -> dict[str, Any]:
        if self._socket_url is None:
            raise SlackApiFailure(
                "unknown_method", detail="this Slack emulator serves no Socket Mode endpoint"
            )
        return {"ok": True, "url": self._socket_url(self.workspace.app.app_id)}

    # -- auth, users, groups -------------------------------------------------

    def auth_test(self, params: Params) -> dict[str, Any]:
        ws = self.workspace
        return {
            "ok": True,
            "url": f"https://{ws.team.domain}.slack.com/",
            "team": ws.team.name,
            "user": ws.user(ws.app.bot_user_id).name,
            "team_id": ws.team.id,
            "user_id": ws.app.bot_user_id,
            "bot_id": ws.app.bot_id,
            "is_enterprise_install": False,
        }

    def bots_info(self, params: Params) -> dict[str, Any]:
        app = self.workspace.app
        if params.get("bot") not in (None, "", app.bot_id):
            raise SlackApiFailure("bot_not_found")
        return {
            "ok": True,
            "bot": {"id": app.bot_id, "deleted": False, "name": self.workspace.user(
                app.bot_user_id).name, "app_id": app.app_id, "user_id": app.bot_user_id,
                "icons": {}},
        }

    def users_info(self, params: Params) -> dict[str, Any]:
        user = self.workspace.user(_required(params, "user", "user_not_found"))
        return {
            "ok": True,
            "user": user.to_slack(self.workspace.team.id, self.workspace.app.app_id),
        }

    def users_lookup_by_email(self, params: Params) -> dict[str, Any]:
        user = self.workspace.user_by_email(_required(params, "email", "users_not_found"))
        return {"ok": True, "user": user.to_slack(self.workspace.team.id)}

    def usergroups_users_list(self, params: Params) -> dict[str, Any]:
        group = self.workspace.usergroup(_required(params, "usergroup", "no_such_subteam"))
        return {"ok": True, "users": list(group.user_ids)}

    # -- messages ------------------------------------------------------------

    def chat_post_message(self, params: Params) -> dict[str, Any]:
        channel = _required(params, "channel", "channel_not_found")
        content = message_content(params)
        channel_id, message = self.workspace.post_message(
            channel, content, thread_ts=params.get("thread_ts") or None
        )
        return {"ok": True, "channel": channel_id, "ts": message["ts"], "message": message}

    def chat_update(self, params: Params) -> dict[str, Any]:
        channel = _required(params, "channel", "channel_not_found")
        ts = _required(params, "ts", "message_not_found")
        content = message_content(params)
        channel_id, message = self.workspace.update_message(channel, ts, content)
        return {
            "ok": True,
            "channel": channel_id,
            "ts": ts,
            "text": message.get("text", ""),
            "message": message,
        }

    def chat_delete(self, params: Params) -> dict[str, Any]:
        channel = _required(params, "channel", "channel_not_found")
        ts = _required(params, "ts", "message_not_found")
        return {"ok": True, "channel": self.workspace.delete_message(channel, ts), "ts": ts}

    def chat_post_ephemeral(self, params: Params) -> dict[str, Any]:
        channel = _required(params, "channel", "channel_not_found")
        user = _required(params, "user", "user_not_found")
        content = message_content(params)
        ts = self.workspace.post_ephemeral(
            channel, user, content, thread_ts=params.get("thread_ts") or None
        )
        return {"ok": True, "message_ts": ts}

    def chat_get_permalink(self, params: Params) -> dict[str, Any]:
        channel = _required(params, "channel", "channel_not_found")
        ts = _required(params, "message_ts", "message_not_found")
        channel_id = self.workspace.resolve_channel(channel)
        return {
            "ok": True,
            "channel": channel_id,
            "permalink": self.workspace.permalink(channel_id, ts),
        }

    # -- conversations -------------------------------------------------------

    def conversations_open(self, params: Params) -> dict[str, Any]:
        if params.get("channel"):
            channel_id = self.workspace.resolve_channel(str(params["channel"]))
            return {"ok": True, "channel": {"id": channel_id}}
        users = params.get("users")
        if isinstance(users, list | tuple):
            users = ",".join(users)
        user_ids = [u.strip() for u in str(users or "").split(",") if u.strip()]
        if not user_ids:
            raise SlackApiFailure("users_list_not_supplied")
        if len(user_ids) > 1:
            raise SlackApiFailure(
                "invalid_arguments", detail="the Slack emulator opens one-to-one DMs only"
            )
        already_open = self.workspace.dm_is_open(user_ids[0])
        channel_id = self.workspace.open_dm(user_ids[0])
        channel: dict[str, Any] = {"id": channel_id}
        if _flag(params.get("return_im")):
            channel.update({"is_im": True, "user": user_ids[0], "is_open": True})
        return {"ok": True, "no_op": already_open, "already_open": already_open, "channel": channel}

    def conversations_members(self, params: Params) -> dict[str, Any]:
        """A page of a conversation's member ids, ``limit`` (default 100, at most 1000) at a
        time; Slack's opaque cursor is base64 of ``user:{the next id}``, "" on the last page."""
        channel = _required(params, "channel", "channel_not_found")
        members = sorted(self.workspace.members(channel))
        limit = min(max(int(params.get("limit") or 100), 1), 1000)
        start = 0
        if params.get("cursor"):
            try:
                following = base64.b64decode(str(params["cursor"]), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise SlackApiFailure("invalid_cursor") from None
            if not following.startswith("user:") or following[5:] not in members:
                raise SlackApiFailure("invalid_cursor")
            start = members.index(following[5:])
        page = members[start:start + limit]
        rest = members[start + limit:start + limit + 1]
        cursor = base64.b64encode(f"user:{rest[0]}".encode()).decode() if rest else ""
        return {"ok": True, "members": page, "response_metadata": {"next_cursor": cursor}}

    def conversations_history(self, params: Params) -> dict[str, Any]:
        channel = _required(params, "channel", "channel_not_found")
        messages = list(reversed(self.workspace.messages(channel)))
        limit = int(params.get("limit") or 100)
        return {"ok": True, "messages": messages[:limit], "has_more": len(messages) > limit}

    def conversations_replies(self, params: Params) -> dict[str, Any]:
        channel = _required(params, "channel", "channel_not_found")
        ts = _required(params, "ts", "thread_not_found")
        try:
            parent = self.workspace.message(channel, ts)
        except SlackApiFailure as exc:
            raise SlackApiFailure("thread_not_found") from exc
        return {"ok": True, "messages": [parent, *self.workspace.replies(channel, ts)]}

    # -- views ---------------------------------------------------------------

    def views_open(self, params: Params) -> dict[str, Any]:
        view = view_payload(params, "modal")
        user_id = self.workspace.exchange_trigger(_trigger(params))
        return {"ok": True, "view": self.workspace.views.open(user_id, view)}

    def views_push(self, params: Params) -> dict[str, Any]:
        view = view_payload(params, "modal")
        user_id = self.workspace.exchange_trigger(_trigger(params))
        return {"ok": True, "view": self.workspace.views.push(user_id, view)}

    def views_update(self, params: Params) -> dict[str, Any]:
        view = view_payload(params, None)
        if not params.get("view_id") and not params.get("external_id"):
            raise SlackApiFailure("invalid_arguments", detail="view_id or external_id is required")
        stored = self.workspace.views.update(
            view,
            view_id=params.get("view_id"),
            external_id=params.get("external_id"),
            hash=params.get("hash"),
        )
        return {"ok": True, "view": stored}

    def views_publish(self, params: Params) -> dict[str, Any]:
        view = view_payload(params, "home")
        user = self.workspace.user(_required(params, "user_id", "user_not_found"))
        stored = self.workspace.views.publish_home(user.id, view, hash=params.get("hash"))
        return {"ok": True, "view": stored}

    # -- response URLs -------------------------------------------------------

    def respond(self, hook_id: str, body: Mapping[str, Any]) -> None:
        """Act on a POST to a response_url, as Slack does."""
        ws = self.workspace
        hook = ws.hook(hook_id)
        if hook is None:
            raise SlackApiFailure("expired_url")
        if _flag(body.get("delete_original")):
            if hook.message_ts is None:
                raise SlackApiFailure("message_not_found")
            if hook.is_ephemeral:
                ws.delete_ephemeral(hook.message_ts)
            else:
                ws.delete_message(hook.channel_id, hook.message_ts)
            return
        content = message_content(body)
        if _flag(body.get("replace_original")) and hook.message_ts is not None:
            if hook.is_ephemeral:
                ws.replace_ephemeral(hook.message_ts, content)
            else:
                ws.update_message(hook.channel_id, hook.message_ts, content)
        elif body.get("response_type") == "in_channel":
            ws.post_message(hook.channel_id, content, thread_ts=body.get("thread_ts") or None)
        else:
            ws.post_ephemeral(
                hook.channel_id, hook.user_id, content, thread_ts=body.get("thread_ts") or None
            )


def message_content(params: Params) -> dict[str, Any]:
    """The text, blocks, attachments and metadata of a message call, checked as Slack does."""
    try:
        blocks = parse_json_field(params.get("blocks"))
        attachments = parse_json_field(params.get("attachments"))
        metadata = parse_json_field(params.get("metadata"))
    except json.JSONDecodeError as exc:
        raise SlackApiFailure("invalid_blocks_format") from exc
    if blocks is not None:
        if not isinstance(blocks, list):
            raise SlackApiFailure("invalid_blocks_format")
        errors = message_errors(blocks)
        if errors:
            raise SlackApiFailure(
                "invalid_blocks",
                errors=errors,
                response_metadata={"messages": as_slack_messages(errors)},
            )
    text = params.get("text")
    if text is not None and not isinstance(text, str):
        text = str(text)
    if text and len(text) > MESSAGE_TEXT_MAX:
        raise SlackApiFailure("msg_too_long")
    if not text and not blocks and not attachments:
        raise SlackApiFailure("no_text")
    return {"text": text, "blocks": blocks, "attachments": attachments, "metadata": metadata}


def view_payload(params: Params, expected_type: str | None) -> dict[str, Any]:
    """The ``view`` argument, decoded and checked as Slack does."""
    try:
        view = parse_json_field(params.get("view"))
    except json.JSONDecodeError as exc:
        raise SlackApiFailure("invalid_arguments", detail="view is not valid JSON") from exc
    if view is None:
        raise SlackApiFailure("invalid_arguments", detail="view is required")
    if view_size(view) > VIEW_SIZE_MAX:
        raise SlackApiFailure("view_too_large")
    errors = view_errors(view)
    if not errors and expected_type and view.get("type") != expected_type:
        errors = [f"must be {expected_type} for this method [json-pointer:/view/type]"]
    if errors:
        raise SlackApiFailure(
            "invalid_arguments", response_metadata={"messages": as_slack_messages(errors)}
        )
    return dict(view)


def _trigger(params: Params) -> str:
    trigger_id = params.get("trigger_id") or params.get("interactivity_pointer")
    if not trigger_id:
        raise SlackApiFailure("invalid_arguments", detail="trigger_id is required")
    return str(trigger_id)


def _required(params: Params, name: str, error: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise SlackApiFailure(error)
    return str(value)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)
