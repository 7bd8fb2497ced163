"""The emulator's HTTP face: OpenAI's chat-completions API on a loopback port.

:class:`OpenAIEmulator` serves a Starlette app with uvicorn in a background thread (the
Slack emulator's :class:`~slack_emulator.server.BackgroundServer`), so a client talks to
it over real HTTP exactly as to ``https://api.openai.com/v1``:

- ``POST /v1/chat/completions``: the next answer queued for the request's model
  (:meth:`OpenAIEmulator.answer`, verbatim, malformed ones included), else one that
  satisfies the request's ``response_format`` json_schema (or a sentence for text).
- ``GET /v1/models``: the models it serves (``{object: "list", data: [...]}``).
- Azure OpenAI's deployment URLs: ``POST /openai/deployments/{name}/chat/completions``
  and ``GET /openai/models``, which take the key in the ``api-key`` header and need the
  ``api-version`` query (the deployment's name is the model).

Errors come in OpenAI's shape ``{error: {message, type, param, code}}``: 401
``invalid_api_key`` for a missing or wrong key, 404 ``model_not_found``, 400
``invalid_request_error`` for a malformed request or a json_schema that strict mode
refuses (every object closed with ``additionalProperties: false``, every property
required, an object at the root), and whatever :meth:`OpenAIEmulator.fail` tells it:
429 ``rate_limit_exceeded`` with ``Retry-After``, 500/502/503. Every request is recorded
(:attr:`OpenAIEmulator.requests`), headers included, for tests to read;
:meth:`OpenAIEmulator.delay` holds answers back, for a client's timeout.

What it deliberately does not model: streaming (``stream: true`` is refused with a 400),
tools and function calling, ``n`` > 1, logprobs, images and audio, the Responses,
Assistants, embeddings and files APIs, real token counting (usage is about four
characters a token), rate-limit headers other than ``Retry-After``, organizations and
projects (``OpenAI-Organization`` is recorded, not checked), and content filtering
(``finish_reason: content_filter`` and refusals come only when a test scripts them).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from openai_emulator.completions import (
    ApiError,
    CannedAnswer,
    check_request,
    completion,
    default_answer,
    invalid,
)
from slack_emulator.server import BackgroundServer, ServedInBackground

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o")
DEFAULT_KEY = "sk-emulator-0123456789abcdef"
_SERVER_ERRORS = {
    429: ("Rate limit reached for requests. Please try again later.", "requests",
          "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!",
          "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error",
          None),
}


@dataclass(frozen=True)
class Recorded:
    """One request as the emulator received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    remaining: int


