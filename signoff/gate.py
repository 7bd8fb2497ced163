"""The SDK's :class:`Gate`: check a tool call, wait for its review, spend the approval.

Errors, for calls that may not run (all fail closed)::

    GateError
    ├── Blocked      the policy blocks the call (which rule, why)
    ├── Denied       a reviewer denied it (who, their comment)
    ├── TimedOut     no decision in time (the review's timeout, or the caller's)
    ├── Cancelled    the request was withdrawn
    └── Unavailable  no decision could be had: the server is unreachable or answered an error

:meth:`Gate.check` returns the :class:`Decision` without raising for any of the first four;
:meth:`Gate.guard`, :meth:`Gate.approval` and :meth:`Gate.require` raise them, and before
the guarded code runs they report the use of an approval (``POST …/use``): an approval
covers one call, with those exact arguments, for this token's principal.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
POLL_SECONDS = 50  # one long poll
F = TypeVar("F", bound=Callable[..., Any])


class GateError(Exception):
    """A call the gate did not let run; ``decision`` says why."""

    def __init__(self, message: str, decision: Decision | None = None) -> None:
        self.decision = decision
        super().__init__(message)


class Blocked(GateError):
    """The policy blocks the call."""


class Denied(GateError):
    """A reviewer denied the call: ``decision.decided_by`` and ``decision.comment``."""


class TimedOut(GateError):
    """No decision came in time."""


class Cancelled(GateError):
    """The request was withdrawn."""


class Unavailable(GateError):
    """No decision could be had from the server."""


@dataclass(frozen=True)
class Decision:
    """What the gate decided for a call: ``status`` is ``allowed``, ``blocked``,
    ``pending``, ``approved``, ``denied``, ``timed_out``, ``cancelled`` or ``failed``."""

    status: str
    tool: str
    args: Mapping[str, Any]  # the arguments to run
    reason: str = ""
    request_id: str | None = None
    decided_by: str | None = None
    decided_at: str | None = None
    comment: str | None = None
    rule: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def may_run(self) -> bool:
        return self.status in ("allowed", "approved")

    def raise_for_status(self) -> Decision:
        """This decision, or the error that says why the call may not run."""
        if self.may_run:
            return self
        who = f" by {self.decided_by}" if self.decided_by else ""
        why = f": {self.comment or self.reason}" if (self.comment or self.reason) else ""
        error = {"blocked": Blocked, "denied": Denied, "timed_out": TimedOut,
                 "cancelled": Cancelled}.get(self.status, Denied)
        raise error(f"{self.tool} {self.status}{who}{why}", self)


class Gate:
    """A Signoff server's gate, at ``url`` (default ``SIGNOFF_URL``) with ``token`` (default
    ``SIGNOFF_API_TOKEN``; scopes ``run`` and ``read``)."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float | None = None) -> None:
        self.url = (url or os.environ.get("SIGNOFF_URL") or DEFAULT_URL).rstrip("/")
        self._headers = {"Authorization":
                         f"Bearer {token or os.environ.get('SIGNOFF_API_TOKEN') or ''}"}
        self.timeout = timeout  # seconds to wait for a review; None: as long as it takes

    def __repr__(self) -> str:
        return f"Gate(url={self.url!r})"  # never the token

    # -- asking ------------------------------------------------------------------------------

    def check(self, tool: str, args: Mapping[str, Any] | None = None, *, summary: str = "",
              context: Mapping[str, Any] | None = None, wait: bool = True,
              timeout: float | None = None) -> Decision:
        """The decision for a call, waiting for its review unless ``wait`` is False (then
        ``pending``). Unavailable when no decision can be had; never raises for a decision."""
        call = _call(tool, args, summary, context)
        with self._client() as client:
            answer = _send(client, "POST", "/api/gate/check", json=call)
        if answer.get("decision") != "escalate" or not wait:
            return _decision(answer, call)
        return self.wait(str(answer["requestId"]),
                         timeout if timeout is not None else self.timeout, withdraw=True)

    def policy(self, tool: str, args: Mapping[str, Any] | None = None, *,
               context: Mapping[str, Any] | None = None) -> Decision:
        """What the policy says of a call (``allowed``, ``blocked``, or ``escalate`` for a
        call that would need a review), asking nobody and starting nothing."""
        call = {**_call(tool, args, "", context), "dryRun": True}
        with self._client() as client:
            answer = _send(client, "POST", "/api/gate/check", json=call)
        decided = _decision(answer, call)
        return decided if decided.status != "pending" else replace(decided, status="escalate")

    def wait(self, request_id: str, timeout: float | None = None, *,
             withdraw: bool = False) -> Decision:
        """A request's decision once made, or after ``timeout`` seconds: still ``pending``,
        or with ``withdraw``, cancelled and reported as ``timed_out``."""
        deadline = _deadline(timeout)
        with self._client() as client:
            while True:
                state = _send(client, "GET", f"/api/gate/requests/{request_id}/wait",
                              params={"timeout": f"{_poll_seconds(deadline)}s"})
                call = {"tool": state.get("tool"), "args": state.get("args") or {}}
                if state["status"] != "pending":
                    return _decision(state, call)
                if deadline is not None and time.monotonic() >= deadline:
                    if not withdraw:
                        return _decision(state, call)
                    _send(client, "POST", f"/api/gate/requests/{request_id}/cancel",
                          json={"reason": "the caller stopped waiting"}, ok=(200, 409))
                    state = _send(client, "GET", f"/api/gate/requests/{request_id}")
                    decided = _decision(state, call)
                    return decided if decided.may_run else _timed_out(decided)

    async def acheck(self, tool: str, args: Mapping[str, Any] | None = None, *,
                     summary: str = "", context: Mapping[str, Any] | None = None,
                     wait: bool = True, timeout: float | None = None) -> Decision:
        """:meth:`check` for async code: it runs in a thread, so the event loop goes on."""
        return await asyncio.to_thread(self.check, tool, args, summary=summary,
                                       context=context, wait=wait, timeout=timeout)

    def require(self, tool: str, args: Mapping[str, Any] | None = None, *, summary: str = "",
                context: Mapping[str, Any] | None = None,
                timeout: float | None = None) -> Decision:
        """Check the call and spend its approval, for code about to run it: the decision,
        or Blocked, Denied, TimedOut, Cancelled, Unavailable."""
        decision = self.check(tool, args, summary=summary, context=context,
                              timeout=timeout).raise_for_status()
        if decision.request_id is not None:
            self.spend(decision)
        return decision

    @contextmanager
    def approval(self, tool: str, args: Mapping[str, Any] | None = None, *, summary: str = "",
                 context: Mapping[str, Any] | None = None,
                 timeout: float | None = None) -> Iterator[Decision]:
        """``with gate.approval("deploy.prod", args=…) as decision:`` runs the block only
        once the call is allowed or approved (the approval spent on it)."""
        yield self.require(tool, args, summary=summary, context=context, timeout=timeout)

    def guard(self, tool: str, *, summary: str | Callable[..., str] = "",
              context: Mapping[str, Any] | None = None,
              timeout: float | None = None) -> Callable[[F], F]:
        """A decorator: each call of the function is asked for as ``tool``, its arguments
        bound by parameter name (defaults included); it runs once allowed or approved,
        with the arguments approved (a reviewer may edit those the rule marks editable),
        and raises Blocked, Denied, TimedOut, Cancelled or Unavailable otherwise. On an
        ``async def`` function the wait does not block the event loop."""

        def decorate(func: F) -> F:
            signature = inspect.signature(func)

            def arguments(*a: Any, **kw: Any) -> tuple[inspect.BoundArguments, str]:
                bound = signature.bind(*a, **kw)
                bound.apply_defaults()
                text = summary(*a, **kw) if callable(summary) else summary
                return bound, text

            def approved(bound: inspect.BoundArguments, decision: Decision
                         ) -> tuple[tuple[Any, ...], dict[str, Any]]:
                # A reviewer may have edited arguments the rule marks editable: run those.
                for name, value in decision.args.items():
                    if name in bound.arguments:
                        bound.arguments[name] = value
                return bound.args, bound.kwargs

            if inspect.iscoroutinefunction(func):
                @functools.wraps(func)
                async def guarded_async(*a: Any, **kw: Any) -> Any:
                    bound, text = arguments(*a, **kw)
                    decision = await asyncio.to_thread(
                        self.require, tool, dict(bound.arguments), summary=text,
                        context=context, timeout=timeout)
                    run_a, run_kw = approved(bound, decision)
                    return await func(*run_a, **run_kw)

                return guarded_async  # type: ignore[return-value]

            @functools.wraps(func)
            def guarded(*a: Any, **kw: Any) -> Any:
                bound, text = arguments(*a, **kw)
                decision = self.require(tool, dict(bound.arguments), summary=text,
                                        context=context, timeout=timeout)
                run_a, run_kw = approved(bound, decision)
                return func(*run_a, **run_kw)

            return guarded  # type: ignore[return-value]

        return decorate

    # -- plumbing ----------------------------------------------------------------------------

    def spend(self, decision: Decision) -> None:
        """Report that the approved call runs now (``POST …/use``): an approval covers one
        call; Unavailable when the server refuses (it was spent already)."""
        with self._client() as client:
            _send(client, "POST", f"/api/gate/requests/{decision.request_id}/use",
                  json={"tool": decision.tool, "args": dict(decision.args)})

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self._headers, timeout=POLL_SECONDS + 15)


