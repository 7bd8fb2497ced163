"""``signoff worker``'s RQ worker class: no fork per job, a queue's drain job run without
RQ's per-job bookkeeping (the inbox keeps its own, see engine.state.inbox): it is not
read back from its hash when dequeued (:class:`SignoffQueue`), RQ's heartbeats around
it are skipped when the last is under ten seconds old, and after a drain the worker waits
for the next job in a pop of its own rather than in a turn of RQ's loop; and a maintenance
sweep that recovers what dead workers left (stalled runs, inbox tasks, overdue timers) and
advances scheduled triggers."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.worker import WorkerStatus

from engine.state import lua
from engine.state.inbox import DRAIN_TASKS, NOT_CHAINED, Drained, Link
from engine.worker.runtime import runtime
from engine.worker.scheduler import DRAIN_JOB_PREFIX, JOB_TIMEOUT, RQScheduler, drain_job_id

log = logging.getLogger(__name__)

CHAIN_SECONDS = 10.0  # drains run one after another before RQ's loop (heartbeat, sweep) again
# Around a drain job, a heartbeat this soon after the last one is skipped: RQ sends one
# after the dequeue, one after the job and one before the next dequeue (3 round trips
# each), while the worker's key lives worker_ttl + 60 s (90 s by default) and an idle
# worker still beats before each blocking dequeue (every worker_ttl - 15 s), so beats
# stay well under a minute apart. Other jobs keep all of RQ's.
HEARTBEAT_GAP = 10.0  # seconds
# After a drain, RQ's check for `rq suspend` (a round trip at every turn of its loop) is made
# at most this often: a suspended worker takes no new job a second later at most (an idle
# one notices after its blocking dequeue, up to worker_ttl - 15 s, as RQ's does).
SUSPENSION_GAP = 1.0  # seconds
# After a drain the worker waits for the next job in a pop of its own, for what is left of
# CHAIN_SECONDS (then RQ's loop beats, sweeps and pops): not when less than this is left.
WAIT_AT_LEAST = 0.05  # seconds
_working: dict[str, SimpleWorker] = {}  # the SignoffWorker running a job in this process


def current_worker() -> SimpleWorker | None:
    """The :class:`SignoffWorker` running the current job in this process, if any."""
    return _working.get("worker")


def drain(queue_name: str) -> int:
    """Run the tasks in ``queue_name``'s inbox until it is empty, or until a queue the
    current worker serves first has a job waiting; see engine.state.inbox."""
    return _drain(queue_name, current_worker()).ran


def _drain(queue_name: str, worker: SimpleWorker | None, chain: list[Link] | None = None,
           begun: tuple[str, Any] | None = None, max_tasks: int = DRAIN_TASKS) -> Drained:
    ahead: list[str] = []
    if worker is not None:
        names = [q.name for q in worker.queues]
        if queue_name in names:
            ahead = [q.key for q in worker.queues[:names.index(queue_name)]]
    return rq_scheduler().inbox_of(queue_name).drain_then(
        yield_to=ahead, chain=chain or (), begun=begun, max_tasks=max_tasks)


def rq_scheduler() -> RQScheduler:
    """The runtime's scheduler, which is RQ's in every runtime a worker builds."""
    scheduler = runtime().engine.scheduler
    if not isinstance(scheduler, RQScheduler):
        raise TypeError(f"a Signoff worker needs an RQScheduler, not {type(scheduler).__name__}")
    return scheduler


class SignoffQueue(Queue):
    """RQ's Queue, except that a queue's drain job, once dequeued, is not read back from
    its hash (a round trip and the unpickling of a job the worker does not use: it runs
    the drain by its id, see SignoffWorker._drain_now), nor built again each time: the
    worker keeps one per queue. Every other job is fetched as RQ fetches it."""

    _drains: dict[tuple[int, str], tuple[Any, Job, Queue]] = {}  # (connection, job, queue)

    @classmethod
    def _fetch_dequeued_job(cls, connection: Any, queue_key: str, job_id: str,
                            job_class: Any = None, serializer: Any = None,
                            death_penalty_class: Any = None) -> tuple[Job, Queue] | None:
        if (job_id.startswith(DRAIN_JOB_PREFIX)
                and queue_key == cls.redis_queue_namespace_prefix
                + job_id[len(DRAIN_JOB_PREFIX):]):
            kept = cls._drains.get((id(connection), queue_key))
            if kept is not None and kept[0] is connection:
                return kept[1], kept[2]
            queue = cls.from_queue_key(queue_key, connection=connection, job_class=job_class,
                                       serializer=serializer,
                                       death_penalty_class=death_penalty_class)
            job = (job_class or Job)(job_id, connection=connection, serializer=serializer)
            job.description = f"drain of inbox {queue.name}"
            cls._drains[(id(connection), queue_key)] = (connection, job, queue)
            return job, queue
        return super()._fetch_dequeued_job(connection, queue_key, job_id, job_class=job_class,
                                           serializer=serializer,
                                           death_penalty_class=death_penalty_class)


class _QuietDrains(logging.Filter):
    """Drops RQ's INFO line for each dequeued drain job (a drain may run for every click:
    the line cost more than the rest of RQ's loop). Other jobs are logged as RQ logs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (record.levelno == logging.INFO and isinstance(args, tuple) and args
                    and isinstance(args[-1], str) and args[-1].startswith(DRAIN_JOB_PREFIX))


