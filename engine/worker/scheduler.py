"""The :class:`engine.run.timers.Scheduler` seam on RQ: queues, scheduled jobs, inboxes.

Jobs are enqueued by import path (``engine.worker.jobs.*``), the name RQ stores with
each job, so this module does not import the job bodies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.asyncio
from rq import Queue, Retry
from rq.job import Job, JobStatus

from engine.run import timers
from engine.run.timers import Timer
from engine.state.inbox import AsyncInbox, DrainJob, Inbox
from engine.state.store import Store

JOB_TIMEOUT = 3600  # seconds; one segment of automatic steps, http timeouts included
FAILURE_TTL = 7 * 86400  # a failed job stays in RQ's failed registry for a week
# A timer due later than this gets its RQ job from the workers' sweep as it comes near.
TIMER_HORIZON = timedelta(hours=1)
JOBS = "engine.worker.jobs"  # where the job bodies live, as RQ names them
ADVANCE = f"{JOBS}.advance_execution"  # a run's next segment, as an inbox task
DRAIN_JOB_PREFIX = "signoff-drain-"  # + queue name: the id of a queue's drain job


class RQScheduler:
    """The :class:`engine.run.timers.Scheduler` seam, on RQ queues and scheduled jobs."""

    def __init__(self, connection: redis.Redis, queue_name: str = "signoff") -> None:
        self.queue = Queue(queue_name, connection=connection)
        self.store = Store(connection)  # the overdue-timer index
        self.inbox = rq_inbox(connection, queue_name)
        self.inbox.inbox_of = self.inbox_of  # a carried task's retries go to its own inbox
        self._queues: dict[str, Queue] = {}  # plug-ins' queues (enqueue_to)
        self._inboxes: dict[str, Inbox] = {queue_name: self.inbox}

    def enqueue_advance(self, execution_id: str, *, pipeline: Any = None) -> None:
        """Have a worker run the execution's next segment: a task in the queue's inbox, so
        that one drain runs many segments (an RQ job costs more than a 5-step run)."""
        if pipeline is None:
            self.inbox.put(ADVANCE, execution_id)
        else:  # in the caller's transaction: the segment is due exactly when its writes land
            self.inbox.put_in(pipeline, ADVANCE, execution_id)

    def enqueue(self, function: str, *args: Any) -> None:
        pipe = self.queue.connection.pipeline()
        self.queue.enqueue_call(function, args=args, timeout=JOB_TIMEOUT, result_ttl=0,
                                failure_ttl=FAILURE_TTL, pipeline=pipe)
        pipe.execute()

    def hand_in(self, function: str, *args: Any, on_failure: str = "",
                first: bool = False, reads: tuple[tuple[str, str], ...] = ()) -> None:
        self.inbox.put(function, *args, on_failure=on_failure, first=first, reads=reads)

    def enqueue_to(self, queue: str, function: str, *args: Any, retry: Sequence[int] = (),
                   timeout: int | None = None, description: str | None = None) -> None:
        self._queue(queue).enqueue_call(
            function, args=args, timeout=timeout or JOB_TIMEOUT, result_ttl=0,
            failure_ttl=FAILURE_TTL, description=description,
            retry=Retry(max=len(retry), interval=list(retry)) if retry else None)

    def hand_in_to(self, queue: str, function: str, *args: Any,
                   retry: Sequence[int] = (), on_failure: str = "") -> None:
        self.inbox_of(queue).put(function, *args, retry=tuple(retry), on_failure=on_failure)

    def inbox_of(self, queue: str) -> Inbox:
        """The inbox of RQ queue ``queue`` (the engine's or a plug-in's), draining in jobs
        on that queue."""
        inbox = self._inboxes.get(queue)
        if inbox is None:
            inbox = self._inboxes[queue] = rq_inbox(self.queue.connection, queue)
            inbox.inbox_of = self.inbox_of  # a carried task's retries go to its own inbox
        return inbox

    def _queue(self, name: str) -> Queue:
        if name == self.queue.name:
            return self.queue
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = Queue(name, connection=self.queue.connection)
        return queue

    def async_inbox(self, connection: redis.asyncio.Redis) -> AsyncInbox:
        """The inbox for a web process's event loop (``connection``: its async client), for
        reviewers' clicks: they go first, before the run segments waiting."""
        return AsyncInbox(connection, self.queue.name, self.inbox.enqueue_drain, first=True)

    def schedule(self, timer: Timer) -> None:
        if timer.when - _now(timer.when) > TIMER_HORIZON:
            # Far off (a human step's default 24 h or 72 h timeout, a long SLA): no RQ job,
            # whose ~1.5 KB would sit in Redis for days; the sweep schedules it in time.
            self.store.defer_timer(timer.member, timer.when.timestamp())
            return
        self._enqueue_timer(timer.job, timer.args, timer.when, timer.member)

    def _enqueue_timer(self, job: str, args: tuple[str, ...] | list[str], when: datetime,
                       member: str) -> None:
        def enqueue(pipe: Any) -> None:
            # The registry keeps whole seconds and the scheduler polls each second: a job may
            # run up to ~1 s early. Every timer job re-checks its deadline and defers if so.
            self.queue.enqueue_in(max(timedelta(0), when - _now(when)),
                                  f"{JOBS}.{job}", *args, job_timeout=JOB_TIMEOUT,
                                  result_ttl=0, failure_ttl=FAILURE_TTL, pipeline=pipe)

        # Also kept in our own index (usually committed already, with the change that set
        # the timer): RQ's scheduler lock outlives a killed worker by a minute, and a timer
        # must not wait that long (see fire_overdue).
        self.store.index_timer(member, when.timestamp(), enqueue=enqueue)

    def schedule_deferred(self, window: timedelta, limit: int = 500) -> int:
        """Give deferred timers due within ``window`` their RQ job (the workers' sweep calls
        this more often than ``window``, so each is scheduled before it is due)."""
        now = datetime.now().astimezone()
        scheduled = 0
        for member, due in self.store.take_deferred_timers((now + window).timestamp(), limit):
            name, *args = json.loads(member)
            self._enqueue_timer(name, args, datetime.fromtimestamp(due).astimezone(), member)
            scheduled += 1
        return scheduled

    def advance_at(self, execution_id: str, when: datetime) -> None:
        self.schedule(timers.advance_timer(execution_id, when))

    def run_timeout_at(self, execution_id: str, when: datetime) -> None:
        self.schedule(timers.run_timeout_timer(execution_id, when))

    def step_timeout_at(self, execution_id: str, path: str, when: datetime) -> None:
        self.schedule(timers.step_timeout_timer(execution_id, path, when))

    def review_timer_at(self, execution_id: str, path: str, level: int, kind: str,
                        when: datetime) -> None:
        self.schedule(timers.review_timer(execution_id, path, level, kind, when))

    def start_workflow_at(self, workflow: str, when: datetime) -> None:
        self.schedule(timers.start_workflow_timer(workflow, when))

    def fire_overdue(self, grace: timedelta, limit: int = 200) -> int:
        """Enqueue timers more than ``grace`` overdue that RQ's scheduler has not run (every
        timer job is idempotent, so one that runs twice does nothing the second time)."""
        cutoff = (datetime.now().astimezone() - grace).timestamp()
        fired = 0
        for member in self.store.overdue_timers(cutoff, limit):
            if not self.store.forget_timer(member):
                continue  # another worker took it
            name, *args = json.loads(member)
            self.enqueue(f"{JOBS}.{name}", *args)
            fired += 1
        return fired


