"""An Elasticsearch stand-in on loopback: indices in memory, Elasticsearch's REST shapes.

:class:`ElasticsearchEmulator` serves a Starlette app with uvicorn in a background thread
(the Slack emulator's :class:`slack_emulator.server.BackgroundServer`), so Signoff's
``elasticsearch.*`` steps talk to it over real HTTP as they would to a cluster.

What it answers, in Elasticsearch's shapes:

- ``GET /``: the cluster's name and version (what ``signoff connectors check`` reads).
- ``PUT /<index>``: creates an index (``resource_already_exists_exception`` if it exists),
  keeping the ``mappings``, ``settings`` and ``aliases`` it was given (not applied).
- ``POST /<index>/_update/<id>``: ``doc`` merged into the document (objects recursively;
  ``noop`` when nothing changes, unless ``detect_noop: false``), ``doc_as_upsert`` or
  ``upsert`` when it is missing (201 ``created``), else 404
  ``document_missing_exception``; a ``script`` is refused (not run).
- ``PUT|POST /<index>/_doc/<id>``, ``POST /<index>/_doc``: index a document (201
  ``created`` or 200 ``updated``, ``_version`` and ``_seq_no`` counting up); the index is
  made on first write. ``GET /<index>/_doc/<id>``: ``found`` true or false (404).
- ``GET|POST /_search``, ``/<patterns>/_search``: the query DSL of
  :mod:`elastic_emulator.elasticsearch_query` with ``size`` (default 10), ``from``,
  ``sort`` (field names or ``{field: {order}}``/``{field: order}``, ``_score``),
  ``_source`` (true/false, a pattern or a list of them, ``{includes, excludes}``),
  ``track_total_hits``; ``hits.total`` is ``{value, relation: "eq"}``. ``size``, ``from``
  and ``_source`` are also read from the URL.
- ``POST /_query``: ES|QL, :mod:`elastic_emulator.elasticsearch_esql`.
- ``GET /_cluster/health``: green, one node.

Authentication: every request needs ``Authorization: ApiKey <key>`` with a key of
:attr:`api_keys` or ``Basic`` with a user of :attr:`users`; else 401
``security_exception`` with ``WWW-Authenticate``, as Elasticsearch answers.
:meth:`fail_next` makes the next calls answer 429 ``es_rejected_execution_exception``
(with ``Retry-After``) or a 5xx, :meth:`stall_next` makes them slow. Every request is
recorded (:attr:`requests`).

Deliberately not modelled: mappings and analysis (no text vs keyword, no analyzers,
no scoring: every hit scores 1.0), shards and replicas (``_shards`` is fixed), refresh
(a write is searchable at once), aggregations other than ``terms`` (others answer
``parsing_exception``), the query DSL beyond :mod:`~elastic_emulator.elasticsearch_query`,
``q=`` URL searches, scroll, PIT, ``search_after``, highlighting, ``_bulk``, ``_update``,
deletes, aliases, data streams, index templates, API-key creation or privileges (any
known key may do anything), TLS, and persistence (indices live as long as the process).
Unknown routes answer ``no handler found for uri`` (400), as Elasticsearch does.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from elastic_emulator.elasticsearch_esql import run_esql
from elastic_emulator.elasticsearch_query import QueryError, compare, field_values, matches
from slack_emulator.server import BackgroundServer, ServedInBackground

VERSION = "9.1.0"
_AUTHENTICATE = ['Basic realm="security", charset="UTF-8"', "ApiKey"]
_SHARDS = {"total": 2, "successful": 1, "failed": 0}


def error_body(type_: str, reason: str, status: int, **extra: Any) -> dict[str, Any]:
    """Elasticsearch's error shape: ``{error: {root_cause, type, reason}, status}``."""
    cause = {"type": type_, "reason": reason, **extra}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


@dataclass
class _Fault:
    status: int  # 0: answer normally, after `stall` seconds
    retry_after: int | None
    remaining: int
    stall: float = 0.0


@dataclass
class _Index:
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)  # mappings, settings, aliases given
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


