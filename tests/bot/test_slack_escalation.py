"""SLA reminders and escalation, manual Escalate, quorum and Reassign, through the Slack emulator.

One story runs on real timers: a `signoff worker` process with RQ's scheduler acts on
deadlines seconds apart. The others move the engine's clock, as the engine's own
tests do, so they stay fast and exact.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from bot.blocks import (
    ACTION_APPROVE,
    ACTION_ESCALATE,
    ACTION_REASSIGN,
    APPROVER_BLOCK,
    REASON_BLOCK,
)
from engine.definition.loader import parse_workflow
from engine.notify import Actor
from engine.state.execution import ExecutionStatus, parse_iso
from slack_emulator import SlackApiFailure
from tests.bot.conftest import REVIEWS, Signoff
from tests.support.services import WorkerProcess, wait_until

CHAIN = """
name: contain
steps:
  - name: review
    type: waitForInput
    with:
      message: "Isolate {{{{ event.host }}}}?"
      approvers: [U0ALICE]
      sla: {sla0}
      remind: {remind}
      escalation:
        - approvers: [U0CAROL]
          sla: {sla1}
        - approvers: [S0ONCALL]
          sla: {sla2}
      on-timeout: deny
  - name: after
    type: console
    with:
      message: "{{{{ steps.review.output.approved }}}} by {{{{ steps.review.resumedBy.id }}}}"
"""
SLOW = {"sla0": "1h", "remind": "30m", "sla1": "1h", "sla2": "1h"}


def only(signoff: Signoff, channel: str = REVIEWS) -> dict[str, Any]:
    [message] = signoff.messages(channel)
    return message


def text_of(message: dict[str, Any]) -> str:
    return str(message.get("text", "")) + str(message.get("blocks", ""))


def action_ids(message: dict[str, Any]) -> list[str]:
    actions = [b for b in message.get("blocks", []) if b["type"] == "actions"]
    return [e["action_id"] for block in actions for e in block["elements"]]


def replies(signoff: Signoff, message: dict[str, Any], channel: str = REVIEWS) -> list[str]:
    return [r["text"] for r in signoff.slack.workspace.replies(channel, message["ts"])]


def dm_texts(signoff: Signoff, user_dm: str) -> list[str]:
    try:
        return [text_of(m) for m in signoff.messages(user_dm)]
    except SlackApiFailure:  # the DM was never opened
        return []


def review_copy(signoff: Signoff, user_dm: str) -> dict[str, Any]:
    """The review as DM'd to one person (reminders, which may come too, left aside)."""
    [copy] = [m for m in signoff.messages(user_dm) if "Reminder" not in m["text"]]
    return copy


def audit(signoff: Signoff, execution_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.event for e in signoff.engine.audit_entries(execution_id)
            if e.event["type"] == kind]


def modal(signoff: Signoff, user: str) -> dict[str, Any]:
    [view] = signoff.slack.workspace.views.modals(user)
    return view


# -- real timers -------------------------------------------------------------------------------

