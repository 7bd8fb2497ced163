"""/approvals, the App Home and batch review, end to end through the Slack emulator."""

from __future__ import annotations

import json
import time
from typing import Any

from bot.batch import BLOCK_DECISION, BatchReview
from bot.blocks import ACTION_APPROVE
from bot.delivery import load_delivery
from bot.home import ACTION_HOME_MORE
from bot.overview import ACTION_BATCH, ACTION_MORE, Overview
from engine.definition.loader import parse_workflow
from engine.notify import Actor
from engine.run.stats import GRADUATION_WINDOW
from engine.state.execution import ExecutionStatus
from engine.worker.worker import SignoffWorker
from tests.bot.conftest import REVIEWS, Signoff
from tests.bot.test_slack_reviews import formatted_texts

ISOLATE = """
name: isolate-host
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE, U0BOB]
      message: |
        ## Isolate `{{ event.host }}`?
        **Rule:** {{ event.rule }}
      sla: 15m
      escalation:
        - approvers: [U0CAROL]
          sla: 1h
      schema:
        type: object
        properties:
          approved: {type: boolean, title: Isolate the host}
          notes: {type: string, title: Analyst notes}
        required: [approved]
  - name: after
    type: console
    with:
      message: "{{ steps.review.output.approved }} by {{ steps.review.resumedBy.id }}"
"""

ACCESS = """
name: grant-access
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Grant {{ event.who }} access to prod?"
      approvers: [U0CAROL]
"""


def start(signoff: Signoff, count: int, text: str = ISOLATE, **event: Any) -> list[str]:
    """Start ``count`` runs, oldest first, and run every job until their reviews are posted.
    Each begins waiting in a millisecond of its own: listings show the oldest wait first,
    and those that began in the same millisecond by id, not by when they started."""
    workflow = parse_workflow(text)
    ids = []
    for n in range(count):
        ids.append(signoff.engine.run(workflow, {"host": f"web-{n:02d}", "rule": "beaconing",
                                                 "who": "erin", **event}))
        signoff.drain()
        time.sleep(0.002)
    return ids


def approvals(signoff: Signoff, user: str, text: str = "") -> dict[str, Any]:
    """Type ``/approvals text`` as ``user``; the answer is the command's own ack."""
    answer = signoff.driver.slash_command(user, "/approvals", text)
    assert answer.status == 200
    assert answer.elapsed < 3.0
    assert answer.body["response_type"] == "ephemeral"
    return answer.body


def shown(user: str, signoff: Signoff) -> dict[str, Any]:
    """The ephemeral message ``user`` has in front of them (the latest)."""
    return signoff.slack.workspace.ephemeral_messages(user)[-1]


def sections(message: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in message["blocks"] if b["type"] == "section"]


def buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["action_id"], e["text"]["text"]) for b in message["blocks"]
            if b["type"] == "actions" for e in b["elements"]]


def button_value(message: dict[str, Any], action_id: str, index: int = 0) -> str:
    values = [e["value"] for b in message["blocks"] if b["type"] == "actions"
              for e in b["elements"] if e["action_id"] == action_id]
    return str(values[index])


def step_decided(signoff: Signoff, execution_id: str) -> list[dict[str, Any]]:
    return [e.event for e in signoff.engine.audit_entries(execution_id)
            if e.event["type"] == "step.decided"]


# -- /approvals ------------------------------------------------------------------------------------

