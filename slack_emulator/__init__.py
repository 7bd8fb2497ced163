"""A Slack emulator for developing and testing Signoff without slack.com.

- ``workspace``: the in-memory :class:`Workspace` (people in ``directory``, modals and
  Home tabs in ``views``), with :func:`default_workspace` seeding alice, bob, carol,
  dave, two user groups and #reviews.
- ``server``: :class:`SlackEmulator` serves Slack's Web API (``web_api``, Block Kit
  checks in ``blockkit``) and response URLs on loopback, with fault injection and Slack's
  rate limits (``ratelimit``: :class:`PostingLimit` per channel, :class:`MethodLimits`, the
  other methods' tiers; 429 and Retry-After).
- ``webhooks``: :class:`IncomingWebhooks`, Slack's incoming webhooks (``emulator.webhooks``):
  per-channel URLs, plain-text answers and errors, what each one was posted.
- ``socket_mode``: :class:`SocketModeServer`, Slack's Socket Mode websocket behind
  ``apps.connections.open`` (``emulator.socket_mode``): hello, envelopes, acks, disconnects.
- ``driver``: :class:`SlackDriver` acts as the users, sending the app signed
  ``block_actions``, ``view_submission``, slash command and event requests (or, with
  ``socket_mode=True``, the same payloads in envelopes over the app's websocket).

Not production code: nothing under ``engine/`` or ``bot/`` imports it.
"""

from __future__ import annotations

from slack_emulator.directory import AppInstallation, Team, User, UserGroup
from slack_emulator.driver import AppResponse, SlackDriver, Tamper
from slack_emulator.errors import DriverError, EmulatorError, EmulatorStartError, SlackApiFailure
from slack_emulator.ratelimit import MethodLimits, PostingLimit
from slack_emulator.server import SlackEmulator
from slack_emulator.socket_mode import Ack, AckOutcome, SocketConnection, SocketModeServer
from slack_emulator.views import Views
from slack_emulator.webhooks import IncomingWebhook, IncomingWebhooks
from slack_emulator.workspace import MessageRef, Workspace, default_workspace

__all__ = [
    "Ack",
    "AckOutcome",
    "AppInstallation",
    "AppResponse",
    "DriverError",
    "EmulatorError",
    "EmulatorStartError",
    "IncomingWebhook",
    "IncomingWebhooks",
    "MessageRef",
    "MethodLimits",
    "PostingLimit",
    "SlackApiFailure",
    "SlackDriver",
    "SlackEmulator",
    "SocketConnection",
    "SocketModeServer",
    "Tamper",
    "Team",
    "User",
    "UserGroup",
    "Views",
    "Workspace",
    "default_workspace",
]
