"""Incoming webhooks, as Slack answers them: ``POST /services/T…/B…/secret``.

An incoming webhook belongs to one channel (the one picked when it was made); a post
is JSON (or a form field ``payload`` holding JSON) with ``text``, ``blocks`` and/or
``attachments``, and lands in that channel as the app's message. Slack answers with a
plain-text body, not JSON: ``ok`` (200) on success, else the error code alone:

====  =========================  ===============================================
400   ``invalid_payload``        the body is not JSON (or not an object)
400   ``no_text``                no ``text``, ``blocks`` or ``attachments``
400   ``invalid_blocks``         blocks Slack's Block Kit checks refuse
400   ``too_many_attachments``   more than 100 attachments
403   ``invalid_token``          the URL's secret is not the webhook's
403   ``action_prohibited``      an admin restricts posting to the channel
404   ``no_service``             no such webhook (never made, or removed)
410   ``channel_is_archived``    the webhook's channel is archived
429   ``rate_limited``           with ``Retry-After`` (seconds): slow down
====  =========================  ===============================================

Not modelled: Slack's real rate (one message per second per webhook, with bursts) is not
enforced, only injected 429s are answered (:meth:`IncomingWebhooks.fail_next`); a
webhook's ``channel``, ``username`` and ``icon_*`` overrides are ignored as they are for
app webhooks; the rest of Slack's codes (``channel_not_found``, ``team_disabled``,
``posting_to_general_channel_denied``, ``user_not_found``, ``no_team``,
``no_service_id``) never occur; messages carry no ``subtype`` or webhook-specific
``bot_profile``; and there is no OAuth ``incoming-webhook`` install flow: tests make
webhooks with :meth:`IncomingWebhooks.add`.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from slack_emulator.errors import SlackApiFailure
from slack_emulator.web_api import message_content
from slack_emulator.workspace import Workspace

MAX_ATTACHMENTS = 100


@dataclass
class IncomingWebhook:
    """One webhook: its ``B…`` id and secret (the URL's last two parts), and its channel."""

    id: str
    secret: str
    channel: str
    prohibited: bool = False  # posting restricted by an admin: 403 action_prohibited
    posted: list[dict[str, Any]] = field(default_factory=list)  # payloads accepted


@dataclass
class _Fault:
    status: int
    error: str
    retry_after: int | None
    remaining: int


class IncomingWebhooks:
    """The webhooks of one workspace; thread-safe."""

    def __init__(self, workspace: Workspace, base_url: Callable[[], str]) -> None:
        self.workspace = workspace
        self.base_url = base_url  # the emulator's, known once it listens
        self._lock = threading.Lock()
        self._hooks: dict[str, IncomingWebhook] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._attempts: list[tuple[str, dict[str, Any]]] = []

    # -- made by the test -----------------------------------------------------

    def add(self, channel: str) -> str:
        """Make a webhook posting to ``channel`` (an id); returns its URL."""
        self.workspace.channel_name(channel)  # raises channel_not_found for no such channel
        with self._lock:
            hook = IncomingWebhook(id=f"B{secrets.token_hex(5).upper()}",
                                   secret=secrets.token_urlsafe(18), channel=channel)
            self._hooks[hook.id] = hook
            return self.url(hook)

    def url(self, hook: IncomingWebhook) -> str:
        return f"{self.base_url()}/services/{self.workspace.team.id}/{hook.id}/{hook.secret}"

    def remove(self, url: str) -> None:
        """Take the webhook away (an admin removed it): posts answer 404 ``no_service``."""
        with self._lock:
            self._hooks.pop(self._id_of(url), None)

    def prohibit(self, url: str) -> None:
        """Restrict posting to the webhook's channel: posts answer 403 ``action_prohibited``."""
        with self._lock:
            self._hooks[self._id_of(url)].prohibited = True

    def fail_next(self, url: str, *, status: int = 429, retry_after: int | None = 1,
                  count: int = 1, error: str | None = None) -> None:
        """Answer the next ``count`` posts to ``url`` with ``status`` (429: ``Retry-After``)."""
        default = {429: "rate_limited", 500: "internal_error", 503: "service_unavailable"}
        fault = _Fault(status, error or default.get(status, "internal_error"),
                       retry_after if status == 429 else None, count)
        with self._lock:
            self._faults.setdefault(self._id_of(url), []).append(fault)

    # -- read by the test -----------------------------------------------------

    def posted(self, url: str) -> list[dict[str, Any]]:
        """The payloads ``url`` accepted (answered ``ok``), oldest first."""
        with self._lock:
            hook = self._hooks.get(self._id_of(url))
            return copy.deepcopy(hook.posted) if hook else []

    def attempts(self, url: str | None = None) -> list[dict[str, Any]]:
        """Every post received (to ``url``, or to any webhook), answered ok or not."""
        with self._lock:
            wanted = self._id_of(url) if url else None
            return [copy.deepcopy(body) for hook_id, body in self._attempts
                    if wanted in (None, hook_id)]

    def reset(self, workspace: Workspace) -> None:
        with self._lock:
            self.workspace = workspace
            self._hooks.clear()
            self._faults.clear()
            self._attempts.clear()

    # -- answered to the app ----------------------------------------------------

    def answer(self, team: str, hook_id: str, secret: str, raw: bytes,
               content_type: str) -> tuple[int, str, dict[str, str]]:
        """(status, plain-text body, headers) for one POST to a webhook URL."""
        with self._lock:
            payload = _payload(raw, content_type)
            self._attempts.append((hook_id, payload if payload is not None else {}))
            fault = self._take_fault(hook_id)
            if fault is not None:
                headers = {} if fault.retry_after is None else {
                    "Retry-After": str(fault.retry_after)}
                return fault.status, fault.error, headers
            hook = self._hooks.get(hook_id)
            if hook is None or team != self.workspace.team.id:
                return 404, "no_service", {}
            if not secrets.compare_digest(secret, hook.secret):
                return 403, "invalid_token", {}
            if payload is None:
                return 400, "invalid_payload", {}
            if hook.prohibited:
                return 403, "action_prohibited", {}
            if self.workspace.is_archived(hook.channel):
                return 410, "channel_is_archived", {}
            if len(payload.get("attachments") or ()) > MAX_ATTACHMENTS:
                return 400, "too_many_attachments", {}
            try:
                content = message_content(payload)
                self.workspace.post_message(hook.channel, content,
                                            thread_ts=payload.get("thread_ts") or None)
            except SlackApiFailure as failure:
                error = {"invalid_blocks_format": "invalid_payload"}.get(failure.error,
                                                                         failure.error)
                return 400, error, {}
            hook.posted.append(payload)
            return 200, "ok", {}

    def _take_fault(self, hook_id: str) -> _Fault | None:
        faults = self._faults.get(hook_id)
        if not faults:
            return None
        fault = faults[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            faults.pop(0)
        return fault

    @staticmethod
    def _id_of(url: str) -> str:
        return url.rstrip("/").split("/")[-2]


def _payload(raw: bytes, content_type: str) -> dict[str, Any] | None:
    """The JSON object posted (as the body, or a form's ``payload`` field); None if none."""
    try:
        if "application/x-www-form-urlencoded" in content_type:
            text = dict(parse_qsl(raw.decode("utf-8"))).get("payload", "")
        else:
            text = raw.decode("utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None
