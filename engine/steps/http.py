"""``http``: call an HTTP endpoint with httpx; a non-2xx answer or network error is a step error.

Every connection is checked against the worker's egress policy
(:mod:`engine.definition.egress`) after the host name is resolved and before
connecting, and goes to the very address that was checked: the step's client connects
through :class:`CheckedConnections`, an httpcore network backend that resolves the
host once, asks the policy about every address it resolved to, refuses them all if
one is refused (a name that resolves to both a public and a loopback address is a
rebinding trick, not a service), and connects to the checked addresses itself. httpx
still sees the host name, so the Host header, SNI and certificate checks are those of
the URL. A refused connection raises :class:`EgressBlocked`: nothing is sent, the step
fails and is not retried.

The check sits where connections are made rather than around the request, so it covers
whatever connects: the first request, a pooled connection's replacement, and any
redirect hop. The step itself does not follow redirects (a 3xx is a non-2xx answer).
With a client of its own transport, httpx ignores HTTP(S)_PROXY: a proxy would resolve
names where the policy cannot see them.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from engine.definition.durations import parse_duration
from engine.definition.egress import EgressPolicy
from engine.definition.step_types import StepContext, step_type
from engine.errors import DurationError, EgressBlocked, StepFailed

DEFAULT_TIMEOUT = 30.0

_clients: dict[EgressPolicy, httpx.Client] = {}
_clients_lock = threading.Lock()


def shared_client(policy: EgressPolicy) -> httpx.Client:
    """One pooled client per worker process (per egress policy: a worker has one), made on
    first use."""
    with _clients_lock:
        client = _clients.get(policy)
        if client is None:
            client = _clients[policy] = checked_client(policy)
        return client


def checked_client(policy: EgressPolicy, **options: Any) -> httpx.Client:
    """An httpx client whose every connection ``policy`` checks first."""
    options = {"follow_redirects": False, "timeout": DEFAULT_TIMEOUT,
               "headers": {"User-Agent": "signoff-workflows"}, **options}
    return httpx.Client(transport=CheckedTransport(policy), **options)


def checked_addresses(policy: EgressPolicy, host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, once; EgressBlocked if ``policy`` refuses any."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(_address(family, sockaddr) for family, *_, sockaddr in found))
    for address in addresses:
        reason = policy.refusal(host, address)
        if reason is not None:
            raise EgressBlocked(host, address, reason)
    return addresses


def _address(family: int, sockaddr: tuple[Any, ...]) -> str:
    if family == socket.AF_INET6 and sockaddr[3]:  # keep a link-local address's zone
        return f"{sockaddr[0]}%{sockaddr[3]}"
    return str(sockaddr[0])


class CheckedConnections(httpcore.NetworkBackend):
    """httpcore's network backend, resolving and checking each host before connecting to
    the addresses it checked."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in checked_addresses(self.policy, host, port):
            try:
                return self.backend.connect_tcp(address, port, timeout, local_address,
                                                socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # the next address, as socket.create_connection would
        assert failure is not None  # getaddrinfo answers at least one address or raises
        raise failure

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


class CheckedTransport(httpx.HTTPTransport):
    """httpx's transport on a connection pool that connects through :class:`CheckedConnections`."""

    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__()
        # httpx takes no network backend, so its pool is replaced by one that has ours
        # (with httpx's default limits).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=100,
            max_keepalive_connections=20, keepalive_expiry=5.0,
            network_backend=CheckedConnections(policy))


@step_type("http", options_schema={
    "type": "object",
    "properties": {
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
                            "get", "post", "put", "patch", "delete", "head", "options"]},
        "url": {"type": "string", "minLength": 1},
        "headers": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
        "query": {"type": "object"},
        "body": {},
        "timeout": {"type": ["string", "number"]},
    },
    "required": ["url"],
    "additionalProperties": False,
})
def http(ctx: StepContext) -> dict[str, Any]:
    """Send a request; the output is ``{status, headers, body}`` (body parsed when JSON)."""
    options = ctx.options
    method = str(options.get("method") or "GET").upper()
    url = str(options["url"])
    headers = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
    body = options.get("body")
    content: bytes | None = None
    if isinstance(body, dict | list):
        content = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif body is not None:
        content = str(body).encode()
    timeout = ctx.timeout_seconds or DEFAULT_TIMEOUT
    if options.get("timeout") is not None:
        try:
            timeout = parse_duration(options["timeout"]).total_seconds()
        except DurationError as exc:
            raise StepFailed(f"with.timeout: {exc}", retryable=False) from exc
    try:
        response = shared_client(ctx.egress).request(
            method, url, headers=headers, content=content, params=options.get("query"),
            timeout=timeout)
    except EgressBlocked as exc:
        raise EgressBlocked(exc.host, exc.address, exc.reason, request=f"{method} {url}") from None
    except httpx.HTTPError as exc:
        raise StepFailed(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
    parsed: Any = response.text
    if "json" in response.headers.get("content-type", ""):
        try:
            parsed = response.json()
        except ValueError:
            parsed = response.text
    output = {"status": response.status_code, "headers": dict(response.headers), "body": parsed}
    if not response.is_success:
        # 4xx other than 408/429 will not get better by retrying.
        retryable = response.status_code >= 500 or response.status_code in (408, 429)
        raise StepFailed(f"{method} {url} answered {response.status_code}",
                         retryable=retryable, details=output)
    ctx.log(f"{method} {url} -> {response.status_code}")
    return output
