"""Block Kit for review messages: layout, escaping, limits, and what a closed review looks like."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from bot import texts
from bot.blocks import (
    ACTION_APPROVE,
    ACTION_DENY,
    ACTION_ESCALATE,
    ACTION_RESPOND,
    ACTIONS_BLOCK_ID,
    EVIDENCE_BUDGET,
    ReviewContext,
    decided_message,
    ephemeral_already_decided,
    ephemeral_not_allowed,
    review_message,
)
from bot.forms import ReviewRef
from engine.definition.templates import MarkdownTemplate, render_value
from engine.notify import SYSTEM_TIMEOUT, Actor, ReviewClosed, ReviewRequest
from engine.run.authority import Refusal
from engine.state.execution import iso

# The review step of the Elastic human-in-the-loop example, rendered for one alert
# (docs: explore-analyze/workflows/authoring-techniques/human-in-the-loop).
ELASTIC_MESSAGE = """## Alert on `web-01.prod <!channel>`

**AI classification:** confirmed_compromise

**Rationale:** Beaconing every 60s to <https://evil.example|click here> & 10.0.0.5;
user <@U0BADBAD> ran `curl | sh`.

Isolate this host?
"""
ELASTIC_SCHEMA = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean", "title": "Isolate the host"},
        "notes": {"type": "string", "title": "Analyst notes"},
    },
    "required": ["approved"],
}
DUE = datetime(2026, 11, 22, 14, 2, tzinfo=UTC)


@pytest.fixture
def make_review() -> Callable[..., ReviewRequest]:
    def create(**overrides: Any) -> ReviewRequest:
        fields: dict[str, Any] = {
            "execution_id": "exe_01J9ZK",
            "workflow": "isolate-host-with-approval",
            "step": "review",
            "step_type": "waitForInput",
            "message": ELASTIC_MESSAGE,
            "message_sha256": "0" * 64,
            "schema": ELASTIC_SCHEMA,
            "created_at": datetime(2026, 11, 22, 13, 2, tzinfo=UTC),
            "approvers": ("U012AB3CD", "S0614TZR7"),
            "requested_by": "U0REQUEST",
            "due_at": DUE,
        }
        fields.update(overrides)
        return ReviewRequest(**fields)

    return create


def closed(outcome: str = "approved", actor: Actor | None = None, **overrides: Any) -> ReviewClosed:
    fields: dict[str, Any] = {
        "execution_id": "exe_01J9ZK", "workflow": "isolate-host-with-approval", "step": "review",
        "outcome": outcome, "actor": actor or Actor(id="U0DECIDER", name="ann", source="slack"),
        "at": datetime(2026, 11, 22, 13, 30, tzinfo=UTC),
    }
    fields.update(overrides)
    return ReviewClosed(**fields)


def assert_valid_message(message: dict[str, Any]) -> None:
    """Parses with slack_sdk, passes its validators, and loses nothing on the way."""
    assert 0 < len(message["text"]) <= 3000
    blocks = message["blocks"]
    assert 0 < len(blocks) <= 50
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()
        assert parsed.to_dict() == block
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        for element in block.get("elements", []):
            if element.get("type") == "button":
                assert len(element["text"]["text"]) <= 75
                assert len(element["value"]) <= 2000
                assert len(element["action_id"]) <= 255


def all_text(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False)


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    texts = [message["text"]]
    for block in message["blocks"]:
        if block["type"] == "section":
            texts.append(block["text"]["text"])
        if block["type"] == "context":
            texts.extend(e["text"] for e in block["elements"])
    return texts


def blocks_of(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in message["blocks"] if b["type"] == kind]


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (actions,) = blocks_of(message, "actions")
    return {b["action_id"]: b for b in actions["elements"] if b["type"] == "button"}


# -- the review message ----------------------------------------------------------------------


def test_elastic_example_leads_with_the_decision_then_evidence_then_buttons(
        make_review: Callable[..., ReviewRequest]) -> None:
    review = make_review()
    message = review_message(review, context=ReviewContext.from_review(review))
    assert_valid_message(message)
    kinds = [b["type"] for b in message["blocks"]]
    assert kinds == ["header", "section", "context", "actions"]
    assert message["blocks"][0]["text"]["text"] == "Alert on web-01.prod <!channel>"
    assert message["text"] == "Alert on web-01.prod &lt;!channel&gt;"
    evidence = message["blocks"][1]["text"]["text"]
    assert evidence.startswith("*AI classification:* confirmed_compromise")
    assert "Isolate this host?" in evidence
    assert "`curl | sh`" in evidence


def test_event_values_cannot_mention_or_link(make_review: Callable[..., ReviewRequest]) -> None:
    review = make_review()
    message = review_message(review, context=ReviewContext.from_review(review))
    for text in mrkdwn_texts(message):
        assert "<!channel>" not in text
        assert "<@U0BADBAD>" not in text
        assert "<https://evil" not in text
    evidence = message["blocks"][1]["text"]["text"]
    assert "&lt;@U0BADBAD&gt;" in evidence and "&amp; 10.0.0.5" in evidence


def test_a_message_with_escaped_event_values_shows_them_as_text(
        make_review: Callable[..., ReviewRequest]) -> None:
    template = MarkdownTemplate("{{ title }}\n**Runbook:** {{ link }} ([ours](https://ok.example))"
                                "\n{{ note }}")
    message_md = render_value(template, {
        "title": "## ✅ Pre-approved", "link": "[https://ok.example](https://evil.example)",
        "note": "### Approved by <@U0CISO>"})
    review = make_review(message=message_md)
    message = review_message(review, context=ReviewContext.from_review(review))
    assert_valid_message(message)

    assert blocks_of(message, "header")[0]["text"]["text"] == "## ✅ Pre-approved"
    [evidence] = [b["text"]["text"] for b in blocks_of(message, "section")]
    assert evidence == ("*Runbook:* [https://ok.example](https://evil.example) "
                        "(<https://ok.example|ours>)\n### Approved by &lt;@U0CISO&gt;")
    assert "evil.example|" not in all_text(message) and "<https://evil" not in all_text(message)


def test_context_names_the_run_due_date_and_approvers(
        make_review: Callable[..., ReviewRequest]) -> None:
    review = make_review(approvals_required=2,
                         options={"escalation": [{"approvers": ["U0LEAD"]}]},
                         approvals=({"actor": {"id": "U012AB3CD", "name": "ann"}},))
    context = ReviewContext(approvers=("U012AB3CD", "S0614TZR7", "<!channel>"),
                            requested_by_display="U0REQUEST", level=1, due_at=DUE)
    (block,) = blocks_of(review_message(review, context=context), "context")
    text = "\n".join(e["text"] for e in block["elements"])
    assert "isolate-host-with-approval" in text and "`exe_01J9ZK`" in text and "`review`" in text
    assert "Requested by <@U0REQUEST>" in text
    due = f"<!date^{int(DUE.timestamp())}^{{date_short_pretty}} at {{time}}|2026-11-22 14:02 UTC>"
    assert due in text
    assert "<@U012AB3CD>, <!subteam^S0614TZR7>, &lt;!channel&gt;" in text
    assert "(2 approvals needed)" in text
    assert "Escalated: level 2 of 2" in text
    assert "1 of 2 approvals: <@U012AB3CD>" in text


def test_requested_by_text_is_escaped(make_review: Callable[..., ReviewRequest]) -> None:
    context = ReviewContext(requested_by_display="<!here> bot")
    (block,) = blocks_of(review_message(make_review(), context=context), "context")
    assert any("&lt;!here&gt; bot" in e["text"] for e in block["elements"])


def test_buttons_carry_the_review_reference(make_review: Callable[..., ReviewRequest]) -> None:
    message = review_message(make_review(), context=ReviewContext())
    (actions,) = blocks_of(message, "actions")
    assert actions["block_id"] == ACTIONS_BLOCK_ID
    found = buttons(message)
    assert list(found) == [ACTION_APPROVE, ACTION_DENY, ACTION_ESCALATE, ACTION_RESPOND]
    assert found[ACTION_APPROVE]["style"] == "primary"
    assert found[ACTION_DENY]["style"] == "danger"
    assert found[ACTION_DENY]["confirm"]["confirm"]["text"] == "Deny"
    assert found[ACTION_RESPOND]["text"]["text"] == "Respond…"
    for button in found.values():
        ref = ReviewRef.decode(button["value"])
        assert (ref.execution_id, ref.step) == ("exe_01J9ZK", "review")
        assert " " not in button["value"]
    # Notes are asked for too, but only the decision is required: one click decides.
    assert ReviewRef.decode(found[ACTION_APPROVE]["value"]).one_click is True
    assert ReviewRef.decode(found[ACTION_RESPOND]["value"]).one_click is False


def test_approval_step_uses_its_labels_and_needs_no_respond(
        make_review: Callable[..., ReviewRequest]) -> None:
    from engine.steps.human import APPROVAL_SCHEMA

    review = make_review(step_type="waitForApproval", schema=APPROVAL_SCHEMA,
                         approve_label="Ship it", reject_label="Hold the release")
    message = review_message(review, context=ReviewContext())
    assert_valid_message(message)
    found = buttons(message)
    assert list(found) == [ACTION_APPROVE, ACTION_DENY, ACTION_ESCALATE]
    assert found[ACTION_APPROVE]["text"]["text"] == "Ship it"
    assert found[ACTION_DENY]["text"]["text"] == "Hold the release"
    assert found[ACTION_DENY]["confirm"]["confirm"]["text"] == "Hold the release"


def test_escalate_is_always_offered_until_the_workspace_default_has_the_review(
        make_review: Callable[..., ReviewRequest]) -> None:
    review = make_review(options={"escalation": [{"approvers": ["U0LEAD"]}]})
    assert ACTION_ESCALATE in buttons(review_message(review, context=ReviewContext(level=0)))
    # Past the last level: to the workspace's default target, or to someone the reviewer picks.
    assert ACTION_ESCALATE in buttons(review_message(review, context=ReviewContext(level=1)))
    assert ACTION_ESCALATE in buttons(review_message(make_review(), context=ReviewContext()))
    default = ReviewContext(escalate_to=("S0CISO",))
    assert ACTION_ESCALATE in buttons(review_message(make_review(), context=default))
    reached = make_review(options={"escalation": [{"approvers": ["S0CISO"], "added": "default"}]})
    assert ACTION_ESCALATE not in buttons(review_message(
        reached, context=ReviewContext(level=1, escalate_to=("S0CISO",))))


def test_form_without_decision_offers_only_respond(
        make_review: Callable[..., ReviewRequest]) -> None:
    schema = {"type": "object", "properties": {"ticket": {"type": "string"}},
              "required": ["ticket"]}
    message = review_message(make_review(schema=schema), context=ReviewContext())
    assert list(buttons(message)) == [ACTION_ESCALATE, ACTION_RESPOND]


def test_default_schema_offers_one_click_decision(
        make_review: Callable[..., ReviewRequest]) -> None:
    message = review_message(make_review(schema={"type": "object"}), context=ReviewContext())
    assert list(buttons(message)) == [ACTION_APPROVE, ACTION_DENY, ACTION_ESCALATE]


def test_long_title_is_cut_in_the_header_and_kept_in_the_evidence(
        make_review: Callable[..., ReviewRequest]) -> None:
    title = "Approve " + "very " * 60 + "long change"
    message = review_message(make_review(message=f"# {title}\n\nbody"), context=ReviewContext())
    assert_valid_message(message)
    header = message["blocks"][0]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")
    assert "long change" in message["blocks"][1]["text"]["text"]


def test_message_with_only_a_title(make_review: Callable[..., ReviewRequest]) -> None:
    message = review_message(make_review(message="Deploy **v2**?"), context=ReviewContext())
    assert_valid_message(message)
    assert [b["type"] for b in message["blocks"]] == ["header", "context", "actions"]
    assert message["blocks"][0]["text"]["text"] == "Deploy v2?"


def test_empty_message_falls_back_to_step_and_workflow(
        make_review: Callable[..., ReviewRequest]) -> None:
    message = review_message(make_review(message=""), context=ReviewContext())
    assert_valid_message(message)
    assert message["blocks"][0]["text"]["text"] == "Review review of isolate-host-with-approval"


@pytest.mark.parametrize("body", [
    "\n\n".join(f"Paragraph {i}: " + "evidence <@U1> & more " * 20 for i in range(250)),
    "one enormous paragraph " * 5000,
    "```\n" + "\n".join(f"log line {i} <!channel> & stuff" for i in range(4000)) + "\n```",
    "x" * 100_000,
    "| a | b |\n|---|---|\n" + "\n".join(f"| {i} | {'v' * 30} |" for i in range(3000)),
])
def test_huge_evidence_stays_within_slack_limits(
        make_review: Callable[..., ReviewRequest], body: str) -> None:
    assert len(body) >= 100_000
    review = make_review(message="# Decide now\n\n" + body)
    message = review_message(review, context=ReviewContext.from_review(review))
    assert_valid_message(message)
    sections = blocks_of(message, "section")
    assert sum(len(s["text"]["text"]) for s in sections) <= EVIDENCE_BUDGET + 200
    marker = sections[-1]["text"]["text"]
    assert re.fullmatch(
        r"…truncated, [\d,]+ more characters; full text: `signoff status exe_01J9ZK`", marker)
    assert int(re.search(r"([\d,]+) more", marker).group(1).replace(",", "")) > 80_000  # type: ignore[union-attr]
    for section in sections:
        assert section["text"]["text"].count("```") % 2 == 0
        assert "<!channel>" not in section["text"]["text"]
    assert blocks_of(message, "actions"), "the buttons survive truncation"


def test_evidence_splits_at_paragraph_boundaries(
        make_review: Callable[..., ReviewRequest]) -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 100 for i in range(12)]
    message = review_message(make_review(message="# T\n\n" + "\n\n".join(paragraphs)),
                             context=ReviewContext())
    assert_valid_message(message)
    sections = [s["text"]["text"] for s in blocks_of(message, "section")]
    assert len(sections) > 1
    for section in sections:
        assert section.startswith("Paragraph ")
        assert section.rstrip().endswith("word")
    assert "truncated" not in sections[-1]


# -- once closed -----------------------------------------------------------------------------


def test_decided_message_replaces_buttons_with_who_and_when(
        make_review: Callable[..., ReviewRequest]) -> None:
    review = make_review()
    done = closed("submitted", input={"approved": True,
                                      "notes": "Confirmed <!here> malicious.\nIsolating."})
    message = decided_message(review, done)
    assert_valid_message(message)
    assert not blocks_of(message, "actions")
    assert message["blocks"][0] == review_message(review, context=ReviewContext())["blocks"][0]
    texts = [s["text"]["text"] for s in blocks_of(message, "section")]
    at = int(done.at.timestamp())
    assert (f"✅ Approved by <@U0DECIDER> at <!date^{at}^{{date_short_pretty}} {{time}}"
            f"|2026-11-22 13:30 UTC>") in texts
    notes = next(t for t in texts if "Analyst notes" in t)
    assert notes == "*Analyst notes:*\n> Confirmed &lt;!here&gt; malicious.\n> Isolating."
    assert message["text"].startswith("✅ Approved: Alert on web-01.prod &lt;!channel&gt;")


@pytest.mark.parametrize(("outcome", "actor", "starts"), [
    ("denied", Actor(id="U0DECIDER", source="slack"), "❌ Denied by <@U0DECIDER> at <!date^"),
    ("approved", Actor(id="api:<!channel>", name="deploy <bot>", source="api"),
     "✅ Approved by deploy &lt;bot&gt; at <!date^"),
    ("approved", Actor(id="cli:ops", source="cli"), "✅ Approved by cli:ops at <!date^"),
    ("timed_out", SYSTEM_TIMEOUT, "⏱ Timed out at <!date^"),
    ("cancelled", Actor(id="U0OPS", source="slack"), "🚫 Cancelled by <@U0OPS> at <!date^"),
    ("failed", Actor(id="system:runner", source="system"), "⚠️ Failed at <!date^"),
])
def test_each_outcome_has_its_line(make_review: Callable[..., ReviewRequest], outcome: str,
                                   actor: Actor, starts: str) -> None:
    message = decided_message(make_review(), closed(outcome, actor, reason="SLA <!here> passed"))
    assert_valid_message(message)
    line = [s["text"]["text"] for s in blocks_of(message, "section")][-1]
    assert line.startswith(starts)
    assert line.endswith("\nReason: SLA &lt;!here&gt; passed")


def test_submitted_false_decision_reads_as_denied(
        make_review: Callable[..., ReviewRequest]) -> None:
    message = decided_message(make_review(), closed("submitted", input={"approved": False}))
    assert any(s["text"]["text"].startswith("❌ Denied by")
               for s in blocks_of(message, "section"))


def test_answer_pickers_are_mentioned_other_values_escaped(
        make_review: Callable[..., ReviewRequest]) -> None:
    schema = {"type": "object", "properties": {
        "approved": {"type": "boolean"},
        "owner": {"type": "string", "x-slack-input": "users_select", "title": "Owner"},
        "rooms": {"type": "array", "x-slack-input": "multi_conversations_select"},
        "severity": {"enum": [1, 2, 3]},
        "rollback": {"type": "boolean"},
    }}
    answer = {"approved": True, "owner": "U0OWNER", "rooms": ["C0ROOM", "<!channel>"],
              "severity": 2, "rollback": False}
    message = decided_message(make_review(schema=schema), closed(input=answer))
    texts = "\n".join(s["text"]["text"] for s in blocks_of(message, "section"))
    assert "*Owner:* <@U0OWNER>" in texts
    assert "*Rooms:* <#C0ROOM>, &lt;!channel&gt;" in texts
    assert "*Severity:* 2" in texts and "*Rollback:* No" in texts


def test_decided_message_of_huge_review_stays_valid(
        make_review: Callable[..., ReviewRequest]) -> None:
    review = make_review(message="# T\n\n" + "lots of text\n\n" * 20_000)
    message = decided_message(review, closed(input={"notes": "n" * 10_000}))
    assert_valid_message(message)


def test_ephemeral_replies(make_review: Callable[..., ReviewRequest]) -> None:
    reply = ephemeral_already_decided(closed("denied"))
    assert reply["text"].startswith("This review is already closed: ❌ Denied by <@U0DECIDER>")
    assert ephemeral_not_allowed("you asked for it <!here>") == {
        "text": "You can't decide this review: you asked for it &lt;!here&gt;"}


def test_every_refusal_the_engine_gives_reads_as_a_sentence() -> None:
    assert set(texts.REFUSALS) == set(Refusal)
    assert ephemeral_not_allowed(texts.REFUSALS[Refusal.SELF_APPROVAL]) == {
        "text": "You can't decide this review: you requested this run, and its step does not "
                "allow self-approval."}


def test_review_reference_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        ReviewRef.decode("not json")
    with pytest.raises(ValueError):
        ReviewRef.decode('{"step": "x"}')


def test_reassign_sits_in_an_overflow_menu_or_a_button_when_the_reference_is_long(
        make_review: Callable[..., ReviewRequest]) -> None:
    from bot.blocks import ACTION_REASSIGN

    def reassign(message: dict[str, Any]) -> dict[str, Any]:
        (actions,) = blocks_of(message, "actions")
        return next(e for e in actions["elements"] if e["action_id"] == ACTION_REASSIGN)

    review = make_review()
    short = reassign(review_message(review, context=ReviewContext()))
    assert short["type"] == "overflow" and short["options"][0]["text"]["text"] == "Reassign…"
    assert ReviewRef.decode(short["options"][0]["value"]) == ReviewRef(
        "exe_01J9ZK", "review", since=iso(review.created_at))
    long_step = make_review(step="s" * 120)
    message = review_message(long_step, context=ReviewContext())
    assert_valid_message(message)
    assert reassign(message)["type"] == "button"
    (actions,) = blocks_of(review_message(make_review(approvers=()), context=ReviewContext()),
                           "actions")
    assert ACTION_REASSIGN not in [e["action_id"] for e in actions["elements"]]


def test_a_review_time_decided_reads_as_timed_out(
        make_review: Callable[..., ReviewRequest]) -> None:
    message = decided_message(make_review(), closed(
        "denied", SYSTEM_TIMEOUT, input={"approved": False},
        reason="SLA of 30m passed at the last level; on-timeout: deny applied"))
    line = [s["text"]["text"] for s in blocks_of(message, "section")][-1]
    assert line.startswith("⏱ Timed out at <!date^")
    assert line.endswith("Reason: SLA of 30m passed at the last level; on-timeout: deny applied")
