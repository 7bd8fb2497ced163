"""Slack's Request URL, ``POST /slack/events``, mounted in the engine's web app.

Bolt's Starlette adapter calls the sync App on the event loop, which would stall
every other request while one is handled; here the App runs in Starlette's thread
pool instead, with the adapter's own request and response conversions.

The one request that comes in bursts, a one-click Approve or Deny, takes a short
path: its signature is checked with slack_sdk's verifier, the decision is handed to a
worker through the engine's inbox (one Redis round trip; as the Bolt listener would
hand it), and Slack gets its 200 at once (with ``SIGNOFF_ACK_REPLICAS``, once that many
replicas have it too: a Redis WAIT, see :class:`engine.state.inbox.AsyncInbox`).

``/approvals`` takes a short path too (:class:`CommandPath`): its signature is checked
the same way (the signed form is the only word on who is asking), the form is read, and
the command's own listener builds the answer, on a small thread pool of its own. Bolt's
dispatch (its middleware chain, matching every listener, building each one's arguments)
cost about 0.3 ms of the web process's CPU per command, more than the whole of a
``/approvals help``. The answer is the one Bolt's ``ack`` sends.

Everything else, and anything a short path does not recognise (a forged, stale or
unsigned request among them), goes to Bolt, which refuses what is not signed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import orjson
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_sdk.signature import SignatureVerifier
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bot.app import build_bot
from bot.approvals import COMMAND, ApprovalsCommand
from bot.handlers import CLICK_LOST, DECIDE_CLICK, Reviewer, click_reads, one_click_decision
from bot.settings import BotSettings
from engine.api import WebExtension
from engine.definition.policy import PolicySource
from engine.run.engine import Engine
from engine.run.gate import Gate
from engine.state.inbox import AsyncInbox
from engine.state.store import connect_async
from engine.worker.scheduler import RQScheduler

log = logging.getLogger(__name__)

MAX_BODY = 1_048_576  # 1 MiB; Slack's requests are a few KB
PATH = "/slack/events"
# Threads answering /approvals: each listing waits on Redis three times, so two overlap
# those waits; more contend for the GIL (benchmarks/approvals.py, 2,000 reviews: about 470
# commands a second with one or two threads, 250 with four).
COMMAND_THREADS = 2


def extension(settings: Any = None, engine: Engine | None = None, *,
              bot_settings: BotSettings | None = None) -> WebExtension:
    """The ``signoff.web`` plug-in: /slack/events when SLACK_SIGNING_SECRET is set, else nothing."""
    bot_settings = bot_settings or BotSettings.from_env()
    if not bot_settings.signing_secret or not bot_settings.bot_token or engine is None:
        return WebExtension()
    # The gate's policy, for /approvals stats (its own reader: files are read again on change).
    policy = PolicySource(getattr(settings, "policy_path", None))
    bot = build_bot(bot_settings, engine, gate=Gate(engine, policy))
    app = bot.app
    commands = CommandPath(bot_settings.signing_secret, bot.approvals)

    async def warm() -> None:  # before the process answers (each of serve --processes N)
        await asyncio.to_thread(bot.approvals.overview.warm)

    # What the process holds once started (the app, Bolt, the SDK: some 100,000 objects)
    # is left out of the garbage collector's full passes from now on: each pass walks
    # only what came after (the listings' kept rows among it). At 100,000 reviews a pass
    # over everything paused the process for up to 95 ms, with 32 commands waiting.
    gc.collect()
    gc.freeze()
    url = getattr(settings, "redis_url", None)
    if not (url and isinstance(engine.scheduler, RQScheduler)):  # clicks go in from a thread
        clicks = OneClickPath(bot_settings.signing_secret, engine)
        return WebExtension([Route(PATH, events_endpoint(app, clicks, commands),
                                   methods=["POST"])], on_shutdown=[commands.close],
                            on_startup=[warm])
    connection = connect_async(url)
    inbox = engine.scheduler.async_inbox(connection)
    replicas = getattr(settings, "ack_replicas", 0)
    if replicas:  # SIGNOFF_ACK_REPLICAS: a click is acked once that many replicas have it
        inbox.wait_for_replicas(replicas, settings.ack_timeout_ms)
    clicks = OneClickPath(bot_settings.signing_secret, engine, inbox)
    return WebExtension([Route(PATH, events_endpoint(app, clicks, commands), methods=["POST"])],
                        on_shutdown=[inbox.settle, connection.aclose, commands.close],
                        on_startup=[warm])


class OneClickPath:
    """Recognise a signed one-click decision and hand it in; anything else is Bolt's."""

    FUNCTION = DECIDE_CLICK

    def __init__(self, signing_secret: str, engine: Engine,
                 inbox: AsyncInbox | None = None) -> None:
        self.verifier = SignatureVerifier(signing_secret)
        self.engine = engine
        self.inbox = inbox

    def recognise(self, body: bytes, timestamp: str, signature: str
                  ) -> tuple[tuple[Any, ...], tuple[tuple[str, str], ...]] | None:
        """The arguments of ``decide_click`` when ``body`` is a signed one-click decision,
        and what its worker reads first (:func:`bot.handlers.click_reads`)."""
        if not (body.startswith(b"payload=") and timestamp.isdigit() and signature
                and self.verifier.is_valid(body, timestamp, signature)):
            return None  # Bolt answers forged, stale and unsigned requests with its 401
        try:
            payload = json.loads(form_value(body[len(b"payload="):]))
        except (UnicodeDecodeError, ValueError):
            return None
        found = one_click_decision(payload) if isinstance(payload, dict) else None
        if found is None:
            return None
        ref, approved = found
        reviewer = Reviewer.from_body(payload)
        # The button's own value: ReviewRef.decode just accepted it, no need to re-encode.
        return ((reviewer.to_json(), payload["actions"][0]["value"], approved),
                click_reads(ref, reviewer.user_id))

    def handle(self, body: bytes, timestamp: str, signature: str) -> bool:
        """From a thread: hand in the decision if it is one (True), else False."""
        recognised = self.recognise(body, timestamp, signature)
        if recognised is None:
            return False
        args, reads = recognised
        self.engine.scheduler.hand_in(self.FUNCTION, *args, on_failure=CLICK_LOST, first=True,
                                      reads=reads)
        return True

    async def handle_async(self, body: bytes, timestamp: str, signature: str) -> bool:
        """On the event loop: the same, many clicks to a Redis round trip."""
        if self.inbox is None:
            return await run_in_threadpool(self.handle, body, timestamp, signature)
        recognised = self.recognise(body, timestamp, signature)  # ~60 us of CPU, no I/O
        if recognised is None:
            return False
        args, reads = recognised
        await self.inbox.put(self.FUNCTION, *args, on_failure=CLICK_LOST, reads=reads)
        return True


