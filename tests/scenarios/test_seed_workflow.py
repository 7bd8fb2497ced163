"""The seed workflow, byte for byte, end to end through the processes production runs.

``tests/engine/workflows/isolate-host-with-approval.yml`` is the workflow of Elastic's
human-in-the-loop guide: open a case, search the host's logs, have a model classify
them, ask a person in Slack, isolate the host through an EDR connector if they agree,
and record the decision on the case. Here it runs unchanged on a real `signoff serve`
and a real `signoff worker`, Redis, the Slack emulator, and the Kibana, Elasticsearch
and OpenAI emulators, all over loopback HTTP, its connections given in a
SIGNOFF_CONNECTORS file whose secrets are ${ENV_VAR} references.

The EDR: the seed calls the literal ``https://edr.example.com/isolate``. The
``edr-connector`` connection reaches it with ``connect-to`` (curl's ``--connect-to``) at
the demo's stand-in EDR on a loopback port, whose certificate for ``edr.example.com``
comes from a CA made for the test (:func:`demo.elastic.make_tls`) that the worker trusts
through ``SSL_CERT_FILE``: the step's URL, Host header, SNI and certificate check are the
production ones, and the egress policy checks the address connected to.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.blocks import ACTION_DENY, ACTION_RESPOND
from demo.elastic import StandInEDR, make_tls
from elastic_emulator.elasticsearch import ElasticsearchEmulator
from elastic_emulator.kibana import API_KEY as KIBANA_KEY
from elastic_emulator.kibana import KibanaEmulator
from engine.cli import main
from openai_emulator import OpenAIEmulator
from slack_emulator import SlackDriver, SlackEmulator
from tests.support.services import ROOT, ServeProcess, WorkerProcess, wait_until

SEED = ROOT / "tests" / "engine" / "workflows" / "isolate-host-with-approval.yml"
REVIEWS = "C0REVIEWS"
EDR_HOST = "edr.example.com"
OPENAI_KEY = "sk-seed-3c9d2e8f1a7b4c60"
EDR_TOKEN = "edr-token-71d0b3a95c2e"
HOST = "web-07"
ALERT = {"alerts": [{"_id": "alert-1", "host": {"name": HOST},
                     "kibana.alert.rule.name": "Suspicious process on host"}]}


@dataclass
class Stack:
    api: httpx.Client
    slack: SlackEmulator
    driver: SlackDriver
    kibana: KibanaEmulator
    openai: OpenAIEmulator
    edr: StandInEDR
    worker: WorkerProcess


@pytest.fixture
def stack(redis_url: str, redis_client: Any, tmp_path: Path) -> Iterator[Stack]:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    shutil.copyfile(SEED, workflows / SEED.name)  # copied byte for byte
    ca, cert, key = make_tls(tmp_path)
    with SlackEmulator() as slack, KibanaEmulator() as kibana, \
            ElasticsearchEmulator() as es, OpenAIEmulator(api_key=OPENAI_KEY) as openai, \
            contextlib.ExitStack() as cleanup:
        edr = StandInEDR(cert, key)
        cleanup.callback(edr.stop)
        es.put("logs-endpoint", {"@timestamp": "2026-12-04T10:00:00Z", "host": {"name": HOST},
                                 "process": {"name": "mimikatz.exe"},
                                 "message": "credential dumping tool started"}, "l1")
        es.put("logs-endpoint", {"@timestamp": "2026-12-04T10:01:00Z", "host": {"name": HOST},
                                 "message": "outbound connection to 203.0.113.9:4444"}, "l2")
        es.put("logs-endpoint", {"@timestamp": "2026-12-04T10:02:00Z",
                                 "host": {"name": "web-08"}, "message": "nightly backup"}, "l3")
        connectors = tmp_path / "connectors.yaml"
        connectors.write_text(f"""\
kibana: {{type: kibana, url: "{kibana.base_url}", api-key: "${{KIBANA_API_KEY}}"}}
elasticsearch: {{type: elasticsearch, url: "{es.url}", api-key: "${{ES_API_KEY}}"}}
my-openai: {{type: openai, url: "{openai.base_url}", model: gpt-4o-mini,
             api-key: "${{OPENAI_API_KEY}}"}}
