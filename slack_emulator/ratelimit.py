"""Slack's rate limits: ``chat.postMessage`` per channel, and every other method's tier.

Slack documents them in its rate limits guide (https://docs.slack.dev/apis/web-api/rate-limits),
"applied on a per API method per workspace/team per app basis":

=========  ===================  ==========================================================
Tier 1     1+ per minute        "Access tier 1 methods infrequently. A small amount of
                                burst behavior is tolerated."
Tier 2     20+ per minute       "occasional bursts of more requests"
Tier 3     50+ per minute       "Sporadic bursts are welcome."
Tier 4     100+ per minute      "generous burst behavior"
Special    varies               chat.postMessage: "one message per second per channel,
                                while also maintaining a workspace-wide limit"; posting
                                messages: "1 per second", "Short bursts >1 allowed"
=========  ===================  ==========================================================

Each method's reference page names its tier (:data:`METHOD_TIERS` holds those of the
methods the emulator implements). Over a limit Slack answers HTTP 429 with a ``Retry-After``
header (whole seconds) and ``{"ok": false, "error": "ratelimited"}``; so does the emulator.

The model is a token bucket per key: per channel for ``chat.postMessage``
(:class:`PostingLimit`, :class:`ChannelBuckets`), per method for the others
(:class:`MethodLimits`, :class:`MethodBuckets`: one workspace and one app per emulator, so
the method alone is the key). A bucket holds up to ``burst`` calls and refills at ``rate``
calls a second. A call takes one token; without one it is refused with 429 and
``Retry-After`` set to the seconds until the next token, rounded up (at least 1). A refused
call takes no token and does nothing. Slack publishes no burst sizes: posting's
:data:`DEFAULT_BURST` is our choice, and a tier's burst is a minute's worth of its calls (its
windows are a minute long), so a Tier 3 method takes 50 calls at once, then one every 1.2 s.

Both are on by default at Slack's figures. ``SlackEmulator(posting_limit=PostingLimit.off(),
method_limits=MethodLimits.off())``, or ``SLACK_EMULATOR_POST_RATE=0`` and
``SLACK_EMULATOR_METHOD_LIMITS=off``, turn them off; ``SLACK_EMULATOR_METHOD_LIMITS=
chat.update=6:2,views.open=off`` sets a method's calls a minute (and burst), or frees it.

Not modelled: the workspace-wide limit on posting (Slack gives no figure); the Special tier
of ``auth.test`` and ``chat.getPermalink`` (no figure either: unlimited here);
``apps.connections.open`` (Tier 1 at Slack; Socket Mode reconnects freely here); the
``conversations.history`` / ``conversations.replies`` limits of 2025 for apps outside the
Marketplace (1 a minute); limits on response URLs and incoming webhooks (see
:mod:`slack_emulator.webhooks` for the faults those can be told to answer); Slack's limits
being higher than the tier's floor ("50+"), or varying with load; Slack sometimes dropping
messages of a burst rather than refusing them; events being dropped past 30,000 an hour;
and the app being disabled for ignoring 429s.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

DEFAULT_RATE = 1.0  # posts a second, per channel: Slack's figure
DEFAULT_BURST = 30  # posts a channel may take at once; Slack publishes no figure
RATE_ENV = "SLACK_EMULATOR_POST_RATE"  # 0 turns the limit off
BURST_ENV = "SLACK_EMULATOR_POST_BURST"
METHODS_ENV = "SLACK_EMULATOR_METHOD_LIMITS"  # off, or method=per_minute[:burst],...

# Calls a minute each tier allows at least (Slack's figures).
TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
# The tier each method's reference page names, for the methods the emulator implements
# (chat.postMessage, auth.test and chat.getPermalink are Special; apps.connections.open,
# Tier 1, is left free: see the module's docstring).
METHOD_TIERS: Mapping[str, int] = {
    "api.test": 4,
    "bots.info": 3,
    "chat.delete": 3,
    "chat.postEphemeral": 4,
    "chat.update": 3,
    "conversations.history": 3,
    "conversations.members": 4,
    "conversations.open": 3,
    "conversations.replies": 3,
    "usergroups.users.list": 2,
    "users.info": 4,
    "users.lookupByEmail": 3,
    "views.open": 4,
    "views.publish": 4,
    "views.push": 4,
    "views.update": 4,
}


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


@dataclass(frozen=True)
class MethodLimits:
    """Each limited method's ``(rate a second, burst)``; a method not named is not limited."""

    rates: Mapping[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.rates)

    @classmethod
    def slack(cls) -> MethodLimits:
        """Slack's tiers (:data:`METHOD_TIERS`), a minute's calls at once."""
        return cls({method: (TIER_PER_MINUTE[tier] / 60, TIER_PER_MINUTE[tier])
                    for method, tier in METHOD_TIERS.items()})

    @classmethod
    def off(cls) -> MethodLimits:
        return cls({})

    def per_minute(self, method: str, calls: float, burst: int | None = None) -> MethodLimits:
        """These limits with ``method`` at ``calls`` a minute, ``burst`` at once (default: a
        minute's calls, at least 1); ``calls <= 0`` frees the method."""
        rates = dict(self.rates)
        rates.pop(method, None)
        if calls > 0:
            rates[method] = (calls / 60, max(1, burst if burst is not None else int(calls)))
        return MethodLimits(rates)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MethodLimits:
        """Slack's tiers, unless ``SLACK_EMULATOR_METHOD_LIMITS`` says ``off`` (or ``0``) or
        sets some methods: ``chat.update=6:2,views.open=off`` (calls a minute[:burst])."""
        env = os.environ if env is None else env
        spec = (env.get(METHODS_ENV) or "").strip()
        if spec.lower() in ("off", "0", "none"):
            return cls.off()
        limits = cls.slack()
        for item in filter(None, (part.strip() for part in spec.split(","))):
            method, _, figure = item.partition("=")
            calls, _, burst = figure.partition(":")
            if calls.strip().lower() in ("off", "0", "none"):
                limits = limits.per_minute(method.strip(), 0)
            else:
                limits = limits.per_minute(method.strip(), float(calls),
                                           int(burst) if burst.strip() else None)
        return limits


class Buckets:
    """One token bucket per key, each at ``rate`` tokens a second up to ``burst``; thread-safe.
    ``limit_for(key)`` gives a key's ``(rate, burst)``, None for a key never limited."""

    def __init__(self, limit_for: Callable[[str], tuple[float, int] | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limit_for = limit_for
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key: (tokens, at)
        self.refused = 0  # calls answered 429 so far
        self.refused_by_key: dict[str, int] = {}

    def take(self, key: str) -> int | None:
        """Take a token for one call under ``key``: None if allowed, else the whole seconds
        to wait (``Retry-After``)."""
        limit = self._limit_for(key)
        if limit is None:
            return None
        rate, burst = limit
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            self.refused += 1
            self.refused_by_key[key] = self.refused_by_key.get(key, 0) + 1
            return max(1, math.ceil((1.0 - tokens) / rate))

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()
            self.refused = 0
            self.refused_by_key.clear()


class ChannelBuckets(Buckets):
    """``chat.postMessage``'s bucket per channel, for :class:`PostingLimit` ``limit``."""

    def __init__(self, limit: PostingLimit,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        figures = (limit.rate, limit.burst) if limit.enabled else None
        super().__init__(lambda channel: figures, clock)


class MethodBuckets(Buckets):
    """A bucket per method, for :class:`MethodLimits` ``limits``."""

    def __init__(self, limits: MethodLimits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        super().__init__(limits.rates.get, clock)
