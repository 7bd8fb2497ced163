"""A review's message is stored once, in the audit trail with its hash: what waits on it
keeps the hash and the first line, and reads the message back from the trail."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib

from engine.definition.loader import parse_workflow
from engine.notify import Actor
from engine.state import audit, compact, keys
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
    waiting = compact.unpack(stored[b"w"])
    assert stored[b"w"][:1] == b"x" and len(stored[b"w"]) < len(waiting)  # compressed
    assert EVIDENCE not in waiting
    assert json.loads(waiting)["ti"] == "## Isolate web-1?"
    assert stored[b"wp"] == b"hosts[0].review"  # the path it waits on, for guards
    trail = [e.event for e in runtime.engine.audit_entries(execution_id)]
    [shown] = [e for e in trail if e["type"] == "step.waiting_for_input"]
    assert EVIDENCE in shown["message"]
    assert shown["sha256"] == hashlib.sha256(shown["message"].encode()).hexdigest()

    # Stored compressed (the trail's entry against the event, and the event), read back whole.
    stored_trail = redis_client.lrange(keys.audit(execution_id), 0, -1)
    assert not any(EVIDENCE in audit.split(entry)[1] for entry in stored_trail)
    [packed] = [json.loads(audit.split(entry)[1]) for entry in stored_trail
                if '"messageE":' in audit.split(entry)[1]]
    alone = base64.b64encode(zlib.compress(shown["message"].encode(), 6))
    assert len(packed["messageE"]) < len(alone)  # the evidence it quotes is the event's
    assert EVIDENCE.encode() not in stored[b"ev"]
    assert runtime.engine.get(execution_id).event["evidence"] == EVIDENCE

    review = runtime.engine.review(execution_id)
    assert review is not None and review.message == shown["message"]
    assert review.title == "Isolate web-1?"
    [listed] = runtime.engine.store.waiting_reviews([execution_id])
    assert listed is not None and listed.message == "## Isolate web-1?"

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
    older = json.loads(compact.unpack(redis_client.hget(key, "w")))
    older["message"] = "as stored before"
    redis_client.hset(key, "w", json.dumps(older, separators=(",", ":")))  # JSON, no ``wp``
    redis_client.hdel(key, "wp")

    review = runtime.engine.review(execution_id)
    assert review is not None and review.message == "as stored before"
    # A decision's guard finds the step it waits on in the JSON text.
    runtime.engine.resume(execution_id, {"approved": True}, Actor(id="U1", name="u", source="api"))
    assert runtime.engine.get(execution_id).decisions["hosts[0].review"].input == {"approved": True}


def test_an_edit_of_the_compressed_message_breaks_the_chain(runtime, work, redis_client):
    execution_id = runtime.engine.run(parse_workflow(REVIEWS),
                                      {"hosts": ["web-1"], "evidence": EVIDENCE})
    work()
    key = keys.audit(execution_id)
    entries = redis_client.lrange(key, 0, -1)
    [index] = [n for n, entry in enumerate(entries) if '"messageE":' in audit.split(entry)[1]]
    digest, body = audit.split(entries[index])
    edited = json.loads(body)
    edited["messageE"] = edited["messageE"][:-5] + "00000"
    redis_client.lset(key, index, audit.stored(digest, json.dumps(
        edited, separators=(",", ":"), sort_keys=True)))

    check = runtime.engine.verify_audit(execution_id)
    assert not check.ok and check.entry_id == str(index + 1)


def test_a_trail_written_before_messages_were_packed_against_the_event_still_reads(
        runtime, work, redis_client):
    """Trails written by the previous format keep the message compressed alone
    (``messageZ``): they read, and verify, as before."""
    execution_id = runtime.engine.run(parse_workflow(REVIEWS),
                                      {"hosts": ["web-1"], "evidence": EVIDENCE})
    work()
    key = keys.audit(execution_id)
    entries = redis_client.lrange(key, 0, -1)
    # The same trail as the previous format wrote it: each event packed without the event,
    # chained again from the start, and the head moved to match.
    events = [audit.decode(str(n), *reversed(audit.split(raw)),
                           runtime.engine.store.event_text(execution_id)).event
              for n, raw in enumerate(entries, start=1)]
    linked, head = audit.chain(audit.GENESIS, events)
    assert any('"messageZ":' in body for body, _ in linked)
    assert not any('"messageE":' in body for body, _ in linked)
    redis_client.delete(key)
    redis_client.rpush(key, *[digest + body for body, digest in linked])  # hex, as it was
    redis_client.hset(keys.execution(execution_id), "ah", head)

    assert runtime.engine.verify_audit(execution_id).ok
    review = runtime.engine.review(execution_id)
    assert review is not None and EVIDENCE in review.message
    [shown] = [e.event for e in runtime.engine.audit_entries(execution_id)
               if e.event["type"] == "step.waiting_for_input"]
    assert EVIDENCE in shown["message"]
    runtime.engine.resume(execution_id, {"approved": True}, ALICE)
    work()
    assert runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    # Hex hashes up to the upgrade, 32-byte ones after it: one chain, and it verifies.
    markers = {raw[:1] for raw in redis_client.lrange(key, 0, -1)}
    assert markers & {b"\x01", b"\x03"}  # 32 bytes (\x03: its body compressed)
    assert markers - {b"\x01", b"\x03"} <= {bytes([c]) for c in b"0123456789abcdef"}
    assert runtime.engine.verify_audit(execution_id).ok


def test_a_message_packed_against_the_event_reads_only_with_that_event():
    message = "## Isolate web-1?\nEvidence: " + EVIDENCE
    event = json.dumps({"evidence": EVIDENCE})
    stored = audit.packed({"type": audit.WAITING_FOR_INPUT, "message": message}, event)
    assert audit.PACKED_WITH_EVENT in stored and "message" not in stored
    assert audit.unpacked(dict(stored), event)["message"] == message
    # Without the event, or with another one, it stays as stored: no wrong text comes out.
    assert "message" not in audit.unpacked(dict(stored))
    assert "message" not in audit.unpacked(dict(stored), json.dumps({"evidence": "other"}))
