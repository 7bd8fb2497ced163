"""Everything ``make demo`` runs, started in order and stopped in reverse however it ends.

- Redis: ``REDIS_URL``, else a private ``redis-server`` in a temp dir;
- the Slack emulator, with the sandbox page (in this process);
- the stand-in target the example workflows act on (in this process);
- the Kibana, Elasticsearch and OpenAI emulators and a stand-in EDR over TLS, which
  Elastic's own example workflow, run unchanged, calls (:mod:`demo.elastic`, in this process);
- the demo agent (``demo/agent.py``, in a thread), asking the gate under ``demo/policy.yaml``;
- ``signoff serve`` (the API and ``/slack/events``) and ``signoff worker``, as processes
  configured exactly as in production, with the emulator as their Slack.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from demo.agent import Agent, run_in_thread
from demo.elastic import ElasticSide
from demo.seeds import ALERT_HOST, SEEDS, Seed
from demo.target import Target
from engine.state.embedded_redis import INSTALL_HINT, EmbeddedRedis, free_port
from signoff import Gate
from slack_emulator.errors import EmulatorStartError
from slack_emulator.sandbox import Panel, Sandbox, attach_sandbox
from slack_emulator.server import BackgroundServer, SlackEmulator
from slack_emulator.workspace import APP, REVIEWS_CHANNEL

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# Elastic's example, byte for byte: it stands in for examples/isolate-host.yaml (same name).
ELASTIC_SEED = ROOT / "tests" / "engine" / "workflows" / "isolate-host-with-approval.yml"
REPLACED_EXAMPLE = "isolate-host.yaml"
POLICY = ROOT / "demo" / "policy.yaml"
SANDBOX_PORT = 3900
START_TIMEOUT = 30.0
STOP_GRACE = 3.0
OWN_REDIS_GRACE = 1.0
RUNS_SHOWN = 12

Say = Callable[[str], None]


def _say(line: str) -> None:
    print(line, flush=True)


class Stack:
    """Redis, the Slack emulator and its sandbox, the target, the web process and a worker."""

    def __init__(self, *, sandbox_port: int = SANDBOX_PORT, say: Say = _say,
                 use_env_redis: bool = True) -> None:
        self.sandbox_port = sandbox_port
        self.say = say
        self.use_env_redis = use_env_redis
        self.token = secrets.token_urlsafe(16)
        self.redis: EmbeddedRedis | None = None
        self.redis_url = ""
        self.emulator: SlackEmulator | None = None
        self.sandbox: Sandbox | None = None
        self.target = Target(echo=say)
        self.target_url = ""
        self.web_url = ""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.seeded: list[tuple[Seed, str]] = []  # each seed and the execution it started
        self.logs = Path(tempfile.mkdtemp(prefix="signoff-demo-"))
        self.workflows = self.logs / "workflows"
        self.elastic = ElasticSide(self.logs)
        self._servers: list[Any] = []
        self._client: httpx.Client | None = None
        self.agent: Agent | None = None

    # -- starting --------------------------------------------------------------------------

    def start(self) -> Stack:
        self._start_redis()
        self._start_slack()
        target = BackgroundServer(self.target.app).start()
        self._servers.append(target)
        self.target_url = self.target.url = target.base_url
        self._servers.append(self.elastic)  # stopped however far it got
        self.elastic.start()
        self.elastic.prepare_alert(ALERT_HOST)
        self._write_workflows()
        port = free_port()
        self.web_url = f"http://127.0.0.1:{port}"
        self._spawn("web", "serve", "--port", str(port))
        self._spawn("worker", "worker")
        self._wait_for_web()
        assert self.sandbox is not None and self.emulator is not None
        self.sandbox.app_url = f"{self.web_url}/slack/events"
        self.say(f"redis    {self.redis_url}" + ("  (private, in a temp dir)" if self.redis else ""))
        self.say(f"slack    {self.emulator.api_url}  (the Slack emulator, workspace "
                 f"{self.emulator.workspace.team.name})")
        self.say(f"web      {self.web_url}  (signoff serve: the API, and Slack at /slack/events; "
                 f"API token {self.token})")
        self.say("worker   signoff worker  (RQ, with the scheduler)")
        self.say(f"target   {self.target_url}  (stand-in mail, IAM, deploy and payments APIs)")
        edr = self.elastic.edr
        assert edr is not None  # started with the emulators
        self.say(f"elastic  Kibana {self.elastic.kibana.base_url}, Elasticsearch "
                 f"{self.elastic.elasticsearch.url}, OpenAI {self.elastic.openai.base_url}, "
                 f"EDR https://edr.example.com at 127.0.0.1:{edr.port}"
                 f"  (connections in {self.elastic.connectors.name})")
        return self

    def _write_workflows(self) -> None:
        """examples/, with Elastic's own isolate-host workflow in place of ours."""
        self.workflows.mkdir()
        for path in sorted(EXAMPLES.glob("*.y*ml")):
            if path.name != REPLACED_EXAMPLE:
                shutil.copyfile(path, self.workflows / path.name)
        shutil.copyfile(ELASTIC_SEED, self.workflows / ELASTIC_SEED.name)

    def _start_redis(self) -> None:
        url = os.environ.get("REDIS_URL") if self.use_env_redis else None
        if not url:
            try:
                self.redis = EmbeddedRedis().start()
            except RuntimeError:
                raise RuntimeError(INSTALL_HINT) from None
            url = self.redis.url
        self.redis_url = url

    def _start_slack(self) -> None:
        for port in dict.fromkeys((self.sandbox_port, 0)):
            emulator = SlackEmulator(port=port)
            self.sandbox = attach_sandbox(emulator, panels=self.panels)
            try:
                self.emulator = emulator.start()
                break
            except (OSError, EmulatorStartError):
                continue  # the usual port is taken: any free one will do
        if self.emulator is None:
            raise RuntimeError("the Slack emulator could not listen on any port")
        self._servers.append(self.emulator)

    def _env(self) -> dict[str, str]:
        assert self.emulator is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SIGNOFF_"))}
        env.update({
            "REDIS_URL": self.redis_url, "PYTHONUNBUFFERED": "1",
            "SIGNOFF_API_TOKEN": self.token, "SIGNOFF_WORKFLOWS": str(self.workflows),
            "SIGNOFF_POLICY": str(POLICY),
            "SLACK_API_URL": self.emulator.api_url, "SLACK_BOT_TOKEN": APP.bot_token,
            "SLACK_SIGNING_SECRET": APP.signing_secret, "SIGNOFF_SLACK_CHANNEL": REVIEWS_CHANNEL,
            # Short look-up cache: the demo's workspace is born with each run.
            "SIGNOFF_SLACK_CACHE_SECONDS": "60",
            # The stand-in target listens on loopback, which http steps may not reach
            # unless it is allowed.
            "SIGNOFF_HTTP_ALLOW": "127.0.0.1",
            **self.elastic.env(),
        })
        return env

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        try:
            # A session of its own: Ctrl-C reaches the demo alone, which stops it in order.
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", *args], cwd=ROOT, env=self._env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()

    def _wait_for_web(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"signoff {name} exited with {process.returncode}:\n"
                                       f"{self.log_tail(name)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.web_url}/healthz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"signoff serve did not answer within {START_TIMEOUT:.0f}s:\n"
                                   f"{self.log_tail('web')}")
            time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- using it ---------------------------------------------------------------------------

    @property
    def api(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.web_url, timeout=10,
                                        headers={"Authorization": f"Bearer {self.token}"})
        return self._client

    def run(self, seed: Seed) -> str:
        headers = {"X-Signoff-Requested-By": seed.requested_by} if seed.requested_by else {}
        answer = self.api.post(f"/api/workflows/{seed.workflow}/run",
                               json=seed.body(self.target_url), headers=headers)
        if answer.status_code != 201:
            raise RuntimeError(f"could not start {seed.workflow}: {answer.text}")
        return str(answer.json()["executionId"])

    def start_agent(self, timeout: float = START_TIMEOUT) -> Agent:
        """Start the demo agent; return once its escalated call's review is in #reviews."""
        self.agent = run_in_thread(Gate(self.web_url, self.token), self.say)
        self._wait_for_reviews(1, timeout, "the agent's review was not posted")
        return self.agent

    def seed(self, seeds: tuple[Seed, ...] = SEEDS, timeout: float = START_TIMEOUT) -> list[str]:
        """Start the seeded runs; return once every review they ask for is in #reviews."""
        assert self.emulator is not None
        posted = len(self.emulator.workspace.messages(REVIEWS_CHANNEL))
        started = [self.run(seed) for seed in seeds]
        self.seeded.extend(zip(seeds, started, strict=True))
        wanted = sum(seed.waits_for_review for seed in seeds)
        self._wait_for_reviews(posted + wanted, timeout, "the seeded reviews were not all posted")
        return started

    def _wait_for_reviews(self, count: int, timeout: float, failure: str) -> None:
        assert self.emulator is not None
        deadline = time.monotonic() + timeout
        while len(self.emulator.workspace.messages(REVIEWS_CHANNEL)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{failure} within {timeout:.0f}s; the worker says:\n"
                                   f"{self.log_tail('worker')}")
            time.sleep(0.1)

    def execution(self, execution_id: str) -> dict[str, Any]:
        return dict(self.api.get(f"/api/workflowExecutions/{execution_id}").json())

    def executions(self) -> list[dict[str, Any]]:
        answer = self.api.get("/api/workflowExecutions", params={"size": RUNS_SHOWN})
        return list(answer.json()["results"])

    def panels(self) -> list[Panel]:
        """What the sandbox shows beside the channel: the runs, and what the target was asked."""
        runs = [f"{r['status']:<17} {r['workflow']}  {r['id'][:8]}" for r in self.executions()]
        return [Panel("Runs (newest first)", runs),
                Panel("Stand-in target: what the workflows did", self.target.lines()),
                Panel("Kibana cases and the EDR (Elastic's example)", self.elastic.lines())]

    # -- stopping ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call twice."""
        # A second Ctrl-C must not cut the clean-up short.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            if self.agent is not None:
                self.agent.stopping.set()  # its long poll is about to lose the server
            if self.sandbox is not None:
                self.sandbox.close()
            if self._client is not None:
                self._client.close()
                self._client = None
            # With a private Redis, about to be thrown away, a warm shutdown saves nothing.
            _terminate(list(self.processes.values()),
                       grace=OWN_REDIS_GRACE if self.redis is not None else STOP_GRACE)
            self.processes.clear()
            for server in reversed(self._servers):
                server.stop()
            self._servers.clear()
            if self.redis is not None:
                self.redis.close()
                self.redis = None
            shutil.rmtree(self.logs, ignore_errors=True)
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)


def _terminate(processes: list[subprocess.Popen[bytes]], *, grace: float) -> None:
    """SIGTERM each process's whole group (the worker's scheduler too), SIGKILL what lingers.

    The grace is short: a terminal's Ctrl-C also reaches the private redis-server, and a
    worker whose Redis is gone keeps retrying instead of shutting down warm.
    """
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_GRACE)
        # The group may outlive its leader (a scheduler child): leave none of it behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
