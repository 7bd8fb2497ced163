"""The HTTP API (Starlette): run workflows, read executions, resume, cancel, read the audit trail.

Every ``/api`` route needs ``Authorization: Bearer $SIGNOFF_API_TOKEN``. Errors are
JSON: ``{"error": code, "message": text, ...details}``. Endpoints are plain
functions, which Starlette runs in its thread pool, so one slow Redis call never
stalls the event loop.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.definition.loader import WorkflowCatalog
from engine.errors import (
    ActorNotAllowed,
    AlreadyDecided,
    CannotEscalate,
    Contention,
    ExecutionNotFound,
    InputInvalid,
    NotWaiting,
    SignoffError,
    StoreUnavailable,
    WorkflowInputsInvalid,
    WorkflowInvalid,
    WorkflowNotFound,
)
from engine.notify import Actor
from engine.run.engine import Engine
from engine.state.execution import ExecutionState

MAX_PAGE = 200


@dataclass(frozen=True)
class WebExtension:
    """What a ``signoff.web`` plug-in adds to the web process: routes, and what to close
    when it stops (the bot's asyncio Redis client)."""

    routes: Sequence[BaseRoute] = ()
    on_shutdown: Sequence[Callable[[], Awaitable[Any]]] = ()


def build_api(engine: Engine, catalog: WorkflowCatalog, *, api_token: str | None,
              workers_seen: Callable[[], int] | None = None,
              extensions: Sequence[WebExtension] = ()) -> Starlette:
    """The ASGI app; ``api_token=None`` serves /api without auth (``--insecure-no-auth``)."""

    def run_workflow(request: Request) -> Response:
        name = request.path_params["name"]
        event = _json_body(request, default={})
        workflow = catalog.get(name)
        requested_by = request.headers.get("x-signoff-requested-by")
        execution_id = engine.run(workflow, event, requested_by=requested_by,
                                  actor=_actor(request))
        return JSONResponse({"executionId": execution_id, "workflow": workflow.name,
                             "status": "PENDING"}, status_code=201,
                            headers={"Location": f"/api/workflowExecutions/{execution_id}"})

    def get_execution(request: Request) -> Response:
        return JSONResponse(execution_view(engine.get(request.path_params["id"])))

    def list_executions(request: Request) -> Response:
        status = request.query_params.get("status") or None
        workflow = request.query_params.get("workflow") or None
        page = _int_param(request, "page", 1, minimum=1)
        size = _int_param(request, "size", 50, minimum=1, maximum=MAX_PAGE)
        if status is not None and status not in _STATUSES:
            return _error(400, "bad_request", f"unknown status {status!r}; one of "
                          f"{', '.join(sorted(_STATUSES))}")
        found, total = engine.list_executions(status=status, workflow=workflow,
                                   offset=(page - 1) * size, limit=size)
        return JSONResponse({
            "results": [{"id": s.id, "workflow": s.workflow, "status": s.status,
                         "startedAt": s.started_at, "finishedAt": s.finished_at} for s in found],
            "page": page, "size": size, "total": total,
        })

    def resume_elastic(request: Request) -> Response:
        return _resume(request, _json_body(request))

    def resume_wrapped(request: Request) -> Response:
        body = _json_body(request)
        if not isinstance(body, dict) or "input" not in body:
            return _error(400, "bad_request", 'the body must be {"input": {...}}')
        return _resume(request, body["input"])

    def _resume(request: Request, input_: Any) -> Response:
        execution_id = request.path_params["id"]
        result = engine.resume(execution_id, input_, _actor(request),
                               step=request.query_params.get("step"))
        state = engine.get(execution_id)
        if result.decision is None:  # a quorum approval: recorded, more are needed
            return JSONResponse({"executionId": execution_id, "status": state.status.value,
                                 "outcome": "approval_recorded", "approvals": result.approvals,
                                 "required": result.required}, status_code=202)
        return JSONResponse({"executionId": execution_id, "status": state.status.value,
                             "step": result.decision.step, "outcome": result.decision.outcome,
                             "decidedBy": result.decision.actor, "decidedAt": result.decision.at})

    def cancel_execution(request: Request) -> Response:
        execution_id = request.path_params["id"]
        body = _json_body(request, default={})
        reason = str(body.get("reason") or "") if isinstance(body, dict) else ""
        engine.cancel(execution_id, _actor(request), reason)
        return JSONResponse({"executionId": execution_id, "status": "CANCELLED"})

    def get_audit(request: Request) -> Response:
        execution_id = request.path_params["id"]
        entries = engine.audit_entries(execution_id)
        check = engine.verify_audit(execution_id)
        return JSONResponse({
            "executionId": execution_id,
            "verified": check.ok, "problem": check.problem or None,
            "events": [{"id": e.id, "hash": e.hash, **e.event} for e in entries],
        })

    def healthz(request: Request) -> Response:
        redis_ok = engine.store.ping()
        workers = None
        if redis_ok and workers_seen is not None:
            try:
                workers = workers_seen()
            except Exception:
                workers = None
        body = {"status": "ok" if redis_ok else "unavailable", "redis": redis_ok,
                "workers": workers}
        return JSONResponse(body, status_code=200 if redis_ok else 503)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/api/workflows/{name}/run", run_workflow, methods=["POST"]),
        Route("/api/workflowExecutions", list_executions),
        Route("/api/workflowExecutions/{id}", get_execution),
        Route("/api/workflowExecutions/{id}/resume", resume_elastic, methods=["POST"]),
        Route("/api/workflows/executions/{id}/resume", resume_wrapped, methods=["POST"]),
        Route("/api/workflowExecutions/{id}/cancel", cancel_execution, methods=["POST"]),
        Route("/api/workflowExecutions/{id}/audit", get_audit),
        *(route for extension in extensions for route in extension.routes),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for extension in extensions:
            for close in extension.on_shutdown:
                await close()

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(BearerAuth, token=api_token), Middleware(BodyReader)],
        exception_handlers={SignoffError: _handle_error},  # type: ignore[dict-item]
    )


