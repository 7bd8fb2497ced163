"""Slack clicks: ack latency against a trivial route of the same web process, and click to next step.

    python benchmarks/slack.py [--reviews 200] [--concurrency 32] [--workers 1]
                               [--load-processes 4] [--client raw|httpx] [--warmup N]
                               [--lone 100] [--tls]

Starts a private Redis (REDIS_URL when set), the Slack emulator, the web process
(the app ``signoff serve`` serves, from ``engine.cli.build_web_app``, on uvicorn in
a process of its own, plus one route that does nothing, ``POST /bench/noop``, the
baseline) and ``signoff worker`` processes (one by default, as the target is set: on a
2-core machine a second worker takes its core from the web process and the load
processes while the clicks come in, and the ack's p99 goes from ~1.7x to ~3x the
trivial route's). It posts ``--reviews`` one-click
reviews (the schema requires only ``approved``), then sends the Approve clicks,
signed ``block_actions`` payloads built by ``SlackDriver``, ``--concurrency`` at a
time from several load processes (``benchmarks/load.py``). The baseline gets the
very same bodies and headers, at the same concurrency, just before.

Prints click-to-ack p50/p99 next to the no-op route's (target: p99 within 2x;
Slack's hard limit is 3,000 ms) and click-to-next-step-started p50/p99, from the
click's send time to the ``step.started`` audit event of the step after the
review (target: p99 < 500 ms); then the web process's CPU per request, and how
much CPU each group of processes used in each phase (a load generator near 100%
of its cores would be measuring itself). The web process and Bolt are warmed up
first with ``--warmup`` (default ``--concurrency``) clicks on extra reviews: a web
process lives long, its first click calls auth.test and its thread pool grows on
demand. Then ``--lone`` more clicks are sent one at a time, each once the last one's
run has finished and its message was rewritten, as people click, and as many bare RQ
no-op jobs are enqueued one at a time on the same worker, alternating in blocks of ten
(the worker's CPU read from the scheduler's count, to the nanosecond): it prints the
workers' CPU per lone click, per lone bare job, and their ratio (target <= 1.0). With
``--tls`` the emulator serves HTTPS, as slack.com does (a CA made for the run, trusted by
the web process and the workers through ``SSL_CERT_FILE``): the rewrite's Slack call then
costs what it costs against Slack. Stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from rq import Queue  # noqa: E402

from benchmarks.load import (  # noqa: E402
    CLIENTS,
    LoadGenerator,
    PreparedRequest,
    Sample,
    Stolen,
)
from bot.blocks import ACTION_APPROVE  # noqa: E402
from bot.delivery import annotation_key, load_delivery  # noqa: E402
from bot.outbox import QUEUE as SLACK_QUEUE  # noqa: E402
from demo.elastic import make_tls  # noqa: E402
from engine.definition.loader import parse_workflow  # noqa: E402
from engine.notify import NullNotifier  # noqa: E402
from engine.run.engine import Engine  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.state import keys  # noqa: E402
from engine.state.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from engine.state.execution import ExecutionStatus  # noqa: E402
from engine.state.store import connect  # noqa: E402
from engine.worker.runtime import Runtime, build_runtime  # noqa: E402
from slack_emulator import MethodLimits, PostingLimit, SlackDriver, SlackEmulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "C0REVIEWS"
CLICKER = "U0ALICE"
NOOP_PATH = "/bench/noop"
NEXT_STEP = "isolate"  # the step after the review in ONE_CLICK
BASELINE_REQUESTS = 1000
ACK_RATIO_TARGET = 2.0
NEXT_STEP_TARGET = 0.5  # seconds
SETTLE_TIMEOUT = 60.0
STARVED_BELOW = 0.6  # share of a core the busy web process gets on a machine of its own
STOP_TIMEOUT = 5.0  # seconds each process gets to stop before SIGKILL
LONE_TARGET = 1.0  # a lone click's worker CPU, in bare RQ no-op jobs
LONE_POLL = 0.005  # seconds between looks while a lone click or job settles
LONE_PAUSE = 0.05  # seconds after it settled, before the next
LONE_BLOCK = 10  # lone clicks, then as many bare jobs, then clicks again ...

ONE_CLICK = """
name: bench-one-click
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE, U0BOB]
      message: |
        ## Isolate `{{ event.host }}`?
        **Rule:** {{ event.rule }}
        The host talked to a known C2 address; the EDR agent is healthy.
      schema:
        type: object
        properties:
          approved: {type: boolean, title: Isolate the host}
          notes: {type: string, title: Analyst notes}
        required: [approved]
  - name: isolate
    type: console
    if: "steps.review.output.approved : true"
    with:
      message: "isolating {{ event.host }}"
