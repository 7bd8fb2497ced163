"""`signoff mcp` as an agent runs it: a real process on stdio, driven by the mcp package's own
client, in front of a real server (loopback HTTP, Redis, RQ jobs); reviews decided on the API."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from engine.definition.policy import PolicySource
from engine.gate_api import gate_extension
from engine.run.gate import Gate as ServerGate
from engine.state import tokens
from tests.support.services import ROOT, free_port

POLICY = textwrap.dedent("""\
    rules:
      - {tool: "search.web", action: allow}
      - {tool: "shell.execute", action: block, reason: "No shell for agents"}
      - tool: "payments.refund"
        action: escalate
        reason: "Money leaves the company"
        approvers: ["U0ALICE"]
""")


@pytest.fixture
def server(runtime, served, settings, tmp_path):
    (tmp_path / "policy.yml").write_text(POLICY)
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir), api_token="x",
                    extensions=[gate_extension(ServerGate(runtime.engine,
                                                          PolicySource(tmp_path / "policy.yml")))])
    web = served(app)
    secrets = {}
    for name, scopes, principal in (("agent", "run,read", "agent-1"),
                                    ("alice", "decide", "U0ALICE")):
        secret, record = tokens.issue(name, tokens.parse_scopes(scopes), principal, "")
        runtime.store.add_token(record, tokens.digest(secret))
        secrets[name] = secret
    alice = web.client(headers={"Authorization": f"Bearer {secrets['alice']}"})
    yield web.url, secrets["agent"], alice
    alice.close()


def session_of(url: str, token: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "engine.cli", "mcp"],
                                 cwd=ROOT, env={**os.environ, "SIGNOFF_URL": url,
                                                "SIGNOFF_API_TOKEN": token})


def answer(result: Any) -> dict[str, Any]:
    """A tool's answer, from its structured content, checked against its text."""
    assert not result.is_error, result
    assert json.loads(result.content[0].text) == result.structured_content
    return dict(result.structured_content)


def talk(url: str, token: str, script: Any) -> Any:
    async def run() -> Any:
        async with stdio_client(session_of(url, token)) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            return await script(session)

    return asyncio.run(run())


def test_the_tools_check_request_and_await_approvals(server, runtime, work):
    url, token, alice = server

    async def ask(session: ClientSession) -> tuple[Any, ...]:
        names = {tool.name for tool in (await session.list_tools()).tools}
        allowed = answer(await session.call_tool("check_policy", {"tool": "search.web"}))
        policy = answer(await session.call_tool("check_policy", {"tool": "payments.refund",
                                                                 "args": {"amount": 5}}))
        blocked = answer(await session.call_tool("request_approval",
                                                 {"tool": "shell.execute", "args": {}}))
        pending = answer(await session.call_tool(
            "request_approval", {"tool": "payments.refund", "args": {"amount": 70},
                                 "summary": "refund ACME", "timeout": 0}))
        return names, allowed, policy, blocked, pending

    names, allowed, policy, blocked, pending = talk(url, token, ask)
    assert {"check_policy", "request_approval", "await_approval", "approval_prompt"} <= names
    assert allowed["status"] == "allowed"
    assert policy["status"] == "escalate" and policy["request_id"] is None
    assert (blocked["status"], blocked["reason"]) == ("blocked", "No shell for agents")
    assert pending["status"] == "pending" and pending["args"] == {"amount": 70}
    request_id = pending["request_id"]

    work()
    assert alice.post(f"/api/workflowExecutions/{request_id}/resume",
                      json={"approved": True, "comment": "fine"}).status_code == 200
    work()

    async def await_it(session: ClientSession) -> dict[str, Any]:
        return answer(await session.call_tool("await_approval", {"request_id": request_id}))

    approved = talk(url, token, await_it)
    assert (approved["status"], approved["decided_by"], approved["comment"]) == \
        ("approved", "U0ALICE", "fine")
    assert approved["args"] == {"amount": 70}
    # handed to the agent, the approval is spent: it cannot be handed out again
    assert runtime.store.get_value(f"signoff:gate-use:{request_id}") is not None
    again = talk(url, token, lambda session: session.call_tool(
        "await_approval", {"request_id": request_id}))
    assert again.is_error


def test_a_denied_request_and_the_permission_prompt(server, runtime, work):
    url, token, alice = server

    async def request(session: ClientSession) -> dict[str, Any]:
        return answer(await session.call_tool(
            "request_approval", {"tool": "payments.refund", "args": {"amount": 900},
                                 "timeout": 0}))

    request_id = talk(url, token, request)["request_id"]
    work()
    alice.post(f"/api/workflowExecutions/{request_id}/resume",
               json={"approved": False, "comment": "no"})
    work()

    async def prompts(session: ClientSession) -> tuple[Any, ...]:
        denied = answer(await session.call_tool("await_approval", {"request_id": request_id}))
        allow = await session.call_tool("approval_prompt", {"tool_name": "search.web",
                                                            "input": {"q": "rq"}})
        deny = await session.call_tool("approval_prompt", {"tool_name": "shell.execute",
                                                           "input": {"cmd": "ls"}})
        return denied, json.loads(allow.content[0].text), json.loads(deny.content[0].text)

    denied, allow, deny = talk(url, token, prompts)
    assert (denied["status"], denied["decided_by"], denied["comment"]) == \
        ("denied", "U0ALICE", "no")
    assert allow == {"behavior": "allow", "updatedInput": {"q": "rq"}}
    assert deny["behavior"] == "deny" and "No shell for agents" in deny["message"]


def test_the_permission_prompt_denies_when_signoff_is_unreachable():
    async def prompt(session: ClientSession) -> dict[str, Any]:
        result = await session.call_tool("approval_prompt", {"tool_name": "search.web",
                                                             "input": {}})
        return dict(json.loads(result.content[0].text))

    said = talk(f"http://127.0.0.1:{free_port()}", "t", prompt)
    assert said["behavior"] == "deny" and "could not decide" in said["message"]
