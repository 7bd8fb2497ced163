"""Slack's Web API over connections kept open between calls.

slack_sdk's WebClient opens a new connection for every call (urllib), and to Slack that is
a new TLS session each time: a worker that rewrites a review's message pays a TCP and a TLS
handshake for one small request. :class:`KeptConnections` keeps one connection per thread
and host open instead, the way browsers and urllib3 do, and hands slack_sdk the answer in
the shape its own urllib call gives (:meth:`slack_sdk.web.base_client.BaseClient.
_perform_urllib_http_request_internal`), so its retries, 429 handling and response checks
stay slack_sdk's:

- a status outside 2xx is raised as urllib's ``HTTPError``, its body readable;
- a connection that fails is raised as urllib's ``URLError`` (slack_sdk's connection-error
  retry handles it as it handles urllib's), and is not used again;
- a kept connection the server has closed meanwhile (it is readable before we write: its
  end of file is waiting) or left unused for :data:`IDLE_SECONDS` is replaced before the
  request is sent, so a request is never sent on a connection known to be dead.

Proxies (``WebClient(proxy=...)``) go through slack_sdk's own path.

slack_sdk builds its debug lines (the whole request, blocks included) only when its logger is
at DEBUG, but it asks the level set on that very logger, which is unset, so it builds them for
every call and then drops them (slackapi/python-slack-sdk#1957). :class:`EffectiveLevel` hands
it the logger's effective level instead: the lines are built when DEBUG is on, and only then.
"""

from __future__ import annotations

import http.client
import io
import logging
import select
import socket
import ssl
import threading
import time
import weakref
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request

# Seconds a connection may sit unused and still be used: under the idle timeouts of
# Slack's edge and of the servers we test against (uvicorn closes after 5 s).
IDLE_SECONDS = 4.0
# Seconds a failure to reach Slack (refused, reset, timed out) is remembered
# (:meth:`KeptConnections.unreachable_lately`): meanwhile a click's worker does not take on
# the rewrite of its message itself (bot.notifier), which waits its turn on the slack queue.
UNREACHABLE_SECONDS = 60.0


class EffectiveLevel(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for slack_sdk's clients whose ``level`` is the logger's effective level (what
    ``logging`` configured for it or its parents), which slack_sdk's debug guards compare."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    @property
    def level(self) -> int:
        """DEBUG when a debug line would be logged (``logging.disable`` included), else the
        effective level, above DEBUG."""
        if self.isEnabledFor(logging.DEBUG):
            return logging.DEBUG
        return max(self.logger.getEffectiveLevel(), logging.INFO)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return msg, kwargs  # as logged, with nothing added


class KeptConnections:
    """One open connection per thread and host (``http`` or ``https``), closed with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (thread, scheme, host, port) -> (connection, when it was last used): a thread
        # takes its own off while it uses it, and puts it back once the answer is read
        self._kept: dict[tuple[int, str, str, int], tuple[http.client.HTTPConnection, float]] = {}
        self.opened = 0  # connections opened so far, over all threads
        self.failed_at = float("-inf")  # time.monotonic() of the last failure to connect or call
        # Closed when this goes, before the garbage collector finalizes their sockets (a
        # weakref callback runs first; a __del__ could run after an unclosed socket warned).
        weakref.finalize(self, _close_all, self._kept, self._lock)

    def perform(self, url: str, request: Request, *, timeout: float,
                context: ssl.SSLContext | None = None) -> dict[str, Any]:
        """Send ``request`` to ``url``; ``{"status", "headers", "body"}`` as slack_sdk's
        urllib call returns it (the body text, or bytes when it is a gzip file)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        key = (threading.get_ident(), scheme, parts.hostname or "", port)
        connection = self._take(key, timeout, context)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(request.get_method(), target, body=request.data,
                               headers=dict(request.header_items()))
            response = connection.getresponse()
            body = response.read()
        except OSError as exc:  # refused, reset, timed out, closed under us: as urllib says
            connection.close()
            self.failed_at = time.monotonic()
            raise URLError(exc) from exc
        except http.client.HTTPException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            with self._lock:
                self._kept[key] = (connection, time.monotonic())
        if not 200 <= response.status < 300:
            raise HTTPError(url, response.status, response.reason, response.headers,
                            io.BytesIO(body))
        if response.headers.get_content_type() == "application/gzip":
            return {"status": response.status, "headers": response.headers, "body": body}
        charset = response.headers.get_content_charset() or "utf-8"
        return {"status": response.status, "headers": response.headers,
                "body": body.decode(charset)}

    def unreachable_lately(self, seconds: float = UNREACHABLE_SECONDS) -> bool:
        """Whether a connection failed (refused, reset, timed out) in the last ``seconds``."""
        return time.monotonic() - self.failed_at < seconds

    def close(self) -> None:
        """Close every kept connection (a thread using one closes it when done)."""
        _close_all(self._kept, self._lock)

    def _take(self, key: tuple[int, str, str, int], timeout: float,
              context: ssl.SSLContext | None) -> http.client.HTTPConnection:
        """This thread's connection to the host, off the kept ones (put back once its answer
        is read), when it is still good; else a new one."""
        with self._lock:
            kept = self._kept.pop(key, None)
        if kept is not None:
            connection, used = kept
            if time.monotonic() - used < IDLE_SECONDS and _still_open(connection):
                connection.timeout = timeout
                if connection.sock is not None:
                    connection.sock.settimeout(timeout)
                return connection
            connection.close()
        _, scheme, host, port = key
        fresh = (http.client.HTTPSConnection(host, port, timeout=timeout,
                                             context=context or ssl.create_default_context())
                 if scheme == "https" else http.client.HTTPConnection(host, port, timeout=timeout))
        try:
            fresh.connect()
        except OSError as exc:
            fresh.close()
            self.failed_at = time.monotonic()
            raise URLError(exc) from exc
        if fresh.sock is not None:  # headers and body go out at once, not after an ACK
            fresh.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.opened += 1
        return fresh


def _close_all(kept: dict[Any, tuple[http.client.HTTPConnection, float]],
               lock: threading.Lock) -> None:
    with lock:
        connections = [connection for connection, _ in kept.values()]
        kept.clear()
    for connection in connections:
        connection.close()


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """False when the server closed the connection (or sent what nobody asked for): a kept
    connection has nothing to read until it is sent a request."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
