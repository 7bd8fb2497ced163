"""The emulator's HTTP face: Slack's Web API and response URLs on a loopback port.

:class:`SlackEmulator` serves a Starlette app with uvicorn in a background thread,
so the real ``slack_sdk.WebClient(base_url=emulator.api_url)`` and Bolt talk to it
over HTTP exactly as they would to slack.com. It records every call and can be
told to fail the next ones (rate limits, 5xx, error codes) for resilience tests.
It enforces Slack's rate limits (:mod:`slack_emulator.ratelimit`, on by default at Slack's
figures): about one ``chat.postMessage`` a second per channel with short bursts (a token
bucket per channel; ``posting_limit=PostingLimit.off()`` or ``SLACK_EMULATOR_POST_RATE=0``
turns it off), and each other method's tier, per method (``method_limits=MethodLimits.off()``
or ``SLACK_EMULATOR_METHOD_LIMITS=off``), answering 429 with ``Retry-After`` as Slack does.
``apps.connections.open`` (with :attr:`SlackEmulator.app_token`) hands out URLs of
its Socket Mode websocket, :attr:`SlackEmulator.socket_mode`, started on first use.
Incoming webhooks (``/services/…``, plain-text answers) live in
:attr:`SlackEmulator.webhooks` (:mod:`slack_emulator.webhooks`).
It speaks HTTP/1.1 with keep-alive (Nagle off, as real servers run), over plain HTTP by
default, or HTTPS as slack.com does with ``tls=(certificate, key)`` (then under the
certificate's host name). Not modelled: how long Slack's edge keeps an idle connection
(uvicorn closes one after 5 s), HTTP/2.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from slack_emulator.errors import EmulatorStartError, SlackApiFailure
from slack_emulator.ratelimit import ChannelBuckets, MethodBuckets, MethodLimits, PostingLimit
from slack_emulator.socket_mode import SocketModeServer
from slack_emulator.web_api import APP_LEVEL_METHODS, WebApi
from slack_emulator.webhooks import IncomingWebhooks
from slack_emulator.workspace import ResponseHook, Workspace, default_workspace

# Fields slack_sdk sends as JSON strings when it form-encodes a call.
JSON_FIELDS = ("blocks", "attachments", "view", "metadata")
RESPONSE_URL_CALL = "response_url"
POST_MESSAGE = "chat.postMessage"
DEFAULT_ERRORS = {429: "ratelimited", 500: "internal_error", 503: "service_unavailable"}
START_TIMEOUT = 10.0


@dataclass
class Fault:
    """A failure the emulator answers the next ``remaining`` calls of a method with."""

    status: int
    error: str
    retry_after: int | None
    remaining: int


class SlackEmulator:
    """A fake slack.com for one workspace, served on ``127.0.0.1`` in a background thread."""

    def __init__(
        self,
        workspace: Workspace | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        posting_limit: PostingLimit | None = None,
        method_limits: MethodLimits | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """``tls``: a certificate and its key (PEM files): serve HTTPS, as slack.com does,
        under the certificate's host name (``host`` is still where it listens)."""
        self.workspace = workspace or default_workspace()
        # Slack's chat.postMessage limit per channel (None: from the environment, else Slack's).
        self.posting = ChannelBuckets(posting_limit or PostingLimit.from_env())
        # Every other method's tier, per method (None: from the environment, else Slack's).
        self.methods = MethodBuckets(method_limits or MethodLimits.from_env())
        self.socket_mode = SocketModeServer(host=host)
        self.web_api = WebApi(self.workspace, socket_url=self.socket_mode.issue_url)
        # Incoming webhooks (POST /services/T…/B…/secret): add, break, read what was posted.
        self.webhooks = IncomingWebhooks(self.workspace, lambda: self.base_url)
        self.app = build_app(self)
        self._lock = threading.Lock()
        self._calls: list[tuple[str, dict[str, Any]]] = []
        self._faults: dict[str, list[Fault]] = {}
        self._server = BackgroundServer(self.app, host=host, port=port, tls=tls)

    def __repr__(self) -> str:
        state = f"listening on {self.base_url}" if self._server.running else "stopped"
        return f"<SlackEmulator team={self.workspace.team.id} {state}>"

    # -- addresses and credentials -------------------------------------------

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def api_url(self) -> str:
        """What to pass as ``WebClient(base_url=...)``; ends with ``/api/`` like Slack's."""
        return f"{self.base_url}/api/"

    @property
    def bot_token(self) -> str:
        return self.workspace.app.bot_token

    @property
    def signing_secret(self) -> str:
        return self.workspace.app.signing_secret

    @property
    def app_token(self) -> str:
        """The app-level ``xapp-`` token: what ``apps.connections.open`` (Socket Mode) wants."""
        return self.workspace.app_token

    def response_url(self, hook: ResponseHook) -> str:
        return f"{self.base_url}/hooks/{hook.kind}/{hook.id}"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> SlackEmulator:
        """Listen on a free (or the given) port and serve until :meth:`stop`."""
        self._server.start()
        return self

    def stop(self) -> None:
        self.socket_mode.stop()
        self._server.stop()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (``python -m slack_emulator``)."""
        try:
            self._server.serve_forever()
        finally:
            self.socket_mode.stop()

    def __enter__(self) -> SlackEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self, workspace: Workspace | None = None) -> Workspace:
        """Start over with a fresh (or the given) workspace; forget calls and pending faults.

        Cheaper than a new emulator per test: keep one running, reset it between tests.
        Socket Mode connections stay open (they are the app's); their envelopes are forgotten.
        """
        with self._lock:
            self.workspace = workspace or default_workspace()
            self.web_api = WebApi(self.workspace, socket_url=self.socket_mode.issue_url)
            self._calls.clear()
            self._faults.clear()
        self.posting.clear()
        self.methods.clear()
        self.webhooks.reset(self.workspace)
        self.socket_mode.clear()
        return self.workspace

    # -- recording and fault injection ---------------------------------------

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """Every call received, oldest first: ``(method, params)``; response URL posts too."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        """The params of every call to ``method`` (``"response_url"`` for response URL posts)."""
        with self._lock:
            return [params for name, params in self._calls if name == method]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def fail_next(
        self,
        method: str,
        *,
        status: int | None = None,
        retry_after: int | None = 1,
        count: int = 1,
        error: str | None = None,
    ) -> None:
        """Answer the next ``count`` calls to ``method`` with a failure.

        ``status=429`` (the default without ``error``) sends ``Retry-After``; ``500``
        and ``503`` send that status; ``error="channel_not_found"`` alone answers
        HTTP 200 ``{"ok": false, "error": "channel_not_found"}``.
        """
        if status is None:
            status = 200 if error else 429
        fault = Fault(
            status=status,
            error=error or DEFAULT_ERRORS.get(status, "fatal_error"),
            retry_after=retry_after if status == 429 else None,
            remaining=count,
        )
        with self._lock:
            self._faults.setdefault(method, []).append(fault)

    def _record(self, method: str, params: dict[str, Any]) -> Fault | None:
        with self._lock:
            self._calls.append((method, params))
            faults = self._faults.get(method)
            if not faults:
                return None
            fault = faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                faults.pop(0)
            return fault

    # -- request handling ----------------------------------------------------

    def answer_api_call(
        self, method: str, params: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, body, headers) for one Web API call, faults included."""
        fault = self._record(method, params)
        if fault is not None:
            headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            return fault.status, {"ok": False, "error": fault.error}, headers
        wait = (self._posting_wait(params, token) if method == POST_MESSAGE
                else self._method_wait(method, token))
        if wait is not None:
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(wait)}
        return 200, self.web_api.call(method, params, token), {}

    def _posting_wait(self, params: dict[str, Any], token: str | None) -> int | None:
        """Seconds to wait before posting to the call's channel again (Slack's per-channel
        limit), or None when the post may go ahead. Calls Slack would refuse for another
        reason (no channel, a bad token) take nothing from the bucket."""
        if not self.posting.limit.enabled or token != self.bot_token:
            return None
        try:
            channel = self.workspace.resolve_channel(str(params.get("channel") or ""))
        except SlackApiFailure:
            return None
        return self.posting.take(channel)

    def _method_wait(self, method: str, token: str | None) -> int | None:
        """Seconds to wait before calling ``method`` again (its tier, for the app), or None
        when the call may go ahead. Calls without the bot's token (refused for it, or
        ``apps.connections.open``'s app-level token) take nothing from the bucket."""
        if token != self.bot_token:
            return None
        return self.methods.take(method)

    def answer_response_url(self, hook_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._record(RESPONSE_URL_CALL, {"hook": hook_id, **body})
        try:
            self.web_api.respond(hook_id, body)
        except SlackApiFailure as failure:
            return (404 if failure.error == "expired_url" else 400), failure.to_json()
        return 200, {"ok": True}


class BackgroundServer:
    """Serve any ASGI app with uvicorn on loopback, in a daemon thread.

    The emulator runs on one; tests run the app under test (or a tiny receiver) on
    another so the driver can reach it over real HTTP. ``port=0`` picks a free port.
    """

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0,
                 tls: tuple[str, str] | None = None) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.tls = tls  # (certificate, key) PEM files: HTTPS
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def base_url(self) -> str:
        if self.tls is not None:  # under the certificate's name, which resolves to loopback
            return f"https://{_certificate_host(self.tls[0])}:{self.port}"
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> BackgroundServer:
        if self._server is not None:
            return self
        self._socket = self._bind()
        self._server = uvicorn.Server(self._config(log_config=None))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"uvicorn-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise EmulatorStartError(f"nothing started listening on {self.base_url}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=START_TIMEOUT)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None

    def serve_forever(self) -> None:
        """Serve in the calling thread (signals stop it) until interrupted."""
        sock = self._bind()
        try:
            uvicorn.Server(self._config(log_config=uvicorn.config.LOGGING_CONFIG)).run(
                sockets=[sock]
            )
        finally:
            sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind(self) -> socket.socket:
        # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on connections whose
        # listening socket says TCP; without it a keep-alive client waits out its delayed
        # ACK (~40 ms) for every response after the first, as no real server makes it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        return sock

    def _config(self, *, log_config: dict[str, Any] | None) -> uvicorn.Config:
        # No websockets and no lifespan: neither is needed, and importing the
        # websockets stack emits deprecation warnings our test run turns into errors.
        return uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            log_config=log_config,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            ssl_certfile=self.tls[0] if self.tls else None,
            ssl_keyfile=self.tls[1] if self.tls else None,
        )