class CommandPath:
    """Recognise a signed ``/approvals`` and answer it as its Bolt listener would; anything
    else is Bolt's."""

    MARK = b"command=%2Fapprovals"  # how the form spells it; checked again once parsed

    def __init__(self, signing_secret: str, command: ApprovalsCommand,
                 threads: int = COMMAND_THREADS) -> None:
        self.verifier = SignatureVerifier(signing_secret)
        self.command = command
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="approvals")

    def recognise(self, body: bytes, timestamp: str, signature: str) -> tuple[str, str] | None:
        """Who asks and what (``user_id``, ``text``) when ``body`` is a signed ``/approvals``."""
        if not (self.MARK in body and timestamp.isdigit() and signature
                and self.verifier.is_valid(body, timestamp, signature)):
            return None  # Bolt answers forged, stale and unsigned requests with its 401
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))  # as Bolt
        except (UnicodeDecodeError, ValueError):
            return None
        if form.get("command") != COMMAND or "ssl_check" in form or "payload" in form:
            return None
        return form.get("user_id") or "", form.get("text") or ""

    def answer(self, user_id: str, text: str) -> Response:
        """From a thread: the command's answer; a failure (Redis unreachable) is a 500,
        logged, as Bolt answers a listener that raised."""
        try:
            body = self.command.ack_body(user_id, text)
        except Exception:
            log.exception("/approvals failed")
            return Response(status_code=500)
        return Response(encode_json(body), media_type="application/json;charset=utf-8")

    async def handle_async(self, body: bytes, timestamp: str,
                           signature: str) -> Response | None:
        """On the event loop: the answer if it is an ``/approvals`` (computed on one of the
        path's threads), else None."""
        asked = self.recognise(body, timestamp, signature)
        if asked is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._threads, self.answer,
                                                                *asked)

    async def close(self) -> None:
        self._threads.shutdown(wait=False)


def encode_json(body: Any) -> bytes:
    """``body`` as JSON: orjson (a third of json's time for a page of reviews), or json
    for what orjson refuses (a lone surrogate in a text, which json escapes)."""
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(body).encode()


def form_value(encoded: bytes) -> str:
    """``urllib.parse.unquote_plus`` of a form value, eight times faster.

    A click's payload is 4-5 KB of JSON with a %-escape every few bytes, and the
    stdlib decodes it in Python, one escape at a time (~160 us, most of the short
    path's CPU). Here C does it: each %XX becomes a \\xXX escape for the
    ``unicode_escape`` codec (backslashes escaped first), which yields the bytes as
    Latin-1 code points, then the UTF-8 is decoded. Malformed input falls back to the
    stdlib (UTF-8 that is not, a % without two hex digits after it).
    """
    try:
        escaped = encoded.replace(b"\\", b"\\\\").replace(b"+", b" ").replace(b"%", b"\\x")
        return escaped.decode("unicode_escape").encode("latin-1").decode("utf-8")
    except UnicodeError:
        return unquote_plus(encoded.decode("utf-8", "replace"))


async def capped_body(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The body, or None when it is over ``limit`` bytes: refused on its Content-Length
    before a byte of it is read, or as soon as a streamed (chunked) one passes the limit.

    This runs before the signature check, which needs the whole body: anyone may send an
    unsigned request, so an unsigned body must never be held in full. Slack's payloads
    are a few KB; a modal submission with every field filled stays far under 1 MiB.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def events_endpoint(app: App, clicks: OneClickPath | None = None,
                    commands: CommandPath | None = None) -> Any:
    """An async Starlette endpoint that hands each request to ``app`` on a worker thread,
    but for what the short paths take (one-click decisions, ``/approvals``)."""

    async def events(request: Request) -> Response:
        body = await capped_body(request)
        if body is None:
            return PlainTextResponse("request body too large", status_code=413)
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if clicks is not None and await clicks.handle_async(body, timestamp, signature):
            return Response(status_code=200)
        if commands is not None:
            answered = await commands.handle_async(body, timestamp, signature)
            if answered is not None:
                return answered
        response = await run_in_threadpool(app.dispatch, to_bolt_request(request, body))
        return to_starlette_response(response)

    return events
