"""A click's worker reads the execution, a plug-in's note on it, small cached values and
the audit trail in one round trip (Store.load_annotated), and decides on that read: the
commit's guards catch anything that changed since."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import AlreadyDecided, ExecutionNotFound
from engine.notify import Actor, NullNotifier
from engine.state import keys, messages
from engine.state.execution import ExecutionStatus, dumps
from engine.worker.runtime import build_runtime, install_runtime
from engine.worker.worker import SignoffWorker
from tests.support.services import wait_until

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


def test_a_decision_that_continues_the_run_here_takes_its_lease_and_its_read(runtime, work,
                                                                             redis_client):
    """The click's worker continues the run itself: the commit that decides takes the run's
    lease and reads the run back, so the next segment needs no read of its own."""
    execution_id = runtime.engine.run(parse_workflow(REVIEW), {"host": "web-1",
                                                               "evidence": EVIDENCE})
    work()

    result = runtime.engine.resume(execution_id, {"approved": True}, ALICE, step="review",
                                   advance=False)

    assert result.taken is not None
    token, read = result.taken
    assert redis_client.get(keys.lease(execution_id)) == token.encode()
    assert read.status is ExecutionStatus.RUNNING and read.waiting is None
    assert read.decisions["review"].actor["id"] == "U0ALICE"
    assert read.audit_head == runtime.engine.get(execution_id).audit_head
    calls = redis_client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)
    assert runtime.runner.advance(execution_id, result.taken) is ExecutionStatus.COMPLETED
    # the segment ran on that read: no HGETALL of its own
    assert redis_client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0) == calls
    assert redis_client.get(keys.lease(execution_id)) is None  # given back at the end
    assert runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED


def test_a_decision_leaves_a_lease_another_holds_and_the_run_continues_once_it_is_free(
        runtime, work, redis_client):
    execution_id = runtime.engine.run(parse_workflow(REVIEW), {"host": "web-1",
                                                               "evidence": "x"})
    work()
    redis_client.set(keys.lease(execution_id), "another-worker", px=60_000)

    result = runtime.engine.resume(execution_id, {"approved": True}, ALICE, step="review",
                                   advance=False)

    assert result.decided and result.taken is None  # decided, but not ours to continue
    assert redis_client.get(keys.lease(execution_id)) == b"another-worker"
    assert runtime.runner.advance(execution_id, result.taken) is None  # busy: left to them
    redis_client.delete(keys.lease(execution_id))
    assert runtime.runner.advance(execution_id) is ExecutionStatus.COMPLETED


def test_a_worker_that_died_holding_the_lease_its_decision_took_is_taken_over(
        settings, redis_client):
    # The click's worker decided, took the lease in the same commit, and died before the
    # run's next segment: once the lease lapses, the sweep hands the run to another worker.
    rt = build_runtime(replace(settings, lease_seconds=0.3), redis_client,
                       notifier=NullNotifier())
    install_runtime(rt)
    execution_id = rt.engine.run(parse_workflow(REVIEW), {"host": "web-1", "evidence": "x"})
    drain = SignoffWorker([rt.settings.queue], connection=redis_client)
    drain.work(burst=True, logging_level="WARNING")

    result = rt.engine.resume(execution_id, {"approved": True}, ALICE, step="review",
                              advance=False)
    assert result.taken is not None  # ... and the worker dies here

    assert rt.engine.recover_stalled() == []  # the lease and its deadline still hold
    wait_until(lambda: execution_id in rt.engine.recover_stalled(), timeout=5,
               message="the sweep to find the run its worker left")
    SignoffWorker([rt.settings.queue], connection=redis_client).work(
        burst=True, logging_level="WARNING")
    state = rt.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.decisions["review"].actor["id"] == "U0ALICE"
    assert state.results["after"].status.value == "COMPLETED"