class ElasticsearchEmulator(ServedInBackground):
    """A one-node Elasticsearch in memory, served on ``127.0.0.1`` in a background thread."""

    def __init__(self, *, api_keys: tuple[str, ...] = ("ZW11bGF0b3I6c2VjcmV0LWtleQ==",),
                 users: Mapping[str, str] | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.api_keys = set(api_keys)
        self.users = dict(users or {})
        self.indices: dict[str, _Index] = {}
        self.requests: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._seq_no = 0
        self._server = BackgroundServer(_build_app(self), host=host, port=port)

    @property
    def api_key(self) -> str:
        """A key the emulator accepts (``Authorization: ApiKey <it>``)."""
        return sorted(self.api_keys)[0]

    @property
    def url(self) -> str:
        return self._server.base_url

    def reset(self) -> None:
        """Forget indices, recorded requests and pending faults."""
        with self._lock:
            self.indices.clear()
            self.requests.clear()
            self._faults.clear()

    def fail_next(self, status: int = 429, *, times: int = 1,
                  retry_after: int | None = 1) -> None:
        """Answer the next ``times`` requests with ``status`` (429: rejected execution,
        with ``Retry-After``; 5xx: an internal error)."""
        with self._lock:
            self._faults.append(_Fault(status, retry_after if status == 429 else None, times))

    def stall_next(self, seconds: float, *, times: int = 1) -> None:
        """Answer the next ``times`` requests only after ``seconds`` (a slow cluster)."""
        with self._lock:
            self._faults.append(_Fault(0, None, times, stall=seconds))

    def put(self, index: str, source: Mapping[str, Any], doc_id: str | None = None) -> str:
        """Index ``source`` (as ``PUT /index/_doc/id`` would); its id."""
        return self._write(index, dict(source), doc_id)[0]["_id"]

    # -- what the routes do -------------------------------------------------------------------

    def _write(self, index: str, source: dict[str, Any], doc_id: str | None
               ) -> tuple[dict[str, Any], int]:
        with self._lock:
            target = self.indices.setdefault(index, _Index())
            self._seq_no += 1
            doc_id = doc_id or base64.urlsafe_b64encode(
                self._seq_no.to_bytes(8, "big")).decode().rstrip("=")
            existed = doc_id in target.docs
            target.docs[doc_id] = source
            target.versions[doc_id] = target.versions.get(doc_id, 0) + 1
            return ({"_index": index, "_id": doc_id, "_version": target.versions[doc_id],
                     "result": "updated" if existed else "created", "_shards": _SHARDS,
                     "_seq_no": self._seq_no - 1, "_primary_term": 1},
                    200 if existed else 201)

    def _update(self, index: str, doc_id: str, body: Mapping[str, Any]
                ) -> tuple[dict[str, Any], int]:
        if "script" in body:
            raise QueryError("illegal_argument_exception",
                             "scripts are not run by this emulator")
        partial = body.get("doc")
        with self._lock:
            target = self.indices.get(index)
            current = target.docs.get(doc_id) if target is not None else None
            if current is None:
                if body.get("doc_as_upsert") is True and isinstance(partial, dict):
                    fresh: Any = partial
                elif isinstance(body.get("upsert"), dict):
                    fresh = body["upsert"]
                else:
                    raise QueryError("document_missing_exception",
                                     f"[{doc_id}]: document missing", 404)
                created = True
            else:
                if not isinstance(partial, dict):
                    raise QueryError("action_request_validation_exception",
                                     "Validation Failed: 1: script or doc is missing;")
                fresh = _merged(current, partial)
                created = False
                if fresh == current and body.get("detect_noop", True) is not False:
                    return ({"_index": index, "_id": doc_id,
                             "_version": target.versions[doc_id],  # type: ignore[union-attr]
                             "result": "noop", "_shards": {"total": 0, "successful": 0,
                                                           "failed": 0},
                             "_seq_no": self._seq_no - 1, "_primary_term": 1}, 200)
        answer, _ = self._write(index, dict(fresh), doc_id)
        return {**answer, "result": "created" if created else "updated"}, \
            201 if created else 200

    def _resolve(self, patterns: str, request_path: str) -> list[str]:
        names: list[str] = []
        for pattern in patterns.split(","):
            if pattern in ("_all", "*"):
                found = sorted(self.indices)
            else:
                found = sorted(n for n in self.indices if fnmatch.fnmatchcase(n, pattern))
                if not found and "*" not in pattern:
                    raise QueryError("index_not_found_exception", f"no such index [{pattern}]",
                                     404)
            names += [n for n in found if n not in names]
        return names

    def _search(self, patterns: str, body: Mapping[str, Any], params: Mapping[str, str],
                request_path: str) -> dict[str, Any]:
        unknown = [k for k in body if k not in ("query", "size", "from", "sort", "_source",
                                                "track_total_hits", "aggs", "aggregations",
                                                "timeout")]
        if unknown:
            raise QueryError("parsing_exception", f"Unknown key for a START_OBJECT in "
                             f"[{unknown[0]}].")
        now = datetime.now(UTC)
        query = body.get("query", {"match_all": {}})
        hits = []
        with self._lock:
            for name in self._resolve(patterns, request_path):
                for doc_id, source in self.indices[name].docs.items():
                    if matches(query, source, now):
                        hits.append({"_index": name, "_id": doc_id, "_score": 1.0,
                                     "_source": source})
        size = int(params.get("size", body.get("size", 10)))
        start = int(params.get("from", body.get("from", 0)))
        sort = body.get("sort")
        if sort is not None:
            hits = _sorted(hits, sort if isinstance(sort, list) else [sort], now)
        page = hits[start:start + size]
        source_filter = params.get("_source", body.get("_source", True))
        for hit in page:
            hit["_source"] = _filtered(hit["_source"], source_filter)
            if hit["_source"] is None:
                del hit["_source"]
        total: dict[str, Any] = {"value": len(hits), "relation": "eq"}
        answer: dict[str, Any] = {
            "took": 1, "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {"total": total, "max_score": (None if sort is not None or not page
                                                   else 1.0), "hits": page}}
        if body.get("track_total_hits") is False:
            del answer["hits"]["total"]
        aggs = body.get("aggs", body.get("aggregations"))
        if aggs:
            answer["aggregations"] = _aggregations(aggs, hits)
        return answer


