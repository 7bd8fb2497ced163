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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import AlreadyDecided
from engine.notify import Actor
from engine.state import audit, keys
from engine.state.execution import ExecutionStatus

APPROVERS = [f"U0APPROVER{n}" for n in range(12)]


class Isolator:
    """The host-isolation service the run calls: it counts the isolations it was asked for."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        isolator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with isolator.lock:
                    isolator.calls += 1
                body = b'{"isolated": true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
