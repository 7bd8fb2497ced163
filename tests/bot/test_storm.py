"""An alert storm in Slack: Slack's posting limit (429 and Retry-After) honoured without
losing a review, and many reviews of one step in one channel shown by one digest whose
reviews are each still decided, and audited, on their own."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from rq import Queue
from rq.job import Job

from bot.batch import BLOCK_DECISION, CALLBACK_BATCH
from bot.delivery import load_delivery
from bot.digest import ACTION_DIGEST, pile_id
from bot.outbox import QUEUE
from bot.ratelimit import ChannelLimits
from bot.settings import BotSettings
from bot.texts import BATCH_NOTHING_LEFT
from engine.definition.loader import parse_workflow
from engine.notify import Actor
from engine.state.execution import ExecutionStatus
from slack_emulator import PostingLimit
from slack_emulator.ratelimit import ChannelBuckets
from slack_emulator.state import view_state
from tests.bot.conftest import ISOLATE, REVIEWS, Signoff

OTHER = "C0OTHER"
ISOLATE_OTHER = ISOLATE.replace("approvers: [U0ALICE, U0BOB]",
                                f"approvers: [U0ALICE, U0BOB]\n      channel: {OTHER}")


@pytest.fixture
def storm(start_signoff: Callable[..., Signoff], bot_settings: BotSettings) -> Signoff:
    """Signoff with digests after two reviews of a step in a channel, each change to a
    digest rewriting it at once."""
    return start_signoff(replace(bot_settings, digest_after=2, digest_every=0))


def start(signoff: Signoff, count: int, text: str = ISOLATE, **event: Any) -> list[str]:
    workflow = parse_workflow(text)
    ids = [signoff.engine.run(workflow, {"host": f"web-{n:02d}", "rule": "beaconing", **event})
           for n in range(count)]
    signoff.drain()
    return ids


def listing_order(signoff: Signoff, ids: list[str]) -> list[str]:
    """``ids`` as listings show them: oldest wait first, those that began waiting in the
    same millisecond by id."""
    return sorted(ids, key=lambda i: (signoff.engine.get(i).waiting.since, i))


def post_calls(signoff: Signoff, channel: str = REVIEWS) -> list[dict[str, Any]]:
    return [c for c in signoff.slack.calls_to("chat.postMessage") if c["channel"] == channel
            and not c.get("thread_ts")]


def run_put_off_posts(signoff: Signoff, timeout: float = 30.0, *, now: bool = False) -> None:
    """Run the post jobs put off by Slack's limit once they are due (``now``: at once), as
    a worker's RQ scheduler would (the tests' drain runs in burst mode, without one)."""
    queue = Queue(QUEUE, connection=signoff.engine.store.redis)
    registry = queue.scheduled_job_registry
    deadline = time.monotonic() + timeout
    while registry.count:
        assert time.monotonic() < deadline, "put-off posts never came due"
        for job_id in registry.get_job_ids() if now else registry.get_jobs_to_schedule():
            registry.remove(job_id)
            queue.enqueue_job(Job.fetch(job_id, connection=queue.connection))
        signoff.drain()
        time.sleep(0.1)


def step_decided(signoff: Signoff, execution_id: str) -> list[dict[str, Any]]:
    return [e.event for e in signoff.engine.audit_entries(execution_id)
            if e.event["type"] == "step.decided"]


# -- Slack's posting limit ----------------------------------------------------------------------

def test_a_post_refused_with_429_is_posted_once_the_channel_allows_and_none_is_lost(
        signoff: Signoff):
    signoff.slack.fail_next("chat.postMessage", status=429, retry_after=1)

    [execution_id] = start(signoff, 1)

    # Refused: not posted, not failed, put off; the run waits on.
    assert signoff.messages() == []
    queue = Queue(QUEUE, connection=signoff.engine.store.redis)
    assert queue.scheduled_job_registry.count == 1
    assert queue.failed_job_registry.count == 0
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT

    run_put_off_posts(signoff)

    [message] = signoff.messages()
    delivery = load_delivery(signoff.engine, execution_id, "review")
    assert delivery is not None
    assert [(p.channel, p.ts) for p in delivery.posts] == [(REVIEWS, message["ts"])]
    assert len(post_calls(signoff)) == 2  # the refused call and the one that posted
    assert queue.failed_job_registry.count == 0
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), "signoff.approve").ok
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED


def test_one_channel_at_its_limit_does_not_hold_up_posts_to_another(signoff: Signoff):
    slack = signoff.slack
    slack.workspace.add_channel(OTHER, "other", ["U0ALICE", "U0BOB", "U0SIGNOFFBOT"])
    kept = slack.posting
    slack.posting = ChannelBuckets(PostingLimit(rate=0.01, burst=1))  # one post, then 100 s
    try:
        first, second = start(signoff, 2)
        [elsewhere] = start(signoff, 1, ISOLATE_OTHER)

        assert len(signoff.messages()) == 1  # the second waits for #reviews' limit
        assert len(signoff.messages(OTHER)) == 1  # posted at once all the same
        assert load_delivery(signoff.engine, second, "review") is None
        # Slack was asked once for each: the second was refused, and the mark held it since.
        assert len(post_calls(signoff)) == 2
        queue = Queue(QUEUE, connection=signoff.engine.store.redis)
        assert queue.scheduled_job_registry.count == 1
        assert signoff.engine.get(second).status is ExecutionStatus.WAITING_FOR_INPUT
    finally:
        slack.posting = kept
    signoff.engine.store.redis.delete(f"signoff:slack:ratelimited:{REVIEWS}")  # Slack relents
    run_put_off_posts(signoff, now=True)
    assert len(signoff.messages()) == 2
    delivery = load_delivery(signoff.engine, second, "review")
    assert delivery is not None and len(delivery.posts) == 1
    for execution_id, channel in ((first, REVIEWS), (elsewhere, OTHER)):
        delivery = load_delivery(signoff.engine, execution_id, "review")
        assert delivery is not None and [p.channel for p in delivery.posts] == [channel]


# -- digests ------------------------------------------------------------------------------------

def digest_of(signoff: Signoff, channel: str = REVIEWS) -> dict[str, Any]:
    [digest] = [m for m in signoff.messages(channel) if "review them together" in m["text"]]
    return digest


def test_a_digest_is_rewritten_at_most_once_each_interval_and_ends_up_right(
        start_signoff: Callable[..., Signoff], bot_settings: BotSettings):
    # Slack's chat.update takes about 50 a minute: a storm must not rewrite a digest for
    # every review that joins it.
    signoff = start_signoff(replace(bot_settings, digest_after=2, digest_every=3))
    start(signoff, 4)  # two on their own, the digest with the third, the fourth joins it
    assert digest_of(signoff)["text"].startswith("4 reviews of review are waiting")
    updates = len(signoff.slack.calls_to("chat.update"))
    assert updates == 1  # the fourth's join, at once (nothing rewrote it just before)

    start(signoff, 3)  # within the interval: put off, one refresh for all three
    assert digest_of(signoff)["text"].startswith("4 reviews of review are waiting")
    assert len(signoff.slack.calls_to("chat.update")) == updates
    scheduled = Queue(QUEUE, connection=signoff.engine.store.redis).scheduled_job_registry
    assert scheduled.count == 1

    run_put_off_posts(signoff)  # due once the interval has passed
    assert digest_of(signoff)["text"].startswith("7 reviews of review are waiting")
    assert len(signoff.slack.calls_to("chat.update")) == updates + 1


def test_past_the_threshold_reviews_of_a_step_join_one_digest_each_still_its_own_review(
        storm: Signoff):
    ids = start(storm, 6, host_note="x")

    messages = storm.messages()
    assert len(messages) == 3  # two reviews posted on their own, then the digest
    digest = digest_of(storm)
    assert digest["text"] == "6 reviews of review are waiting: review them together."
    [headline] = [b["text"]["text"] for b in digest["blocks"] if b["type"] == "section"]
    assert headline.startswith("*6 reviews of `review` are waiting: review them together.*\n"
                               "Workflow *isolate-host*.")
    for execution_id in ids[2:]:
        delivery = load_delivery(storm.engine, execution_id, "review")
        assert delivery is not None
        assert [(p.channel, p.ts) for p in delivery.posts] == [(REVIEWS, digest["ts"])]
    assert len(post_calls(storm)) == 3
    # A post job run again (a retry) finds the review in the digest: nothing posted twice.
    again = storm.bot.deliverer.deliver(ids[3], "review")
    assert again is not None and [(p.channel, p.ts) for p in again.posts] == [
        (REVIEWS, digest["ts"])]
    assert len(post_calls(storm)) == 3 and len(storm.messages()) == 3

    # Alice opens batch review from the digest and decides two of the digested reviews.
    assert storm.driver.click("U0ALICE", (REVIEWS, digest["ts"]), ACTION_DIGEST).ok
    [modal] = storm.slack.workspace.views.modals("U0ALICE")
    options = [o["value"] for b in modal["blocks"] if b["type"] == "input"
               and b["element"]["type"] == "checkboxes" for o in b["element"]["options"]]
    assert options == listing_order(storm, ids)
    assert storm.driver.submit_view("U0ALICE", modal["id"], {
        "signoff.batch.0": ids[2:4], BLOCK_DECISION: "approve"}).ok
    storm.drain()

    for execution_id in ids[2:4]:
        [decided] = step_decided(storm, execution_id)  # each in its own audit trail
        assert decided["actor"]["id"] == "U0ALICE" and decided["outcome"] == "approved"
        assert storm.engine.get(execution_id).status is ExecutionStatus.COMPLETED
        assert storm.engine.verify_audit(execution_id).ok
    for execution_id in [*ids[:2], *ids[4:]]:
        assert step_decided(storm, execution_id) == []
        assert storm.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    # The digest counts what still waits; closing a review never rewrote it with its own.
    digest = digest_of(storm)
    assert digest["text"] == "4 reviews of review are waiting: review them together."

    # One by one still works: bob denies one of the digested reviews on its own.
    storm.engine.resume(ids[4], {"approved": False},
                        Actor(id="U0BOB", name="bob", source="slack"), step="review")
    storm.drain()
    assert step_decided(storm, ids[4])[0]["outcome"] == "denied"
    assert digest_of(storm)["text"] == "3 reviews of review are waiting: review them together."


def test_once_every_review_closed_the_digest_says_so_and_the_next_is_posted_alone(
        storm: Signoff):
    ids = start(storm, 4)
    digest = digest_of(storm)
    assert storm.driver.click("U0BOB", (REVIEWS, digest["ts"]), ACTION_DIGEST).ok
    [modal] = storm.slack.workspace.views.modals("U0BOB")
    assert storm.driver.submit_view("U0BOB", modal["id"], {
        "signoff.batch.0": ids, BLOCK_DECISION: "deny"}).ok
    storm.drain()

    closed = storm.slack.workspace.message(REVIEWS, digest["ts"])
    assert closed["text"] == "Every review of review in this digest was closed."
    assert not any(b["type"] == "actions" for b in closed["blocks"])
    assert all(step_decided(storm, i)[0]["outcome"] == "denied" for i in ids)
    redis = storm.engine.store.redis
    assert redis.scard(f"signoff:slack:pile:{pile_id(REVIEWS, 'isolate-host', 'review')}") == 0

    [later] = start(storm, 1)
    newest = storm.messages()[-1]
    delivery = load_delivery(storm.engine, later, "review")
    assert delivery is not None and delivery.posts[0].ts == newest["ts"] != digest["ts"]
    assert newest["blocks"][0]["text"]["text"] == "Isolate web-00?"


def test_a_non_approvers_click_on_the_digest_changes_nothing(storm: Signoff):
    ids = start(storm, 4)
    digest = digest_of(storm)

    assert storm.driver.click("U0DAVE", (REVIEWS, digest["ts"]), ACTION_DIGEST).ok
    [notice] = storm.slack.workspace.views.modals("U0DAVE")
    assert BATCH_NOTHING_LEFT in json.dumps(notice)

    # A forged submission of alice's batch form as dave: the engine refuses each review.
    assert storm.driver.click("U0ALICE", (REVIEWS, digest["ts"]), ACTION_DIGEST).ok
    [modal] = storm.slack.workspace.views.modals("U0ALICE")
    view = {**modal, "state": {"values": view_state(modal["blocks"], {
        "signoff.batch.0": ids, BLOCK_DECISION: "approve"})}}
    assert view["callback_id"] == CALLBACK_BATCH
    workspace = storm.slack.workspace
    forged = storm.driver.send_interaction({
        "type": "view_submission", "team": {"id": workspace.team.id,
                                            "domain": workspace.team.domain},
        "user": {"id": "U0DAVE", "username": "dave", "name": "dave",
                 "team_id": workspace.team.id},
        "api_app_id": workspace.app.app_id, "token": workspace.app.verification_token,
        "trigger_id": workspace.issue_trigger("U0DAVE"), "view": view, "response_urls": []})
    assert forged.status == 200
    assert forged.body["response_action"] == "update"  # the results: nothing recorded
    assert "0 decisions recorded, 4 not recorded" in json.dumps(forged.body)
    storm.drain()

    for execution_id in ids:
        assert step_decided(storm, execution_id) == []
        assert storm.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
        refused = [e.event for e in storm.engine.audit_entries(execution_id)
                   if e.event["type"] == "decision.refused"]
        assert [r["actor"]["id"] for r in refused] == ["U0DAVE"]
    assert digest_of(storm)["text"] == "4 reviews of review are waiting: review them together."


def test_the_digest_escapes_event_data(storm: Signoff):
    start(storm, 3, host="web <!channel> <@U0CAROL> <https://evil.example|click> & co")

    shown = json.dumps(digest_of(storm))
    assert "<!channel>" not in shown and "<@U0CAROL>" not in shown
    assert "<https://evil.example" not in shown
    assert "&lt;!channel&gt;" in shown


def test_with_digests_off_every_review_gets_its_own_message(
        start_signoff: Callable[..., Signoff], bot_settings: BotSettings):
    signoff = start_signoff(replace(bot_settings, digest_after=0))
    start(signoff, 4)
    assert len(signoff.messages()) == 4
    assert not any("review them together" in m["text"] for m in signoff.messages())


def test_posts_put_off_in_one_channel_come_back_a_second_apart(signoff: Signoff):
    limits = ChannelLimits(signoff.engine.store.redis, signoff.bot.client)

    slots = [limits.slot(REVIEWS, 3.0) for _ in range(3)]
    elsewhere = limits.slot(OTHER, 3.0)

    assert 2.9 < slots[0] <= 3.0  # the Retry-After first
    assert slots[1] > slots[0] + 0.9 and slots[2] > slots[1] + 0.9  # then Slack's pace
    assert 2.9 < elsewhere <= 3.0  # each channel has its own line


def test_redeliver_gives_a_digested_review_a_message_of_its_own(storm: Signoff):
    ids = start(storm, 3)
    digest = digest_of(storm)

    delivery = storm.bot.deliverer.deliver(ids[2], "review", again=True)  # signoff redeliver

    assert delivery is not None
    own = storm.messages()[-1]
    assert [(p.channel, p.ts) for p in delivery.posts] == [
        (REVIEWS, digest["ts"]), (REVIEWS, own["ts"])]
    assert own["blocks"][0]["text"]["text"] == "Isolate web-02?"
    assert storm.driver.click("U0ALICE", (REVIEWS, own["ts"]), "signoff.approve").ok
    storm.drain()
    assert step_decided(storm, ids[2])[0]["actor"]["id"] == "U0ALICE"
    assert "Approved by <@U0ALICE>" in str(storm.slack.workspace.message(REVIEWS, own["ts"]))
    assert digest_of(storm)["text"] == "2 reviews of review are waiting: review them together."
