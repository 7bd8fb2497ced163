"""The one place slack_sdk's clients are built: the Web API's (base URL, token, timeouts,
retries) and incoming webhooks'."""

from __future__ import annotations

import logging

import redis
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient

from bot.ratelimit import LimitedClient
from bot.settings import BotSettings

TIMEOUT_SECONDS = 10


def web_client(settings: BotSettings, connection: redis.Redis | None = None) -> LimitedClient:
    """A WebClient for ``settings`` that retries 5xx and resets, and never waits out a 429:
    it raises :class:`bot.ratelimit.RateLimited` (a ``SlackApiError``), marking the limit in
    ``connection``'s Redis, when given, so that no process calls under it until it is over.

    The retries happen inside one call; when they run out, the call raises and the
    RQ job that made it is retried later with backoff. A job refused by a rate limit is
    put off to when Slack allows it (:mod:`bot.ratelimit`), holding no worker meanwhile.
    """
    return LimitedClient(
        token=settings.bot_token,
        base_url=settings.api_url,
        timeout=TIMEOUT_SECONDS,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
        connection=connection,
    )


# slack_sdk's webhook client logs the URL (the webhook's credential) at DEBUG: keep its own
# logger above that whatever the process's logging says.
_WEBHOOK_LOG = logging.getLogger("bot.slack.webhook")
_WEBHOOK_LOG.setLevel(logging.WARNING)


def webhook_client(url: str) -> WebhookClient:
    """A WebhookClient for one incoming webhook that waits out 429s (Retry-After) and retries
    5xx and resets, as :func:`web_client` does."""
    return WebhookClient(
        url,
        timeout=TIMEOUT_SECONDS,
        logger=_WEBHOOK_LOG,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=2),
            ConnectionErrorRetryHandler(max_retry_count=2),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )
