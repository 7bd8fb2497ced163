"""``kibana.request``, ``kibana.SetAlertsStatus`` and ``kibana.SetAlertTags``, and the Kibana client the
``cases.*`` steps (:mod:`engine.steps.cases`) share.

A step calls the Kibana of its ``kibana`` connection (``SIGNOFF_CONNECTORS``: ``connector-id``,
else the connection called ``kibana``, else the only one of type ``kibana``), as Kibana's
own ``KibanaActionStepImpl`` calls itself: ``Authorization`` from the connection (its API
key, else basic auth), ``kbn-xsrf: true`` and ``Content-Type: application/json`` added,
the path under the connection's space (``/s/{space}/api/...`` unless it is ``default``;
a path that already names a space, and the raw ``request:`` form, are sent as written, as
Kibana sends them). The output is the response body, parsed when it is JSON (``{}`` for
a 204), as Kibana's.

Requests go through the ``http`` step's checked client (:func:`engine.steps.http.
shared_client`): the worker's egress policy applies to every connection, and redirects
are never followed, so the credentials go nowhere but the connection's URL. Every call
has a timeout (the step's ``timeout``, else 30 s). A failure is :class:`StepFailed` whose
message carries Kibana's ``statusCode``, ``error`` and ``message``: 429 and 5xx (and a
connection that fails or times out) are retryable by ``on-failure.retry``, other answers
not; a 429's ``Retry-After`` is in the message and the details. No credential is in an
output, an error, a log line or the details.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import httpx

from engine.definition.egress import DEFAULT_POLICY, EgressPolicy, join_base
from engine.definition.step_types import StepContext, step_type
from engine.errors import EgressBlocked, StepFailed
from engine.steps.http import (
    DEFAULT_TIMEOUT,
    Fetcher,
    _skips_verification,
    retry_after_seconds,
    shared_client,
)

FAMILY = "kibana"  # the connection a cases.* or kibana.* step uses without a connector-id
TYPES = ("kibana",)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
# Kibana's KibanaStepMetaSchema: routing to Kibana's own host, which has no meaning here.
_ROUTING_ONLY = ("use_server_info", "use_localhost")


@runtime_checkable
class KibanaConnectionLike(Protocol):
    """A ``kibana`` connection (:class:`engine.connectors.KibanaConnection`), as steps read it."""

    id: str
    type: str
    url: str
    api_key: str | None
    username: str | None
    password: str | None
    space: str


def kibana_call(ctx: StepContext, method: str, path: str, *, body: Any = None,
                query: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, in_space: bool = True,
                fetcher: Fetcher | None = None) -> Any:
    """Call ``path`` on the step's Kibana; the parsed body, or StepFailed."""
    connection = ctx.connection(FAMILY, TYPES)
    timeout = ctx.timeout_seconds or DEFAULT_TIMEOUT
    return _call(connection, ctx.egress, method, path, body=body, query=query,
                 headers=headers, in_space=in_space, timeout=timeout, ctx=ctx,
                 fetcher=fetcher or Fetcher())


def space_path(connection: KibanaConnectionLike, path: str) -> str:
    """``path`` in the connection's space: ``/s/{space}`` before it unless the space is
    ``default`` or the path names one."""
    path = "/" + path.lstrip("/")
    if connection.space == "default" or path.startswith("/s/"):
        return path
    return f"/s/{connection.space}{path}"


def _auth(connection: KibanaConnectionLike) -> str:
    if connection.api_key:
        return f"ApiKey {connection.api_key}"
    pair = f"{connection.username}:{connection.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _call(connection: KibanaConnectionLike, egress: EgressPolicy, method: str, path: str, *,
          body: Any, query: Mapping[str, Any] | None, headers: Mapping[str, str] | None,
          in_space: bool, timeout: float, ctx: StepContext | None = None,
          fetcher: Fetcher | None = None) -> Any:
    secrets = [s for s in (connection.api_key, connection.password, _auth(connection)) if s]
    target = space_path(connection, path) if in_space else "/" + path.lstrip("/")
    try:
        url = join_base(connection.url, target)
    except ValueError as exc:
        raise StepFailed(f"path: {exc}", retryable=False) from None
    sent = httpx.Headers({"kbn-xsrf": "true", "Content-Type": "application/json",
                          "Authorization": _auth(connection)})
    for name, value in (headers or {}).items():
        sent[str(name)] = str(value)  # the step's own headers win, as in Kibana
    fetcher = fetcher or Fetcher()
    if not fetcher.keep_alive:
        sent["Connection"] = "close"
    content = json.dumps(body).encode() if body is not None else None
    where = f"{method} {target}"
    client = shared_client(egress)
    try:
        request = client.build_request(method, url, headers=sent, content=content,
                                       params=dict(query) if query else None, timeout=timeout)
        if ctx is not None and _skips_verification(ctx, request, fetcher):
            client = shared_client(egress, verify=False)
        response = client.send(request, follow_redirects=False)
    except EgressBlocked as exc:
        raise EgressBlocked(exc.host, exc.address, exc.reason, request=where) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, TypeError) as exc:
        raise StepFailed(f"{where}: {_scrub(str(exc), secrets)}", retryable=False) from None
    except httpx.HTTPError as exc:  # timeouts and refused connections: worth another try
        raise StepFailed(f"{where} failed: {_scrub(f'{type(exc).__name__}: {exc}', secrets)}"
                         ) from None
    data = _parsed(response)
    if not response.is_success:
        raise _failure(where, response, data, secrets)
    if ctx is not None:
        ctx.log(f"{where} -> {response.status_code}")
    if response.status_code in (204, 304):
        return {}
    return data