def _call(tool: str, args: Mapping[str, Any] | None, summary: str,
          context: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"tool": tool, "args": dict(args or {}), "summary": summary,
            "context": dict(context or {})}


def _send(client: httpx.Client, method: str, path: str, ok: tuple[int, ...] = (200,),
          **kwargs: Any) -> dict[str, Any]:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot reach {client.base_url}: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code not in ok or not isinstance(body, dict):
        message = body.get("message") if isinstance(body, dict) else response.text[:200]
        raise Unavailable(f"{method} {path} answered {response.status_code}: {message}")
    return body


def _decision(body: Mapping[str, Any], call: Mapping[str, Any]) -> Decision:
    decision = body.get("decision")
    status = {"allow": "allowed", "block": "blocked", "escalate": "pending"}.get(
        str(decision), str(body.get("status")))
    args = body.get("args")
    return Decision(status=status, tool=str(body.get("tool") or call["tool"]),
                    args=args if isinstance(args, dict) else call["args"],
                    reason=str(body.get("reason") or ""),
                    request_id=body.get("requestId"), decided_by=body.get("decidedBy"),
                    decided_at=body.get("decidedAt"), comment=body.get("comment"),
                    rule=body.get("rule"), raw=dict(body))


def _timed_out(decision: Decision) -> Decision:
    if decision.status != "cancelled":
        return decision
    return replace(decision, status="timed_out")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _poll_seconds(deadline: float | None) -> int:
    if deadline is None:
        return POLL_SECONDS
    return max(0, min(POLL_SECONDS, int(deadline - time.monotonic())))

