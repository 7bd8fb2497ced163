"""``elasticsearch.search``, ``elasticsearch.request``, ``elasticsearch.esql.query``,
``elasticsearch.index``, ``elasticsearch.update`` and ``elasticsearch.indices.create``:
Elastic's Elasticsearch steps, against an ``elasticsearch`` connection of ``SIGNOFF_CONNECTORS``.

The request is built as Kibana's ``buildElasticsearchRequest`` builds it from the step's
``with``: ``with.request: {method, path, body}`` (the raw form, any of the four types)
is sent as it is; ``elasticsearch.request`` sends its own ``method`` (default GET),
``path``, ``body``, ``headers`` and ``query`` (the URL's query string, as Elastic's docs
give it); the named types follow their Elasticsearch API contract (:data:`CONTRACTS`,
from Kibana's generated step definitions): the path from the contract's pattern whose
path parameters the step gives (``index``, ``id``), each other option to the body when
the API takes it there, else to the URL when it takes it there, else to the body, and
``with.body`` merged into the body; ``elasticsearch.index`` sends ``with.document`` as
the body. The output is Elasticsearch's response body as it came (a search response,
so ``steps.<name>.output.hits.hits`` reads the hits; ES|QL's ``{columns, values}``).

Which cluster: the step's ``connector-id``, else the connection called
``elasticsearch``, else the only one of type ``elasticsearch``
(:meth:`engine.definition.step_types.StepContext.connection`). It is authenticated with
its API key (``Authorization: ApiKey``) or its username and password (basic); the step's
own headers cannot replace that. Every call goes through the ``http`` step's checked
client (:func:`engine.steps.http.shared_client`), so the worker's egress policy applies,
and no redirect is followed. A path that would leave the connection's base URL is refused.

Failures: the step's ``timeout`` (else 30 s) bounds each call; a 429, a 5xx or a
transport failure is retryable (``on-failure.retry``), any other answer outside 2xx is
not; the error names Elasticsearch's error ``type`` and ``reason``. The connection's key,
password and header are scrubbed from every message, and never in the output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from engine.definition.egress import EgressPolicy, join_base
from engine.definition.step_types import StepContext, step_type
from engine.errors import EgressBlocked, StepFailed
from engine.steps.http import DEFAULT_TIMEOUT, shared_client

FAMILY = "elasticsearch"
TYPES = ("elasticsearch",)
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]


@dataclass(frozen=True)
class Contract:
    """An Elasticsearch API as Kibana's generated step definition describes it."""

    methods: tuple[str, ...]
    patterns: tuple[str, ...]
    url_params: frozenset[str]
    body_params: frozenset[str]

    @property
    def options(self) -> frozenset[str]:
        """Every ``with`` key the step takes."""
        path_params = {p[1:-1] for pattern in self.patterns for p in _placeholders(pattern)}
        return self.url_params | self.body_params | path_params | {"body", "request", "method"}


def _words(text: str) -> list[str]:
    return text.split()


def _placeholders(pattern: str) -> list[str]:
    return [part for part in pattern.split("/") if part.startswith("{")]


CONTRACTS: dict[str, Contract] = {
    "elasticsearch.search": Contract(
        methods=("GET", "POST"), patterns=("_search", "{index}/_search"),
        url_params=frozenset(_words("""allow_no_indices allow_partial_search_results analyzer
            analyze_wildcard batched_reduce_size ccs_minimize_roundtrips default_operator df
            docvalue_fields expand_wildcards explain ignore_throttled ignore_unavailable
            include_named_queries_score lenient max_concurrent_shard_requests preference
            pre_filter_shard_size request_cache routing scroll search_type stats stored_fields
            suggest_field suggest_mode suggest_size suggest_text terminate_after timeout
            track_total_hits track_scores typed_keys rest_total_hits_as_int version _source
            _source_excludes _source_exclude_vectors _source_includes seq_no_primary_term q
            size from sort""")),
        body_params=frozenset(_words("""aggregations aggs collapse explain ext from highlight
            track_total_hits indices_boost docvalue_fields knn rank min_score post_filter
            profile query rescore retriever script_fields search_after size slice sort _source
            fields suggest terminate_after timeout track_scores version seq_no_primary_term
            stored_fields pit runtime_mappings stats"""))),
    "elasticsearch.esql.query": Contract(
        methods=("POST",), patterns=("_query",),
        url_params=frozenset({"format", "delimiter", "drop_null_columns",
                              "allow_partial_results"}),
        body_params=frozenset({"columnar", "filter", "locale", "params", "profile", "query",
                               "tables", "include_ccs_metadata",
                               "include_execution_metadata"})),
    "elasticsearch.update": Contract(
        methods=("POST",), patterns=("{index}/_update/{id}",),
        url_params=frozenset(_words("""if_primary_term if_seq_no include_source_on_error lang
            refresh require_alias retry_on_conflict routing timeout wait_for_active_shards
            _source _source_excludes _source_includes""")),
        body_params=frozenset(_words("""detect_noop doc doc_as_upsert script scripted_upsert
            _source upsert"""))),
    "elasticsearch.indices.create": Contract(
        methods=("PUT",), patterns=("{index}",),
        url_params=frozenset({"master_timeout", "timeout", "wait_for_active_shards"}),
        body_params=frozenset({"aliases", "mappings", "settings"})),
    "elasticsearch.index": Contract(
        methods=("PUT", "POST"), patterns=("{index}/_doc/{id}", "{index}/_doc"),
        url_params=frozenset(_words("""if_primary_term if_seq_no include_source_on_error op_type
            pipeline refresh routing timeout version version_type wait_for_active_shards
            require_alias require_data_stream""")),
        body_params=frozenset()),
}


