"""``/approvals all`` read from the visibility index (bot/visibility.py), end to end.

The Slack side as it runs (real Redis, the Bolt app served over HTTP, the post, change
and close jobs on RQ) against the Slack emulator. A payout review goes to a private
channel; who is shown it follows it as it is posted, escalated (its second level posts
to the leads' channel), reassigned and closed, and nobody else is shown anything.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from slack_sdk import WebClient

from bot import keys
from bot.delivery import load_delivery
from bot.directory import Directory
from bot.overview import ACTION_MORE, Overview, Scope
from bot.visibility import Visibility, noted_key
from engine.definition.loader import parse_workflow
from engine.notify import Actor
from engine.state import keys as engine_keys
from engine.state.execution import epoch_ms, parse_iso
from engine.worker.worker import SignoffWorker
from slack_emulator import SlackEmulator
from slack_emulator.directory import User
from tests.bot.conftest import REVIEWS, Signoff
from tests.bot.test_approvals import approvals, sections, shown

PAYOUTS = "C0PAYOUTS"
LEADS = "C0LEADS"
# Level 1: Alice, posted in #payouts; level 2: the on-call group (Dave), posted in #leads
# too. Carol asks.
PAYOUT = f"""
name: payout
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Pay {{{{ event.amount }}}} EUR to the new supplier?"
      approvers: [U0ALICE]
      channel: {PAYOUTS}
      escalation:
        - approvers: [S0ONCALL]
          channel: {LEADS}
          sla: 1h
"""
# Two reviews in a row, the second for Bob alone, in #leads.
TWO_REVIEWS = f"""
name: two-reviews
steps:
  - name: first
    type: waitForApproval
    with:
      message: "First of two?"
      approvers: [U0ALICE]
      channel: {PAYOUTS}
  - name: second
    type: waitForApproval
    with:
      message: "Second of two?"
      approvers: [U0BOB]
      channel: {LEADS}
