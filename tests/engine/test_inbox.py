"""The inbox: small tasks handed to workers many to a drain job, on a real Redis with real
RQ workers; a killed worker's task put back by the sweep; the web process's group commit."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time

import pytest
import redis
from rq import Queue
from rq.registry import ScheduledJobRegistry

from engine.notify import NullNotifier
from engine.settings import Settings
from engine.state import keys
from engine.state.embedded_redis import EmbeddedRedis, free_port
from engine.state.inbox import AsyncInbox, Task
from engine.state.lua import INBOX_PUT
from engine.state.store import connect, connect_async
from engine.worker.runtime import build_runtime
from engine.worker.scheduler import rq_inbox
from engine.worker.worker import SignoffWorker
from tests.engine import inbox_tasks
from tests.support.services import wait_until

TASKS = inbox_tasks.__name__
DRAIN = "engine.worker.jobs.drain_inbox"
RELEASE = "test:inbox:release"


def task(name: str) -> str:
    return f"{TASKS}.{name}"


def strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def ran(r: redis.Redis) -> list[str]:
    return strings(r.lrange(inbox_tasks.RAN, 0, -1))


def seen(r: redis.Redis) -> list:
    return [json.loads(raw) for raw in r.lrange(inbox_tasks.SEEN, 0, -1)]


def jobs(r: redis.Redis, queue: str) -> list[tuple[str, tuple]]:
    return [(job.func_name, tuple(job.args)) for job in Queue(queue, connection=r).get_jobs()]


def entries(r: redis.Redis, queue: str) -> list[str]:
    return strings(r.lrange(keys.inbox(queue), 0, -1))


def drain_leftovers(r: redis.Redis, queue: str) -> list[str]:
    """Keys a finished drain must not leave behind."""
    found = strings(r.scan_iter(match=keys.inbox_taking("*")))
    found += strings(r.scan_iter(match=keys.inbox_alive("*")))
    found += [keys.inbox_takers(queue)] if r.exists(keys.inbox_takers(queue)) else []
    return found


def logged_errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "engine.state.inbox" and r.levelno >= logging.ERROR]


@pytest.fixture
def queue(runtime) -> str:
    return runtime.settings.queue


@pytest.fixture
def inbox(runtime):
    return runtime.engine.scheduler.inbox


def test_a_burst_of_tasks_queues_one_drain_job_that_runs_them_all_once_in_order(
        runtime, redis_client, inbox, queue, work):
    for n in range(20):  # both doors in: the scheduler seam and the inbox itself
        if n % 2:
            runtime.engine.scheduler.hand_in(task("record"), f"t{n}")
        else:
            inbox.put(task("record"), f"t{n}")
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]
    assert inbox.pending() == 20
    assert strings(redis_client.smembers(keys.INBOXES)) == [queue]  # the sweep will look here

    work()

    assert ran(redis_client) == [f"t{n}" for n in range(20)]
    assert inbox.pending() == 0 and not redis_client.exists(keys.inbox(queue))
    assert jobs(redis_client, queue) == []
    assert drain_leftovers(redis_client, queue) == []


def test_a_task_runs_inside_its_drain_which_returns_the_count_and_leaves_nothing_behind(
        redis_client, inbox, queue):
    inbox.put(task("observe"), "first")
    inbox.put(task("age_heartbeat"), 5_000)
    inbox.put(task("observe"), "second")

    assert inbox.drain() == 3

    first, second = seen(redis_client)
    [taker] = first["takers"]
    assert first["taking"] == {keys.inbox_taking(taker): [Task(task("observe"), ("first",)).encode()]}
    assert 0 < first["alive"][taker] <= 60_000  # the heartbeat, in ms
    # The next task moves into the same drain's list as the one before is acknowledged, and
    # taking it renews the heartbeat.
    assert second["takers"] == [taker]
    assert second["taking"] == {keys.inbox_taking(taker): [Task(task("observe"), ("second",)).encode()]}
    assert 5_000 < second["alive"][taker] <= 60_000
    assert ran(redis_client) == ["first", "aged to 5000", "second"]
    assert inbox.pending() == 0
    assert drain_leftovers(redis_client, queue) == []
    assert inbox.drain() == 0  # an empty inbox: nothing to run


def test_a_task_put_while_a_drain_runs_queues_a_second_drain_for_another_worker(
        redis_client, inbox, queue):
    inbox.put(task("hand_in_and_look"), "first")
    inbox.put(task("record"), "second")
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]

    assert inbox.drain() == 3

    # The drain cleared its "queued" flag as it started: the task handed in from inside it
    # queued a second drain job, for a free worker to help with.
    assert seen(redis_client) == [[DRAIN, DRAIN]]
    assert ran(redis_client) == ["first", "second", "first-handed-in"]  # this drain ran it too
    assert inbox.pending() == 0


def test_a_drain_queued_but_not_started_for_too_long_is_queued_again(redis_client, inbox, queue):
    inbox.put(task("record"), "a")
    inbox.put(task("record"), "b")
    assert len(jobs(redis_client, queue)) == 1
    # Stand-in for 30 s passing with no worker taking the drain: its flag lapses.
    redis_client.pexpire(keys.inbox_drain(queue), 1)
    wait_until(lambda: not redis_client.exists(keys.inbox_drain(queue)), timeout=2,
               message="the drain flag to lapse")
    inbox.put(task("record"), "c")
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))] * 2


def test_a_drain_that_spends_its_budget_queues_another_for_the_rest(redis_client, inbox, queue):
    for n in range(5):
        inbox.put(task("record"), f"t{n}")
    redis_client.delete(Queue(queue, connection=redis_client).key)  # no drain job waiting

    assert inbox.drain(max_tasks=2) == 2
    assert ran(redis_client) == ["t0", "t1"]
    assert inbox.pending() == 3
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]

    redis_client.delete(Queue(queue, connection=redis_client).key)
    assert inbox.drain(max_seconds=0) == 0  # out of time before the first task
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]

    assert inbox.drain() == 3
    assert ran(redis_client) == [f"t{n}" for n in range(5)]
    assert drain_leftovers(redis_client, queue) == []


def test_a_drain_yields_to_jobs_waiting_on_a_queue_its_worker_serves_first(
        runtime, redis_client, queue):
    other = "elsewhere"  # as the bot's slack queue comes after the engine's
    inbox = rq_inbox(redis_client, other)
    inbox.put(task("enqueue_job"), "e1")  # puts an ordinary job on the engine's queue
    inbox.put(task("record"), "e2")
    inbox.put(task("record"), "e3")

    SignoffWorker([queue, other], connection=redis_client).work(burst=True,
                                                                logging_level="WARNING")

    # After e1 the drain saw a job waiting on the queue its worker serves first: it stopped
    # and queued another drain behind it, so the job ran before the rest of the inbox.
    assert ran(redis_client) == ["e1", "e1-job", "e2", "e3"]
    assert inbox.pending() == 0 and jobs(redis_client, other) == []
    assert drain_leftovers(redis_client, other) == []

    inbox.put(task("record"), "e4")
    runtime.engine.scheduler.enqueue(task("record"), "urgent")
    assert inbox.drain(yield_to=[Queue(queue, connection=redis_client).key]) == 0
    assert inbox.pending() == 1  # left for the drain it queued behind the job
    assert jobs(redis_client, other) == [(DRAIN, (other,)), (DRAIN, (other,))]
    assert drain_leftovers(redis_client, other) == []


class Clock:
    """Seconds since the epoch, moved by the test: when a failed task is due again."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def retrying(inbox) -> list[tuple[float, tuple, int]]:
    """The inbox's tasks waiting for another try: (due, args, tries failed so far)."""
    return sorted((due, task.args, task.failures) for due, task in inbox.retrying())


