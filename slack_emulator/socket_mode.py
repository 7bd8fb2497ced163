"""Slack's side of Socket Mode: the websocket an app opens with ``apps.connections.open``.

What Slack does (docs.slack.dev/apis/events-api/using-socket-mode) and the emulator does too:

- ``apps.connections.open``, called with the app-level ``xapp-`` token, hands out a URL
  for one connection: ``wss://wss-primary.slack.com/link/?ticket=…&app_id=…`` at Slack,
  ``ws://127.0.0.1:<port>/link/?ticket=…&app_id=…`` here. A ticket opens one connection.
- On connect Slack sends ``{"type": "hello", "num_connections": n, "debug_info": {...},
  "connection_info": {"app_id": ...}}``; an app may keep up to 10 connections, and each
  payload goes to any one of them.
- Payloads arrive as envelopes, ``{"envelope_id", "type", "accepts_response_payload",
  "payload"}``: ``interactive`` (block_actions, view_submission... exactly the JSON the
  HTTP path posts), ``slash_commands`` (the command's form fields as a JSON object),
  ``events_api`` (the event callback). The app acks with ``{"envelope_id": ...}``, plus
  ``"payload"`` when it answers (a view_submission's ``response_action``, a command's
  reply); Slack waits 3 seconds for it.
- Slack refreshes connections: it sends ``{"type": "disconnect", "reason": "warning" |
  "refresh_requested" | "link_disabled"}`` and later closes the socket; the app opens a
  new URL and connects again. Websocket pings are answered with pongs (the ``websockets``
  library does that, and pings the app itself every 20 seconds).

:class:`SocketModeServer` serves that with the ``websockets`` library on its own asyncio
loop in a daemon thread. The emulator starts it on the first ``apps.connections.open``;
:meth:`SocketModeServer.deliver` sends an envelope and waits for its ack (the driver's
``socket_mode=True`` uses it); :meth:`~SocketModeServer.disconnect` and
:meth:`~SocketModeServer.close_connections` play Slack's refreshes and drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

from slack_emulator.errors import EmulatorStartError

if TYPE_CHECKING:
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.http11 import Request, Response

ACK_TIMEOUT = 3.0  # Slack waits this long for an envelope's ack
MAX_CONNECTIONS = 10  # "up to 10 open WebSocket connections at the same time"
CONNECTION_TIME = 3600  # hello's approximate_connection_time (s), as Slack's docs show it
DEBUG_CONNECTION_TIME = 360  # ... with &debug_reconnects=true on the URL
DEBUG_HOST = "applink-emulator"
BUILD_NUMBER = 1
# Envelope types whose ack may carry a payload Slack acts on (docs' examples).
RESPONSE_PAYLOAD_TYPES = frozenset({"view_submission", "block_suggestion", "block_actions"})
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

T = TypeVar("T")


class AckOutcome(StrEnum):
    """What became of an envelope."""

    ACKED = "acked"
    TIMED_OUT = "timed_out"  # no ack within the timeout (3 s at Slack)
    CONNECTION_CLOSED = "connection_closed"  # the socket closed before the ack came
    NOT_CONNECTED = "not_connected"  # the app had no open connection to send it on


@dataclass(frozen=True)
class SocketConnection:
    """One of the app's websocket connections."""

    id: str
    ticket: str
    app_id: str
    opened_at: float
    debug_reconnects: bool = False


@dataclass(frozen=True)
class Ack:
    """One envelope sent to the app and what came back."""

    envelope: dict[str, Any] = field(repr=False)
    outcome: AckOutcome
    connection_id: str | None
    elapsed: float
    answer: dict[str, Any] | None = None  # the app's whole ack message

    @property
    def envelope_id(self) -> str:
        return str(self.envelope["envelope_id"])

    @property
    def type(self) -> str:
        return str(self.envelope["type"])

    @property
    def acked(self) -> bool:
        return self.outcome is AckOutcome.ACKED

    @property
    def payload(self) -> Any:
        """The ack's ``payload`` (``response_action`` errors, a command's reply), if any."""
        return None if self.answer is None else self.answer.get("payload")


@dataclass(frozen=True)
class AppMessage:
    """Something the app sent over a connection that was not a timely ack."""

    connection_id: str
    message: Any
    kind: str  # "late_ack" (after the timeout) | "unexpected"
    at: float


