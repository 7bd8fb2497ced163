"""A drain that ends with its inbox empty begins the next drain its worker runs in the same
script (the chain), on a real Redis with real RQ workers: fewer round trips per click, and
nothing lost when the worker dies or is told to stop in between."""

from __future__ import annotations

import redis
from rq import Queue
from rq.utils import now

from engine.state import keys, lua
from engine.state.inbox import Link
from engine.worker.scheduler import drain_job_id
from engine.worker.worker import SignoffWorker, current_worker
from tests.engine import drain_tasks
from tests.engine.drain_tasks import OTHER, RAN


def ran(r: redis.Redis) -> list[str]:
    return [v.decode() for v in r.lrange(RAN, 0, -1)]


def leftovers(r: redis.Redis) -> list[str]:
    found = [k.decode() for k in r.scan_iter(match=keys.inbox_taking("*"))]
    found += [k.decode() for k in r.scan_iter(match=keys.inbox_alive("*"))]
    return found


def evalsha_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def hand_on_then_stop(name: str) -> None:
    """Hand two tasks to the other queue's inbox, then stop the worker (as a SIGTERM
    arriving during the task does: the worker finishes what it holds)."""
    drain_tasks.hand_on(name)
    drain_tasks.runtime().engine.scheduler.hand_in_to(OTHER, f"{drain_tasks.__name__}.record",
                                                      f"{name}-second")
    worker = current_worker()
    assert worker is not None
    worker._stop_requested = True


def test_the_script_ending_a_drain_begins_the_next_drain_job_waiting(runtime, redis_client):
    queue = runtime.settings.queue
    for script in (lua.INBOX_START, lua.INBOX_NEXT, lua.INBOX_RING):
        redis_client.script_load(script)  # no NOSCRIPT retry counted below
    runtime.engine.scheduler.inbox.put(f"{drain_tasks.__name__}.hand_on", "click")
    worker = SignoffWorker([queue, OTHER], connection=redis_client)
    worker.last_cleaned_at = now()  # its maintenance sweep (scripts of its own) not now
    before = evalsha_calls(redis_client)

    worker.work(burst=True, max_jobs=1, logging_level="WARNING")

    assert ran(redis_client) == ["click", "click-elsewhere"]
    # Four scripts: the engine's drain begins; the task's hand-off rings the other queue;
    # the drain ends and, in the same script, the other queue's drain begins with its task;
    # that one ends. (Apart, the look for the next drain job and its start were two more.)
    assert evalsha_calls(redis_client) - before == 4
    other = Queue(OTHER, connection=redis_client)
    assert other.count == 0  # its drain job was taken off its queue by the script
    assert not redis_client.exists(keys.inbox_drain(OTHER))  # a new task rings again
    assert not redis_client.exists(keys.inbox_takers(OTHER))
    assert not redis_client.exists(keys.inbox_takers(queue))
    assert leftovers(redis_client) == []


def test_a_drain_begun_by_the_chain_whose_worker_died_is_put_back_by_the_sweep(
        runtime, redis_client):
    queue = runtime.settings.queue
    scheduler = runtime.engine.scheduler
    engine_inbox, other_inbox = scheduler.inbox, scheduler.inbox_of(OTHER)
    engine_inbox.put(f"{drain_tasks.__name__}.hand_on", "click")
    chain = [Link(Queue(queue, connection=redis_client).key, drain_job_id(queue), engine_inbox),
             Link(Queue(OTHER, connection=redis_client).key, drain_job_id(OTHER), other_inbox)]

    # The worker runs the engine's drain, whose end begins the other's; then it dies.
    drained = engine_inbox.drain_then(chain=chain)
    assert drained.ran == 1 and drained.following == 2 and drained.begun is not None
    taker, task = drained.begun
    assert redis_client.lrange(keys.inbox_taking(taker), 0, -1) == [task]
    assert other_inbox.recover() == 0  # its heartbeat is alive: left alone
    redis_client.delete(keys.inbox_alive(taker))  # the heartbeat lapses

    assert other_inbox.recover() == 1
    SignoffWorker([queue, OTHER], connection=redis_client).work(burst=True,
                                                                logging_level="WARNING")
    assert ran(redis_client) == ["click", "click-elsewhere"]
    assert other_inbox.pending() == 0 and leftovers(redis_client) == []


def test_a_worker_told_to_stop_runs_the_first_task_of_a_drain_begun_for_it_and_hands_on_the_rest(
        runtime, redis_client):
    queue = runtime.settings.queue
    runtime.engine.scheduler.inbox.put(f"{__name__}.hand_on_then_stop", "click")
    worker = SignoffWorker([queue, OTHER], connection=redis_client)

    worker.work(burst=True, logging_level="WARNING")

    # It finished the task the chain gave it, and queued a drain for the one behind it.
    assert ran(redis_client) == ["click", "click-elsewhere"]
    other = runtime.engine.scheduler.inbox_of(OTHER)
    assert other.pending() == 1
    assert Queue(OTHER, connection=redis_client).get_job_ids() == [drain_job_id(OTHER)]
    assert leftovers(redis_client) == []

    SignoffWorker([queue, OTHER], connection=redis_client).work(burst=True,
                                                                logging_level="WARNING")
    assert ran(redis_client) == ["click", "click-elsewhere", "click-second"]