def _certificate_host(certificate: str) -> str:
    """The first DNS name a PEM certificate is for."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(certificate).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return str(names.get_values_for_type(x509.DNSName)[0])


def build_app(emulator: SlackEmulator) -> Starlette:
    """The Starlette app answering Slack's Web API and response URLs for ``emulator``."""

    async def api(request: Request) -> Response:
        method = request.path_params["method"]
        try:
            params, token = await _read_call(request)
        except ValueError:
            return JSONResponse({"ok": False, "error": "invalid_json"})
        if method in APP_LEVEL_METHODS and _bearer(request) is None:
            # "you will need to pass this token in the HTTP Authorization header of your
            # request; passing it as a POST parameter will result in an error"
            token = None
        status, body, headers = emulator.answer_api_call(method, params, token)
        return JSONResponse(body, status_code=status, headers=headers)

    async def hook(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"ok": False, "error": "invalid_payload"}, status_code=400)
        status, answer = emulator.answer_response_url(request.path_params["hook_id"], body)
        return JSONResponse(answer, status_code=status)

    async def incoming_webhook(request: Request) -> Response:
        p = request.path_params
        status, text, headers = emulator.webhooks.answer(
            p["team"], p["hook"], p["secret"], await request.body(),
            request.headers.get("content-type", ""))
        return PlainTextResponse(text, status_code=status, headers=headers)

    async def state(request: Request) -> Response:
        return JSONResponse(emulator.workspace.snapshot())

    routes: list[Route] = [
        Route("/api/{method}", api, methods=["GET", "POST"]),
        Route("/hooks/{kind}/{hook_id:path}", hook, methods=["POST"]),
        Route("/services/{team}/{hook}/{secret}", incoming_webhook, methods=["POST"]),
        Route("/_emulator/state", state, methods=["GET"]),
    ]
    return Starlette(routes=routes)


async def _read_call(request: Request) -> tuple[dict[str, Any], str | None]:
    """Merge query string, form or JSON body into one params dict; take out the token."""
    params: dict[str, Any] = dict(request.query_params)
    raw = await request.body()
    if raw:
        if "application/json" in request.headers.get("content-type", ""):
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("a JSON body must be an object")
            params.update(data)
        else:
            params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    for name in JSON_FIELDS:
        if name in params:
            params[name] = _decode_if_json(params[name])
    token = params.pop("token", None)
    bearer = _bearer(request)
    return params, token if bearer is None else bearer


def _bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, None without one."""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[len("bearer ") :].strip()
    return None


def _decode_if_json(value: Any) -> Any:
    # Left as a string when it does not parse, so the method answers invalid_*_format.
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class ServedInBackground:
    """``start``, ``stop`` and ``with`` for a stand-in service that serves its app through a
    :class:`BackgroundServer` it keeps as ``_server`` (the Elastic and OpenAI emulators)."""

    _server: BackgroundServer

    def start(self) -> Self:
        """Listen on a free (or the given) port until :meth:`stop`."""
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