def _merged(current: Mapping[str, Any], partial: Mapping[str, Any]) -> dict[str, Any]:
    """``partial`` merged into ``current`` as Elasticsearch merges an update's ``doc``:
    objects recursively, anything else replaced."""
    merged = dict(current)
    for key, value in partial.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _sorted(hits: list[dict[str, Any]], sort: list[Any], now: datetime) -> list[dict[str, Any]]:
    keys: list[tuple[str, bool]] = []
    for item in sort:
        if isinstance(item, str):
            keys.append((item, item == "_score"))
        elif isinstance(item, Mapping) and len(item) == 1:
            [(name, spec)] = item.items()
            order = spec.get("order", "asc") if isinstance(spec, Mapping) else spec
            keys.append((str(name), str(order).lower() == "desc"))
        else:
            raise QueryError("parsing_exception", "malformed sort format, within the sort "
                             "array, an object, or an actual string are allowed")
    for name, descending in reversed(keys):
        def value(hit: dict[str, Any], name: str = name) -> Any:
            if name == "_score":
                return hit["_score"]
            found = field_values(hit["_source"], name)
            return found[0] if found else None

        present = [h for h in hits if value(h) is not None]
        absent = [h for h in hits if value(h) is None]
        present.sort(key=_Key.of(value, now), reverse=descending)
        hits = present + absent  # missing values last, as Elasticsearch's default
    for hit in hits:
        hit["sort"] = []
        for name, _ in keys:
            found = [hit["_score"]] if name == "_score" else \
                field_values(hit["_source"], name)
            hit["sort"].append(found[0] if found else None)
        if all(name != "_score" for name, _ in keys):
            hit["_score"] = None
    return hits


class _Key:
    def __init__(self, value: Any, now: datetime) -> None:
        self.value, self.now = value, now

    @classmethod
    def of(cls, read: Any, now: datetime) -> Any:
        return lambda hit: cls(read(hit), now)

    def __lt__(self, other: _Key) -> bool:
        return (compare(self.value, other.value, self.now) or 0) < 0


