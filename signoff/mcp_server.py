"""``signoff mcp``: the gate as an MCP server on stdio, built with the ``mcp`` SDK.

Tools, each answering a JSON object (as MCP structured content, and as its text) with
``status``, ``request_id``, ``decided_by``, ``reason``, ``comment`` and the ``args`` to run:

- ``check_policy(tool, args)``: what the policy says (``allowed``, ``blocked``, or
  ``escalate`` for a call that would need a review), asking nobody.
- ``request_approval(tool, args, summary?, timeout?)``: asks; waits at most ``timeout``
  seconds, never more than :data:`MAX_WAIT` (MCP clients give a tool call about 60 s),
  then answers ``pending`` with the ``request_id`` to wait on.
- ``await_approval(request_id, timeout?)``: waits on it again, the same way.
- ``approval_prompt(tool_name, input)``: for Claude Code's ``--permission-prompt-tool``:
  asks and waits for the decision (up to :data:`PROMPT_WAIT`, then withdraws it), answering
  ``{"behavior": "allow", "updatedInput": …}`` or ``{"behavior": "deny", "message": …}``.

An approval handed to the agent is spent then (``POST …/use``): the agent runs the call, and
the same approval cannot be handed out twice. The server is a client of a Signoff server,
``SIGNOFF_URL`` with ``SIGNOFF_API_TOKEN`` (scopes ``run`` and ``read``); when that cannot be
reached, the tools answer an error, and the permission prompt denies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from signoff.gate import Decision, Gate, GateError

MAX_WAIT = 50.0  # seconds a tool call waits for a review before answering `pending`
PROMPT_WAIT = 540.0  # the permission prompt waits this long, then denies


def register(sub: Any) -> None:
    """Add ``mcp`` to the ``signoff`` command (the ``signoff.commands`` entry point)."""
    p = sub.add_parser("mcp", help="serve the gate to an agent as an MCP server on stdio")
    p.set_defaults(func=cmd_mcp)


def cmd_mcp(args: argparse.Namespace) -> int:
    build_server(Gate()).run("stdio")
    return 0


def build_server(gate: Gate) -> Any:
    """The MCP server (an ``mcp`` ``MCPServer``) answering for ``gate``."""
    from mcp.server import MCPServer

    server: Any = MCPServer(
        name="signoff",
        instructions="Before a tool call that changes something outside this session "
                     "(sending, paying, deleting, deploying), call request_approval and run "
                     "the call only when its status is allowed or approved, with the args it "
                     "returns. While pending, call await_approval with the request_id.")

    @server.tool(structured_output=True)
    async def check_policy(tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """What Signoff's policy decides for a tool call, asking nobody: allowed, blocked,
        or escalate (it would need a human's approval)."""
        return result(await asyncio.to_thread(gate.policy, tool, args or {}))

    @server.tool(structured_output=True)
    async def request_approval(tool: str, args: dict[str, Any] | None = None,
                               summary: str = "", timeout: float | None = None
                               ) -> dict[str, Any]:
        """Ask Signoff whether a tool call may run: a human reviews it in Slack if the
        policy says so. Waits at most 50 s; then status is pending: call await_approval."""
        decision = await asyncio.to_thread(gate.check, tool, args or {}, summary=summary,
                                           wait=False)
        if decision.status == "pending" and decision.request_id:
            decision = await asyncio.to_thread(gate.wait, decision.request_id,
                                               _bounded(timeout))
        return await _handed_out(gate, decision)

    @server.tool(structured_output=True)
    async def await_approval(request_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait (at most 50 s) for the decision on a request that request_approval left
        pending."""
        decision = await asyncio.to_thread(gate.wait, request_id, _bounded(timeout))
        return await _handed_out(gate, decision)

    @server.tool(structured_output=False)
    async def approval_prompt(tool_name: str, input: dict[str, Any],  # noqa: A002 - Claude's name
                              tool_use_id: str | None = None) -> str:
        """Claude Code's permission prompt (--permission-prompt-tool): allow or deny a tool
        call as Signoff's policy and reviewers decide."""
        try:
            decision = await asyncio.to_thread(
                gate.check, tool_name, input, summary=f"Claude Code wants to use {tool_name}",
                context={"agent": "claude-code", **({"tool_use_id": tool_use_id}
                                                    if tool_use_id else {})},
                timeout=PROMPT_WAIT)
            answer = await _handed_out(gate, decision)
        except GateError as exc:
            return json.dumps({"behavior": "deny",
                               "message": f"Signoff could not decide, so it is denied: {exc}"})
        if answer["status"] in ("allowed", "approved"):
            return json.dumps({"behavior": "allow", "updatedInput": answer["args"]})
        who = f" by {answer['decided_by']}" if answer.get("decided_by") else ""
        why = answer.get("comment") or answer.get("reason") or ""
        return json.dumps({"behavior": "deny",
                           "message": f"{answer['status']}{who} in Signoff"
                                      + (f": {why}" if why else "")})

    return server


def result(decision: Decision) -> dict[str, Any]:
    """A decision as the tools answer it."""
    return {"status": decision.status, "request_id": decision.request_id,
            "decided_by": decision.decided_by, "reason": decision.reason or None,
            "comment": decision.comment, "args": dict(decision.args)}


async def _handed_out(gate: Gate, decision: Decision) -> dict[str, Any]:
    if decision.status == "approved" and decision.request_id:
        await asyncio.to_thread(gate.spend, decision)
    return result(decision)


def _bounded(timeout: float | None) -> float:
    return MAX_WAIT if timeout is None else max(0.0, min(float(timeout), MAX_WAIT))
