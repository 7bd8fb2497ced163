"""RQ entry points (ids in, nothing else), the RQ scheduler, and the worker class.

Jobs find the process's :class:`Runtime` (store, engine, runner) through
:func:`runtime`: ``signoff worker`` builds it once from the settings; a job run
by any other RQ worker builds it from the job's own Redis connection.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
import redis.asyncio
from rq import Queue, Retry, SimpleWorker, get_current_job

from engine import keys, scheduling
from engine.inbox import AsyncInbox, Inbox, Task
from engine.notify import Notifier, load_notifier
from engine.runner import Runner
from engine.schedules import ScheduleKeeper, start_scheduled_run
from engine.scheduling import Timer
from engine.service import Engine
from engine.settings import Settings
from engine.store import Store
from engine.workflow import WorkflowCatalog

log = logging.getLogger(__name__)

JOB_TIMEOUT = 3600  # seconds; one segment of automatic steps, http timeouts included


class RQScheduler:
    """The :class:`engine.scheduling.Scheduler` seam, on RQ queues and scheduled jobs."""

    def __init__(self, connection: redis.Redis, queue_name: str = "signoff") -> None:
        self.queue = Queue(queue_name, connection=connection)
        self.inbox = rq_inbox(connection, queue_name)

    def enqueue_advance(self, execution_id: str, *, pipeline: Any = None) -> None:
        own = pipeline is None
        pipe = self.queue.connection.pipeline() if own else pipeline
        self.queue.enqueue_call(advance_execution, args=(execution_id,), timeout=JOB_TIMEOUT,
                                result_ttl=0, failure_ttl=7 * 86400, pipeline=pipe,
                                description=f"advance {execution_id}")
        if own:  # one round trip instead of RQ's two transactions
            pipe.execute()

    def enqueue(self, function: str, *args: Any) -> None:
        pipe = self.queue.connection.pipeline()
        self.queue.enqueue_call(function, args=args, timeout=JOB_TIMEOUT, result_ttl=0,
                                failure_ttl=7 * 86400, pipeline=pipe)
        pipe.execute()

    def hand_in(self, function: str, *args: Any) -> None:
        self.inbox.put(function, *args)

    def async_inbox(self, connection: redis.asyncio.Redis) -> AsyncInbox:
        """The inbox for a web process's event loop (``connection``: its async client)."""
        return AsyncInbox(connection, self.queue.name, self.inbox.enqueue_drain)

    def schedule(self, timer: Timer) -> None:
        # The registry keeps whole seconds and the scheduler polls each second: a job may
        # run up to ~1 s early. Every timer job re-checks its deadline and defers if so.
        pipe = self.queue.connection.pipeline()
        self.queue.enqueue_in(max(timedelta(0), timer.when - _now(timer.when)),
                              _TIMER_JOBS[timer.job], *timer.args, job_timeout=JOB_TIMEOUT,
                              result_ttl=0, failure_ttl=7 * 86400, pipeline=pipe)
        # Also kept in our own index (usually committed already, with the change that set
        # the timer): RQ's scheduler lock outlives a killed worker by a minute, and a timer
        # must not wait that long (see fire_overdue).
        key, score, member = timer.entry
        pipe.zadd(key, {member: score})
        pipe.execute()

    def advance_at(self, execution_id: str, when: datetime) -> None:
        self.schedule(scheduling.advance_timer(execution_id, when))

    def run_timeout_at(self, execution_id: str, when: datetime) -> None:
        self.schedule(scheduling.run_timeout_timer(execution_id, when))

    def step_timeout_at(self, execution_id: str, path: str, when: datetime) -> None:
        self.schedule(scheduling.step_timeout_timer(execution_id, path, when))

    def review_timer_at(self, execution_id: str, path: str, level: int, kind: str,
                        when: datetime) -> None:
        self.schedule(scheduling.review_timer(execution_id, path, level, kind, when))

    def start_workflow_at(self, workflow: str, when: datetime) -> None:
        self.schedule(scheduling.start_workflow_timer(workflow, when))

    def fire_overdue(self, grace: timedelta, limit: int = 200) -> int:
        """Enqueue timers more than ``grace`` overdue that RQ's scheduler has not run (every
        timer job is idempotent, so one that runs twice does nothing the second time)."""
        connection = self.queue.connection
        cutoff = (datetime.now().astimezone() - grace).timestamp()
        fired = 0
        due: Any = connection.zrangebyscore(keys.INDEX_TIMERS, "-inf", cutoff, start=0,
                                                    num=limit)
        for member in due:
            if not connection.zrem(keys.INDEX_TIMERS, member):
                continue  # another worker took it
            name, *args = json.loads(member)
            self.enqueue(f"engine.jobs.{name}", *args)
            fired += 1
        return fired


def _now(reference: datetime) -> datetime:
    return datetime.now(reference.tzinfo)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    engine: Engine
    runner: Runner
    catalog: WorkflowCatalog
    schedules: ScheduleKeeper


_runtimes: dict[int, Runtime] = {}
_working: dict[str, SimpleWorker] = {}  # the SignoffWorker running a job in this process
_runtimes_lock = threading.Lock()


def build_runtime(settings: Settings, connection: redis.Redis,
                  notifier: Notifier | None = None) -> Runtime:
    store = Store(connection)
    scheduler = RQScheduler(connection, settings.queue)
    notifier = notifier or load_notifier(settings.notifier, settings=settings,
                                         connection=connection)
    lease_ms = int(settings.lease_seconds * 1000)
    engine = Engine(store, scheduler, notifier, lease_ms=lease_ms)
    runner = Runner(store, scheduler, notifier, engine.definition, lease_ms=lease_ms)
    catalog = WorkflowCatalog(settings.workflows_dir)
    keeper = ScheduleKeeper(store, scheduler, catalog)
    return Runtime(settings, store, engine, runner, catalog, keeper)