def test_approvals_lists_the_callers_reviews_oldest_first_with_links_and_buttons(
        signoff: Signoff):
    first, second = start(signoff, 2)
    [carols] = start(signoff, 1, ACCESS)

    body = approvals(signoff, "U0ALICE")

    assert body["blocks"][0]["text"]["text"] == "Reviews waiting for you"
    texts = sections(body)
    assert len(texts) == 2
    assert "Isolate web-00?" in texts[0] and "Isolate web-01?" in texts[1]  # oldest first
    for execution_id, text in zip((first, second), texts, strict=True):
        delivery = load_delivery(signoff.engine, execution_id, "review")
        assert delivery is not None
        [post] = delivery.posts
        assert f"archives/{REVIEWS}/p{post.ts.replace('.', '')}|" in text  # chat.getPermalink
        assert "Step `review` of *isolate-host*" in text
        assert "asked <!date^" in text and "^{ago}|" in text
        assert "SLA due <!date^" in text and "level 1 of 2" in text
        assert f"Execution `{execution_id}`" in text
    assert buttons(body) == [(ACTION_APPROVE, "Approve"), ("signoff.deny", "Deny")] * 2 + [
        (ACTION_BATCH, "Decide several: review (isolate-host, 2)")]
    assert json.loads(button_value(body, ACTION_APPROVE))["execution_id"] == first
    # Slack shows the ack's answer to the caller alone.
    assert shown("U0ALICE", signoff)["message"]["text"] == "Reviews waiting for you: 2"

    carol = approvals(signoff, "U0CAROL")
    assert len(sections(carol)) == 1 and "Grant erin access to prod?" in sections(carol)[0]
    assert carols in sections(carol)[0]
    assert buttons(carol) == [(ACTION_APPROVE, "Approve"), ("signoff.deny", "Decline")]

    # Permalinks are asked of Slack once per message, then kept.
    asked = len(signoff.slack.calls_to("chat.getPermalink"))
    approvals(signoff, "U0ALICE")
    assert len(signoff.slack.calls_to("chat.getPermalink")) == asked


def test_approvals_for_someone_with_nothing_waiting(signoff: Signoff):
    start(signoff, 1)

    body = approvals(signoff, "U0DAVE")

    assert sections(body) == ["No reviews are waiting for you. :tada:"]
    assert buttons(body) == []


def test_approvals_all_pages_ten_at_a_time_with_show_more(signoff: Signoff):
    ids = start(signoff, 12)

    body = approvals(signoff, "U0DAVE", "all")  # dave decides none of them

    assert body["blocks"][0]["text"]["text"] == "Reviews waiting for a decision"
    assert body["blocks"][1]["elements"][0]["text"] == "Showing 1–10 of 12"
    assert [next(i for i in ids if i in s) for s in sections(body)] == ids[:10]
    assert all("not one of its approvers" in s for s in sections(body))
    assert buttons(body) == [(ACTION_MORE, "Show more")]

    listed = shown("U0DAVE", signoff)
    assert signoff.driver.click("U0DAVE", listed, ACTION_MORE).ok
    page_two = shown("U0DAVE", signoff)
    assert page_two["ts"] == listed["ts"]  # the same message, replaced
    assert page_two["message"]["blocks"][1]["elements"][0]["text"] == "Showing 11–12 of 12"
    assert [next(i for i in ids if i in s) for s in sections(page_two["message"])] == ids[10:]
    assert buttons(page_two["message"]) == [(ACTION_MORE, "Back to the first page")]

    # An approver sees the same reviews with their buttons.
    alice = approvals(signoff, "U0ALICE", "all")
    assert buttons(alice).count((ACTION_APPROVE, "Approve")) == 10


def test_a_review_not_posted_yet_is_listed_as_its_buttons_will_treat_each_viewer(
        signoff: Signoff):
    execution_id = signoff.engine.run(parse_workflow(ISOLATE), {"host": "web-00",
                                                                "rule": "beaconing"})
    engine_only = SignoffWorker([signoff.runtime.settings.queue],
                                connection=signoff.engine.store.redis)
    engine_only.work(burst=True, logging_level="WARNING")  # it waits; its post job has not run
    assert signoff.messages() == [] and load_delivery(signoff.engine, execution_id,
                                                      "review") is None

    alice = approvals(signoff, "U0ALICE", "all")  # an approver: the engine says she may
    assert buttons(alice) == [(ACTION_APPROVE, "Approve"), ("signoff.deny", "Deny")]
    # Not posted yet, so in no conversation: dave, neither approver nor requester, sees none.
    dave = approvals(signoff, "U0DAVE", "all")
    assert sections(dave) == ["No reviews are waiting for a decision."] and buttons(dave) == []
    assert execution_id not in json.dumps(dave)

    assert signoff.driver.click("U0ALICE", shown("U0ALICE", signoff), ACTION_APPROVE).ok
    signoff.drain()
    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["review"].resumed_by["id"] == "U0ALICE"