@dataclass
class _Link:
    info: SocketConnection
    ws: ServerConnection
    greeted: asyncio.Event = field(default_factory=asyncio.Event)  # hello went first
    draining: bool = False  # told to reconnect: no new envelopes unless nothing else is open


@dataclass
class _Pending:
    future: asyncio.Future[dict[str, Any] | None]
    connection_id: str


class SocketModeServer:
    """Slack's Socket Mode endpoint on loopback: tickets, connections, envelopes and acks."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ack_timeout: float = ACK_TIMEOUT,
        ping_interval: float | None = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.port = port
        self.ack_timeout = ack_timeout
        self.ping_interval = ping_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._tickets: dict[str, str] = {}  # ticket -> app_id, each usable once
        self._accepted: dict[uuid.UUID, SocketConnection] = {}  # handshake -> handler
        self._links: dict[str, _Link] = {}
        self._opened: list[SocketConnection] = []
        self._pending: dict[str, _Pending] = {}
        self._expired: set[str] = set()
        self._envelopes: list[Ack] = []
        self._received: list[AppMessage] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = f"listening on {self.base_url}" if self.running else "stopped"
        return f"<SocketModeServer {state}, {len(self.connections())} connections>"

    # -- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._loop is not None

    @property
    def base_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> SocketModeServer:
        """Listen (idempotent): the emulator calls this on the first apps.connections.open."""
        with self._start_lock:
            if self._loop is not None:
                return self
            from websockets.asyncio.server import serve  # a dev dependency: import on use

            sock = socket.create_server((self.host, self.port))
            self.port = sock.getsockname()[1]
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            failure: list[BaseException] = []

            async def listen() -> Server:
                return await serve(
                    self._serve,
                    sock=sock,
                    process_request=self._check_request,
                    compression=None,
                    ping_interval=self.ping_interval,
                    close_timeout=1,
                )

            def run() -> None:
                asyncio.set_event_loop(loop)
                try:
                    self._server = loop.run_until_complete(listen())
                except BaseException as exc:  # reported to start() below
                    failure.append(exc)
                    ready.set()
                    loop.close()
                    return
                ready.set()
                try:
                    loop.run_forever()
                finally:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.close()

            self._thread = threading.Thread(target=run, name=f"socket-mode-{self.port}", daemon=True)
            self._thread.start()
            if not ready.wait(START_TIMEOUT) or failure:
                sock.close()
                self._thread = None
                raise EmulatorStartError(f"Socket Mode did not start on {self.base_url}: {failure}")
            self._loop = loop
            return self

    def stop(self) -> None:
        """Close every connection (code 1001), stop listening and end the thread."""
        with self._start_lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(STOP_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT)
            self._loop = None
            self._thread = None
            self._server = None
            with self._lock:
                self._links.clear()
                self._pending.clear()
                self._changed.notify_all()

    def __enter__(self) -> SocketModeServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what apps.connections.open hands out ----------------------------------

    def issue_url(self, app_id: str) -> str:
        """A one-time websocket URL for ``app_id``, as ``apps.connections.open`` answers."""
        self.start()
        ticket = str(uuid.uuid4())
        with self._lock:
            self._tickets[ticket] = app_id
        return f"{self.base_url}/link/?{urlencode({'ticket': ticket, 'app_id': app_id})}"

    # -- what a test looks at --------------------------------------------------

    def connections(self) -> list[SocketConnection]:
        """The app's open connections, oldest first."""
        with self._lock:
            return [link.info for link in self._links.values()]

    @property
    def opened(self) -> list[SocketConnection]:
        """Every connection ever opened, oldest first (closed ones too)."""
        with self._lock:
            return list(self._opened)

    @property
    def envelopes(self) -> list[Ack]:
        """Every envelope delivered (or not) so far, with its outcome."""
        with self._lock:
            return list(self._envelopes)

    @property
    def received(self) -> list[AppMessage]:
        """What the app sent that was not a timely ack: late acks, unknown envelope ids..."""
        with self._lock:
            return list(self._received)

    def clear(self) -> None:
        """Forget envelopes, stray messages and closed connections (open ones stay); with
        none open, connection ids start again at ``link-1``."""
        with self._lock:
            self._envelopes.clear()
            self._received.clear()
            self._expired.clear()
            self._opened = [link.info for link in self._links.values()]
            if not self._links and not self._accepted:
                self._ids = itertools.count(1)

    def wait_for_connections(
        self, count: int = 1, *, timeout: float = 10.0, opened_after: int | None = None
    ) -> list[SocketConnection]:
        """Block until ``count`` connections are open (and, with ``opened_after=n``, until
        more than ``n`` were ever opened: a reconnection); the open ones, or TimeoutError."""
        deadline = time.monotonic() + timeout

        def ready() -> bool:
            if len(self._links) < count:
                return False
            return opened_after is None or len(self._opened) > opened_after

        with self._changed:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._links)} Socket Mode connections open after {timeout}s, "
                        f"wanted {count}" + ("" if opened_after is None else
                                             f" and more than {opened_after} ever opened")
                    )
                self._changed.wait(left)
            return [link.info for link in self._links.values()]

    def wait_for_no_connections(self, *, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._links:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._links)} connections still open after {timeout}s")
                self._changed.wait(left)

    # -- acting as Slack -------------------------------------------------------

    def deliver(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool | None = None,
        extra: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        connection_id: str | None = None,
    ) -> Ack:
        """Send ``payload`` in an envelope of ``type`` and wait for its ack.

        ``type`` is ``interactive``, ``slash_commands`` or ``events_api``; the envelope
        goes to the newest open connection Slack has not asked to refresh (or to
        ``connection_id``). Returns an :class:`Ack` whatever happens: acked (with the
        ack's payload), timed out after ``timeout`` (3 s, as Slack), connection closed
        before the ack, or no connection at all.
        """
        if accepts_response_payload is None:
            accepts_response_payload = type == "slash_commands" or (
                type == "interactive" and payload.get("type") in RESPONSE_PAYLOAD_TYPES
            )
        envelope: dict[str, Any] = {
            "envelope_id": str(uuid.uuid4()),
            "type": type,
            "accepts_response_payload": accepts_response_payload,
            "payload": dict(payload),
            **(extra or {}),
        }
        wait = self.ack_timeout if timeout is None else timeout
        if self._loop is None:
            ack = Ack(envelope, AckOutcome.NOT_CONNECTED, None, 0.0)
        else:
            ack = self._call(self._deliver(envelope, wait, connection_id), wait + STOP_TIMEOUT)
        with self._lock:
            self._envelopes.append(ack)
        return ack

    def disconnect(
        self,
        reason: str = "refresh_requested",
        *,
        connection_id: str | None = None,
        close_after: float | None = None,
    ) -> list[str]:
        """Send Slack's ``disconnect`` message (``warning``, ``refresh_requested``,
        ``link_disabled``) to one or every open connection; with ``close_after``, also close
        the socket that many seconds later if the app has not. The ids it went to."""
        return self._call(self._disconnect(reason, connection_id, close_after), STOP_TIMEOUT)

    def close_connections(
        self,
        connection_id: str | None = None,
        *,
        code: int = 1001,
        reason: str = "",
        abrupt: bool = False,
    ) -> list[str]:
        """Close one or every open connection from Slack's side: a close frame, then TCP;
        with ``abrupt=True``, drop the TCP connection without a close frame (a network cut)."""
        return self._call(self._close_links(connection_id, code, reason, abrupt), STOP_TIMEOUT)

    # -- the event loop's side -------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the Socket Mode server is not running")
        if threading.current_thread() is self._thread:
            raise RuntimeError("call the Socket Mode server from another thread")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path.rstrip("/") != "/link":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        query = parse_qs(url.query)
        ticket = (query.get("ticket") or [""])[0]
        with self._lock:
            app_id = self._tickets.pop(ticket, None)
            if app_id is None:
                return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid or used ticket\n")
            self._accepted[connection.id] = SocketConnection(
                id=f"link-{next(self._ids)}",
                ticket=ticket,
                app_id=app_id,
                opened_at=self.clock(),
                debug_reconnects=(query.get("debug_reconnects") or [""])[0] == "true",
            )
        return None

    async def _serve(self, ws: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        with self._lock:
            info = self._accepted.pop(ws.id)
            full = len(self._links) >= MAX_CONNECTIONS
        if full:
            # What Slack's SDKs see past the limit: a disconnect, then the socket closes.
            with contextlib.suppress(ConnectionClosed):
                await ws.send(_disconnect_message("too_many_websockets"))
                await ws.close(1008, "too many websockets")
            return
        link = _Link(info, ws)
        try:
            with self._changed:
                self._links[info.id] = link
                self._opened.append(info)
                count = len(self._links)
                self._changed.notify_all()
            await ws.send(json.dumps(self._hello(info, count)))
            link.greeted.set()
            async for raw in ws:
                self._receive(link, raw)
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                self._links.pop(info.id, None)
                lost = [
                    pending for pending in self._pending.values()
                    if pending.connection_id == info.id
                ]
                self._changed.notify_all()
            for pending in lost:
                if not pending.future.done():
                    pending.future.set_result(None)

    def _hello(self, info: SocketConnection, count: int) -> dict[str, Any]:
        started = datetime.fromtimestamp(info.opened_at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return {
            "type": "hello",
            "num_connections": count,
            "debug_info": {
                "host": DEBUG_HOST,
                "started": started,
                "build_number": BUILD_NUMBER,
                "approximate_connection_time": (
                    DEBUG_CONNECTION_TIME if info.debug_reconnects else CONNECTION_TIME
                ),
            },
            "connection_info": {"app_id": info.app_id},
        }

    def _receive(self, link: _Link, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        with self._lock:
            pending = self._pending.get(envelope_id) if isinstance(envelope_id, str) else None
            if pending is None or pending.future.done():
                late = isinstance(envelope_id, str) and envelope_id in self._expired
                self._received.append(
                    AppMessage(link.info.id, message, "late_ack" if late else "unexpected", self.clock())
                )
                return
        pending.future.set_result(message)

    def _pick(self, connection_id: str | None) -> _Link | None:
        with self._lock:
            links = list(self._links.values())
        if connection_id is not None:
            return next((link for link in links if link.info.id == connection_id), None)
        candidates = [link for link in links if not link.draining] or links
        return candidates[-1] if candidates else None

    async def _deliver(
        self, envelope: dict[str, Any], timeout: float, connection_id: str | None
    ) -> Ack:
        from websockets.exceptions import ConnectionClosed

        started = time.monotonic()
        link = self._pick(connection_id)
        if link is None:
            return Ack(envelope, AckOutcome.NOT_CONNECTED, None, 0.0)
        envelope_id = envelope["envelope_id"]
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._pending[envelope_id] = _Pending(future, link.info.id)
        try:
            try:
                await link.greeted.wait()
                await link.ws.send(json.dumps(envelope))
                answer = await asyncio.wait_for(future, timeout)
            except ConnectionClosed:
                answer = None
            except TimeoutError:
                with self._lock:
                    self._expired.add(envelope_id)
                return Ack(envelope, AckOutcome.TIMED_OUT, link.info.id, time.monotonic() - started)
        finally:
            with self._lock:
                self._pending.pop(envelope_id, None)
        elapsed = time.monotonic() - started
        if answer is None:
            return Ack(envelope, AckOutcome.CONNECTION_CLOSED, link.info.id, elapsed)
        return Ack(envelope, AckOutcome.ACKED, link.info.id, elapsed, answer)

    def _targets(self, connection_id: str | None) -> list[_Link]:
        with self._lock:
            links = list(self._links.values())
        if connection_id is None:
            return links
        return [link for link in links if link.info.id == connection_id]

    async def _disconnect(
        self, reason: str, connection_id: str | None, close_after: float | None
    ) -> list[str]:
        from websockets.exceptions import ConnectionClosed

        sent = []
        for link in self._targets(connection_id):
            link.draining = True
            with contextlib.suppress(ConnectionClosed):
                await link.ws.send(_disconnect_message(reason))
                sent.append(link.info.id)
            if close_after is not None:
                asyncio.get_running_loop().call_later(
                    close_after, self._close_later, link.ws, 1001, reason
                )
        return sent

    async def _close_links(
        self, connection_id: str | None, code: int, reason: str, abrupt: bool
    ) -> list[str]:
        links = self._targets(connection_id)
        if abrupt:
            for link in links:
                link.ws.transport.abort()
            await asyncio.gather(*(link.ws.wait_closed() for link in links))
        else:
            await asyncio.gather(*(link.ws.close(code, reason) for link in links))
        return [link.info.id for link in links]

    def _close_later(self, ws: ServerConnection, code: int, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(ws.close(code, reason))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _shutdown(self) -> None:
        with self._lock:
            pending = list(self._pending.values())
        for item in pending:
            if not item.future.done():
                item.future.set_result(None)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), STOP_TIMEOUT - 1)


def _disconnect_message(reason: str) -> str:
    return json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": DEBUG_HOST}})
