"""``ai.agent``, run by a real worker against the Kibana emulator's Agent Builder over real
HTTP: the converse API's body, Kibana's step output, a conversation continued, structured
output checked against the step's schema, Kibana's errors, and validate's checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from elastic_emulator.kibana import API_KEY, KibanaEmulator
from engine.cli import main
from engine.connectors import load_connectors
from engine.definition.loader import parse_workflow
from engine.errors import WorkflowInvalid
from engine.notify import NullNotifier
from engine.state.execution import ExecutionStatus
from engine.worker.runtime import Runtime, build_runtime, install_runtime
from engine.worker.worker import SignoffWorker


@pytest.fixture(scope="module")
def running() -> Iterator[KibanaEmulator]:
    with KibanaEmulator(spaces=("default", "soc")) as kibana:
        yield kibana


@pytest.fixture
def kibana(running: KibanaEmulator) -> KibanaEmulator:
    running.reset()
    return running


@pytest.fixture
def connected(settings, redis_client, tmp_path, kibana) -> Callable[[], Runtime]:
    def build() -> Runtime:
        path = tmp_path / "connectors.yaml"
        path.write_text(f'kibana: {{type: kibana, url: {kibana.base_url}, '
                        f'api-key: "${{KIBANA_API_KEY}}", space: soc}}\n')
        connectors = load_connectors(path, {"KIBANA_API_KEY": API_KEY})
        rt = build_runtime(replace(settings, connectors=connectors), redis_client,
                           notifier=NullNotifier())
        install_runtime(rt)
        return rt

    return build


def run(rt: Runtime, steps: str, event: dict[str, Any] | None = None) -> Any:
    execution_id = rt.engine.run(parse_workflow(f"name: agent\nsteps:\n{steps}"), event or {})
    SignoffWorker([rt.settings.queue], connection=rt.store.redis).work(
        burst=True, logging_level="WARNING")
    return rt.engine.get(execution_id)


CONVERSATION = """
  - name: rca
    type: ai.agent
    agent-id: rca.agent
    create-conversation: true
    instructions: Be brief.
    tools:
      - tool_ids: ["platform.core.execute_esql"]
    with:
      message: "Investigate {{ event.alert }}"
  - name: title
    type: ai.agent
    agent-id: rca.agent
    with:
      conversation_id: "{{ steps.rca.output.conversation_id }}"
      message: Now a case title.
"""


def test_a_conversation_is_created_then_continued(connected, kibana) -> None:
    rt = connected()
    builder = kibana.agent_builder("soc")
    builder.script("rca.agent", "Likely a phishing payload.", "Phishing on host-7")
    execution = run(rt, CONVERSATION, {"alert": "A-1"})
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    rca, title = execution.results["rca"].output, execution.results["title"].output
    assert rca["message"] == "Likely a phishing payload."
    assert title == {"message": "Phishing on host-7",
                     "conversation_id": rca["conversation_id"]}
    rounds = builder.rounds(rca["conversation_id"])
    assert [r["input"]["message"] for r in rounds] == ["Investigate A-1", "Now a case title."]
    first = rounds[0]["request"]
    assert first["agent_id"] == "rca.agent"
    assert first["configuration_overrides"] == {
        "instructions": "Be brief.", "tools": [{"tool_ids": ["platform.core.execute_esql"]}]}
    sent = [r for r in kibana.requests if r.path.endswith("/converse")]
    assert [r.path for r in sent] == ["/s/soc/api/agent_builder/converse"] * 2
    assert sent[0].headers["kbn-xsrf"] == "true"
    assert sent[0].headers["authorization"] == f"ApiKey {API_KEY}"


STRUCTURED = """
  - name: triage
    type: ai.agent
    with:
      message: Triage it.
      schema:
        type: object
        required: [verdict]
        properties:
          verdict: {enum: [benign, malicious]}
    on-failure:
      retry: {max-attempts: 3, delay: 0s}