def scheduled_drains(r: redis.Redis, queue: str) -> list[tuple[str, tuple]]:
    registry = ScheduledJobRegistry(queue, connection=r)
    found = [registry.job_class.fetch(i, connection=r) for i in registry.get_job_ids()]
    return [(job.func_name, tuple(job.args)) for job in found]


def test_a_task_that_raises_is_tried_again_later_and_the_drain_goes_on(
        redis_client, inbox, queue, caplog):
    inbox.clock = clock = Clock()
    t0 = clock.now
    inbox.put(task("fail_once"), "flaky")
    inbox.put(task("fail"), "broken")
    inbox.put(task("fail"), "patient", retry=(60, 120))
    inbox.put(task("record"), "after")

    with caplog.at_level(logging.WARNING, logger="engine.state.inbox"):
        assert inbox.drain() == 4

    assert ran(redis_client) == ["after"]  # not held up by the three that failed
    assert retrying(inbox) == [(t0 + 1, ("broken",), 1), (t0 + 1, ("flaky",), 1),
                               (t0 + 60, ("patient",), 1)]
    assert inbox.pending() == 0 and drain_leftovers(redis_client, queue) == []
    assert logged_errors(caplog) == []  # tries left: warnings, with the traceback
    assert [r.exc_info[1].args[0] for r in caplog.records if r.exc_info] == [
        "flaky fails the first time", "broken always fails", "patient always fails"]
    # Nothing handed to RQ as a job of its own; a drain is scheduled for each task's next try.
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]
    assert scheduled_drains(redis_client, queue) == [(DRAIN, (queue,))] * 3

    clock.now = t0 + 0.5  # not due yet: a drain leaves them be
    assert inbox.drain() == 0 and len(retrying(inbox)) == 3

    clock.now = t0 + 1
    assert inbox.drain() == 2
    assert ran(redis_client) == ["after", "flaky"]  # its second try succeeded
    assert retrying(inbox) == [(t0 + 1 + 2, ("broken",), 2), (t0 + 60, ("patient",), 1)]


