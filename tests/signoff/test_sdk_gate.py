"""The Python SDK against a real server over loopback HTTP, with a real Redis and RQ jobs:
decorated functions, approval blocks and checks, decided by an approver on the API."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from typing import Any

import pytest

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from engine.definition.policy import PolicySource
from engine.gate_api import gate_extension
from engine.run.gate import Gate as ServerGate
from engine.state import tokens
from signoff import Blocked, Denied, Gate, TimedOut, Unavailable
from tests.support.services import free_port, wait_until

POLICY = textwrap.dedent("""\
    rules:
      - {tool: "search.web", action: allow}
      - {tool: "shell.execute", action: block, reason: "No shell for agents"}
      - tool: "payments.refund"
        action: escalate
        reason: "Money leaves the company"
        approvers: ["U0ALICE"]
      - tool: "payments.transfer"
        action: escalate
        approvers: ["U0ALICE"]
        editable: [amount]
""")


@pytest.fixture
def server(runtime, served, settings, tmp_path):
    (tmp_path / "policy.yml").write_text(POLICY)
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir), api_token="x",
                    extensions=[gate_extension(ServerGate(runtime.engine,
                                                          PolicySource(tmp_path / "policy.yml")))])
    web = served(app)

    def token(name: str, scopes: str, principal: str) -> str:
        secret, record = tokens.issue(name, tokens.parse_scopes(scopes), principal, "")
        runtime.store.add_token(record, tokens.digest(secret))
        return secret

    alice = web.client(headers={"Authorization": f"Bearer {token('alice', 'decide', 'U0ALICE')}"})
    yield web.url, token("agent", "run,read", "agent-1"), alice
    alice.close()


def in_background(action) -> dict[str, Any]:
    """Run ``action`` in a thread; the dict gets its result or its error."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = action()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    outcome["thread"] = thread
    return outcome


def decide_when_waiting(runtime, work, alice, approved: bool, comment: str = "",
                        **edits: Any) -> str:
    """The reviewer's side: once the call's review waits, Alice decides it."""
    wait_until(lambda: runtime.engine.list_executions()[1] >= 1, timeout=30,
               message="the call to be escalated")
    [summary], _ = runtime.engine.list_executions(limit=1)
    work()
    answer = {"approved": approved, **({"comment": comment} if comment else {}), **edits}
    response = alice.post(f"/api/workflowExecutions/{summary.id}/resume", json=answer)
    assert response.status_code == 200, response.text
    work()
    return summary.id


def test_a_guarded_function_runs_once_approved_with_its_arguments(server, runtime, work):
    url, token, alice = server
    gate = Gate(url, token)
    refunds = []

    @gate.guard("payments.refund", summary=lambda customer, amount: f"refund {customer}")
    def refund(customer: str, amount: int, currency: str = "EUR") -> str:
        refunds.append((customer, amount, currency))
        return "refunded"

    outcome = in_background(lambda: refund("ACME", 120))
    request_id = decide_when_waiting(runtime, work, alice, True)
    outcome["thread"].join(timeout=60)
    assert outcome.get("result") == "refunded", outcome.get("error")
    assert refunds == [("ACME", 120, "EUR")]
    state = runtime.engine.get(request_id)
    assert state.event["args"] == {"customer": "ACME", "amount": 120, "currency": "EUR"}
    assert state.event["summary"] == "refund ACME"
    # the approval was spent on that call: it cannot be used again
    assert runtime.store.get_value(f"signoff:gate-use:{request_id}") is not None


def test_a_denied_call_raises_denied_naming_who_and_why_and_never_runs(server, runtime, work):
    url, token, alice = server
    gate = Gate(url, token)
    ran = []

    @gate.guard("payments.refund")
    def refund(customer: str, amount: int) -> None:
        ran.append(customer)

    outcome = in_background(lambda: refund("ACME", 9000))
    decide_when_waiting(runtime, work, alice, False, "too much")
    outcome["thread"].join(timeout=60)
    error = outcome.get("error")
    assert isinstance(error, Denied), outcome
    assert error.decision.decided_by == "U0ALICE" and error.decision.comment == "too much"
    assert "U0ALICE" in str(error)
    assert ran == []


def test_allow_and_block_need_no_reviewer(server):
    url, token, _ = server
    gate = Gate(url, token)
    with gate.approval("search.web", args={"q": "rq"}) as decision:
        assert decision.status == "allowed"
    with pytest.raises(Blocked) as caught, gate.approval("shell.execute", args={"cmd": "ls"}):
        pytest.fail("a blocked block ran")
    assert caught.value.decision.reason == "No shell for agents"
    assert gate.check("shell.execute").status == "blocked"  # check does not raise
    assert gate.policy("payments.refund", {"amount": 1}).status == "escalate"  # starts nothing


def test_check_without_waiting_and_an_async_guard(server, runtime, work):
    url, token, alice = server
    gate = Gate(url, token)
    pending = gate.check("payments.refund", {"customer": "X", "amount": 1}, wait=False)
    assert pending.status == "pending" and pending.request_id

    @gate.guard("search.web")
    async def search(q: str) -> str:
        return f"results for {q}"

    assert asyncio.run(search("signoff")) == "results for signoff"
    assert asyncio.run(gate.acheck("shell.execute")).status == "blocked"


def test_no_decision_in_time_withdraws_the_request_and_raises(server, runtime, work):
    url, token, _ = server
    gate = Gate(url, token, timeout=0)
    with pytest.raises(TimedOut) as caught:
        gate.require("payments.refund", {"customer": "X", "amount": 5})
    assert runtime.engine.get(caught.value.decision.request_id).status.value == "CANCELLED"


def test_an_unreachable_server_fails_closed():
    gate = Gate(f"http://127.0.0.1:{free_port()}", "signoff_secret")
    ran = []

    @gate.guard("search.web")
    def search(q: str) -> None:
        ran.append(q)

    with pytest.raises(Unavailable):
        search("x")
    assert ran == []
    assert "signoff_secret" not in repr(gate)


def test_a_guarded_function_runs_with_the_arguments_the_reviewer_edited(server, runtime, work):
    url, token, alice = server
    gate = Gate(url, token)
    paid = []

    @gate.guard("payments.transfer")
    def transfer(iban: str, amount: int) -> None:
        paid.append((iban, amount))

    outcome = in_background(lambda: transfer("DE89", 5000))
    request_id = decide_when_waiting(runtime, work, alice, True, amount=500)
    outcome["thread"].join(timeout=60)
    assert "error" not in outcome, outcome
    assert paid == [("DE89", 500)]
    used = runtime.store.get_value(f"signoff:gate-use:{request_id}")
    assert used is not None  # spent on the edited call
