"""The gate API over real loopback HTTP: policy answers, reviews as executions, bound approvals."""

from __future__ import annotations

import textwrap
import threading

import pytest

from engine.api import build_api
from engine.definition.conditions import parse_condition
from engine.definition.loader import WorkflowCatalog
from engine.definition.policy import PolicySource, load_policy
from engine.gate_api import gate_extension
from engine.run.gate import Gate
from engine.run.graduation import narrowing, shadow_trials, suggestions
from engine.state import tokens
from engine.state.execution import parse_iso
from tests.engine.test_cli import signoff

POLICY = textwrap.dedent("""\
    rules:
      - tool: "search.web"
        action: allow
      - tool: "shell.execute"
        action: block
        reason: "No shell for agents"
      - tool: "payments.pay*"
        action: escalate
        reason: "Money leaves the company"
        approvers: ["U0ALICE"]
        timeout: 1h
      - tool: "payments.refund"
        action: escalate
        when: "args.amount < 10"
        on-timeout: approve
        approvers: ["U0ALICE"]
        reason: "Small refund"
      - tool: "payments.transfer"
        action: escalate
        approvers: ["U0ALICE"]
        editable: [amount, memo, attachments]
      - tool: "payments.wire"
        action: escalate
        approvers: ["U0ALICE"]
        editable: [beneficiary.name, "wire.ref", beneficiary.bank, beneficiary.missing]
      - tool: "email.send"
        action: block
        shadow: true
        reason: "would block mail"
    default: allow
""")
REFUND = {"tool": "payments.payout", "args": {"amount": 250, "iban": "DE89 3704"},
          "summary": "Pay supplier [ACME](https://evil.example) invoice 7"}


@pytest.fixture
def gate_server(runtime, served, settings, tmp_path):
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    gate = Gate(runtime.engine, PolicySource(policy))
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="test-token", extensions=[gate_extension(gate)])
    server = served(app)
    clients = []

    def client(name: str, scopes: str, principal: str | None = None):
        secret, record = tokens.issue(name, tokens.parse_scopes(scopes), principal, "")
        runtime.store.add_token(record, tokens.digest(secret))
        made = server.client(headers={"Authorization": f"Bearer {secret}"})
        clients.append(made)
        return made

    client.policy = policy  # type: ignore[attr-defined]
    yield client
    for made in clients:
        made.close()


@pytest.fixture
def agent(gate_server):
    return gate_server("agent", "run,read", "agent-1")


@pytest.fixture
def alice(gate_server):
    return gate_server("alice", "decide,read", "U0ALICE")


def escalate(agent, work, call=REFUND) -> str:
    response = agent.post("/api/gate/check", json=call)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"] == "escalate"
    work()
    return str(body["requestId"])


def decide(client, request_id, approved, comment=None):
    answer = {"approved": approved, **({"comment": comment} if comment else {})}
    return client.post(f"/api/workflowExecutions/{request_id}/resume", json=answer)


def test_allow_and_block_answer_at_once_and_start_nothing(agent, runtime):
    allowed = agent.post("/api/gate/check", json={"tool": "search.web", "args": {"q": "x"}})
    assert allowed.status_code == 200
    assert allowed.json()["decision"] == "allow"
    assert "requestId" not in allowed.json()
    blocked = agent.post("/api/gate/check", json={"tool": "shell.execute",
                                                  "args": {"cmd": "rm -rf /"}})
    assert blocked.json()["decision"] == "block"
    assert blocked.json()["reason"] == "No shell for agents"
    assert blocked.json()["rules"][0]["tool"] == "shell.execute"
    assert runtime.engine.list_executions()[1] == 0


def test_a_shadow_rule_is_reported_while_the_call_is_allowed(agent, runtime, tmp_path):
    body = agent.post("/api/gate/check", json={"tool": "email.send", "args": {}}).json()
    assert body["decision"] == "allow"
    assert body["shadow"] == {"decision": "block", "rules": [
        {**body["shadow"]["rules"][0], "tool": "email.send", "reason": "would block mail"}]}
    agent.post("/api/gate/check", json={"tool": "email.send", "args": {"to": "x"}})
    # ... and counted, for /approvals stats
    [trial] = shadow_trials(Gate(runtime.engine, PolicySource(None)),
                            load_policy(_policy_file(tmp_path)))
    assert (trial.rule.tool, trial.calls, trial.changed) == ("email.send", 2, 2)