def test_a_task_that_keeps_failing_is_tried_with_backoff_for_ten_minutes_then_given_up(
        redis_client, inbox, queue, caplog):
    inbox.clock = clock = Clock()
    t0 = clock.now
    inbox.put(task("fail"), "broken", on_failure=task("gave_up"))
    inbox.put(task("record"), "other")

    tries = []
    with caplog.at_level(logging.WARNING, logger="engine.state.inbox"):
        inbox.drain()
        while retrying(inbox):
            [(due, _, failures)] = retrying(inbox)
            tries.append((due - t0, failures))
            clock.now = due
            inbox.drain()

    # Doubling from a second, capped at two minutes, for more than ten minutes in all.
    waits = [1, 2, 4, 8, 16, 32, 64, 120, 120, 120, 120]
    assert [failures for _, failures in tries] == list(range(1, len(waits) + 1))
    assert [round(b - a) for a, b in zip([0, *[t for t, _ in tries]], [t for t, _ in tries],
                                         strict=False)] == waits
    assert tries[-1][0] == sum(waits) >= 600
    # Its tries spent: logged as an error, its on_failure told (once), then acknowledged.
    assert ran(redis_client) == ["other", json.dumps(["gave up", "broken",
                                                      "RuntimeError: broken always fails"])]
    [given_up] = logged_errors(caplog)
    assert "failed 12 times over 607 s; giving up" in given_up.getMessage()
    assert inbox.pending() == 0 and retrying(inbox) == []
    assert drain_leftovers(redis_client, queue) == []


def test_a_retry_whose_drain_job_was_lost_is_moved_back_by_the_sweep(
        redis_client, inbox, queue):
    inbox.clock = clock = Clock()
    inbox.put(task("fail_once"), "flaky")
    inbox.drain()
    redis_client.delete(*redis_client.keys("rq:*"))  # every queued and scheduled drain job lost

    assert inbox.recover() == 0 and inbox.pending() == 0  # not due yet
    clock.now += 1
    inbox.recover()  # a worker's maintenance sweep
    assert inbox.pending() == 1 and retrying(inbox) == []
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]
    inbox.drain()
    assert ran(redis_client) == ["flaky"]


def test_a_real_worker_tries_a_failed_task_again_when_due_and_a_kill_loses_no_try(
        redis_client, inbox, queue, worker_process):
    inbox.put(task("fail_once_then_block"), "slow", RELEASE)
    # First try fails; a second later RQ's scheduler, in the worker process, starts a drain.
    worker, taker = start_blocked_drain(redis_client, worker_process, queue)
    worker.kill()  # during the second try

    lapse_heartbeat(redis_client, taker)
    assert inbox.recover() == 1
    [entry] = entries(redis_client, queue)
    assert Task.decode(entry) == Task(task("fail_once_then_block"), ("slow", RELEASE),
                                      failures=1)  # back, its failed try still counted
    redis_client.rpush(RELEASE, "go")
    inbox.drain()
    assert ran(redis_client) == ["slow"]


