"""Slack's posting limit: about one ``chat.postMessage`` per second per channel, short bursts
allowed.

Slack documents it in its rate limits guide (https://docs.slack.dev/apis/web-api/rate-limits):
the Special Tier note says chat.postMessage "generally allows posting one message per second
per channel, while also maintaining a workspace-wide limit", and the row for posting messages
reads "1 per second", "Short bursts >1 allowed". Over a limit Slack answers HTTP 429 with a
``Retry-After`` header (whole seconds) and ``{"ok": false, "error": "ratelimited"}``.

The model here is a token bucket per channel: it holds up to ``burst`` posts and refills at
``rate`` posts a second. A post takes one token; without one, the call is refused with 429
and ``Retry-After`` set to the seconds until the next token, rounded up (at least 1). A
refused call takes no token and posts nothing. Slack does not publish its burst size;
:data:`DEFAULT_BURST` is our choice.

Not modelled: the workspace-wide limit on posting (Slack gives no figure),
the tiers of other methods (``chat.update`` is Tier 3 at Slack, unlimited here), the limits
on ``chat.postEphemeral``, response URLs and incoming webhooks, Slack sometimes dropping
messages of a burst rather than refusing them, and the app being disabled for ignoring
429s.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_RATE = 1.0  # posts a second, per channel: Slack's figure
DEFAULT_BURST = 30  # posts a channel may take at once; Slack publishes no figure
RATE_ENV = "SLACK_EMULATOR_POST_RATE"  # 0 turns the limit off
BURST_ENV = "SLACK_EMULATOR_POST_BURST"


@dataclass(frozen=True)
class PostingLimit:
    """``rate`` posts a second per channel, up to ``burst`` at once; ``rate <= 0``: no limit."""

    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    @classmethod
    def off(cls) -> PostingLimit:
        return cls(rate=0.0, burst=0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PostingLimit:
        """Slack's figures unless ``SLACK_EMULATOR_POST_RATE`` / ``_BURST`` say otherwise."""
        env = os.environ if env is None else env
        return cls(rate=float(env.get(RATE_ENV) or DEFAULT_RATE),
                   burst=int(env.get(BURST_ENV) or DEFAULT_BURST))


class ChannelBuckets:
    """One token bucket per channel, for :class:`PostingLimit` ``limit``; thread-safe."""

    def __init__(self, limit: PostingLimit,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # channel: (tokens, at)
        self.refused = 0  # calls answered 429 so far

    def take(self, channel: str) -> int | None:
        """Take a token for one post to ``channel``: None if allowed, else the whole seconds
        to wait (``Retry-After``)."""
        if not self.limit.enabled:
            return None
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(channel, (float(self.limit.burst), now))
            tokens = min(float(self.limit.burst), tokens + (now - at) * self.limit.rate)
            if tokens >= 1.0:
                self._buckets[channel] = (tokens - 1.0, now)
                return None
            self._buckets[channel] = (tokens, now)
            self.refused += 1
            return max(1, math.ceil((1.0 - tokens) / self.limit.rate))

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()
            self.refused = 0
