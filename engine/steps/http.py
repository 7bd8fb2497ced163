"""``http``: call an HTTP endpoint with httpx, as Kibana's ``http`` step does.

What is called: ``with.url``, or, with a top-level ``connector-id`` naming an ``http``
connection of ``SIGNOFF_CONNECTORS``, that connection's base URL; then ``with.path``
joined under it (one ``/`` between, as Kibana's HTTP connector joins them) and
``with.query`` added. A path that would leave its base (an absolute URL, ``//host``,
``..``) is refused, and a connection's headers (its credentials) are merged under the
step's own and sent only to URLs under its base URL: a ``with.url`` outside it is
refused, and a redirect that leaves it drops them. A redirect that leaves the origin
drops every credential header (:func:`engine.definition.egress.is_credential_header`).

The output is Kibana's: ``{status, statusText, headers, data}``, ``data`` parsed when it
is JSON. A non-2xx answer is a step error whose details are that output; 429 and 5xx
are retryable, other answers not. ``with.fetcher`` takes Kibana's options:
``follow_redirects`` (default true, at most ``max_redirects``: 20), ``keep_alive``,
``max_content_length`` (the body is read as it streams and the request aborted past
it) and ``skip_ssl_verification``, honoured only for the hosts the operator lists in
``SIGNOFF_HTTP_INSECURE_TLS`` (elsewhere certificates are verified all the same).

Every connection is checked against the worker's egress policy
(:mod:`engine.definition.egress`) after the host name is resolved and before
connecting, and goes to the very address that was checked: the step's client connects
through :class:`CheckedConnections`, an httpcore network backend that resolves the
host once, asks the policy about every address it resolved to, refuses them all if
one is refused (a name that resolves to both a public and a loopback address is a
rebinding trick, not a service), and connects to the checked addresses itself. httpx
still sees the host name, so the Host header, SNI and certificate checks are those of
the URL. A refused connection raises :class:`EgressBlocked`: nothing is sent, the step
fails and is not retried. The check sits where connections are made, so it covers
every redirect hop, each of which the step sends itself. With a client of its own
transport, httpx ignores HTTP(S)_PROXY: a proxy would resolve names where the policy
cannot see them. The clients keep no cookies: one run's session is not another's.

An ``http`` connection's ``connect-to: host:port`` works as curl's ``--connect-to``:
connections to its URL's host and port are made to that address instead (say, an
internal name for a service whose certificate is for its public one). httpx still sees
the URL, so its Host header, SNI and certificate check are the URL's; the egress policy
checks the address connected to (the ``connect-to`` host and what it resolves to), not
the URL's host. Only that host and port are rerouted: a redirect elsewhere is not.
"""

from __future__ import annotations

import atexit
import contextlib
import email.utils
import json
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Protocol, runtime_checkable

import httpcore
import httpx

from engine.definition.durations import parse_duration
from engine.definition.egress import EgressPolicy, is_credential_header, join_base, within_base
from engine.definition.step_types import StepContext, step_type
from engine.errors import DurationError, EgressBlocked, StepFailed

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_REDIRECTS = 20

Route = tuple[tuple[str, int], tuple[str, int]]  # (URL host, port) -> (connect-to host, port)

_clients: dict[tuple[EgressPolicy, bool, Route | None], httpx.Client] = {}
_clients_lock = threading.Lock()


@runtime_checkable
class HttpConnectionLike(Protocol):
    """An ``http`` connection of ``SIGNOFF_CONNECTORS`` (:class:`engine.connectors.
    HttpConnection`), as the step reads it."""

    id: str
    type: str
    url: str
    headers: tuple[tuple[str, str], ...]
    connect_to: str | None


@dataclass(frozen=True)
class HttpSettings:
    """What the worker's settings give ``http`` steps: the connections by id (of every
    type, to say which one a wrong ``connector-id`` is) and the hosts whose certificates
    ``fetcher.skip_ssl_verification`` may skip checking."""

    connections: Mapping[str, object] = field(default_factory=dict, repr=False)
    insecure_tls_hosts: frozenset[str] = frozenset()


_settings = HttpSettings()


def configure_http(settings: HttpSettings) -> None:
    """Give this process's ``http`` steps the worker's settings (the runtime does, once)."""
    global _settings
    _settings = settings


def shared_client(policy: EgressPolicy, verify: bool = True,
                  route: Route | None = None) -> httpx.Client:
    """One pooled client per worker process (per egress policy: a worker has one, per
    certificate checking and per ``connect-to`` route), made on first use."""
    with _clients_lock:
        client = _clients.get((policy, verify, route))
        if client is None:
            client = _clients[(policy, verify, route)] = checked_client(
                policy, verify=verify, route=route)
        return client