def test_an_entry_that_is_not_a_task_is_dropped_with_an_error_and_the_drain_goes_on(
        redis_client, inbox, queue, caplog):
    garbage = ["not json", '{"f": "tests.engine.inbox_tasks.record"}', "[1, 2]", "42",
               '{"f": "x.y", "a": [], "r": ["soon"]}']
    redis_client.rpush(keys.inbox(queue), *garbage)
    inbox.put(task("record"), "good")

    with caplog.at_level(logging.ERROR, logger="engine.state.inbox"):
        inbox.drain()

    assert ran(redis_client) == ["good"]
    dropped = [r.getMessage() for r in logged_errors(caplog)]
    assert len(dropped) == len(garbage)
    assert all(repr(g) in message for g, message in zip(garbage, dropped, strict=True))
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]  # none of it handed to RQ
    assert inbox.pending() == 0
    assert drain_leftovers(redis_client, queue) == []


def start_blocked_drain(redis_client, worker_process, queue: str, **env: str):
    """A `signoff worker` process draining a task that has started and now blocks."""
    worker = worker_process(extra_env=env)
    wait_until(lambda: strings(redis_client.lrange(inbox_tasks.STARTED, 0, -1)) == ["slow"],
               timeout=15, message="the blocking task to start in the worker process")
    [taker] = strings(redis_client.smembers(keys.inbox_takers(queue)))
    return worker, taker


def lapse_heartbeat(redis_client, taker: str) -> None:
    # Stand-in for ALIVE_MS (60 s) passing since the killed drain's last heartbeat.
    redis_client.pexpire(keys.inbox_alive(taker), 1)
    wait_until(lambda: not redis_client.exists(keys.inbox_alive(taker)), timeout=2,
               message="the drain's heartbeat to lapse")


def test_a_killed_workers_task_is_put_back_at_the_head_once_its_drain_heartbeat_lapses(
        redis_client, inbox, queue, worker_process, work):
    slow = Task(task("block"), ("slow", RELEASE)).encode()
    nxt = Task(task("record"), ("next",)).encode()
    inbox.put(task("block"), "slow", RELEASE)
    inbox.put(task("record"), "next")
    worker, taker = start_blocked_drain(redis_client, worker_process, queue)
    worker.kill()

    assert strings(redis_client.lrange(keys.inbox_taking(taker), 0, -1)) == [slow]
    assert entries(redis_client, queue) == [nxt]
    # Its heartbeat has not lapsed yet: the drain may be alive, its task stays with it.
    assert inbox.recover() == 0
    assert strings(redis_client.lrange(keys.inbox_taking(taker), 0, -1)) == [slow]
    assert strings(redis_client.smembers(keys.inbox_takers(queue))) == [taker]
    assert entries(redis_client, queue) == [nxt]
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]  # for "next", which waits

    lapse_heartbeat(redis_client, taker)
    assert inbox.recover() == 1
    assert entries(redis_client, queue) == [slow, nxt]  # back at the head, ahead of newer work
    assert not redis_client.exists(keys.inbox_taking(taker))
    assert redis_client.smembers(keys.inbox_takers(queue)) == set()
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]  # one drain, not one more
    assert inbox.recover() == 0  # forgotten: nothing is put back twice

    redis_client.rpush(RELEASE, "go")
    work()
    assert ran(redis_client) == ["slow", "next"]
    assert strings(redis_client.lrange(inbox_tasks.STARTED, 0, -1)) == ["slow", "slow"]
    assert inbox.pending() == 0
    assert drain_leftovers(redis_client, queue) == []


def test_a_live_workers_maintenance_sweep_puts_back_the_task_of_a_dead_drain_on_any_queue(
        runtime, redis_client, worker_process):
    other = "elsewhere"  # not the sweeping worker's queue: the sweep covers every inbox
    inbox = rq_inbox(redis_client, other)
    inbox.put(task("block"), "slow", RELEASE)
    worker, taker = start_blocked_drain(redis_client, worker_process, other,
                                        SIGNOFF_QUEUE=other)
    worker.kill()
    sweeper = SignoffWorker([runtime.settings.queue], connection=redis_client)

    sweeper.run_maintenance_tasks()
    assert inbox.pending() == 0  # heartbeat still on: left alone
    assert redis_client.llen(keys.inbox_taking(taker)) == 1
    assert jobs(redis_client, other) == []

    lapse_heartbeat(redis_client, taker)
    sweeper.run_maintenance_tasks()
    assert entries(redis_client, other) == [Task(task("block"), ("slow", RELEASE)).encode()]
    assert not redis_client.exists(keys.inbox_taking(taker))
    assert redis_client.smembers(keys.inbox_takers(other)) == set()
    assert jobs(redis_client, other) == [(DRAIN, (other,))]

    redis_client.rpush(RELEASE, "go")
    SignoffWorker([other], connection=redis_client).work(burst=True, logging_level="WARNING")
    assert ran(redis_client) == ["slow"]
    assert inbox.pending() == 0 and jobs(redis_client, other) == []


