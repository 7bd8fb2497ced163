"""A Kibana stand-in: the Cases API, detection alerts' status and Kibana's HTTP manners.

:class:`KibanaEmulator` serves a Starlette app on loopback (as ``slack_emulator`` does),
so Signoff's ``cases.*`` and ``kibana.*`` steps reach it over real HTTP with the
connection's URL and API key. What it answers as Kibana 9.5 does:

- ``/api/...`` in the default space and ``/s/{space}/api/...`` in any space it was given;
  each space has its own cases and alerts. An unknown space or path answers Kibana's 404.
- Authentication: ``Authorization: ApiKey <key>`` with one of :attr:`api_keys`, or
  ``Basic`` with one of :attr:`users`; anything else answers 401 with Kibana's body.
- Writes (POST, PUT, PATCH, DELETE) without a ``kbn-xsrf`` header answer 400
  ``Request must contain a kbn-xsrf header.``, checked after authentication as Kibana does.
- Every error has Kibana's shape ``{statusCode, error, message}``.
- :meth:`fail_next` answers the next calls with 429 (``Retry-After``) or a 5xx;
  :meth:`delay_next` answers them late (for clients' timeouts).
- ``GET /api/status``: the overall status (what ``signoff connectors check`` reads).
- Cases: ``POST /api/cases``, ``GET /api/cases/{id}``, ``PATCH /api/cases`` (each case
  with its ``version``: a stale one answers 409), ``POST /api/cases/{id}/comments`` with
  ``type: user`` (a comment) or ``type: alert`` (alerts attached, counted in
  ``totalAlerts``), ``GET /api/cases/{id}/comments/_find``.
- ``GET /api/cases/_find`` and ``GET /api/cases/alerts/{alert_id}``:
  :mod:`elastic_emulator.cases_search`.
- ``POST /api/agent_builder/converse``: Agent Builder's converse API, with scripted
  agents (:mod:`elastic_emulator.agent_builder`, one per space).
- ``POST /api/detection_engine/signals/tags``: ``ids`` and ``tags: {tags_to_add,
  tags_to_remove}`` (the same tag in both answers 400); tags read with :meth:`alert_tags`.
- ``POST /api/detection_engine/signals/status``: ``signal_ids`` (or a ``query`` of
  ``ids``/``terms`` on ``_id``) set to ``open``, ``acknowledged``, ``in-progress`` or
  ``closed``; the answer is Elasticsearch's update-by-query summary.

What it deliberately does not model: other Kibana APIs (they answer 404, as an unknown
route does), the Cases API's other routes (delete, push, configure, user actions),
external connectors on cases (every case has the ``none`` connector), case templates,
observables and custom field definitions, role privileges (any valid key may do
anything), the API key's id:secret encoding (keys are compared as given), sessions and
cookies, request validation beyond the fields named here, and alert documents
themselves (an alert is an id with a status, added with :meth:`add_alert`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from elastic_emulator.agent_builder import AgentBuilder, ConverseError
from elastic_emulator.cases_search import SearchError, cases_of_alert, find_cases
from slack_emulator.server import BackgroundServer, ServedInBackground

API_KEY = "kibana-emulator-api-key"
USER = ("elastic", "changeme")
VERSION = "9.5.0"
CASE_STATUSES = ("open", "in-progress", "closed")
SEVERITIES = ("low", "medium", "high", "critical")
ALERT_STATUSES = ("open", "acknowledged", "in-progress", "closed")
_REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}
_UPDATABLE = ("title", "description", "status", "severity", "tags", "assignees", "category",
              "customFields", "settings", "connector")
_CREATED_BY = {"username": "elastic", "full_name": None, "email": None, "profile_uid": None}


class KibanaError(Exception):
    """An answer in Kibana's error shape."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"statusCode": self.status,
                             "error": _REASONS.get(self.status, "Error"),
                             "message": self.message}, status_code=self.status,
                            headers=self.headers)


