"""Slack's rate limits, honoured without holding a worker: a 429 never makes a worker sleep,
and one limit never holds up calls under another.

Slack limits each Web API method per workspace and app, by tier (Tier 2: 20 calls a minute,
Tier 3: 50, Tier 4: 100), and ``chat.postMessage`` to about one a second per channel, short
bursts aside (https://docs.slack.dev/apis/web-api/rate-limits); past a limit it answers HTTP
429 with ``Retry-After`` (seconds). A *scope* names one limit: the channel for
``chat.postMessage`` (a review's post, a thread note, a DM), else the method
(``chat.update``, ``conversations.open``, ``views.open``...).

The bot's WebClient (:class:`LimitedClient`, built by :func:`bot.slack.web_client`) does
not wait a 429 out: it marks the scope limited in Redis until its Retry-After has passed
(``signoff:slack:ratelimited:{scope}``) and raises :class:`RateLimited`; a call under a
scope so marked raises it at once, without calling Slack. :class:`RateLimited` is a
:class:`~slack_sdk.errors.SlackApiError` (a 429 answering ``ratelimited``), so code that
falls back on a failed call (a name shown as its id, a permalink left out) does the same.

A background job that meets it (:func:`bot.outbox.put_off_when_limited`: posting a review,
rewriting its messages, thread notes, reminders and escalation DMs, digests, ephemeral
replies) queues itself again through RQ's scheduler, its retries untouched, for a slot of
its own (:func:`slot`): the first after the Retry-After, the next :func:`pace` seconds
(Slack's pace for the scope: a second per channel, 1.2 s for a Tier 3 method) after the last
slot taken under that scope (``signoff:slack:next-slot:{scope}``), so that calls put off
come back one by one, in the order they were put off, rather than all at once to be refused
again. The jobs keep what they did on the delivery record and render messages as they stand
when they run, so a job run again posts nothing twice, and the last rewrite of a message
shows the review as it is (a closed review's rewrite is never undone: a change's job finds
it closed and does nothing). The run keeps waiting meanwhile: nothing is lost, it is late.

Calls made while Slack waits for an answer (``views.open`` in a click's listener, which
has 3 seconds and a trigger that expires with them) cannot be put off: the listener tells
the clicker Slack is busy and when to try again (:func:`limited_for`,
:func:`bot.texts.slack_busy`). Bolt gives listeners a client of its own per request, with
this one's retry handlers, so they see a plain 429 :class:`SlackApiError` without waiting.
Incoming webhooks still wait a 429 out (:func:`bot.slack.webhook_client`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.request import Request

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.web import SlackResponse

from bot import keys
from bot.slack_http import EffectiveLevel, KeptConnections
from engine.errors import SignoffError
from engine.state.batch import Batch

DEFAULT_WAIT = 1.0  # seconds, when a 429 carries no Retry-After
ASKED_FOR = 1.0  # seconds an answer of LimitedClient.ask_later holds for the call it was for
POST_MESSAGE = "chat.postMessage"
PACE = 1.0  # seconds between slots under one scope: a channel's posts, unknown methods
# Slack's pace for the methods the bot calls: 60 s over the calls a minute of their tier.
PACES: Mapping[str, float] = {
    "chat.update": 60 / 50, "chat.delete": 60 / 50, "conversations.open": 60 / 50,
    "users.lookupByEmail": 60 / 50, "bots.info": 60 / 50, "conversations.history": 60 / 50,
    "chat.postEphemeral": 60 / 100, "users.info": 60 / 100, "conversations.members": 60 / 100,
    "views.open": 60 / 100, "views.update": 60 / 100, "views.publish": 60 / 100,
    "usergroups.users.list": 60 / 20,
}

# The first slot at least ``wait`` seconds from now and ``pace`` after the last one taken:
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


class RateLimited(SignoffError, SlackApiError):
    """Slack refused a call under ``scope`` (a channel, or a method) for now: try again in
    ``retry_after`` seconds. ``response``: Slack's 429, or one standing for it when the call
    was not made (the scope was known to be limited)."""

    def __init__(self, scope: str, retry_after: float, *, method: str = POST_MESSAGE,
                 response: SlackResponse | None = None) -> None:
        self.scope = scope
        self.retry_after = retry_after
        self.method = method
        SlackApiError.__init__(self, f"Slack's rate limit for {scope}: retry in "
                                     f"{retry_after:.1f} s",
                               response or _standing_429(method, retry_after))

    @property
    def channel(self) -> str:
        """The scope, which is the channel for ``chat.postMessage``."""
        return self.scope


def _standing_429(method: str, seconds: float) -> SlackResponse:
    return SlackResponse(client=None, http_verb="POST", api_url=method, req_args={},
                         data={"ok": False, "error": "ratelimited"},
                         headers={"Retry-After": str(max(1, math.ceil(seconds)))},
                         status_code=429)


def scope_of(method: str, arguments: Mapping[str, Any] | None) -> str:
    """The limit a call of ``method`` with ``arguments`` falls under."""
    if method == POST_MESSAGE and arguments and arguments.get("channel"):
        return str(arguments["channel"])
    return method


def pace(scope: str) -> float:
    """Seconds between the slots of calls put off under ``scope``."""
    return PACES.get(scope, PACE)


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


def limited_for(exc: SlackApiError) -> float | None:
    """The seconds to wait when ``exc`` is Slack's 429 (its Retry-After), else None."""
    if isinstance(exc, RateLimited):
        return exc.retry_after
    if getattr(exc.response, "status_code", None) == 429:
        return retry_after(exc.response)
    return None


