"""The gate's HTTP routes: ``/api/gate/...``, for agents and scripts asking before a tool call.

| route | scope |
|---|---|
| ``POST /api/gate/check`` ``{tool, args, summary?, context?, dryRun?}`` | ``run`` |
| ``GET /api/gate/requests/{id}`` | ``read`` |
| ``GET /api/gate/requests/{id}/wait?timeout=50s`` (long poll) | ``read`` |
| ``POST /api/gate/requests/{id}/cancel`` | ``run`` (its requester) or ``admin`` |
| ``POST /api/gate/requests/{id}/use`` ``{tool, args}`` | ``run`` (its requester) |

Served as a :class:`engine.api.WebExtension`, so the API's auth, body cap and error mapping
apply; the logic is :class:`engine.run.gate.Gate`'s. A long poll holds one of the server's
worker threads while it waits (Starlette runs sync endpoints in its thread pool, 40 threads
by default), so the check itself runs on the event loop.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.api import (
    WebExtension,
    _actor,
    _error,
    _object_body,
    _requester,
    caller_of,
    needs_scope,
)
from engine.definition.durations import parse_duration
from engine.definition.policy import Action
from engine.errors import DurationError, GateUseRefused, MissingScope, NotWaiting, PolicyInvalid
from engine.run.gate import CheckAnswer, Gate, ToolCall
from engine.state.tokens import Scope

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 120.0  # a long poll answers by then, pending or not
DEFAULT_WAIT_SECONDS = 50.0  # under the 60 s many HTTP clients and proxies allow
MAX_TOOL_NAME = 256
MAX_SUMMARY = 4000


def gate_extension(gate: Gate) -> WebExtension:
    """The gate's routes, to pass to :func:`engine.api.build_api` as an extension."""

    async def check(request: Request) -> Response:
        # On the event loop, not in the thread pool: allow and block touch no store, so they
        # answer without a thread, even while long polls hold the pool's threads; only an
        # escalation's start goes to a thread.
        caller = caller_of(request)
        if not caller.allows(Scope.RUN):
            raise MissingScope(caller.name, Scope.RUN.value, f"{request.method} {request.url.path}")
        body = _object_body(request)
        tool, args = body.get("tool"), body.get("args", {})
        summary, context = body.get("summary", ""), body.get("context", {})
        if not isinstance(tool, str) or not tool.strip() or len(tool) > MAX_TOOL_NAME:
            return _error(400, "bad_request", f'"tool" is required: the tool\'s name, at most '
                          f"{MAX_TOOL_NAME} characters")
        if not isinstance(args, dict):
            return _error(400, "bad_request", '"args" must be a JSON object: the call\'s '
                          "arguments by name")
        if summary is None:
            summary = ""
        if not isinstance(summary, str) or len(summary) > MAX_SUMMARY:
            return _error(400, "bad_request", f'"summary" must be text of at most '
                          f"{MAX_SUMMARY} characters")
        if not isinstance(context, dict | None):
            return _error(400, "bad_request", '"context" must be a JSON object')
        call = ToolCall(tool, args, summary, context or {})
        try:
            decision = gate.decide(call)
        except PolicyInvalid as exc:
            # Fail closed: while the policy has problems nothing is allowed.
            return _error(503, "policy_invalid", "the policy (SIGNOFF_POLICY) has problems; "
                          "nothing is decided until they are fixed",
                          problems=[str(p) for p in exc.problems])
        answer = CheckAnswer(decision)
        # dryRun: what the policy says, starting no review
        if decision.action is Action.ESCALATE and body.get("dryRun") is not True:
            answer = CheckAnswer(decision, await run_in_threadpool(
                gate.start, call, decision, requester=_requester(request),
                actor=_actor(request), principal=caller.acts_as))
        out = answer.to_json()
        if decision.shadow:  # counted for /approvals stats; only shadow rules pay the round trip
            await run_in_threadpool(gate.record_shadow, decision)
            log.info("gate: %s would be %s with shadow rules %s (is %s)", tool,
                     out["shadow"]["decision"], [r["index"] + 1 for r in out["shadow"]["rules"]],
                     out["decision"])
        return Response(orjson.dumps(out), media_type="application/json")

    check.needs_scope = Scope.RUN  # type: ignore[attr-defined]

    @needs_scope(Scope.READ)
    def get_request(request: Request) -> Response:
        return JSONResponse(gate.request(request.path_params["id"]))

    @needs_scope(Scope.READ)
    def wait_request(request: Request) -> Response:
        raw = request.query_params.get("timeout")
        try:
            seconds = DEFAULT_WAIT_SECONDS if raw is None else parse_duration(raw).total_seconds()
        except DurationError as exc:
            return _error(400, "bad_request", f"timeout: {exc}")
        seconds = max(0.0, min(seconds, MAX_WAIT_SECONDS))
        return JSONResponse(gate.wait(request.path_params["id"], seconds))

    @needs_scope(Scope.RUN)
    def cancel_request(request: Request) -> Response:
        request_id = request.path_params["id"]
        caller = caller_of(request)
        if not gate.is_requester(request_id, _requester(request)) \
                and not caller.allows(Scope.ADMIN):
            return _error(403, "not_the_requester", "only the request's requester (or a token "
                          "with admin) may cancel it", requestId=request_id)
        body = _json_or_empty(request)
        try:
            return JSONResponse(gate.cancel(request_id, _actor(request),
                                            str(body.get("reason") or "")))
        except NotWaiting:
            return _error(409, "already_decided", f"request {request_id} is "
                          f"{gate.request(request_id)['status']}", requestId=request_id)

    @needs_scope(Scope.RUN)
    def use_request(request: Request) -> Response:
        request_id = request.path_params["id"]
        body = _object_body(request)
        tool, args = body.get("tool"), body.get("args", {})
        if not isinstance(tool, str) or not isinstance(args, dict):
            return _error(400, "bad_request", 'send {"tool": ..., "args": {...}}: the call '
                          "exactly as it runs")
        try:
            return JSONResponse(gate.use(request_id, tool, args, _requester(request),
                                         _actor(request)))
        except GateUseRefused as exc:
            return _error(403 if exc.reason == "not_the_requester" else 409, exc.reason,
                          str(exc), requestId=request_id, used=exc.used)

    return WebExtension(routes=[
        Route("/api/gate/check", check, methods=["POST"]),
        Route("/api/gate/requests/{id}", get_request),
        Route("/api/gate/requests/{id}/wait", wait_request),
        Route("/api/gate/requests/{id}/cancel", cancel_request, methods=["POST"]),
        Route("/api/gate/requests/{id}/use", use_request, methods=["POST"]),
    ])


def _json_or_empty(request: Request) -> dict[str, Any]:
    raw = request.scope.get("_signoff_body") or b""
    return _object_body(request) if raw.strip() else {}
