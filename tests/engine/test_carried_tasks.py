"""A task whose commit puts the task that follows from it in its place on its drain's list
(engine.state.inbox.Running, engine.state.store.Change.carry; a click's decision carrying
the rewrite of its Slack message): the drain runs that one next, handing it what the task
left in memory; it is durable from the commit on, its
retries go to its own inbox, and a decision carries its notifier's closing task only when
no other task waits in the inbox. Real Redis, real drains; a real worker process where one
is killed."""

from __future__ import annotations

import json
import logging

import pytest

from engine.definition.loader import parse_workflow
from engine.state import keys
from engine.state.execution import ExecutionStatus
from engine.state.inbox import Task
from engine.worker.runtime import build_runtime, install_runtime
from engine.worker.scheduler import rq_inbox
from tests.engine import inbox_tasks
from tests.engine.test_inbox import (
    RELEASE,
    drain_leftovers,
    entries,
    lapse_heartbeat,
    ran,
    strings,
    task,
)
from tests.support.services import wait_until

REVIEW = """
name: carried
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE]
      message: "Isolate {{ event.host }}?"
  - name: after
    type: console
    with:
      message: done
"""


def handed(r, name: str) -> list:
    """What the carried task ``name`` recorded it was handed."""
    return [json.loads(raw)[1] for raw in r.lrange(inbox_tasks.RAN, 0, -1)
            if raw.startswith(b"[") and json.loads(raw)[0] == name]


def test_a_carried_task_runs_next_in_the_same_drain_with_what_it_was_handed(
        redis_client, runtime, work):
    inbox = runtime.engine.scheduler.inbox
    inbox.put(task("hand_over"), "first", "carried")
    work()

    assert [json.loads(r)[0] if r.startswith("[") else r for r in ran(redis_client)] == [
        "first", "carried"]
    assert handed(redis_client, "carried") == [{"from": "first"}]
    # Acknowledged as any task: nothing in a drain's list, nothing waiting, no retry.
    assert drain_leftovers(redis_client, runtime.settings.queue) == []
    assert inbox.pending() == 0 and inbox.retrying() == []


def test_a_carried_task_that_fails_is_tried_again_in_its_own_inbox(redis_client, runtime, work):
    inbox = runtime.engine.scheduler.inbox
    inbox.put(task("hand_over"), "first", "fail", "elsewhere")
    work()

    assert inbox.retrying() == []  # not the engine's: its drains need not wait on it
    [(_, retry)] = runtime.engine.scheduler.inbox_of("elsewhere").retrying()
    assert (retry.function, retry.args, retry.failures, retry.home) == (
        task("fail"), ("fail",), 1, "elsewhere")
    assert drain_leftovers(redis_client, runtime.settings.queue) == []


def test_a_task_that_fails_after_acknowledging_itself_is_not_tried_again(
        redis_client, runtime, work, caplog):
    inbox = runtime.engine.scheduler.inbox
    inbox.put(task("acknowledge_then_fail"), "once")
    inbox.put(task("record"), "next")
    with caplog.at_level(logging.ERROR, logger="engine.state.inbox"):
        work()

    assert ran(redis_client) == ["once", "next"]
    assert inbox.retrying() == [] and inbox.pending() == 0
    assert any("after its commit acknowledged it" in r.getMessage() for r in caplog.records)
    assert drain_leftovers(redis_client, runtime.settings.queue) == []


def test_a_worker_killed_before_the_carried_task_ran_leaves_it_to_be_put_back_and_run(
        redis_client, runtime, work, worker_process):
    queue = runtime.settings.queue
    inbox = runtime.engine.scheduler.inbox
    inbox.put(task("hand_over"), "first", "carried", "", RELEASE)
    worker = worker_process()
    wait_until(lambda: strings(redis_client.lrange(inbox_tasks.STARTED, 0, -1))
               == ["first"], timeout=20, message="the task to go on after its commit")
    [taker] = strings(redis_client.smembers(keys.inbox_takers(queue)))
    worker.kill()

    # The click's entry is gone; the carried one waits in the dead drain's list.
    [entry] = strings(redis_client.lrange(keys.inbox_taking(taker), 0, -1))
    assert Task.decode(entry).args == ("carried",)
    lapse_heartbeat(redis_client, taker)
    assert inbox.recover() == 1
    assert [Task.decode(e).args for e in entries(redis_client, queue)] == [("carried",)]

    redis_client.rpush(RELEASE, "go")
    work()
    # Run from its arguments alone: nothing was handed to it in memory.
    assert handed(redis_client, "carried") == [None]
    assert ran(redis_client)[:1] == ["first"]
    assert drain_leftovers(redis_client, queue) == []


@pytest.fixture
def carrying(runtime, settings, redis_client):
    """A runtime whose notifier's closing work is an inbox task (CarriesClosing), installed
    in place of ``runtime``'s."""
    rt = build_runtime(settings, redis_client, notifier=inbox_tasks.CarryingNotifier())
    install_runtime(rt)
    yield rt
    install_runtime(runtime)


def closed_told(r) -> list[str]:
    return strings(r.lrange(inbox_tasks.CLOSED, 0, -1))


def test_a_decision_made_by_a_lone_task_carries_its_notifiers_closing_task(
        redis_client, carrying, work):
    execution_id = carrying.engine.run(parse_workflow(REVIEW), {"host": "web-1"})
    work()
    carrying.engine.scheduler.inbox.put(task("decide"), execution_id, True)
    work()

    assert carrying.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert json.loads(ran(redis_client)[0]) == ["decided", True]
    # Run by the drain that decided, handed nothing (the task gave it nothing in memory);
    # review_closed was not told, so the closing work is done once.
    assert handed(redis_client, f"closing {execution_id} approved") == [None]
    assert closed_told(redis_client) == []
    assert drain_leftovers(redis_client, carrying.settings.queue) == []


def test_a_decision_with_tasks_waiting_behind_it_leaves_the_closing_work_to_the_notifier(
        redis_client, carrying, work):
    execution_id = carrying.engine.run(parse_workflow(REVIEW), {"host": "web-1"})
    work()
    inbox = carrying.engine.scheduler.inbox
    inbox.put(task("decide"), execution_id, False)
    inbox.put(task("record"), "waiting behind")
    work()

    assert carrying.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert json.loads(ran(redis_client)[0]) == ["decided", False]
    assert "waiting behind" in ran(redis_client)
    assert handed(redis_client, f"closing {execution_id} denied") == []  # not carried
    assert closed_told(redis_client) == [f"{execution_id} denied"]
    assert drain_leftovers(redis_client, carrying.settings.queue) == []
    assert rq_inbox(redis_client, carrying.settings.queue).retrying() == []


def test_a_decision_that_is_not_the_first_task_of_its_drain_does_not_carry(
        redis_client, carrying, work):
    execution_id = carrying.engine.run(parse_workflow(REVIEW), {"host": "web-1"})
    work()
    inbox = carrying.engine.scheduler.inbox
    inbox.put(task("record"), "ahead of it")  # a burst: the drain runs on after this one
    inbox.put(task("decide"), execution_id, True)
    work()

    assert carrying.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert ran(redis_client)[0] == "ahead of it"
    assert json.loads(ran(redis_client)[1]) == ["decided", False]
    assert handed(redis_client, f"closing {execution_id} approved") == []
    assert closed_told(redis_client) == [f"{execution_id} approved"]