def test_the_sweep_queues_a_drain_for_tasks_left_waiting_without_one(redis_client, inbox, queue):
    inbox.put(task("record"), "waiting")
    # The drain job was lost (say, the enqueue after the put failed) and its flag lapsed.
    redis_client.delete(Queue(queue, connection=redis_client).key)
    redis_client.pexpire(keys.inbox_drain(queue), 1)
    wait_until(lambda: not redis_client.exists(keys.inbox_drain(queue)), timeout=2,
               message="the drain flag to lapse")

    assert inbox.recover() == 0  # nothing was put back...
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]  # ...but a drain is queued
    assert inbox.ensure_drain() is False  # and only one
    assert inbox.drain() == 1
    assert ran(redis_client) == ["waiting"]


def evalsha_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_concurrent_async_puts_land_in_order_in_one_write_with_one_drain(
        runtime, redis_client, redis_url, queue):
    redis_client.script_load(INBOX_PUT)  # so that no NOSCRIPT retry counts as a write

    async def main() -> int:
        connection = connect_async(redis_url)
        try:
            inbox = runtime.engine.scheduler.async_inbox(connection)
            before = evalsha_calls(redis_client)
            await asyncio.wait_for(
                asyncio.gather(*(inbox.put(task("record"), f"t{n}") for n in range(50))), 10)
            writes = evalsha_calls(redis_client) - before
            await asyncio.wait_for(inbox.settle(), 10)  # the drain is queued after the acks
            return writes
        finally:
            await connection.aclose()

    writes = asyncio.run(main())

    # gather starts all 50 puts before the writer task first runs: one write takes them all.
    assert writes == 1
    assert entries(redis_client, queue) == [Task(task("record"), (f"t{n}",)).encode()
                                            for n in range(50)]
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]
    assert strings(redis_client.smembers(keys.INBOXES)) == [queue]


def test_async_puts_made_while_a_write_is_in_flight_go_together_in_the_next_write(
        runtime, redis_client, redis_url, queue):
    redis_client.script_load(INBOX_PUT)

    def write_held() -> bool:  # a client's EVALSHA waiting out the CLIENT PAUSE
        return any(c["cmd"] == "evalsha" and "b" in c["flags"] for c in redis_client.client_list())

    async def main() -> int:
        connection = connect_async(redis_url)
        try:
            inbox = runtime.engine.scheduler.async_inbox(connection)
            before = evalsha_calls(redis_client)
            redis_client.client_pause(10_000, all=False)  # hold every write, not reads
            try:
                first = asyncio.create_task(inbox.put(task("record"), "t0"))
                for _ in range(500):
                    if write_held():
                        break
                    await asyncio.sleep(0.005)
                assert write_held(), "the first write never reached Redis"
                rest = asyncio.gather(*(inbox.put(task("record"), f"t{n}") for n in range(1, 50)))
                await asyncio.sleep(0)  # the 49 puts queue behind the write in flight
                assert not first.done() and not rest.done()
            finally:
                redis_client.client_unpause()
            await asyncio.wait_for(asyncio.gather(first, rest), 10)
            await asyncio.wait_for(inbox.settle(), 10)
            return evalsha_calls(redis_client) - before
        finally:
            await connection.aclose()

    assert asyncio.run(main()) == 2
    assert entries(redis_client, queue) == [Task(task("record"), (f"t{n}",)).encode()
                                            for n in range(50)]
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]
    assert runtime.engine.scheduler.inbox.drain() == 50
    assert ran(redis_client) == [f"t{n}" for n in range(50)]


