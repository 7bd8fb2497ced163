"""The Elasticsearch emulator over real HTTP: Elasticsearch's shapes for documents,
searches, ES|QL, authentication and rejections, and its refusals of what it does not model."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from elastic_emulator.elasticsearch import ElasticsearchEmulator

NOW = datetime.now(UTC)


def stamp(delta: timedelta) -> str:
    return (NOW + delta).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def running() -> Iterator[ElasticsearchEmulator]:
    with ElasticsearchEmulator(users={"elastic": "pw-elastic"}) as es:
        yield es


@pytest.fixture
def es(running: ElasticsearchEmulator) -> ElasticsearchEmulator:
    running.reset()
    docs = [
        ("h1", {"@timestamp": stamp(timedelta(minutes=-10)), "host": {"name": "web-1"},
                "user": "root", "status": 401, "tags": ["ssh", "auth"],
                "message": "Failed password for root"}),
        ("h2", {"@timestamp": stamp(timedelta(hours=-3)), "host": {"name": "web-2"},
                "user": "alice", "status": 200, "tags": ["auth"], "message": "Accepted key"}),
        ("h3", {"@timestamp": stamp(timedelta(minutes=-30)), "host.name": "db-1",
                "status": 500, "message": "Disk full"}),
    ]
    for doc_id, source in docs:
        running.put("logs-auth", source, doc_id)
    return running


@pytest.fixture
def client(es: ElasticsearchEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=es.url, headers={"Authorization": f"ApiKey {es.api_key}"},
                      timeout=10) as c:
        yield c


def ids(answer: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in answer["hits"]["hits"]]


def search(client: httpx.Client, body: dict[str, Any], index: str = "logs-*") -> list[str]:
    response = client.post(f"/{index}/_search", json=body)
    assert response.status_code == 200, response.text
    return sorted(ids(response.json()))


# -- authentication -------------------------------------------------------------------------

def test_no_credentials_and_wrong_ones_get_elasticsearchs_401(es):
    missing = httpx.get(f"{es.url}/")
    wrong = httpx.get(f"{es.url}/", headers={"Authorization": "ApiKey bm9wZTpub3Bl"})
    basic = httpx.get(f"{es.url}/", auth=("elastic", "pw-elastic"))
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
        error = response.json()["error"]
        assert error["type"] == error["root_cause"][0]["type"] == "security_exception"
    assert missing.json()["error"]["reason"] == \
        "missing authentication credentials for REST request [/]"
    assert "unable to authenticate" in wrong.json()["error"]["reason"]
    assert basic.status_code == 200 and basic.json()["tagline"] == "You Know, for Search"


# -- documents --------------------------------------------------------------------------------

def test_index_get_and_versions(client):
    created = client.put("/cases/_doc/c1", json={"title": "first"})
    updated = client.put("/cases/_doc/c1", json={"title": "second"})
    generated = client.post("/cases/_doc", json={"title": "no id"})
    assert (created.status_code, created.json()["result"], created.json()["_version"]) == (
        201, "created", 1)
    assert (updated.status_code, updated.json()["result"], updated.json()["_version"]) == (
        200, "updated", 2)
    assert generated.status_code == 201 and generated.json()["_id"]
    got = client.get("/cases/_doc/c1").json()
    assert (got["found"], got["_source"], got["_version"]) == (True, {"title": "second"}, 2)
    missing = client.get("/cases/_doc/nope")
    assert (missing.status_code, missing.json()["found"]) == (404, False)
    no_index = client.get("/nowhere/_doc/x")
    assert no_index.status_code == 404
    assert no_index.json()["error"]["type"] == "index_not_found_exception"
    assert client.put("/cases/_doc", json={}).status_code == 405


# -- the query DSL ----------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "expected"), [
    ({"match_all": {}}, ["h1", "h2", "h3"]),
    ({"term": {"host.name": "db-1"}}, ["h3"]),  # a flat "host.name" key too
    ({"term": {"user": {"value": "ROOT", "case_insensitive": True}}}, ["h1"]),
    ({"term": {"status": "401"}}, ["h1"]),
    ({"terms": {"tags": ["ssh", "nothing"]}}, ["h1"]),
    ({"match": {"message": "disk password"}}, ["h1", "h3"]),
    ({"match": {"message": {"query": "failed root", "operator": "and"}}}, ["h1"]),
    ({"range": {"@timestamp": {"gte": "now-1h"}}}, ["h1", "h3"]),
    ({"range": {"status": {"gt": 200, "lte": 500}}}, ["h1", "h3"]),
    ({"exists": {"field": "user"}}, ["h1", "h2"]),
    ({"wildcard": {"host.name": "web-*"}}, ["h1", "h2"]),
    ({"prefix": {"host.name": "db"}}, ["h3"]),
    ({"bool": {"must": [{"term": {"tags": "auth"}}],
               "must_not": [{"term": {"user": "alice"}}]}}, ["h1"]),
    ({"bool": {"should": [{"term": {"status": 500}}, {"term": {"user": "alice"}}]}},
     ["h2", "h3"]),
    ({"bool": {"filter": {"range": {"@timestamp": {"gte": "now-1h"}}},
               "should": [{"term": {"status": 999}}]}}, ["h1", "h3"]),
    ({"bool": {"filter": [{"exists": {"field": "status"}}],
               "should": [{"term": {"status": 999}}], "minimum_should_match": 1}}, []),
])
def test_queries_match_what_elasticsearch_would(client, query, expected):
    assert search(client, {"query": query}) == expected


def test_size_from_sort_source_and_total(client):
    answer = client.post("/logs-auth/_search", json={
        "size": 2, "from": 0, "sort": [{"status": {"order": "desc"}}],
        "_source": ["host.*", "status"]}).json()
    assert answer["hits"]["total"] == {"value": 3, "relation": "eq"}
    assert ids(answer) == ["h3", "h1"]
    assert [h["sort"] for h in answer["hits"]["hits"]] == [[500], [401]]
    assert answer["hits"]["hits"][1]["_source"] == {"host": {"name": "web-1"}, "status": 401}
    assert answer["hits"]["max_score"] is None and answer["hits"]["hits"][0]["_score"] is None
    page = client.request("GET", "/logs-auth/_search", params={"size": "1", "from": "2"},
                          json={"sort": ["status"], "_source": False}).json()
    assert ids(page) == ["h3"] and "_source" not in page["hits"]["hits"][0]


def test_a_terms_aggregation_counts_buckets(client):
    answer = client.post("/logs-auth/_search", json={
        "size": 0, "aggs": {"by_tag": {"terms": {"field": "tags"}}}}).json()
    assert answer["hits"]["hits"] == []
    assert answer["aggregations"]["by_tag"]["buckets"] == [
        {"key": "auth", "doc_count": 2}, {"key": "ssh", "doc_count": 1}]


@pytest.mark.parametrize(("body", "index", "status", "kind", "reason"), [
    ({"query": {"fuzzy": {"a": "b"}}}, "logs-*", 400, "parsing_exception", "unknown query [fuzzy]"),
    ({"highlight": {}}, "logs-*", 400, "parsing_exception", "Unknown key for a START_OBJECT"),
    ({"aggs": {"m": {"max": {"field": "status"}}}}, "logs-*", 400, "parsing_exception",
     "only the terms aggregation"),
    ({}, "missing", 404, "index_not_found_exception", "no such index [missing]"),
])
def test_what_it_refuses_answers_elasticsearchs_error_shape(client, body, index, status, kind,
                                                            reason):
    response = client.post(f"/{index}/_search", json=body)
    assert response.status_code == status
    error = response.json()
    assert error["status"] == status
    assert error["error"]["type"] == error["error"]["root_cause"][0]["type"] == kind
    assert reason in error["error"]["reason"]


def test_a_wildcard_pattern_matching_no_index_finds_nothing_and_unknown_routes_say_so(client):
    assert search(client, {}, "nothing-*") == []
    response = client.get("/_nodes/stats")
    assert response.status_code == 400
    assert response.json()["error"] == "no handler found for uri [/_nodes/stats] and method [GET]"


# -- ES|QL ------------------------------------------------------------------------------------

def esql(client: httpx.Client, query: str, **extra: Any) -> httpx.Response:
    return client.post("/_query", json={"query": query, **extra})


def test_esql_where_keep_sort_limit(client):
    answer = esql(client, 'FROM logs-* | WHERE status >= 401 OR user == "alice" '
                          "| KEEP host.name, status | SORT status DESC | LIMIT 2").json()
    assert answer["columns"] == [{"name": "host.name", "type": "keyword"},
                                 {"name": "status", "type": "long"}]
    assert answer["values"] == [["db-1", 500], ["web-1", 401]]
    assert answer["is_partial"] is False


def test_esql_dates_nulls_and_stats(client):
    recent = esql(client, "FROM logs-auth | WHERE @timestamp > NOW() - 1 hour AND user IS NULL "
                          "| KEEP host.name").json()
    assert recent["values"] == [["db-1"]]
    counted = esql(client, "FROM logs-auth | STATS hits = COUNT(*) BY user | SORT user").json()
    assert counted["columns"] == [{"name": "hits", "type": "long"},
                                  {"name": "user", "type": "keyword"}]
    assert counted["values"] == [[1, "alice"], [1, "root"], [1, None]]
    total = esql(client, "FROM logs-auth | STATS COUNT(user)", columnar=True).json()
    assert total["columns"] == [{"name": "COUNT(user)", "type": "long"}]
    assert total["values"] == [[2]]


def test_everything_is_listed_by_name_without_keep(client):
    answer = esql(client, "FROM logs-auth | LIMIT 1").json()
    names = [c["name"] for c in answer["columns"]]
    assert names == sorted(names) and "host.name" in names and "@timestamp" in names
    assert {c["name"]: c["type"] for c in answer["columns"]}["@timestamp"] == "date"


@pytest.mark.parametrize(("query", "kind", "reason"), [
    ("FROM logs-auth | EVAL x = 1", "parsing_exception", "line 1:18: mismatched input 'EVAL'"),
    ("SELECT * FROM logs", "parsing_exception", "line 1:1: mismatched input 'SELECT'"),
    ("FROM logs-auth | WHERE status === 1", "parsing_exception", "line 1:"),
    ("FROM logs-auth | KEEP nope", "verification_exception",
     "Found 1 problem\nline 1:23: Unknown column [nope]"),
    ("FROM logs-auth | SORT status, nope", "verification_exception",
     "Found 1 problem\nline 1:31: Unknown column [nope]"),
    ("FROM missing", "verification_exception", "Found 1 problem\nline 1:6: Unknown index [missing]"),
])
def test_esql_errors_are_elasticsearchs(client, query, kind, reason):
    response = esql(client, query)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == kind
    assert reason in response.json()["error"]["reason"]


# -- rejections -------------------------------------------------------------------------------

def test_told_to_reject_it_answers_429_with_retry_after_then_recovers(es, client):
    es.fail_next(429, retry_after=3)
    rejected = client.get("/")
    assert rejected.status_code == 429
    assert rejected.headers["Retry-After"] == "3"
    assert rejected.json()["error"]["type"] == "es_rejected_execution_exception"
    assert client.get("/").status_code == 200


def test_every_request_is_recorded_with_its_credentials_as_sent(es):
    token = base64.b64encode(b"elastic:pw-elastic").decode()
    httpx.get(f"{es.url}/_cluster/health", headers={"Authorization": f"Basic {token}"})
    assert es.requests[-1]["path"] == "/_cluster/health"
    assert es.requests[-1]["headers"]["authorization"] == f"Basic {token}"