def _filtered(source: dict[str, Any], spec: Any) -> dict[str, Any] | None:
    if spec in (True, "true"):
        return source
    if spec in (False, "false"):
        return None
    if isinstance(spec, str):
        includes, excludes = spec.split(","), []
    elif isinstance(spec, list):
        includes, excludes = [str(s) for s in spec], []
    elif isinstance(spec, Mapping):
        includes = list(spec.get("includes") or spec.get("include") or ["*"])
        excludes = list(spec.get("excludes") or spec.get("exclude") or [])
    else:
        return source
    return _pick(source, includes, excludes, "")


def _pick(node: dict[str, Any], includes: list[str], excludes: list[str], prefix: str
          ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if any(fnmatch.fnmatchcase(path, e) for e in excludes):
            continue
        if any(fnmatch.fnmatchcase(path, i) or fnmatch.fnmatchcase(path, i + ".*")
               or i.startswith(path + ".") for i in includes):
            if isinstance(value, dict) and not any(fnmatch.fnmatchcase(path, i)
                                                   for i in includes):
                picked = _pick(value, includes, excludes, path + ".")
                if picked:
                    out[key] = picked
            else:
                out[key] = value
    return out


def _aggregations(aggs: Mapping[str, Any], hits: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in aggs.items():
        if not isinstance(spec, Mapping) or set(spec) - {"terms"} or "terms" not in spec:
            kind = next(iter(spec), "?") if isinstance(spec, Mapping) else "?"
            raise QueryError("parsing_exception", f"this emulator models only the terms "
                             f"aggregation, not [{kind}] in [{name}]")
        terms = spec["terms"]
        counts: dict[Any, int] = {}
        for hit in hits:
            for value in dict.fromkeys(field_values(hit["_source"], str(terms.get("field")))):
                counts[value] = counts.get(value, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        size = int(terms.get("size", 10))
        out[name] = {"doc_count_error_upper_bound": 0,
                     "sum_other_doc_count": sum(c for _, c in ranked[size:]),
                     "buckets": [{"key": k, "doc_count": c} for k, c in ranked[:size]]}
    return out


# -- HTTP ---------------------------------------------------------------------------------------

def _build_app(es: ElasticsearchEmulator) -> Starlette:
    async def handle(request: Request) -> Response:
        raw = await request.body()
        path = request.url.path
        es.requests.append({"method": request.method, "path": path,
                            "query": dict(request.query_params),
                            "headers": dict(request.headers), "body": raw.decode(errors="replace")})
        refused = _authenticate(es, request, path)
        if refused is not None:
            return refused
        with es._lock:
            fault = es._faults[0] if es._faults else None
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    es._faults.pop(0)
        if fault is not None and fault.stall:
            await asyncio.sleep(fault.stall)
        elif fault is not None:
            return _fault(fault, path)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            return _json(error_body("x_content_parse_exception", f"[1:1] {exc}", 400), 400)
        if not isinstance(body, dict):
            body = {}
        try:
            return _route(es, request.method, path, body, dict(request.query_params))
        except QueryError as exc:
            extra = {"index": exc.reason[10:-1]} if exc.type == "index_not_found_exception" \
                else {}
            return _json(error_body(exc.type, exc.reason, exc.status, **extra), exc.status)

    return Starlette(routes=[Route("/{path:path}", handle, methods=[
        "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"])])


def _json(body: Any, status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status,
                        headers={"X-elastic-product": "Elasticsearch", **headers})


def _authenticate(es: ElasticsearchEmulator, request: Request, path: str) -> Response | None:
    given = request.headers.get("authorization", "")
    scheme, _, credential = given.partition(" ")
    if scheme.lower() == "apikey" and credential.strip() in es.api_keys:
        return None
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(credential).decode().partition(":")
        except ValueError:
            user, password = "", None  # type: ignore[assignment]
        if user in es.users and es.users[user] == password:
            return None
    reason = (f"missing authentication credentials for REST request [{path}]" if not given
              else "unable to authenticate with provided credentials and anonymous access is "
                   "not allowed for this request")
    header = {"WWW-Authenticate": _AUTHENTICATE}
    return JSONResponse(error_body("security_exception", reason, 401, header=header),
                        status_code=401, headers={"WWW-Authenticate": _AUTHENTICATE[0]})


def _fault(fault: _Fault, path: str) -> Response:
    if fault.status == 429:
        reason = (f"rejected execution of coordinating operation [{path}]: the search thread "
                  "pool queue is full")
        return _json(error_body("es_rejected_execution_exception", reason, 429), 429,
                     **({"Retry-After": str(fault.retry_after)} if fault.retry_after else {}))
    return _json(error_body("internal_server_error", f"the emulator was told to fail [{path}]",
                            fault.status), fault.status)


def _route(es: ElasticsearchEmulator, method: str, path: str, body: dict[str, Any],
           params: dict[str, str]) -> Response:
    parts = [p for p in path.split("/") if p]
    if not parts and method in ("GET", "HEAD"):
        return _json({"name": "emulator-node", "cluster_name": "signoff-emulator",
                      "cluster_uuid": "emulator", "version": {
                          "number": VERSION, "build_flavor": "default", "build_type": "docker",
                          "lucene_version": "10.2.2", "minimum_wire_compatibility_version":
                          "8.19.0", "minimum_index_compatibility_version": "8.0.0"},
                      "tagline": "You Know, for Search"})
    if parts == ["_cluster", "health"] and method == "GET":
        return _json({"cluster_name": "signoff-emulator", "status": "green", "timed_out": False,
                      "number_of_nodes": 1, "number_of_data_nodes": 1,
                      "active_primary_shards": len(es.indices),
                      "active_shards": len(es.indices)})
    if parts == ["_query"] and method == "POST":
        query = body.get("query")
        if not isinstance(query, str):
            raise QueryError("parsing_exception", "[query] is required")
        with es._lock:
            docs = {name: dict(index.docs) for name, index in es.indices.items()}
        return _json(run_esql(query, docs, datetime.now(UTC), body.get("columnar") is True))
    if parts and parts[-1] == "_search" and len(parts) <= 2 and method in ("GET", "POST"):
        return _json(es._search(parts[0] if len(parts) == 2 else "*", body, params, path))
    if len(parts) == 1 and method == "PUT" and not parts[0].startswith("_"):
        if parts[0] in es.indices:
            raise QueryError("resource_already_exists_exception",
                             f"index [{parts[0]}/emulator] already exists")
        es.indices[parts[0]] = _Index(body={k: body[k] for k in ("mappings", "settings",
                                                                  "aliases") if k in body})
        return _json({"acknowledged": True, "shards_acknowledged": True, "index": parts[0]})
    if len(parts) == 3 and parts[1] == "_update" and method == "POST" \
            and not parts[0].startswith("_"):
        answer, status = es._update(parts[0], parts[2], body)
        return _json(answer, status)
    if len(parts) in (2, 3) and parts[1] == "_doc" and not parts[0].startswith("_"):
        doc_id = parts[2] if len(parts) == 3 else None
        if method == "GET" and doc_id is not None:
            index = es.indices.get(parts[0])
            if index is None:
                raise QueryError("index_not_found_exception", f"no such index [{parts[0]}]", 404)
            if doc_id not in index.docs:
                return _json({"_index": parts[0], "_id": doc_id, "found": False}, 404)
            return _json({"_index": parts[0], "_id": doc_id, "_version": index.versions[doc_id],
                          "_seq_no": 0, "_primary_term": 1, "found": True,
                          "_source": index.docs[doc_id]})
        if method in ("PUT", "POST") and (doc_id is not None or method == "POST"):
            answer, status = es._write(parts[0], body, doc_id)
            return _json(answer, status)
        if method == "PUT":
            return _json({"error": f"Incorrect HTTP method for uri [{path}] and method [PUT], "
                                   "allowed: [POST]", "status": 405}, 405)
    return _json({"error": f"no handler found for uri [{path}] and method [{method}]"}, 400)