def close_shared_clients() -> None:
    """Close the pooled clients and the connections they keep open (at the process's exit,
    so that none is left for the garbage collector to find unclosed)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        with contextlib.suppress(Exception):  # at exit: nothing left to tell
            client.close()


atexit.register(close_shared_clients)


def checked_client(policy: EgressPolicy, verify: bool = True, route: Route | None = None,
                   **options: Any) -> httpx.Client:
    """An httpx client whose every connection ``policy`` checks first, keeping no cookies;
    with ``route``, connections to its URL host and port go to its address instead."""
    options = {"follow_redirects": False, "timeout": DEFAULT_TIMEOUT,
               "headers": {"User-Agent": "signoff-workflows"},
               "cookies": CookieJar(DefaultCookiePolicy(allowed_domains=[])), **options}
    return httpx.Client(transport=CheckedTransport(policy, verify=verify, route=route),
                        **options)


def connect_route(connection: HttpConnectionLike | None) -> Route | None:
    """The ``connect-to`` route of ``connection``: its URL's host and port, and the
    address to connect to instead; None without one."""
    if connection is None or not connection.connect_to:
        return None
    url = httpx.URL(connection.url)
    host, _, port = connection.connect_to.rpartition(":")
    return (url.host.rstrip(".").lower(), url.port or (443 if url.scheme == "https" else 80)), \
        (host.strip("[]"), int(port))


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

    def __init__(self, policy: EgressPolicy, route: Route | None = None) -> None:
        self.policy = policy
        self.route = route
        self.backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        if self.route is not None and (host.rstrip(".").lower(), port) == self.route[0]:
            host, port = self.route[1]  # TLS still names the URL's host: httpcore passes it
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

    def __init__(self, policy: EgressPolicy, verify: bool = True,
                 route: Route | None = None) -> None:
        super().__init__()
        # httpx takes no network backend, so its pool is replaced by one that has ours
        # (with httpx's default limits).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify), max_connections=100,
            max_keepalive_connections=20, keepalive_expiry=5.0,
            network_backend=CheckedConnections(policy, route))


@dataclass(frozen=True)
class Fetcher:
    """``with.fetcher``: Kibana's FetcherConfigSchema."""

    follow_redirects: bool = True
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    keep_alive: bool = True
    max_content_length: float | None = None
    skip_ssl_verification: bool = False

    @classmethod
    def parse(cls, value: Any) -> Fetcher:
        """The options as rendered; StepFailed (not retryable) names a wrong one."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise StepFailed("with.fetcher must be a mapping", retryable=False)
        flags = {}
        for name in ("follow_redirects", "keep_alive", "skip_ssl_verification"):
            flag = value.get(name, getattr(cls, name))
            if isinstance(flag, str) and flag.lower() in ("true", "false"):
                flag = flag.lower() == "true"  # a template renders to text
            if not isinstance(flag, bool):
                raise StepFailed(f"with.fetcher.{name} must be true or false, not {flag!r}",
                                 retryable=False)
            flags[name] = flag
        redirects = _number(value, "max_redirects", DEFAULT_MAX_REDIRECTS)
        limit = _number(value, "max_content_length", None)
        if redirects is not None and (redirects < 0 or redirects != int(redirects)):
            raise StepFailed("with.fetcher.max_redirects must be a whole number, 0 or more",
                             retryable=False)
        if limit is not None and limit <= 0:
            raise StepFailed("with.fetcher.max_content_length must be a number of bytes "
                             "above 0", retryable=False)
        return cls(max_redirects=int(redirects or 0), max_content_length=limit, **flags)


def _number(options: Mapping[str, Any], name: str, default: float | None) -> float | None:
    value = options.get(name, default)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise StepFailed(f"with.fetcher.{name} must be a number, not {value!r}", retryable=False)
    return value


_FETCHER_SCHEMA = {
    "type": "object",
    "properties": {
        "skip_ssl_verification": {"type": "boolean"},
        "follow_redirects": {"type": "boolean"},
        "max_redirects": {"type": "integer", "minimum": 0},
        "keep_alive": {"type": "boolean"},
        "max_content_length": {"type": "number", "exclusiveMinimum": 0},
    },
    "additionalProperties": False,
}


Problems = list[tuple[tuple[str, ...], str]]


def _check(options: Mapping[str, Any], params: Mapping[str, Any]) -> Problems:
    """What the schema cannot say: an ``http`` step names what it calls, and a literal
    path stays under its base."""
    problems: Problems = []
    if options.get("url") is None and params.get("connector-id") is None:
        problems.append((("with",), "an http step needs `url`, or a `connector-id` (an http "
                                    "connection) with an optional `path` under its base URL"))
    path = options.get("path")
    if isinstance(path, str) and "{{" not in path and "{%" not in path:
        try:
            join_base("http://base.invalid", path)
        except ValueError as exc:
            problems.append((("with", "path"), f"{exc}: a path stays under its base URL"))
    return problems


@step_type("http", options_schema={
    "type": "object",
    "properties": {
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
                            "get", "post", "put", "patch", "delete", "head", "options"]},
        "url": {"type": "string", "minLength": 1},
        "path": {"type": "string"},
        "headers": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
        "query": {"type": "object"},
        "body": {},
        "timeout": {"type": ["string", "number"]},
        "fetcher": _FETCHER_SCHEMA,
    },
    "additionalProperties": False,
}, params_schema={
    "type": "object",
    "properties": {"connector-id": {"type": "string", "minLength": 1}},
}, check=_check)
def http(ctx: StepContext) -> dict[str, Any]:
    """Send a request; the output is ``{status, statusText, headers, data}``, as Kibana's."""
    options = ctx.options
    method = str(options.get("method") or "GET").upper()
    fetcher = Fetcher.parse(options.get("fetcher"))
    url, connection = _target(ctx)
    headers = httpx.Headers(dict(connection.headers) if connection else {})
    own = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
    for name, value in own.items():
        headers[name] = value  # the step's own headers win over its connection's
    from_connection = {name.lower() for name, _ in (connection.headers if connection else ())
                       if name.lower() not in {k.lower() for k in own}}
    secrets = [value for _, value in (connection.headers if connection else ())]
    if not fetcher.keep_alive:
        headers["Connection"] = "close"
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
    client = shared_client(ctx.egress)
    try:
        request = client.build_request(method, url, headers=headers, content=content,
                                       params=options.get("query"), timeout=timeout)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, TypeError) as exc:
        # TypeError: a query value httpx cannot write (a mapping, a list of mappings)
        raise StepFailed(f"{method} {url}: {_scrub(str(exc), secrets)}", retryable=False) from None
    response, data = _exchange(ctx, request, fetcher, connection, from_connection, secrets)
    output = {"status": response.status_code, "statusText": response.reason_phrase,
              "headers": dict(response.headers), "data": data}
    where = f"{response.request.method} {response.request.url}"
    if not response.is_success:
        message = data.get("message") if isinstance(data, dict) else None
        suffix = f": {message}" if isinstance(message, str) and message else ""
        raise StepFailed(
            _scrub(f"{where} answered [{response.status_code}] {response.reason_phrase}{suffix}",
                   secrets),
            retryable=response.status_code >= 500 or response.status_code == 429,
            details=output, retry_after=retry_after_seconds(response))
    ctx.log(f"{where} -> {response.status_code}")
    return output