def test_reminder_then_escalations_then_on_timeout_deny_on_real_timers(
        signoff: Signoff, worker_process: Callable[..., WorkerProcess]):
    slack = signoff.slack
    worker_process(extra_env={"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url,
                              "SIGNOFF_SLACK_CHANNEL": REVIEWS})
    text = CHAIN.format(sla0="2s", remind="500ms", sla1="1s", sla2="1s")
    execution_id = signoff.engine.run(parse_workflow(text), {"host": "db-2"})
    wait_until(lambda: signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED,
               timeout=30, message="the chain to run out and on-timeout to deny")
    wait_until(lambda: "Timed out" in text_of(only(signoff)), timeout=10,
               message="the review message to say it timed out")
    wait_until(lambda: "Timed out" in text_of(review_copy(signoff, "D0DAVE")), timeout=10,
               message="the on-call DM to say it timed out")

    state = signoff.engine.get(execution_id)
    assert state.results["after"].output == "false by system:timeout"

    # What Slack was asked to do, in order.
    story = []
    for method, params in slack.calls:
        if method not in ("chat.postMessage", "chat.update"):
            continue
        said = str(params.get("text", "")) + str(params.get("blocks", ""))
        where = str(params["channel"])
        if method == "chat.postMessage" and params.get("thread_ts"):
            story.append(("reply", where, said))
        elif method == "chat.postMessage":
            story.append(("reminder" if "Reminder" in said else "review", where, said))
        else:
            story.append(("update", where, said))

    def first(kind: str, where: str, *needles: str) -> int:
        return next(i for i, (k, w, s) in enumerate(story)
                    if k == kind and w == where and all(n in s for n in needles))

    posted = first("review", REVIEWS, "Isolate db-2?")
    reminded = first("reminder", "D0ALICE", "Isolate db-2?", "<!date^",
                     "https://signoff-dev.slack.com/archives/C0REVIEWS/")
    to_lead = first("review", "D0CAROL", "Isolate db-2?", ACTION_APPROVE)
    lead_note = first("reply", REVIEWS, "Escalated to <@U0CAROL>: SLA of 2s passed")
    level2 = first("update", REVIEWS, "Escalated: level 2 of 3", "<@U0CAROL>")
    to_oncall = first("review", "D0DAVE", "Isolate db-2?", ACTION_APPROVE)
    oncall_note = first("reply", REVIEWS, "Escalated to <!subteam^S0ONCALL>: SLA of 1s passed")
    level3 = first("update", REVIEWS, "Escalated: level 3 of 3")
    timed_out = first("update", REVIEWS, "Timed out",
                      "SLA of 1s passed at the last level; on-timeout: deny applied")
    assert posted < reminded < to_lead < lead_note < level2 < to_oncall < oncall_note < level3
    assert level3 < timed_out
    # The lead's own copy hears about the second escalation too, and closes with the rest.
    first("reply", "D0CAROL", "Escalated to <!subteam^S0ONCALL>")

    final = only(signoff)
    assert ACTION_APPROVE not in action_ids(final)
    assert replies(signoff, final) == [
        "⬆️ Escalated to <@U0CAROL>: SLA of 2s passed",
        "⬆️ Escalated to <!subteam^S0ONCALL>: SLA of 1s passed"]
    for dm in ("D0CAROL", "D0DAVE"):
        copy = review_copy(signoff, dm)
        assert "on-timeout: deny applied" in text_of(copy) and not action_ids(copy)
    assert len(audit(signoff, execution_id, "review.escalated")) == 2


# -- a moved clock -----------------------------------------------------------------------------

def test_a_decision_one_instant_before_the_deadline_stops_the_escalation(signoff: Signoff):
    execution_id = signoff.run(CHAIN.format(**SLOW), {"host": "web-1"})
    message = only(signoff)
    due = parse_iso(signoff.engine.get(execution_id).waiting.level_due)
    assert due is not None and f"<!date^{int(due.timestamp())}^" in text_of(message)

    signoff.engine.clock = lambda: due - timedelta(milliseconds=1)
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()  # a worker records the click's decision, a millisecond before the SLA
    signoff.engine.clock = lambda: due + timedelta(milliseconds=1)
    assert signoff.engine.review_timer(execution_id, "review", 0, "sla") is False
    signoff.drain()

    assert signoff.engine.get(execution_id).results["after"].output == "true by U0ALICE"
    assert audit(signoff, execution_id, "review.escalated") == []
    assert dm_texts(signoff, "D0CAROL") == []
    assert replies(signoff, only(signoff)) == []
    assert "Approved by <@U0ALICE>" in text_of(only(signoff))


