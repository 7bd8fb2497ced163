"""Reviews decided in Slack, end to end: engine, RQ jobs, web app and the Slack emulator."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.models.blocks import Block

from bot.blocks import ACTION_APPROVE, ACTION_DENY, ACTION_ESCALATE, ACTION_RESPOND
from bot.delivery import closed_from_state, load_delivery
from engine.definition.loader import parse_workflow
from engine.notify import Actor
from engine.state.execution import ExecutionStatus, StepStatus, Waiting, parse_iso, utcnow
from engine.worker.worker import SignoffWorker
from slack_emulator import Tamper
from tests.bot.conftest import ISOLATE, REVIEWS, TICKET, Signoff
from tests.support.services import reviewer_answer

EVENT = {"host": "web-01", "rule": "beaconing"}


def only_message(signoff: Signoff, channel: str = REVIEWS) -> dict[str, Any]:
    [message] = signoff.messages(channel)
    return message


def has_buttons(message: dict[str, Any]) -> bool:
    return any(block["type"] == "actions" for block in message.get("blocks", []))


def all_text(message: dict[str, Any]) -> str:
    return str(message.get("text", "")) + str(message.get("blocks", ""))


def audit_types(signoff: Signoff, execution_id: str) -> list[str]:
    return [e.event["type"] for e in signoff.engine.audit_entries(execution_id)]


def test_approve_click_resumes_the_run_and_updates_the_message(signoff: Signoff):
    execution_id = signoff.run(ISOLATE, EVENT)

    message = only_message(signoff)
    blocks = message["blocks"]
    assert [Block.parse(b).type for b in blocks][0] == "header"  # type: ignore[union-attr]
    assert blocks[0]["text"]["text"] == "Isolate web-01?"
    assert "*Rule:* beaconing" in all_text(message)
    buttons = [e["action_id"] for e in blocks[-1]["elements"] if e["type"] == "button"]
    # No escalation levels: Escalate asks whom to (no SIGNOFF_ESCALATE_TO here).
    assert buttons == [ACTION_APPROVE, ACTION_DENY, ACTION_ESCALATE, ACTION_RESPOND]
    delivery = load_delivery(signoff.engine, execution_id, "review")
    assert delivery is not None
    assert [(p.channel, p.ts) for p in delivery.posts] == [(REVIEWS, message["ts"])]
    assert delivery.approvers == ("U0ALICE", "U0BOB")

    answer = signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE)
    assert answer.status == 200
    signoff.drain()

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["isolate"].status is StepStatus.COMPLETED
    assert state.results["record"].output == "decided by alice"
    decided = next(e.event for e in signoff.engine.audit_entries(execution_id)
                   if e.event["type"] == "step.decided")
    assert decided["actor"] == {"id": "U0ALICE", "name": "alice", "source": "slack",
                                "team": "T0SIGNOFF"}
    updated = only_message(signoff)
    assert updated["ts"] == message["ts"]
    assert not has_buttons(updated)
    assert "Approved by <@U0ALICE> at <!date^" in all_text(updated)


def test_deny_click_skips_the_gated_step(signoff: Signoff):
    execution_id = signoff.run(ISOLATE, EVENT)
    message = only_message(signoff)

    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_DENY).ok
    signoff.drain()

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["isolate"].status is StepStatus.SKIPPED
    assert reviewer_answer(state.results["review"].output) == {"approved": False}
    updated = only_message(signoff)
    assert not has_buttons(updated)
    assert "Denied by <@U0BOB>" in all_text(updated)


def test_a_decision_made_elsewhere_also_updates_the_message(signoff: Signoff):
    execution_id = signoff.run(ISOLATE, EVENT)
    signoff.engine.resume(execution_id, {"approved": True, "notes": "via the API"},
                          Actor(id="U0BOB", name="bob", source="api"))  # an approver
    signoff.drain()

    updated = only_message(signoff)
    assert not has_buttons(updated)
    assert "Approved by <@U0BOB>" in all_text(updated)
    assert "via the API" in all_text(updated)


def test_modal_shows_inline_errors_then_accepts_a_valid_answer(signoff: Signoff):
    execution_id = signoff.run(TICKET)
    message = only_message(signoff)

    assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    [modal] = signoff.slack.workspace.views.modals("U0CAROL")
    assert modal["private_metadata"]
    decision = next(b for b in modal["blocks"] if b.get("block_id") == "approved")
    assert decision["element"]["initial_option"]["value"] == "true"  # Approve pre-set it

    invalid = signoff.driver.submit_view("U0CAROL", modal["id"], {"ticket": "tomorrow"})
    assert invalid.body["response_action"] == "errors"
    assert set(invalid.body["errors"]) == {"ticket"}
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    assert signoff.slack.workspace.views.modals("U0CAROL")  # still open

    valid = signoff.driver.submit_view("U0CAROL", modal["id"], {"ticket": "CHG-42", "hours": 2})
    assert valid.status == 200 and valid.body is None
    assert signoff.slack.workspace.views.modals("U0CAROL") == []
    signoff.drain()

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert reviewer_answer(state.results["review"].output) == {
        "approved": True, "ticket": "CHG-42", "hours": 2}
    assert state.results["open"].output == "opening for CHG-42"
    assert "CHG-42" in all_text(only_message(signoff))


def test_respond_opens_the_modal_without_a_preset_decision(signoff: Signoff):
    signoff.run(ISOLATE, EVENT)
    message = only_message(signoff)

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_RESPOND).ok
    [modal] = signoff.slack.workspace.views.modals("U0ALICE")
    decision = next(b for b in modal["blocks"] if b.get("block_id") == "approved")
    assert "initial_option" not in decision["element"]


def test_a_non_approver_is_refused_and_nothing_changes(signoff: Signoff):
    execution_id = signoff.run(ISOLATE, EVENT)
    message = only_message(signoff)

    assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()

    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    assert signoff.ephemerals("U0CAROL") == [
        "You can't decide this review: you are not one of its approvers."]
    refused = [e.event for e in signoff.engine.audit_entries(execution_id)
               if e.event["type"] == "decision.refused"]
    assert [r["actor"]["id"] for r in refused] == ["U0CAROL"]
    assert has_buttons(only_message(signoff))


GROUP_AND_EMAIL = """
name: deploy
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Deploy to production?"
      approveLabel: Ship it
      rejectLabel: Hold
      approvers: [S0SOCL1, dave@signoff.test, nobody@signoff.test]
