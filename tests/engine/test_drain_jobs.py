"""Run segments as inbox tasks, and the drain job ``signoff worker`` runs without RQ's
per-job bookkeeping, on a real Redis with real RQ workers."""

from __future__ import annotations

import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from engine.state import keys
from engine.state.execution import ExecutionStatus
from engine.state.inbox import Task
from engine.worker.scheduler import ADVANCE, drain_job_id
from engine.worker.worker import SignoffWorker
from tests.engine import drain_tasks
from tests.engine.drain_tasks import FIVE


def strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def ran(r: redis.Redis) -> list[str]:
    return strings(r.lrange(drain_tasks.RAN, 0, -1))


def test_runs_started_together_wait_as_inbox_tasks_behind_one_drain_job(runtime, redis_client,
                                                                          work):
    queue = Queue(runtime.settings.queue, connection=redis_client)
    ids = [runtime.engine.run(FIVE, {"n": n}) for n in range(5)]

    # Each run's first segment went into the inbox with the run's creation; one drain job
    # (the queue's own, kept under a fixed id) was queued for all five.
    tasks = [Task.decode(raw) for raw in redis_client.lrange(keys.inbox(queue.name), 0, -1)]
    assert [(t.function, t.args) for t in tasks] == [(ADVANCE, (i,)) for i in ids]
    assert queue.get_job_ids() == [drain_job_id(queue.name)]

    work()

    assert [runtime.engine.get(i).status for i in ids] == [ExecutionStatus.COMPLETED] * 5
    assert runtime.engine.get(ids[3]).results["c"].output == "big"
    assert redis_client.llen(keys.inbox(queue.name)) == 0 and queue.count == 0
    # Run without RQ's bookkeeping: no registry saw it, and its hash is kept for next time.
    for registry in (StartedJobRegistry, FinishedJobRegistry, FailedJobRegistry):
        assert registry(queue=queue).count == 0, registry.__name__
    job = Job.fetch(drain_job_id(queue.name), connection=redis_client)
    assert job.func_name == "engine.worker.jobs.drain_inbox" and tuple(job.args) == (queue.name,)
    assert not strings(redis_client.scan_iter(match=keys.inbox_taking("*")))
    assert not strings(redis_client.scan_iter(match=keys.inbox_alive("*")))

    # Started again, the runs find the job and queue it again; nothing piles up.
    more = [runtime.engine.run(FIVE, {"n": n}) for n in range(2)]
    assert queue.get_job_ids() == [drain_job_id(queue.name)]
    work()
    assert [runtime.engine.get(i).status for i in more] == [ExecutionStatus.COMPLETED] * 2


def test_a_drain_job_queued_behind_a_drain_runs_in_the_same_turn(runtime, redis_client):
    inbox = runtime.engine.scheduler.inbox
    inbox.put(f"{drain_tasks.__name__}.hand_on", "click")

    # One job, as RQ counts them: the other queue's drain ran right after the first.
    SignoffWorker([runtime.settings.queue, drain_tasks.OTHER], connection=redis_client).work(
        burst=True, max_jobs=1, logging_level="WARNING")

    assert ran(redis_client) == ["click", "click-elsewhere"]
    assert Queue(drain_tasks.OTHER, connection=redis_client).count == 0


def test_an_ordinary_job_waiting_first_sends_the_worker_back_to_rqs_loop(runtime,
                                                                         redis_client):
    inbox = runtime.engine.scheduler.inbox
    inbox.put(f"{drain_tasks.__name__}.enqueue_then_hand_on", "click")
    worker = SignoffWorker([runtime.settings.queue, drain_tasks.OTHER], connection=redis_client)

    worker.work(burst=True, max_jobs=1, logging_level="WARNING")

    # The job on the engine's queue comes first: the other queue's drain waits for RQ's loop.
    assert ran(redis_client) == ["click"]
    assert Queue(drain_tasks.OTHER, connection=redis_client).get_job_ids() == [
        drain_job_id(drain_tasks.OTHER)]

    SignoffWorker([runtime.settings.queue, drain_tasks.OTHER], connection=redis_client).work(
        burst=True, logging_level="WARNING")

    assert ran(redis_client) == ["click", "click-job", "click-elsewhere"]


def test_a_drain_job_whose_hash_was_deleted_is_whole_again_at_the_next_ring(runtime,
                                                                              redis_client, work):
    queue = Queue(runtime.settings.queue, connection=redis_client)
    first = runtime.engine.run(FIVE, {"n": 1})
    work()
    # As `rq empty`, or a plain RQ worker that ran the job and dropped it (result_ttl 0), would.
    redis_client.delete(Job.key_for(drain_job_id(queue.name)))

    again = runtime.engine.run(FIVE, {"n": 2})
    work()

    assert runtime.engine.get(first).status is ExecutionStatus.COMPLETED
    assert runtime.engine.get(again).status is ExecutionStatus.COMPLETED
    assert redis_client.exists(Job.key_for(drain_job_id(queue.name)))


def test_a_drain_job_taken_by_a_worker_that_stopped_is_queued_again_by_the_sweep(
        runtime, redis_client):
    queue = Queue(runtime.settings.queue, connection=redis_client)
    inbox = runtime.engine.scheduler.inbox
    inbox.put(f"{drain_tasks.__name__}.record", "orphaned")
    # A worker takes the drain job off the queue and dies before the drain begins: the
    # "drain queued" flag stays for 30 s, and no job is left to run the task.
    assert redis_client.lpop(queue.key) == drain_job_id(queue.name).encode()
    assert redis_client.exists(keys.inbox_drain(queue.name))
    assert inbox.recover() == 0  # no drain's tasks to put back: it never began

    assert queue.get_job_ids() == [drain_job_id(queue.name)]  # queued again at once
    SignoffWorker([queue.name], connection=redis_client).work(burst=True,
                                                              logging_level="WARNING")
    assert ran(redis_client) == ["orphaned"]

    # A drain queued as it should be is left alone: no second job.
    inbox.put(f"{drain_tasks.__name__}.record", "queued")
    inbox.recover()
    assert queue.get_job_ids() == [drain_job_id(queue.name)]


def test_a_dequeued_drain_job_runs_by_its_id_without_reading_its_hash(runtime, redis_client,
                                                                      work):
    queue = Queue(runtime.settings.queue, connection=redis_client)
    started = runtime.engine.run(FIVE, {"n": 3})
    # The hash goes after the ring pushed the id: RQ would drop the id (no such job) and the
    # run would wait for the sweep; the worker runs the drain by its id.
    redis_client.delete(Job.key_for(drain_job_id(queue.name)))
    ordinary = queue.enqueue("tests.engine.drain_tasks.record", "ordinary")

    work()

    assert runtime.engine.get(started).status is ExecutionStatus.COMPLETED
    assert ran(redis_client) == ["ordinary"]  # an ordinary job is fetched and run as RQ does
    assert ordinary.get_status(refresh=True) == "finished"
