"""Elastic's ``elasticsearch.*`` steps against the Elasticsearch emulator, over real HTTP.

Given an ``elasticsearch`` connection in a SIGNOFF_CONNECTORS file (its API key an
${ENV_VAR} reference) pointing at the emulator, when a workflow's steps search, index,
query with ES|QL or call any API, then they send the request Kibana would build, their
output is Elasticsearch's response, 429 and 5xx are retried and other errors are not,
and the key is nowhere Signoff keeps anything.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from elastic_emulator.elasticsearch import ElasticsearchEmulator
from engine.cli import main
from engine.connectors import load_connectors
from engine.definition.loader import parse_workflow
from engine.errors import ConnectorsInvalid
from engine.notify import NullNotifier
from engine.state.execution import ExecutionStatus
from engine.steps.elasticsearch import build_request
from engine.worker.runtime import Runtime, build_runtime, install_runtime
from engine.worker.worker import SignoffWorker

KEY = "ZXMta2V5OnNpZ25vZmYtdGVzdC1zZWNyZXQ="  # what ES_API_KEY holds
RETRY = "    on-failure:\n      retry: {max-attempts: 2, delay: 0s}\n"


@pytest.fixture(scope="module")
def running_es() -> Iterator[ElasticsearchEmulator]:
    with ElasticsearchEmulator(api_keys=(KEY,), users={"elastic": "changeme-pw"}) as es:
        yield es


@pytest.fixture
def es(running_es: ElasticsearchEmulator) -> ElasticsearchEmulator:
    running_es.reset()
    running_es.put("logs-web", {"@timestamp": "2099-01-01T00:00:00Z", "host": {"name": "web-1"},
                                "event": {"severity": 3}, "message": "login failed for root"},
                   "a1")
    running_es.put("logs-web", {"@timestamp": "2001-01-01T00:00:00Z", "host": {"name": "web-2"},
                                "event": {"severity": 1}, "message": "login ok"}, "a2")
    return running_es


@pytest.fixture
def connected(settings, redis_client, tmp_path, es) -> Callable[..., Runtime]:
    """A runtime whose SIGNOFF_CONNECTORS has `elasticsearch` (the emulator, by API key)."""

    def build(text: str | None = None, env: dict[str, str] | None = None) -> Runtime:
        path = tmp_path / "connectors.yaml"
        path.write_text(text or f'elasticsearch: {{type: elasticsearch, url: "{es.url}", '
                                 'api-key: "${ES_API_KEY}"}\n')
        connectors = load_connectors(path, env or {"ES_API_KEY": KEY})
        rt = build_runtime(replace(settings, connectors=connectors), redis_client,
                           notifier=NullNotifier())
        install_runtime(rt)
        return rt

    return build


def run(rt: Runtime, steps: str) -> tuple[str, Any]:
    execution_id = rt.engine.run(parse_workflow(f"name: es\nsteps:\n{steps}"), {})
    SignoffWorker([rt.settings.queue], connection=rt.store.redis).work(
        burst=True, logging_level="WARNING")
    return execution_id, rt.engine.get(execution_id)


# -- elasticsearch.search -----------------------------------------------------------------------

def test_search_answers_elasticsearchs_response_so_hits_hits_reads_as_in_elastics_seed(
        connected, es):
    rt = connected()
    _, state = run(rt, """  - name: investigate
    type: elasticsearch.search
    with:
      index: logs-*
      size: 5
      query:
        bool:
          filter:
            - range: {"@timestamp": {gte: now-1h}}
          must:
            - match: {message: login}
  - name: first_host
    type: console
    with:
      message: >-
        {{ steps.investigate.output.hits.hits[0]._source.host.name }}
        of {{ steps.investigate.output.hits.total.value }}
""")
    assert state.status is ExecutionStatus.COMPLETED, state.error
    output = state.results["investigate"].output
    assert [h["_id"] for h in output["hits"]["hits"]] == ["a1"]
    assert output["hits"]["total"] == {"value": 1, "relation": "eq"}
    assert state.results["first_host"].output == "web-1 of 1"
    [sent] = [r for r in es.requests if r["path"].endswith("/_search")]
    # Kibana's request: the contract's first method, the index in the path, the rest as body
    assert (sent["method"], sent["path"]) == ("GET", "/logs-*/_search")
    assert json.loads(sent["body"]) == {"size": 5, "query": {"bool": {
        "filter": [{"range": {"@timestamp": {"gte": "now-1h"}}}],
        "must": [{"match": {"message": "login"}}]}}}
    assert sent["headers"]["authorization"] == f"ApiKey {KEY}"


def test_sort_source_and_from_reach_elasticsearch_and_the_raw_request_form_works(connected):
    rt = connected()
    _, state = run(rt, """  - name: sorted
    type: elasticsearch.search
    with:
      index: logs-web
      sort: [{event.severity: desc}]
      _source: [host.name]
      from: 1
  - name: raw
    type: elasticsearch.search
    with:
      request:
        method: POST
        path: /logs-web/_search
        body: {query: {term: {host.name: web-2}}}
