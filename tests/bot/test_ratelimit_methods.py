"""Slack's rate limits on the calls other than a review's post: rewrites (chat.update), thread
notes and DMs (chat.postMessage per channel, conversations.open), reminders, and a click's
modal (views.open). The bot against the emulator over HTTP, real RQ workers: a job Slack
refuses comes back when its Retry-After says, no worker sleeps, nothing is lost or done
twice; a modal that cannot wait tells the clicker to try again."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from rq import Queue
from rq.job import Job

from bot import keys as bot_keys
from bot.delivery import load_delivery
from bot.digest import ACTION_DIGEST
from bot.outbox import QUEUE
from bot.ratelimit import RateLimited, limited_left, slot
from bot.settings import BotSettings
from engine.definition.loader import parse_workflow
from engine.state.execution import ExecutionStatus, parse_iso
from slack_emulator import MethodLimits, PostingLimit, SlackApiFailure, SlackEmulator
from slack_emulator.ratelimit import ChannelBuckets, MethodBuckets
from tests.bot.conftest import ISOLATE, REVIEWS, Signoff
from tests.support.services import WorkerProcess, wait_until

# One approver, then a lead, reminded at level 0; slow timers, moved by the tests.
CHAIN = """
name: contain
steps:
  - name: review
    type: waitForInput
    with:
      message: "Isolate {{ event.host }}?"
      approvers: [U0ALICE, U0BOB]
      sla: 1h
      remind: 30m
      escalation:
        - approvers: [U0CAROL]
          sla: 1h
  - name: after
    type: console
    with:
      message: "{{ steps.review.output.approved }} by {{ steps.review.resumedBy.id }}"
"""
# The same review with a form (Respond… opens a modal).
FORM = ISOLATE.replace("required: [approved]", "required: [approved, notes]")

Limits = Callable[..., None]


@pytest.fixture
def limits(slack: SlackEmulator) -> Iterator[Limits]:
    """Set the emulator's limits for one test: ``posting`` per channel, ``methods`` by method;
    Slack's own are put back afterwards."""
    kept = slack.posting, slack.methods

    def set_(*, posting: PostingLimit | None = None, methods: MethodLimits | None = None) -> None:
        if posting is not None:
            slack.posting = ChannelBuckets(posting)
        if methods is not None:
            slack.methods = MethodBuckets(methods)

    yield set_
    slack.posting, slack.methods = kept


def scheduled(signoff: Signoff) -> list[Job]:
    queue = Queue(QUEUE, connection=signoff.engine.store.redis)
    return [Job.fetch(i, connection=queue.connection)
            for i in queue.scheduled_job_registry.get_job_ids()]


def run_put_off_jobs(signoff: Signoff, timeout: float = 30.0) -> None:
    """Run the jobs put off by Slack's limits once they are due, as a worker's RQ scheduler
    would (the tests' drain runs in burst mode, without one)."""
    queue = Queue(QUEUE, connection=signoff.engine.store.redis)
    registry = queue.scheduled_job_registry
    deadline = time.monotonic() + timeout
    while registry.count:
        assert time.monotonic() < deadline, "put-off jobs never came due"
        for job_id in registry.get_jobs_to_schedule():
            registry.remove(job_id)
            queue.enqueue_job(Job.fetch(job_id, connection=queue.connection))
        signoff.drain()
        time.sleep(0.1)


def timed_drain(signoff: Signoff) -> float:
    started = time.monotonic()
    signoff.drain()
    return time.monotonic() - started


def text_of(message: dict[str, Any]) -> str:
    return str(message.get("text", "")) + str(message.get("blocks", ""))


def replies(signoff: Signoff, ts: str, channel: str = REVIEWS) -> list[str]:
    return [r["text"] for r in signoff.slack.workspace.replies(channel, ts)]


def dms(signoff: Signoff, channel: str) -> list[str]:
    try:
        return [text_of(m) for m in signoff.slack.workspace.messages(channel)]
    except SlackApiFailure:  # never opened
        return []


# -- rewrites: chat.update, Tier 3 ----------------------------------------------------------------

