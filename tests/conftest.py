"""Shared fixtures: a private Redis server, a clean database per test, runtimes and workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.definition.loader import parse_workflow
from engine.notify import NullNotifier
from engine.settings import Settings
from engine.state.embedded_redis import env_or_private_url
from engine.state.store import connect
from engine.worker.runtime import Runtime, build_runtime, install_runtime
from engine.worker.worker import SignoffWorker
from tests.support.services import LOOPBACK_TARGETS, ServedApp, WorkerProcess


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when set, else a private redis-server on a free port for the whole session."""
    with env_or_private_url() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    # The tests' stand-in targets listen on loopback, which http steps may not reach unless
    # allowed: allowed here, as a deployment would allow an internal service.
    return Settings(redis_url=redis_url, api_token="test-token", workflows_dir=str(tmp_path),
                    http_allow=LOOPBACK_TARGETS)


@pytest.fixture
def runtime(settings: Settings, redis_client: redis.Redis) -> Iterator[Runtime]:
    rt = build_runtime(settings, redis_client, notifier=NullNotifier())
    install_runtime(rt)
    yield rt


@pytest.fixture
def work(runtime: Runtime) -> Callable[[], None]:
    """Run every queued job to completion in this process (RQ's SimpleWorker, burst mode)."""

    def drain() -> None:
        worker = SignoffWorker([runtime.settings.queue], connection=runtime.store.redis)
        worker.work(burst=True, logging_level="WARNING")

    return drain


@pytest.fixture
def workflow_file(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a workflow YAML into the catalog directory and return its path."""

    def write(text: str, filename: str = "workflow.yaml") -> Path:
        path = tmp_path / filename
        path.write_text(text)
        parse_workflow(text, str(path))  # fail early and clearly on a broken fixture
        return path

    return write


@pytest.fixture
def worker_process(redis_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(url: str | None = None, **kwargs: Any) -> WorkerProcess:
        proc = WorkerProcess(url or redis_url, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def served() -> Iterator[Callable[[Any], ServedApp]]:
    apps: list[ServedApp] = []

    def serve(app: Any) -> ServedApp:
        served_app = ServedApp(app)
        apps.append(served_app)
        return served_app

    yield serve
    for app in apps:
        app.stop()
