"""Reviewers' clicks go before run segments in the engine's inbox: during a storm of runs a
click waits for no run, on a real Redis with real RQ workers."""

from __future__ import annotations

import asyncio

import redis

from engine.state import keys
from engine.state.execution import ExecutionStatus
from engine.state.store import connect_async
from engine.worker.runtime import runtime
from engine.worker.worker import SignoffWorker
from tests.engine import drain_tasks
from tests.engine.drain_tasks import FIVE

RUNS = 200


def click(name: str) -> None:
    """A click's stand-in: records its name and how many runs had finished when it ran."""
    r = runtime().store.redis
    finished = r.zcard(keys.index_status(ExecutionStatus.COMPLETED.value))
    r.rpush(drain_tasks.RAN, f"{name} after {finished} runs")


CLICK = f"{__name__}.click"


def ran(r: redis.Redis) -> list[str]:
    return [v.decode() for v in r.lrange(drain_tasks.RAN, 0, -1)]


def put_clicks(runtime_, redis_url: str, *names: str) -> None:
    """Through the door the web process's clicks use (the async inbox), one write each."""

    async def main() -> None:
        connection = connect_async(redis_url)
        try:
            inbox = runtime_.engine.scheduler.async_inbox(connection)
            for name in names:
                await inbox.put(CLICK, name)
            await inbox.settle()
        finally:
            await connection.aclose()

    asyncio.run(main())


def test_clicks_put_during_a_storm_of_runs_are_served_before_every_run_segment(
        runtime, redis_client, redis_url, work):
    ids = [runtime.engine.run(FIVE, {"n": n}) for n in range(RUNS)]
    assert redis_client.llen(keys.inbox(runtime.settings.queue)) == RUNS  # first segments wait

    put_clicks(runtime, redis_url, "alice", "bob")
    more = [runtime.engine.run(FIVE, {"n": n}) for n in range(5)]  # segments after the clicks
    put_clicks(runtime, redis_url, "carol")

    work()

    # The clicks ran first, in the order they came, before any run moved; then every run.
    assert ran(redis_client) == ["alice after 0 runs", "bob after 0 runs", "carol after 0 runs"]
    assert {runtime.engine.get(i).status for i in [*ids, *more]} == {ExecutionStatus.COMPLETED}
    assert not redis_client.exists(keys.inbox_first(runtime.settings.queue))  # nothing left


def test_a_click_put_while_a_worker_drains_a_storm_of_runs_is_next(runtime, redis_client,
                                                                  redis_url):
    queue = runtime.settings.queue
    ids = [runtime.engine.run(FIVE, {"n": n}) for n in range(RUNS)]
    # One worker takes a first few segments, as it would while the storm comes in.
    SignoffWorker([queue], connection=redis_client).work(burst=True, max_jobs=1,
                                                         logging_level="WARNING")
    finished = sum(runtime.engine.get(i).status is ExecutionStatus.COMPLETED for i in ids)
    assert finished == RUNS  # a drain runs the whole inbox: queue more behind it
    later = [runtime.engine.run(FIVE, {"n": n}) for n in range(RUNS)]
    runtime.engine.scheduler.inbox.drain(max_tasks=10)  # a drain taken by its budget
    put_clicks(runtime, redis_url, "dave")

    SignoffWorker([queue], connection=redis_client).work(burst=True, logging_level="WARNING")

    [line] = ran(redis_client)
    assert line == f"dave after {RUNS + 10} runs"  # right after the ten the first drain ran
    assert {runtime.engine.get(i).status for i in later} == {ExecutionStatus.COMPLETED}


def test_a_dead_drains_task_put_back_stays_ahead_of_a_click_put_after_it(
        runtime, redis_client, redis_url):
    queue = runtime.settings.queue
    inbox = runtime.engine.scheduler.inbox
    for name in ("r1", "r2", "r3"):  # as run segments are put: not first
        inbox.put(f"{drain_tasks.__name__}.record", name)
    put_clicks(runtime, redis_url, "c1")
    assert [e.decode() for e in redis_client.lrange(keys.inbox(queue), 0, -1)][0].find("c1") > 0

    # A drain takes c1 and dies with it (its heartbeat gone): the sweep puts it back at the
    # head, where it counts as put first.
    taker = "dead-host:1:drain"
    redis_client.lmove(keys.inbox(queue), keys.inbox_taking(taker), "LEFT", "RIGHT")
    redis_client.decr(keys.inbox_first(queue))
    redis_client.sadd(keys.inbox_takers(queue), taker)
    assert inbox.recover() == 1
    put_clicks(runtime, redis_url, "c2")

    assert inbox.drain() == 5
    assert ran(redis_client) == ["c1 after 0 runs", "c2 after 0 runs", "r1", "r2", "r3"]
    assert not redis_client.exists(keys.inbox_first(queue))


def test_a_click_handed_in_by_a_listener_goes_first_too(runtime, redis_client, work):
    """One-click decisions that come through Bolt's listeners (over Socket Mode) are
    handed in with ``first``, as the events endpoint's are put."""
    ids = [runtime.engine.run(FIVE, {"n": n}) for n in range(20)]
    runtime.engine.scheduler.hand_in(CLICK, "erin", first=True)
    runtime.engine.scheduler.hand_in(CLICK, "frank")  # not first: behind the runs

    work()

    assert ran(redis_client) == ["erin after 0 runs", "frank after 20 runs"]
    assert {runtime.engine.get(i).status for i in ids} == {ExecutionStatus.COMPLETED}
