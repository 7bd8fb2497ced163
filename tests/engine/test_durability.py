"""Durability and concurrency: racing reviewers, killed workers, Redis restarts, timeouts."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import AlreadyDecided
from engine.notify import Actor, NullNotifier
from engine.settings import Settings
from engine.state.embedded_redis import EmbeddedRedis
from engine.state.execution import ExecutionStatus, StepStatus
from engine.state.store import connect
from engine.worker.runtime import build_runtime
from tests.support.http_target import PostTarget
from tests.support.services import reviewer_answer, wait_until

WAITING = """
name: gate
settings:
  timeout: {timeout}
steps:
  - name: review
    type: waitForInput
    with:
      message: Approve?
      schema:
        type: object
        properties: {{approved: {{type: boolean}}}}
        required: [approved]
  - name: after
    type: console
    with: {{message: "decided {{{{ steps.review.output.approved }}}}"}}
"""


def gate(timeout: str = "1h"):
    return parse_workflow(WAITING.format(timeout=timeout))


def test_twenty_concurrent_resumes_produce_exactly_one_decision(runtime, work):
    execution_id = runtime.engine.run(gate(), {})
    work()
    barrier = threading.Barrier(20)

    def decide(n: int):
        barrier.wait()
        try:
            runtime.engine.resume(execution_id, {"approved": n % 2 == 0},
                                  Actor(id=f"U{n:04d}", name=f"user{n}", source="slack"))
            return ("won", n)
        except AlreadyDecided as exc:
            return ("lost", exc.by)

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(decide, range(20)))
    winners = [n for kind, n in outcomes if kind == "won"]
    assert len(winners) == 1
    winner = winners[0]
    assert all(by == f"user{winner}" for kind, by in outcomes if kind == "lost")
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert reviewer_answer(state.results["review"].output) == {"approved": winner % 2 == 0}
    decided = [e for e in runtime.engine.audit_entries(execution_id)
               if e.event["type"] == "step.decided"]
    assert len(decided) == 1
    assert runtime.engine.verify_audit(execution_id).ok


class Target:
    """A local HTTP service the `http` steps call; it counts hits per path and can stall or fail."""

    def __init__(self):
        self.hits: dict[str, int] = {}
        self.fail_first: dict[str, int] = {}
        self.stall: set[str] = set()
        self.release = threading.Event()
        self.service = PostTarget(self._answer)
        self.url = self.service.url

    def _answer(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.hits[path] = self.hits.get(path, 0) + 1
        if path in self.stall and self.hits[path] == 1:
            self.release.wait(30)
        if self.fail_first.get(path, 0) >= self.hits[path]:
            return 503, b""
        return 200, b'{"ok": true, "path": "%s"}' % path.encode()

    def close(self):
        self.release.set()
        self.service.close()


@pytest.fixture
def target():
    t = Target()
    yield t
    t.close()


def http_chain(url: str) -> str:
    return f"""
name: chain
steps:
  - name: one
    type: http
    with: {{method: POST, url: "{url}/one", body: {{n: 1}}}}
  - name: two
    type: http
    with: {{method: POST, url: "{url}/two"}}
  - name: three
    type: http
    with: {{method: POST, url: "{url}/three"}}
  - name: four
    type: console
    with: {{message: "{{{{ steps.three.output.data.path }}}}"}}
"""


def test_worker_killed_mid_run_is_recovered_by_a_new_worker(runtime, worker_process, target):
    target.stall.add("/three")
    env = {"SIGNOFF_LEASE_SECONDS": "2", "SIGNOFF_SWEEP_SECONDS": "1"}
    first = worker_process(extra_env=env)
    execution_id = runtime.engine.run(parse_workflow(http_chain(target.url)), {})
    wait_until(lambda: target.hits.get("/three"), timeout=20, message="step three to start")
    first.kill()
    target.release.set()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.RUNNING
    assert state.results["two"].status is StepStatus.COMPLETED
    assert state.results["three"].status is StepStatus.RUNNING

    worker_process(extra_env=env)
    wait_until(lambda: runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED,
               timeout=30, message="the run to complete on the new worker")
    state = runtime.engine.get(execution_id)
    assert state.results["four"].output == "/three"
    # Completed steps were not run again; the interrupted one ran again (at-least-once).
    assert target.hits == {"/one": 1, "/two": 1, "/three": 2}
    started = [e.event for e in runtime.engine.audit_entries(execution_id)
               if e.event["type"] == "step.started" and e.event["step"] == "three"]
    assert [s.get("recovered") for s in started] == [None, True]
    assert runtime.engine.verify_audit(execution_id).ok


def test_http_step_retries_with_delay_then_succeeds(runtime, worker_process, target):
    target.fail_first["/flaky"] = 2
    workflow = parse_workflow(f"""