@dataclass(frozen=True)
class EsRequest:
    """What one step sends: method, path (relative to the cluster's URL), query, body."""

    method: str
    path: str
    query: Mapping[str, str]
    body: Any
    headers: Mapping[str, str]


def build_request(step: str, options: Mapping[str, Any]) -> EsRequest:
    """The request ``step`` (its type) sends for ``options`` (its rendered ``with``)."""
    raw = options.get("request")
    if isinstance(raw, Mapping):
        return EsRequest(str(raw.get("method") or "GET").upper(), str(raw.get("path") or ""),
                         {}, raw.get("body"), {})
    if step == "elasticsearch.request":
        headers = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
        return EsRequest(str(options.get("method") or "GET").upper(), str(options["path"]),
                         _query_string(options.get("query") or {}), options.get("body"),
                         headers)
    contract = CONTRACTS[step]
    pattern = _best_pattern(contract.patterns, options)
    path_params = {p[1:-1] for p in _placeholders(pattern)}
    path = pattern
    for name in path_params:
        path = path.replace("{" + name + "}", quote(str(options[name]), safe=",*"))
    body: dict[str, Any] = {}
    query: dict[str, Any] = {}
    for key, value in options.items():
        if key in path_params or key == "method" or value is None:
            continue
        if step == "elasticsearch.index" and key == "document":
            continue
        if key in contract.body_params:
            body[key] = value
        elif key in contract.url_params:
            query[key] = value
        elif key == "body" and isinstance(value, Mapping):
            body.update(value)
        else:
            body[key] = value
    sent: Any = body or None
    if step == "elasticsearch.index":
        sent = options.get("document", body or None)
    method = options.get("method")
    if not isinstance(method, str):
        # Kibana sends the contract's first method; PUT without an id is not an API, so a
        # document without an id is POSTed, as Elasticsearch's own clients do.
        method = "POST" if step == "elasticsearch.index" and "id" not in path_params \
            else contract.methods[0]
    return EsRequest(method.upper(), "/" + path, _query_string(query), sent, {})


def _best_pattern(patterns: tuple[str, ...], options: Mapping[str, Any]) -> str:
    """Kibana's selectBestPattern: the first pattern whose path parameters are all given,
    else the best-scoring one."""
    best, best_score = patterns[0], -1.0
    for pattern in patterns:
        wanted = [p[1:-1] for p in _placeholders(pattern)]
        given = sum(1 for name in wanted if options.get(name) is not None)
        if wanted and given == len(wanted):
            return pattern
        score = given / len(wanted) if wanted else 1.0
        if score > best_score:
            best, best_score = pattern, score
    return best


