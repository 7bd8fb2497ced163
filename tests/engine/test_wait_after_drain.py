"""After a drain, ``signoff worker`` waits for the next job in a blocking pop of its own rather
than in a turn of RQ's loop (engine.worker.worker.SignoffWorker._wait_for_drain): a lone
click's drain is taken at once, an ordinary job popped there still runs through RQ's loop,
once, and a stop signal ends the wait at once. Real worker processes, a real Redis."""

from __future__ import annotations

import os
import signal
import time

import redis
from rq import Queue
from rq.job import Job, JobStatus

from engine.worker.worker import CHAIN_SECONDS, SignoffWorker
from tests.engine import drain_tasks
from tests.engine.drain_tasks import RAN
from tests.support.monitor import monitored
from tests.support.services import wait_until


def ran(r: redis.Redis) -> list[str]:
    return [v.decode() for v in r.lrange(RAN, 0, -1)]


def blocked_in_a_pop(r: redis.Redis) -> bool:
    return any(c.get("cmd") == "blpop" and "b" in str(c.get("flags", ""))
               for c in r.client_list())


def put_and_wait(runtime, r: redis.Redis, name: str) -> None:
    runtime.engine.scheduler.inbox.put(f"{drain_tasks.__name__}.record", name)
    wait_until(lambda: name in ran(r), timeout=15, message=f"task {name} to run")


def test_a_lone_task_after_a_drain_is_taken_by_the_workers_own_pop(runtime, redis_client,
                                                                   worker_process):
    worker_process()
    put_and_wait(runtime, redis_client, "first")  # its drain came through RQ's loop

    def second() -> None:
        put_and_wait(runtime, redis_client, "second")
        # ... and the worker blocked in its pop again, so that the pop is in what MONITOR saw
        wait_until(lambda: blocked_in_a_pop(redis_client), timeout=15,
                   message="the worker to wait for the next job")

    seen = monitored(redis_client, second)

    pops = [e["command"] for e in seen if e["command"].startswith("BLPOP")]
    assert pops, "the worker went back to waiting after the second drain"
    # The worker's own pop waits what is left of its chain window (a fraction of a second
    # under CHAIN_SECONDS); RQ's loop pops with its dequeue timeout, a whole number.
    *_, timeout = pops[-1].split()
    assert "." in timeout and float(timeout) < CHAIN_SECONDS
    worker_commands = " ".join(e["command"] for e in seen if e["client_type"] != "lua")
    assert "rq:worker:" not in worker_commands  # no heartbeat, no state written
    assert "rq:suspended" not in worker_commands  # no turn of RQ's loop
    assert ran(redis_client) == ["first", "second"]


def test_an_ordinary_job_popped_by_the_wait_runs_through_rqs_loop_once(runtime, redis_client,
                                                                      worker_process):
    worker_process()
    put_and_wait(runtime, redis_client, "first")  # the worker now waits in its own pop

    job = Queue(runtime.settings.queue, connection=redis_client).enqueue(
        f"{drain_tasks.__name__}.record", "job", result_ttl=60)
    wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=15,
               message="the ordinary job to finish")
    put_and_wait(runtime, redis_client, "after")

    assert ran(redis_client) == ["first", "job", "after"]
    # RQ's bookkeeping ran for it: it has its worker and its (empty) result.
    fetched = Job.fetch(job.id, connection=redis_client)
    assert fetched.worker_name and fetched.return_value() is None
    assert redis_client.llen(Queue(runtime.settings.queue, connection=redis_client).key) == 0


def test_a_worker_told_to_stop_while_it_waits_stops_at_once(runtime, redis_client,
                                                            worker_process):
    worker = worker_process()
    put_and_wait(runtime, redis_client, "first")
    assert redis_client.scard("rq:workers") == 1

    started = time.monotonic()
    os.killpg(worker.process.pid, signal.SIGTERM)
    worker.process.wait(timeout=CHAIN_SECONDS)
    stopped_in = time.monotonic() - started

    assert stopped_in < 3, f"the worker took {stopped_in:.1f} s to stop"
    assert redis_client.scard("rq:workers") == 0  # it left as RQ's workers leave
    assert "warm shut down requested" in worker.log()


def test_a_job_popped_by_the_wait_but_never_run_goes_back_at_the_head_of_its_queue(
        runtime, redis_client):
    queue = Queue(runtime.settings.queue, connection=redis_client)
    waiting = queue.enqueue(f"{drain_tasks.__name__}.record", "waiting")
    popped = queue.enqueue(f"{drain_tasks.__name__}.record", "popped")
    redis_client.lrem(queue.key, 1, popped.id)  # as the wait's BLPOP took it
    worker = SignoffWorker([queue.name], connection=redis_client)
    worker.register_birth()
    worker._popped = (queue.key, popped.id)

    worker.teardown()  # the worker told to stop before RQ's loop took the job

    assert [v.decode() for v in redis_client.lrange(queue.key, 0, -1)] == [popped.id,
                                                                           waiting.id]
    assert worker._popped is None


def test_a_job_popped_by_the_wait_runs_before_rqs_maintenance_and_suspension_check(
        runtime, redis_client):
    queue = Queue(runtime.settings.queue, connection=redis_client)
    popped = queue.enqueue(f"{drain_tasks.__name__}.record", "popped")
    redis_client.lrem(queue.key, 1, popped.id)  # as the wait's BLPOP took it
    worker = SignoffWorker([queue.name], connection=redis_client)
    assert worker.should_run_maintenance_tasks  # never swept yet: RQ's loop would sweep now
    worker._popped = (queue.key, popped.id)
    redis_client.set("rq:suspended", "1")  # `rq suspend`, after the job was popped

    worker.work(burst=True, max_jobs=1, logging_level="WARNING")

    assert ran(redis_client) == ["popped"]  # it ran, though the worker is suspended now
    assert worker.last_cleaned_at is None  # and before the sweep