def drain_job_id(queue_name: str) -> str:
    return f"{DRAIN_JOB_PREFIX}{queue_name}"


def drain_job(connection: redis.Redis, queue: Queue) -> DrainJob:
    """``queue``'s drain job: one RQ job, ``engine.worker.jobs.drain_inbox(queue)``, whose id
    is pushed on the queue each time a drain is wanted (see engine.state.inbox)."""
    job = Job.create(f"{JOBS}.drain_inbox", args=(queue.name,), connection=connection,
                     id=drain_job_id(queue.name), timeout=JOB_TIMEOUT, result_ttl=0,
                     failure_ttl=FAILURE_TTL, origin=queue.name, status=JobStatus.QUEUED,
                     description=f"drain the {queue.name} inbox")
    job.enqueued_at = datetime.now(UTC)
    fields = [item for pair in job.to_dict().items() for item in pair]
    return DrainJob(queue_key=queue.key, queues_key=queue.redis_queues_keys, job_key=job.key,
                    job_id=job.id, fields=tuple(fields))


def rq_inbox(connection: redis.Redis, queue_name: str) -> Inbox:
    """The inbox of RQ queue ``queue_name``, draining in jobs on that queue."""
    queue = Queue(queue_name, connection=connection)

    def enqueue_drain_in(seconds: float) -> None:
        # RQ's scheduler (every `signoff worker` runs one) keeps whole seconds and may start
        # a job up to a second early, before the task is due: a second later, then.
        queue.enqueue_in(timedelta(seconds=seconds + 1), f"{JOBS}.drain_inbox", queue_name,
                         job_timeout=JOB_TIMEOUT, result_ttl=0, failure_ttl=FAILURE_TTL,
                         description=f"drain the {queue_name} inbox (a task is due again)")

    return Inbox(connection, queue_name, None, enqueue_drain_in,
                 drain_job=drain_job(connection, queue))


def _now(reference: datetime) -> datetime:
    return datetime.now(reference.tzinfo)