edr-connector: {{type: http, url: "https://{EDR_HOST}", connect-to: "127.0.0.1:{edr.port}",
                 headers: {{Authorization: "Bearer ${{EDR_TOKEN}}"}}}}
""")
        env = {"SIGNOFF_API_TOKEN": "operator-secret", "SLACK_BOT_TOKEN": slack.bot_token,
               "SLACK_SIGNING_SECRET": slack.signing_secret, "SLACK_API_URL": slack.api_url,
               "SIGNOFF_WORKFLOWS": str(workflows), "SIGNOFF_SLACK_CHANNEL": REVIEWS,
               "SIGNOFF_CONNECTORS": str(connectors), "KIBANA_API_KEY": KIBANA_KEY,
               "ES_API_KEY": es.api_key, "OPENAI_API_KEY": OPENAI_KEY, "EDR_TOKEN": EDR_TOKEN}
        # The emulators and the EDR's stand-in are on 127.0.0.1, allowed as an operator
        # allows internal services; connect-to sends edr.example.com there.
        worker = WorkerProcess(redis_url, extra_env={
            **env, "SSL_CERT_FILE": str(ca), "SIGNOFF_HTTP_ALLOW": "127.0.0.1"})
        cleanup.callback(worker.stop)
        serve = ServeProcess(redis_url, tmp_path / "serve.log", env)
        cleanup.callback(serve.stop)
        api = cleanup.enter_context(httpx.Client(
            base_url=serve.url, timeout=10, headers={"Authorization": "Bearer operator-secret"}))
        driver = SlackDriver(slack, f"{serve.url}/slack/events")
        cleanup.callback(driver.close)
        yield Stack(api, slack, driver, kibana, openai, edr, worker)


def status(stack: Stack, execution_id: str) -> dict[str, Any]:
    answer = stack.api.get(f"/api/workflowExecutions/{execution_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def start_and_review(stack: Stack, category: str, rationale: str) -> tuple[str, dict[str, Any]]:
    """Run the seed on the alert until its review is posted; the run's id and the review."""
    stack.openai.answer({"category": category, "rationale": rationale})
    started = stack.api.post("/api/workflows/isolate-host-with-approval/run", json=ALERT)
    assert started.status_code == 201, started.text
    execution_id = str(started.json()["executionId"])
    wait_until(lambda: stack.slack.workspace.messages(REVIEWS), timeout=60,
               message=f"the review to be posted ({stack.worker.log_path})")
    [review] = stack.slack.workspace.messages(REVIEWS)
    return execution_id, review


def finished(stack: Stack, execution_id: str) -> dict[str, Any]:
    wait_until(lambda: status(stack, execution_id)["status"] in ("COMPLETED", "FAILED"),
               timeout=60, message=f"the run to finish ({stack.worker.log_path})")
    state = status(stack, execution_id)
    assert state["status"] == "COMPLETED", (state, stack.worker.log_path.read_text())
    return state


def the_comment(stack: Stack) -> str:
    [case] = stack.kibana.cases()
    assert case["title"] == f"Potential compromise: {HOST}"
    assert case["severity"] == "high" and case["tags"] == ["auto-triage"]
    [comment] = [c["comment"] for c in case["comments"] if c["type"] == "user"]
    return str(comment)


def verified_audit(stack: Stack, execution_id: str) -> list[dict[str, Any]]:
    audit = stack.api.get(f"/api/workflowExecutions/{execution_id}/audit").json()
    assert audit["verified"] is True
    return list(audit["events"])


CONNECTIONS = f"""\
kibana: {{type: kibana, url: "https://kibana.example.com", api-key: "${{KIBANA_API_KEY}}"}}
elasticsearch: {{type: elasticsearch, url: "https://es.example.com:9200",
                 api-key: "${{ES_API_KEY}}"}}
my-openai: {{type: openai, url: "https://api.openai.com/v1", model: gpt-4o-mini,
             api-key: "${{OPENAI_API_KEY}}"}}
edr-connector: {{type: http, url: "https://{EDR_HOST}",
                 headers: {{Authorization: "Bearer ${{EDR_TOKEN}}"}}}}
"""


