"""The HTTP API (Starlette): run workflows, read executions, resume, cancel, read the audit trail.

Every ``/api`` route needs ``Authorization: Bearer <token>``: the operator's
(``SIGNOFF_API_TOKEN``, every scope) or one made by ``signoff token create``, which
acts as its principal within its scopes (:mod:`engine.state.tokens`). Each route names
the scope it needs; who requests a run and who decides is the token's principal, and a
header naming someone else needs ``act-as``. Errors are JSON: ``{"error": code,
"message": text, ...details}``. Endpoints are plain functions, which Starlette runs in
its thread pool, so one slow Redis call never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.definition.loader import WorkflowCatalog
from engine.errors import (
    ActAsRequired,
    ActorNotAllowed,
    AlreadyDecided,
    AlreadyEscalated,
    CannotEscalate,
    Contention,
    EscalationTargetRequired,
    ExecutionNotFound,
    InputInvalid,
    MissingScope,
    NotWaiting,
    RequesterInvalid,
    RunSkipped,
    SignoffError,
    StoreUnavailable,
    WorkflowInputsInvalid,
    WorkflowInvalid,
    WorkflowNotFound,
)
from engine.notify import Actor
from engine.run.engine import Engine
from engine.run.identity import slack_user_id
from engine.state.execution import ExecutionState, ExecutionStatus
from engine.state.tokens import OPERATOR, ApiToken, RecentTokens, digest
from engine.state.tokens import Scope as TokenScope

MAX_PAGE = 200


@dataclass(frozen=True)
class WebExtension:
    """What a ``signoff.web`` plug-in adds to the web process: routes, what to do before
    it answers (the bot's first look at what /approvals reads), and what to close when it
    stops (the bot's asyncio Redis client)."""

    routes: Sequence[BaseRoute] = ()
    on_shutdown: Sequence[Callable[[], Awaitable[Any]]] = ()
    on_startup: Sequence[Callable[[], Awaitable[Any]]] = ()


def build_api(engine: Engine, catalog: WorkflowCatalog, *, api_token: str | None,
              workers_seen: Callable[[], int] | None = None,
              extensions: Sequence[WebExtension] = ()) -> Starlette:
    """The ASGI app; ``api_token`` is the operator's token, and ``None`` serves /api
    without auth (``--insecure-no-auth``: every caller is the operator)."""

    @needs_scope(TokenScope.RUN)
    def run_workflow(request: Request) -> Response:
        name = request.path_params["name"]
        event = _json_body(request, default={})
        workflow = catalog.get(name)
        requested_by = _requester(request)
        started = engine.start(workflow, event, requested_by=requested_by,
                               actor=_actor(request), principal=caller_of(request).acts_as)
        execution_id = started.execution_id
        if started.status is ExecutionStatus.SKIPPED:
            raise RunSkipped(execution_id, workflow.name, started.group or "",
                             started.skipped_because or "dropped", started.reason or "")
        body: dict[str, Any] = {"executionId": execution_id, "workflow": workflow.name,
                                "status": started.status.value}
        if started.group is not None:
            body["concurrencyGroup"] = started.group
        if started.status is ExecutionStatus.QUEUED:
            body["position"] = started.position
        # 202: accepted, not started: it waits for a slot of its concurrency group.
        return JSONResponse(body, status_code=202 if started.status is ExecutionStatus.QUEUED
                            else 201,
                            headers={"Location": f"/api/workflowExecutions/{execution_id}"})

    @needs_scope(TokenScope.READ)
    def get_execution(request: Request) -> Response:
        return JSONResponse(execution_view(engine.get(request.path_params["id"])))

    @needs_scope(TokenScope.READ)
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

    @needs_scope(TokenScope.DECIDE)
    def resume_elastic(request: Request) -> Response:
        return _resume(request, _json_body(request))

    @needs_scope(TokenScope.DECIDE)
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

    @needs_scope(TokenScope.DECIDE)
    def escalate_execution(request: Request) -> Response:
        execution_id = request.path_params["id"]
        body = _object_body(request)
        reason = _text_field(body, "reason")
        from_level = body.get("fromLevel")
        if isinstance(from_level, bool) or not isinstance(from_level, int) or from_level < 1:
            raise _BadRequest('"fromLevel" must be the level you saw (1 is the first '
                              "approvers): an escalation moves the review on from it once")
        to = body.get("to")
        if to is not None and (not isinstance(to, str) or not to.strip()):
            raise _BadRequest('"to" names whom to escalate to past the last level: a Slack '
                              "user id, an e-mail address or a principal")
        level = engine.escalate(execution_id, _actor(request), reason,
                                step=request.query_params.get("step"),
                                from_level=from_level - 1, to=to.strip() if to else None)
        review = engine.review(execution_id)
        return JSONResponse({"executionId": execution_id, "level": level + 1,
                             "levels": review.levels if review else level + 1,
                             "approvers": list(review.approvers) if review else []})

    @needs_scope(TokenScope.DECIDE)
    def reassign_execution(request: Request) -> Response:
        execution_id = request.path_params["id"]
        body = _object_body(request)
        to = _text_field(body, "to")
        reason = str(body.get("reason") or "").strip()
        actor = _actor(request)
        engine.reassign(execution_id, actor, to, step=request.query_params.get("step"),
                        reason=reason)
        return JSONResponse({"executionId": execution_id, "reassignedTo": to,
                             "handedOffBy": actor.id})

    @needs_scope(TokenScope.ADMIN)
    def cancel_execution(request: Request) -> Response:
        execution_id = request.path_params["id"]
        body = _json_body(request, default={})
        reason = str(body.get("reason") or "") if isinstance(body, dict) else ""
        engine.cancel(execution_id, _actor(request), reason)
        return JSONResponse({"executionId": execution_id, "status": "CANCELLED"})

    @needs_scope(TokenScope.READ)
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

    # The extensions' routes first: Starlette tries routes in order, and theirs are the
    # busiest (Slack's requests, the gate's checks); no path of theirs overlaps the API's.
    routes: list[BaseRoute] = [
        *(_scoped(route) for extension in extensions for route in extension.routes),
        Route("/healthz", healthz),
        Route("/api/workflows/{name}/run", run_workflow, methods=["POST"]),
        Route("/api/workflowExecutions", list_executions),
        Route("/api/workflowExecutions/{id}", get_execution),
        Route("/api/workflowExecutions/{id}/resume", resume_elastic, methods=["POST"]),
        Route("/api/workflows/executions/{id}/resume", resume_wrapped, methods=["POST"]),
        Route("/api/workflowExecutions/{id}/escalate", escalate_execution, methods=["POST"]),
        Route("/api/workflowExecutions/{id}/reassign", reassign_execution, methods=["POST"]),
        Route("/api/workflowExecutions/{id}/cancel", cancel_execution, methods=["POST"]),
        Route("/api/workflowExecutions/{id}/audit", get_audit),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for extension in extensions:
            for start in extension.on_startup:
                await start()
        yield
        for extension in extensions:
            for close in extension.on_shutdown:
                await close()

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(BearerAuth, token=api_token, find=engine.store.token),
                    Middleware(BodyReader)],
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
                   "approvers": list(w.approvers), "since": w.since, "dueAt": w.due_at,
                   # 1 is the first approvers: what POST …/escalate takes as fromLevel
                   "level": w.level + 1, "levels": 1 + len(w.options.get("escalation") or ()),
                   "approvals": [a.get("actor") for a in w.approvals],
                   "handedOff": list(w.handed)}
    return {"id": state.id, "workflow": state.workflow, "status": state.status.value,
            "startedAt": state.started_at, "finishedAt": state.finished_at,
            "requestedBy": state.requested_by, "error": state.error,
            "outputs": state.outputs, **_parent_view(state),
            "steps": steps, "waitingFor": waiting}


def _parent_view(state: ExecutionState) -> dict[str, Any]:
    """A child execution's parent (workflow.execute, a parallel branch), when it has one."""
    link = state.parent
    if link is None:
        return {}
    parent: dict[str, Any] = {"id": link.id, "step": link.path, "awaited": link.awaited}
    if link.branch is not None:
        parent["branch"] = link.branch
    return {"parent": parent}


Endpoint = Callable[[Request], Response]


def needs_scope(scope: TokenScope) -> Callable[[Endpoint], Endpoint]:
    """Refuse, with 403 ``missing_scope``, callers whose token lacks ``scope``. Every /api
    route says which it needs; a plug-in's /api routes use this too."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        def checked(request: Request) -> Response:
            caller = caller_of(request)
            if not caller.allows(scope):
                raise MissingScope(caller.name, scope.value,
                                   f"{request.method} {request.url.path}")
            return endpoint(request)

        checked.needs_scope = scope  # type: ignore[attr-defined]
        return checked

    return wrap


def _scoped(route: BaseRoute) -> BaseRoute:
    """A plug-in's route, closed by default: an /api route that names no scope with
    :func:`needs_scope` needs ``admin``."""
    if not isinstance(route, Route) or not route.path.startswith("/api/"):
        return route
    if getattr(route.endpoint, "needs_scope", None) is not None:
        return route
    return Route(route.path, needs_scope(TokenScope.ADMIN)(route.endpoint),
                 methods=list(route.methods or ()) or None, name=route.name)


def caller_of(request: Request) -> ApiToken:
    """The token that authenticated an /api request (the operator's without auth)."""
    caller: ApiToken = request.scope[_CALLER]
    return caller


class BearerAuth:
    """Who calls /api: ``Authorization: Bearer <token>``, the operator's or one that
    ``signoff token create`` made. Both are compared by their SHA-256, the operator's in
    constant time, the others by reading the record stored under that hash (``find``, off
    the event loop; a record found is kept 0.1 s, :class:`RecentTokens`), so no answer's
    timing depends on how much of a secret was right. Unknown and revoked (for 0.1 s and
    more) tokens alike are 401; the caller's :class:`ApiToken` is left in
    the request scope, where routes check its scopes."""

    def __init__(self, app: ASGIApp, token: str | None,
                 find: Callable[[str], ApiToken | None]) -> None:
        self.app = app
        self.operator_digest = digest(token) if token else None
        self.find = find
        self.recent = RecentTokens()  # revocation holds from 0.1 s on (engine.state.tokens)
        self.reading: dict[str, asyncio.Future[ApiToken | None]] = {}  # reads under way

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        try:
            caller = await self._caller(dict(scope["headers"]).get(b"authorization", b""))
        except StoreUnavailable:
            await _error(503, "unavailable", "Redis is unreachable; try again shortly")(
                scope, receive, send)
            return
        if caller is None:
            response = _error(401, "unauthorized", "send Authorization: Bearer <token>: "
                              "SIGNOFF_API_TOKEN, or one made by `signoff token create` "
                              "and not revoked")
            response.headers["WWW-Authenticate"] = 'Bearer realm="signoff"'
            await response(scope, receive, send)
            return
        scope[_CALLER] = caller
        await self.app(scope, receive, send)

    async def _caller(self, header: bytes) -> ApiToken | None:
        if self.operator_digest is None:
            return OPERATOR
        scheme, _, given = header.partition(b" ")
        given = given.strip()
        if scheme.lower() != b"bearer" or not given:
            return None
        secret_digest = digest(given)
        if hmac.compare_digest(secret_digest, self.operator_digest):
            return OPERATOR
        found = self.recent.get(secret_digest)
        if found is not None:
            return found
        # One read per token however many requests want it: when a busy token's entry
        # lapses, the requests in flight wait for the same read rather than each sending a
        # thread to Redis (32 in flight were 32 reads every 0.1 s, the gate's p99).
        pending = self.reading.get(secret_digest)
        if pending is None:
            pending = asyncio.ensure_future(run_in_threadpool(self.find, secret_digest))
            self.reading[secret_digest] = pending
            pending.add_done_callback(lambda _: self.reading.pop(secret_digest, None))
        found = await asyncio.shield(pending)
        if found is not None:
            self.recent.put(secret_digest, found)
        return found


_CALLER = "signoff.caller"  # where BearerAuth leaves the caller's token in the ASGI scope


class _BadRequest(SignoffError):
    pass


_STATUSES = {"QUEUED", "PENDING", "RUNNING", "WAITING", "WAITING_FOR_INPUT", "COMPLETED",
             "FAILED", "CANCELLED", "TIMED_OUT", "SKIPPED"}


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
    except RecursionError:  # json's C parser recurses once per `[` or `{`
        raise _BadRequest("the body nests arrays or objects too deeply") from None


def _object_body(request: Request) -> dict[str, Any]:
    body = _json_body(request)
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


def _text_field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _BadRequest(f'"{name}" is required: a non-empty string')
    return value.strip()


def _actor(request: Request) -> Actor:
    """Who acts: the caller's principal, or whom ``X-Signoff-Actor`` names (``act-as``)."""
    who = _on_behalf_of(request, "X-Signoff-Actor")
    who = slack_user_id(who) or who  # <@u0alice01> is U0ALICE01
    # The audit trail keeps which token acted, so an act-as front-end's word is traceable.
    return Actor(id=who, name=who, source="api", token=caller_of(request).name)


def _requester(request: Request) -> str:
    """Who asks for a run: the caller's principal, or whom ``X-Signoff-Requested-By``
    names (``act-as``)."""
    return _on_behalf_of(request, "X-Signoff-Requested-By")


def _on_behalf_of(request: Request, header: str) -> str:
    caller = caller_of(request)
    named = (request.headers.get(header) or "").strip()
    if not named or named == caller.acts_as:
        return caller.acts_as
    if not caller.allows(TokenScope.ACT_AS):  # refused, never quietly replaced by the principal
        raise ActAsRequired(caller.name, caller.acts_as, header, named)
    return named


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
        return _error(403, exc.reason, str(exc), executionId=exc.execution_id, actor=exc.actor)
    if isinstance(exc, RequesterInvalid):
        return _error(422, "requester_invalid", str(exc), requester=exc.requester)
    if isinstance(exc, MissingScope):
        return _error(403, "missing_scope", str(exc), scope=exc.scope, token=exc.token)
    if isinstance(exc, ActAsRequired):
        return _error(403, "act_as_required", str(exc), header=exc.header, named=exc.named,
                      principal=exc.principal, scope=TokenScope.ACT_AS.value)
    if isinstance(exc, Contention):
        return _error(409, "contention", str(exc), executionId=exc.execution_id)
    if isinstance(exc, AlreadyEscalated):
        return _error(409, "already_escalated", str(exc), executionId=exc.execution_id,
                      level=exc.level + 1, escalatedBy=exc.by, escalatedAt=exc.at)
    if isinstance(exc, EscalationTargetRequired):
        return _error(422, "escalation_target_required", str(exc), executionId=exc.execution_id)
    if isinstance(exc, CannotEscalate):
        return _error(409, "cannot_escalate", str(exc), executionId=exc.execution_id)
    if isinstance(exc, RunSkipped):  # 409: its group is busy; 429: its queue is full
        return _error(429 if exc.because == "queue_full" else 409,
                      "queue_full" if exc.because == "queue_full" else "run_dropped", str(exc),
                      executionId=exc.execution_id, workflow=exc.workflow, status="SKIPPED",
                      concurrencyGroup=exc.group, reason=exc.reason)
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
