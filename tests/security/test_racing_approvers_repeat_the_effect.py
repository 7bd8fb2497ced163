"""Attack: approvers (or one approver, clicking from several devices) press Approve at the
same moment on a review whose next step has an effect (isolate the host), hoping the host
is isolated more than once, or that a losing click's run leaves something behind. Each
click's worker continues the run before its decision is written (Runner.continue_decided):
only the write that carries the winning decision lands. The isolation runs once, one
decision is recorded, every other clicker is told who decided, and the trail verifies.
Real Redis, a real HTTP target, the clicks in threads as in concurrent workers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import AlreadyDecided
from engine.notify import Actor
from engine.state import audit, keys
from engine.state.execution import ExecutionStatus
from tests.support.http_target import PostTarget

APPROVERS = [f"U0APPROVER{n}" for n in range(12)]


class Isolator:
    """The host-isolation service the run calls: it counts the isolations it was asked for."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        self.service = PostTarget(self._answer)
        self.url = self.service.url

    def _answer(self, path: str, body: bytes) -> tuple[int, bytes]:
        with self.lock:
            self.calls += 1
        return 200, b'{"isolated": true}'

    def close(self) -> None:
        self.service.close()


@pytest.fixture
def isolator():
    service = Isolator()
    yield service
    service.close()


def workflow(url: str) -> str:
    return f"""
name: racing-isolation
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [{", ".join(APPROVERS)}]
      message: "Isolate {{{{ event.host }}}}?"
  - name: note
    type: data.set
    with: {{approved_by_click: true}}
  - name: isolate
    type: http
    with: {{method: POST, url: "{url}/isolate", body: {{host: "{{{{ event.host }}}}"}}}}
"""


def test_racing_approvals_isolate_the_host_once(runtime, work, isolator, redis_client):
    execution_id = runtime.engine.run(parse_workflow(workflow(isolator.url)),
                                      {"host": "web-1"})
    work()
    barrier = threading.Barrier(len(APPROVERS))

    def click(user: str) -> tuple[str, str]:
        actor = Actor(id=user, name=user.lower(), source="slack")
        barrier.wait()
        try:
            result = runtime.engine.resume(execution_id, {"approved": True}, actor,
                                           step="review", then=runtime.runner.continue_decided)
        except AlreadyDecided as exc:
            return "told", exc.by
        assert result.continued is not None
        return "decided", user

    with ThreadPoolExecutor(len(APPROVERS)) as pool:
        outcomes = list(pool.map(click, APPROVERS))
    work()  # anything left to a queued segment (a lease held at the moment of a write)

    [winner] = [who for kind, who in outcomes if kind == "decided"]
    assert all(by == winner.lower() for kind, by in outcomes if kind == "told")
    assert isolator.calls == 1
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert [d.actor["id"] for d in state.decisions.values()] == [winner]
    kinds = [e.event for e in runtime.engine.audit_entries(execution_id)]
    assert [e["type"] for e in kinds].count(audit.DECIDED) == 1
    assert [e["type"] for e in kinds].count(audit.COMPLETED) == 1
    assert [e.get("step") for e in kinds if e["type"] == audit.STEP_STARTED] == [
        "note", "isolate"]
    assert runtime.engine.verify_audit(execution_id).ok
    assert redis_client.get(keys.lease(execution_id)) is None