"""


def test_structured_output_is_validated_and_a_bad_answer_retried(connected, kibana) -> None:
    rt = connected()
    kibana.agent_builder("soc").script("elastic-ai-agent", "I think it is malicious.",
                                       {"verdict": "maybe"},
                                       '```json\n{"verdict": "malicious"}\n```')
    execution = run(rt, STRUCTURED)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    output = execution.results["triage"].output
    assert output == {"message": '{"verdict": "malicious"}',
                      "structured_output": {"verdict": "malicious"}}
    bodies = [r.body for r in kibana.requests if r.path.endswith("/converse")]
    assert len(bodies) == 3  # not JSON, then not matching, then right
    assert bodies[0]["input"].startswith("Triage it.\n\nAnswer with JSON only")
    assert '"required": ["verdict"]' in bodies[0]["input"]
    assert "conversation_id" not in output


def test_an_unknown_agent_fails_with_kibanas_404_and_no_retry(connected, kibana) -> None:
    rt = connected()
    execution = run(rt, """
  - name: ask
    type: ai.agent
    agent-id: "{{ event.who }}"
    with:
      message: hello
    on-failure:
      retry: {max-attempts: 3, delay: 0s}
""", {"who": "nobody"})
    assert execution.status == ExecutionStatus.FAILED
    assert "[404] Not Found: Agent nobody not found" in str(execution.error)
    assert len([r for r in kibana.requests if r.path.endswith("/converse")]) == 1


def test_the_emulator_refuses_a_key_kibanas_route_does_not_define(kibana) -> None:
    answer = httpx.post(f"{kibana.base_url}/api/agent_builder/converse",
                        json={"input": "hi", "output_schema": {}},
                        headers={"kbn-xsrf": "true", "Authorization": f"ApiKey {API_KEY}"})
    assert answer.status_code == 400
    assert answer.json()["message"] == ("[request body.output_schema]: definition for this "
                                        "key is missing")


def test_a_429_is_retried(connected, kibana) -> None:
    rt = connected()
    kibana.fail_next(status=429, path="/s/soc/api/agent_builder", retry_after=0)
    execution = run(rt, """
  - name: ask
    type: ai.agent
    with:
      message: hello
    on-failure:
      retry: {max-attempts: 2, delay: 0s}
""")
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert execution.results["ask"].output == {"message": "elastic-ai-agent received: hello"}


@pytest.mark.parametrize(("param", "expected"), [
    ("hidden: true", "unknown key 'hidden'"),
    ("inference-id: x", "unknown key 'inference-id'"),
    ("create-conversation: yes-please", "create-conversation"),
])
def test_validate_refuses_what_signoff_does_not_do(param: str, expected: str) -> None:
    with pytest.raises(WorkflowInvalid) as raised:
        parse_workflow(f"name: a\nsteps:\n  - name: s\n    type: ai.agent\n    {param}\n"
                       "    with:\n      message: hi\n")
    assert expected in str(raised.value)


def test_validate_reports_an_agent_step_without_its_kibana_connection(tmp_path, capsys,
                                                                      monkeypatch) -> None:
    connectors = tmp_path / "connectors.yaml"
    connectors.write_text('model: {type: openai, url: "https://llm.example/v1", '
                          'api-key: "${K}", model: m}\n')
    monkeypatch.setenv("SIGNOFF_CONNECTORS", str(connectors))
    monkeypatch.setenv("K", "sk-test-key")
    workflow = tmp_path / "wf.yaml"
    workflow.write_text("name: wf\nsteps:\n  - name: ask\n    type: ai.agent\n"
                        "    with: {message: hi}\n")
    assert main(["validate", str(workflow)]) == 1
    out = capsys.readouterr().out
    assert (f"{workflow}:4:11: step 'ask' (ai.agent) names no connector-id, and "
            f"{connectors} has no connection called 'kibana' nor exactly one of type "
            "kibana") in out