def test_approvals_id_shows_one_review_waiting_then_decided(signoff: Signoff):
    [execution_id] = start(signoff, 1)

    waiting = approvals(signoff, "U0BOB", execution_id)
    assert "Isolate web-00?" in sections(waiting)[0]
    assert (ACTION_APPROVE, "Approve") in buttons(waiting)
    assert "Run status: waiting for input" in str(waiting["blocks"][-1])

    message = signoff.messages()[0]
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()

    decided = approvals(signoff, "U0ALICE", execution_id)
    [text] = sections(decided)
    assert text.startswith("*Isolate web-00?*\n✅ Approved by <@U0BOB> at <!date^")
    assert buttons(decided) == []
    assert "Run status: completed" in str(decided["blocks"][-1])

    missing = approvals(signoff, "U0BOB", "00000000-0000-4000-8000-000000000000")
    assert sections(missing)[0].startswith(
        "No execution `00000000-0000-4000-8000-000000000000` was found, or it is not visible")


def test_help_and_anything_not_understood_get_the_help(signoff: Signoff):
    for text in ("help", "HELP", "frobnicate", "stats soon", "stats 0", "all of them", "<@U0BOB>"):
        body = approvals(signoff, "U0ALICE", text)
        [text_shown] = sections(body)
        assert text_shown.startswith("*/approvals*: the reviews waiting for you"), text
        assert "*/approvals stats [days]*" in text_shown


def test_stats_per_step_with_rates_durations_and_flags(signoff: Signoff):
    first, second, third = start(signoff, 3)
    alice = Actor(id="U0ALICE", name="alice", source="slack")
    signoff.engine.resume(first, {"approved": True}, alice)
    signoff.engine.resume(second, {"approved": False}, alice)
    signoff.engine.escalate(third, alice, "need a lead")
    signoff.engine.resume(third, {"approved": True}, alice)
    signoff.drain()

    body = approvals(signoff, "U0ALICE", "stats")

    assert body["blocks"][0]["text"]["text"] == "Review stats, last 7 days"
    [text] = sections(body)
    assert text.startswith("*isolate-host* · step `review`\n3 reviews · 67% approved · median ")
    assert "0 SLA breaches · 1 escalated · 0 timed out" in text
    assert "Candidate to automate" not in text
    assert approvals(signoff, "U0ALICE", "stats 30")["blocks"][0]["text"]["text"] == (
        "Review stats, last 30 days")


def test_a_step_whose_last_fifty_decisions_were_approvals_is_a_candidate_to_automate(
        signoff: Signoff):
    engine = signoff.engine
    workflow = parse_workflow(ACCESS)
    ids = [engine.run(workflow, {"who": f"user{n}"}) for n in range(GRADUATION_WINDOW)]
    engine_only = SignoffWorker([signoff.runtime.settings.queue], connection=engine.store.redis)
    engine_only.work(burst=True, logging_level="WARNING")  # waiting; no need to post them
    carol = Actor(id="U0CAROL", name="carol", source="slack")
    for execution_id in ids:
        engine.resume(execution_id, {"approved": True}, carol)

    body = approvals(signoff, "U0ALICE", "stats")

    [text] = sections(body)
    assert f"{GRADUATION_WINDOW} reviews · 100% approved" in text
    assert "🎓 Candidate to automate: its last 50 decisions were all approvals." in text


# -- the App Home ----------------------------------------------------------------------------------