def _target(ctx: StepContext) -> tuple[str, HttpConnectionLike | None]:
    """The URL the step calls, and the connection whose headers go with it."""
    options, connector_id = ctx.options, ctx.connector_id
    url, path = options.get("url"), options.get("path")
    connection: HttpConnectionLike | None = None
    if connector_id:
        found = _settings.connections.get(connector_id)
        if isinstance(found, HttpConnectionLike) and found.type == "http":
            connection = found
        elif found is not None:
            raise StepFailed(f"connector {connector_id!r} is a {getattr(found, 'type', '?')} "
                             "connection in SIGNOFF_CONNECTORS, and an http step takes an http "
                             "connection", retryable=False)
        elif url is None:
            raise StepFailed(f"connector {connector_id!r} is not in SIGNOFF_CONNECTORS, and the "
                             "step has no with.url: configure it as an http connection with "
                             "the base URL of its path", retryable=False)
        else:
            ctx.log(f"connector {connector_id!r} is not configured: calling with.url without "
                    "a connection's headers")
    if url is None and connection is None:
        raise StepFailed("an http step needs with.url, or a connector-id naming an http "
                         "connection", retryable=False)
    base = str(url) if url is not None else str(connection.url if connection else "")
    if url is not None and connection is not None and not within_base(base, connection.url):
        raise StepFailed(f"with.url {base} is outside connector {connector_id!r}'s base URL "
                         f"{connection.url}, where its headers may go; give a path under it",
                         retryable=False)
    if path is not None:
        try:
            return join_base(base, str(path)), connection
        except ValueError as exc:
            raise StepFailed(f"with.path: {exc}", retryable=False) from None
    return base, connection