"""


def test_group_and_email_approvers_are_resolved_and_the_requester_cannot_self_approve(
        signoff: Signoff):
    execution_id = signoff.run(GROUP_AND_EMAIL, requested_by="bob@signoff.test")
    message = only_message(signoff)
    delivery = load_delivery(signoff.engine, execution_id, "review")
    assert delivery is not None
    assert delivery.approvers == ("U0ALICE", "U0BOB", "U0DAVE")
    assert delivery.requester == "U0BOB"
    text = all_text(message)
    assert "<!subteam^S0SOCL1>" in text and "<@U0DAVE>" in text
    assert "Requested by <@U0BOB>" in text
    assert [e["text"]["text"] for e in message["blocks"][-1]["elements"]
            if e["type"] == "button"] == ["Ship it", "Hold", "Escalate"]

    # bob is in the group but asked for the run himself.
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.ephemerals("U0BOB") == ["You can't decide this review: you requested this "
                                           "run, and its step does not allow self-approval."]
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT

    # dave was named by e-mail.
    assert signoff.driver.click("U0DAVE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["review"].resumed_by["id"] == "U0DAVE"
    assert "Approved by <@U0DAVE>" in all_text(only_message(signoff))


def test_buttons_say_what_the_step_asks_unless_it_names_its_own_labels(signoff: Signoff):
    def labels(message: dict[str, Any]) -> list[str]:
        return [e["text"]["text"] for e in message["blocks"][-1]["elements"]
                if e["type"] == "button" and e["action_id"] in (ACTION_APPROVE, ACTION_DENY)]

    signoff.run("""
name: grant
steps:
  - name: review
    type: waitForApproval
    with: {message: "Grant access?"}