""")
    assert state.status is ExecutionStatus.COMPLETED, state.error
    hits = state.results["sorted"].output["hits"]["hits"]
    assert [(h["_id"], h["_source"], h["sort"]) for h in hits] == [
        ("a2", {"host": {"name": "web-2"}}, [1])]
    assert [h["_id"] for h in state.results["raw"].output["hits"]["hits"]] == ["a2"]


def test_build_request_follows_kibanas_rules():
    search = build_request("elasticsearch.search", {
        "query": {"match_all": {}}, "track_total_hits": True, "q": "x", "body": {"min_score": 1},
        "expand_wildcards": ["open", "hidden"]})
    assert (search.method, search.path) == ("GET", "/_search")  # no index: the bare pattern
    assert search.body == {"query": {"match_all": {}}, "track_total_hits": True, "min_score": 1}
    assert search.query == {"q": "x", "expand_wildcards": "open,hidden"}
    index = build_request("elasticsearch.index", {"index": "cases", "id": "c 1",
                                                  "document": {"a": 1}, "refresh": True})
    assert (index.method, index.path, index.body, index.query) == (
        "PUT", "/cases/_doc/c%201", {"a": 1}, {"refresh": "true"})
    assert build_request("elasticsearch.index", {"index": "cases", "document": {}}).method \
        == "POST"
    esql = build_request("elasticsearch.esql.query", {"query": "FROM x", "format": "json"})
    assert (esql.method, esql.path, esql.body, esql.query) == (
        "POST", "/_query", {"query": "FROM x"}, {"format": "json"})


# -- elasticsearch.esql.query, elasticsearch.index, elasticsearch.request -------------------------

def test_esql_query_answers_columns_and_values(connected):
    rt = connected()
    _, state = run(rt, """  - name: esql
    type: elasticsearch.esql.query
    with:
      query: |
        FROM logs-*
        | WHERE event.severity >= 1 AND host.name != "web-9"
        | KEEP host.name, event.severity
        | SORT event.severity DESC
        | LIMIT 10
  - name: counted
    type: elasticsearch.esql.query
    with:
      query: FROM logs-web | STATS n = COUNT(*) BY host.name | SORT host.name
      columnar: true
""")
    assert state.status is ExecutionStatus.COMPLETED, state.error
    output = state.results["esql"].output
    assert output["columns"] == [{"name": "host.name", "type": "keyword"},
                                 {"name": "event.severity", "type": "long"}]
    assert output["values"] == [["web-1", 3], ["web-2", 1]]
    assert state.results["counted"].output["values"] == [[1, 1], ["web-1", "web-2"]]


def test_index_then_get_and_search_see_the_document(connected, es):
    rt = connected()
    _, state = run(rt, """  - name: record
    type: elasticsearch.index
    with:
      index: decisions
      id: case-7
      document: {decision: approved, by: U1}
      refresh: wait_for
  - name: read_back
    type: elasticsearch.request
    with:
      method: GET
      path: /decisions/_doc/case-7
  - name: health
    type: elasticsearch.request
    with: {path: /_cluster/health}
""")
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert state.results["record"].output["result"] == "created"
    assert state.results["read_back"].output["_source"] == {"decision": "approved", "by": "U1"}
    assert state.results["health"].output["status"] == "green"
    put = next(r for r in es.requests if r["method"] == "PUT")
    assert (put["path"], put["query"]) == ("/decisions/_doc/case-7", {"refresh": "wait_for"})


def test_indices_create_then_update_merges_upserts_and_reports_a_missing_document(
        connected, es):
    rt = connected()
    _, state = run(rt, """  - name: make_index
    type: elasticsearch.indices.create
    with:
      index: parks
      mappings:
        properties:
          name: {type: text}
  - name: upsert
    type: elasticsearch.update
    with:
      index: parks
      id: p1
      doc_as_upsert: true
      doc: {name: Yosemite, geo: {state: CA}}
  - name: merge
    type: elasticsearch.update
    with:
      index: parks
      id: p1
      refresh: "true"
      doc: {geo: {visited: true}}
  - name: again
    type: elasticsearch.update
    with:
      index: parks
      id: p1
      doc: {geo: {visited: true}}
