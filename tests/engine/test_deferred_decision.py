"""A worker that decided a click continues the run before the decision is written
(engine.run.buffered_writes.Deferred, Runner.continue_decided): the run's first write
carries the decision with the pure steps after it, guarded as the decision's own commit,
and claims the run's lease. No step with effects runs before the decision is written; a
run that changed meanwhile is looked at again on a fresh read, and nothing of the attempt
that lost is written; a lease another holds, or a segment that fails before its first
write, leaves the decision to its own commit and the run to a queued segment. Real Redis,
real drains, a real HTTP target, and a real worker process where one is killed."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from engine.definition.loader import parse_workflow
from engine.errors import AlreadyDecided
from engine.notify import Actor
from engine.run.buffered_writes import Deferred
from engine.state import audit, keys, lua
from engine.state.execution import ExecutionStatus, StepStatus
from tests.engine.test_inbox import drain_leftovers, ran, strings, task
from tests.support.http_target import PostTarget
from tests.support.monitor import monitored
from tests.support.services import wait_until

ALICE = Actor(id="U0ALICE", name="alice", source="slack")
BOB = Actor(id="U0BOB", name="bob", source="slack")
CAROL = Actor(id="U0CAROL", name="carol", source="slack")
COMMIT_SHA = hashlib.sha1(lua.COMMIT.encode()).hexdigest()

REVIEW = """
name: deferred
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE, U0BOB]
      message: "Isolate {{ event.host }}?"
  - name: note
    type: data.set
    with:
      decided: "{{ steps.review.output.approved }}"
  - name: after
    type: console
    if: "steps.review.output.approved : true"
    with:
      message: "isolating {{ event.host }}"
"""


def isolate(url: str) -> str:
    return f"""
name: deferred-effect
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE]
      message: "Isolate {{{{ event.host }}}}?"
  - name: isolate
    type: http
    with: {{method: POST, url: "{url}/isolate", body: {{host: "{{{{ event.host }}}}"}}}}
  - name: after
    type: console
    with: {{message: done}}
