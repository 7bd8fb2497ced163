"""The `http` step as Kibana 9.5 has it: `connector-id` with a relative `path`, `fetcher`
options, Kibana's output shape, over real HTTP against services on loopback.

Given an `http` connection in a SIGNOFF_CONNECTORS file (its Authorization header an
${ENV_VAR} reference), when a workflow's step names it, then the step calls a path under
its base URL with its headers, and the credential is nowhere else: not in Redis, the
logs, the step's output or error, or the audit trail.
"""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.connectors import load_connectors
from engine.definition.loader import load_workflow, parse_workflow
from engine.errors import ConnectorsInvalid
from engine.notify import NullNotifier
from engine.state.execution import ExecutionStatus, StepStatus
from engine.worker.runtime import Runtime, build_runtime, install_runtime
from engine.worker.worker import SignoffWorker

TOKEN = "tok-5e3a9c1f77d2"  # what EDR_TOKEN holds: it must show up nowhere but on the wire
BIG_CHUNKS = 1024  # of 64 KiB: 64 MiB, more than any socket buffer holds


@dataclass
class Service:
    """A loopback HTTP service recording each request; its routes are what the tests need."""

    host: str = "127.0.0.1"
    tls: ssl.SSLContext | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    redirect_to: str = ""
    big_finished: bool | None = None  # whether /big wrote its whole body
    big_done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                service.seen.append({"method": self.command, "path": self.path,
                                     "headers": dict(self.headers), "body": body})
                route = self.path.split("?", 1)[0]
                if route.endswith("/redirect-out"):
                    self.send(302, b"", Location=service.redirect_to)
                elif route.endswith("/redirect-in"):
                    self.send(302, b"", Location="/api/landed")
                elif route.endswith("/loop"):
                    self.send(302, b"", Location=route)
                elif route.endswith("/big"):
                    self.stream_big()
                elif route.endswith("/cookie"):
                    self.send(200, b"{}", **{"Set-Cookie": "session=run-one; Path=/"})
                elif "/status/" in route:
                    code = int(route.rsplit("/", 1)[1])
                    self.send(code, json.dumps({"message": f"said {code}"}).encode())
                else:
                    self.send(200, json.dumps({"ok": True, "path": self.path}).encode())

            def send(self, code: int, body: bytes, **headers: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def stream_big(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"x" * 65536
                service.big_finished = False
                try:
                    for _ in range(BIG_CHUNKS):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                    service.big_finished = True
                except OSError:  # the client hung up
                    self.close_connection = True
                finally:
                    service.big_done.set()

            do_GET = do_POST = do_PATCH = do_DELETE = answer  # noqa: N815 - http.server's naming

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://{self.host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[Service]:
    s = Service()
    yield s
    s.close()


@pytest.fixture
def elsewhere() -> Iterator[Service]:
    s = Service()
    yield s
    s.close()


@pytest.fixture
def connected(settings, redis_client, tmp_path, service) -> Callable[..., Runtime]:
    """A runtime whose SIGNOFF_CONNECTORS has `edr` (an http connection to ``service``'s
    /api) and `chat` (a slack one)."""

    def build(**overrides: Any) -> Runtime:
        path = tmp_path / "connectors.yaml"
        path.write_text(f"""
edr:
  type: http
  url: {service.url}/api
  headers:
    Authorization: "Bearer ${{EDR_TOKEN}}"
    X-Tenant: blue
chat:
  type: slack
""")
        connectors = load_connectors(path, {"EDR_TOKEN": TOKEN})
        rt = build_runtime(replace(settings, connectors=connectors, **overrides), redis_client,
                           notifier=NullNotifier())
        install_runtime(rt)
        return rt

    return build


def drain(rt: Runtime) -> None:
    SignoffWorker([rt.settings.queue], connection=rt.store.redis).work(
        burst=True, logging_level="WARNING")


def run(rt: Runtime, steps: str) -> tuple[str, Any]:
    execution_id = rt.engine.run(parse_workflow(f"name: call\nsteps:\n{steps}"), {})
    drain(rt)
    return execution_id, rt.engine.get(execution_id)


STEP = """  - name: call
    type: http
    connector-id: edr
    with:
{with_}
"""


def step(with_: str, *, connector: str = "edr", extra: str = "") -> str:
    text = STEP.replace("connector-id: edr", f"connector-id: {connector}" if connector else "")
    return text.format(with_="\n".join(f"      {line}" for line in with_.splitlines())) + extra


# -- connector-id and path ----------------------------------------------------------------------

def test_a_connector_step_calls_its_path_under_the_base_url_with_the_connections_headers(
        connected, service):
    rt = connected()
    _, state = run(rt, step("path: /hosts/web-1\nmethod: PATCH\nquery: {fields: name}\n"
                            "headers: {X-Tenant: red}\nbody: {isolate: true}"))

    assert state.status is ExecutionStatus.COMPLETED, state.error
    [request] = service.seen
    assert (request["method"], request["path"]) == ("PATCH", "/api/hosts/web-1?fields=name")
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["X-Tenant"] == "red"  # the step's own header wins
    assert json.loads(request["body"]) == {"isolate": True}
    # Kibana's output: status, statusText, headers, data (parsed JSON).
    output = state.results["call"].output
    assert output["status"] == 200 and output["statusText"] == "OK"
    assert output["data"] == {"ok": True, "path": "/api/hosts/web-1?fields=name"}
    assert output["headers"]["content-type"] == "application/json"
    assert set(output) == {"status", "statusText", "headers", "data"}


def test_a_full_url_works_without_a_connector_and_takes_a_path_too(connected, service):
    rt = connected()
    _, state = run(rt, step(f"url: {service.url}/json\npath: 8.8.8.8", connector=""))
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert service.seen[0]["path"] == "/json/8.8.8.8"
    assert "Authorization" not in service.seen[0]["headers"]


def test_a_full_url_under_the_connections_base_gets_its_headers(connected, service):
    rt = connected()
    _, state = run(rt, step(f"url: {service.url}/api/v2/abilities\nmethod: POST"))
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert service.seen[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_a_connector_of_another_type_or_none_at_all_is_a_clear_step_error(connected, service):
    rt = connected()
    _, wrong = run(rt, step("path: /x", connector="chat"))
    assert "connector 'chat' is a slack connection" in (wrong.results["call"].error or "")
    _, missing = run(rt, step("path: /x", connector="nowhere"))
    assert "connector 'nowhere' is not in SIGNOFF_CONNECTORS" in (
        missing.results["call"].error or "")
    assert service.seen == []


# -- the credential stays out of everything Signoff keeps ---------------------------------------

def _everything_in(rt: Runtime) -> str:
    """Every key and value in Redis, as text."""
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


def test_the_credential_is_in_no_redis_key_log_output_error_or_audit_entry(
        connected, service, caplog):
    rt = connected()
    caplog.set_level(logging.DEBUG)
    ok_id, ok = run(rt, step("path: /hosts/web-1"))
    failed_id, failed = run(rt, step("path: /status/500", extra=(
        "    on-failure:\n      retry: {max-attempts: 2, delay: 0s}\n")))

    assert ok.status is ExecutionStatus.COMPLETED
    assert failed.status is ExecutionStatus.FAILED
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in service.seen)
    assert "[500] Internal Server Error: said 500" in (failed.results["call"].error or "")
    kept = [
        _everything_in(rt),
        caplog.text,
        json.dumps([ok.results["call"].output, failed.results["call"].output,
                    failed.results["call"].error, failed.error], default=str),
        json.dumps([e.event for i in (ok_id, failed_id) for e in rt.engine.audit_entries(i)],
                   default=str),
        repr(rt.settings), repr(rt.settings.connectors),
    ]
    for text in kept:
        assert TOKEN not in text
    assert "Bearer" not in kept[0]


def test_a_redirect_leaving_the_base_drops_the_connections_headers(connected, service,
                                                                   elsewhere):
    rt = connected()
    service.redirect_to = f"{elsewhere.url}/api/landed"
    _, state = run(rt, step("path: /redirect-out\nheaders: {X-Api-Key: own-key}"))

    assert state.status is ExecutionStatus.COMPLETED, state.error
    [hop] = elsewhere.seen
    assert "Authorization" not in hop["headers"] and "X-Tenant" not in hop["headers"]
    assert "X-Api-Key" not in hop["headers"]  # a credential does not cross origins
    _, inside = run(rt, step("path: /redirect-in"))
    assert inside.status is ExecutionStatus.COMPLETED
    assert [r["path"] for r in service.seen][-2:] == ["/api/redirect-in", "/api/landed"]
    assert service.seen[-1]["headers"]["Authorization"] == f"Bearer {TOKEN}"


# -- fetcher ---------------------------------------------------------------------------------

def test_redirects_stop_at_max_redirects_or_not_at_all_when_not_followed(connected, service):
    rt = connected()
    _, looped = run(rt, step("path: /loop\nfetcher: {max_redirects: 2}"))
    assert "redirected more than fetcher.max_redirects (2) times" in (
        looped.results["call"].error or "")
    assert len(service.seen) == 3
    _, unfollowed = run(rt, step("path: /redirect-in\nfetcher: {follow_redirects: false}"))
    assert "answered [302] Found" in (unfollowed.results["call"].error or "")
    assert unfollowed.results["call"].output["status"] == 302
    assert service.seen[-1]["path"] == "/api/redirect-in"


def test_max_content_length_aborts_the_response_mid_stream(connected, service):
    rt = connected()
    _, state = run(rt, step("path: /big\nfetcher: {max_content_length: 100000}"))

    result = state.results["call"]
    assert result.status is StepStatus.FAILED and result.attempts == 1
    assert "more than fetcher.max_content_length (100000 bytes); the request was aborted" in (
        result.error or "")
    assert service.big_done.wait(timeout=30)  # the handler stopped writing
    assert service.big_finished is False


def test_keep_alive_false_asks_the_server_to_close(connected, service):
    rt = connected()
    run(rt, step("path: /a\nfetcher: {keep_alive: false}"))
    run(rt, step("path: /b"))
    assert service.seen[0]["headers"].get("Connection") == "close"
    assert service.seen[1]["headers"].get("Connection") != "close"


def test_no_cookie_of_one_run_is_sent_by_another(connected, service):
    rt = connected()
    run(rt, step("path: /cookie"))
    run(rt, step("path: /after"))
    assert "Cookie" not in service.seen[1]["headers"]


@pytest.fixture
def tls_service(tmp_path) -> Iterator[Service]:
    """A service on HTTPS with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    s = Service(tls=context)
    yield s
    s.close()


def test_skip_ssl_verification_is_honoured_only_for_hosts_the_operator_lists(connected,
                                                                             tls_service):
    call = step(f"url: {tls_service.url}/splunk\nfetcher: {{skip_ssl_verification: true}}",
                connector="")
    _, refused = run(connected(), call)
    error = refused.results["call"].error or ""
    assert "TLS certificate does not verify" in error
    assert "honoured only for the hosts listed in SIGNOFF_HTTP_INSECURE_TLS" in error
    assert tls_service.seen == []

    rt = connected(http_insecure_tls=("127.0.0.1",))
    _, allowed = run(rt, call)
    assert allowed.status is ExecutionStatus.COMPLETED, allowed.error
    # Listing the host permits the option; it does not switch verification off by itself.
    _, verified = run(rt, step(f"url: {tls_service.url}/plain", connector=""))
    assert "TLS certificate does not verify" in (verified.results["call"].error or "")
    assert [r["path"] for r in tls_service.seen] == ["/splunk"]


# -- errors: what is retried --------------------------------------------------------------------

@pytest.mark.parametrize(("code", "attempts"), [(429, 2), (503, 2), (500, 2), (404, 1),
                                                (408, 1), (400, 1)])
def test_429_and_5xx_are_retried_other_answers_are_not(connected, service, code, attempts):
    rt = connected()
    _, state = run(rt, step(f"path: /status/{code}", extra=(
        "    on-failure:\n      retry: {max-attempts: 2, delay: 0s}\n")))
    result = state.results["call"]
    assert result.attempts == attempts
    assert result.output["status"] == code and result.output["data"] == {
        "message": f"said {code}"}
    assert len(service.seen) == attempts


# -- signoff validate -----------------------------------------------------------------------

def test_validate_reports_connector_ids_and_paths_it_can_judge(tmp_path, service, monkeypatch,
                                                               capsys):
    connectors = tmp_path / "connectors.yaml"
    connectors.write_text(f"edr: {{type: http, url: {service.url}/api}}\nchat: {{type: slack}}\n")
    workflow = tmp_path / "wf.yaml"
    workflow.write_text("""name: wf
steps:
  - name: wrong_type
    type: http
    connector-id: chat
    with: {path: /x}
  - name: unconfigured
    type: http
    connector-id: nowhere
    with: {path: /x}
  - name: nothing_to_call
    type: http
    with: {method: GET}
  - name: escaping
    type: http
    connector-id: edr
    with: {path: "//evil.example/x"}
  - name: outside
    type: http
    connector-id: edr
    with: {url: "https://evil.example/api"}
  - name: fine
    type: http
    connector-id: edr
    with: {path: "/hosts/{{ event.host }}", fetcher: {max_redirects: 3, keep_alive: false}}
  - name: full_url_unconfigured
    type: http
    connector-id: edr-connector
    with: {url: "https://edr.example.com/isolate"}
""")
    monkeypatch.setenv("SIGNOFF_CONNECTORS", str(connectors))
    assert main(["validate", str(workflow)]) == 1
    out = capsys.readouterr().out
    assert f"{workflow}:5:19: connector 'chat' is a slack in {connectors}" in out
    assert f"{workflow}:9:19: connector 'nowhere' is not in {connectors}" in out
    assert f"{workflow}:13:11: steps[2].with: an http step needs `url`, or a `connector-id`" in out
    assert f"{workflow}:17:18: steps[3].with.path: path '//evil.example/x' is scheme-relative" in out
    assert f"{workflow}:21:17: with.url 'https://evil.example/api' is outside connector" in out
    assert (f"{workflow}:28:19: connector 'edr-connector' is not in {connectors}: an http step "
            "with this connector-id is sent without the connection's headers") in out
    assert len([line for line in out.splitlines() if line.startswith(str(workflow))]) == 6


def test_an_http_connections_credential_must_come_from_the_environment(tmp_path):
    path = tmp_path / "connectors.yaml"
    path.write_text("edr:\n  type: http\n  url: https://edr.example.com\n  headers:\n"
                    "    Authorization: Bearer literal-secret-1\n    Accept: application/json\n")
    with pytest.raises(ConnectorsInvalid) as caught:
        load_connectors(path, {})
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (5, 5)
    assert "header 'Authorization' carries a credential" in problem.message
    assert "literal-secret-1" not in str(caught.value)
    path.write_text("edr: {type: http, url: 'https://u:p@edr.example.com'}\n")
    with pytest.raises(ConnectorsInvalid, match="`url` does not look right|url"):
        load_connectors(path, {})


def test_a_header_value_that_would_split_the_request_is_refused_without_quoting_it(tmp_path):
    path = tmp_path / "connectors.yaml"
    path.write_text('edr:\n  type: http\n  url: https://edr.example.com\n  headers:\n'
                    '    Authorization: "Bearer ${EDR_TOKEN}"\n    X-Trace: "${TRACE}"\n')
    with pytest.raises(ConnectorsInvalid) as caught:
        load_connectors(path, {"EDR_TOKEN": "abc\r\nX-Evil: 1"})
    assert "environment variable TRACE is not set" in str(caught.value)
    with pytest.raises(ConnectorsInvalid) as caught:
        load_connectors(path, {"EDR_TOKEN": "abc\r\nX-Evil: 1", "TRACE": "t"})
    assert "`headers` does not look right for a http" in str(caught.value)
    assert "X-Evil" not in str(caught.value)


def test_network_errors_are_retried_and_unsupported_urls_are_not(connected, service):
    rt = connected()
    retry = "    on-failure:\n      retry: {max-attempts: 2, delay: 0s}\n"
    closed = service.url.rsplit(":", 1)[0] + ":1"  # nothing listens on port 1
    _, refused = run(rt, step(f"url: {closed}/x", connector="", extra=retry))
    assert refused.results["call"].attempts == 2
    assert "ConnectError" in (refused.results["call"].error or "")
    _, ftp = run(rt, step("url: ftp://127.0.0.1/x", connector="", extra=retry))
    assert ftp.results["call"].attempts == 1
    assert "UnsupportedProtocol" in (ftp.results["call"].error or "")


def test_what_the_corpus_file_means():
    workflow = load_workflow(Path(__file__).parent / "elastic_corpus" /
                             "http-connector-graph.yaml")
    get_user, revoke, poll, _ = workflow.steps
    assert (get_user.connector_id, revoke.connector_id, poll.connector_id) == (
        "directory-api", "directory-api", None)
    assert get_user.with_["path"] == "/users/{{ inputs.upn }}"
    assert get_user.with_["fetcher"] == {"max_content_length": 1048576}
    assert revoke.with_["fetcher"] == {"follow_redirects": False, "keep_alive": False}
    assert poll.with_["fetcher"]["skip_ssl_verification"] is True


def test_a_worker_process_loads_signoff_connectors(runtime, worker_process, service, tmp_path):
    from tests.support.services import wait_until

    path = tmp_path / "connectors.yaml"
    path.write_text(f"edr:\n  type: http\n  url: {service.url}/api\n  headers:\n"
                    "    Authorization: \"Bearer ${EDR_TOKEN}\"\n")
    proc = worker_process(extra_env={"SIGNOFF_CONNECTORS": str(path), "EDR_TOKEN": TOKEN})
    execution_id = runtime.engine.run(parse_workflow(f"name: call\nsteps:\n{step('path: /w')}"),
                                      {})
    wait_until(lambda: runtime.engine.get(execution_id).status.is_terminal, timeout=45,
               message="the run to finish")
    assert runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert service.seen[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in proc.log()


def test_the_corpus_file_of_connector_steps_validates(capsys):
    corpus = Path(__file__).parent / "elastic_corpus"
    files = sorted(corpus.glob("http-connector-*.yaml"))
    assert files
    for path in files:
        assert main(["validate", str(path)]) == 0, capsys.readouterr().out


# -- connect-to ---------------------------------------------------------------------------------

def connect_to_runtime(settings, redis_client, tmp_path, url: str, connect_to: str,
                       **overrides: Any) -> Runtime:
    """A runtime whose `edr` connection is ``url``, connected at ``connect_to``."""
    path = tmp_path / "connect-to.yaml"
    path.write_text(f'edr: {{type: http, url: "{url}", connect-to: "{connect_to}",\n'
                    '      headers: {Authorization: "Bearer ${EDR_TOKEN}"}}\n')
    connectors = load_connectors(path, {"EDR_TOKEN": TOKEN})
    rt = build_runtime(replace(settings, connectors=connectors, **overrides), redis_client,
                       notifier=NullNotifier())
    install_runtime(rt)
    return rt


def test_connect_to_sends_the_urls_request_to_the_given_address(settings, redis_client,
                                                                tmp_path, service):
    port = service.url.rsplit(":", 1)[1]
    rt = connect_to_runtime(settings, redis_client, tmp_path, "http://edr.example.test:8080",
                            f"127.0.0.1:{port}")

    _, state = run(rt, step("method: POST\nurl: http://edr.example.test:8080/isolate\n"
                            "body: {host: web-07}"))

    assert state.status is ExecutionStatus.COMPLETED, state.error
    [seen] = service.seen
    assert seen["path"] == "/isolate" and json.loads(seen["body"]) == {"host": "web-07"}
    assert seen["headers"]["Host"] == "edr.example.test:8080"  # the URL's, not the address's
    assert seen["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_a_redirect_to_the_same_host_is_connected_at_the_address_too(settings, redis_client,
                                                                    tmp_path, service):
    port = service.url.rsplit(":", 1)[1]
    rt = connect_to_runtime(settings, redis_client, tmp_path, "http://edr.example.test:8080",
                            f"127.0.0.1:{port}")

    _, state = run(rt, step("url: http://edr.example.test:8080/api/redirect-in"))

    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert [r["path"] for r in service.seen] == ["/api/redirect-in", "/api/landed"]
    assert {r["headers"]["Host"] for r in service.seen} == {"edr.example.test:8080"}


def test_connect_to_is_checked_by_the_egress_policy_at_the_address_it_connects_to(
        settings, redis_client, tmp_path, service):
    port = service.url.rsplit(":", 1)[1]
    # Allowing the URL's host by name does not allow the loopback address it is sent to.
    rt = connect_to_runtime(settings, redis_client, tmp_path, "http://edr.example.test:8080",
                            f"127.0.0.1:{port}", http_allow=("edr.example.test",))

    _, state = run(rt, step("url: http://edr.example.test:8080/isolate"))

    assert state.status is ExecutionStatus.FAILED
    assert "127.0.0.1" in (state.results["call"].error or "")
    assert service.seen == []


def test_connect_to_keeps_the_urls_name_for_sni_and_the_certificate_check(
        settings, redis_client, tmp_path, monkeypatch):
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert, key, csr = tmp_path / "edr.pem", tmp_path / "edr.key", tmp_path / "edr.csr"
    ext = tmp_path / "edr.ext"
    ext.write_text("subjectAltName=DNS:edr.example.test\nbasicConstraints=CA:FALSE\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "1", "-subj", "/CN=connect-to test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=edr.example.test"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,func-returns-value]
    edr = Service(tls=context)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the worker trusts the test CA
    try:
        port = edr.url.rsplit(":", 1)[1]
        rt = connect_to_runtime(settings, redis_client, tmp_path, "https://edr.example.test",
                                f"127.0.0.1:{port}")
        _, state = run(rt, step("method: POST\nurl: https://edr.example.test/isolate"))
        assert state.status is ExecutionStatus.COMPLETED, state.error
        assert names == ["edr.example.test"]
        assert edr.seen[0]["headers"]["Host"] == "edr.example.test"

        # The certificate is checked against the URL's name: one for another name fails.
        rt = connect_to_runtime(settings, redis_client, tmp_path, "https://other.example.test",
                                f"127.0.0.1:{port}")
        _, refused = run(rt, step("url: https://other.example.test/isolate"))
        assert "TLS certificate does not verify" in (refused.results["call"].error or "")
        assert len(edr.seen) == 1
    finally:
        edr.close()


def test_connect_to_must_be_host_and_port(tmp_path):
    path = tmp_path / "connectors.yaml"
    path.write_text('edr: {type: http, url: "https://edr.example.test", connect-to: "127.0.0.1"}\n')
    with pytest.raises(ConnectorsInvalid) as caught:
        load_connectors(path, {})
    assert "connect-to" in str(caught.value)
