"""The LangGraph adapter with the real ``langgraph`` package, against a real server: a node's
call is allowed, blocked, or pauses the graph (``interrupt``) until a reviewer decides."""

from __future__ import annotations

from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from signoff import Blocked, Denied, Gate, GateError
from signoff.langgraph import approve_call, is_approval, start_review
from tests.signoff.test_sdk_gate import decide_when_waiting, in_background, server  # noqa: F401


class State(TypedDict, total=False):
    tool: str
    amount: int
    done: str


def graph_for(gate: Gate, ran: list[dict[str, Any]]) -> Any:
    def act(state: State) -> State:
        decision = approve_call(gate, state["tool"], {"customer": "ACME",
                                                      "amount": state["amount"]},
                                summary="refund ACME")
        ran.append(dict(decision.args))
        return {"done": f"{decision.status} by {decision.decided_by or 'the policy'}"}

    builder = StateGraph(State)
    builder.add_node("act", act)
    builder.add_edge(START, "act")
    builder.add_edge("act", END)
    return builder.compile(checkpointer=InMemorySaver())


def test_an_escalated_call_pauses_the_graph_until_approved_then_runs_once(
        server, runtime, work):  # noqa: F811
    url, token, alice = server
    gate, ran = Gate(url, token), []
    graph = graph_for(gate, ran)
    config = {"configurable": {"thread_id": "t1"}}

    paused = graph.invoke({"tool": "payments.refund", "amount": 120}, config)

    [pending] = paused["__interrupt__"]
    assert is_approval(pending.value) and pending.value["tool"] == "payments.refund"
    assert pending.value["reason"] == "Money leaves the company"
    assert ran == [] and runtime.engine.list_executions()[1] == 0  # nothing asked yet
    request_id = start_review(gate, pending.value)
    resumed = in_background(lambda: graph.invoke(Command(resume=request_id), config))
    assert decide_when_waiting(runtime, work, alice, True) == request_id
    resumed["thread"].join(timeout=60)
    assert resumed.get("result", {}).get("done") == "approved by U0ALICE", resumed
    assert ran == [{"customer": "ACME", "amount": 120}]
    assert runtime.store.get_value(f"signoff:gate-use:{request_id}") is not None  # spent
    assert runtime.engine.list_executions()[1] == 1  # one review, however often the node ran


def test_a_denied_call_raises_in_the_graph_and_never_runs(server, runtime, work):  # noqa: F811
    url, token, alice = server
    gate, ran = Gate(url, token), []
    graph = graph_for(gate, ran)
    config = {"configurable": {"thread_id": "t2"}}
    [pending] = graph.invoke({"tool": "payments.refund", "amount": 9000}, config)[
        "__interrupt__"]
    request_id = start_review(gate, pending.value)

    resumed = in_background(lambda: graph.invoke(Command(resume=request_id), config))
    decide_when_waiting(runtime, work, alice, False, "too much")
    resumed["thread"].join(timeout=60)

    error = resumed.get("error")
    assert isinstance(error, Denied), resumed
    assert error.decision.decided_by == "U0ALICE" and error.decision.comment == "too much"
    assert ran == []


def test_allow_and_block_answer_without_pausing(server, runtime):  # noqa: F811
    url, token, _ = server
    gate, ran = Gate(url, token), []
    graph = graph_for(gate, ran)
    done = graph.invoke({"tool": "search.web", "amount": 1}, {"configurable": {"thread_id": "a"}})
    assert done["done"] == "allowed by the policy" and "__interrupt__" not in done
    with pytest.raises(Blocked, match="No shell for agents"):
        graph.invoke({"tool": "shell.execute", "amount": 1}, {"configurable": {"thread_id": "b"}})
    assert ran == [{"customer": "ACME", "amount": 1}]
    assert runtime.engine.list_executions()[1] == 0


def test_a_resume_value_that_is_not_an_approved_request_of_this_call_runs_nothing(
        server, runtime, work):  # noqa: F811
    url, token, alice = server
    gate, ran = Gate(url, token), []
    graph = graph_for(gate, ran)
    # An approved request for another call cannot be replayed into this one.
    other = graph_for(gate, [])
    [first] = other.invoke({"tool": "payments.refund", "amount": 5},
                           {"configurable": {"thread_id": "o"}})["__interrupt__"]
    approved_elsewhere = start_review(gate, first.value)
    decide_when_waiting(runtime, work, alice, True)
    graph.invoke({"tool": "payments.refund", "amount": 5000}, {"configurable": {"thread_id": "x"}})

    with pytest.raises(GateError, match="is for another call"):
        graph.invoke(Command(resume=approved_elsewhere), {"configurable": {"thread_id": "x"}})
    assert ran == []
    # ... and that approval is still unspent, for the call it covers
    assert runtime.store.get_value(f"signoff:gate-use:{approved_elsewhere}") is None
