"""The egress policy of `http` steps: what is refused after resolution and before connecting.

The address checks run :func:`checked_addresses`, which resolves (numeric addresses and
`localhost` need no DNS server) and asks the policy, without connecting: nothing here
connects outside loopback. The steps run over real HTTP against recorders on loopback.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.definition.egress import DEFAULT_POLICY, EgressPolicy
from engine.definition.loader import parse_workflow
from engine.errors import EgressBlocked, SettingsInvalid
from engine.notify import NullNotifier
from engine.settings import Settings
from engine.state.execution import ExecutionStatus, StepStatus
from engine.steps.http import checked_addresses, checked_client
from engine.worker.runtime import Runtime, build_runtime, install_runtime
from engine.worker.worker import SignoffWorker
from tests.support.services import ROOT


def refused(policy: EgressPolicy, host: str) -> EgressBlocked:
    with pytest.raises(EgressBlocked) as caught:
        checked_addresses(policy, host, 80)
    return caught.value


# -- the address check, without connecting ------------------------------------------------------

@pytest.mark.parametrize("address", ["169.254.1.1", "169.254.0.1", "fe80::1", "fe80::1%1"])
def test_link_local_addresses_are_refused(address):
    blocked = refused(DEFAULT_POLICY, address)
    assert blocked.address == address
    assert "link-local" in blocked.reason
    assert blocked.details["error"] == "egress_blocked"
    assert blocked.retryable is False


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.170.2", "169.254.170.23",
                                     "fd00:ec2::254", "fd00:ec2::23", "100.100.100.200",
                                     "192.0.0.192"])
def test_cloud_metadata_addresses_are_refused_even_where_their_network_is_allowed(address):
    assert "cloud metadata" in refused(DEFAULT_POLICY, address).reason
    networks = EgressPolicy.from_entries(["169.254.0.0/16", "fd00::/8", "100.64.0.0/10",
                                          "192.0.0.0/24"])
    assert "cloud metadata" in refused(networks, address).reason
    # Only naming the very address re-allows it.
    assert checked_addresses(EgressPolicy.from_entries([address]), address, 80) == [address]


@pytest.mark.parametrize("address", ["0.0.0.0", "0.1.2.3", "0.255.255.255"])
def test_this_network_is_refused(address):
    assert "0.0.0.0/8" in refused(DEFAULT_POLICY, address).reason


@pytest.mark.parametrize("address", ["::1", "::", "127.0.0.1", "127.8.9.10"])
def test_loopback_and_the_unspecified_address_are_refused(address):
    assert refused(DEFAULT_POLICY, address).address == address


@pytest.mark.parametrize("address", ["::ffff:127.0.0.1", "::ffff:169.254.169.254",
                                     "::ffff:0.0.0.0"])
def test_an_ipv4_mapped_ipv6_address_is_judged_as_the_ipv4_address_it_reaches(address):
    assert refused(DEFAULT_POLICY, address).address == address
    assert checked_addresses(EgressPolicy.from_entries(["127.0.0.1"]), "::ffff:127.0.0.1",
                             80) == ["::ffff:127.0.0.1"]


@pytest.mark.parametrize("host", ["localhost", "LocalHost", "2130706433", "0x7f000001"])
def test_a_host_name_resolving_to_a_refused_address_is_refused(host):
    blocked = refused(DEFAULT_POLICY, host)
    assert blocked.host == host
    assert blocked.address == "127.0.0.1"
    assert f"{host} resolves to 127.0.0.1" in str(blocked)


def test_allow_re_allows_a_cidr_and_only_what_it_covers():
    policy = EgressPolicy.from_entries(["127.0.0.0/8"])
    assert checked_addresses(policy, "127.0.0.5", 80) == ["127.0.0.5"]
    assert checked_addresses(policy, "localhost", 80) == ["127.0.0.1"]
    assert "link-local" in refused(policy, "169.254.1.1").reason
    assert "loopback" in refused(policy, "::1").reason


def test_allow_re_allows_a_host_name_whatever_it_resolves_to_but_not_its_address():
    policy = EgressPolicy.from_entries(["localhost"])
    assert checked_addresses(policy, "localhost", 80) == ["127.0.0.1"]
    assert "loopback" in refused(policy, "127.0.0.1").reason


def test_deny_adds_networks_and_host_names_and_wins_over_allow():
    # 203.0.113.0/24 is TEST-NET-3: documentation addresses, resolved here, never connected to.
    assert checked_addresses(DEFAULT_POLICY, "203.0.113.7", 80) == ["203.0.113.7"]
    policy = EgressPolicy.from_entries(allow=["127.0.0.0/8", "203.0.113.7"],
                                       deny=["203.0.113.0/24", "localhost"])
    assert "SIGNOFF_HTTP_DENY" in refused(policy, "203.0.113.7").reason
    assert "SIGNOFF_HTTP_DENY" in refused(policy, "localhost").reason
    assert checked_addresses(policy, "127.0.0.1", 80) == ["127.0.0.1"]


def test_private_networks_stay_reachable_by_default():
    for address in ("10.1.2.3", "192.168.0.10", "172.16.5.4", "fd12::1"):
        assert checked_addresses(DEFAULT_POLICY, address, 80) == [address]


def test_the_lists_are_read_from_the_environment_once_and_bad_entries_stop_the_start():
    settings = Settings.from_env({"SIGNOFF_HTTP_ALLOW": " 10.0.0.0/8, iam.corp.example ,",
                                  "SIGNOFF_HTTP_DENY": "10.0.0.9"})
    assert settings.http_allow == ("10.0.0.0/8", "iam.corp.example")
    assert settings.http_deny == ("10.0.0.9",)
    assert Settings.from_env({}).http_allow == ()
    for bad in ("10.0.0.0/33", "http://iam.corp.example", "iam corp"):
        with pytest.raises(SettingsInvalid, match="SIGNOFF_HTTP_ALLOW"):
            EgressPolicy.from_entries([bad])
    with pytest.raises(SettingsInvalid, match="SIGNOFF_HTTP_DENY"):
        EgressPolicy.from_entries(deny=["::1/129"])


def test_a_worker_with_a_bad_entry_exits_at_start_and_says_which(redis_url):
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "worker", "--burst"], cwd=ROOT, text=True,
        capture_output=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_url,
             "SIGNOFF_HTTP_ALLOW": "127.0.0.1,10.0.0.0/33"})
    assert done.returncode == 1
    assert "SIGNOFF_HTTP_ALLOW: '10.0.0.0/33' is neither" in done.stderr


# -- over real HTTP, on loopback ---------------------------------------------------------------

@dataclass
class Recorder:
    """A loopback HTTP service that records each request; /redirect sends it on."""

    host: str = "127.0.0.1"
    redirect_to: str = ""
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, Host

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                recorder.seen.append((self.command, self.path, self.headers.get("Host", "")))
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", recorder.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"secret": "recorder-answer"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer  # noqa: N815 - http.server's naming

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.url = f"http://{self.host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def runtime_with(settings, redis_client):
    """A runtime whose http steps follow the given SIGNOFF_HTTP_ALLOW entries."""

    def build(*allow: str) -> Runtime:
        rt = build_runtime(replace(settings, http_allow=allow), redis_client,
                           notifier=NullNotifier())
        install_runtime(rt)
        return rt

    return build


def drain(rt: Runtime) -> None:
    SignoffWorker([rt.settings.queue], connection=rt.store.redis).work(
        burst=True, logging_level="WARNING")


def call(url: str) -> str:
    return f"""