def _exchange(ctx: StepContext, request: httpx.Request, fetcher: Fetcher,
              connection: HttpConnectionLike | None, from_connection: set[str],
              secrets: list[str]) -> tuple[httpx.Response, Any]:
    """Send ``request``, following redirects as ``fetcher`` says (each hop its own request,
    its connection checked by the egress policy); the last response and its parsed body."""
    hops = 0
    while True:
        client = shared_client(ctx.egress, verify=not _skips_verification(ctx, request, fetcher),
                               route=connect_route(connection))
        where = f"{request.method} {request.url}"
        try:
            response = client.send(request, stream=True, follow_redirects=False)
        except EgressBlocked as exc:
            raise EgressBlocked(exc.host, exc.address, exc.reason, request=where) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _transport_failure(where, exc, fetcher, secrets) from None
        try:
            if fetcher.follow_redirects and response.next_request is not None:
                if hops >= fetcher.max_redirects:
                    raise StepFailed(f"{where} redirected more than fetcher.max_redirects "
                                     f"({fetcher.max_redirects}) times", retryable=False)
                ctx.log(f"{where} -> {response.status_code}, redirected")
                request = _redirected(request, response.next_request, connection,
                                      from_connection)
                hops += 1
                continue
            return response, _parsed(response, _read(response, fetcher, where))
        except httpx.HTTPError as exc:
            raise _transport_failure(where, exc, fetcher, secrets) from None
        finally:
            response.close()


def _skips_verification(ctx: StepContext, request: httpx.Request, fetcher: Fetcher) -> bool:
    if not fetcher.skip_ssl_verification or request.url.scheme != "https":
        return False
    host = request.url.host.rstrip(".").lower()
    if host in _settings.insecure_tls_hosts:
        return True
    ctx.log(f"fetcher.skip_ssl_verification is not honoured for {host}: it is not listed in "
            "SIGNOFF_HTTP_INSECURE_TLS, so its certificate is checked")
    return False


def _redirected(previous: httpx.Request, following: httpx.Request,
                connection: HttpConnectionLike | None,
                from_connection: set[str]) -> httpx.Request:
    """The next hop's request, without the credentials that may not follow it there."""
    if (following.url.scheme, following.url.host, following.url.port) != \
            (previous.url.scheme, previous.url.host, previous.url.port):
        for name in [n for n in following.headers if is_credential_header(n)]:
            del following.headers[name]
    if connection is not None and not within_base(str(following.url), connection.url):
        for name in from_connection:
            following.headers.pop(name, None)
    return following


def _read(response: httpx.Response, fetcher: Fetcher, where: str) -> bytes:
    """The body, read as it streams; StepFailed as soon as it passes max_content_length."""
    limit = fetcher.max_content_length
    declared = response.headers.get("Content-Length", "")
    if limit is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(where, limit, f"declares {declared} bytes")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if limit is not None and size > limit:
            raise _too_large(where, limit, f"sent more than {size - len(chunk)} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(where: str, limit: float, what: str) -> StepFailed:
    return StepFailed(f"{where}: the response {what}, more than fetcher.max_content_length "
                      f"({limit:g} bytes); the request was aborted", retryable=False)


def _parsed(response: httpx.Response, body: bytes) -> Any:
    """The body as text, parsed when it is JSON (as axios, Kibana's client, parses it)."""
    text = body.decode(response.encoding or "utf-8", errors="replace")
    if not text.strip():
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _transport_failure(where: str, exc: httpx.HTTPError | httpx.InvalidURL, fetcher: Fetcher,
                       secrets: list[str]) -> StepFailed:
    message = _scrub(f"{type(exc).__name__}: {exc}", secrets)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return StepFailed(f"{where} failed: {message}", retryable=False)
    if "CERTIFICATE_VERIFY_FAILED" in message:
        hint = (" (fetcher.skip_ssl_verification is honoured only for the hosts listed in "
                "SIGNOFF_HTTP_INSECURE_TLS)" if fetcher.skip_ssl_verification else "")
        return StepFailed(f"{where} failed: the server's TLS certificate does not verify{hint}: "
                          f"{message}", retryable=False)
    return StepFailed(f"{where} failed: {message}")


def _scrub(message: str, secrets: list[str]) -> str:
    """``message`` without a connection's header values (h11 quotes a bad header's value)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "***").replace(repr(secret.encode())[2:-1], "***")
    return message


def retry_after_seconds(response: httpx.Response) -> float | None:
    """How long a 429 or 503 answer asks the caller to wait (``Retry-After``: seconds, or
    an HTTP date), or None."""
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