""")
    assert labels(only_message(signoff)) == ["Approve", "Decline"]  # rejectLabel's default

    signoff.run(ISOLATE, EVENT)  # a form's own yes and no
    assert labels(signoff.messages()[-1]) == ["Approve", "Deny"]


def test_two_approvers_clicking_at_once_make_one_decision(start_signoff, bot_settings):
    signoffs = [start_signoff(bot_settings)]
    signoff = signoffs[0]
    execution_id = signoff.run(ISOLATE, EVENT)
    message = only_message(signoff)
    second = signoff.driver.__class__(signoff.slack, signoff.driver.app_url)
    gate = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def click(user: str, driver: Any) -> None:
        gate.wait()
        answers[user] = driver.click(user, (REVIEWS, message["ts"]), ACTION_APPROVE)

    threads = [threading.Thread(target=click, args=("U0ALICE", signoff.driver)),
               threading.Thread(target=click, args=("U0BOB", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.close()
    assert all(a.status == 200 for a in answers.values())
    signoff.drain()

    decided = [e.event for e in signoff.engine.audit_entries(execution_id)
               if e.event["type"] == "step.decided"]
    assert len(decided) == 1
    winner = decided[0]["actor"]["id"]
    loser = "U0BOB" if winner == "U0ALICE" else "U0ALICE"
    [told] = signoff.ephemerals(loser)
    assert told.startswith(f"This review is already closed: ✅ Approved by <@{winner}> at ")
    assert signoff.ephemerals(winner) == []
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED


def test_forged_and_stale_requests_are_rejected(signoff: Signoff):
    execution_id = signoff.run(ISOLATE, EVENT)
    message = only_message(signoff)

    for tamper in (Tamper.WRONG_SIGNATURE, Tamper.STALE_TIMESTAMP, Tamper.NO_SIGNATURE):
        answer = signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE,
                                      tamper=tamper)
        assert answer.status == 401, tamper
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    assert "step.decided" not in audit_types(signoff, execution_id)


def formatted_texts(value: Any) -> list[str]:
    """Every string Slack formats (mrkdwn objects, the message text); plain_text shows as is."""
    found: list[str] = []
    if isinstance(value, dict):
        if value.get("type") == "mrkdwn" or ("blocks" in value and "text" in value):
            found.append(str(value.get("text", "")))
        for key, item in value.items():
            if not (key == "text" and isinstance(item, str)):
                found.extend(formatted_texts(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(formatted_texts(item))
    return found


def test_event_data_cannot_ping_or_forge_links(signoff: Signoff):
    event = {"host": "web-01 <!channel> <@U0CAROL>", "rule": "<https://evil.example|click> & co"}
    signoff.run(ISOLATE, event)

    message = only_message(signoff)
    text = "\n".join(formatted_texts(message))
    assert "<!channel>" not in text and "<@U0CAROL>" not in text
    assert "<https://evil" not in text
    assert "&lt;!channel&gt;" in message["text"]
    assert "&amp; co" in text
    assert message["blocks"][0]["text"]["type"] == "plain_text"  # the header shows it verbatim


def test_a_rate_limited_post_is_retried_and_delivered_once(signoff: Signoff):
    signoff.slack.fail_next("chat.postMessage", status=429, retry_after=0)
    signoff.run(ISOLATE, EVENT)

    assert len(signoff.slack.calls_to("chat.postMessage")) == 2
    assert len(signoff.messages()) == 1


NO_CHANNEL = """
name: direct
steps:
  - name: review
    type: waitForInput
    with:
      message: "Restart the payment service?"
      approvers: [U0ALICE, S0ONCALL]
"""


def test_without_a_channel_each_approver_gets_a_dm(start_signoff, bot_settings):
    from dataclasses import replace

    signoff = start_signoff(replace(bot_settings, channel=None))
    execution_id = signoff.run(NO_CHANNEL)

    alice_dm, dave_dm = only_message(signoff, "D0ALICE"), only_message(signoff, "D0DAVE")
    assert signoff.messages() == []
    assert signoff.driver.click("U0ALICE", ("D0ALICE", alice_dm["ts"]), ACTION_APPROVE).ok

    # dave clicks his copy before it is updated: he is told who decided.
    assert signoff.driver.click("U0DAVE", ("D0DAVE", dave_dm["ts"]), ACTION_DENY).ok
    signoff.drain()
    decided = signoff.engine.get(execution_id).results["review"]
    assert reviewer_answer(decided.output) == {"approved": True}
    [told] = signoff.ephemerals("U0DAVE")
    assert "Approved by <@U0ALICE>" in told
    for channel in ("D0ALICE", "D0DAVE"):
        updated = only_message(signoff, channel)
        assert not has_buttons(updated) and "Approved by <@U0ALICE>" in all_text(updated)


def test_a_cancelled_run_closes_its_review_message(signoff: Signoff):
    execution_id = signoff.run(ISOLATE, EVENT)
    signoff.engine.cancel(execution_id, Actor(id="cli:ops", name="ops", source="cli"),
                          "host already reimaged")
    signoff.drain()

    updated = only_message(signoff)
    assert not has_buttons(updated)
    assert "Cancelled by ops" in all_text(updated)
    assert "host already reimaged" in all_text(updated)


def test_a_review_decided_before_it_was_posted_is_not_posted(signoff: Signoff):
    execution_id = signoff.engine.run(parse_workflow(ISOLATE), EVENT)
    SignoffWorker([signoff.runtime.settings.queue],
                  connection=signoff.engine.store.redis).work(burst=True)  # the engine only
    signoff.engine.resume(execution_id, {"approved": False},
                          Actor(id="U0BOB", name="bob", source="api"))
    signoff.drain()

    assert signoff.messages() == []
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED


CONTACT = """
name: contact
steps:
  - name: review
    type: waitForInput
    with:
      message: "Who should we call?"
      schema:
        type: object
        properties:
          contact: {type: string, format: email, title: E-mail}
        required: [contact]