def _policy_file(tmp_path):
    path = tmp_path / "same-policy.yml"
    path.write_text(POLICY)
    return path


def test_escalate_starts_a_review_that_the_approver_decides(agent, alice, work, runtime):
    request_id = escalate(agent, work)
    execution = agent.get(f"/api/workflowExecutions/{request_id}").json()
    assert execution["status"] == "WAITING_FOR_INPUT"
    assert execution["workflow"] == "gate: payments.pay*"
    assert execution["requestedBy"] == "agent-1"
    message = execution["waitingFor"]["message"]
    assert message.startswith("Agent call: **payments.payout**, requested by agent-1")
    assert "Pay supplier \\[ACME\\](https://evil.example) invoice 7" in message  # escaped
    assert "Money leaves the company" in message
    assert 'amount: 250\niban: "DE89 3704"' in message
    assert execution["waitingFor"]["approvers"] == ["U0ALICE"]
    [review], _ = runtime.engine.pending()  # what /approvals lists
    assert review.execution_id == request_id

    pending = agent.get(f"/api/gate/requests/{request_id}").json()
    assert pending["status"] == "pending" and pending["decidedBy"] is None
    assert pending["args"] == REFUND["args"]

    assert decide(alice, request_id, True, "ok, invoice checked").status_code == 200
    work()
    approved = agent.get(f"/api/gate/requests/{request_id}").json()
    assert approved["status"] == "approved"
    assert approved["decidedBy"] == "U0ALICE"
    assert approved["comment"] == "ok, invoice checked"
    assert approved["decidedAt"]
    assert approved["args"] == REFUND["args"]  # the arguments to run


def test_a_non_approver_cannot_decide_and_the_request_stays_pending(agent, gate_server, work):
    request_id = escalate(agent, work)
    mallory = gate_server("mallory", "decide,read", "U0MALLORY")
    refused = decide(mallory, request_id, True)
    assert refused.status_code == 403
    assert refused.json()["error"] == "not_an_approver"
    own = gate_server("agent-decides", "decide", "agent-1")  # the requester itself
    assert decide(own, request_id, True).status_code == 403
    work()
    assert agent.get(f"/api/gate/requests/{request_id}").json()["status"] == "pending"


def test_deny_is_reported_with_who_and_their_comment(agent, alice, work):
    request_id = escalate(agent, work)
    decide(alice, request_id, False, "wrong IBAN")
    work()
    denied = agent.get(f"/api/gate/requests/{request_id}").json()
    assert (denied["status"], denied["decidedBy"], denied["comment"]) == \
        ("denied", "U0ALICE", "wrong IBAN")


def test_the_long_poll_returns_once_the_review_is_decided(agent, alice, work):
    request_id = escalate(agent, work)
    still = agent.get(f"/api/gate/requests/{request_id}/wait", params={"timeout": "0s"})
    assert still.json()["status"] == "pending"
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(agent.get(
        f"/api/gate/requests/{request_id}/wait", params={"timeout": "50s"}, timeout=60)))
    waiter.start()
    decide(alice, request_id, True)
    work()
    waiter.join(timeout=60)
    assert answers[0].json()["status"] == "approved"