""")
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert state.results["make_index"].output == {"acknowledged": True,
                                                  "shards_acknowledged": True, "index": "parks"}
    assert es.indices["parks"].body == {"mappings": {"properties": {"name": {"type": "text"}}}}
    assert state.results["upsert"].output["result"] == "created"
    merged = state.results["merge"].output
    assert (merged["_id"], merged["result"], merged["_version"]) == ("p1", "updated", 2)
    assert state.results["again"].output["result"] == "noop"
    assert es.indices["parks"].docs["p1"] == {"name": "Yosemite",
                                              "geo": {"state": "CA", "visited": True}}
    update = next(r for r in es.requests if r["path"] == "/parks/_update/p1"
                  and r["query"])
    assert (update["method"], update["query"]) == ("POST", {"refresh": "true"})
    create = next(r for r in es.requests if r["path"] == "/parks")
    assert create["method"] == "PUT"

    _, state = run(rt, """  - name: missing
    type: elasticsearch.update
    with: {index: parks, id: nope, doc: {a: 1}}
""" + RETRY)
    assert state.status is ExecutionStatus.FAILED
    assert "[404]" in str(state.error) and "document missing" in str(state.error)
    assert len([r for r in es.requests if r["path"] == "/parks/_update/nope"]) == 1
    _, state = run(rt, "  - name: exists\n    type: elasticsearch.indices.create\n"
                       "    with: {index: parks}\n")
    assert state.status is ExecutionStatus.FAILED
    assert "resource_already_exists_exception" in str(state.error)


def test_basic_auth_is_sent_when_the_connection_has_a_username_and_password(connected, es,
                                                                             tmp_path):
    rt = connected(f'mine: {{type: elasticsearch, url: "{es.url}", username: "${{ES_USER}}", '
                   'password: "${ES_PASSWORD}"}\n',
                   {"ES_USER": "elastic", "ES_PASSWORD": "changeme-pw"})
    _, state = run(rt, """  - name: hits
    type: elasticsearch.search
    with: {index: logs-web}
""")
    assert state.status is ExecutionStatus.COMPLETED, state.error
    pair = base64.b64encode(b"elastic:changeme-pw").decode()
    assert es.requests[-1]["headers"]["authorization"] == f"Basic {pair}"


# -- errors: what is retried, what the error says ---------------------------------------------

def test_a_429_is_retried_after_elasticsearch_rejects_the_first_attempt(connected, es):
    rt = connected()
    es.fail_next(429)
    _, state = run(rt, "  - name: s\n    type: elasticsearch.search\n    with: {index: logs-web}\n"
                   + RETRY)
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert state.results["s"].attempts == 2
    assert state.results["s"].output["hits"]["total"]["value"] == 2


def test_a_call_slower_than_the_steps_timeout_fails_and_is_retried(connected, es):
    rt = connected()
    es.stall_next(3)
    _, state = run(rt, "  - name: s\n    type: elasticsearch.search\n    timeout: 1s\n"
                   "    with: {index: logs-web}\n" + RETRY)
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert state.results["s"].attempts == 2
    assert len([r for r in es.requests if r["path"] == "/logs-web/_search"]) == 2


@pytest.mark.parametrize(("fault", "attempts", "says"), [
    (503, 2, "[503] internal_server_error"),
    (None, 1, "[400] parsing_exception: unknown query [nonsense]"),
])
def test_5xx_is_retried_and_a_bad_query_is_not(connected, es, fault, attempts, says):
    rt = connected()
    if fault:
        es.fail_next(fault, times=2)
    _, state = run(rt, """  - name: s
    type: elasticsearch.search
    with: {index: logs-web, query: {nonsense: {}}}
""" + RETRY)
    result = state.results["s"]
    assert state.status is ExecutionStatus.FAILED
    assert result.attempts == attempts
    assert says in (result.error or "")


def test_esql_errors_carry_elasticsearchs_reason(connected):
    rt = connected()
    _, state = run(rt, """  - name: q
    type: elasticsearch.esql.query
    with: {query: "FROM logs-web | KEEP nope"}
