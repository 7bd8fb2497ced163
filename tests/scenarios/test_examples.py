"""Every example workflow, validated and run through Slack as its comment says it behaves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.blocks import ACTION_APPROVE, ACTION_DENY
from engine.cli import main as signoff
from engine.state.execution import ExecutionStatus, StepStatus, parse_iso
from tests.bot.conftest import REVIEWS, Signoff
from tests.scenarios.conftest import EXAMPLES, example


def test_every_example_passes_signoff_validate(capsys):
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == [
        "access-request.yaml", "change-risk-gate.yaml", "isolate-host.yaml",
        "phishing-triage.yaml", "post-hoc-review.yaml", "refund-approval.yaml"]
    assert signoff(["validate", str(EXAMPLES)]) == 0
    assert "all workflows are valid" in capsys.readouterr().out


def review_message(signoff: Signoff) -> dict[str, Any]:
    [message] = signoff.messages(REVIEWS)
    return message


def buttons(message: dict[str, Any]) -> list[str]:
    return [element["text"]["text"] for block in message["blocks"] if block["type"] == "actions"
            for element in block["elements"] if element["type"] == "button"]


def calls(target: Any) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in target.requests]


def body_of(target: Any, path: str) -> Any:
    [found] = [r["body"] for r in target.requests if r["path"] == path]
    return found


def refusals(signoff: Signoff, user: str) -> list[str]:
    return [text for text in signoff.ephemerals(user) if text.startswith("You can't decide")]


def test_isolate_host_isolates_only_after_an_approval(signoff: Signoff, target):
    event = {"alerts": [{"host": {"name": "web-prod-07"}, "rule": {"name": "C2 beaconing"}}],
             "inputs": {"edr_url": target.url}}
    execution_id = signoff.run(example("isolate-host"), event)
    assert calls(target) == ["POST /cases"]
    message = review_message(signoff)
    assert message["blocks"][0]["text"]["text"] == "Isolate web-prod-07?"

    # carol is the lead, not in SOC L1: she may decide only once the review escalates to her.
    assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert refusals(signoff, "U0CAROL")
    assert calls(target) == ["POST /cases"]

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()

    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    case_id = signoff.engine.get(execution_id).results["open_case"].output["data"]["id"]
    assert calls(target) == ["POST /cases", "POST /isolate", f"POST /cases/{case_id}/comments"]
    assert body_of(target, "/isolate")["host"] == "web-prod-07"
    comment = body_of(target, f"/cases/{case_id}/comments")["comment"]
    assert "**Decision:** isolated by alice" in comment


def test_isolate_host_escalates_to_the_lead_when_soc_l1_misses_its_sla(signoff: Signoff,
                                                                       target):
    event = {"alerts": [{"host": {"name": "web-prod-07"}, "rule": {"name": "C2 beaconing"}}],
             "inputs": {"edr_url": target.url}}
    execution_id = signoff.run(example("isolate-host"), event)
    message = review_message(signoff)
    waiting = signoff.engine.get(execution_id).waiting
    assert waiting is not None and waiting.level_due is not None

    # SOC L1's 15 minutes pass undecided.
    signoff.engine.clock = lambda: parse_iso(waiting.level_due) + timedelta(seconds=1)
    assert signoff.engine.review_timer(execution_id, "review", 0, "sla") is True
    signoff.drain()

    assert [r["text"] for r in signoff.slack.workspace.replies(REVIEWS, message["ts"])] == [
        "⬆️ Escalated to <@U0CAROL>: SLA of 15m passed"]
    [lead_copy] = [m for m in signoff.messages("D0CAROL") if "Reminder" not in m["text"]]
    assert "Isolate web-prod-07?" in str(lead_copy["blocks"])
    assert ACTION_APPROVE in [e["action_id"] for b in lead_copy["blocks"]
                              if b["type"] == "actions" for e in b["elements"]]
    assert calls(target) == ["POST /cases"]

    assert signoff.driver.click("U0CAROL", ("D0CAROL", lead_copy["ts"]), ACTION_APPROVE).ok
    signoff.drain()

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["review"].resumed_by["id"] == "U0CAROL"
    assert "POST /isolate" in calls(target)
    assert body_of(target, "/isolate")["host"] == "web-prod-07"


PHISH = {"report": {"message_id": "<a1@evil.test>", "subject": "Your invoice is overdue",
                    "sender": "billing@evil.test", "reporter": "carol@signoff.test",
                    "urls": ["https://evil.test/pay"]}}


def test_phishing_triage_asks_the_analyst_for_a_verdict_and_a_ticket(signoff: Signoff, target):
    execution_id = signoff.run(example("phishing-triage"),
                               {**PHISH, "inputs": {"mail_api": target.url}})
    message = review_message(signoff)
    assert "Phishing report" in message["blocks"][0]["text"]["text"]

    # carol is not in the SOC L1 group.
    assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert refusals(signoff, "U0CAROL")

    # bob is: Approve opens the form, the decision already set.
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    [modal] = signoff.slack.workspace.views.modals("U0BOB")
    kinds = {b["block_id"]: b["element"]["type"] for b in modal["blocks"] if b["type"] == "input"}
    assert kinds == {"approved": "radio_buttons", "verdict": "radio_buttons",
                     "ticket": "plain_text_input", "block_sender": "checkboxes",
                     "notes": "plain_text_input"}
    wrong = signoff.driver.submit_view("U0BOB", modal["id"],
                                       {"verdict": '"phishing"', "ticket": "tomorrow"})
    assert wrong.body["response_action"] == "errors" and set(wrong.body["errors"]) == {"ticket"}

    right = signoff.driver.submit_view("U0BOB", modal["id"], {
        "verdict": '"phishing"', "ticket": "INC-20431", "block_sender": ["true"]})
    assert right.ok
    signoff.drain()

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert calls(target) == ["POST /mail/search", "POST /mail/purge", "POST /mail/block-sender",
                             "POST /mail/notify"]
    assert body_of(target, "/mail/block-sender") == {"sender": "billing@evil.test",
                                                     "ticket": "INC-20431"}
    assert body_of(target, "/mail/notify")["text"] == (
        "Thanks: the message was judged phishing by bob.")


def access(level: str, target: Any) -> dict[str, Any]:
    return {"request": {"user": "dave", "resource": "prod-db", "role": "admin" if level !=
                        "standard" else "read", "level": level, "duration": "4h",
                        "justification": "INC-20431 data fix", "owner": "alice@signoff.test"},
            "inputs": {"iam_url": target.url}}


def test_standard_access_is_granted_by_policy_without_asking_anyone(signoff: Signoff, target):
    execution_id = signoff.run(example("access-request"), access("standard", target))

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert signoff.messages(REVIEWS) == []
    assert body_of(target, "/grants")["approved_by"] == "policy: standard access"


def test_privileged_access_waits_for_the_resource_owner_alone(signoff: Signoff, target):
    execution_id = signoff.run(example("access-request"), access("privileged", target))
    message = review_message(signoff)
    assert buttons(message) == ["Grant access", "Refuse", "Escalate"]
    assert calls(target) == []

    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert refusals(signoff, "U0BOB") == [
        "You can't decide this review: you are not one of its approvers."]
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert body_of(target, "/grants") == {"user": "dave", "resource": "prod-db", "role": "admin",
                                          "expires_in": "4h", "approved_by": "alice"}


def change(score: int, target: Any) -> dict[str, Any]:
    return {"change": {"id": "CHG-1042", "service": "checkout", "version": "2.14.0",
                       "summary": "new payment retry policy", "score": score,
                       "reasons": ["touches payments", "no canary"]},
            "inputs": {"deploy_url": target.url}}


def test_a_change_scoring_85_or_more_deploys_without_a_review(signoff: Signoff, target):
    execution_id = signoff.run(example("change-risk-gate"), change(85, target))

    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert signoff.messages(REVIEWS) == []
    deployed = body_of(target, "/deployments")
    assert deployed["approved_by"] == "policy: score 85 >= 85" and deployed["at"] == "now"


def test_a_lower_score_needs_two_engineers_to_approve(signoff: Signoff, target):
    execution_id = signoff.run(example("change-risk-gate"), change(62, target))
    message = review_message(signoff)
    assert "Risk score:* 62" in str(message["blocks"])
    assert "(2 approvals needed)" in str(message["blocks"])

    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert refusals(signoff, "U0BOB")  # bob is not one of the approvers
    assert calls(target) == []

    assert signoff.driver.click("U0DAVE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    message = review_message(signoff)
    assert "1 of 2 approvals: <@U0DAVE>" in str(message["blocks"])
    assert calls(target) == []

    assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert calls(target) == ["POST /deployments"]
    assert body_of(target, "/deployments")["approved_by"] == "carol"


REFUND = {"refund": {"amount": 249.0, "currency": "EUR", "customer": "Jane Roe",
                     "order": "ORD-88213", "reason": "parcel lost", "agent": "carol",
                     "ticket": "T-5521"}}


def test_a_refund_is_paid_out_once_finance_says_pay_out(signoff: Signoff, target):
    execution_id = signoff.run(example("refund-approval"),
                               {**REFUND, "inputs": {"payments_url": target.url}})
    message = review_message(signoff)
    assert buttons(message) == ["Pay out", "Refuse refund", "Escalate"]

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert body_of(target, "/payouts") == {"order": "ORD-88213", "amount": 249.0,
                                           "currency": "EUR"}
    assert body_of(target, "/tickets/T-5521/replies")["text"] == "Your refund is on its way."


def test_a_refund_nobody_decides_in_time_is_refused_not_paid(signoff: Signoff, target):
    execution_id = signoff.run(example("refund-approval"),
                               {**REFUND, "inputs": {"payments_url": target.url}})
    waiting = signoff.engine.get(execution_id).waiting
    assert waiting is not None and waiting.due_at is not None

    signoff.engine.clock = lambda: parse_iso(waiting.due_at) + timedelta(seconds=1)
    assert signoff.engine.step_timed_out(execution_id, "review") is True
    signoff.drain()

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["payout"].status is StepStatus.SKIPPED
    assert calls(target) == ["POST /tickets/T-5521/replies"]
    assert body_of(target, "/tickets/T-5521/replies")["decided_by"] == "system:timeout"
    assert buttons(review_message(signoff)) == []  # the message says it is closed


LOCK = {"account": "j.doe", "reason": "impossible travel, then a new MFA device",
        "agent": "the triage agent"}


def test_post_hoc_review_acts_first_and_can_undo_afterwards(signoff: Signoff, target):
    execution_id = signoff.run(example("post-hoc-review"),
                               {**LOCK, "inputs": {"iam_url": target.url}})
    assert calls(target) == ["POST /accounts/j.doe/lock"]  # before anyone was asked
    message = review_message(signoff)
    assert message["blocks"][0]["text"]["text"] == "Was locking j.doe right?"

    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_DENY).ok
    signoff.drain()

    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert calls(target) == ["POST /accounts/j.doe/lock", "POST /accounts/j.doe/unlock"]