def test_async_put_raises_to_every_waiting_caller_while_redis_is_down_and_works_once_it_is_back():
    server = EmbeddedRedis(port=free_port())  # not started yet: nothing listens there
    client = connect(server.url)
    rt = build_runtime(Settings(redis_url=server.url), client, notifier=NullNotifier())
    queue = rt.settings.queue

    async def main() -> list:
        connection = connect_async(server.url)
        try:
            inbox = rt.engine.scheduler.async_inbox(connection)
            outcomes = await asyncio.wait_for(asyncio.gather(
                *(inbox.put(task("record"), f"t{n}") for n in range(5)), return_exceptions=True), 10)
            server.start()
            await asyncio.wait_for(inbox.put(task("record"), "later"), 10)  # a new write goes
            await asyncio.wait_for(inbox.settle(), 10)
            return outcomes
        finally:
            await connection.aclose()

    try:
        outcomes = asyncio.run(main())

        assert len(outcomes) == 5
        assert all(isinstance(o, redis.ConnectionError) for o in outcomes), outcomes
        # What its callers were told failed was not written behind their backs later.
        assert entries(client, queue) == [Task(task("record"), ("later",)).encode()]
        assert jobs(client, queue) == [(DRAIN, (queue,))]
    finally:
        client.close()
        server.close()


def test_an_async_put_is_acked_even_when_its_drain_cannot_be_queued_and_the_sweep_queues_it(
        runtime, redis_client, redis_url, queue, caplog):
    def refuse() -> None:
        raise redis.ConnectionError("RQ could not reach Redis")

    async def main() -> None:
        connection = connect_async(redis_url)
        try:
            inbox = AsyncInbox(connection, queue, refuse)
            await asyncio.wait_for(inbox.put(task("record"), "t0"), 10)  # acked: it is in Redis
            await asyncio.wait_for(inbox.settle(), 10)
        finally:
            await connection.aclose()

    asyncio.run(main())

    assert entries(redis_client, queue) == [Task(task("record"), ("t0",)).encode()]
    assert jobs(redis_client, queue) == []
    assert any("could not queue a drain" in r.getMessage() for r in logged_errors(caplog))
    # The flag was given up, so the next sweep queues the drain at once, not in 30 s.
    assert not redis_client.exists(keys.inbox_drain(queue))
    assert runtime.engine.scheduler.inbox.recover() == 0
    assert jobs(redis_client, queue) == [(DRAIN, (queue,))]


def test_a_task_survives_encoding_and_decoding():
    plain = Task("bot.jobs.decide_click", ({"user_id": "U1", "name": "Zoë ✓"}, "ref", True))
    retried = Task("bot.jobs.update_review", ("exe-1", "review", None, [1, 2.5]), retry=(5, 60))
    for original in (plain, retried):
        encoded = original.encode()
        assert Task.decode(encoded) == original
        assert Task.decode(encoded.encode()) == original  # as Redis hands it back: bytes
    # Compact JSON; no retry intervals, no key: entries written before retries still decode.
    assert plain.encode() == ('{"f":"bot.jobs.decide_click",'
                              '"a":[{"user_id":"U1","name":"Zo\\u00eb \\u2713"},"ref",true]}')
    assert json.loads(retried.encode())["r"] == [5, 60]
    assert Task.decode('{"f":"m.f","a":[1]}') == Task("m.f", (1,), ())


def test_a_drain_whose_heartbeat_lapsed_during_a_long_task_registers_again(
        redis_client, inbox, queue):
    inbox.put(task("outlive_heartbeat"), "long")  # the sweep puts it back meanwhile
    inbox.put(task("observe"), "next")
    inbox.drain()
    first = seen(redis_client)[0]
    [taking] = first["taking"].values()
    assert len(taking) == 1  # "next" is held by the drain...
    assert len(first["takers"]) == 1  # ...which a sweep can find again, were its worker to die
    # The long task ran to its end and, put back by the sweep, once more (at least once).
    assert ran(redis_client) == ["long", "long again", "next"]


def test_a_task_cut_short_by_system_exit_is_put_back_not_acknowledged(redis_client, inbox, queue):
    inbox.put(task("exit_mid_task"), "x")
    with pytest.raises(SystemExit):
        inbox.drain()
    assert ran(redis_client) == ["x started"]
    assert inbox.pending() == 0
    assert inbox.recover() == 1  # its heartbeat went with the drain: the next sweep takes it back
    assert entries(redis_client, queue) == [Task(task("exit_mid_task"), ("x",)).encode()]


