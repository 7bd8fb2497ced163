"""The one place slack_sdk's Web API client is built: base URL, token, timeouts, retries."""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.settings import BotSettings

TIMEOUT_SECONDS = 10


def web_client(settings: BotSettings) -> WebClient:
    """A WebClient for ``settings`` that waits out 429s (Retry-After) and retries 5xx and resets.

    These retries happen inside one call; when they run out, the call raises and the
    RQ job that made it is retried later with backoff.
    """
    return WebClient(
        token=settings.bot_token,
        base_url=settings.api_url,
        timeout=TIMEOUT_SECONDS,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=2),
            ConnectionErrorRetryHandler(max_retry_count=2),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )
