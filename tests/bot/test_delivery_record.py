"""The delivery record keeps where a review was posted, not the review's text: the message
is in the audit trail alone, and the rewrite after a decision reads it back from there."""

from __future__ import annotations

import json

from bot.blocks import ACTION_APPROVE
from bot.delivery import Delivery, Post, load_delivery, review_from_json, stored_posts
from engine.state import compact, keys
from engine.state.execution import Waiting, review_for
from tests.bot.conftest import ISOLATE, REVIEWS, Signoff

EVIDENCE = "c2-beacon-" + "3f9a0c7e51d2" * 40  # one word: Slack's blocks keep it whole
WITH_EVIDENCE = ISOLATE.replace("**Rule:** {{ event.rule }}",
                                "**Rule:** {{ event.rule }}\n        {{ event.evidence }}")


def test_the_record_holds_channel_and_ts_and_the_closed_message_keeps_the_evidence(
        signoff: Signoff):
    execution_id = signoff.run(WITH_EVIDENCE, {"host": "web-01", "rule": "beaconing",
                                               "evidence": EVIDENCE})
    [posted] = signoff.messages()
    assert EVIDENCE in str(posted["blocks"])

    raw = signoff.runtime.engine.store.redis.hget(keys.execution(execution_id),
                                                  keys.annotation_field("slack:review"))
    assert raw is not None
    record = compact.unpack(raw)
    assert EVIDENCE not in record and "blocks" not in record
    delivery = load_delivery(signoff.engine, execution_id, "review")
    assert delivery is not None
    assert [(p.channel, p.ts) for p in delivery.posts] == [(REVIEWS, posted["ts"])]
    assert delivery.review["title"] == "## Isolate `{{ event.host }}`?".replace(
        "{{ event.host }}", "web-01")
    assert delivery.review["execution_id"] == execution_id

    assert signoff.driver.click("U0ALICE", (REVIEWS, posted["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    [closed] = signoff.messages()
    assert closed["ts"] == posted["ts"]
    assert EVIDENCE in str(closed["blocks"])  # read back from the audit trail
    assert not any(block["type"] == "actions" for block in closed["blocks"])
    assert signoff.engine.verify_audit(execution_id).ok


def test_a_record_written_before_keeps_reading_with_its_copy_of_the_message():
    older = {"execution_id": "x-1", "step": "review", "since": "2026-01-01T00:00:00.000Z",
             "approvers": ["U0ALICE"], "restricted": True, "shown": ["U0ALICE"],
             "requester": None, "posts": [{"to": REVIEWS, "channel": REVIEWS, "ts": "1.2",
                                           "lead": ""}],
             "review": {"execution_id": "x-1", "workflow": "isolate-host", "step": "review",
                        "step_type": "waitForInput", "message": "## Isolate?\nall the evidence",
                        "message_sha256": "ab", "schema": {},
                        "created_at": "2026-01-01T00:00:00.000Z", "approvers": ["U0ALICE"],
                        "channel": None, "level": 0},
             "sources": ["U0ALICE"], "sent": [], "failures": []}
    delivery = Delivery.from_json(older, "not-read", "not-read")  # it names its own
    assert (delivery.execution_id, delivery.step) == ("x-1", "review")
    review = review_from_json(delivery.review)
    assert review.message == "## Isolate?\nall the evidence"
    assert review.title == "Isolate?"
    again = Delivery.from_json(delivery.to_json(), "x-1", "review")
    assert again.posts == delivery.posts and again.approvers == ("U0ALICE",)
    assert review_from_json(again.review, "whole").message == "whole"
    assert review_from_json(again.review).message == "## Isolate?\nall the evidence"


def test_the_record_leaves_out_what_it_can_read_back_and_reads_the_same():
    delivery = Delivery(
        execution_id="x-2", step="review", since="2026-01-01T00:00:00.000Z",
        approvers=("U0ALICE",), restricted=True, shown=("S0SOCL1",), requester=None,
        posts=(Post(to=REVIEWS, channel=REVIEWS, ts="1.2"), Post(to="U0BOB", channel="D0BOB",
                                                                  ts="3.4")),
        review={"execution_id": "x-2", "step": "review", "approvers": ["S0SOCL1"],
                "created_at": "2026-01-01T00:00:00.000Z", "title": "Isolate?"},
        sources=("S0SOCL1",))
    stored = delivery.to_json()
    assert "sources" not in stored
    assert "x-2" not in json.dumps(stored) and "step" not in stored  # its annotation's key
    assert stored["posts"] == [{"to": REVIEWS, "ts": "1.2"},
                               {"to": "U0BOB", "channel": "D0BOB", "ts": "3.4"}]
    assert Delivery.from_json(stored, "x-2", "review") == delivery


def test_a_listing_reads_only_the_posts_of_the_review_it_shows():
    """A listing reads the posts of a review's record without the rest of it; a record of an
    earlier instance of the step (a foreach's previous host, before the next post is
    recorded) links to that instance's message, so it gives none."""
    since = "2026-01-01T00:00:00.000Z"
    review = review_for("x-3", "isolate", None, Waiting(
        step="review", path="hosts[1].review", step_type="waitForInput", message="## Go?",
        message_sha256="0" * 64, schema={}, since=since))
    posts = (Post(to=REVIEWS, channel=REVIEWS, ts="1.2"), Post(to="U0BOB", channel="D0BOB",
                                                               ts="3.4"))
    delivery = Delivery(execution_id="x-3", step="review", since=since, approvers=("U0BOB",),
                        restricted=True, shown=("U0BOB",), requester=None, posts=posts,
                        review={}, sources=("U0BOB",))
    stored = json.loads(compact.unpack(compact.pack(json.dumps(delivery.to_json()))))

    assert stored_posts(stored, review) == posts
    assert stored_posts(stored, review) == Delivery.from_json(stored, "x-3", "review").posts
    earlier = {**stored, "since": "2025-12-31T23:00:00.000Z"}
    assert not Delivery.from_json(earlier, "x-3", "review").same_review(review)
    assert stored_posts(earlier, review) == ()
    assert stored_posts({**stored, "step": "another"}, review) == ()  # named by an old record
    assert stored_posts(None, review) == ()  # not recorded yet