@pytest.mark.parametrize(("drop", "problem"), [
    ("", None),
    ("kibana", "no connection called 'kibana'"),
    ("my-openai", "'my-openai'"),
])
def test_the_seed_validates_unchanged_against_its_connections(tmp_path, monkeypatch, capsys,
                                                              drop, problem):
    lines = [line for line in CONNECTIONS.replace(",\n ", ",").splitlines()
             if not (drop and line.startswith(drop))]
    connectors = tmp_path / "connectors.yaml"
    connectors.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("SIGNOFF_CONNECTORS", str(connectors))
    for name in ("KIBANA_API_KEY", "ES_API_KEY", "OPENAI_API_KEY", "EDR_TOKEN"):
        monkeypatch.setenv(name, f"{name.lower()}-value")

    code = main(["validate", str(SEED)])

    out = capsys.readouterr().out
    if problem is None:
        assert code == 0 and "all workflows are valid" in out, out
    else:
        assert code == 1 and problem in out and "isolate-host-with-approval.yml:" in out, out


def test_approved_the_host_is_isolated_and_the_case_records_it(stack: Stack):
    execution_id, review = start_and_review(
        stack, "confirmed_compromise", "mimikatz ran, then a connection to 203.0.113.9:4444")

    # The reviewer reads the model's verdict and its reason in the review itself.
    text = json.dumps(review["blocks"])
    assert "confirmed_compromise" in text
    assert "mimikatz ran, then a connection to 203.0.113.9:4444" in text
    assert HOST in text
    # The model was given the host's logs the search found, not another host's.
    [asked] = stack.openai.completions
    assert "credential dumping tool started" in json.dumps(asked.body)
    assert "nightly backup" not in json.dumps(asked.body)
    assert stack.edr.requests == []

    assert stack.driver.click("U0ALICE", (REVIEWS, review["ts"]), ACTION_RESPOND).ok
    wait_until(lambda: stack.slack.workspace.views.modals("U0ALICE"), timeout=30,
               message="the form to open")
    [form] = stack.slack.workspace.views.modals("U0ALICE")
    fields = {b.get("block_id"): b for b in form["blocks"] if b["type"] == "input"}
    assert {"approved", "notes"} <= set(fields)
    assert fields["notes"]["label"]["text"] == "Analyst notes"
    answer = stack.driver.submit_view("U0ALICE", form["id"],
                                      {"approved": "true", "notes": "confirmed with the owner"})
    assert answer.ok, answer.body
    state = finished(stack, execution_id)

    [isolate] = stack.edr.requests
    assert isolate["path"] == "/isolate"
    assert isolate["body"] == {"host": HOST, "reason": "confirmed with the owner"}
    assert isolate["headers"]["Authorization"] == f"Bearer {EDR_TOKEN}"
    assert isolate["host"] == EDR_HOST  # the URL's, connected at the stand-in's address
    assert "**Decision:** isolated" in the_comment(stack)
    assert "**Notes:** confirmed with the owner" in the_comment(stack)
    assert state["steps"]["isolate"]["output"]["status"] == 202
    assert state["steps"]["review"]["output"]["approved"] is True
    events = verified_audit(stack, execution_id)
    [decided] = [e for e in events if e["type"] == "step.decided"]
    assert decided["actor"]["id"] == "U0ALICE"
    assert EDR_TOKEN not in json.dumps(events) and OPENAI_KEY not in json.dumps(events)


def test_denied_nothing_is_isolated_and_the_case_says_no_action(stack: Stack):
    execution_id, review = start_and_review(stack, "likely_benign", "a scheduled admin task")
    assert "likely_benign" in json.dumps(review["blocks"])
    assert "a scheduled admin task" in json.dumps(review["blocks"])

    assert stack.driver.click("U0BOB", (REVIEWS, review["ts"]), ACTION_DENY).ok
    state = finished(stack, execution_id)

    assert stack.edr.requests == []
    assert state["steps"]["isolate"]["status"] == "SKIPPED"
    assert state["steps"]["review"]["output"]["approved"] is False
    assert "**Decision:** no action" in the_comment(stack)
    [decided] = [e for e in verified_audit(stack, execution_id) if e["type"] == "step.decided"]
    assert decided["actor"]["id"] == "U0BOB"