""")
    assert "[400] verification_exception: Found 1 problem\nline 1:" in state.results["q"].error
    assert "Unknown column [nope]" in state.results["q"].error
    assert state.results["q"].output == {"status": 400, "error": {
        "root_cause": [{"type": "verification_exception",
                        "reason": "Found 1 problem\nline 1:22: Unknown column [nope]"}],
        "type": "verification_exception",
        "reason": "Found 1 problem\nline 1:22: Unknown column [nope]"}}


def test_a_wrong_key_is_a_401_not_retried_and_the_key_is_not_in_the_error(connected):
    rt = connected(env={"ES_API_KEY": "d3Jvbmc6d3Jvbmcta2V5"})
    _, state = run(rt, "  - name: s\n    type: elasticsearch.search\n    with: {index: x}\n"
                   + RETRY)
    result = state.results["s"]
    assert result.attempts == 1
    assert "[401] security_exception: unable to authenticate" in (result.error or "")
    assert "d3Jvbmc6d3Jvbmcta2V5" not in (result.error or "") + json.dumps(result.output)


def test_no_connection_is_a_clear_step_error(settings, redis_client):
    rt = build_runtime(settings, redis_client, notifier=NullNotifier())
    install_runtime(rt)
    _, state = run(rt, "  - name: s\n    type: elasticsearch.search\n    with: {index: x}\n")
    assert "no connection is called 'elasticsearch'" in state.results["s"].error


# -- the key stays out of everything Signoff keeps ----------------------------------------------

def _everything_in(rt: Runtime) -> str:
    r = rt.store.redis
    readers: dict[str, Callable[[Any], Any]] = {
        "string": r.get, "hash": r.hgetall, "list": lambda k: r.lrange(k, 0, -1),
        "set": r.smembers, "zset": lambda k: r.zrange(k, 0, -1, withscores=True),
        "stream": r.xrange}
    parts = []
    for key in r.scan_iter():
        kind = r.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        parts.append(f"{key!r} {readers[kind](key)!r}")
    return "\n".join(parts)


def test_the_key_is_in_no_redis_key_log_output_error_or_audit_entry(connected, es, caplog):
    rt = connected()
    caplog.set_level(logging.DEBUG)
    es.fail_next(500, times=2)
    failed_id, failed = run(rt, "  - name: s\n    type: elasticsearch.search\n"
                            "    with: {index: logs-web}\n" + RETRY)
    ok_id, ok = run(rt, "  - name: s\n    type: elasticsearch.esql.query\n"
                    "    with: {query: FROM logs-web}\n")
    assert failed.status is ExecutionStatus.FAILED and ok.status is ExecutionStatus.COMPLETED
    assert all(r["headers"]["authorization"] == f"ApiKey {KEY}" for r in es.requests)
    kept = [
        _everything_in(rt), caplog.text,
        json.dumps([ok.results["s"].output, failed.results["s"].output,
                    failed.results["s"].error, failed.error], default=str),
        json.dumps([e.event for i in (ok_id, failed_id) for e in rt.engine.audit_entries(i)],
                   default=str),
        repr(rt.settings), repr(rt.settings.connectors),
    ]
    for text in kept:
        assert KEY not in text
        assert "ApiKey" not in text


# -- configuration: the connections file, signoff validate, signoff connectors check ------------

def test_an_elasticsearch_key_must_come_from_the_environment(tmp_path):
    path = tmp_path / "connectors.yaml"
    path.write_text('es: {type: elasticsearch, url: "https://es.example:9200", '
                    'api-key: "c2VjcmV0LWluLWZpbGU="}\n'
                    'basic: {type: elasticsearch, url: "https://es.example:9200", '
                    'username: "${U}"}\n')
    with pytest.raises(ConnectorsInvalid) as caught:
        load_connectors(path, {"U": "elastic"})
    text = "\n".join(str(p) for p in caught.value.problems)
    assert f"{path}:1:" in text and "`api-key` is a secret: write it as a ${ENV_VAR}" in text
    assert "'password' is a dependency of 'username'" in text
    assert "c2VjcmV0LWluLWZpbGU=" not in text and "elastic" not in text.replace(
        "elasticsearch", "")


def test_validate_reports_unknown_options_and_missing_ones_with_their_place(tmp_path, capsys):
    workflow = tmp_path / "wf.yaml"
    workflow.write_text("""name: wf