def test_app_home_shows_my_reviews_and_the_stats_and_its_buttons_decide(signoff: Signoff):
    first, second = start(signoff, 2)
    signoff.engine.resume(second, {"approved": True}, Actor(id="U0BOB", name="bob",
                                                            source="slack"))
    signoff.drain()

    assert signoff.driver.open_app_home("U0ALICE").ok
    home = signoff.slack.workspace.views.home("U0ALICE")
    assert home is not None
    headers = [b["text"]["text"] for b in home["blocks"] if b["type"] == "header"]
    assert headers == ["Reviews waiting for you", "Review stats, last 7 days"]
    texts = sections(home)
    assert "Isolate web-00?" in texts[0] and first in texts[0]
    assert texts[1].startswith("*isolate-host* · step `review`\n1 review · 100% approved")

    value = button_value(home, ACTION_APPROVE)
    assert signoff.driver.click_in_view("U0ALICE", home["id"], ACTION_APPROVE, value).ok
    signoff.drain()
    assert signoff.engine.get(first).status is ExecutionStatus.COMPLETED
    assert step_decided(signoff, first)[0]["actor"]["id"] == "U0ALICE"

    assert signoff.driver.open_app_home("U0ALICE").ok
    assert "No reviews are waiting for you." in str(signoff.slack.workspace.views.home("U0ALICE"))


def test_app_home_pages_through_my_reviews(signoff: Signoff):
    ids = start(signoff, 11)
    signoff.driver.open_app_home("U0BOB")
    home = signoff.slack.workspace.views.home("U0BOB")
    assert home is not None and len([s for s in sections(home) if "Execution" in s]) == 10

    assert signoff.driver.click_in_view("U0BOB", home["id"], ACTION_HOME_MORE).ok
    home = signoff.slack.workspace.views.home("U0BOB")
    assert home is not None
    [only] = [s for s in sections(home) if "Execution" in s]
    assert ids[10] in only


def test_approve_in_the_ephemeral_list_decides(signoff: Signoff):
    [execution_id] = start(signoff, 1)
    approvals(signoff, "U0ALICE")
    listed = shown("U0ALICE", signoff)

    assert signoff.driver.click("U0ALICE", listed, ACTION_APPROVE,
                                button_value(listed["message"], ACTION_APPROVE)).ok
    signoff.drain()

    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED


# -- batch review ----------------------------------------------------------------------------------

def test_batch_approve_records_each_decision_and_reports_what_it_could_not(signoff: Signoff):
    ids = start(signoff, 6)
    approvals(signoff, "U0ALICE")
    listed = shown("U0ALICE", signoff)
    assert signoff.driver.click("U0ALICE", listed, ACTION_BATCH).ok
    [modal] = signoff.slack.workspace.views.modals("U0ALICE")
    options = [o["value"] for b in modal["blocks"] if b["type"] == "input"
               and b["element"]["type"] == "checkboxes" for o in b["element"]["options"]]
    assert options == ids

    # bob decides the last one while alice is choosing.
    message = signoff.messages()[-1]
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), "signoff.deny").ok
    signoff.drain()  # a worker records bob's click
    answer = signoff.driver.submit_view(
        "U0ALICE", modal["id"], {"signoff.batch.0": ids, BLOCK_DECISION: "approve"})

    assert answer.body["response_action"] == "update"
    [results] = signoff.slack.workspace.views.modals("U0ALICE")
    lines = sections(results)
    assert lines[0] == "*5 decisions recorded, 1 not recorded.*"
    assert lines[1].count("✅ Approved: Isolate web-0") == 5
    assert "⚠️ Not recorded: Isolate web-05?. This review is already closed: ❌ Denied by " \
           "<@U0BOB>" in lines[1]
    signoff.drain()
    for execution_id in ids[:5]:
        [decided] = step_decided(signoff, execution_id)  # each in its own audit trail
        assert decided["actor"]["id"] == "U0ALICE" and decided["outcome"] == "approved"
        state = signoff.engine.get(execution_id)
        assert state.status is ExecutionStatus.COMPLETED
        assert state.results["after"].output == "true by U0ALICE"
        assert signoff.engine.verify_audit(execution_id).ok
    assert step_decided(signoff, ids[5])[0]["actor"]["id"] == "U0BOB"
    updated = [m for m in signoff.messages() if "Approved by <@U0ALICE>" in str(m["blocks"])]
    assert len(updated) == 5


