"""The audit trail's hash chain detects edits and deletions made directly in Redis."""

from __future__ import annotations

import json

from engine.definition.loader import parse_workflow
from engine.notify import Actor
from engine.state import keys

FLOW = """
name: audited
steps:
  - name: prep
    type: console
    with: {message: "prepared {{ event.id }}"}
  - name: review
    type: waitForApproval
    with: {message: "Disable account {{ event.id }}?"}
  - name: act
    type: console
    if: "steps.review.output.approved : true"
    with: {message: disabled}
"""


def decided_run(runtime, work):
    execution_id = runtime.engine.run(parse_workflow(FLOW), {"id": "jdoe"})
    work()
    runtime.engine.resume(execution_id, {"approved": True},
                          Actor(id="U0ALICE", name="alice", source="slack", team="T1"))
    work()
    return execution_id


def test_an_untouched_trail_verifies(runtime, work):
    execution_id = decided_run(runtime, work)
    check = runtime.engine.verify_audit(execution_id)
    assert check.ok and check.checked == len(runtime.engine.audit_entries(execution_id))


def test_an_edited_decision_is_detected(runtime, work, redis_client):
    execution_id = decided_run(runtime, work)
    key = keys.audit(execution_id)
    entries = redis_client.lrange(key, 0, -1)
    index = next(i for i, raw in enumerate(entries) if b'"step.decided"' in raw)
    raw = entries[index].decode()
    digest, body = raw[:64], json.loads(raw[64:])
    body["actor"]["id"] = "U0MALLORY"  # rewrite who decided, keep the old hash
    redis_client.lset(key, index, digest + json.dumps(body, sort_keys=True,
                                                      separators=(",", ":")))
    check = runtime.engine.verify_audit(execution_id)
    assert not check.ok
    assert check.entry_id == str(index + 1)
    assert "edited" in check.problem


def test_a_deleted_middle_event_is_detected(runtime, work, redis_client):
    execution_id = decided_run(runtime, work)
    key = keys.audit(execution_id)
    victim = redis_client.lindex(key, 2)
    redis_client.lrem(key, 1, victim)
    assert not runtime.engine.verify_audit(execution_id).ok


def test_a_deleted_last_event_is_detected_by_the_stored_head(runtime, work, redis_client):
    execution_id = decided_run(runtime, work)
    redis_client.rpop(keys.audit(execution_id))
    check = runtime.engine.verify_audit(execution_id)
    assert not check.ok and "removed from the end" in check.problem


def test_the_decision_event_records_who_what_when_and_what_they_saw(runtime, work):
    execution_id = decided_run(runtime, work)
    events = [e.event for e in runtime.engine.audit_entries(execution_id)]
    shown = next(e for e in events if e["type"] == "step.waiting_for_input")
    decided = next(e for e in events if e["type"] == "step.decided")
    assert shown["message"] == "Disable account jdoe?"
    assert decided["messageSha256"] == shown["sha256"]
    assert decided["actor"] == {"id": "U0ALICE", "name": "alice", "source": "slack",
                                "team": "T1"}
    assert decided["input"] == {"approved": True} and decided["at"]
