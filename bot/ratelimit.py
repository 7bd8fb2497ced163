"""Slack's posting limit, honoured without holding a worker: one channel's 429 never makes
posts to other channels wait.

Slack allows about one ``chat.postMessage`` a second per channel, short bursts aside
(https://docs.slack.dev/apis/web-api/rate-limits); past it, it answers HTTP 429 with
``Retry-After`` (seconds). The bot's shared WebClient waits a 429 out inside the call
(:func:`bot.slack.web_client`), which holds the worker and every post queued behind it. Posts
of reviews go through :class:`ChannelLimits` instead: a client that does not wait, and on a
429 the channel is marked limited in Redis until its Retry-After has passed
(``signoff:slack:ratelimited:{channel}``) and :class:`RateLimited` is raised. The post job
then queues itself again (:func:`bot.outbox.post_later`), without using up one of its
retries, for a slot of its own (:meth:`ChannelLimits.slot`): the first after the
Retry-After, the next a second (Slack's pace) after the last slot taken in that channel
(``signoff:slack:next-slot:{channel}``), so that the posts put off come back one by one
rather than all at once to be refused again. Other posts to that channel see the mark and
do the same without calling Slack. The review's run keeps waiting meanwhile: nothing is
lost, the post is late.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.web import SlackResponse

from bot import keys
from engine.errors import SignoffError

DEFAULT_WAIT = 1.0  # seconds, when a 429 carries no Retry-After
PACE = 1.0  # seconds between the slots of put-off posts to one channel: Slack's figure

# The first slot at least ``wait`` seconds from now and PACE after the last one taken:
# KEYS[1] next-slot key; ARGV wait, pace (seconds). Returns the seconds until it.
_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now + tonumber(ARGV[1]), last + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], string.format('%.6f', slot), 'PX',
           math.ceil((slot - now) * 1000) + 60000)
return string.format('%.6f', slot - now)
"""


class RateLimited(SignoffError):
    """Slack refused a post to ``channel`` for now: try again in ``retry_after`` seconds."""

    def __init__(self, channel: str, retry_after: float) -> None:
        super().__init__(f"Slack's posting limit for {channel}: retry in {retry_after:.1f} s")
        self.channel = channel
        self.retry_after = retry_after


def not_waiting(client: WebClient) -> WebClient:
    """A copy of ``client`` that does not wait out 429s (its other retries kept)."""
    quick = copy.copy(client)
    quick.retry_handlers = [h for h in client.retry_handlers
                            if not isinstance(h, RateLimitErrorRetryHandler)]
    return quick


def retry_after(response: Any) -> float:
    """The seconds a 429 ``response`` asks to wait (``Retry-After``)."""
    headers: Mapping[str, Any] = getattr(response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) else value
            try:
                return max(float(raw), 0.0)
            except (TypeError, ValueError):
                break
    return DEFAULT_WAIT


class ChannelLimits:
    """Posts messages for the bot, channel by channel, within Slack's posting limit."""

    def __init__(self, connection: redis.Redis, client: WebClient) -> None:
        self.redis = connection
        self.client = not_waiting(client)

    def slot(self, channel: str, wait: float) -> float:
        """Seconds until a slot of its own for a post to ``channel`` put off ``wait``
        seconds by Slack's limit."""
        found = self.redis.eval(_SLOT, 1, keys.next_slot(channel), str(max(0.0, wait)),
                                str(PACE))
        return float(found.decode() if isinstance(found, bytes) else found)

    def wait_for(self, channel: str) -> float:
        """Seconds until ``channel`` may be posted to again (0: now)."""
        left = self.redis.pttl(keys.rate_limited(channel))
        return left / 1000 if isinstance(left, int) and left > 0 else 0.0

    def post(self, channel: str, **kwargs: Any) -> SlackResponse:
        """``chat.postMessage`` to ``channel``; raises :class:`RateLimited` (calling Slack
        only if the channel is not known to be limited) rather than wait."""
        waiting = self.wait_for(channel)
        if waiting > 0:
            raise RateLimited(channel, waiting)
        try:
            return self.client.chat_postMessage(channel=channel, **kwargs)
        except SlackApiError as exc:
            if exc.response.status_code != 429:
                raise
            seconds = retry_after(exc.response)
            self.redis.set(keys.rate_limited(channel), "1",
                           px=max(1, math.ceil(seconds * 1000)))
            raise RateLimited(channel, seconds) from exc
