"""A click's worker reads the execution, a plug-in's note on it, small cached values and
the audit trail in one round trip (Store.load_annotated), and decides on that read: the
commit's guards catch anything that changed since."""

from __future__ import annotations

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import AlreadyDecided, ExecutionNotFound
from engine.notify import Actor
from engine.state import keys, messages
from engine.state.execution import ExecutionStatus, dumps

ALICE = Actor(id="U0ALICE", name="alice", source="slack")
BOB = Actor(id="U0BOB", name="bob", source="slack")
EVIDENCE = "powershell.exe -enc " + "aGVsbG8gd29ybGQ" * 50

REVIEW = """
name: one-read
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE, U0BOB]
      message: |
        ## Isolate {{ event.host }}?
        Evidence: {{ event.evidence }}
  - name: after
    type: console
    with:
      message: done
"""


def test_the_execution_its_note_values_and_trail_come_in_one_read(runtime, work, redis_client):
    execution_id = runtime.engine.run(parse_workflow(REVIEW),
                                      {"host": "web-1", "evidence": EVIDENCE})
    work()
    runtime.engine.annotate(execution_id, "slack:review", {"posts": ["C1/1.2"]})
    redis_client.set("cached:name", "Alice A.")

    read = runtime.engine.get_annotated(execution_id, "slack:review",
                                        values=["cached:name", "not:there"])

    assert read.annotation == {"posts": ["C1/1.2"]}
    assert read.values == [b"Alice A.", None]
    loaded = runtime.engine.get(execution_id)
    assert read.state.status is ExecutionStatus.WAITING_FOR_INPUT
    assert read.state.waiting is not None and loaded.waiting is not None
    assert read.state.waiting.message == loaded.waiting.message  # the message read back whole
    assert EVIDENCE in read.state.waiting.message
    assert messages.find(read.trail, read.state.waiting.message_sha256,
                         dumps(read.state.event)) == read.state.waiting.message
    assert read.trail == redis_client.lrange(keys.audit(execution_id), 0, -1)
    assert runtime.engine.get_annotated(execution_id, "other").annotation is None
    with pytest.raises(ExecutionNotFound):
        runtime.engine.get_annotated("no-such-run", "slack:review")


def test_a_decision_on_a_stale_read_is_tried_again_on_a_fresh_one(runtime, work):
    execution_id = runtime.engine.run(parse_workflow(REVIEW), {"host": "web-1",
                                                               "evidence": "x"})
    work()
    stale = runtime.engine.get(execution_id)
    runtime.engine.resume(execution_id, {"approved": True}, BOB, step="review")

    # Read before Bob decided: the guarded commit fails, the fresh read says who decided.
    with pytest.raises(AlreadyDecided) as decided:
        runtime.engine.resume(execution_id, {"approved": False}, ALICE, step="review",
                              read=stale)
    assert decided.value.by == "bob"
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    [decision] = state.decisions.values()
    assert decision.actor["id"] == "U0BOB" and decision.outcome == "approved"