def install_runtime(runtime_: Runtime) -> None:
    """Make ``runtime_`` the one jobs in this process use (``signoff worker`` does this)."""
    with _runtimes_lock:
        _runtimes.clear()
        _runtimes[0] = runtime_


def runtime() -> Runtime:
    with _runtimes_lock:
        if 0 in _runtimes:
            return _runtimes[0]
        job = get_current_job()
        if job is None:
            raise RuntimeError("no Signoff runtime: run jobs with `signoff worker`")
        key = id(job.connection)
        if key not in _runtimes:
            settings = Settings.from_env()
            _runtimes[key] = build_runtime(settings, job.connection)
        return _runtimes[key]


# -- jobs ------------------------------------------------------------------------------------

def advance_execution(execution_id: str) -> str | None:
    status = runtime().runner.advance(execution_id)
    return status.value if status else None


def rq_inbox(connection: redis.Redis, queue_name: str) -> Inbox:
    """The inbox of RQ queue ``queue_name``, draining in jobs on that queue."""
    queue = Queue(queue_name, connection=connection)

    def enqueue_drain() -> None:
        pipe = connection.pipeline()
        queue.enqueue_call(drain_inbox, args=(queue_name,), timeout=JOB_TIMEOUT, result_ttl=0,
                           failure_ttl=7 * 86400, pipeline=pipe,
                           description=f"drain the {queue_name} inbox")
        pipe.execute()

    def run_as_job(task: Task) -> None:
        queue.enqueue_call(task.function, args=task.args, timeout=JOB_TIMEOUT, result_ttl=0,
                           failure_ttl=7 * 86400,
                           retry=Retry(max=len(task.retry), interval=list(task.retry))
                           if task.retry else None,
                           description=f"{task.function}, from the {queue_name} inbox")

    return Inbox(connection, queue_name, enqueue_drain, run_as_job)


def drain_inbox(queue_name: str) -> int:
    """Run the tasks in ``queue_name``'s inbox until it is empty, or until a queue this
    worker serves first has a job waiting; see engine.inbox."""
    ahead: list[str] = []
    worker = _working.get("worker")
    if worker is not None:
        names = [q.name for q in worker.queues]
        if queue_name in names:
            ahead = [q.key for q in worker.queues[:names.index(queue_name)]]
    return rq_inbox(runtime().store.redis, queue_name).drain(yield_to=ahead)


# Timer jobs: each first takes itself off the overdue-timer index.

def advance_timer(execution_id: str) -> str | None:
    _timer_ran("advance_timer", execution_id)
    return advance_execution(execution_id)


def expire_execution(execution_id: str) -> bool:
    _timer_ran("expire_execution", execution_id)
    return runtime().engine.expire(execution_id)


def step_timed_out(execution_id: str, path: str) -> bool:
    _timer_ran("step_timed_out", execution_id, path)
    return runtime().engine.step_timed_out(execution_id, path)


def review_timer(execution_id: str, path: str, level: str, kind: str) -> bool:
    _timer_ran("review_timer", execution_id, path, level, kind)
    return runtime().engine.review_timer(execution_id, path, int(level), kind)


def start_scheduled(workflow: str, due: str) -> str | None:
    _timer_ran("start_scheduled", workflow, due)
    rt = runtime()
    return start_scheduled_run(rt.engine, rt.catalog, workflow, datetime.fromisoformat(due))


def _timer_ran(name: str, *args: str) -> None:
    runtime().store.redis.zrem(keys.INDEX_TIMERS, Timer(name, args, _EPOCH).member)


_EPOCH = datetime.fromtimestamp(0).astimezone()
_TIMER_JOBS: dict[str, Any] = {job.__name__: job for job in (
    advance_timer, expire_execution, step_timed_out, review_timer, start_scheduled)}


# -- worker ----------------------------------------------------------------------------------

class SignoffWorker(SimpleWorker):
    """RQ's SimpleWorker (no fork per job) whose maintenance also recovers stalled runs.

    Forking costs ~12 ms a job here, three times a whole 5-step run; our jobs are our
    own code, and a worker that dies is covered by leases: its runs are re-enqueued by
    the sweep below, run by any live worker every ``maintenance_interval`` seconds.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maintenance_interval", 15)
        # An idle worker wakes from its blocking dequeue every worker_ttl - 15 s; make that
        # the sweep interval, so runs of a dead worker are picked up even when all is quiet.
        kwargs.setdefault("worker_ttl", int(kwargs["maintenance_interval"]) + 15)
        super().__init__(*args, **kwargs)

    def execute_job(self, job: Any, queue: Queue) -> None:
        _working["worker"] = self  # for drain_inbox: which queues come first
        try:
            super().execute_job(job, queue)
        finally:
            _working.pop("worker", None)

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
            for name in rt.store.redis.smembers(keys.INBOXES):
                rq_inbox(rt.store.redis, name.decode() if isinstance(name, bytes) else name
                         ).recover()
        except Exception:
            log.exception("could not recover the inbox tasks of dead drains")
        try:
            if isinstance(rt.engine.scheduler, RQScheduler):
                fired = rt.engine.scheduler.fire_overdue(
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