def test_manual_escalation_asks_why_and_is_refused_past_the_last_level(signoff: Signoff):
    execution_id = signoff.run(CHAIN.format(**SLOW), {"host": "web-1"})
    message = only(signoff)
    assert ACTION_ESCALATE in action_ids(message)

    # Only approvers may escalate.
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_ESCALATE).ok
    signoff.drain()
    assert signoff.ephemerals("U0BOB") == [
        "You can't decide this review: you are not one of its approvers."]
    assert signoff.slack.workspace.views.modals("U0BOB") == []

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_ESCALATE).ok
    asked = modal(signoff, "U0ALICE")
    assert "level 2 of 3" in text_of(asked) and "<@U0CAROL>" in text_of(asked)
    answer = signoff.driver.submit_view("U0ALICE", asked["id"], {REASON_BLOCK: "  "})
    assert answer.body == {"response_action": "errors",
                           "errors": {REASON_BLOCK: "Say why you are escalating."}}
    assert signoff.driver.submit_view("U0ALICE", asked["id"],
                                      {REASON_BLOCK: "need a lead's call"}).ok
    assert signoff.slack.workspace.views.modals("U0ALICE") == []
    signoff.drain()

    [escalated] = audit(signoff, execution_id, "review.escalated")
    assert escalated["actor"]["id"] == "U0ALICE" and escalated["reason"] == "need a lead's call"
    message = only(signoff)
    assert replies(signoff, message) == [
        "⬆️ Escalated to <@U0CAROL> by <@U0ALICE>: need a lead's call"]
    assert "Escalated: level 2 of 3" in text_of(message)
    assert ACTION_ESCALATE in action_ids(message)  # level 3 remains
    [lead_copy] = signoff.messages("D0CAROL")
    assert ACTION_APPROVE in action_ids(lead_copy)

    # Alice opens the modal again; meanwhile the lead escalates to the last level.
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_ESCALATE).ok
    again = modal(signoff, "U0ALICE")
    assert signoff.driver.click("U0CAROL", ("D0CAROL", lead_copy["ts"]), ACTION_ESCALATE).ok
    assert signoff.driver.submit_view("U0CAROL", modal(signoff, "U0CAROL")["id"],
                                      {REASON_BLOCK: "on-call owns the host"}).ok
    refused = signoff.driver.submit_view("U0ALICE", again["id"], {REASON_BLOCK: "still unsure"})
    # Her modal was opened at level 2: escalating is a compare-and-set from the level seen.
    assert refused.body == {"response_action": "errors", "errors": {REASON_BLOCK: (
        "Already escalated to level 3 by carol.")}}
    signoff.drain()

    assert [e["toLevel"] for e in audit(signoff, execution_id, "review.escalated")] == [1, 2]
    final = only(signoff)
    assert "Escalated: level 3 of 3" in text_of(final)
    assert ACTION_ESCALATE in action_ids(final)  # past the last level: to someone chosen
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    # Everyone so far may still decide: alice from level 1, dave (on-call) from level 3.
    [oncall_copy] = signoff.messages("D0DAVE")
    assert signoff.driver.click("U0DAVE", ("D0DAVE", oncall_copy["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).results["after"].output == "true by U0DAVE"


QUORUM = """
name: prod-change
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Deploy 4.2 to production?"
      approvers: [U0ALICE, U0BOB, U0CAROL]
      approvals-required: 2
  - name: deploy
    type: console
    if: "steps.review.output.approved : true"
    with: {message: deploying}
"""


def test_quorum_of_two_counts_a_repeat_approval_once(signoff: Signoff):
    execution_id = signoff.run(QUORUM)
    message = only(signoff)
    assert "(2 approvals needed)" in text_of(message)

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    message = only(signoff)
    assert "1 of 2 approvals: <@U0ALICE>" in text_of(message)
    assert ACTION_APPROVE in action_ids(message)
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.ephemerals("U0ALICE") == ["Your approval is already counted (1 of 2)."]
    assert [e["count"] for e in audit(signoff, execution_id, "review.approval_recorded")] == [1]
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT

    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["deploy"].output == "deploying"
    [decided] = audit(signoff, execution_id, "step.decided")
    assert [a["id"] for a in decided["approvals"]] == ["U0ALICE", "U0BOB"]
    final = only(signoff)
    assert "Approved by <@U0BOB>" in text_of(final) and not action_ids(final)


ONE_APPROVER = """
name: grant-admin
steps:
  - name: review
    type: waitForInput
    with:
      message: "Grant admin rights to contractor-7?"
      approvers: [U0ALICE]
"""


def test_reassign_lets_the_chosen_person_decide(signoff: Signoff):
    execution_id = signoff.run(ONE_APPROVER)
    message = only(signoff)

    # Before: dave may neither decide nor hand the review on.
    assert signoff.driver.click("U0DAVE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    option = next(e for b in message["blocks"] if b["type"] == "actions"
                  for e in b["elements"] if e["action_id"] == ACTION_REASSIGN)["options"][0]
    assert option["text"]["text"] == "Reassign…"
    assert signoff.driver.click("U0DAVE", (REVIEWS, message["ts"]), ACTION_REASSIGN,
                                option["value"]).ok
    signoff.drain()
    assert signoff.ephemerals("U0DAVE") == [
        "You can't decide this review: you are not one of its approvers."] * 2
    assert signoff.slack.workspace.views.modals("U0DAVE") == []

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_REASSIGN,
                                option["value"]).ok
    picker = modal(signoff, "U0ALICE")
    taken = signoff.driver.submit_view("U0ALICE", picker["id"], {APPROVER_BLOCK: "U0ALICE"})
    assert taken.body == {"response_action": "errors",
                          "errors": {APPROVER_BLOCK: "They can already decide this review."}}
    assert signoff.driver.submit_view("U0ALICE", picker["id"], {APPROVER_BLOCK: "U0DAVE"}).ok
    signoff.drain()

    [event] = audit(signoff, execution_id, "review.reassigned")
    assert event["approver"] == "U0DAVE" and event["actor"]["id"] == "U0ALICE"
    message = only(signoff)
    assert replies(signoff, message) == ["➡️ Reassigned to <@U0DAVE> by <@U0ALICE>"]
    assert "Approvers: <@U0DAVE>" in text_of(message)  # alice handed her seat on
    assert signoff.engine.pending_for("U0DAVE")[1] == 1  # /approvals lists it for dave now
    [dave_copy] = signoff.messages("D0DAVE")
    assert signoff.driver.click("U0DAVE", ("D0DAVE", dave_copy["ts"]), ACTION_APPROVE).ok
    signoff.drain()

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["review"].resumed_by["id"] == "U0DAVE"
    for channel in (REVIEWS, "D0DAVE"):
        assert "Approved by <@U0DAVE>" in text_of(only(signoff, channel))


def test_a_run_timeout_says_so_on_the_review(signoff: Signoff):
    execution_id = signoff.run("""
name: slow
settings: {timeout: 1h}
steps:
  - name: review
    type: waitForInput
    with:
      message: "Rotate the keys?"
      approvers: [U0ALICE]
""")
    assert signoff.engine.pending_for("U0ALICE")[1] == 1
    assert signoff.engine.expire(execution_id)
    signoff.drain()
    final = text_of(only(signoff))
    assert "Timed out" in final and "run timed out (settings.timeout)" in final


LEVEL_CHANNEL = """
name: outage
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Fail over the primary database?"
      approvers: [U0ALICE]
      escalation:
        - approvers: [S0ONCALL]
          channel: C0ONCALL
"""


def test_a_level_with_its_own_channel_gets_the_review_there(signoff: Signoff):
    signoff.slack.workspace.add_channel("C0ONCALL", "oncall", ["U0DAVE", "U0SIGNOFFBOT"])
    execution_id = signoff.run(LEVEL_CHANNEL)
    assert signoff.engine.escalate(execution_id, Actor(id="U0ALICE", name="alice", source="api"),
                                   "paged twice") == 1
    signoff.drain()

    [there] = signoff.messages("C0ONCALL")
    assert ACTION_APPROVE in action_ids(there) and "Escalated: level 2 of 2" in text_of(there)
    assert replies(signoff, only(signoff)) == [
        "⬆️ Escalated to <!subteam^S0ONCALL> by <@U0ALICE>: paged twice"]
    assert signoff.driver.click("U0DAVE", ("C0ONCALL", there["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).results["review"].resumed_by["id"] == "U0DAVE"
    for channel in (REVIEWS, "C0ONCALL", "D0DAVE"):
        assert "Approved by <@U0DAVE>" in text_of(only(signoff, channel))