"""
NOTHING = ["No reviews are waiting for a decision."]
ALICE = Actor(id="U0ALICE", name="alice", source="slack")


def person(user_id: str, name: str) -> User:
    return User(id=user_id, name=name, real_name=name.title(), display_name=name,
                email=f"{name}@site.test")


@pytest.fixture
def workspace(slack: SlackEmulator) -> SlackEmulator:
    """The seeded workspace plus Mallory (in #reviews only), Erin (in #payouts), Frank (in
    #leads) and Grace (who joins #payouts later, in one test)."""
    for user_id, name in (("U0MALLORY", "mallory"), ("U0ERIN", "erin"), ("U0FRANK", "frank"),
                          ("U0GRACE", "grace")):
        slack.workspace.add_user(person(user_id, name))
    slack.workspace.add_channel(REVIEWS, "reviews", [
        *slack.workspace.members(REVIEWS), "U0MALLORY", "U0ERIN", "U0FRANK", "U0GRACE"])
    slack.workspace.add_channel(PAYOUTS, "payouts", ["U0ERIN", "U0SIGNOFFBOT"])
    slack.workspace.add_channel(LEADS, "leads", ["U0FRANK", "U0SIGNOFFBOT"])
    return slack


@pytest.fixture
def site(workspace: SlackEmulator, signoff: Signoff) -> Signoff:
    return signoff


def listed(site: Signoff, user: str) -> list[str]:
    """The execution ids ``/approvals all`` shows ``user``, in order."""
    return _ids(json.dumps(approvals(site, user, "all")))


def _ids(text: str) -> list[str]:
    return [part.split("`", 1)[0] for part in text.split("Execution `")[1:]]


def payout(site: Signoff, amount: int = 90_000) -> str:
    execution_id = site.engine.run(parse_workflow(PAYOUT), {"amount": amount},
                                   requested_by="U0CAROL")
    site.drain()
    assert execution_id in json.dumps(site.messages(PAYOUTS)[-1])
    return execution_id


def indexed(site: Signoff, key: str) -> list[str]:
    return [m.decode() for m in site.engine.store.redis.zrange(key, 0, -1)]


def engine_jobs_only(site: Signoff) -> None:
    """Run the engine's jobs, not the Slack side's: as if the bot's jobs were still queued."""
    worker = SignoffWorker([site.runtime.settings.queue], connection=site.engine.store.redis)
    worker.work(burst=True, logging_level="WARNING")


def test_a_non_approver_outside_the_channel_sees_nothing(site: Signoff):
    execution_id = payout(site)

    assert listed(site, "U0MALLORY") == []
    assert sections(approvals(site, "U0MALLORY", "all")) == NOTHING
    assert indexed(site, keys.viewer("U0MALLORY")) == []
    # Those with a part in it are shown it: from their own index, or their channel's.
    for viewer in ("U0ALICE", "U0DAVE", "U0CAROL", "U0ERIN"):
        assert listed(site, viewer) == [execution_id], viewer
    assert indexed(site, keys.posted_in(PAYOUTS)) == [execution_id]
    # Alice may decide it: the engine's index of her reviews lists it, the bot's does not
    # repeat it.
    assert indexed(site, engine_keys.index_approver("U0ALICE")) == [execution_id]
    assert indexed(site, keys.viewer("U0ALICE")) == []
    assert seen_by(site, execution_id) == {"U0DAVE", "U0CAROL", f"#{PAYOUTS}"}


def test_escalation_shows_the_review_to_the_next_level_and_its_channel(site: Signoff):
    execution_id = payout(site)
    assert listed(site, "U0FRANK") == []  # #leads has nothing yet
    assert listed(site, "U0DAVE") == [execution_id]  # a later level's approver, as before

    site.engine.escalate(execution_id, ALICE, "need the on-call lead")
    site.drain()

    assert execution_id in json.dumps(site.messages(LEADS))
    assert listed(site, "U0DAVE") == [execution_id]
    assert listed(site, "U0FRANK") == [execution_id]  # a member of the level's channel
    assert listed(site, "U0MALLORY") == []


def test_reassignment_shows_the_review_to_the_new_approver(site: Signoff):
    execution_id = payout(site)
    assert listed(site, "U0MALLORY") == []

    site.engine.reassign(execution_id, ALICE, "U0MALLORY")
    site.drain()

    assert listed(site, "U0MALLORY") == [execution_id]
    # She may decide it now: the engine lists it for her; Alice handed it off.
    assert indexed(site, engine_keys.index_approver("U0MALLORY")) == [execution_id]
    assert indexed(site, engine_keys.index_approver("U0ALICE")) == []


def seen_by(site: Signoff, execution_id: str, since_ms: int | None = None) -> set[str]:
    """Whose index (and which channels') the bot put the review in, as noted for its close."""
    if since_ms is None:
        review = site.engine.review(execution_id)
        assert review is not None
        since_ms = epoch_ms(review.created_at)
    return set(Visibility(site.engine.store, None).noted(execution_id, since_ms))  # type: ignore[arg-type]


@pytest.mark.parametrize("close", ["decided", "cancelled"])
def test_a_closed_review_disappears_at_once_and_its_entries_go(site: Signoff, close: str):
    kept, closing = payout(site, 1), payout(site, 2)
    if close == "decided":
        site.engine.resume(closing, {"approved": True}, ALICE)
    else:
        site.engine.cancel(closing, ALICE, "duplicate")

    # Gone before the Slack side has heard of it (its close job is still queued).
    for viewer in ("U0ALICE", "U0DAVE", "U0CAROL", "U0ERIN"):
        assert listed(site, viewer) == [kept], viewer
    assert "Showing 1–1 of 1" in json.dumps(approvals(site, "U0ERIN", "all"), ensure_ascii=False)

    closed = load_delivery(site.engine, closing, "review")
    assert closed is not None
    since_ms = epoch_ms(parse_iso(closed.since) or datetime.now(UTC))
    assert seen_by(site, closing, since_ms) == {"U0DAVE", "U0CAROL", f"#{PAYOUTS}"}
    assert indexed(site, engine_keys.index_approver("U0ALICE")) == [kept]  # the engine's, at once
    site.drain()  # the close job takes its entries out
    for key in (keys.viewer("U0DAVE"), keys.viewer("U0CAROL"), keys.posted_in(PAYOUTS)):
        assert indexed(site, key) == [kept], key
    assert seen_by(site, closing, since_ms) == set()
    assert not site.engine.store.redis.hexists(
        engine_keys.execution(closing), engine_keys.annotation_field(noted_key(since_ms)))


def noted_the_old_way(site: Signoff, execution_id: str, *also: str) -> int:
    """Move the note of whose indexes hold the review (and ``also``) into a set of its own,
    as an earlier version kept it; returns when the review began waiting (ms)."""
    review = site.engine.review(execution_id)
    assert review is not None
    since_ms = epoch_ms(review.created_at)
    redis_client = site.engine.store.redis
    field = engine_keys.annotation_field(noted_key(since_ms))
    words = redis_client.hget(engine_keys.execution(execution_id), field).decode().split()
    redis_client.hdel(engine_keys.execution(execution_id), field)
    redis_client.sadd(keys.seen_by(execution_id, since_ms), *words, *also)
    return since_ms


def test_a_review_noted_the_old_way_is_taken_out_of_every_index_at_its_close(site: Signoff):
    """Reviews indexed before the note moved onto the execution kept it in a set of its
    own (``seen-by:{id}:{ms}``); their close still takes them out of every index."""
    kept, closing = payout(site, 1), payout(site, 2)
    since_ms = noted_the_old_way(site, closing)
    redis_client = site.engine.store.redis
    redis_client.zadd(keys.INDEXED, {closing: since_ms})  # ... with its index of all indexed
    assert seen_by(site, closing) == {"U0DAVE", "U0CAROL", f"#{PAYOUTS}"}

    site.engine.resume(closing, {"approved": True}, ALICE)
    site.drain()

    for key in (keys.viewer("U0DAVE"), keys.viewer("U0CAROL"), keys.posted_in(PAYOUTS)):
        assert indexed(site, key) == [kept], key
    assert indexed(site, keys.INDEXED) == []
    assert not redis_client.exists(keys.seen_by(closing, since_ms))


def test_a_review_an_earlier_version_indexed_and_this_one_noted_again_leaves_every_index(
        site: Signoff):
    """An earlier version indexed the review under everyone (its approver too) and kept
    whose indexes in a set; after the upgrade a listing notes it again on the execution.
    Its close takes it out of both versions' entries and deletes the set."""
    kept, closing = payout(site, 1), payout(site, 2)
    since_ms = noted_the_old_way(site, closing, "U0ALICE")
    redis_client = site.engine.store.redis
    redis_client.zadd(keys.viewer("U0ALICE"), {closing: since_ms})
    assert listed(site, "U0MALLORY") == []  # a listing finds it without a note: noted again
    assert seen_by(site, closing) == {"U0ALICE", "U0DAVE", "U0CAROL", f"#{PAYOUTS}"}

    site.engine.resume(closing, {"approved": True}, ALICE)
    site.drain()

    for key in (keys.viewer("U0DAVE"), keys.viewer("U0CAROL"), keys.posted_in(PAYOUTS)):
        assert indexed(site, key) == [kept], key
    assert indexed(site, keys.viewer("U0ALICE")) == []
    assert not redis_client.exists(keys.seen_by(closing, since_ms))
    assert seen_by(site, closing, since_ms) == set()


def test_a_timed_out_review_disappears(site: Signoff):
    execution_id = payout(site)
    site.engine.expire(execution_id)
    site.drain()

    assert listed(site, "U0ALICE") == [] and listed(site, "U0ERIN") == []
    assert indexed(site, keys.viewer("U0DAVE")) == []
    assert indexed(site, engine_keys.index_approver("U0ALICE")) == []
    assert not [f for f in site.engine.store.redis.hkeys(engine_keys.execution(execution_id))
                if f.startswith(b"n:slack:seen:")]


def test_a_run_that_moved_on_to_another_review_shows_only_that_one(site: Signoff):
    execution_id = site.engine.run(parse_workflow(TWO_REVIEWS), {}, requested_by="U0CAROL")
    site.drain()
    assert listed(site, "U0ALICE") == [execution_id]

    site.engine.resume(execution_id, {"approved": True}, ALICE)
    engine_jobs_only(site)  # it waits on the second review; the bot has not heard yet
    review = site.engine.review(execution_id)
    assert review is not None and review.step == "second"

    # Alice's and #payouts' entries name the first review: they show nothing.
    assert listed(site, "U0ALICE") == [] and listed(site, "U0ERIN") == []
    assert listed(site, "U0BOB") == [execution_id]  # not posted yet: checked as it stands
    site.drain()
    assert listed(site, "U0BOB") == [execution_id] and listed(site, "U0FRANK") == [execution_id]
    assert listed(site, "U0ALICE") == []


def test_a_member_of_the_channel_sees_it_and_one_who_joins_once_the_members_are_asked_again(
        site: Signoff, workspace: SlackEmulator):
    execution_id = payout(site)
    assert listed(site, "U0ERIN") == [execution_id]  # in #payouts, nothing else
    assert indexed(site, keys.viewer("U0ERIN")) == []

    workspace.workspace.add_channel(PAYOUTS, "payouts", ["U0ERIN", "U0GRACE", "U0SIGNOFFBOT"])
    assert listed(site, "U0GRACE") == []  # the cached members (an hour) do not name her yet
    site.engine.store.redis.delete(keys.conversation_members(PAYOUTS))  # the cache lapses
    assert listed(site, "U0GRACE") == [execution_id]


def test_more_than_a_thousand_waiting_reviews_are_all_listed(site: Signoff):
    workflow = parse_workflow(PAYOUT)
    ids = [site.engine.run(workflow, {"amount": n}, requested_by="U0CAROL")
           for n in range(1_005)]
    site.drain()
    # Oldest wait first; runs that began waiting in the same millisecond, by their id.
    ids = sorted(ids, key=lambda i: (site.engine.get(i).waiting.since, i))

    first = approvals(site, "U0ERIN", "all")  # in #payouts: no approver, no requester
    assert "Showing 1–10 of 1,005" in json.dumps(first, ensure_ascii=False)
    assert _ids(json.dumps(first)) == ids[:10]
    assert site.driver.click("U0ERIN", shown("U0ERIN", site), ACTION_MORE).ok
    second = shown("U0ERIN", site)["message"]
    assert "Showing 11–20 of 1,005" in json.dumps(second, ensure_ascii=False)
    assert _ids(json.dumps(second)) == ids[10:20]

    client = WebClient(token=site.slack.bot_token, base_url=site.slack.api_url)
    overview = Overview(site.engine, client, Directory(client, site.engine.store))
    last = overview.page("U0ERIN", Scope.ALL, 1_000)
    assert [i.review.execution_id for i in last.items] == ids[1_000:] and last.total == 1_005
    assert overview.page("U0MALLORY", Scope.ALL).total == 0
    alice = overview.page("U0ALICE", Scope.ALL, 1_000)
    assert [i.review.execution_id for i in alice.items] == ids[1_000:]


def test_reviews_posted_before_the_index_existed_are_indexed_by_the_first_listing(
        site: Signoff):
    """An upgrade: reviews wait that were posted without the index. The first listing
    finds them (no note on the execution), indexes them, and answers as the index would."""
    first, second = payout(site, 1), payout(site, 2)
    redis_client = site.engine.store.redis
    for key in redis_client.scan_iter(f"{keys.PREFIX}*"):
        name = key.decode()
        if name.startswith((keys.viewer(""), keys.posted_in(""), keys.seen_by("", 0)[:-2],
                            keys.INDEXED, keys.POSTED_CHANNELS)):
            redis_client.delete(key)
    for execution_id in (first, second):  # and the notes on the executions
        redis_client.hdel(engine_keys.execution(execution_id), *[
            f for f in redis_client.hkeys(engine_keys.execution(execution_id))
            if f.startswith(engine_keys.annotation_field(noted_key(0))[:-1].encode())])
    assert seen_by(site, first) == set() and seen_by(site, second) == set()

    assert listed(site, "U0MALLORY") == []
    assert seen_by(site, second) == {"U0DAVE", "U0CAROL", f"#{PAYOUTS}"}  # by that listing
    assert listed(site, "U0ERIN") == [first, second]
    assert listed(site, "U0DAVE") == [first, second]
    assert seen_by(site, first) == {"U0DAVE", "U0CAROL", f"#{PAYOUTS}"}