name: call
steps:
  - name: call
    type: http
    on-failure:
      retry: {{max-attempts: 3, delay: 0s}}
    with: {{method: POST, url: "{url}", body: {{n: 1}}}}
"""


def test_a_refused_call_fails_its_step_without_connecting_and_is_not_retried(runtime_with,
                                                                             recorder):
    rt = runtime_with()  # the default policy, as in production
    execution_id = rt.engine.run(parse_workflow(call(f"{recorder.url}/grants")), {})
    drain(rt)

    state = rt.engine.get(execution_id)
    assert state.status is ExecutionStatus.FAILED
    step = state.results["call"]
    assert step.status is StepStatus.FAILED
    assert step.attempts == 1
    assert step.error is not None and step.error.startswith(
        f"egress_blocked: POST {recorder.url}/grants: 127.0.0.1, refused: 127.0.0.1 is loopback")
    assert step.output == {"error": "egress_blocked", "host": "127.0.0.1",
                           "address": "127.0.0.1", "reason": step.output["reason"]}
    assert recorder.seen == []
    kinds = [e.event["type"] for e in rt.engine.audit_entries(execution_id)]
    assert "step.retry_scheduled" not in kinds


def test_an_allowed_host_name_is_called_by_its_name(runtime_with, recorder):
    rt = runtime_with("localhost")
    url = recorder.url.replace("127.0.0.1", "localhost")
    execution_id = rt.engine.run(parse_workflow(call(f"{url}/grants")), {})
    drain(rt)

    state = rt.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert state.results["call"].output["data"] == {"secret": "recorder-answer"}
    # Connected to the address it checked, with the URL's host name in the Host header.
    assert recorder.seen == [("POST", "/grants", url.removeprefix("http://"))]


@pytest.fixture
def redirect_target(recorder: Recorder) -> Iterator[tuple[Recorder, Recorder]]:
    """``recorder`` on 127.0.0.1 redirecting to another one on 127.0.0.2."""
    elsewhere = Recorder(host="127.0.0.2")
    recorder.redirect_to = f"{elsewhere.url}/metadata"
    yield recorder, elsewhere
    elsewhere.close()


def test_a_redirect_to_a_refused_address_is_refused_before_connecting(redirect_target):
    allowed, elsewhere = redirect_target
    policy = EgressPolicy.from_entries(["127.0.0.1"])
    with checked_client(policy, follow_redirects=True) as client, \
            pytest.raises(EgressBlocked) as caught:
        client.get(f"{allowed.url}/redirect")
    assert caught.value.address == "127.0.0.2"
    assert [path for _, path, _ in allowed.seen] == ["/redirect"]
    assert elsewhere.seen == []


def test_the_http_step_checks_every_redirect_hop_it_follows(runtime_with, redirect_target):
    allowed, elsewhere = redirect_target
    rt = runtime_with("127.0.0.1")  # 127.0.0.2 stays refused
    execution_id = rt.engine.run(parse_workflow(call(f"{allowed.url}/redirect")), {})
    drain(rt)

    state = rt.engine.get(execution_id)
    assert state.status is ExecutionStatus.FAILED
    step = state.results["call"]
    assert step.attempts == 1  # refused, not retried
    assert (step.error or "").startswith(f"egress_blocked: GET {elsewhere.url}/metadata: "
                                         "127.0.0.2, refused: 127.0.0.2 is loopback")
    assert elsewhere.seen == []


def test_the_http_step_does_not_follow_a_redirect_when_told_not_to(runtime_with,
                                                                   redirect_target):
    allowed, elsewhere = redirect_target
    rt = runtime_with("127.0.0.1", "127.0.0.2")
    workflow = call(f"{allowed.url}/redirect").replace(
        "body: {n: 1}}", "body: {n: 1}, fetcher: {follow_redirects: false}}")
    execution_id = rt.engine.run(parse_workflow(workflow), {})
    drain(rt)

    state = rt.engine.get(execution_id)
    assert state.status is ExecutionStatus.FAILED
    assert "answered [302] Found" in (state.results["call"].error or "")
    assert elsewhere.seen == []
