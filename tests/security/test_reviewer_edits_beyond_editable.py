"""Attack: an approver changes more of an agent's call than the rule lets them.

The rule marks ``beneficiary.name`` and ``wire.ref`` editable. An approver who wants the
money elsewhere answers the review with the beneficiary's IBAN, the amount, a whole new
``beneficiary`` object and the path ``beneficiary.iban``. Only the editable paths reach
the call the agent runs; everything else stays as the agent asked, and the approval does
not cover a call with the attacker's IBAN.
"""

from __future__ import annotations

from tests.engine.test_gate_api import WIRE, escalate


def test_answers_beyond_the_editable_paths_change_nothing_of_the_call(agent, alice, work):
    request_id = escalate(agent, work, WIRE)
    answer = {"approved": True, "beneficiary.name": "ACME Holding GmbH",
              "beneficiary.iban": "XX00 ATTACKER", "amount": 90000,
              "beneficiary": {"name": "Mallory", "iban": "XX00 ATTACKER"}, "iban": "XX00"}
    alice.post(f"/api/workflowExecutions/{request_id}/resume", json=answer)
    work()

    state = agent.get(f"/api/gate/requests/{request_id}").json()
    assert state["status"] == "approved"
    assert state["args"] == {**WIRE["args"], "beneficiary": {
        **WIRE["args"]["beneficiary"], "name": "ACME Holding GmbH"}}
    assert state["edited"] == ["beneficiary.name"]
    stolen = {**WIRE["args"], "amount": 90000,
              "beneficiary": {**WIRE["args"]["beneficiary"], "iban": "XX00 ATTACKER"}}
    used = agent.post(f"/api/gate/requests/{request_id}/use",
                      json={"tool": WIRE["tool"], "args": stolen})
    assert used.status_code == 409 and used.json()["error"] == "other_arguments"
