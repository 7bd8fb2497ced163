"""Attack: a lone click's worker rewrites the review's message itself, carried by the commit
that records the decision (engine.state.store.Change.carry). Someone who may not decide,
or who clicks a review already decided, clicks alone, hoping the worker closes the message
anyway (its buttons gone, "approved" shown, reviewers misled). A refused or late click
records no decision, so its commit never runs: nothing is carried, nothing is queued, the
message is not touched. The approver's own lone click is the one that closes it, and the
message names the approver, from what the engine committed, not from the click."""

from __future__ import annotations

import json

import redis

from bot.blocks import ACTION_APPROVE, ACTION_DENY
from bot.outbox import QUEUE as SLACK_QUEUE
from engine.state import keys
from engine.state.execution import ExecutionStatus
from tests.bot.conftest import ISOLATE, REVIEWS, DrainWorker, Signoff
from tests.bot.test_slack_reviews import EVENT, has_buttons, only_message


def engine_queue_only(signoff: Signoff, redis_client: redis.Redis) -> None:
    DrainWorker([signoff.runtime.settings.queue], connection=redis_client).work(
        burst=True, logging_level="WARNING")


def rewrites_anywhere(redis_client: redis.Redis, signoff: Signoff) -> list[bytes]:
    """update_review tasks in any inbox, any drain's list or any "later" set."""
    lists = [keys.inbox(signoff.runtime.settings.queue), keys.inbox(SLACK_QUEUE),
             *redis_client.scan_iter(match=keys.inbox_taking("*"))]
    found = [raw for key in lists for raw in redis_client.lrange(key, 0, -1)]
    for queue in (signoff.runtime.settings.queue, SLACK_QUEUE):
        found += redis_client.zrange(keys.inbox_later(queue), 0, -1)
    return [raw for raw in found if b"update_review" in raw]


def test_a_refused_or_late_lone_click_closes_no_message(signoff: Signoff,
                                                       redis_client: redis.Redis):
    execution_id = signoff.run(ISOLATE, EVENT)
    message = only_message(signoff)
    updates = len(signoff.slack.calls_to("chat.update"))

    # Carol may not decide: refused, audited, and the message keeps its buttons.
    assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    engine_queue_only(signoff, redis_client)
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    assert len(signoff.slack.calls_to("chat.update")) == updates
    assert has_buttons(only_message(signoff))
    assert rewrites_anywhere(redis_client, signoff) == []

    # Alice decides, alone: her drain closes the message, naming her.
    alice = signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE)
    assert alice.ok
    engine_queue_only(signoff, redis_client)
    closed = only_message(signoff)
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert not has_buttons(closed)
    assert "U0ALICE" in str(closed["blocks"]) and "U0CAROL" not in str(closed["blocks"])
    assert len(signoff.slack.calls_to("chat.update")) == updates + 1
    rewritten = closed["blocks"]

    # After the decision, each alone: Slack delivering Alice's click again, and Bob's Deny
    # on the buttons his client still shows (signed clicks on the message as it was). No
    # second rewrite, no second decision.
    late_deny = json.loads(json.dumps(alice.sent))
    late_deny["user"] = {**late_deny["user"], "id": "U0BOB", "username": "bob", "name": "bob"}
    late_deny["actions"][0]["action_id"] = ACTION_DENY
    for late in (alice.sent, late_deny):
        assert signoff.driver.send_interaction(late).ok
        engine_queue_only(signoff, redis_client)
    assert len(signoff.slack.calls_to("chat.update")) == updates + 1
    assert only_message(signoff)["blocks"] == rewritten
    assert signoff.engine.get(execution_id).decisions["review"].actor["id"] == "U0ALICE"
    assert rewrites_anywhere(redis_client, signoff) == []