def test_the_requester_cancels_and_others_cannot(agent, gate_server, work):
    request_id = escalate(agent, work)
    other = gate_server("other-agent", "run,read", "agent-2")
    refused = other.post(f"/api/gate/requests/{request_id}/cancel")
    assert refused.status_code == 403 and refused.json()["error"] == "not_the_requester"
    cancelled = agent.post(f"/api/gate/requests/{request_id}/cancel", json={"reason": "SIGINT"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["decidedBy"] == "agent-1"
    again = agent.post(f"/api/gate/requests/{request_id}/cancel")
    assert again.status_code == 409


def time_passes(runtime, request_id):
    """The review's timeout passes: its timer fires at the due time."""
    due = parse_iso(runtime.engine.get(request_id).waiting.due_at)
    runtime.engine.clock = lambda: due
    assert runtime.engine.step_timed_out(request_id, "review")


def test_a_timeout_without_a_decision_is_timed_out(agent, work, runtime):
    request_id = escalate(agent, work)
    time_passes(runtime, request_id)
    work()
    body = agent.get(f"/api/gate/requests/{request_id}").json()
    assert body["status"] == "timed_out"
    assert body["decidedBy"] == "system:timeout"


def test_on_timeout_approve_approves_as_the_system(agent, work, runtime):
    request_id = escalate(agent, work, {"tool": "payments.refund", "args": {"amount": 5}})
    time_passes(runtime, request_id)
    work()
    body = agent.get(f"/api/gate/requests/{request_id}").json()
    assert (body["status"], body["decidedBy"]) == ("approved", "system:timeout")


def test_scopes_run_to_ask_and_read_to_poll(gate_server, agent, work):
    request_id = escalate(agent, work)
    reader = gate_server("reader", "read")
    asked = reader.post("/api/gate/check", json={"tool": "search.web"})
    assert asked.status_code == 403 and asked.json()["error"] == "missing_scope"
    asker = gate_server("asker", "run")
    polled = asker.get(f"/api/gate/requests/{request_id}")
    assert polled.status_code == 403 and polled.json()["error"] == "missing_scope"


LOOKALIKE = """
name: "gate: payments.pay*"
steps:
  - name: review
    type: waitForInput
    with:
      message: "approve?"
      schema: {type: object, properties: {approved: {type: boolean}}, required: [approved]}
"""


def test_bad_calls_are_400(agent):
    assert agent.post("/api/gate/check", json={"args": {}}).status_code == 400
    assert agent.post("/api/gate/check", json={"tool": "x", "args": [1]}).status_code == 400
    assert agent.post("/api/gate/check", json={"tool": "x", "summary": 3}).status_code == 400


def test_a_broken_policy_decides_nothing(agent, gate_server):
    gate_server.policy.write_text("rules:\n  - tool: x\n    action: perhaps\n")
    response = agent.post("/api/gate/check", json={"tool": "search.web"})
    assert response.status_code == 503
    assert response.json()["error"] == "policy_invalid"
    assert ":3:13: rules[0].action must be one of" in response.json()["problems"][0]


def test_a_dry_run_says_what_the_policy_decides_and_starts_nothing(agent, runtime):
    body = agent.post("/api/gate/check", json={**REFUND, "dryRun": True}).json()
    assert body["decision"] == "escalate" and "requestId" not in body
    assert body["reason"] == "Money leaves the company"
    assert runtime.engine.list_executions()[1] == 0


TRANSFER = {"tool": "payments.transfer",
            "args": {"amount": 5000, "memo": "Q3", "iban": "DE89", "attachments": ["a.pdf"]}}


def test_a_reviewer_edits_the_arguments_a_rule_marks_editable(agent, alice, work, runtime):
    request_id = escalate(agent, work, TRANSFER)
    schema = runtime.engine.get(request_id).waiting.schema
    # scalars only: a list is not offered for editing, nor is an argument the rule leaves out
    assert set(schema["properties"]) == {"approved", "comment", "amount", "memo"}
    assert schema["properties"]["amount"]["default"] == 5000
    answer = {"approved": True, "amount": 500, "memo": "Q3", "iban": "XX00"}
    assert alice.post(f"/api/workflowExecutions/{request_id}/resume",
                      json=answer).status_code == 200
    work()
    state = agent.get(f"/api/gate/requests/{request_id}").json()
    assert state["args"] == {**TRANSFER["args"], "amount": 500}  # iban was not editable
    assert state["requestedArgs"] == TRANSFER["args"]
    assert state["edited"] == ["amount"]
    # the approval covers the edited call, not the one asked for
    asked = agent.post(f"/api/gate/requests/{request_id}/use", json=TRANSFER)
    assert asked.status_code == 409 and asked.json()["error"] == "other_arguments"
    edited = agent.post(f"/api/gate/requests/{request_id}/use",
                        json={"tool": TRANSFER["tool"], "args": state["args"]})
    assert edited.status_code == 200
    trail = agent.get(f"/api/workflowExecutions/{request_id}/audit").json()["events"]
    decided = next(e for e in trail if e["type"] == "step.decided")
    assert decided["input"]["amount"] == 500  # the audit shows both: the event, the answer


WIRE = {"tool": "payments.wire",
        "args": {"amount": 900, "wire.ref": "INV-7",
                 "beneficiary": {"name": "ACME GmbH", "iban": "DE89",
                                 "bank": {"bic": "COBADEFF"}}}}


def test_an_editable_name_may_be_a_path_into_the_arguments(agent, alice, work, runtime):
    request_id = escalate(agent, work, WIRE)
    schema = runtime.engine.get(request_id).waiting.schema
    # a path to a scalar is offered; to an object, or to nothing, is not; a key that has
    # a dot in its own name is that key
    assert set(schema["properties"]) == {"approved", "comment", "beneficiary.name", "wire.ref"}
    assert schema["properties"]["beneficiary.name"]["default"] == "ACME GmbH"
    answer = {"approved": True, "beneficiary.name": "ACME Holding GmbH", "wire.ref": "INV-7"}
    assert alice.post(f"/api/workflowExecutions/{request_id}/resume",
                      json=answer).status_code == 200
    work()
    state = agent.get(f"/api/gate/requests/{request_id}").json()
    assert state["args"] == {**WIRE["args"], "beneficiary": {
        **WIRE["args"]["beneficiary"], "name": "ACME Holding GmbH"}}
    assert state["requestedArgs"] == WIRE["args"]  # the call asked for is kept as it was
    assert state["edited"] == ["beneficiary.name"]
    edited = agent.post(f"/api/gate/requests/{request_id}/use",
                        json={"tool": WIRE["tool"], "args": state["args"]})
    assert edited.status_code == 200


def test_edits_in_a_denial_change_nothing(agent, alice, work):
    request_id = escalate(agent, work, TRANSFER)
    alice.post(f"/api/workflowExecutions/{request_id}/resume",
               json={"approved": False, "amount": 1})
    work()
    state = agent.get(f"/api/gate/requests/{request_id}").json()
    assert state["status"] == "denied" and state["args"] == TRANSFER["args"]
    assert state["edited"] == []


# -- graduation ------------------------------------------------------------------------------


def test_narrowing_keeps_an_allow_rule_to_the_calls_approved():
    seen = [{"amount": 20, "currency": "EUR", "note": "a", "dry": True, "n": i}
            for i in range(8)] + [{"amount": 45, "currency": 'U"SD', "note": "b", "dry": True,
                                   "n": 9}]
    clauses = narrowing(seen)
    assert clauses == ['args.amount <= 45', 'args.currency : ("EUR" or "U\\"SD")',
                       "args.dry : true", "args.n <= 9", 'args.note : ("a" or "b")']
    condition = parse_condition(" and ".join(clauses))
    assert all(condition.evaluate({"args": args}) for args in seen)
    assert not condition.evaluate({"args": {**seen[0], "amount": 46}})
    assert not condition.evaluate({"args": {**seen[0], "currency": "GBP"}})


def test_a_rule_always_approved_is_suggested_and_a_denial_resets_it(agent, alice, work, runtime,
                                                                     gate_server, redis_url):
    for amount in (100, 250, 80):
        request_id = escalate(agent, work, {"tool": "payments.payout",
                                            "args": {"amount": amount, "iban": "DE89"}})
        decide(alice, request_id, True)
        work()
    policy = load_policy(gate_server.policy)
    gate = Gate(runtime.engine, PolicySource(None))
    [suggestion] = suggestions(gate, policy, last=3)
    assert suggestion.rule.tool == "payments.pay*"
    assert suggestion.deciders == ("U0ALICE",)
    assert suggestion.when == 'args.amount <= 250 and args.iban : ("DE89")'
    assert 'action: allow' in suggestion.yaml()
    assert suggestions(gate, policy, last=4) == []  # not enough decisions yet
    shown = signoff(redis_url, "policy", "suggest", "--last", "3", "--policy",
                    str(gate_server.policy))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1:] == [
        '- tool: "payments.pay*"', "  action: allow",
        '  when: "args.amount <= 250 and args.iban : (\\"DE89\\")"',
        '  reason: "graduated: 3 approvals in a row"']

    request_id = escalate(agent, work, {"tool": "payments.payout", "args": {"amount": 1}})
    decide(alice, request_id, False)
    work()
    assert suggestions(gate, policy, last=3) == []  # the newest was a denial