def test_batch_from_the_home_tab_needs_a_selection_then_refreshes_the_tab(signoff: Signoff):
    ids = start(signoff, 3)
    signoff.driver.open_app_home("U0BOB")
    home = signoff.slack.workspace.views.home("U0BOB")
    assert home is not None
    assert signoff.driver.click_in_view("U0BOB", home["id"], ACTION_BATCH).ok
    [modal] = signoff.slack.workspace.views.modals("U0BOB")

    empty = signoff.driver.submit_view("U0BOB", modal["id"], {BLOCK_DECISION: "deny"})
    assert empty.body == {"response_action": "errors",
                          "errors": {"signoff.batch.0": "Select at least one review."}}

    assert signoff.driver.submit_view("U0BOB", modal["id"], {
        "signoff.batch.0": ids[:2], BLOCK_DECISION: "deny"}).ok
    signoff.drain()
    assert [step_decided(signoff, i)[0]["outcome"] for i in ids[:2]] == ["denied", "denied"]
    assert signoff.engine.get(ids[2]).status is ExecutionStatus.WAITING_FOR_INPUT
    home = signoff.slack.workspace.views.home("U0BOB")
    assert home is not None
    assert [s for s in sections(home) if "Execution" in s] == [
        s for s in sections(home) if ids[2] in s]


def test_batch_refuses_someone_who_may_not_decide_and_audits_it(signoff: Signoff):
    [execution_id] = start(signoff, 1)
    batch = BatchReview(signoff.engine, signoff.bot.directory,
                        Overview(signoff.engine, signoff.bot.client, signoff.bot.directory))
    dave = Actor(id="U0DAVE", name="dave", source="slack")

    [outcome] = batch.decide(dave, [(execution_id, "Isolate <web-00>?")], "isolate-host",
                             "review", approved=True)

    assert not outcome.recorded
    assert outcome.line == ("⚠️ Not recorded: Isolate &lt;web-00&gt;?. You can't decide this "
                            "review: you are not one of its approvers.")
    refused = [e.event for e in signoff.engine.audit_entries(execution_id)
               if e.event["type"] == "decision.refused"]
    assert [r["actor"]["id"] for r in refused] == ["U0DAVE"]
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT


QUORUM = """
name: deploy
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Deploy {{ event.host }} to production?"
      approvers: [U0ALICE, U0BOB]
      approvals-required: 2
"""


def test_a_batch_approval_counts_toward_a_quorum(signoff: Signoff):
    [execution_id] = start(signoff, 1, QUORUM)
    batch = BatchReview(signoff.engine, signoff.bot.directory,
                        Overview(signoff.engine, signoff.bot.client, signoff.bot.directory))
    alice = Actor(id="U0ALICE", name="alice", source="slack")

    [outcome] = batch.decide(alice, [(execution_id, "Deploy web-00 to production?")], "deploy",
                             "review", approved=True)

    assert outcome.recorded
    assert outcome.line == "👍 Approval recorded (1 of 2): Deploy web-00 to production?"
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    assert "1 of 2 approvals" in sections(approvals(signoff, "U0BOB"))[0]


# -- safety ----------------------------------------------------------------------------------------

def test_event_data_in_decision_lines_cannot_ping_or_forge_links(signoff: Signoff):
    start(signoff, 2, host="web <!channel> <@U0CAROL> <https://evil.example|click> & co")

    answers = [approvals(signoff, "U0ALICE")]
    assert signoff.driver.click("U0ALICE", shown("U0ALICE", signoff), ACTION_BATCH).ok
    answers.append(approvals(signoff, "U0ALICE", "all"))
    signoff.driver.open_app_home("U0ALICE")
    answers.append(signoff.slack.workspace.views.home("U0ALICE") or {})
    answers.append(signoff.slack.workspace.views.modals("U0ALICE")[0])

    for answer in answers:
        text = "\n".join(formatted_texts(answer))
        assert "<!channel>" not in text and "<@U0CAROL>" not in text
        assert "<https://evil" not in text
    listed = "\n".join(formatted_texts(answers[0]))
    assert "web &lt;!channel&gt; &lt;@U0CAROL&gt; &lt;https://evil.example|click&gt; &amp; co" \
           in listed
