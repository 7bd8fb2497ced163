"""Attack: an agent reuses an approval: a second time, for other arguments or another tool,
under another caller's token, before or after a denial, or as a lookalike run an accomplice
approved. An approval covers one call, by one requester, once; each attempt is refused."""

from __future__ import annotations

from engine.definition.loader import parse_workflow
from tests.engine.test_gate_api import LOOKALIKE, REFUND, decide, escalate


def test_a_lookalike_run_is_no_gate_request_and_cannot_be_used(agent, gate_server, work,
                                                               runtime):
    # A workflow named like a gate review, run with a gate request's event and approved by
    # an accomplice, still is no approval of that call.
    event = {"tool": REFUND["tool"], "args": REFUND["args"], "argsSha256": "x" * 64}
    fake = runtime.engine.run(parse_workflow(LOOKALIKE), event, requested_by="agent-1")
    work()
    accomplice = gate_server("accomplice", "decide", "U0EVE")
    assert decide(accomplice, fake, True).status_code == 200
    work()
    assert agent.get(f"/api/gate/requests/{fake}").status_code == 404
    used = agent.post(f"/api/gate/requests/{fake}/use",
                      json={"tool": REFUND["tool"], "args": REFUND["args"]})
    assert used.status_code == 404
    assert agent.get("/api/gate/requests/nope").status_code == 404


def approved_request(agent, alice, work) -> str:
    request_id = escalate(agent, work)
    decide(alice, request_id, True)
    work()
    return request_id


def test_an_approval_is_used_once(agent, alice, work):
    request_id = approved_request(agent, alice, work)
    use = {"tool": REFUND["tool"], "args": REFUND["args"]}
    first = agent.post(f"/api/gate/requests/{request_id}/use", json=use)
    assert first.status_code == 200, first.text
    assert first.json()["used"]["by"] == "agent-1"
    replay = agent.post(f"/api/gate/requests/{request_id}/use", json=use)
    assert replay.status_code == 409
    assert replay.json()["error"] == "already_used"
    assert replay.json()["used"] == first.json()["used"]
    trail = agent.get(f"/api/workflowExecutions/{request_id}/audit").json()
    assert [e["type"] for e in trail["events"]].count("gate.used") == 1
    assert trail["verified"] is True


def test_an_approval_does_not_cover_other_arguments_or_another_tool(agent, alice, work):
    request_id = approved_request(agent, alice, work)
    bigger = agent.post(f"/api/gate/requests/{request_id}/use",
                        json={"tool": REFUND["tool"], "args": {**REFUND["args"], "amount": 25000}})
    assert bigger.status_code == 409 and bigger.json()["error"] == "other_arguments"
    other = agent.post(f"/api/gate/requests/{request_id}/use",
                       json={"tool": "payments.wire", "args": REFUND["args"]})
    assert other.status_code == 409 and other.json()["error"] == "other_tool"
    # the refusals spent nothing: the approved call itself is still usable, once
    right = agent.post(f"/api/gate/requests/{request_id}/use",
                       json={"tool": REFUND["tool"], "args": dict(reversed(REFUND["args"].items()))})
    assert right.status_code == 200  # the same arguments in another key order


def test_another_caller_cannot_use_someone_elses_approval(agent, alice, gate_server, work):
    request_id = approved_request(agent, alice, work)
    thief = gate_server("thief", "run,read", "agent-2")
    stolen = thief.post(f"/api/gate/requests/{request_id}/use",
                        json={"tool": REFUND["tool"], "args": REFUND["args"]})
    assert stolen.status_code == 403 and stolen.json()["error"] == "not_the_requester"


def test_a_denied_or_pending_request_cannot_be_used(agent, alice, work):
    pending = escalate(agent, work)
    use = {"tool": REFUND["tool"], "args": REFUND["args"]}
    early = agent.post(f"/api/gate/requests/{pending}/use", json=use)
    assert early.status_code == 409 and early.json()["error"] == "not_approved"
    decide(alice, pending, False)
    work()
    late = agent.post(f"/api/gate/requests/{pending}/use", json=use)
    assert late.status_code == 409 and late.json()["error"] == "not_approved"
