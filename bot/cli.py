"""The bot's ``signoff`` commands (the ``signoff.commands`` plug-in).

- ``signoff redeliver ID``: post a waiting review to Slack again (after Slack was down
  longer than the job's retries, or the message was deleted).
- ``signoff slack-socket``: serve the Slack app over Socket Mode (SLACK_APP_TOKEN), for a
  workspace that cannot reach a public Request URL; ``signoff serve`` keeps serving the
  API, and a ``signoff worker`` still posts the reviews.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from bot.settings import BotSettings
from engine.errors import SignoffError
from engine.settings import Settings

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("redeliver", help="post a waiting review to Slack again")
    p.add_argument("id", help="the execution id")
    p.set_defaults(func=cmd_redeliver)

    p = subparsers.add_parser("slack-socket",
                              help="serve the Slack app over Socket Mode (SLACK_APP_TOKEN)")
    p.set_defaults(func=cmd_slack_socket)


def cmd_redeliver(args: argparse.Namespace) -> int:
    from bot.jobs import build_bot_runtime

    bot_settings = _bot_settings()
    engine = _engine()
    review = engine.review(args.id)
    if review is None:
        raise SignoffError(f"{args.id} is not waiting for a review "
                           f"(status {engine.get(args.id).status.value})")
    connectors = Settings.from_env().connectors  # SIGNOFF_CONNECTORS: webhooks are posted again
    delivery = build_bot_runtime(bot_settings, engine, connectors=connectors).deliverer.deliver(
        args.id, review.step, again=True)
    if delivery is None:
        raise SignoffError(f"{args.id} stopped waiting while the review was being posted")
    for post in delivery.posts:
        print(f"posted review {review.step} of {args.id} to {post.channel} (ts {post.ts})")
    return 0


def cmd_slack_socket(args: argparse.Namespace) -> int:
    _socket_mode_handler(_engine()).start()
    return 0


def connect_socket_mode(*, settings: Settings, engine: Any) -> None:
    """The ``signoff.socket_mode`` plug-in: ``signoff serve --socket-mode`` connects here and
    keeps serving the API in the same process."""
    _socket_mode_handler(engine, settings.policy_path).connect()


def _socket_mode_handler(engine: Any, policy_path: str | None = None) -> Any:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.app import build_app
    from engine.definition.policy import PolicySource
    from engine.run.gate import Gate

    bot_settings = _bot_settings()
    if not bot_settings.app_token:
        raise SignoffError("SLACK_APP_TOKEN is not set: create an app-level token with the "
                           "connections:write scope (Basic Information, App-Level Tokens)")
    log.info("serving Slack over Socket Mode")
    gate = Gate(engine, PolicySource(policy_path))  # its policy ends /approvals stats
    return SocketModeHandler(build_app(bot_settings, engine, gate=gate), bot_settings.app_token)


def _bot_settings() -> BotSettings:
    settings = BotSettings.from_env()
    if not settings.bot_token:
        raise SignoffError("SLACK_BOT_TOKEN is not set")
    return settings


def _engine() -> Any:
    from engine.state.store import connect
    from engine.worker.runtime import build_runtime

    settings = Settings.from_env()
    return build_runtime(settings, connect(settings.redis_url)).engine