def limited_left(connection: redis.Redis, scope: str) -> float:
    """Seconds until ``scope`` may be called again (0: now)."""
    left = connection.pttl(keys.rate_limited(scope))
    return left / 1000 if isinstance(left, int) and left > 0 else 0.0


def mark_limited(connection: redis.Redis, scope: str, seconds: float) -> None:
    connection.set(keys.rate_limited(scope), "1", px=max(1, math.ceil(seconds * 1000)))


def slot(connection: redis.Redis, scope: str, wait: float) -> float:
    """Seconds until a slot of its own for a call under ``scope`` put off ``wait`` seconds
    by Slack's limit."""
    found = connection.eval(_SLOT, 1, keys.next_slot(scope), str(max(0.0, wait)),
                            str(pace(scope)))
    return float(found.decode() if isinstance(found, bytes) else found)


class LimitedClient(WebClient):
    """A WebClient that raises :class:`RateLimited` rather than wait out a 429, and does not
    call Slack under a scope ``connection`` knows to be limited (None: no shared marks)."""

    def __init__(self, *, connection: redis.Redis | None = None,
                 logger: logging.Logger | None = None, **kwargs: Any) -> None:
        logger = logger or logging.getLogger("slack_sdk.web.base_client")  # slack_sdk's own
        if not isinstance(logger, EffectiveLevel):
            logger = cast(logging.Logger, EffectiveLevel(logger))
        super().__init__(logger=logger, **kwargs)
        self.retry_handlers = [h for h in self.retry_handlers
                               if not isinstance(h, RateLimitErrorRetryHandler)]
        self.connection = connection
        self._asked = threading.local()  # .scope: (scope found free by ask_later, until)
        self.kept = KeptConnections()  # Slack's connections, kept open between calls

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        """slack_sdk's one HTTP request, on a kept connection (bot.slack_http); through a
        proxy, slack_sdk's own."""
        if self.proxy is not None or not url.lower().startswith(("http://", "https://")):
            return super()._perform_urllib_http_request_internal(url, req)
        return self.kept.perform(url, req, timeout=self.timeout, context=self.ssl)

    def ask_later(self, batch: Batch, api_method: str,
                  arguments: Mapping[str, Any] | None = None
                  ) -> Callable[[Sequence[Any]], Callable[[], None]]:
        """Ask in ``batch`` (another owner's round trip) whether a call of ``api_method``
        with ``arguments`` is limited; the answer is applied later, by the call it is for
        (which may come after other work): the reader gives what applies it then, which
        raises :class:`RateLimited` for what is left of a limit, and otherwise spares this
        thread's next call under that scope its own ask. Past :data:`ASKED_FOR` since the
        answer came, the call asks again."""
        if self.connection is None or batch.client is not self.connection:
            return lambda replies: lambda: None  # no shared marks, or another Redis: it asks
        scope = scope_of(api_method, arguments)
        at = len(batch)
        batch.pipe.pttl(keys.rate_limited(scope))

        def read(replies: Sequence[Any]) -> Callable[[], None]:
            left, answered = replies[at], time.monotonic()

            def apply() -> None:
                waited = time.monotonic() - answered
                if isinstance(left, int) and left > 0:
                    if left / 1000 > waited:
                        raise RateLimited(scope, left / 1000 - waited, method=api_method)
                elif waited < ASKED_FOR:
                    self._asked.scope = (scope, answered + ASKED_FOR)

            return apply

        return read

    def api_call(self, api_method: str, **kwargs: Any) -> SlackResponse:  # type: ignore[override]
        scope = scope_of(api_method, kwargs.get("json") or kwargs.get("params")
                         or kwargs.get("data"))
        asked, self._asked.scope = getattr(self._asked, "scope", None), None
        if self.connection is not None and not (
                asked is not None and asked[0] == scope and time.monotonic() < asked[1]):
            waiting = limited_left(self.connection, scope)
            if waiting > 0:
                raise RateLimited(scope, waiting, method=api_method)
        try:
            return super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            if isinstance(exc, RateLimited) or exc.response.status_code != 429:
                raise
            seconds = retry_after(exc.response)
            if self.connection is not None:
                mark_limited(self.connection, scope, seconds)
            raise RateLimited(scope, seconds, method=api_method,
                              response=exc.response) from exc


def limited(client: WebClient, connection: redis.Redis) -> LimitedClient:
    """``client`` as a :class:`LimitedClient` sharing marks through ``connection`` (itself
    when it is one already), its other retries kept."""
    if isinstance(client, LimitedClient) and client.connection is connection:
        return client
    quick = LimitedClient(token=client.token, base_url=client.base_url,
                          timeout=client.timeout, ssl=client.ssl, proxy=client.proxy,
                          headers=client.headers, logger=client.logger,
                          retry_handlers=list(client.retry_handlers), connection=connection)
    quick.default_params = dict(client.default_params)  # the team_id, if any
    return quick


class ChannelLimits:
    """Posts messages for the bot, channel by channel, within Slack's posting limit."""

    def __init__(self, connection: redis.Redis, client: WebClient) -> None:
        self.redis = connection
        self.client = limited(client, connection)

    def slot(self, channel: str, wait: float) -> float:
        """Seconds until a slot of its own for a post to ``channel`` (or a call under any
        scope) put off ``wait`` seconds by Slack's limit."""
        return slot(self.redis, channel, wait)

    def wait_for(self, channel: str) -> float:
        """Seconds until ``channel`` may be posted to again (0: now)."""
        return limited_left(self.redis, channel)

    def post(self, channel: str, **kwargs: Any) -> SlackResponse:
        """``chat.postMessage`` to ``channel``; raises :class:`RateLimited` (calling Slack
        only if the channel is not known to be limited) rather than wait."""
        return self.client.chat_postMessage(channel=channel, **kwargs)