@dataclass
class Recorded:
    """A request the emulator received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Fault:
    """What the next ``remaining`` requests matching ``path`` are answered with."""

    status: int
    path: str  # a prefix of the request's path; "" matches every request
    retry_after: int | None
    remaining: int


@dataclass
class Space:
    """One Kibana space's cases and detection alerts."""

    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)  # alert id -> workflow status
    alert_tags: dict[str, list[str]] = field(default_factory=dict)  # alert id -> its tags
    agent_builder: AgentBuilder = field(default_factory=AgentBuilder)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _version(n: int) -> str:
    # Kibana's saved-object version: base64 of [seq_no, primary_term]
    return base64.b64encode(json.dumps([n, 1]).encode()).decode()


class KibanaEmulator(ServedInBackground):
    """A fake Kibana on ``127.0.0.1``, served in a background thread."""

    def __init__(self, *, api_keys: tuple[str, ...] = (API_KEY,),
                 users: tuple[tuple[str, str], ...] = (USER,),
                 spaces: tuple[str, ...] = ("default",), host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.api_keys = api_keys
        self.users = users
        self._space_names = spaces
        self._lock = threading.Lock()
        self.spaces: dict[str, Space] = {name: Space() for name in spaces}
        self._requests: list[Recorded] = []
        self._faults: list[Fault] = []
        self._delays: list[list[float]] = []  # [seconds, remaining]
        self._seq = 0
        self.app = Starlette(routes=[Route("/{path:path}", self._handle,
                                           methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
        self._server = BackgroundServer(self.app, host=host, port=port)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def reset(self) -> None:
        """Forget every case, alert, request and pending fault."""
        with self._lock:
            self.spaces = {name: Space() for name in self._space_names}
            self._requests.clear()
            self._faults.clear()
            self._delays.clear()

    # -- what tests arrange and read ----------------------------------------------------------

    def add_alert(self, alert_id: str, *, status: str = "open", space: str = "default") -> None:
        """A detection alert ``kibana.SetAlertsStatus`` may find."""
        with self._lock:
            self.spaces[space].alerts[alert_id] = status

    def alert_status(self, alert_id: str, space: str = "default") -> str | None:
        with self._lock:
            return self.spaces[space].alerts.get(alert_id)

    def alert_tags(self, alert_id: str, space: str = "default") -> list[str]:
        with self._lock:
            return list(self.spaces[space].alert_tags.get(alert_id, []))

    def agent_builder(self, space: str = "default") -> AgentBuilder:
        """The space's Agent Builder: script agents' answers, read conversations (hold no
        reference across :meth:`reset`)."""
        return self.spaces[space].agent_builder

    def cases(self, space: str = "default") -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(json.dumps(c)) for c in self.spaces[space].cases.values()]

    @property
    def requests(self) -> list[Recorded]:
        """Every request received, oldest first."""
        with self._lock:
            return list(self._requests)

    def fail_next(self, *, status: int = 429, path: str = "", retry_after: int | None = 1,
                  count: int = 1) -> None:
        """Answer the next ``count`` requests whose path starts with ``path`` with ``status``
        (429 with ``Retry-After: retry_after``)."""
        with self._lock:
            self._faults.append(Fault(status, path, retry_after if status == 429 else None,
                                      count))

    def delay_next(self, seconds: float, *, count: int = 1) -> None:
        """Answer the next ``count`` requests ``seconds`` late (as Kibana would, otherwise)."""
        with self._lock:
            self._delays.append([seconds, count])

    # -- serving ------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode(errors="replace")
        path = request.url.path
        with self._lock:
            delay = self._delays[0][0] if self._delays else 0.0
            if self._delays:
                self._delays[0][1] -= 1
                if self._delays[0][1] <= 0:
                    self._delays.pop(0)
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            self._requests.append(Recorded(request.method, path, dict(request.headers), body))
            try:
                return self._answer(request, path, body)
            except KibanaError as exc:
                return exc.response()

    def _answer(self, request: Request, path: str, body: Any) -> Response:
        fault = next((f for f in self._faults if path.startswith(f.path)), None)
        if fault is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            raise KibanaError(fault.status, "Too Many Requests" if fault.status == 429
                              else "An internal server error occurred.", headers)
        self._authenticate(request.headers.get("authorization", ""))
        if request.method != "GET" and "kbn-xsrf" not in request.headers:
            raise KibanaError(400, "Request must contain a kbn-xsrf header.")
        space_name, route = "default", path
        if path.startswith("/s/"):
            space_name, _, tail = path[len("/s/"):].partition("/")
            route = "/" + tail
        space = self.spaces.get(space_name)
        if space is None:
            raise KibanaError(404, "Not Found")
        route = route.rstrip("/") or "/"
        parts = route.strip("/").split("/")
        if request.method == "GET" and parts[:3] == ["api", "cases", "_find"] \
                and len(parts) == 3:
            return JSONResponse(self._search(find_cases, list(space.cases.values()),
                                             request.query_params.getlist))
        if request.method == "GET" and parts[:3] == ["api", "cases", "alerts"] \
                and len(parts) == 4:
            return JSONResponse(cases_of_alert(list(space.cases.values()), parts[3],
                                               request.query_params.getlist("owner")))
        return JSONResponse(self._route(request.method, route, space, body,
                                        request.query_params.get("includeComments")))

    @staticmethod
    def _search(search: Any, cases: list[dict[str, Any]], query: Any) -> Any:
        try:
            return search(cases, query)
        except SearchError as exc:
            raise KibanaError(400, str(exc)) from None

    def _authenticate(self, header: str) -> None:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "apikey" and credentials in self.api_keys:
            return
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credentials).decode().partition(":")
            except ValueError:
                user = password = ""
            if (user, password) in self.users:
                return
        raise KibanaError(401, "[security_exception\n\tRoot causes:\n\t\tsecurity_exception: "
                          "unable to authenticate with provided credentials and anonymous access"
                          " is not allowed for this request]: unable to authenticate with "
                          "provided credentials and anonymous access is not allowed for this "
                          "request")

    def _route(self, method: str, route: str, space: Space, body: Any,
               include_comments: str | None) -> Any:
        parts = route.strip("/").split("/")
        if (method, route) == ("GET", "/api/status"):
            return {"name": "kibana-emulator", "uuid": "5b2de169-2785-441b-ae8c-186a1936b17d",
                    "version": {"number": VERSION, "build_snapshot": False},
                    "status": {"overall": {"level": "available",
                                           "summary": "All services are available"}}}
        if (method, route) == ("POST", "/api/cases"):
            return self._create_case(space, _object(body))
        if (method, route) == ("PATCH", "/api/cases"):
            return self._update_cases(space, _object(body))
        if parts[:2] == ["api", "cases"] and len(parts) == 3 and method == "GET":
            case = self._case(space, parts[2])
            return case if include_comments != "false" else {**case, "comments": []}
        if parts[:2] == ["api", "cases"] and parts[3:] == ["comments"] and method == "POST":
            return self._comment(space, parts[2], _object(body))
        if parts[:2] == ["api", "cases"] and parts[3:] == ["comments", "_find"] \
                and method == "GET":
            comments = self._case(space, parts[2])["comments"]
            return {"comments": comments, "page": 1, "per_page": 20, "total": len(comments)}
        if (method, route) == ("POST", "/api/detection_engine/signals/status"):
            return self._set_alerts_status(space, _object(body))
        if (method, route) == ("POST", "/api/detection_engine/signals/tags"):
            return self._set_alert_tags(space, _object(body))
        if (method, route) == ("POST", "/api/agent_builder/converse"):
            try:
                return space.agent_builder.converse(_object(body))
            except ConverseError as exc:
                raise KibanaError(exc.status, exc.message) from None
        raise KibanaError(404, "Not Found")

    # -- cases --------------------------------------------------------------------------------

    def _next_version(self) -> str:
        self._seq += 1
        return _version(self._seq)

    def _create_case(self, space: Space, body: dict[str, Any]) -> dict[str, Any]:
        for name in ("title", "description", "owner", "tags", "settings", "connector"):
            if name not in body:
                raise KibanaError(400, f'Invalid value "undefined" supplied to "{name}"')
        unknown = sorted(set(body) - {*_UPDATABLE, "owner"})
        if unknown:
            raise KibanaError(400, f'invalid keys "{",".join(unknown)}"')
        if not isinstance(body["title"], str) or not body["title"].strip():
            raise KibanaError(400, "The title field cannot be an empty string.")
        self._check_fields(body)
        case = {"id": str(uuid.uuid4()), "version": self._next_version(),
                "title": body["title"], "description": body["description"],
                "owner": body["owner"], "tags": list(body["tags"]),
                "severity": body.get("severity", "low"), "status": "open",
                "settings": body["settings"], "connector": body["connector"],
                "assignees": list(body.get("assignees") or []),
                "category": body.get("category"), "customFields": body.get("customFields") or [],
                "comments": [], "totalComment": 0, "totalAlerts": 0, "observables": [],
                "total_observables": 0, "created_at": _now(), "created_by": _CREATED_BY,
                "updated_at": None, "updated_by": None, "closed_at": None, "closed_by": None,
                "duration": None, "external_service": None,
                "incremental_id": len(space.cases) + 1}
        space.cases[case["id"]] = case
        return case

    def _check_fields(self, fields: dict[str, Any]) -> None:
        if "severity" in fields and fields["severity"] not in SEVERITIES:
            raise KibanaError(400, f'Invalid value "{fields["severity"]}" supplied to "severity"')
        if "status" in fields and fields["status"] not in CASE_STATUSES:
            raise KibanaError(400, f'Invalid value "{fields["status"]}" supplied to "status"')

    def _case(self, space: Space, case_id: str) -> dict[str, Any]:
        case = space.cases.get(case_id)
        if case is None:
            raise KibanaError(404, f"Saved object [cases/{case_id}] not found")
        return case

    def _update_cases(self, space: Space, body: dict[str, Any]) -> list[dict[str, Any]]:
        updates = body.get("cases")
        if not isinstance(updates, list) or not updates:
            raise KibanaError(400, 'Invalid value "undefined" supplied to "cases"')
        for update in updates:
            if not isinstance(update, dict) or "id" not in update or "version" not in update:
                raise KibanaError(400, 'Invalid value "undefined" supplied to "cases,version"')
            case = self._case(space, str(update["id"]))
            if update["version"] != case["version"]:
                raise KibanaError(409, f"This case {case['id']} has been updated. Please "
                                  "refresh before saving additional updates.")
            unknown = sorted(set(update) - {*_UPDATABLE, "id", "version"})
            if unknown:
                raise KibanaError(400, f'invalid keys "{",".join(unknown)}"')
            self._check_fields(update)
        now, done = _now(), []
        for update in updates:
            case = space.cases[str(update["id"])]
            case.update({k: v for k, v in update.items() if k in _UPDATABLE})
            if update.get("status") == "closed":
                case.update(closed_at=now, closed_by=_CREATED_BY)
            case.update(updated_at=now, updated_by=_CREATED_BY, version=self._next_version())
            done.append({k: v for k, v in case.items() if k != "comments"})
        return done

    def _comment(self, space: Space, case_id: str, body: dict[str, Any]) -> dict[str, Any]:
        case = self._case(space, case_id)
        kind = body.get("type")
        if kind == "user":
            if not isinstance(body.get("comment"), str) or not body["comment"].strip():
                raise KibanaError(400, "The comment field cannot be an empty string.")
            fields = {"comment": body["comment"]}
        elif kind == "alert":
            for name in ("alertId", "index", "rule"):
                if name not in body:
                    raise KibanaError(400, f'Invalid value "undefined" supplied to "{name}"')
            fields = {"alertId": body["alertId"], "index": body["index"], "rule": body["rule"]}
            ids = body["alertId"] if isinstance(body["alertId"], list) else [body["alertId"]]
            case["totalAlerts"] += len(ids)
        else:
            raise KibanaError(400, f'Invalid value "{kind}" supplied to "type"')
        if "owner" not in body:
            raise KibanaError(400, 'Invalid value "undefined" supplied to "owner"')
        case["comments"].append({"id": str(uuid.uuid4()), "version": self._next_version(),
                                 "type": kind, "owner": body["owner"], **fields,
                                 "created_at": _now(), "created_by": _CREATED_BY,
                                 "pushed_at": None, "pushed_by": None, "updated_at": None,
                                 "updated_by": None})
        case["totalComment"] = sum(1 for c in case["comments"] if c["type"] == "user")
        case.update(updated_at=_now(), updated_by=_CREATED_BY, version=self._next_version())
        return case

    # -- detection alerts ---------------------------------------------------------------------

    def _set_alerts_status(self, space: Space, body: dict[str, Any]) -> dict[str, Any]:
        status = body.get("status")
        if status not in ALERT_STATUSES:
            raise KibanaError(400, f'Invalid value "{status}" supplied to "status"')
        if "signal_ids" in body:
            ids = body["signal_ids"]
            if not isinstance(ids, list) or not ids:
                raise KibanaError(400, "[request body]: signal_ids: Array must contain at "
                                  "least 1 element(s)")
        elif isinstance(body.get("query"), dict):
            ids = _ids_of(body["query"])
        else:
            raise KibanaError(400, "Status update must include a query or signal_ids")
        matched = [i for i in ids if i in space.alerts]
        for alert_id in matched:
            space.alerts[alert_id] = status
        return _update_summary(len(matched))


    def _set_alert_tags(self, space: Space, body: dict[str, Any]) -> dict[str, Any]:
        ids, tags = body.get("ids"), body.get("tags")
        if not isinstance(ids, list) or not ids:
            raise KibanaError(400, "[request body]: ids: Array must contain at least 1 "
                                   "element(s)")
        if not isinstance(tags, dict):
            raise KibanaError(400, "[request body]: tags: Required")
        add, remove = tags.get("tags_to_add") or [], tags.get("tags_to_remove") or []
        if set(add) & set(remove):
            raise KibanaError(400, "Duplicated tags were found in the tags_to_add and "
                                   "tags_to_remove parameters.")
        matched = [i for i in ids if i in space.alerts]
        for alert_id in matched:
            current = [t for t in space.alert_tags.get(alert_id, []) if t not in remove]
            space.alert_tags[alert_id] = current + [t for t in add if t not in current]
        return _update_summary(len(matched))


def _update_summary(updated: int) -> dict[str, Any]:
    return {"took": 3, "timed_out": False, "total": updated, "updated": updated,
            "deleted": 0, "batches": 1 if updated else 0, "version_conflicts": 0,
            "noops": 0, "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
            "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": []}


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise KibanaError(400, "[request body]: expected a plain object value, but found "
                          f"[{type(body).__name__ if body is not None else 'null'}] instead.")
    return body


def _ids_of(query: dict[str, Any]) -> list[str]:
    """The alert ids an ``ids`` or ``terms: {_id: [...]}`` query names; others name none."""
    if isinstance(query.get("ids"), dict):
        return [str(v) for v in query["ids"].get("values") or []]
    terms = query.get("terms")
    if isinstance(terms, dict) and isinstance(terms.get("_id"), list):
        return [str(v) for v in terms["_id"]]
    raise KibanaError(400, "the emulator reads only an ids or terms-on-_id query")
