"""Real services for tests: RQ workers (in-process or as processes) and a served web app."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from engine.state.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
# Where the tests' stand-in targets listen; http steps may reach it only when it is allowed
# (SIGNOFF_HTTP_ALLOW), as the test settings and worker processes do.
LOOPBACK_TARGETS = ("127.0.0.1",)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class WorkerProcess:
    """`signoff worker` as a real process, as production runs it."""

    def __init__(self, redis_url: str, *, extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1",
               "SIGNOFF_HTTP_ALLOW": ",".join(LOOPBACK_TARGETS)}
        env.pop("SLACK_BOT_TOKEN", None)
        env.update(extra_env or {})
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"signoff-worker-{free_port()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker"], cwd=ROOT, env=env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the worker and its scheduler child, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (Linux's /proc)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


class ServeProcess:
    """`signoff serve` as a real process, as production runs it; ``env`` adds to (and
    overrides) its environment, from which every SLACK_ and SIGNOFF_ variable is dropped;
    ``args`` are more options (``--processes 2``)."""

    def __init__(self, redis_url: str, log_path: Path, env: dict[str, str],
                 args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SIGNOFF_"))},
                "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **env}
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "serve", "--port", str(self.port), *args],
                cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

        def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            return False

        try:
            wait_until(healthy, timeout=30, message="signoff serve to answer")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def serving(self) -> list[int]:
        """The processes answering for ``--processes N`` (the supervisor's spawned children)."""
        return [pid for pid in children(self.process.pid)
                if b"spawn_main" in _cmdline(pid)]


class ServedApp:
    """An ASGI app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=10, message="uvicorn to start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def reviewer_answer(output: Any) -> dict[str, Any]:
    """A decided human step's output without the keys Elastic 9.5 adds (engine.steps.human)."""
    from engine.steps.human import ANSWER_KEYS

    return {k: v for k, v in dict(output).items() if k not in ANSWER_KEYS}
