"""A review's message is stored once, in the audit trail with its hash: what waits on it
keeps the hash and the first line, and reads the message back from the trail."""

from __future__ import annotations

import hashlib
import json

from engine.definition.loader import parse_workflow
from engine.notify import Actor
from engine.state import keys
from engine.state.execution import ExecutionStatus

ALICE = Actor(id="U0ALICE", name="alice", source="slack")
EVIDENCE = "powershell.exe -enc " + "aGVsbG8gd29ybGQ" * 50

REVIEWS = """
name: evidence
steps:
  - name: hosts
    type: foreach
    foreach: "${{ event.hosts }}"
    steps:
      - name: review
        type: waitForInput
        with:
          message: |
            ## Isolate {{ foreach.item }}?
            Evidence: {{ event.evidence }}
"""


def test_the_message_is_in_the_audit_trail_alone_and_read_back_from_it(runtime, work,
                                                                        redis_client):
    execution_id = runtime.engine.run(parse_workflow(REVIEWS),
                                      {"hosts": ["web-1", "web-2"], "evidence": EVIDENCE})
    work()

    stored = redis_client.hgetall(keys.execution(execution_id))
    assert EVIDENCE not in stored[b"w"].decode()
    assert json.loads(stored[b"w"])["ti"] == "## Isolate web-1?"
    trail = [e.event for e in runtime.engine.audit_entries(execution_id)]
    [shown] = [e for e in trail if e["type"] == "step.waiting_for_input"]
    assert EVIDENCE in shown["message"]
    assert shown["sha256"] == hashlib.sha256(shown["message"].encode()).hexdigest()

    # Stored compressed (the trail's entry and the event), read back whole.
    stored_trail = redis_client.lrange(keys.audit(execution_id), 0, -1)
    assert not any(EVIDENCE.encode() in entry for entry in stored_trail)
    assert any(b'"messageZ":' in entry for entry in stored_trail)
    assert EVIDENCE.encode() not in stored[b"ev"]
    assert runtime.engine.get(execution_id).event["evidence"] == EVIDENCE

    review = runtime.engine.review(execution_id)
    assert review is not None and review.message == shown["message"]
    assert review.title == "Isolate web-1?"
    [listed] = runtime.engine.store.load_reviews([execution_id])
    assert listed is not None and listed.waiting is not None
    assert not listed.waiting.complete and listed.waiting.message == "## Isolate web-1?"

    # The second instance of the step shows its own message, read back the same way.
    runtime.engine.resume(execution_id, {"approved": True}, ALICE)
    work()
    second = runtime.engine.review(execution_id)
    assert second is not None and second.message.startswith("## Isolate web-2?")
    assert EVIDENCE in second.message
    assert runtime.engine.verify_audit(execution_id).ok

    runtime.engine.resume(execution_id, {"approved": True}, ALICE)
    work()
    assert runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED


def test_a_waiting_state_written_with_its_message_whole_still_reads(runtime, work,
                                                                    redis_client):
    execution_id = runtime.engine.run(parse_workflow(REVIEWS),
                                      {"hosts": ["web-1"], "evidence": "short"})
    work()
    key = keys.execution(execution_id)
    older = json.loads(redis_client.hget(key, "w"))
    older["message"] = "as stored before"
    redis_client.hset(key, "w", json.dumps(older))

    review = runtime.engine.review(execution_id)
    assert review is not None and review.message == "as stored before"


def test_an_edit_of_the_compressed_message_breaks_the_chain(runtime, work, redis_client):
    execution_id = runtime.engine.run(parse_workflow(REVIEWS),
                                      {"hosts": ["web-1"], "evidence": EVIDENCE})
    work()
    key = keys.audit(execution_id)
    entries = redis_client.lrange(key, 0, -1)
    [index] = [n for n, entry in enumerate(entries) if b'"messageZ":' in entry]
    edited = json.loads(entries[index][64:])
    edited["messageZ"] = edited["messageZ"][:-5] + "00000"
    redis_client.lset(key, index, entries[index][:64] + json.dumps(
        edited, separators=(",", ":"), sort_keys=True).encode())

    check = runtime.engine.verify_audit(execution_id)
    assert not check.ok and check.entry_id == str(index + 1)