def test_a_cold_shutdown_of_a_real_worker_leaves_its_task_for_the_sweep(
        redis_client, inbox, queue, worker_process):
    inbox.put(task("block"), "slow", RELEASE)
    worker = worker_process()
    wait_until(lambda: strings(redis_client.lrange(inbox_tasks.STARTED, 0, -1)) == ["slow"],
               timeout=15, message="the blocking task to start")
    worker.process.send_signal(signal.SIGTERM)  # warm shutdown: waits for the job
    time.sleep(1.2)  # RQ takes a second signal within a second of the first for the same one
    worker.process.send_signal(signal.SIGTERM)  # cold shutdown: SystemExit inside the task
    worker.process.wait(timeout=10)
    worker.kill()  # its scheduler child
    assert ran(redis_client) == []
    assert inbox.recover() == 1
    assert inbox.pending() == 1


def test_an_entry_that_is_not_utf8_is_dropped_and_the_drain_goes_on(redis_client, inbox, queue):
    redis_client.rpush(keys.inbox(queue), b"\xff\xfe not utf-8")
    inbox.put(task("record"), "good")
    assert inbox.drain() == 1
    assert ran(redis_client) == ["good"]
    assert drain_leftovers(redis_client, queue) == []


def test_a_task_that_names_what_it_reads_is_handed_it_as_it_is_taken(redis_client, inbox,
                                                                      queue):
    """A task's reads (a hash, a list, a value; one missing) are read by the script that
    takes it, the first of a drain's and the next alike; a task without reads gets none."""
    redis_client.hset("test:read:hash", mapping={"st": "WAITING", "n:note": "x"})
    redis_client.rpush("test:read:list", "one", "two")
    redis_client.set("test:read:value", "Alice A.")
    reads = (("h", "test:read:hash"), ("l", "test:read:list"), ("s", "test:read:value"),
             ("s", "test:read:missing"))
    inbox.put(task("record_read"), "first", reads=reads)
    inbox.put(task("record_read"), "next", reads=reads[1:2])
    inbox.put(task("record_read"), "none")

    assert inbox.drain() == 3

    recorded = [json.loads(r) for r in ran(redis_client)]
    [first_hash, *rest] = recorded[0][1]
    assert dict(zip(first_hash[::2], first_hash[1::2], strict=True)) == {
        "st": "WAITING", "n:note": "x"}
    assert rest == [["one", "two"], "Alice A.", None]
    assert recorded[1:] == [["next", [["one", "two"]]], ["none", None]]
    assert drain_leftovers(redis_client, queue) == []


def test_a_tasks_reads_are_read_as_it_is_taken_not_as_it_was_put(redis_client, inbox,
                                                                   queue):
    entry = Task(task("record_read"), ("again",), reads=(("s", "test:read:value"),))
    assert Task.decode(entry.encode()) == entry
    with pytest.raises(TypeError):  # reads of an unknown kind are not a task
        Task.decode('{"f":"x.y","a":[],"p":[["z","k"]]}')
    redis_client.set("test:read:value", "before")
    inbox.put(task("record_read"), "again", reads=(("s", "test:read:value"),))
    redis_client.set("test:read:value", "after")  # read as taken, not as put
    inbox.drain()
    assert [json.loads(r) for r in ran(redis_client)] == [["again", ["after"]]]


def test_a_task_whose_reads_are_malformed_is_dropped_and_the_drain_goes_on(redis_client,
                                                                            inbox, queue):
    """Reads that name nothing readable (not a key, an unknown kind) make the script read
    nothing and the drain drop the entry as not a task: it does not stop the inbox."""
    malformed = {"f": task("record_read"), "a": ["bad"], "p": [["h", ["k"]], ["x", "k"]]}
    redis_client.rpush(keys.inbox(queue), json.dumps(malformed, separators=(",", ":")))
    inbox.put(task("record_read"), "good", reads=(("s", "test:read:value"),))

    assert inbox.drain() == 1

    assert [json.loads(r) for r in ran(redis_client)] == [["good", [None]]]
    assert drain_leftovers(redis_client, queue) == []