def test_a_burst_of_rewrites_over_chat_updates_limit_all_land_and_no_worker_waits(
        signoff: Signoff, limits: Limits, worker_process: Callable[..., WorkerProcess]):
    # chat.update: two at once, then one every 6 s (Retry-After 6 on the first refused).
    limits(methods=MethodLimits.slack().per_minute("chat.update", 10, 2))
    slack = signoff.slack
    worker_process(extra_env={"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_API_URL": slack.api_url,
                              "SIGNOFF_SLACK_CHANNEL": REVIEWS})
    workflow = parse_workflow(ISOLATE)
    ids = [signoff.engine.run(workflow, {"host": f"web-{n}", "rule": "beaconing"})
           for n in range(4)]
    wait_until(lambda: len(signoff.messages()) == 4, timeout=15, message="the four reviews")
    by_host = {m["blocks"][0]["text"]["text"]: m["ts"] for m in signoff.messages()}

    for n in range(4):  # four decisions at once: four rewrites, over the limit
        assert signoff.driver.click("U0ALICE", (REVIEWS, by_host[f"Isolate web-{n}?"]),
                                    "signoff.approve").ok

    # Two rewritten at once; the others put off to when Slack allows, not waited for.
    wait_until(lambda: slack.methods.refused_by_key.get("chat.update"), timeout=15,
               message="Slack to refuse a rewrite")
    wait_until(lambda: len(scheduled(signoff)) == 2, timeout=5,
               message="the refused rewrites to be put off")
    assert all(j.func_name == "bot.jobs.update_review" for j in scheduled(signoff))
    # The worker is free meanwhile: a new review is posted while the rewrites wait their turn.
    started = time.monotonic()
    late = signoff.engine.run(workflow, {"host": "web-9", "rule": "beaconing"})
    wait_until(lambda: len(signoff.messages()) == 5, timeout=5, message="a fifth review")
    assert time.monotonic() - started < 3.0  # well inside the 6 s the rewrites wait
    # No job sits in a worker waiting the limit out: the put-off rewrites are only scheduled.
    started_jobs = Queue(QUEUE, connection=signoff.engine.store.redis).started_job_registry
    wait_until(lambda: started_jobs.count == 0, timeout=2, message="no slack job running")
    assert len(scheduled(signoff)) == 2

    # Every rewrite lands, in the end, showing the decision.
    wait_until(lambda: sum("Approved by <@U0ALICE>" in text_of(m)
                           for m in signoff.messages()) == 4,
               timeout=30, message="all four messages rewritten")
    assert all(signoff.engine.get(i).status is ExecutionStatus.COMPLETED for i in ids)
    assert signoff.engine.get(late).status is ExecutionStatus.WAITING_FOR_INPUT
    assert Queue(QUEUE, connection=signoff.engine.store.redis).failed_job_registry.count == 0
    # Put off, the rewrites asked Slack once each time they came due, not in a loop.
    updates = slack.calls_to("chat.update")
    assert len(updates) == 4 + slack.methods.refused_by_key["chat.update"]
    assert slack.methods.refused_by_key["chat.update"] <= 4


def test_a_rewrite_put_off_past_the_reviews_close_does_not_undo_it_whatever_the_order(
        signoff: Signoff, limits: Limits):
    # chat.update: one at once, then one every 2 s; the one is taken before the clicks.
    limits(methods=MethodLimits.slack().per_minute("chat.update", 30, 1))
    text = CHAIN.replace("approvers: [U0ALICE, U0BOB]",
                         "approvers: [U0ALICE, U0BOB]\n      approvals-required: 2")
    execution_id = signoff.run(text, {"host": "db-1"})
    [message] = signoff.messages()
    assert signoff.slack.methods.take("chat.update") is None

    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), "signoff.approve").ok
    signoff.drain()  # the quorum's rewrite ("1 of 2") is refused and put off
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), "signoff.approve").ok
    signoff.drain()  # decided; the close's rewrite waits its turn too, after the first
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    follow, close = scheduled(signoff)
    assert (follow.func_name, close.func_name) == ("bot.jobs.follow_review",
                                                  "bot.jobs.update_review")
    assert "Approved by" not in text_of(signoff.messages()[0])

    # The close's rewrite lands first, the quorum's afterwards (Slack free by then, so a
    # stale rewrite would go through): the review as it ended stays.
    connection = signoff.engine.store.redis
    wait_until(lambda: limited_left(connection, "chat.update") == 0, timeout=5,
               message="chat.update's Retry-After to pass")
    limits(methods=MethodLimits.off())
    signoff.slack.clear_calls()
    queue = Queue(QUEUE, connection=connection)
    for job in (close, follow):
        queue.scheduled_job_registry.remove(job.id)
        queue.enqueue_job(job)
        signoff.drain()

    assert len(signoff.slack.calls_to("chat.update")) == 1  # the close's; the quorum's: none
    final = text_of(signoff.messages()[0])
    assert "Approved by <@U0BOB>" in final and "1 of 2" not in final
    assert "signoff.approve" not in final
    assert queue.failed_job_registry.count == 0


