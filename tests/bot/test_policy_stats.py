"""/approvals stats on the agent and CI gate's policy: graduation and shadow rules, through
the Slack emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.settings import BotSettings
from engine.definition.policy import PolicySource
from engine.notify import Actor
from engine.run.gate import Gate, ToolCall
from engine.run.graduation import DEFAULT_LAST
from tests.bot.conftest import Signoff
from tests.bot.test_approvals import approvals

POLICY = """\
rules:
  - tool: "email.send"
    action: escalate
    approvers: [U0ALICE]
  - tool: "deploy.*"
    action: escalate
    approvers: [U0ALICE]
  - tool: "search.*"
    action: allow
  - tool: "search.internal"
    action: block
    shadow: true
    reason: "trying it out"
  - tool: "files.*"
    action: allow
    shadow: true
default: escalate
"""

AGENT = Actor(id="agent-1", name="agent-1", source="api")
ALICE = Actor(id="U0ALICE", name="alice", source="slack")


def decided(signoff: Signoff, gate: Gate, tool: str, args: dict[str, Any], approved: bool) -> str:
    """Ask for ``tool`` through the gate, and decide its review as alice."""
    request_id = gate.check(ToolCall(tool, args), requester="agent-1", actor=AGENT,
                            principal="agent-1").request_id
    assert request_id is not None
    signoff.drain()
    signoff.engine.resume(request_id, {"approved": approved}, ALICE)
    signoff.drain()
    return request_id


def policy_sections(body: dict[str, Any]) -> list[str]:
    headers = [b["text"]["text"] for b in body["blocks"] if b["type"] == "header"]
    assert headers[-1] == "Agent and CI policy", headers
    start = max(i for i, b in enumerate(body["blocks"]) if b["type"] == "header")
    return [b["text"]["text"] for b in body["blocks"][start:] if b["type"] == "section"]


def test_stats_name_the_rules_reviewers_always_approve_with_the_allow_rule_to_replace_them(
        start_signoff: Callable[..., Signoff], bot_settings: BotSettings, tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    signoff = start_signoff(bot_settings, policy=str(policy))
    gate = Gate(signoff.engine, PolicySource(policy))
    for n in range(DEFAULT_LAST):
        decided(signoff, gate, "email.send", {"to": "jane@example.test", "count": n}, True)
    for n in range(DEFAULT_LAST):  # all approved but one: not a candidate
        decided(signoff, gate, "deploy.prod", {"sha": f"abc{n}"}, n != 4)

    body = approvals(signoff, "U0BOB", "stats")

    [graduation, *shadows] = policy_sections(body)
    assert graduation.startswith(
        f"🎓 Escalating rule `email.send` ({policy}:2:5): its last {DEFAULT_LAST} decisions "
        "were all approvals (by U0ALICE). An allow rule could replace it:")
    assert '- tool: "email.send"\n  action: allow\n' in graduation
    assert 'when: "args.count &lt;= 9 and args.to : (\\"jane@example.test\\")"' in graduation
    assert "deploy" not in graduation
    # Shadow rules that matched nothing yet are listed with zero calls.
    assert shadows == [
        f"👤 Shadow rule `search.internal` ({policy}:10:5), `block`: matched 0 calls; "
        "enforced, it would have changed the decision of 0.",
        f"👤 Shadow rule `files.*` ({policy}:14:5), `allow`: matched 0 calls; "
        "enforced, it would have changed the decision of 0."]

    # One more deploy approval still leaves the denial among the last ten: still no candidate;
    # a denial of the e-mail takes it off the list.
    decided(signoff, gate, "email.send", {"to": "jane@example.test", "count": 99}, False)
    after = policy_sections(approvals(signoff, "U0BOB", "stats"))
    assert not any(s.startswith("🎓") for s in after)


def test_shadow_rules_count_the_calls_they_match_and_those_they_would_change(
        start_signoff: Callable[..., Signoff], bot_settings: BotSettings, tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    signoff = start_signoff(bot_settings, policy=str(policy))
    gate = Gate(signoff.engine, PolicySource(policy))
    for query in ("a", "b", "c"):  # allowed by search.*; the shadow block would change that
        answer = gate.check(ToolCall("search.internal", {"q": query}), requester="agent-1",
                            actor=AGENT, principal="agent-1")
        assert answer.decision.action.value == "allow"
    gate.check(ToolCall("search.web", {"q": "d"}), requester="agent-1", actor=AGENT,
               principal="agent-1")  # no shadow rule matches: nothing counted
    # files.read escalates by default (no enforced rule matches); the shadow allow would
    # allow it, then: a change.
    answer = gate.check(ToolCall("files.read", {"path": "/etc/hosts"}), requester="agent-1",
                        actor=AGENT, principal="agent-1")
    assert answer.decision.action.value == "escalate"

    shadows = policy_sections(approvals(signoff, "U0ALICE", "stats"))

    assert shadows == [
        f"👤 Shadow rule `search.internal` ({policy}:10:5), `block`: matched 3 calls; "
        "enforced, it would have changed the decision of 3.",
        f"👤 Shadow rule `files.*` ({policy}:14:5), `allow`: matched 1 call; "
        "enforced, it would have changed the decision of 1."]


def test_stats_without_a_policy_say_nothing_of_one(signoff: Signoff):
    body = approvals(signoff, "U0ALICE", "stats")
    assert [b["text"]["text"] for b in body["blocks"] if b["type"] == "header"] == [
        "Review stats, last 7 days"]


def test_a_broken_policy_is_said_so_in_the_stats(
        start_signoff: Callable[..., Signoff], bot_settings: BotSettings, tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - tool: x\n    action: maybe\n")
    signoff = start_signoff(bot_settings, policy=str(policy))

    [problem] = policy_sections(approvals(signoff, "U0ALICE", "stats"))

    assert problem.startswith("⚠️ The policy (SIGNOFF_POLICY) has 1 problem:")
