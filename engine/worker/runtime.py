"""A worker process's runtime: the store, engine, runner, catalog and schedule keeper,
built once from the settings.

``signoff worker`` builds it and installs it with :func:`install_runtime`; a job run
by any other RQ worker gets one built from the job's own Redis connection.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis
from rq import get_current_job

from engine.definition.egress import EgressPolicy
from engine.definition.loader import WorkflowCatalog
from engine.notify import Notifier, load_notifier
from engine.run.engine import Engine
from engine.run.runner import Runner
from engine.settings import Settings
from engine.state.store import Store, connect
from engine.steps.http import HttpSettings, configure_http
from engine.worker.scheduled_runs import ScheduleKeeper
from engine.worker.scheduler import RQScheduler


@dataclass
class Runtime:
    settings: Settings
    store: Store
    engine: Engine
    runner: Runner
    catalog: WorkflowCatalog
    schedules: ScheduleKeeper


_runtimes: dict[int, Runtime] = {}  # 0: the installed one; else by id of a job's connection
_runtimes_lock = threading.Lock()


def build_runtime(settings: Settings, connection: redis.Redis,
                  notifier: Notifier | None = None) -> Runtime:
    store = Store(connection, audit_key=settings.audit_key_bytes)
    scheduler = RQScheduler(connection, settings.queue)
    notifier = notifier or load_notifier(settings.notifier, settings=settings,
                                         connection=connection)
    lease_ms = int(settings.lease_seconds * 1000)
    egress = EgressPolicy.from_entries(settings.http_allow, settings.http_deny)
    # The http step reads its connections (SIGNOFF_CONNECTORS) and TLS exceptions from
    # the process: a worker process has one runtime.
    configure_http(HttpSettings(dict(settings.connectors.connections),
                                frozenset(settings.http_insecure_tls)))
    engine = Engine(store, scheduler, notifier, lease_ms=lease_ms,
                    escalate_to=settings.escalate_to)
    catalog = WorkflowCatalog(settings.workflows_dir)
    runner = Runner(store, scheduler, notifier, engine.definition, lease_ms=lease_ms,
                    egress=egress, find_workflow=catalog.get, end_execution=engine.time_out,
                    connections=settings.connectors.connections)
    keeper = ScheduleKeeper(store, scheduler, catalog)
    return Runtime(settings, store, engine, runner, catalog, keeper)


def build_engine(settings: Settings, connection: redis.Redis | None = None,
                 notifier: Notifier | None = None) -> Engine:
    """An :class:`Engine` on ``settings``' Redis (or ``connection``), with RQ behind its
    timers and the notifier the settings name (or ``notifier``)."""
    return build_runtime(settings, connection or connect(settings.redis_url), notifier).engine


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
