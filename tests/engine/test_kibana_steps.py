"""Kibana's `cases.*` and `kibana.*` steps, run by a real worker against the Kibana emulator
over real HTTP: Elastic's options and output shapes, the space prefix, kbn-xsrf, retries
on 429 and 5xx only, and the API key nowhere but on the wire."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from elastic_emulator.kibana import API_KEY, KibanaEmulator
from engine.cli import main
from engine.connectors import load_connectors
from engine.definition.loader import parse_workflow
from engine.errors import ConnectorsInvalid
from engine.notify import NullNotifier
from engine.state import audit
from engine.state.execution import ExecutionStatus, parse_iso
from engine.worker.runtime import Runtime, build_runtime, install_runtime
from engine.worker.worker import SignoffWorker

RETRY = "    on-failure:\n      retry: {max-attempts: 3, delay: 0s}\n"


@pytest.fixture(scope="module")
def running() -> Iterator[KibanaEmulator]:
    with KibanaEmulator(spaces=("default", "soc")) as kibana:
        yield kibana


@pytest.fixture
def kibana(running: KibanaEmulator) -> KibanaEmulator:
    running.reset()
    return running


@pytest.fixture
def connected(settings, redis_client, tmp_path, kibana) -> Callable[..., Runtime]:
    """A runtime whose SIGNOFF_CONNECTORS has `kibana` (the emulator's default space) and
    `soc` (its `soc` space), both with the API key from KIBANA_API_KEY."""

    def build() -> Runtime:
        path = tmp_path / "connectors.yaml"
        path.write_text(f"""
kibana: {{type: kibana, url: {kibana.base_url}, api-key: "${{KIBANA_API_KEY}}"}}
soc: {{type: kibana, url: {kibana.base_url}, api-key: "${{KIBANA_API_KEY}}", space: soc}}
""")
        connectors = load_connectors(path, {"KIBANA_API_KEY": API_KEY})
        rt = build_runtime(replace(settings, connectors=connectors), redis_client,
                           notifier=NullNotifier())
        install_runtime(rt)
        return rt

    return build


def run(rt: Runtime, steps: str, event: dict[str, Any] | None = None) -> tuple[str, Any]:
    execution_id = rt.engine.run(parse_workflow(f"name: kibana\nsteps:\n{steps}"), event or {})
    SignoffWorker([rt.settings.queue], connection=rt.store.redis).work(
        burst=True, logging_level="WARNING")
    return execution_id, rt.engine.get(execution_id)


CASE_LIFE = """
  - name: open_case
    type: cases.createCase
    with:
      title: "Potential compromise: {{ event.host }}"
      severity: high
      tags: ["auto-triage"]
  - name: note
    type: cases.addComment
    with:
      case_id: "{{ steps.open_case.output.case.id }}"
      comment: "Reviewed by {{ event.who }}"
  - name: attach
    type: cases.addAlerts
    with:
      case_id: "{{ steps.open_case.output.case.id }}"
      alerts:
        - alertId: a-1
          index: .alerts-security.alerts-default
          rule: {id: r-1, name: Malware}
  - name: escalate
    type: cases.updateCase
    with:
      case_id: "{{ steps.open_case.output.case.id }}"
      updates: {status: in-progress, severity: critical}
  - name: read
    type: cases.getCase
    with:
      case_id: "{{ steps.open_case.output.case.id }}"
      include_comments: true
"""


def test_a_case_is_opened_commented_given_alerts_updated_and_read(connected, kibana):
    rt = connected()
    _, state = run(rt, CASE_LIFE, {"host": "web-1", "who": "ana"})

    assert state.status is ExecutionStatus.COMPLETED, state.error
    [case] = kibana.cases()
    opened = state.results["open_case"].output["case"]
    assert opened["id"] == case["id"]
    assert (opened["title"], opened["severity"], opened["tags"]) == (
        "Potential compromise: web-1", "high", ["auto-triage"])
    # Kibana's defaults for what the step leaves out
    assert opened["owner"] == "securitySolution" and opened["description"] == ""
    assert opened["settings"] == {"syncAlerts": True, "extractObservables": True}
    assert state.results["note"].output["case"]["comments"][0]["comment"] == "Reviewed by ana"
    assert state.results["attach"].output["case"]["totalAlerts"] == 1
    escalated = state.results["escalate"].output["case"]
    assert (escalated["status"], escalated["severity"]) == ("in-progress", "critical")
    read = state.results["read"].output["case"]
    assert [c["type"] for c in read["comments"]] == ["user", "alert"]
    assert read["comments"][1]["alertId"] == "a-1"
    writes = [r for r in kibana.requests if r.method != "GET"]
    assert all(r.headers["kbn-xsrf"] == "true" for r in writes)
    assert all(r.headers["authorization"] == f"ApiKey {API_KEY}" for r in kibana.requests)


def test_get_case_leaves_comments_out_unless_asked(connected, kibana):
    rt = connected()
    _, state = run(rt, CASE_LIFE.replace("include_comments: true", "include_comments: false"))
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert state.results["read"].output["case"]["comments"] == []
    assert state.results["read"].output["case"]["totalComment"] == 1


def test_a_connection_in_another_space_calls_its_space(connected, kibana):
    rt = connected()
    _, state = run(rt, """
  - name: open_case
    type: cases.createCase
    connector-id: soc
    with: {title: In soc, owner: cases}
  - name: raw
    type: kibana.request
    connector-id: soc
    with:
      request: {method: GET, path: /api/status}
""")
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert [c["title"] for c in kibana.cases("soc")] == ["In soc"] and kibana.cases() == []
    paths = [r.path for r in kibana.requests]
    assert paths == ["/s/soc/api/cases", "/api/status"]  # the raw form is sent as written


def test_kibana_request_calls_any_api_and_answers_the_body(connected, kibana):
    rt = connected()
    _, state = run(rt, """
  - name: status
    type: kibana.request
    with: {method: GET, path: /api/status, query: {v8format: "true"}, debug: true}
  - name: post
    type: kibana.request
    with:
      method: POST
      path: /api/cases
      headers: {X-Trace: t-1}
      body: {title: Raw, description: d, owner: cases, tags: [], settings: {syncAlerts: false},
             connector: {id: none, name: none, type: .none, fields: null}}
""")
    assert state.status is ExecutionStatus.COMPLETED, state.error
    status = state.results["status"].output
    assert status["status"]["overall"]["level"] == "available"
    assert status["_debug"] == {"fullUrl": f"{kibana.base_url}/api/status", "method": "GET"}
    assert state.results["post"].output["title"] == "Raw"
    post = kibana.requests[-1]
    assert post.headers["x-trace"] == "t-1" and post.headers["kbn-xsrf"] == "true"
    assert post.headers["content-type"] == "application/json"


def test_an_unknown_api_fails_with_kibanas_message_and_is_not_retried(connected, kibana):
    rt = connected()
    _, state = run(rt, "  - name: nothing\n    type: kibana.request\n"
                       "    with: {path: /api/nothing/here}\n" + RETRY)
    assert state.status is ExecutionStatus.FAILED
    result = state.results["nothing"]
    assert result.attempts == 1
    assert result.error == "GET /api/nothing/here answered [404] Not Found: Not Found"


def _through_retries(rt: Runtime, execution_id: str) -> Any:
    """Advance a run parked on retry delays as its timers would, each just after its wake-up;
    the delays it waited, in seconds."""
    waited = []
    state = rt.engine.get(execution_id)
    while state.status is ExecutionStatus.WAITING:
        result = next(r for r in state.results.values() if r.wake_at)
        wake = parse_iso(result.wake_at)
        failed_at = max(e.event["at"] for e in rt.engine.audit_entries(execution_id)
                        if e.event["type"] == audit.STEP_RETRY)
        waited.append(round((wake - parse_iso(failed_at)).total_seconds()))
        rt.runner.clock = lambda wake=wake: wake + timedelta(milliseconds=1)
        rt.runner.advance(execution_id)
        state = rt.engine.get(execution_id)
    return state, waited


def test_429_and_5xx_are_retried_a_429_after_its_retry_after(connected, kibana):
    rt = connected()
    kibana.fail_next(status=429, retry_after=3, path="/api/cases")
    kibana.fail_next(status=503, path="/api/cases")
    execution_id, _ = run(rt, "  - name: open_case\n    type: cases.createCase\n"
                              "    with: {title: Retried}\n" + RETRY)
    state, waited = _through_retries(rt, execution_id)
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert waited == [3]  # the 429's Retry-After, over the policy's 0s; the 503 at once
    assert state.results["open_case"].attempts == 3
    assert [c["title"] for c in kibana.cases()] == ["Retried"]

    kibana.fail_next(status=429, retry_after=3, path="/api/cases", count=5)
    execution_id, _ = run(rt, "  - name: open_case\n    type: cases.createCase\n"
                              "    with: {title: Limited}\n" + RETRY)
    limited, waited = _through_retries(rt, execution_id)
    assert limited.status is ExecutionStatus.FAILED
    assert waited == [3, 3]
    assert limited.results["open_case"].attempts == 3
    assert limited.results["open_case"].error == (
        "POST /api/cases answered [429] Too Many Requests: Too Many Requests "
        "(Retry-After: 3s)")


def test_a_missing_case_is_a_step_error_with_kibanas_message(connected, kibana):
    rt = connected()
    _, state = run(rt, "  - name: note\n    type: cases.addComment\n"
                       "    with: {case_id: nope, comment: hi}\n" + RETRY)
    assert state.status is ExecutionStatus.FAILED
    assert state.results["note"].attempts == 1
    assert "[404] Not Found: Saved object [cases/nope] not found" in state.results["note"].error


def test_set_alerts_status_closes_alerts_and_answers_kibanas_summary(connected, kibana):
    rt = connected()
    kibana.add_alert("a-1")
    kibana.add_alert("a-2")
    _, state = run(rt, """
  - name: close
    type: kibana.SetAlertsStatus
    with:
      signal_ids: ["{{ event.alert }}"]
      status: closed
      reason: false_positive
""", {"alert": "a-1"})
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert state.results["close"].output["updated"] == 1
    assert (kibana.alert_status("a-1"), kibana.alert_status("a-2")) == ("closed", "open")
    assert kibana.requests[-1].body == {"status": "closed", "signal_ids": ["a-1"],
                                        "reason": "false_positive"}


def test_the_api_key_is_in_no_redis_key_log_output_error_or_audit_entry(connected, kibana,
                                                                       caplog):
    from tests.engine.test_http_connector import _everything_in

    rt = connected()
    caplog.set_level(logging.DEBUG)
    ok_id, ok = run(rt, CASE_LIFE, {"host": "h", "who": "w"})
    kibana.fail_next(status=500, count=5)
    failed_id, failed = run(rt, "  - name: s\n    type: kibana.request\n"
                                "    with: {path: /api/status}\n" + RETRY)
    assert ok.status is ExecutionStatus.COMPLETED and failed.status is ExecutionStatus.FAILED
    kept = [_everything_in(rt), caplog.text,
            json.dumps([r.output for r in ok.results.values()], default=str),
            json.dumps([failed.results["s"].error, failed.error], default=str),
            json.dumps([e.event for i in (ok_id, failed_id) for e in rt.engine.audit_entries(i)],
                       default=str),
            repr(rt.settings), repr(rt.settings.connectors)]
    for text in kept:
        assert API_KEY not in text


def test_a_kibana_connection_takes_its_secrets_only_as_env_references(tmp_path):
    path = tmp_path / "connectors.yaml"
    path.write_text("kibana: {type: kibana, url: https://k.example.com, api-key: sekrit-1}\n")
    with pytest.raises(ConnectorsInvalid) as bad:
        load_connectors(path, {})
    assert "`api-key` is a secret" in str(bad.value) and "sekrit-1" not in str(bad.value)
    path.write_text("kibana: {type: kibana, url: https://k.example.com}\n")
    with pytest.raises(ConnectorsInvalid, match="'api-key' is a required property"):
        load_connectors(path, {})
    path.write_text('kibana: {type: kibana, url: https://k.example.com, username: "${U}"}\n')
    with pytest.raises(ConnectorsInvalid, match="'password' is a dependency of 'username'"):
        load_connectors(path, {"U": "elastic"})


def test_signoff_validate_reports_wrong_options_with_their_position(tmp_path, capsys):
    path = tmp_path / "wf.yaml"
    path.write_text("name: wf\nsteps:\n  - name: up\n    type: cases.updateCase\n"
                    "    with: {case_id: x, status: closed}\n"
                    "  - name: raw\n    type: kibana.request\n"
                    "    with: {method: GET, use_localhost: true}\n")
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    err = captured.out + captured.err
    assert f"{path}:5:" in err and "updates" in err
    assert f"{path}:8:" in err and "needs a `path`" in err and "use_localhost" in err


def test_connectors_check_reads_kibanas_status_and_says_which_do_not_authenticate(
        tmp_path, kibana, monkeypatch, capsys):
    path = tmp_path / "connectors.yaml"
    path.write_text(f"""
kibana: {{type: kibana, url: {kibana.base_url}, api-key: "${{KIBANA_API_KEY}}"}}
basic: {{type: kibana, url: {kibana.base_url}, username: "${{KU}}", password: "${{KP}}"}}
""")
    monkeypatch.setenv("SIGNOFF_CONNECTORS", str(path))
    monkeypatch.setenv("SIGNOFF_HTTP_ALLOW", "127.0.0.1")
    monkeypatch.setenv("KIBANA_API_KEY", API_KEY)
    monkeypatch.setenv("KU", "elastic")
    monkeypatch.setenv("KP", "changeme")
    assert main(["connectors", "check"]) == 0
    out = capsys.readouterr().out
    assert "kibana (kibana): ok: Kibana 9.5.0" in out and "basic (kibana): ok:" in out

    monkeypatch.setenv("KIBANA_API_KEY", "revoked-key-123")
    monkeypatch.setenv("KP", "wrong-password-9")
    assert main(["connectors", "check"]) == 1
    out = capsys.readouterr().out
    assert "kibana (kibana): FAILED: GET /api/status answered [401] Unauthorized" in out
    assert "basic (kibana): FAILED: GET /api/status answered [401] Unauthorized" in out
    assert "revoked-key-123" not in out and "wrong-password-9" not in out


def test_signoff_validate_reports_a_kibana_step_without_its_connection(tmp_path, monkeypatch,
                                                                       capsys):
    connectors = tmp_path / "connectors.yaml"
    connectors.write_text('siem: {type: kibana, url: https://k.example.com, api-key: "${K}"}\n'
                          'other: {type: kibana, url: https://o.example.com, api-key: "${K}"}\n'
                          'edr: {type: http, url: https://edr.example.com}\n')
    monkeypatch.setenv("SIGNOFF_CONNECTORS", str(connectors))
    monkeypatch.setenv("K", "key-1")
    path = tmp_path / "wf.yaml"
    path.write_text("name: wf\nsteps:\n"
                    "  - {name: a, type: cases.createCase, with: {title: t}}\n"
                    "  - {name: b, type: cases.createCase, connector-id: edr, with: {title: t}}\n"
                    "  - {name: c, type: kibana.request, connector-id: gone, with: {path: /x}}\n"
                    "  - {name: d, type: kibana.request, connector-id: siem, with: {path: /x}}\n")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:3:" in out and "names no connector-id" in out
    assert f"{path}:4:" in out and "connector 'edr' is a http in" in out
    assert f"{path}:5:" in out and "connector 'gone' is not in" in out
    assert f"{path}:6:" not in out


def test_a_call_past_the_steps_timeout_fails_and_is_retried(connected, kibana):
    rt = connected()
    kibana.delay_next(5)
    _, state = run(rt, "  - name: s\n    type: kibana.request\n    timeout: 1s\n"
                       "    with: {path: /api/status}\n" + RETRY)
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert state.results["s"].attempts == 2  # the first timed out
    assert state.results["s"].output["status"]["overall"]["level"] == "available"


FIND_AND_LOOKUP = """
  - name: phishing
    type: cases.createCase
    with: {title: "Phishing kit for ana@example.com", tags: ["aitm-containment"],
           severity: high}
  - name: other
    type: cases.createCase
    with: {title: "Malware on web-1", tags: ["edr"]}
  - name: attach
    type: cases.addAlerts
    with:
      case_id: "{{ steps.phishing.output.case.id }}"
      alerts: [{alertId: alert-9, index: .alerts-security.alerts-default}]
  - name: found
    type: cases.findCases
    with:
      searchFields: ["title"]
      search: "ana@example.com"
      tags: ["aitm-containment"]
      owner: securitySolution
      sortField: updatedAt
      sortOrder: desc
      perPage: 10
  - name: none_found
    type: cases.findCases
    with: {tags: nothing-has-this}
  - name: of_alert
    type: cases.getCasesByAlertId
    with: {alert_id: alert-9, owner: securitySolution}
  - name: of_no_case
    type: cases.getCasesByAlertId
    with: {alert_id: alert-unknown}
"""


def test_find_cases_and_cases_by_alert_id_answer_the_cases_apis_shapes(connected, kibana):
    rt = connected()
    _, state = run(rt, FIND_AND_LOOKUP)

    assert state.status is ExecutionStatus.COMPLETED, state.error
    phishing_id = state.results["phishing"].output["case"]["id"]
    found = state.results["found"].output
    assert [c["id"] for c in found["cases"]] == [phishing_id]
    assert (found["total"], found["page"], found["per_page"], found["count_open_cases"]) == (
        1, 1, 10, 1)
    assert found["cases"][0]["comments"] == []
    assert state.results["none_found"].output["total"] == 0
    [related] = state.results["of_alert"].output["cases"]
    assert (related["id"], related["status"], related["totals"]["alerts"]) == (
        phishing_id, "open", 1)
    assert state.results["of_no_case"].output == {"cases": []}
    find = next(r for r in kibana.requests if r.path == "/api/cases/_find")
    assert find.method == "GET"


def test_find_cases_refuses_a_page_too_large_as_kibana_does(connected, kibana):
    rt = connected()
    _, state = run(rt, "  - name: f\n    type: cases.findCases\n    with: {perPage: 500}\n")
    assert state.status is ExecutionStatus.FAILED
    assert "[400] Bad Request" in str(state.error)


def test_set_alert_tags_adds_and_removes_tags(connected, kibana):
    rt = connected()
    kibana.add_alert("a-1")
    kibana.add_alert("a-2")
    _, state = run(rt, """
  - name: tag
    type: kibana.SetAlertTags
    with:
      ids: ["{{ event.alert }}", a-2]
      tags:
        tags_to_add: ["Triaged as False Positive by AI"]
        tags_to_remove: []
  - name: untag
    type: kibana.SetAlertTags
    with:
      ids: [a-2]
      tags: {tags_to_add: [], tags_to_remove: ["Triaged as False Positive by AI"]}
""", {"alert": "a-1"})
    assert state.status is ExecutionStatus.COMPLETED, state.error
    assert state.results["tag"].output["updated"] == 2
    assert kibana.alert_tags("a-1") == ["Triaged as False Positive by AI"]
    assert kibana.alert_tags("a-2") == []
    sent = next(r for r in kibana.requests if r.path.endswith("/signals/tags"))
    assert sent.body == {"ids": ["a-1", "a-2"], "tags": {
        "tags_to_add": ["Triaged as False Positive by AI"], "tags_to_remove": []}}


def test_set_alert_tags_cannot_add_and_remove_the_same_tag(connected, kibana):
    rt = connected()
    kibana.add_alert("a-1")
    _, state = run(rt, """
  - name: tag
    type: kibana.SetAlertTags
    with: {ids: [a-1], tags: {tags_to_add: [x], tags_to_remove: [x]}}
""")
    assert state.status is ExecutionStatus.FAILED
    assert "[400]" in str(state.error) and "Duplicated tags" in str(state.error)