def execution_view(state: ExecutionState) -> dict[str, Any]:
    """An execution as the API shows it."""
    steps = {}
    ordered = sorted(state.results.items(),
                     key=lambda item: item[1].started_at or item[1].finished_at or "")
    for path, result in ordered:
        view: dict[str, Any] = {"status": result.status.value, "output": result.output,
                                "error": result.error, "startedAt": result.started_at,
                                "finishedAt": result.finished_at}
        if result.attempts:
            view["attempts"] = result.attempts
        if result.resumed_by is not None:
            view["resumedBy"] = result.resumed_by
            view["resumedAt"] = result.resumed_at
        steps[path] = view
    waiting = None
    if state.waiting is not None:
        w = state.waiting
        waiting = {"step": w.step, "path": w.path, "type": w.step_type, "message": w.message,
                   "messageSha256": w.message_sha256, "schema": w.schema,
                   "approvers": list(w.approvers), "since": w.since, "dueAt": w.due_at}
    return {"id": state.id, "workflow": state.workflow, "status": state.status.value,
            "startedAt": state.started_at, "finishedAt": state.finished_at,
            "requestedBy": state.requested_by, "error": state.error,
            "steps": steps, "waitingFor": waiting}


class BearerAuth:
    """Require ``Authorization: Bearer <token>`` on /api routes (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self.token is not None
                and scope["path"].startswith("/api/")):
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, given = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                response = _error(401, "unauthorized",
                                  "send Authorization: Bearer <SIGNOFF_API_TOKEN>")
                response.headers["WWW-Authenticate"] = 'Bearer realm="signoff"'
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BadRequest(SignoffError):
    pass


_STATUSES = {"PENDING", "RUNNING", "WAITING", "WAITING_FOR_INPUT", "COMPLETED", "FAILED",
             "CANCELLED", "TIMED_OUT"}


def _json_body(request: Request, default: Any = None) -> Any:
    raw = request.scope.get("_signoff_body")
    if raw is None:
        raise _BadRequest("could not read the body")
    if not raw.strip():
        if default is not None:
            return default
        raise _BadRequest("the body is empty; send JSON")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _BadRequest(f"the body is not valid JSON: {exc}") from exc


def _actor(request: Request) -> Actor:
    name = request.headers.get("x-signoff-actor")
    if name:
        return Actor(id=name, name=name, source="api")
    return Actor(id="api", name="api", source="api")


def _int_param(request: Request, name: str, default: int, *, minimum: int,
               maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise _BadRequest(f"{name} must be between {minimum} and {maximum or 'any'}")
    return value


def _error(http_status: int, code: str, message: str, **details: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **details}, status_code=http_status)


async def _handle_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, _BadRequest):
        return _error(400, "bad_request", str(exc))
    if isinstance(exc, ExecutionNotFound):
        return _error(404, "not_found", str(exc), executionId=exc.execution_id)
    if isinstance(exc, WorkflowNotFound):
        return _error(404, "workflow_not_found", str(exc))
    if isinstance(exc, WorkflowInvalid):
        return _error(422, "workflow_invalid", "the workflow file has problems",
                      problems=[str(p) for p in exc.problems])
    if isinstance(exc, AlreadyDecided):
        return _error(409, "already_decided", str(exc), executionId=exc.execution_id,
                      step=exc.step, decidedBy=exc.by, decidedAt=exc.at, outcome=exc.outcome)
    if isinstance(exc, NotWaiting):
        return _error(409, "not_waiting", str(exc), executionId=exc.execution_id,
                      status=exc.status)
    if isinstance(exc, WorkflowInputsInvalid):
        return _error(422, "inputs_invalid", str(exc), workflow=exc.workflow, problems=exc.problems)
    if isinstance(exc, InputInvalid):
        return _error(422, "input_invalid", str(exc), violations=exc.violations)
    if isinstance(exc, ActorNotAllowed):
        return _error(403, "not_allowed", str(exc))
    if isinstance(exc, Contention):
        return _error(409, "contention", str(exc), executionId=exc.execution_id)
    if isinstance(exc, CannotEscalate):
        return _error(409, "cannot_escalate", str(exc), executionId=exc.execution_id)
    if isinstance(exc, StoreUnavailable):
        return _error(503, "unavailable", "Redis is unreachable; try again shortly")
    return _error(400, "bad_request", str(exc))


class BodyReader:
    """Read the request body up front (async) so sync endpoints can parse it; caps its size."""

    def __init__(self, app: ASGIApp, limit: int = 1_048_576) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _error(413, "too_large", f"the body is over {self.limit} bytes")(
                    scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        scope["_signoff_body"] = b"".join(chunks)
        replay = [{"type": "http.request", "body": scope["_signoff_body"], "more_body": False}]

        async def replay_receive() -> Any:
            return replay.pop() if replay else await receive()

        await self.app(scope, replay_receive, send)