class OpenAIEmulator(ServedInBackground):
    """A fake OpenAI-compatible API for a set of models, served on ``127.0.0.1``."""

    def __init__(self, *, models: tuple[str, ...] = DEFAULT_MODELS, api_key: str = DEFAULT_KEY,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.models = tuple(models)
        self.api_key = api_key
        self._lock = threading.Lock()
        self._answers: dict[str, deque[CannedAnswer]] = {}
        self._faults: deque[_Fault] = deque()
        self._delays: deque[float] = deque()
        self._generation = 0  # counts resets, so a held request does not outlive one
        self.requests: list[Recorded] = []
        self._server = BackgroundServer(Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/openai/deployments/{deployment}/chat/completions", self._azure_chat,
                  methods=["POST"]),
            Route("/openai/models", self._azure_models, methods=["GET"]),
        ]), host=host, port=port)

    def __repr__(self) -> str:
        state = f"listening on {self.base_url}" if self._server.running else "stopped"
        return f"<OpenAIEmulator models={list(self.models)} {state}>"

    @property
    def base_url(self) -> str:
        """What a client takes as its base URL: ``http://127.0.0.1:PORT/v1``."""
        return f"{self._server.base_url}/v1"

    @property
    def root_url(self) -> str:
        return self._server.base_url

    # -- lifecycle -----------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (``python -m openai_emulator``)."""
        self._server.serve_forever()

    def reset(self) -> None:
        """Forget queued answers, pending faults and recorded requests."""
        with self._lock:
            self._answers.clear()
            self._faults.clear()
            self._delays.clear()
            self._generation += 1
            self.requests.clear()

    # -- scripting -----------------------------------------------------------

    def answer(self, content: Any, *, model: str | None = None, finish_reason: str = "stop",
               refusal: str | None = None) -> None:
        """Queue the next answer for ``model`` (the first served, by default): ``content``
        as the message's text (a mapping or list as its JSON), sent as it is, so a test can
        script a malformed one; ``refusal`` makes it a refusal (content null)."""
        with self._lock:
            self._answers.setdefault(model or self.models[0], deque()).append(
                CannedAnswer(content, finish_reason, refusal))

    def fail(self, status: int, *, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next ``times`` completion requests with ``status`` (429: with
        ``Retry-After``, one second unless given) in OpenAI's error shape."""
        if status not in _SERVER_ERRORS:
            raise ValueError(f"the emulator fails with one of {sorted(_SERVER_ERRORS)}")
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._faults.append(_Fault(status, retry_after, times))

    def delay(self, seconds: float, *, times: int = 1) -> None:
        """Hold the next ``times`` completion requests ``seconds`` before answering (a slow
        model, for a client's timeout)."""
        with self._lock:
            self._delays.extend([seconds] * times)

    @property
    def completions(self) -> list[Recorded]:
        """The chat-completion requests received, oldest first."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # -- handlers ------------------------------------------------------------

    async def _chat(self, request: Request) -> JSONResponse:
        return await self._serve(request, lambda body: self._complete(request, body, None,
                                                                     bearer=True), hold=True)

    async def _azure_chat(self, request: Request) -> JSONResponse:
        deployment = request.path_params["deployment"]
        return await self._serve(
            request, lambda body: self._complete(request, body, deployment, bearer=False),
            hold=True)

    async def _models(self, request: Request) -> JSONResponse:
        return await self._serve(request, lambda body: self._list(request, bearer=True))

    async def _azure_models(self, request: Request) -> JSONResponse:
        return await self._serve(request, lambda body: self._list(request, bearer=False))

    async def _serve(self, request: Request, handle: Callable[[Any], dict[str, Any]],
                     hold: bool = False) -> JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            self.requests.append(Recorded(request.method, request.url.path,
                                          dict(request.query_params), dict(request.headers),
                                          body))
            seconds = self._delays.popleft() if hold and self._delays else 0.0
            generation = self._generation
        if seconds:
            await asyncio.sleep(seconds)
            if generation != self._generation:  # reset meanwhile: touch no new test's script
                return JSONResponse({"error": {"message": "The emulator was reset.",
                                               "type": "server_error", "param": None,
                                               "code": None}}, status_code=503)
        try:
            return JSONResponse(handle(body))
        except ApiError as exc:
            return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    def _authenticate(self, request: Request, *, bearer: bool) -> None:
        if bearer:
            given = request.headers.get("authorization", "")
            key = given[7:] if given.lower().startswith("bearer ") else ""
        else:
            key = request.headers.get("api-key", "")
            if not request.query_params.get("api-version"):
                raise ApiError(404, "Resource not found", "invalid_request_error", "404")
        if not key:
            raise ApiError(401, "You didn't provide an API key. You need to provide your API "
                           "key in an Authorization header using Bearer auth.",
                           "invalid_request_error", "invalid_api_key")
        if key != self.api_key:
            raise ApiError(401, f"Incorrect API key provided: {_masked(key)}. You can find "
                           "your API key at https://platform.openai.com/account/api-keys.",
                           "invalid_request_error", "invalid_api_key")

    def _complete(self, request: Request, body: Any, deployment: str | None, *,
                  bearer: bool) -> dict[str, Any]:
        self._authenticate(request, bearer=bearer)
        if deployment is not None and isinstance(body, dict):
            body = {**body, "model": deployment}
        fmt = check_request(body)
        if body.get("stream"):
            raise invalid("The emulator does not stream: send stream: false.", "stream")
        if body["model"] not in self.models:
            raise ApiError(404, f"The model `{body['model']}` does not exist or you do not "
                           "have access to it.", "invalid_request_error", "model_not_found",
                           "model")
        with self._lock:
            fault = self._faults[0] if self._faults else None
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.popleft()
            queued = self._answers.get(body["model"])
            answer = queued.popleft() if queued and fault is None else None
        if fault is not None:
            message, type_, code = _SERVER_ERRORS[fault.status]
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            raise ApiError(fault.status, message, type_, code, headers=headers)
        return completion(body, answer or default_answer(fmt))

    def _list(self, request: Request, *, bearer: bool) -> dict[str, Any]:
        self._authenticate(request, bearer=bearer)
        return {"object": "list", "data": [
            {"id": model, "object": "model", "created": 1715367049, "owned_by": "emulator"}
            for model in self.models]}


def _masked(key: str) -> str:
    """A key as OpenAI's 401 quotes it: its first and last four characters."""
    return f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else "*****"