"""


class Target:
    """The host-isolation service the `http` step calls: at each call it looks at the run
    ``execution_id`` in Redis (what a host's isolation would find recorded), and it can hold
    the first call."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.execution_id = ""
        self.seen: list[Any] = []
        self.hold = False
        self.release = threading.Event()
        self.service = PostTarget(self._answer)
        self.url = self.service.url
        self.redis = redis_client

    def _answer(self, path: str, body: bytes) -> tuple[int, bytes]:
        run = keys.execution(self.execution_id)
        self.seen.append({"decided": self.redis.hexists(run, "dec:review"),
                          "status": self.redis.hget(run, "st")})
        if self.hold and len(self.seen) == 1:
            self.release.wait(30)
        return 200, b'{"isolated": true}'

    def close(self) -> None:
        self.release.set()
        self.service.close()


def started(runtime, work, text: str, event: dict[str, Any]) -> str:
    execution_id = runtime.engine.run(parse_workflow(text), event)
    work()
    assert runtime.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    return execution_id


def refused_meanwhile(runtime, execution_id: str, tries: list[Deferred]
                      ) -> Callable[[Deferred], Any]:
    """Continue the run as a click's worker does, Carol's refused attempt landing in the
    trail while the first try's segment runs (its write then finds the trail moved on)."""

    def then(deferred: Deferred) -> Any:
        tries.append(deferred)
        if len(tries) == 1:
            runtime.engine.reviews.record_refusal(execution_id, CAROL, "not_an_approver")
        return runtime.runner.continue_decided(deferred)

    return then


def types(runtime, execution_id: str) -> list[str]:
    return [e.event["type"] for e in runtime.engine.audit_entries(execution_id)]


def test_the_decision_and_the_rest_of_the_run_are_written_together(runtime, work, redis_client):
    execution_id = started(runtime, work, REVIEW, {"host": "web-1"})
    runtime.engine.scheduler.inbox.put(task("decide_and_continue"), execution_id, True)

    seen = monitored(redis_client, work)

    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.decisions["review"].actor["id"] == "U0ALICE"
    assert state.variables == {"decided": "true"}
    assert state.results["after"].status is StepStatus.COMPLETED
    assert ran(redis_client) == [json.dumps(["decided", True])]
    # The run was read once, to decide, and written once: the decision, both steps after
    # it and the run's end. The segment ran on the decision's state, with no read of its own.
    execution = keys.execution(execution_id)
    touched = [e["command"] for e in seen if e["client_type"] != "lua"
               and execution in e["command"]]
    assert len(touched) == 2
    assert not touched[0].startswith(f"EVALSHA {COMMIT_SHA}")
    assert touched[1].startswith(f"EVALSHA {COMMIT_SHA}")
    assert types(runtime, execution_id)[-7:] == [
        audit.WAITING_FOR_INPUT, audit.DECIDED, audit.STEP_STARTED, audit.STEP_COMPLETED,
        audit.STEP_STARTED, audit.STEP_COMPLETED, audit.COMPLETED]
    assert runtime.engine.verify_audit(execution_id).ok
    assert redis_client.get(keys.lease(execution_id)) is None  # never held past the write
    assert redis_client.zscore(keys.INDEX_RUNNING, execution_id) is None
    assert redis_client.zscore(keys.INDEX_WAITING, execution_id) is None
    # The click's task was acknowledged by that write: nothing left, nothing to retry.
    assert drain_leftovers(redis_client, runtime.settings.queue) == []
    assert runtime.engine.scheduler.inbox.retrying() == []


def test_a_run_changed_meanwhile_is_decided_again_on_a_fresh_read(runtime, work):
    """Carol's refused attempt lands in the trail while Alice's segment runs: the write
    carrying Alice's decision is refused (the trail moved on), nothing of it is written,
    and she decides again on what the run is now."""
    execution_id = started(runtime, work, REVIEW, {"host": "web-1"})
    tries: list[Deferred] = []
    then = refused_meanwhile(runtime, execution_id, tries)

    result = runtime.engine.resume(execution_id, {"approved": True}, ALICE, step="review",
                                   then=then)

    assert len(tries) == 2 and tries[0].result is None and tries[1].result is not None
    assert result.decided and result.continued is not None
    assert result.continued.status is ExecutionStatus.COMPLETED
    kinds = types(runtime, execution_id)
    assert kinds.count(audit.DECIDED) == 1 and kinds.count(audit.COMPLETED) == 1
    assert kinds.index(audit.REFUSED) < kinds.index(audit.DECIDED)
    assert kinds.count(audit.STEP_COMPLETED) == 2  # note and after, once each
    assert runtime.engine.verify_audit(execution_id).ok
    assert runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED


FAN_OUT = """
name: deferred-fan-out
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE]
      message: "Enrich {{ event.host }}?"
  - name: enrich
    type: parallel
    branches:
      - name: reputation
        steps:
          - {name: check_reputation, type: console, with: {message: "rep {{ event.host }}"}}
      - name: owner
        steps:
          - {name: find_owner, type: data.set, with: {owner: "team-{{ event.host }}"}}
  - name: summarize
    type: console
    with: {message: "{{ steps.find_owner.output.owner }}"}
"""


def test_child_runs_start_only_once_the_decision_is_written(runtime, work, redis_client):
    """A parallel step writes which branches it starts before it starts them, so the
    decision is written first, and an attempt whose write is refused started none."""
    execution_id = started(runtime, work, FAN_OUT, {"host": "web-1"})
    tries: list[Deferred] = []
    then = refused_meanwhile(runtime, execution_id, tries)

    runtime.engine.resume(execution_id, {"approved": True}, ALICE, step="review", then=then)
    work()

    assert len(tries) == 2 and tries[0].result is None
    runs = strings(redis_client.scan_iter(match=keys.execution("*")))
    assert len(runs) == 3  # the run and its two branches: none left by the refused attempt
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["summarize"].output == "team-web-1"
    assert types(runtime, execution_id).count(audit.DECIDED) == 1
    assert runtime.engine.verify_audit(execution_id).ok


def test_a_decision_that_lost_the_race_writes_nothing_and_names_who_decided(runtime, work):
    execution_id = started(runtime, work, REVIEW, {"host": "web-1"})
    segments: list[Deferred] = []

    def then(deferred: Deferred) -> Any:
        segments.append(deferred)
        runtime.engine.resume(execution_id, {"approved": False}, BOB, step="review")
        return runtime.runner.continue_decided(deferred)

    with pytest.raises(AlreadyDecided) as decided:
        runtime.engine.resume(execution_id, {"approved": True}, ALICE, step="review",
                              then=then)

    assert decided.value.by == "bob" and decided.value.outcome == "denied"
    assert len(segments) == 1 and segments[0].result is None
    work()  # Bob's run continues in its own segment
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert [d.actor["id"] for d in state.decisions.values()] == ["U0BOB"]
    assert state.variables == {"decided": "false"}  # Alice's segment wrote none of its own
    assert state.results["after"].status is StepStatus.SKIPPED
    kinds = types(runtime, execution_id)
    assert kinds.count(audit.DECIDED) == 1 and kinds.count(audit.COMPLETED) == 1
    assert runtime.engine.verify_audit(execution_id).ok


@pytest.fixture
def target(redis_client):
    t = Target(redis_client)
    yield t
    t.close()


def test_no_step_with_effects_runs_before_the_decision_is_written(runtime, work, target,
                                                                   redis_client):
    execution_id = started(runtime, work, isolate(target.url), {"host": "web-1"})
    target.execution_id = execution_id
    runtime.engine.scheduler.inbox.put(task("decide_and_continue"), execution_id, True)

    work()

    # When the host was isolated, the decision was recorded and the run marked running.
    assert target.seen == [{"decided": True, "status": b"RUNNING"}]
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["isolate"].output["data"] == {"isolated": True}
    kinds = types(runtime, execution_id)
    assert kinds[kinds.index(audit.DECIDED) + 1] == audit.STEP_STARTED  # written together
    assert runtime.engine.verify_audit(execution_id).ok
    assert redis_client.get(keys.lease(execution_id)) is None


def test_a_worker_killed_after_the_decision_was_written_leaves_the_run_to_the_sweep(
        runtime, work, target, redis_client, worker_process):
    execution_id = started(runtime, work, isolate(target.url), {"host": "web-1"})
    target.execution_id = execution_id
    target.hold = True  # the first isolation hangs: the worker dies during it
    worker = worker_process(extra_env={"SIGNOFF_LEASE_SECONDS": "1"})
    runtime.engine.scheduler.inbox.put(task("decide_and_continue"), execution_id, True)
    wait_until(lambda: target.seen, timeout=20, message="the isolation to be called")
    worker.kill()

    # The decision was written before the call, with the click's acknowledgement: the click
    # is not decided again, and the run waits for the sweep, under the lease it claimed.
    assert target.seen == [{"decided": True, "status": b"RUNNING"}]
    assert runtime.engine.scheduler.inbox.pending() == 0
    assert not any(strings(redis_client.lrange(k, 0, -1))
                   for k in redis_client.scan_iter(match=keys.inbox_taking("*")))
    wait_until(lambda: execution_id in runtime.engine.recover_stalled(), timeout=10,
               message="the sweep to find the run its worker left")
    target.release.set()
    work()

    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert [d.actor["id"] for d in state.decisions.values()] == ["U0ALICE"]
    assert len(target.seen) == 2  # the interrupted call is made again (at least once)
    entries = [e.event for e in runtime.engine.audit_entries(execution_id)]
    assert [e["type"] for e in entries].count(audit.DECIDED) == 1
    isolations = [e for e in entries
                  if e["type"] == audit.STEP_STARTED and e.get("step") == "isolate"]
    assert [e.get("recovered") for e in isolations] == [None, True]
    assert runtime.engine.verify_audit(execution_id).ok


def test_a_lease_another_holds_leaves_the_decision_to_its_own_commit_and_a_queued_segment(
        runtime, work, redis_client):
    execution_id = started(runtime, work, REVIEW, {"host": "web-1"})
    redis_client.set(keys.lease(execution_id), "another-worker", px=60_000)

    result = runtime.engine.resume(execution_id, {"approved": True}, ALICE, step="review",
                                   then=runtime.runner.continue_decided)

    assert result.decided and result.continued is None  # decided, not continued here
    assert redis_client.get(keys.lease(execution_id)) == b"another-worker"
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.RUNNING and "after" not in state.results
    assert state.decisions["review"].actor["id"] == "U0ALICE"
    redis_client.delete(keys.lease(execution_id))
    work()  # the segment the decision queued
    assert runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert types(runtime, execution_id).count(audit.DECIDED) == 1


def test_a_segment_that_fails_before_its_first_write_leaves_the_decision_to_its_own_commit(
        runtime, work, caplog):
    execution_id = started(runtime, work, REVIEW, {"host": "web-1"})

    def then(deferred: Deferred) -> Any:
        raise RuntimeError("the workflow's definition could not be read")

    with caplog.at_level(logging.ERROR, logger="engine.run.reviews"):
        result = runtime.engine.resume(execution_id, {"approved": True}, ALICE,
                                       step="review", then=then)

    assert result.decided and result.continued is None
    assert any("written on its own" in r.getMessage() for r in caplog.records)
    assert runtime.engine.get(execution_id).decisions["review"].actor["id"] == "U0ALICE"
    work()
    assert runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert runtime.engine.verify_audit(execution_id).ok


def test_a_failure_after_the_decision_was_written_is_not_decided_again(runtime, work):
    """The click's task raises after the write that carried its decision (and acknowledged
    it): the drain logs it, and neither the decision nor the task is tried again."""
    execution_id = started(runtime, work, REVIEW, {"host": "web-1"})

    def then(deferred: Deferred) -> Any:
        runtime.runner.continue_decided(deferred)
        raise RuntimeError("after the write")

    with pytest.raises(RuntimeError):
        runtime.engine.resume(execution_id, {"approved": True}, ALICE, step="review",
                              then=then)
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert types(runtime, execution_id).count(audit.DECIDED) == 1