steps:
  - name: typo
    type: elasticsearch.search
    with: {index: logs, sizee: 5}
  - name: no_index
    type: elasticsearch.index
    with: {document: {a: 1}}
  - name: escaping
    type: elasticsearch.request
    with: {path: "//evil.example/x"}
  - name: fine
    type: elasticsearch.esql.query
    connector-id: elasticsearch
    with: {query: "FROM logs | LIMIT 1", params: [1]}
""")
    assert main(["validate", str(workflow)]) == 1
    out = capsys.readouterr().out
    assert f"{workflow}:5:" in out and "sizee" in out
    assert f"{workflow}:8:" in out and "needs `index`" in out
    assert f"{workflow}:11:" in out and "scheme-relative" in out
    assert len([line for line in out.splitlines() if line.startswith(str(workflow))]) == 3


def test_validate_reports_an_elasticsearch_step_without_its_connection(tmp_path, capsys,
                                                                       monkeypatch):
    connectors = tmp_path / "connectors.yaml"
    connectors.write_text('logs: {type: elasticsearch, url: "https://logs.example:9200", '
                          'api-key: "${K}"}\n'
                          'audit: {type: elasticsearch, url: "https://audit.example:9200", '
                          'api-key: "${K}"}\nchat: {type: slack}\n')
    monkeypatch.setenv("SIGNOFF_CONNECTORS", str(connectors))
    monkeypatch.setenv("K", KEY)
    workflow = tmp_path / "wf.yaml"
    workflow.write_text("""name: wf
steps:
  - name: which
    type: elasticsearch.search
    with: {index: logs}
  - name: missing
    type: elasticsearch.search
    connector-id: nowhere
    with: {index: logs}
  - name: wrong
    type: elasticsearch.esql.query
    connector-id: chat
    with: {query: FROM logs}
  - name: fine
    type: elasticsearch.search
    connector-id: audit
    with: {index: logs}
""")
    assert main(["validate", str(workflow)]) == 1
    out = capsys.readouterr().out
    assert (f"{workflow}:4:11: step 'which' (elasticsearch.search) names no connector-id, and "
            f"{connectors} has no connection called 'elasticsearch' nor exactly one of type "
            "elasticsearch") in out
    assert f"{workflow}:8:19: connector 'nowhere' is not in {connectors}" in out
    assert f"{workflow}:12:19: connector 'chat' is a slack in {connectors}" in out
    assert len([line for line in out.splitlines() if line.startswith(str(workflow))]) == 3
    assert KEY not in out


def _connections_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "connectors.yaml"
    path.write_text(f'elasticsearch: {{type: elasticsearch, url: "{url}", '
                    'api-key: "${ES_API_KEY}"}\nchat: {type: slack}\n')
    return path


def test_connectors_check_says_whether_the_cluster_answers_and_authenticates(
        tmp_path, es, monkeypatch, capsys):
    monkeypatch.setenv("SIGNOFF_CONNECTORS", str(_connections_file(tmp_path, es.url)))
    monkeypatch.setenv("SIGNOFF_HTTP_ALLOW", "127.0.0.1")
    monkeypatch.setenv("ES_API_KEY", KEY)
    assert main(["connectors", "check"]) == 0
    out = capsys.readouterr().out
    assert "elasticsearch (elasticsearch): ok: answers and authenticates: cluster " \
           "'signoff-emulator', Elasticsearch 9.1.0" in out
    assert "chat (slack): not checked: a slack connection has no read to try" in out
    assert es.requests[-1]["path"] == "/"

    monkeypatch.setenv("ES_API_KEY", "d3Jvbmc6d3Jvbmcta2V5")
    assert main(["connectors", "check"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: GET / answered [401] security_exception" in out
    assert "d3Jvbmc6d3Jvbmcta2V5" not in out


def test_connectors_check_obeys_the_egress_policy(tmp_path, es, monkeypatch, capsys):
    monkeypatch.setenv("SIGNOFF_CONNECTORS", str(_connections_file(tmp_path, es.url)))
    monkeypatch.delenv("SIGNOFF_HTTP_ALLOW", raising=False)  # loopback is refused by default
    monkeypatch.setenv("ES_API_KEY", KEY)
    before = len(es.requests)
    assert main(["connectors", "check"]) == 1
    assert "FAILED: GET / is refused by the egress policy" in capsys.readouterr().out
    assert len(es.requests) == before