# -- thread notes, DMs, reminders ---------------------------------------------------------------

def test_an_escalations_thread_note_and_dms_put_off_by_slack_land_once_each(
        signoff: Signoff, limits: Limits):
    # #reviews takes one post (the review), then one every 2 s; DMs have buckets of their own.
    limits(posting=PostingLimit(rate=0.5, burst=1))
    execution_id = signoff.run(CHAIN, {"host": "db-2"})
    [message] = signoff.messages()
    due = parse_iso(signoff.engine.get(execution_id).waiting.level_due)
    assert due is not None
    signoff.engine.clock = lambda: due + timedelta(milliseconds=1)
    assert signoff.engine.review_timer(execution_id, "review", 0, "sla") is True

    took = timed_drain(signoff)

    # The lead's DM went; the thread note in #reviews was refused, so the job was put off,
    # without its worker waiting the Retry-After (2 s) out.
    assert len([t for t in dms(signoff, "D0CAROL") if "Isolate db-2?" in t]) == 1
    assert replies(signoff, message["ts"]) == []
    assert [j.func_name for j in scheduled(signoff)] == ["bot.jobs.follow_review"]
    assert took < 1.5
    assert signoff.slack.posting.refused == 1

    run_put_off_jobs(signoff)

    assert replies(signoff, message["ts"]) == ["⬆️ Escalated to <@U0CAROL>: SLA of 1h passed"]
    assert "Escalated: level 2 of 2" in text_of(signoff.messages()[0])
    # Done once each: the DM sent before the 429 was not sent again.
    assert len([t for t in dms(signoff, "D0CAROL") if "Isolate db-2?" in t]) == 1
    delivery = load_delivery(signoff.engine, execution_id, "review")
    assert delivery is not None and sorted(p.to for p in delivery.posts) == [REVIEWS, "U0CAROL"]


def test_reminders_refused_by_conversations_open_come_back_and_each_approver_gets_one(
        signoff: Signoff, limits: Limits):
    # conversations.open (Tier 3): one at once, then one every 2 s.
    limits(methods=MethodLimits.slack().per_minute("conversations.open", 30, 1))
    execution_id = signoff.run(CHAIN, {"host": "db-3"})
    remind_at = parse_iso(signoff.engine.get(execution_id).waiting.remind_at)
    assert remind_at is not None
    signoff.engine.clock = lambda: remind_at + timedelta(milliseconds=1)
    assert signoff.engine.review_timer(execution_id, "review", 0, "remind") is True

    took = timed_drain(signoff)

    reminded = [t for dm in ("D0ALICE", "D0BOB") for t in dms(signoff, dm) if "Reminder" in t]
    assert len(reminded) == 1  # one DM opened, the other refused
    assert [j.func_name for j in scheduled(signoff)] == ["bot.jobs.follow_review"]
    assert took < 1.5

    run_put_off_jobs(signoff)

    for dm in ("D0ALICE", "D0BOB"):
        assert len([t for t in dms(signoff, dm) if "Reminder" in t]) == 1
    assert signoff.slack.methods.refused_by_key["conversations.open"] >= 1


# -- a click's modal: it cannot wait -----------------------------------------------------------

