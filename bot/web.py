"""Slack's Request URL, ``POST /slack/events``, mounted in the engine's web app.

Bolt's Starlette adapter calls the sync App on the event loop, which would stall
every other request while one is handled; here the App runs in Starlette's thread
pool instead, with the adapter's own request and response conversions.

The one request that comes in bursts, a one-click Approve or Deny, takes a short
path: its signature is checked with slack_sdk's verifier, the decision is queued for
a worker (as the Bolt listener would queue it), and Slack gets its 200 at once.
Everything else, and anything the short path does not recognise, goes to Bolt.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_sdk.signature import SignatureVerifier
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from bot.app import build_app
from bot.handlers import hand_to_worker, one_click_decision
from bot.settings import BotSettings
from engine.service import Engine

MAX_BODY = 1_048_576
PATH = "/slack/events"


def routes(settings: Any = None, engine: Engine | None = None, *,
           bot_settings: BotSettings | None = None) -> list[BaseRoute]:
    """The ``signoff.web`` plug-in: /slack/events when SLACK_SIGNING_SECRET is set, else nothing."""
    bot_settings = bot_settings or BotSettings.from_env()
    if not bot_settings.signing_secret or not bot_settings.bot_token or engine is None:
        return []
    app = build_app(bot_settings, engine)
    clicks = OneClickPath(bot_settings.signing_secret, engine)
    return [Route(PATH, events_endpoint(app, clicks), methods=["POST"])]


class OneClickPath:
    """Recognise a signed one-click decision and queue it; None means "ask Bolt"."""

    def __init__(self, signing_secret: str, engine: Engine) -> None:
        self.verifier = SignatureVerifier(signing_secret)
        self.engine = engine

    def handle(self, body: bytes, timestamp: str, signature: str) -> bool:
        if not (body.startswith(b"payload=") and timestamp.isdigit() and signature
                and self.verifier.is_valid(body, timestamp, signature)):
            return False  # Bolt answers forged, stale and unsigned requests with its 401
        try:
            payload = json.loads(unquote_plus(body[len(b"payload="):].decode()))
        except (UnicodeDecodeError, ValueError):
            return False
        found = one_click_decision(payload) if isinstance(payload, dict) else None
        if found is None:
            return False
        ref, approved = found
        hand_to_worker(self.engine, payload, ref, approved=approved)
        return True


def events_endpoint(app: App, clicks: OneClickPath | None = None) -> Any:
    """An async Starlette endpoint that hands each request to ``app`` on a worker thread."""

    async def events(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return PlainTextResponse("request body too large", status_code=413)
        if clicks is not None and await run_in_threadpool(
                clicks.handle, body, request.headers.get("x-slack-request-timestamp", ""),
                request.headers.get("x-slack-signature", "")):
            return Response(status_code=200)
        response = await run_in_threadpool(app.dispatch, to_bolt_request(request, body))
        return to_starlette_response(response)

    return events