name: retrying
steps:
  - name: call
    type: http
    on-failure:
      retry: {{max-attempts: 3, delay: 1s}}
    with: {{method: POST, url: "{target.url}/flaky"}}
""")
    worker_process()
    execution_id = runtime.engine.run(workflow, {})
    wait_until(lambda: runtime.engine.get(execution_id).status.is_terminal, timeout=30,
               message="the run to finish")
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["call"].attempts == 3
    assert state.results["call"].output["status"] == 200
    retries = [e.event for e in runtime.engine.audit_entries(execution_id)
               if e.event["type"] == "step.retry_scheduled"]
    assert len(retries) == 2 and "503" in retries[0]["error"]


def test_http_step_fails_the_run_when_retries_run_out(runtime, work, target):
    target.fail_first["/down"] = 99
    workflow = parse_workflow(f"""
name: failing
steps:
  - name: call
    type: http
    on-failure:
      retry: {{max-attempts: 2, delay: 0s}}
    with: {{method: POST, url: "{target.url}/down"}}
  - name: never
    type: console
    with: {{message: unreachable}}
""")
    execution_id = runtime.engine.run(workflow, {})
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.FAILED
    assert state.results["call"].status is StepStatus.FAILED
    assert state.results["call"].attempts == 2
    assert "503" in (state.error or "")
    assert "never" not in state.results


def test_settings_timeout_times_out_a_waiting_run(runtime, worker_process):
    worker_process()
    execution_id = runtime.engine.run(gate("2s"), {})
    wait_until(lambda: runtime.engine.get(execution_id).status is ExecutionStatus.TIMED_OUT,
               timeout=20, message="settings.timeout to fire")
    assert runtime.engine.pending()[1] == 0
    kinds = [e.event["type"] for e in runtime.engine.audit_entries(execution_id)]
    assert kinds[-1] == "execution.timed_out"


def test_settings_timeout_does_nothing_to_a_finished_run(runtime, work):
    execution_id = runtime.engine.run(gate("1s"), {})
    work()
    runtime.engine.resume(execution_id, {"approved": True}, Actor(id="U1", name="a"))
    work()
    assert runtime.engine.expire(execution_id) is False
    assert runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED


def test_redis_restart_keeps_waiting_runs_resumable(tmp_path, worker_process):
    server = EmbeddedRedis(appendonly=True, directory=str(tmp_path)).start()
    worker = worker_process(server.url)
    try:
        client = connect(server.url)
        rt = build_runtime(Settings(redis_url=server.url), client, notifier=NullNotifier())
        ids = [rt.engine.run(gate(), {"n": n}) for n in range(5)]
        wait_until(lambda: all(rt.engine.get(i).status is ExecutionStatus.WAITING_FOR_INPUT
                               for i in ids), timeout=20, message="runs to wait")
        server.restart(hard=True)  # SIGKILL: only the append-only file survives
        assert rt.engine.pending()[1] == 5  # this client reconnected by itself
        for n, execution_id in enumerate(ids):
            rt.engine.resume(execution_id, {"approved": n % 2 == 0}, Actor(id="U1", name="a"))
        wait_until(lambda: all(rt.engine.get(i).status is ExecutionStatus.COMPLETED
                               for i in ids), timeout=40,
                   message="the same worker process to finish every run after the restart")
        assert worker.process.poll() is None, "the worker exited instead of reconnecting"
        assert all(rt.engine.verify_audit(i).ok for i in ids)
        client.close()
    finally:
        worker.stop()
        server.close()