def _query_string(params: Mapping[str, Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"  # as JavaScript's String(true)
        if isinstance(value, list):
            return ",".join(text(v) for v in value)
        return str(value)

    return {str(k): text(v) for k, v in params.items()}


# -- running ------------------------------------------------------------------------------------

def call(ctx: StepContext, step: str) -> Any:
    """Send the step's request to its connection; Elasticsearch's response body."""
    connection = ctx.connection(FAMILY, TYPES)
    request = build_request(step, ctx.options)
    secrets = list(connection.secrets)
    if request.method not in METHODS:
        raise StepFailed(f"method {request.method!r} is not one of {', '.join(METHODS)}",
                         retryable=False)
    try:
        url = join_base(connection.url, request.path)
    except ValueError as exc:
        raise StepFailed(f"path {request.path!r}: {exc}: a path stays under the cluster's URL",
                         retryable=False) from None
    headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    headers["Accept"] = "application/json"
    content = None
    if request.body is not None:
        content = (json.dumps(request.body) if not isinstance(request.body, str)
                   else request.body).encode()
        headers["Content-Type"] = "application/json"
    if connection.authorization:
        headers["Authorization"] = connection.authorization
    where = f"{request.method} {request.path}"
    client = shared_client(ctx.egress)
    try:
        built = client.build_request(request.method, url, headers=headers, content=content,
                                     params=request.query or None,
                                     timeout=ctx.timeout_seconds or DEFAULT_TIMEOUT)
        response = client.send(built, follow_redirects=False)
    except EgressBlocked as exc:
        raise EgressBlocked(exc.host, exc.address, exc.reason, request=where) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise StepFailed(_scrub(f"{where} failed: {exc}", secrets), retryable=False) from None
    except httpx.HTTPError as exc:
        raise StepFailed(_scrub(f"{where} on connection {connection.id!r} failed: "
                                f"{type(exc).__name__}: {exc}", secrets)) from None
    data = _parsed(response)
    if not response.is_success:
        status = response.status_code
        raise StepFailed(_scrub(f"{where} on connection {connection.id!r} answered [{status}] "
                                f"{_reason(data, response)}", secrets),
                         retryable=status >= 500 or status == 429,
                         details={"status": status, "error": _error(data)})
    ctx.log(f"{where} -> {response.status_code}")
    return data


def _parsed(response: httpx.Response) -> Any:
    text = response.text
    if not text.strip():
        return {} if response.request.method != "HEAD" else response.is_success
    try:
        return json.loads(text)
    except ValueError:
        return text  # format=csv/txt for ES|QL, or a proxy's page


def _error(data: Any) -> Any:
    return data.get("error", data) if isinstance(data, Mapping) else data


def _reason(data: Any, response: httpx.Response) -> str:
    """Elasticsearch's ``type: reason`` (its root cause's, when there is one)."""
    error = _error(data)
    if isinstance(error, Mapping):
        kind, reason = error.get("type"), error.get("reason")
        causes = error.get("root_cause")
        if isinstance(causes, list) and causes and isinstance(causes[0], Mapping) \
                and causes[0].get("reason") and causes[0].get("reason") != reason:
            reason = f"{reason} (root cause: {causes[0].get('reason')})"
        retry = response.headers.get("Retry-After")
        suffix = f" (Retry-After: {retry})" if retry else ""
        return f"{kind}: {reason}{suffix}"
    if isinstance(error, str) and error:
        return error[:500]
    if isinstance(data, Mapping) and data.get("found") is False:
        return f"document [{data.get('_id')}] not found in [{data.get('_index')}]"
    return response.reason_phrase


def _scrub(message: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "***")
    return message


def check_elasticsearch_connection(connection: Any, egress: EgressPolicy,
                                   timeout: float = 10.0) -> str:
    """Whether an ``elasticsearch`` connection answers and authenticates: ``GET /``, the
    cheapest authenticated read; what it said (cluster and version), or StepFailed."""
    client = shared_client(egress)
    secrets = list(connection.secrets)
    headers = {"Accept": "application/json"}
    if connection.authorization:
        headers["Authorization"] = connection.authorization
    try:
        response = client.get(join_base(connection.url, "/"), headers=headers, timeout=timeout)
    except EgressBlocked as exc:
        raise StepFailed(f"GET / is refused by the egress policy: {exc}", retryable=False) \
            from None
    except httpx.HTTPError as exc:
        raise StepFailed(_scrub(f"GET / failed: {type(exc).__name__}: {exc}", secrets)) from None
    data = _parsed(response)
    if not response.is_success:
        raise StepFailed(_scrub(f"GET / answered [{response.status_code}] "
                                f"{_reason(data, response)}", secrets), retryable=False)
    version = data.get("version", {}).get("number") if isinstance(data, Mapping) else None
    cluster = data.get("cluster_name") if isinstance(data, Mapping) else None
    return f"answers and authenticates: cluster {cluster!r}, Elasticsearch {version}"


# -- the step types -----------------------------------------------------------------------------

_REQUEST = {"type": "object", "properties": {
    "method": {"enum": METHODS}, "path": {"type": "string", "minLength": 1}, "body": {}},
    "required": ["path"], "additionalProperties": False}
_PARAMS = {"type": "object", "properties": {"connector-id": {"type": "string", "minLength": 1}}}


def _schema(step: str, **typed: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {name: {} for name in CONTRACTS[step].options}
    properties.update(request=_REQUEST, method={"enum": METHODS}, **typed)
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _needs(*names: str) -> Any:
    def check(options: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
        if "request" in options:
            return []
        missing = [n for n in names if options.get(n) is None]
        return [(("with",), f"needs `{missing[0]}` (or the raw `request: {{method, path, "
                           "body}`)")] if missing else []
    return check


def _check_request(options: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
    raw = options.get("request")
    target = raw if isinstance(raw, Mapping) else options
    path = target.get("path")
    if path is None:
        return [(("with",), "needs `path` (or the raw `request: {method, path, body}`)")]
    if isinstance(path, str) and "{{" not in path and "{%" not in path:
        try:
            join_base("http://base.invalid", path)
        except ValueError as exc:
            where = ("with", "request", "path") if raw is not None else ("with", "path")
            return [(where, f"{exc}: a path stays under the cluster's URL")]
    return []


@step_type("elasticsearch.search", params_schema=_PARAMS, check=None, options_schema=_schema(
    "elasticsearch.search", index={"type": "string"}, query={"type": ["object", "string"]},
    size={"type": ["integer", "string"]}, sort={"type": ["array", "string", "object"]},
    _source={"type": ["boolean", "array", "string", "object"]}))
def search(ctx: StepContext) -> Any:
    """Run a search (``POST /<index>/_search``); the output is Elasticsearch's response."""
    return call(ctx, "elasticsearch.search")


@step_type("elasticsearch.esql.query", params_schema=_PARAMS, check=_needs("query"),
           options_schema=_schema("elasticsearch.esql.query", query={"type": "string"},
                                  columnar={"type": ["boolean", "string"]}))
def esql_query(ctx: StepContext) -> Any:
    """Run an ES|QL query (``POST /_query``); the output is ``{columns, values, ...}``."""
    return call(ctx, "elasticsearch.esql.query")


@step_type("elasticsearch.index", params_schema=_PARAMS, check=_needs("index"),
           options_schema=_schema("elasticsearch.index", index={"type": "string"},
                                  id={"type": ["string", "integer"]},
                                  document={"type": ["object", "string"]}))
def index(ctx: StepContext) -> Any:
    """Create or update a document (``PUT /<index>/_doc/<id>``, ``POST /<index>/_doc``)."""
    return call(ctx, "elasticsearch.index")


@step_type("elasticsearch.update", params_schema=_PARAMS, check=_needs("index", "id"),
           options_schema=_schema("elasticsearch.update", index={"type": "string"},
                                  id={"type": ["string", "integer"]},
                                  doc={"type": ["object", "string"]},
                                  doc_as_upsert={"type": ["boolean", "string"]},
                                  upsert={"type": ["object", "string"]}))
def update(ctx: StepContext) -> Any:
    """Update a document (``POST /<index>/_update/<id>``: ``doc``, ``doc_as_upsert``,
    ``upsert``, ``script``); the output is Elasticsearch's (``_id``, ``result``, ...)."""
    return call(ctx, "elasticsearch.update")


@step_type("elasticsearch.indices.create", params_schema=_PARAMS, check=_needs("index"),
           options_schema=_schema("elasticsearch.indices.create", index={"type": "string"},
                                  mappings={"type": ["object", "string"]},
                                  settings={"type": ["object", "string"]},
                                  aliases={"type": ["object", "string"]}))
def indices_create(ctx: StepContext) -> Any:
    """Create an index (``PUT /<index>`` with ``mappings``, ``settings``, ``aliases``); the
    output is ``{acknowledged, shards_acknowledged, index}``."""
    return call(ctx, "elasticsearch.indices.create")


@step_type("elasticsearch.request", params_schema=_PARAMS, check=_check_request,
           options_schema={"type": "object", "properties": {
               "method": {"enum": METHODS}, "path": {"type": "string", "minLength": 1},
               "body": {}, "headers": {"type": "object",
                                       "additionalProperties": {"type": "string"}},
               "query": {"type": "object"}, "request": _REQUEST},
               "additionalProperties": False})
def request(ctx: StepContext) -> Any:
    """Call any Elasticsearch API: ``method``, ``path``, ``body``, ``headers``, ``query``."""
    return call(ctx, "elasticsearch.request")
