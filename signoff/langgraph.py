"""LangGraph adapter: a node asks Signoff before a tool call, and the graph pauses with
LangGraph's own approval hook, ``interrupt``, while the call waits for its review in Slack.

    from langgraph.types import Command
    from signoff import Gate
    from signoff.langgraph import approve_call, start_review

    gate = Gate()

    def refund(state):
        decision = approve_call(gate, "payments.refund", {"amount": state["amount"]})
        return {"refunded": pay(**decision.args)}  # allowed or approved, with these arguments

    graph = builder.compile(checkpointer=checkpointer)  # interrupt needs a checkpointer
    result = graph.invoke(inputs, config)
    for pending in result.get("__interrupt__", ()):
        request_id = start_review(gate, pending.value)  # the review is posted in Slack
        result = graph.invoke(Command(resume=request_id), config)  # the node waits for it

LangGraph runs an interrupted node again from its start when the graph is resumed, so what
comes before ``interrupt`` must have no side effect: :func:`approve_call` asks the policy
alone there (a dry run: ``allow`` and ``block`` answer at once), and the review is started
by whoever resumes the graph (:func:`start_review`), once. Resumed with the request's id, the
node waits for the decision, reports the approval's use (it covers this call, with these
arguments, once) and returns it, or raises :class:`~signoff.Denied`, ``TimedOut`` or
``Cancelled``; a block raises :class:`~signoff.Blocked` without pausing. The resume value is
only a request id: the decision is read from the server, never taken from the resumer, and a
request for another call (another tool, other arguments) raises GateError and runs nothing.

Needs the ``langgraph`` package (``pip install 'signoff[langgraph]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.types import interrupt

from signoff.gate import Decision, Gate, GateError

KIND = "signoff.approval"  # marks the interrupts this adapter raises


def approve_call(gate: Gate, tool: str, args: Mapping[str, Any] | None = None, *,
                 summary: str = "", context: Mapping[str, Any] | None = None,
                 timeout: float | None = None) -> Decision:
    """In a LangGraph node: the decision for the call once it may run, pausing the graph
    (``interrupt``) while it needs a review. Raises Blocked, Denied, TimedOut, Cancelled,
    or Unavailable when no decision can be had."""
    arguments, scope = dict(args or {}), dict(context or {})
    said = gate.policy(tool, arguments, context=scope)
    if said.status != "escalate":
        return said.raise_for_status()
    request_id = interrupt({"kind": KIND, "tool": tool, "args": arguments, "summary": summary,
                            "context": scope, "reason": said.reason})
    if not request_id:  # start_review found the call no longer escalates
        return gate.policy(tool, arguments, context=scope).raise_for_status()
    decision = gate.wait(str(request_id), timeout, withdraw=timeout is not None)
    asked = decision.raw.get("requestedArgs")
    if decision.tool != tool or asked != arguments:
        # The graph was resumed with another call's request: its approval is not this one's.
        raise GateError(f"request {request_id} is for another call ({decision.tool}), "
                        f"not this {tool}", decision)
    decision.raise_for_status()
    gate.spend(decision)  # refused by the server unless these are the approved arguments
    return decision


def start_review(gate: Gate, value: Mapping[str, Any]) -> str:
    """For whoever resumes the graph: start the review of an interrupt :func:`approve_call`
    raised (``value`` is the interrupt's value) and return the request's id to resume with;
    ``""`` when the policy no longer escalates the call (the node then asks it again)."""
    if not is_approval(value):
        raise ValueError("not an interrupt of signoff.langgraph.approve_call")
    decision = gate.check(str(value["tool"]), value.get("args") or {},
                          summary=str(value.get("summary") or ""),
                          context=value.get("context") or {}, wait=False)
    return decision.request_id or ""


def is_approval(value: Any) -> bool:
    """Whether an interrupt's value is one :func:`approve_call` raised."""
    return isinstance(value, Mapping) and value.get("kind") == KIND
