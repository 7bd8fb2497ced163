"""Slack's Request URL, ``POST /slack/events``, mounted in the engine's web app.

Bolt's Starlette adapter calls the sync App on the event loop, which would stall
every other request while one is handled; here the App runs in Starlette's thread
pool instead, with the adapter's own request and response conversions.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from bot.app import build_app
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
    return [Route(PATH, events_endpoint(build_app(bot_settings, engine)), methods=["POST"])]


def events_endpoint(app: App) -> Any:
    """An async Starlette endpoint that hands each request to ``app`` on a worker thread."""

    async def events(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return PlainTextResponse("request body too large", status_code=413)
        response = await run_in_threadpool(app.dispatch, to_bolt_request(request, body))
        return to_starlette_response(response)

    return events