def test_a_modal_slack_refuses_tells_the_clicker_to_try_again_at_once(
        signoff: Signoff, limits: Limits):
    # views.open: one at once, then one a minute (Retry-After 60).
    limits(methods=MethodLimits.slack().per_minute("views.open", 1, 1))
    execution_id = signoff.run(FORM, {"host": "web-1", "rule": "beaconing"})
    [message] = signoff.messages()
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), "signoff.respond").ok
    assert len(signoff.slack.workspace.views.modals("U0ALICE")) == 1

    answer = signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), "signoff.respond")

    # Acknowledged at once (Slack allows 3 s), not after a minute's wait; no modal, and Bob
    # is told why and when to try again.
    told_to_try_again(signoff, "U0BOB", answer, 60)
    assert signoff.slack.methods.refused_by_key == {"views.open": 1}
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT

    # Within Retry-After the web process does not ask Slack again (the mark is shared
    # through Redis): Alice, clicking again, is told the same, and Slack sees no call.
    opened = len(signoff.slack.calls_to("views.open"))
    answer = signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), "signoff.respond")
    assert answer.ok and answer.elapsed < 2.0
    assert len(signoff.slack.calls_to("views.open")) == opened
    assert len(signoff.slack.workspace.views.modals("U0ALICE")) == 1  # the first one only
    signoff.drain()
    assert signoff.ephemerals("U0ALICE")[-1].startswith("Slack is busy and could not open")

    signoff.slack.methods.clear()  # Slack relents, and the minute is over: the form opens
    signoff.engine.store.redis.delete(bot_keys.rate_limited("views.open"))
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), "signoff.respond").ok
    assert len(signoff.slack.workspace.views.modals("U0BOB")) == 1


def told_to_try_again(site: Signoff, user: str, answer: Any, seconds: int) -> None:
    """The click was acknowledged at once (Slack allows 3 s) with no modal opened, and
    ``user`` told why and when to try again."""
    assert answer.ok and answer.elapsed < 2.0
    assert site.slack.workspace.views.modals(user) == []
    site.drain()
    assert site.ephemerals(user) == [
        "Slack is busy and could not open this form. Nothing was changed; please try again "
        f"in {seconds} seconds."]


def test_batch_review_that_slack_refuses_to_open_tells_the_clicker_to_try_again(
        start_signoff: Callable[..., Signoff], bot_settings: BotSettings, limits: Limits):
    limits(methods=MethodLimits.slack().per_minute("views.open", 2, 1))  # then one each 30 s
    storm = start_signoff(replace(bot_settings, digest_after=1, digest_every=0))
    workflow = parse_workflow(ISOLATE)
    for n in range(3):
        storm.engine.run(workflow, {"host": f"web-{n}", "rule": "beaconing"})
    storm.drain()
    [digest] = [m for m in storm.messages() if "review them together" in m["text"]]
    assert storm.driver.click("U0ALICE", (REVIEWS, digest["ts"]), ACTION_DIGEST).ok
    assert len(storm.slack.workspace.views.modals("U0ALICE")) == 1

    answer = storm.driver.click("U0BOB", (REVIEWS, digest["ts"]), ACTION_DIGEST)

    told_to_try_again(storm, "U0BOB", answer, 30)


def test_slots_put_off_under_one_method_come_back_at_slacks_pace_for_it(signoff: Signoff):
    connection = signoff.engine.store.redis

    updates = [slot(connection, "chat.update", 2.0) for _ in range(3)]
    groups = slot(connection, "usergroups.users.list", 2.0)

    assert 1.9 < updates[0] <= 2.0  # the Retry-After first
    assert updates[1] > updates[0] + 1.1 and updates[2] > updates[1] + 1.1  # Tier 3: 1.2 s
    assert 1.9 < groups <= 2.0  # each method has its own line


def test_the_bot_client_raises_rate_limited_and_shares_the_mark_without_calling_again(
        signoff: Signoff, limits: Limits):
    limits(methods=MethodLimits.slack().per_minute("users.info", 1, 1))
    client = signoff.bot.client
    client.users_info(user="U0ALICE")

    started = time.monotonic()
    with pytest.raises(RateLimited) as refused:
        client.users_info(user="U0BOB")
    with pytest.raises(RateLimited) as marked:  # known to be limited: Slack is not asked
        client.users_info(user="U0CAROL")

    assert time.monotonic() - started < 1.0  # neither waited the minute out
    assert refused.value.scope == "users.info" and refused.value.retry_after == 60
    assert refused.value.response.status_code == 429
    assert refused.value.response["error"] == "ratelimited"
    assert 58 < marked.value.retry_after <= 60
    assert len(signoff.slack.calls_to("users.info")) == 2
