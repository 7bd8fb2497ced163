"""Fixtures for the emulator's own tests.

One emulator and one stand-in app run per module (starting uvicorn costs ~0.1 s);
each test gets them reset: a fresh seeded workspace, no recorded calls or faults.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pytest
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from slack_emulator import SlackDriver, SlackEmulator
from slack_emulator.server import BackgroundServer

Answer = Callable[[dict[str, Any]], tuple[int, Any]]


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]


class StandInApp:
    """Plays the app under test: checks Slack's signature as Bolt does, records, answers."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answer: Answer = lambda payload: (200, None)
        self.verifier: SignatureVerifier | None = None
        route = Route("/slack/events", self.handle, methods=["POST"])
        self.server = BackgroundServer(Starlette(routes=[route]))

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/slack/events"

    @property
    def last(self) -> dict[str, Any]:
        return self.received[-1].payload

    def reset(self, signing_secret: str) -> None:
        self.received.clear()
        self.answer = lambda payload: (200, None)
        self.verifier = SignatureVerifier(signing_secret)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        assert self.verifier is not None
        if not self.verifier.is_valid_request(body, dict(request.headers)):
            return PlainTextResponse("invalid signature", status_code=401)
        if request.headers.get("content-type", "").startswith("application/json"):
            payload = json.loads(body)
        else:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            payload = json.loads(form["payload"]) if "payload" in form else form
        self.received.append(Received(dict(request.headers), body, payload))
        status, answer = self.answer(payload)
        if answer is None:
            return Response(status_code=status)
        if isinstance(answer, str):
            return PlainTextResponse(answer, status_code=status)
        return JSONResponse(answer, status_code=status)


@pytest.fixture(scope="module")
def running_emulator() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def running_app() -> Iterator[StandInApp]:
    app = StandInApp()
    with app.server:
        yield app


@pytest.fixture
def emulator(running_emulator: SlackEmulator) -> SlackEmulator:
    """The module's emulator with a fresh seeded workspace (``emulator.reset(ws)`` for another)."""
    running_emulator.reset()
    return running_emulator


@pytest.fixture
def slack(emulator: SlackEmulator) -> WebClient:
    """The real slack_sdk client, pointed at the emulator with the bot's token."""
    return WebClient(token=emulator.bot_token, base_url=emulator.api_url)


@pytest.fixture
def app(running_app: StandInApp, emulator: SlackEmulator) -> StandInApp:
    running_app.reset(emulator.signing_secret)
    return running_app


@pytest.fixture
def driver(emulator: SlackEmulator, app: StandInApp) -> Iterator[SlackDriver]:
    with SlackDriver(emulator, app.url) as driver:
        yield driver
