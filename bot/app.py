"""The Bolt app: review buttons and modals, wired to the engine.

Built by :func:`build_app` from the bot's settings and an engine, never at import
time. ``process_before_response=True``: listeners finish before the HTTP answer
goes out (they only touch Redis, then ack), which keeps Bolt from polling for the
ack and lets the same app serve HTTP and Socket Mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from slack_bolt import App, BoltContext
from slack_sdk import WebClient

from bot.approvals import ApprovalsCommand, register_approvals
from bot.blocks import (
    ACTION_APPROVE,
    ACTION_DENY,
    ACTION_ESCALATE,
    ACTION_REASSIGN,
    ACTION_RESPOND,
    CALLBACK_ESCALATE,
    CALLBACK_REASSIGN,
)
from bot.directory import Directory
from bot.handlers import CALLBACK_SUBMIT, ReviewListeners
from bot.settings import BotSettings
from bot.slack import web_client
from engine.run.engine import Engine
from engine.run.gate import Gate


@dataclass(frozen=True)
class Bot:
    """The Bolt app and the ``/approvals`` command it serves (for the web's short path)."""

    app: App
    approvals: ApprovalsCommand


def build_app(settings: BotSettings, engine: Engine, *, client: WebClient | None = None,
              gate: Gate | None = None) -> App:
    """A Bolt App for ``settings`` that records decisions through ``engine`` (and reports
    on ``gate``'s policy in ``/approvals stats``)."""
    return build_bot(settings, engine, client=client, gate=gate).app


def build_bot(settings: BotSettings, engine: Engine, *, client: WebClient | None = None,
              gate: Gate | None = None) -> Bot:
    """:func:`build_app`, and the ``/approvals`` command it registered."""
    if not settings.bot_token:
        raise ValueError("SLACK_BOT_TOKEN is not set")
    if not settings.signing_secret and not settings.app_token:
        raise ValueError("SLACK_SIGNING_SECRET is not set (needed to verify Slack's requests)")
    client = client or web_client(settings, engine.store.redis)  # never waits a 429 out
    app = App(
        client=client,
        logger=_bolt_logger(),
        signing_secret=settings.signing_secret or "",
        process_before_response=True,
        # auth.test runs on the first request instead, so the web process starts even
        # while Slack is unreachable.
        token_verification_enabled=False,
        # Always on: HTTP requests must carry a valid, fresh signature (Bolt skips the
        # check only for Socket Mode, whose requests arrive over the app's own websocket).
        request_verification_enabled=True,
    )
    @app.middleware
    def one_client(context: BoltContext, next: Callable[[], None]) -> None:
        # Bolt hands each request a plain WebClient of its own: a new connection (a TLS
        # session) for every call a listener makes, and no 429 marks shared through Redis.
        # Listeners get the bot's client instead (bot.slack_http, bot.ratelimit), which is
        # safe to share between threads: nothing changes its token.
        context["client"] = client
        next()

    directory = Directory(client, engine.store, ttl=settings.cache_seconds)
    engine.people = directory  # the engine's rules on who may act ask Slack who is who
    listeners = ReviewListeners(engine, directory)
    app.action(ACTION_APPROVE)(listeners.approve)
    app.action(ACTION_DENY)(listeners.deny)
    app.action(ACTION_RESPOND)(listeners.respond)
    app.action(ACTION_ESCALATE)(listeners.escalate)
    app.view_submission(CALLBACK_SUBMIT)(listeners.submit)
    app.action(ACTION_REASSIGN)(listeners.reassign)
    app.view_submission(CALLBACK_ESCALATE)(listeners.submit_escalation)
    app.view_submission(CALLBACK_REASSIGN)(listeners.submit_reassignment)
    approvals = register_approvals(app, engine, listeners.directory, admins=settings.admins,
                                   gate=gate)
    return Bot(app, approvals)


def _bolt_logger() -> logging.Logger:
    # Bolt logs every request that fails the signature check at INFO, body included:
    # whatever anyone posts to the Request URL would land in the web process's log. Its
    # loggers copy this one's level when the App makes them (else the root's, INFO under
    # `signoff serve`), so WARNING here holds for all of them.
    logger = logging.getLogger("slack_bolt")
    logger.setLevel(logging.WARNING)
    return logger