"""


# -- the web process -----------------------------------------------------------------------------

def serve_web(port: int, processes: int = 1) -> None:
    """What ``signoff serve [--processes N]`` runs (same app, logging and uvicorn options)
    plus the no-op route."""
    import logging

    import uvicorn

    from engine.cli import LOG_FORMAT, serve_processes

    if processes > 1:
        serve_processes("benchmarks.slack:web_app_with_noop", "127.0.0.1", port, processes)
        return
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    uvicorn.run(with_noop(Settings.from_env()), host="127.0.0.1", port=port, log_level="info")


def web_app_with_noop() -> Any:
    """The app factory each process of ``serve_web(port, processes > 1)`` builds."""
    from engine.cli import built_in_process

    return built_in_process(with_noop)


def with_noop(settings: Settings) -> Any:
    """The web app ``signoff serve`` serves, plus the no-op route."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from engine.cli import build_web_app

    async def noop(request: Request) -> Response:
        return Response(status_code=200)

    app = build_web_app(settings)
    app.router.routes.append(Route(NOOP_PATH, noop, methods=["GET", "POST"]))
    return app


# -- everything the benchmark starts ------------------------------------------------------------

class Stack:
    """Redis, the emulator, the web process, workers and load processes, and stopping them."""

    def __init__(self) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="signoff-bench-slack-"))
        self.redis: EmbeddedRedis | None = None
        self.redis_url = ""
        self.emulator: SlackEmulator | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self.web_url = ""
        self.workers: list[subprocess.Popen[bytes]] = []
        self.load: LoadGenerator | None = None

    def start(self, *, workers: int, load_processes: int, client: str,
              posting_limit: PostingLimit | None = None,
              method_limits: MethodLimits | None = None,
              env: dict[str, str] | None = None, tls: bool = False,
              web_processes: int = 1, worker_command: Sequence[str] = (),
              worker_start: float = 30.0) -> None:
        """``web_processes``: as ``signoff serve --processes``; ``worker_command``: what runs
        each worker instead of ``python -m engine.cli`` (followed by ``worker --name ...``),
        given ``worker_start`` seconds to register; ``posting_limit``,
        ``method_limits``: the emulator's (default off: clicks are measured here, not
        Slack's limits); ``env`` adds to the processes' environment (default: no digests,
        every review gets the message the clicks press); ``tls``: the emulator over HTTPS, as
        slack.com is, its certificate from a CA made for the run, which the web process and
        the workers trust (``SSL_CERT_FILE``)."""
        self.redis_url = os.environ.get("REDIS_URL") or ""
        if not self.redis_url:
            self.redis = EmbeddedRedis().start()
            self.redis_url = self.redis.url
        connect(self.redis_url).flushdb()
        certificate = None
        if tls:
            ca, cert, key = make_tls(self.logs, host="localhost")
            certificate = (str(cert), str(key))
            env = {**(env or {}), "SSL_CERT_FILE": str(ca)}
        self.emulator = SlackEmulator(posting_limit=posting_limit or PostingLimit.off(),
                                      method_limits=method_limits or MethodLimits.off(),
                                      tls=certificate).start()
        env = {**os.environ, "SIGNOFF_SLACK_DIGEST_AFTER": "0", **(env or {}),
               "REDIS_URL": self.redis_url,
               "SLACK_BOT_TOKEN": self.emulator.bot_token,
               "SLACK_SIGNING_SECRET": self.emulator.signing_secret,
               "SLACK_API_URL": self.emulator.api_url,
               "SIGNOFF_SLACK_CHANNEL": CHANNEL,
               "SIGNOFF_API_TOKEN": "bench-" + os.urandom(8).hex(),
               "SIGNOFF_WORKFLOWS": str(self.logs)}
        env.pop("SLACK_APP_TOKEN", None)
        port = free_port()
        self.web = self._spawn([sys.executable, __file__, "--serve", str(port),
                                "--serve-processes", str(web_processes)], env, "web")
        self.web_url = f"http://127.0.0.1:{port}"
        command = list(worker_command) or [sys.executable, "-m", "engine.cli"]
        for n in range(workers):
            self.workers.append(self._spawn(
                [*command, "worker", "--name", f"bench-{n}-{port}"], env, f"worker-{n}"))
        self.load = LoadGenerator(load_processes, client=client)
        self.load.start()
        self._wait_for_web()
        self._wait_for_workers(workers, worker_start)

    def _spawn(self, argv: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        try:
            # A session of its own, so its whole group (RQ's scheduler too) is stopped together.
            return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()

    def _wait_for_web(self) -> None:
        assert self.web is not None
        deadline = time.monotonic() + 30
        while True:
            if self.web.poll() is not None:
                raise RuntimeError(f"the web process exited; see {self.logs}/web.log")
            try:
                if httpx.get(self.web_url + NOOP_PATH, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the web process did not listen; see {self.logs}/web.log")
            time.sleep(0.05)

    def _wait_for_workers(self, count: int, seconds: float) -> None:
        from rq import Worker

        client = connect(self.redis_url)
        deadline = time.monotonic() + seconds
        while Worker.count(connection=client) < count:
            for n, worker in enumerate(self.workers):
                if worker.poll() is not None:
                    raise RuntimeError(f"a worker exited; see {self.logs}/worker-{n}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start; see {self.logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        processes = [p for p in [*self.workers, self.web] if p is not None]
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # After Ctrl-C, which our redis-server gets too, a worker retries Redis forever.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.load is not None:
            self.load.close()
        if self.emulator is not None:
            self.emulator.stop()
        if self.redis is not None:
            self.redis.close()


# -- building the clicks ------------------------------------------------------------------------

class PreparingDriver(SlackDriver):
    """A SlackDriver that keeps the requests it would send instead of sending them.

    Its own code builds each payload and signs it; its HTTP client is swapped for one
    that records the bytes and headers, to be sent later by the load processes.
    """

    _SET_BY_HTTPX = {"host", "accept", "accept-encoding", "connection", "user-agent",
                     "content-length"}

    def __init__(self, emulator: SlackEmulator, app_url: str) -> None:
        super().__init__(emulator, app_url)
        self._http.close()
        self._http = httpx.Client(transport=httpx.MockTransport(self._keep))
        self.prepared: list[PreparedRequest] = []

    def _keep(self, request: httpx.Request) -> httpx.Response:
        headers = tuple((k, v) for k, v in request.headers.items()
                        if k.lower() not in self._SET_BY_HTTPX)
        self.prepared.append(PreparedRequest(request.method, str(request.url), request.content,
                                             headers))
        return httpx.Response(200)


def prepare_clicks(driver: PreparingDriver, engine: Engine,
                   ids: Sequence[str]) -> list[PreparedRequest]:
    """CLICKER's Approve click on each execution's posted review, signed, not sent."""
    clicks = []
    for execution_id in ids:
        delivery = load_delivery(engine, execution_id, "review")
        assert delivery is not None and delivery.posts, execution_id
        post = delivery.posts[0]
        driver.click(CLICKER, (post.channel, post.ts), ACTION_APPROVE)
        clicks.append(driver.prepared[-1])
    return clicks


def at_noop(requests: Sequence[PreparedRequest], base_url: str, count: int) -> list[PreparedRequest]:
    """The same bodies and headers, sent to the no-op route."""
    return [PreparedRequest(r.method, base_url + NOOP_PATH, r.body, r.headers)
            for r in (requests[n % len(requests)] for n in range(count))]


# -- waiting ------------------------------------------------------------------------------------

def wait_until(check: Callable[[], bool], what: str, timeout: float = SETTLE_TIMEOUT,
               poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def wait_posted(rt: Runtime, ids: Sequence[str]) -> None:
    left = set(ids)

    def posted() -> bool:
        for execution_id in list(left):
            delivery = load_delivery(rt.engine, execution_id, "review")
            if delivery is not None and delivery.posts:
                left.discard(execution_id)
        return not left

    wait_until(posted, f"{len(ids)} reviews to be posted")


def wait_settled(rt: Runtime, stack: Stack, ids: Sequence[str], updates: int) -> None:
    """Every run finished, ``updates`` review messages updated, both queues empty."""
    emulator = stack.emulator
    assert emulator is not None
    left = list(ids)
    queues = [Queue(rt.settings.queue, connection=rt.store.redis),
              Queue(SLACK_QUEUE, connection=rt.store.redis)]

    def settled() -> bool:
        # Runs finish about in click order: look at the oldest unfinished one only, so that
        # polling (this process is the emulator too) takes no CPU from the workers measured.
        while left and rt.engine.get(left[0]).status.is_terminal:
            left.pop(0)
        return (not left and len(emulator.calls_to("chat.update")) >= updates
                and all(q.count == 0 and q.started_job_registry.count == 0 for q in queues))

    wait_until(settled, f"{len(ids)} runs to finish")


# -- measuring ----------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """The live children of ``pid`` (the processes of ``serve --processes``), from /proc."""
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of processes and their reaped children, from /proc (0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Phase:
    samples: list[Sample]
    wall: float
    cpu: dict[str, float]  # CPU time / wall time, per group of processes (1.0: one core)

    def latencies(self) -> list[float]:
        return [s.latency for s in self.samples]

    @property
    def rate(self) -> float:
        return len(self.samples) / self.wall


def web_cpu(phase: Phase) -> float:
    """The web processes' CPU time per request of ``phase`` (seconds): what a request costs
    the web tier, which the queueing behind the requests in flight does not enter (the GIL
    changing hands between a process's threads does)."""
    return phase.cpu["web"] * phase.wall / len(phase.samples)


def measure(stack: Stack, requests: Sequence[PreparedRequest], concurrency: int) -> Phase:
    assert stack.load is not None and stack.web is not None
    groups = {"web": [stack.web.pid, *children(stack.web.pid)], "workers": [w.pid for w in stack.workers],
              "emulator": [os.getpid()],  # it runs in this process
              "load": stack.load.pids}
    if stack.redis is not None and stack.redis.process is not None:
        groups["redis"] = [stack.redis.process.pid]
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    started = time.perf_counter()
    samples = stack.load.run(requests, concurrency)
    wall = time.perf_counter() - started
    cpu = {name: (cpu_seconds(pids) - before[name]) / wall for name, pids in groups.items()}
    failed = [s for s in samples if s.status != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(samples)} requests failed, e.g. "
                           f"{failed[0].status} {failed[0].error}")
    return Phase(samples, wall, cpu)


def next_step_latencies(rt: Runtime, ids: Sequence[str], clicks: Sequence[Sample]) -> list[float]:
    """From each click's send time to the step.started event of the step after the review."""
    latencies = []
    for execution_id, click in zip(ids, clicks, strict=True):
        events = [e.event for e in rt.engine.audit_entries(execution_id)]
        decided = next(e for e in events if e["type"] == "step.decided")
        assert decided["actor"]["id"] == CLICKER and decided["outcome"] == "approved", decided
        started = next(e for e in events if e["type"] == "step.started" and e["step"] == NEXT_STEP)
        latencies.append(datetime.fromisoformat(started["at"]).timestamp() - click.sent_at)
    return latencies


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``p`` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


# -- the run ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Results:
    reviews: int
    concurrency: int
    workers: int
    load_processes: int
    warmup: int
    post_seconds: float
    noop: Phase
    clicks: Phase
    next_step: list[float]
    worker_cpu: float  # seconds per click: deciding, continuing the run, updating the message
    delivery_bytes: float  # the bot's record of a posted review, on the execution
    lone: Lone | None = None


@dataclass(frozen=True)
class Lone:
    """Clicks sent one at a time, each after the last one's run finished and its message was
    updated, against bare RQ no-op jobs enqueued one at a time on the same worker."""

    count: int
    click_cpu: float  # the worker's CPU seconds per lone click
    job_cpu: float  # the worker's CPU seconds per lone bare RQ job
    stolen: str = ""  # the hypervisor's share of the CPUs meanwhile (Stolen.text)

    @property
    def ratio(self) -> float:
        return self.click_cpu / self.job_cpu


class LoneSender:
    """Sends a lone click (and waits until its run finished and its message was rewritten)
    or enqueues a lone bare RQ no-op job (and waits until it ran), then leaves the worker
    ``pause`` seconds to get back to its blocking dequeue."""

    def __init__(self, stack: Stack, rt: Runtime, *, pause: float = LONE_PAUSE,
                 timeout: float = SETTLE_TIMEOUT) -> None:
        assert stack.emulator is not None
        self.emulator = stack.emulator
        self.rt = rt
        self.pause = pause
        self.timeout = timeout
        self.queue = Queue(rt.settings.queue, connection=rt.store.redis)
        self.client = httpx.Client(timeout=10)

    def click(self, execution_id: str, request: PreparedRequest) -> None:
        updates = len(self.emulator.calls_to("chat.update"))
        answer = self.client.request(request.method, request.url, content=request.body,
                                     headers=dict(request.headers))
        if answer.status_code != 200:
            raise RuntimeError(f"a lone click got {answer.status_code}")
        wait_until(lambda: self.rt.engine.get(execution_id).status.is_terminal
                   and len(self.emulator.calls_to("chat.update")) > updates,
                   "a lone click to settle", timeout=self.timeout, poll=LONE_POLL)
        time.sleep(self.pause)

    def job(self) -> None:
        job = self.queue.enqueue("benchmarks.noop.noop", result_ttl=0)
        wait_until(lambda: not self.rt.store.redis.exists(job.key), "a bare job to run",
                   timeout=self.timeout, poll=LONE_POLL)
        time.sleep(self.pause)

    def close(self) -> None:
        self.client.close()


def lone_clicks(stack: Stack, rt: Runtime, ids: Sequence[str],
                clicks: Sequence[PreparedRequest]) -> Lone:
    """The worker's CPU per click when clicks come alone (as people click), and per bare RQ
    no-op job enqueued alone on the same worker, in alternating rounds."""
    assert stack.workers
    pids = [w.pid for w in stack.workers]
    sender = LoneSender(stack, rt)
    click_cpu = job_cpu = 0.0
    stolen = Stolen()
    try:
        sender.job()  # warm: the no-op's import
        # Alternate in small blocks, so that the other processes' load, which comes and goes
        # on a shared machine, weighs on both alike.
        for start in range(0, len(ids), LONE_BLOCK):
            part = slice(start, start + LONE_BLOCK)
            before = run_time(pids)
            for execution_id, request in zip(ids[part], clicks[part], strict=True):
                sender.click(execution_id, request)
            click_cpu += run_time(pids) - before
            before = run_time(pids)
            for _ in ids[part]:
                sender.job()
            job_cpu += run_time(pids) - before
    finally:
        sender.close()
    return Lone(len(ids), click_cpu / len(ids), job_cpu / len(ids), stolen.text())


def run_time(pids: Sequence[int]) -> float:
    """CPU seconds the threads of processes have run, to the nanosecond (the scheduler's
    count, /proc/PID/task/*/schedstat), where cpu_seconds counts 10 ms ticks; cpu_seconds
    where the scheduler's count is not to be had."""
    total = 0
    try:
        for pid in pids:
            for task in Path(f"/proc/{pid}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return cpu_seconds(pids)
    return total / 1e9


def stack_runtime(stack: Stack) -> Runtime:
    """A runtime on the stack's Redis, for starting runs and reading them (no notifier)."""
    return build_runtime(Settings(redis_url=stack.redis_url), connect(stack.redis_url),
                         notifier=NullNotifier())


def start_one_click(rt: Runtime, count: int, offset: int = 0) -> list[str]:
    """``count`` runs of ONE_CLICK, hosts numbered from ``offset``; their ids."""
    workflow = parse_workflow(ONE_CLICK)
    return [rt.engine.run(workflow, {"host": f"web-{n:05d}", "rule": "Outbound C2 beacon"})
            for n in range(offset, offset + count)]


def bench(stack: Stack, *, reviews: int, concurrency: int, warmup: int,
          lone: int = 0) -> Results:
    assert stack.emulator is not None
    rt = stack_runtime(stack)
    t0 = time.perf_counter()
    warm_ids = start_one_click(rt, warmup)
    ids = start_one_click(rt, reviews, warmup)
    lone_ids = start_one_click(rt, lone, warmup + reviews)
    wait_posted(rt, [*warm_ids, *ids, *lone_ids])
    post_seconds = time.perf_counter() - t0
    assert len(stack.emulator.workspace.messages(CHANNEL)) == warmup + reviews + lone
    # What the bot keeps per posted review (where it posted, who may decide, what it showed).
    pipe = rt.store.redis.pipeline()
    for execution_id in ids:
        pipe.hstrlen(keys.execution(execution_id), keys.annotation_field(annotation_key('review')))
    delivery_bytes = sum(pipe.execute()) / len(ids)

    driver = PreparingDriver(stack.emulator, stack.web_url + "/slack/events")
    warm_clicks = prepare_clicks(driver, rt.engine, warm_ids)
    clicks = prepare_clicks(driver, rt.engine, ids)
    lone_requests = prepare_clicks(driver, rt.engine, lone_ids)
    driver.close()
    noop = at_noop(clicks, stack.web_url, BASELINE_REQUESTS)

    measure(stack, noop[:concurrency * 10], concurrency)  # connections, code paths
    if warm_clicks:
        measure(stack, warm_clicks, concurrency)
        wait_settled(rt, stack, warm_ids, updates=warmup)

    noop_phase = measure(stack, noop, concurrency)
    workers_before = cpu_seconds([w.pid for w in stack.workers])
    click_phase = measure(stack, clicks, concurrency)
    wait_settled(rt, stack, ids, updates=warmup + reviews)
    worker_cpu = (cpu_seconds([w.pid for w in stack.workers]) - workers_before) / reviews
    completed = sum(rt.engine.get(i).status is ExecutionStatus.COMPLETED for i in ids)
    assert completed == reviews, f"only {completed} of {reviews} runs completed"
    lone_result = lone_clicks(stack, rt, lone_ids, lone_requests) if lone else None
    completed = sum(rt.engine.get(i).status is ExecutionStatus.COMPLETED for i in lone_ids)
    assert completed == lone, f"only {completed} of {lone} lone clicks' runs completed"
    return Results(reviews, concurrency, len(stack.workers), stack.load.size if stack.load else 0,
                   warmup, post_seconds, noop_phase, click_phase,
                   next_step_latencies(rt, ids, click_phase.samples), worker_cpu,
                   delivery_bytes, lone_result)


def report(r: Results) -> None:
    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.1f} ms"

    def mark(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    def row(name: str, p50: str, p99: str, rate: str = "", cpu: str = "", target: str = "") -> None:
        print(f"{name:34}{p50:>10}{p99:>11}{rate:>8}{cpu:>10}   {target}")

    def cpu_per_request(phase: Phase) -> str:
        return ms(web_cpu(phase))

    noop, clicks = r.noop.latencies(), r.clicks.latencies()
    ack_p99 = percentile(clicks, 0.99)
    ratio = ack_p99 / percentile(noop, 0.99)
    next_p99 = percentile(r.next_step, 0.99)
    print(f"{r.reviews} one-click reviews (+{r.warmup} warm-up) posted in {r.post_seconds:.1f} s; "
          f"{r.concurrency} requests in flight from {r.load_processes} load processes; "
          f"{r.workers} workers; {os.cpu_count()} CPUs")
    row("", "p50", "p99", "req/s", "web CPU", "target")
    row(f"trivial route (POST {NOOP_PATH})", ms(percentile(noop, 0.5)), ms(percentile(noop, 0.99)),
        f"{r.noop.rate:.0f}", cpu_per_request(r.noop), f"({len(noop)} requests, the clicks' bodies)")
    row("click -> ack (POST /slack/events)", ms(percentile(clicks, 0.5)), ms(ack_p99),
        f"{r.clicks.rate:.0f}", cpu_per_request(r.clicks),
        f"p99 < 3000 ms (Slack's limit)  {mark(ack_p99 < 3.0)}")
    row("ack / trivial route", f"{percentile(clicks, 0.5) / percentile(noop, 0.5):.1f}x",
        f"{ratio:.1f}x", "", "", f"p99 <= {ACK_RATIO_TARGET:.1f}x  {mark(ratio <= ACK_RATIO_TARGET)}")
    row("click -> next step started", ms(percentile(r.next_step, 0.5)), ms(next_p99), "", "",
        f"p99 < {NEXT_STEP_TARGET * 1e3:.0f} ms  {mark(next_p99 < NEXT_STEP_TARGET)}")
    print(f"workers' CPU per click, from the click to its run finished and message updated: "
          f"{ms(r.worker_cpu)}")
    if r.lone is not None:
        print(f"worker CPU per lone click ({r.lone.count}, one at a time): {ms(r.lone.click_cpu)}; "
              f"per bare RQ no-op job alone on the same worker: {ms(r.lone.job_cpu)}; "
              f"ratio {r.lone.ratio:.2f}   (target <= {LONE_TARGET:.1f})  "
              f"{mark(r.lone.ratio <= LONE_TARGET)}; load average {os.getloadavg()[0]:.1f}, "
              f"{r.lone.stolen}")
    print(f"the bot's record of a posted review (n:slack:review on the execution): "
          f"{r.delivery_bytes:.0f} B of JSON")
    for label, phase in (("trivial route", r.noop), ("clicks", r.clicks)):
        shares = ", ".join(f"{name} {share * 100:.0f}%" for name, share in phase.cpu.items())
        print(f"CPU (share of one core) during the {label + ':':15}{shares}")
    # With requests always waiting, the web process should use a whole core in both phases.
    starved = [label for label, phase in (("trivial route", r.noop), ("clicks", r.clicks))
               if phase.cpu["web"] < STARVED_BELOW]
    if starved:
        print(f"warning: the web process had less than {STARVED_BELOW:.0%} of a core during the "
              f"{' and the '.join(starved)} while requests were waiting: something else is using "
              f"the CPUs (load average {os.getloadavg()[0]:.1f}); figures are not reliable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reviews", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32, help="clicks in flight (20-50)")
    parser.add_argument("--workers", type=int, default=1, help="signoff worker processes")
    parser.add_argument("--load-processes", type=int, default=4)
    parser.add_argument("--client", choices=CLIENTS, default="raw",
                        help="the load processes' HTTP client (default: raw sockets, the cheapest)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="extra reviews clicked first, not measured (default: --concurrency)")
    parser.add_argument("--lone", type=int, default=100,
                        help="clicks then sent one at a time, for the worker's CPU per lone "
                             "click against a bare RQ job's (0: none)")
    parser.add_argument("--tls", action="store_true",
                        help="the Slack emulator over HTTPS, as slack.com is (default: HTTP)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-processes", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_web(args.serve, args.serve_processes)
        return 0

    return on_stack("benchmarks/slack.py", lambda stack: stack.start(
        workers=args.workers, load_processes=args.load_processes, client=args.client,
        tls=args.tls),
        lambda stack: bench(stack, reviews=args.reviews, concurrency=args.concurrency,
                            warmup=args.concurrency if args.warmup is None else args.warmup,
                            lone=args.lone), report)


def on_stack(name: str, start: Callable[[Stack], None], run: Callable[[Stack], Any],
             report: Callable[[Any], None]) -> int:
    """Start a :class:`Stack` with ``start``, measure with ``run``, stop everything (also on
    Ctrl-C or SIGTERM, and when the measurement fails: its logs are kept and named), then
    ``report`` what ``run`` returned; the process's exit status."""

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    stack = Stack()
    failed = True
    try:
        start(stack)
        results = run(stack)
        failed = False
    except KeyboardInterrupt:
        failed = False
        print("interrupted; stopping everything", file=sys.stderr)
        return 130
    except (RuntimeError, AssertionError) as exc:
        print(f"{name}: {exc}; logs in {stack.logs}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        if not failed:
            shutil.rmtree(stack.logs, ignore_errors=True)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