"""


def test_answers_the_engine_rejects_come_back_as_inline_errors(signoff: Signoff):
    execution_id = signoff.run(CONTACT)
    message = only_message(signoff)
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_RESPOND).ok
    [modal] = signoff.slack.workspace.views.modals("U0ALICE")

    answer = signoff.driver.submit_view("U0ALICE", modal["id"], {"contact": "not an address"})
    assert answer.body["response_action"] == "errors"
    assert set(answer.body["errors"]) == {"contact"}
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT

    assert signoff.driver.submit_view("U0ALICE", modal["id"], {"contact": "oncall@corp.test"}).ok
    signoff.drain()
    assert reviewer_answer(signoff.engine.get(execution_id).results["review"].output) == {
        "contact": "oncall@corp.test"}


PER_HOST = """
name: isolate-each
steps:
  - name: hosts
    type: foreach
    foreach: "${{ event.hosts }}"
    steps:
      - name: review
        type: waitForInput
        with:
          message: "## Isolate `{{ foreach.item }}`?"
          schema:
            type: object
            properties:
              approved: {type: boolean, title: Isolate the host}
              notes: {type: string, title: Analyst notes}
            required: [approved]
"""


def test_a_form_left_open_on_an_earlier_instance_does_not_answer_the_next(signoff: Signoff):
    execution_id = signoff.run(PER_HOST, {"hosts": ["web-01", "web-02"]})
    [first] = signoff.messages()
    assert signoff.driver.click("U0ALICE", (REVIEWS, first["ts"]), ACTION_RESPOND).ok
    [stale_form] = signoff.slack.workspace.views.modals("U0ALICE")
    assert "web-01" in str(stale_form["blocks"])

    assert signoff.driver.click("U0BOB", (REVIEWS, first["ts"]), ACTION_APPROVE).ok
    signoff.drain()  # web-01 approved; the same step now waits for web-02
    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    assert reviewer_answer(state.results["hosts[0].review"].output) == {"approved": True}
    assert "web-02" in all_text(signoff.messages()[-1])

    answer = signoff.driver.submit_view("U0ALICE", stale_form["id"], {"approved": "false"})
    assert answer.body["response_action"] == "update"
    assert "Approved by" in str(answer.body["view"])  # told who decided web-01, and when
    signoff.drain()
    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT  # web-02 still waits for its own
    assert "hosts[1].review" not in state.results or state.results["hosts[1].review"].output is None


PER_HOST_IN_TIME = """
name: isolate-each-in-time
steps:
  - name: hosts
    type: foreach
    foreach: "${{ event.hosts }}"
    steps:
      - name: review
        type: waitForApproval
        timeout: 1h
        with:
          message: "Isolate {{ foreach.item }}?"
          approvers: [U0ALICE]
          on-timeout: continue
"""


def test_reviews_inside_a_foreach_close_in_slack_when_timed_out_or_decided(signoff: Signoff):
    execution_id = signoff.run(PER_HOST_IN_TIME, {"hosts": ["web-01", "web-02", "web-03"]})

    # Time moves on for the whole engine at once: an hour passes each time nobody decides.
    skipped = [timedelta(0)]

    def now() -> datetime:
        return utcnow() + skipped[0]

    signoff.engine.clock = signoff.runtime.runner.clock = now

    since: list[str] = []

    def waiting_on(path: str) -> Waiting:
        waiting = signoff.engine.get(execution_id).waiting
        assert waiting is not None and waiting.path == path
        since.append(waiting.since)
        return waiting

    def time_out(path: str) -> None:
        due = parse_iso(waiting_on(path).due_at)
        assert due is not None
        skipped[0] += due - now() + timedelta(seconds=1)
        assert signoff.engine.step_timed_out(execution_id, path)
        signoff.drain()

    time_out("hosts[0].review")  # nobody decides web-01; the step then waits for web-02
    second = signoff.messages()[-1]
    assert "Isolate web-02?" in all_text(second)
    waiting_on("hosts[1].review")
    assert signoff.driver.click("U0ALICE", (REVIEWS, second["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    time_out("hosts[2].review")

    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert [state.results[f"hosts[{n}].review"].status for n in range(3)] == [
        StepStatus.FAILED, StepStatus.COMPLETED, StepStatus.FAILED]
    first, second, third = signoff.messages()
    assert "Approved by <@U0ALICE>" in all_text(second) and not has_buttons(second)
    for host, message in (("web-01", first), ("web-03", third)):
        assert f"Isolate {host}?" in all_text(message)
        assert "Timed out" in all_text(message) and not has_buttons(message)
    # Each instance is told from the others, as a late click on its message is answered.
    closed = [closed_from_state(signoff.engine, state, "review", s) for s in since]
    assert [(c.outcome, c.actor.id) if c else None for c in closed] == [
        ("timed_out", "system:timeout"), ("approved", "U0ALICE"), ("timed_out", "system:timeout")]
    assert closed[0].at < closed[1].at < closed[2].at  # type: ignore[union-attr]