def _parsed(response: httpx.Response) -> Any:
    if not response.content.strip():
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return response.text


def _failure(where: str, response: httpx.Response, data: Any, secrets: list[str]) -> StepFailed:
    status = response.status_code
    error = data if isinstance(data, dict) else {"statusCode": status,
                                                 "error": response.reason_phrase,
                                                 "message": str(data or "")}
    message = f"{where} answered [{status}] {error.get('error') or response.reason_phrase}"
    if error.get("message"):
        message += f": {error['message']}"
    details: dict[str, Any] = {"statusCode": status, "error": error.get("error"),
                               "message": error.get("message")}
    retry_after = response.headers.get("Retry-After")
    if status == 429 and retry_after:
        message += f" (Retry-After: {retry_after}s)"
        details["retryAfter"] = retry_after
    return StepFailed(_scrub(message, secrets), retryable=status == 429 or status >= 500,
                      details=json.loads(_scrub(json.dumps(details), secrets)),
                      retry_after=retry_after_seconds(response))


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def check_kibana(connection: Any, egress: EgressPolicy = DEFAULT_POLICY) -> str:
    """``GET /api/status`` with the connection's credentials: Kibana's version and status
    (``signoff connectors check``, through :data:`engine.connectors.CONNECTION_CHECKS`)."""
    status = _call(connection, egress, "GET", "/api/status", body=None, query=None,
                   headers=None, in_space=True, timeout=10.0)
    overall = (status.get("status") or {}).get("overall") or {} if isinstance(status, dict) \
        else {}
    version = (status.get("version") or {}).get("number") if isinstance(status, dict) else None
    return (f"Kibana {version or '?'} at {connection.url} (space {connection.space}): "
            f"{overall.get('summary') or overall.get('level') or 'answered'}")


# -- kibana.request ---------------------------------------------------------------------------

_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {
        "method": {"enum": METHODS},
        "path": {"type": "string", "minLength": 1},
        "body": {},
        "query": {"type": "object"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["path"],
    "additionalProperties": False,
}
_FETCHER = {"type": "object", "properties": {
    "skip_ssl_verification": {"type": "boolean"}, "follow_redirects": {"type": "boolean"},
    "max_redirects": {"type": "integer", "minimum": 0}, "keep_alive": {"type": "boolean"},
    "max_content_length": {"type": "number"}}, "additionalProperties": False}


def _check_request(options: Mapping[str, Any], params: Mapping[str, Any]
                   ) -> list[tuple[tuple[str | int, ...], str]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    raw = "request" in options
    if raw and any(k in options for k in ("method", "path", "body", "query", "headers")):
        problems.append((("with",), "give the call either as `request: {method, path, ...}` "
                                    "or as `method`, `path`, ... directly, not both"))
    elif not raw and "path" not in options:
        problems.append((("with",), "kibana.request needs a `path` (or a `request:` with one)"))
    for name in _ROUTING_ONLY:
        if name in options:
            problems.append((("with", name), f"`{name}` routes to Kibana's own host; Signoff "
                                             "calls the kibana connection's url, so leave it "
                                             "out"))
    return problems


@step_type("kibana.request", options_schema={
    "type": "object",
    "properties": {**_REQUEST["properties"], "request": _REQUEST, "fetcher": _FETCHER,
                   "debug": {"type": "boolean"}, "use_server_info": {"type": "boolean"},
                   "use_localhost": {"type": "boolean"}},
    "additionalProperties": False,
}, params_schema={"type": "object",
                  "properties": {"connector-id": {"type": "string", "minLength": 1}}},
    check=_check_request)
def kibana_request(ctx: StepContext) -> Any:
    """Call any Kibana API; the output is the response body, as Kibana's."""
    options = ctx.options
    for name in _ROUTING_ONLY:
        if options.get(name):
            raise StepFailed(f"with.{name} is not supported: Signoff calls the kibana "
                             "connection's url", retryable=False)
    raw = options.get("request")
    call = raw if isinstance(raw, Mapping) else options
    if not call.get("path"):
        raise StepFailed("kibana.request needs with.path", retryable=False)
    method = str(call.get("method") or "GET").upper()
    if method not in METHODS:
        raise StepFailed(f"with.method {method!r} is not one of {', '.join(METHODS)}",
                         retryable=False)
    query = call.get("query")
    result = kibana_call(ctx, method, str(call["path"]), body=call.get("body"),
                         query=query if isinstance(query, Mapping) else None,
                         headers=call.get("headers"), in_space=raw is None,
                         fetcher=Fetcher.parse(options.get("fetcher")))
    if options.get("debug") is True and isinstance(result, dict):
        connection = ctx.connection(FAMILY, TYPES)
        path = str(call["path"])
        full = connection.url.rstrip("/") + (space_path(connection, path) if raw is None
                                             else "/" + path.lstrip("/"))
        return {**result, "_debug": {"fullUrl": full, "method": method}}
    return result


# -- kibana.SetAlertsStatus -------------------------------------------------------------------

@step_type("kibana.SetAlertsStatus", options_schema={
    "type": "object",
    "properties": {
        "signal_ids": {"type": ["array", "string"], "items": {"type": "string"}},
        "query": {"type": "object"},
        "status": {"type": "string"},
        "reason": {"type": "string"},
        "conflicts": {"enum": ["abort", "proceed"]},
        "fetcher": _FETCHER,
    },
    "required": ["status"],
    "additionalProperties": False,
}, params_schema={"type": "object",
                  "properties": {"connector-id": {"type": "string", "minLength": 1}}})
def set_alerts_status(ctx: StepContext) -> Any:
    """Set detection alerts' status (POST /api/detection_engine/signals/status); the output
    is Kibana's answer, an update-by-query summary."""
    options = ctx.options
    body: dict[str, Any] = {"status": options.get("status")}
    ids = options.get("signal_ids")
    if isinstance(ids, str):  # a template rendered to one id, or to a JSON list
        try:
            ids = json.loads(ids)
        except ValueError:
            ids = [ids]
        ids = ids if isinstance(ids, list) else [ids]
    if ids is not None:
        body["signal_ids"] = [str(i) for i in ids]
    elif options.get("query") is not None:
        body["query"] = options["query"]
    else:
        raise StepFailed("kibana.SetAlertsStatus needs with.signal_ids or with.query",
                         retryable=False)
    for name in ("reason", "conflicts"):
        if options.get(name) is not None:
            body[name] = options[name]
    return kibana_call(ctx, "POST", "/api/detection_engine/signals/status", body=body,
                       fetcher=Fetcher.parse(options.get("fetcher")))


# -- kibana.SetAlertTags ----------------------------------------------------------------------

_TAG_LIST = {"type": "array", "items": {"type": "string"}}


@step_type("kibana.SetAlertTags", options_schema={
    "type": "object",
    "properties": {
        "ids": {"type": ["array", "string"], "items": {"type": "string"}},
        "tags": {"type": "object", "properties": {"tags_to_add": _TAG_LIST,
                                                  "tags_to_remove": _TAG_LIST},
                 "required": ["tags_to_add", "tags_to_remove"], "additionalProperties": False},
        "fetcher": _FETCHER,
    },
    "required": ["ids", "tags"],
    "additionalProperties": False,
}, params_schema={"type": "object",
                  "properties": {"connector-id": {"type": "string", "minLength": 1}}})
def set_alert_tags(ctx: StepContext) -> Any:
    """Add and remove detection alerts' tags (POST /api/detection_engine/signals/tags); the
    output is Kibana's answer, an update-by-query summary."""
    options = ctx.options
    ids = _id_list(options.get("ids"))
    if not ids:
        raise StepFailed("kibana.SetAlertTags needs with.ids", retryable=False)
    tags = options.get("tags") or {}
    body = {"ids": ids, "tags": {"tags_to_add": list(tags.get("tags_to_add") or []),
                                 "tags_to_remove": list(tags.get("tags_to_remove") or [])}}
    return kibana_call(ctx, "POST", "/api/detection_engine/signals/tags", body=body,
                       fetcher=Fetcher.parse(options.get("fetcher")))


def _id_list(ids: Any) -> list[str]:
    """Ids as given, or a template rendered to one id or to a JSON list of them."""
    if isinstance(ids, str):
        try:
            ids = json.loads(ids)
        except ValueError:
            ids = [ids]
        ids = ids if isinstance(ids, list) else [ids]
    return [str(i) for i in ids or []]