_quiet_drains = _QuietDrains()


class SignoffWorker(SimpleWorker):
    """RQ's SimpleWorker (no fork per job) whose maintenance also recovers stalled runs.

    Forking costs ~12 ms a job here, three times a whole 5-step run; our jobs are our
    own code, and a worker that dies is covered by leases: its runs are re-enqueued by
    the sweep below, run by any live worker every ``maintenance_interval`` seconds.
    """

    _popped: tuple[str, str] | None = None  # an ordinary job popped by the wait after a drain

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maintenance_interval", 15)
        # An idle worker wakes from its blocking dequeue every worker_ttl - 15 s; make that
        # the sweep interval, so runs of a dead worker are picked up even when all is quiet.
        kwargs.setdefault("worker_ttl", int(kwargs["maintenance_interval"]) + 15)
        kwargs.setdefault("queue_class", SignoffQueue)  # drain jobs dequeued without a read
        super().__init__(*args, **kwargs)
        if _quiet_drains not in self.log.filters:
            self.log.addFilter(_quiet_drains)
        self._next_drain_script: Any = None
        self._after_drain = False  # the last job was a drain: close heartbeats are skipped
        self._beat_at = 0.0  # time.monotonic() of the last heartbeat
        self._suspension_checked = 0.0  # time.monotonic() of the last look for `rq suspend`
        self._state_written: str | None = None  # the state last written to the worker's hash

    def work(self, burst: bool = False, *args: Any, **kwargs: Any) -> bool:
        self._burst = burst
        return bool(super().work(burst, *args, **kwargs))

    def subscribe(self) -> None:
        """RQ's command channel (``rq.command``: stop a job, shut down), for a long-lived
        worker. A burst worker leaves when the queues are empty, so it does not listen: RQ
        listens in a thread that, when the worker unsubscribes before Redis confirmed the
        subscription, waits 60 s for a confirmation that never comes."""
        if not getattr(self, "_burst", False):
            super().subscribe()

    def unsubscribe(self) -> None:
        """RQ's, with a bounded wait: redis-py's listener thread, stopped before Redis
        confirmed the subscription, sits out its 60 s wait for a confirmation, and its
        ``stop()`` waits for it without limit (a shutting-down worker hung that long)."""
        thread = self.pubsub_thread
        if not thread or self.pubsub is None:
            return
        self.pubsub.unsubscribe()
        try:
            thread.stop(timeout=1)  # type: ignore[call-arg]  # newer redis-py joins here
        except TypeError:  # older redis-py: stop() only trips the flag
            thread.stop()
            thread.join(timeout=1)
        self.pubsub.close()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's, skipped around a drain job when the last one is under HEARTBEAT_GAP old."""
        if (pipeline is None and timeout is None and self._after_drain
                and time.monotonic() - self._beat_at < HEARTBEAT_GAP):
            return
        super().heartbeat(timeout, pipeline)
        self._beat_at = time.monotonic()

    @property
    def should_run_maintenance_tasks(self) -> bool:
        """RQ's, but not while a job popped by the wait after a drain waits to run: it runs
        first, as a job RQ's own pop returned does (it is held only in this process until
        RQ's loop takes it)."""
        return self._popped is None and bool(super().should_run_maintenance_tasks)

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's, at most every SUSPENSION_GAP after a drain (each turn of RQ's loop otherwise);
        not while a job popped by the wait after a drain waits to run (RQ runs a job its pop
        returned, suspended meanwhile or not)."""
        if self._popped is not None:
            return
        if (not burst and self._after_drain
                and time.monotonic() - self._suspension_checked < SUSPENSION_GAP):
            return
        super().check_for_suspension(burst)
        self._suspension_checked = time.monotonic()

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ's; after a drain, the state is not written again when the worker's hash has it
        already (RQ's loop writes "idle" before each dequeue; a drain writes nothing)."""
        if pipeline is None and self._after_drain and state == self._state_written:
            self._state = state
            return
        super().set_state(state, pipeline)
        self._state_written = state

    def execute_job(self, job: Any, queue: Queue) -> None:
        _working["worker"] = self  # for drain_inbox: which queues come first
        try:
            if job.id == drain_job_id(queue.name):
                self._after_drain = True
                self._drain_now(job, queue)
            else:
                self._after_drain = False  # a job as RQ runs it, with all of RQ's heartbeats
                super().execute_job(job, queue)
        finally:
            _working.pop("worker", None)

    def _drain_now(self, job: Any, queue: Queue) -> None:
        """Run a queue's drain job (engine.state.inbox) without RQ's bookkeeping: no
        started, finished or failed registry, no result, no job status (~20 round trips).
        What it would guard is the inbox's own: each task waits in the drain's list, under
        its heartbeat, until it is acknowledged, and a failed task is tried again by the
        inbox. The job's hash is kept, for the next time a drain is queued.

        The worker is busy for a stop signal (it waits for the drain), but its hash keeps
        the state RQ's loop wrote before the dequeue (a round trip each way saved).
        When the drain ends with the inbox empty, the script that ends it also looks at the
        worker's queues: when the first job waiting is a drain too (a click's drain queued
        the rewrite of its Slack message), it takes it off its queue and begins that drain,
        its first task taken (Inbox.drain_then), which runs now: RQ's loop would cost it ~8
        round trips more, and a script of its own two. When no queue has a job, the worker
        waits for the next one here (:meth:`_wait_for_drain`). Back to RQ's loop for any
        other job, and after a while (CHAIN_SECONDS). Told to stop, the worker runs the
        first task of a drain begun for it and hands on the rest."""
        if len(self.queues) == 1:
            # RQ moved the id to its intermediate list (BLMOVE with one queue); RQ takes
            # it off as the job starts, and so do we.
            try:
                self.connection.lrem(queue.intermediate_queue_key, 1, job.id)
            except redis.RedisError:  # the maintenance of RQ's intermediate list does
                log.exception("could not take drain job %s off RQ's intermediate list", job.id)
        self._state = WorkerStatus.BUSY  # a stop signal now waits for the drain
        scheduler = rq_scheduler()
        chain = [Link(q.key, drain_job_id(q.name), scheduler.inbox_of(q.name))
                 for q in self.queues]
        until = time.monotonic() + CHAIN_SECONDS
        begun: tuple[str, Any] | None = None  # the drain's name and first task, when begun
        while True:
            chaining = not self._stop_requested and time.monotonic() <= until
            drained = None
            try:
                with self.death_penalty_class(JOB_TIMEOUT, JobTimeoutException, job_id=job.id):
                    # Stopping, a drain begun for us runs its first task only: the rest
                    # goes to another drain (queued as this one ends).
                    drained = _drain(queue.name, self, chain if chaining else None, begun,
                                     1 if begun and self._stop_requested else DRAIN_TASKS)
            except Exception:
                log.exception("the drain of inbox %s failed; its task waits for the sweep",
                              queue.name)
            following = drained.following if drained is not None else NOT_CHAINED
            if following > 0 and drained is not None:  # the next drain began: ours to run
                queue, begun = self.queues[following - 1], drained.begun
                continue
            begun = None
            if following == 0:  # nothing waiting: wait here for the next job, not in RQ's loop
                found = self._wait_for_drain(until)
                if found is None:
                    return
                queue = found
                continue
            if following != NOT_CHAINED:  # an ordinary job first: RQ's loop runs it
                return
            if self._stop_requested or time.monotonic() > until:
                return
            try:
                found = self._next_drain()
            except redis.RedisError:  # RQ's loop dequeues it, or the sweep queues another
                log.exception("could not look for the next drain job")
                return
            if found is None:
                return
            queue = found

    def _wait_for_drain(self, until: float) -> Queue | None:
        """Wait, after a drain, for the next job on this worker's queues in a blocking pop of
        its own (BLPOP, as RQ's loop pops), until ``until`` (time.monotonic()): the queue
        whose drain job it popped, whose drain then runs without a turn of RQ's loop (its
        heartbeat, suspension and maintenance checks and its dequeue cost a lone click more
        than the pop). None: back to RQ's loop, when the wait ran out, for a burst worker
        (it leaves when the queues are empty), when told to stop, and for an ordinary job,
        kept in ``_popped`` for RQ's loop to run next (dequeue_job_and_maintain_ttl).

        While it waits, the worker is idle (its hash says so already): a stop signal ends
        the wait at once (RQ raises StopRequested in an idle worker's pop)."""
        if getattr(self, "_burst", False) or self._stop_requested:
            return None
        left = until - time.monotonic()
        if left < WAIT_AT_LEAST:
            return None
        self._state = WorkerStatus.IDLE  # a stop signal now ends the pop (StopRequested)
        try:
            popped = self.connection.blpop([q.key for q in self.queues], timeout=left)
        except redis.RedisError:  # RQ's loop reconnects, with its back-off
            log.exception("could not wait for the next job")
            return None
        finally:
            self._state = WorkerStatus.BUSY
        if popped is None:
            return None
        queue_key, job_id = (v.decode() if isinstance(v, bytes) else str(v) for v in popped)
        for queue in self.queues:
            if queue.key == queue_key and job_id == drain_job_id(queue.name):
                return queue
        # An ordinary job: RQ's loop runs it next, with all of its bookkeeping (see
        # dequeue_job_and_maintain_ttl); should the worker stop first, it goes back at the
        # head of its queue (teardown).
        self._popped = (queue_key, job_id)
        return None

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None
                                     ) -> tuple[Job, Queue] | None:
        """RQ's, except that an ordinary job popped by the wait after a drain
        (:meth:`_wait_for_drain`) is the one returned, fetched as RQ fetches what it pops."""
        popped, self._popped = self._popped, None
        if popped is not None:
            queue_key, job_id = popped
            self.set_state(WorkerStatus.IDLE)
            self.heartbeat()
            found = self.queue_class._fetch_dequeued_job(
                self.connection, queue_key, job_id, job_class=self.job_class,
                serializer=self.serializer, death_penalty_class=self.death_penalty_class)
            if found is not None:
                job, queue = found
                self.reorder_queues(reference_queue=queue)
                job.redis_server_version = self.get_redis_server_version()
                if self.log_job_description:
                    self.log.info("Worker %s: %s: %s (%s)", self.name, queue.name,
                                  job.description, job.id)
                else:
                    self.log.info("Worker %s: %s: %s", self.name, queue.name, job.id)
                return found
            # its hash is gone (deleted meanwhile): RQ's loop pops the next
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def teardown(self) -> None:
        """RQ's; a job popped by the wait after a drain that RQ's loop never took (the worker
        told to stop in between) goes back at the head of its queue first."""
        popped, self._popped = self._popped, None
        if popped is not None:
            try:
                self.connection.lpush(*popped)
            except redis.RedisError:
                log.exception("could not put job %s back on %s; re-enqueue it (rq requeue)",
                              popped[1], popped[0])
        super().teardown()

    def _next_drain(self) -> Queue | None:
        """The queue whose drain job is the first job waiting on this worker's queues
        (taken off it), or None (NEXT_DRAIN)."""
        if self._next_drain_script is None:
            self._next_drain_script = self.connection.register_script(lua.NEXT_DRAIN)
        queues = list(self.queues)
        found = int(self._next_drain_script(keys=[q.key for q in queues],
                                            args=[drain_job_id(q.name) for q in queues]))
        return queues[found - 1] if found else None

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        rt = runtime()
        try:
            recovered = rt.engine.recover_stalled()
            if recovered:
                log.warning("re-enqueued %d stalled execution(s): %s", len(recovered),
                            ", ".join(recovered))
        except Exception:
            log.exception("could not sweep for stalled executions")
        try:
            for name in rt.store.inbox_queues():
                rq_scheduler().inbox_of(name).recover()
        except Exception:
            log.exception("could not recover the inbox tasks of dead drains")
        try:  # far timers get their RQ job well before they are due
            rq_scheduler().schedule_deferred(
                timedelta(seconds=3 * int(self.maintenance_interval) + 60))
        except Exception:
            log.exception("could not schedule deferred timers")
        try:
            fired = rq_scheduler().fire_overdue(
                timedelta(seconds=max(5, int(self.maintenance_interval))))
            if fired:
                log.warning("fired %d overdue timer(s) RQ's scheduler had not run", fired)
        except Exception:
            log.exception("could not fire overdue timers")
        try:
            horizon = timedelta(seconds=int(self.maintenance_interval) + 1)
            for name, due in rt.schedules.tick(horizon):
                log.info("scheduled %s for %s", name, due.isoformat())
        except Exception:
            log.exception("could not advance scheduled triggers")
