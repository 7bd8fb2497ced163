"""A closing review leaves /approvals all's indexes and its channel's digests, and asks
whether Slack's limit for its rewrite holds, in one round trip (engine.state.batch); the
rewrite does not ask again. Limited, nothing is rewritten and the task is put off, the
indexes already left. A batched script Redis has forgotten still runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis

from bot import digest
from bot import keys as bot_keys
from bot.delivery import Delivery, Left, Post, annotation_key, save_delivery
from bot.digest import pile_id
from bot.ratelimit import LimitedClient, RateLimited, mark_limited
from bot.visibility import noted_key
from engine.notify import Actor
from engine.state import keys, lua
from engine.state.batch import Batch
from engine.state.execution import epoch_ms, parse_iso
from engine.state.store import annotated
from tests.bot.conftest import ISOLATE, REVIEWS, Signoff
from tests.support.monitor import monitored

ALICE = Actor(id="U0ALICE", name="alice", source="slack")


def commands_of(client: redis.Redis, action: Callable[[], Any]) -> list[str]:
    """The names of the commands Redis ran while ``action`` ran, but a new connection's
    greeting."""
    return [name for name in (e["command"].split()[0].upper() for e in monitored(client, action))
            if name not in ("PING", "HELLO", "CLIENT")]


def posted_and_decided(signoff: Signoff) -> tuple[str, str, int]:
    """A review posted to #reviews, then decided (its rewrite not run yet): the run's id,
    the message's ts, and when the review began waiting (ms)."""
    execution_id = signoff.run(ISOLATE, {"host": "web-1", "rule": "beaconing"})
    [message] = signoff.messages()
    since = signoff.engine.get(execution_id).waiting.since
    signoff.engine.resume(execution_id, {"approved": True}, ALICE, step="review")
    return execution_id, message["ts"], epoch_ms(parse_iso(since))


def test_a_closing_review_leaves_its_indexes_and_asks_slacks_limit_in_one_round_trip(
        signoff: Signoff, redis_client: redis.Redis):
    execution_id, ts, since_ms = posted_and_decided(signoff)
    noted = keys.annotation_field(noted_key(since_ms))
    assert redis_client.hget(keys.execution(execution_id), noted) is not None
    assert redis_client.zscore(bot_keys.posted_in(REVIEWS), execution_id) is not None
    redis_client.script_load(lua.DROP_WORDS)  # as any worker that ran a while has
    redis_client.script_load(digest._LEAVE)
    closed: list[int] = []

    seen = commands_of(redis_client, lambda: closed.append(
        signoff.bot.deliverer.close(execution_id, "review", None)))

    # The read (one MULTI), then one pipeline (engine.state.batch): indexes and note (one
    # script, its own commands shown after it), digests (another) and the limit together;
    # the rewrite asked Slack's limit no second time, and no script was looked up first.
    assert closed == [1]
    assert seen == ["MULTI", "HGETALL", "LRANGE", "EXEC",
                    "EVALSHA", "ZSCORE", "ZREM", "HDEL", "SMEMBERS", "DEL",
                    "EVALSHA", "SREM", "SREM", "EXISTS", "EXISTS", "PTTL"]
    assert redis_client.hget(keys.execution(execution_id), noted) is None
    assert redis_client.zscore(bot_keys.posted_in(REVIEWS), execution_id) is None
    [message] = signoff.messages()
    assert message["ts"] == ts and "Approved by" in str(message["blocks"])


def test_a_closing_review_under_slacks_limit_is_put_off_without_calling_slack(
        signoff: Signoff, redis_client: redis.Redis):
    execution_id, _, since_ms = posted_and_decided(signoff)
    mark_limited(redis_client, "chat.update", 30)
    updates = len(signoff.slack.calls_to("chat.update"))

    with pytest.raises(RateLimited) as limited:
        signoff.bot.deliverer.close(execution_id, "review", None)

    assert limited.value.scope == "chat.update" and 28 < limited.value.retry_after <= 30
    assert len(signoff.slack.calls_to("chat.update")) == updates  # Slack was not asked
    # Out of the indexes all the same; the put-off rewrite finds nothing left to forget.
    noted = keys.annotation_field(noted_key(since_ms))
    assert redis_client.hget(keys.execution(execution_id), noted) is None
    assert redis_client.zscore(bot_keys.posted_in(REVIEWS), execution_id) is None
    redis_client.delete(bot_keys.rate_limited("chat.update"))
    assert signoff.bot.deliverer.close(execution_id, "review", None) == 1
    assert "Approved by" in str(signoff.messages()[0]["blocks"])


def test_an_answer_of_ask_later_holds_for_one_call_under_its_scope_for_a_second_at_most(
        signoff: Signoff, redis_client: redis.Redis):
    client = signoff.bot.deliverer.client
    assert isinstance(client, LimitedClient)
    ts: Any = client.chat_postMessage(channel=REVIEWS, text="hello")["ts"]

    batch = Batch(client.connection)
    read = client.ask_later(batch, "chat.update")
    read(batch.execute())()  # free now
    mark_limited(redis_client, "chat.update", 30)
    client.chat_update(channel=REVIEWS, ts=ts, text="the call it was asked for")
    with pytest.raises(RateLimited):  # the next call asks again
        client.chat_update(channel=REVIEWS, ts=ts, text="a second call")

    redis_client.delete(bot_keys.rate_limited("chat.update"))
    batch = Batch(client.connection)
    read = client.ask_later(batch, "chat.update")
    read(batch.execute())()
    mark_limited(redis_client, "chat.update", 30)
    time.sleep(1.1)  # ASKED_FOR: an old answer is not trusted
    with pytest.raises(RateLimited):
        client.chat_update(channel=REVIEWS, ts=ts, text="too late for the answer")


def test_a_batched_script_redis_forgot_runs_on_its_own_and_the_rest_still_counts(
        signoff: Signoff, redis_client: redis.Redis):
    store = signoff.engine.store
    redis_client.zadd("idx:test:a", {"run-1": 5, "run-2": 5})
    redis_client.zadd("idx:test:b", {"run-1": 7})  # a later instance: stays
    redis_client.hset(keys.execution("run-1"), mapping={"n:seen": "x", "st": "completed"})
    redis_client.script_flush()

    batch = Batch(redis_client)
    dropped = store.drop_words(batch, "run-1", "seen", ["idx:test:a", "idx:test:b"],
                                  "run-1", 5)
    batch.pipe.exists("idx:test:a")
    replies = batch.execute()

    assert dropped(replies) == (1, [])
    assert replies[-1] == 1
    assert redis_client.zscore("idx:test:a", "run-1") is None
    assert redis_client.zscore("idx:test:b", "run-1") == 7
    assert not redis_client.hexists(keys.execution("run-1"), "n:seen")

    batch = Batch(redis_client)
    batch.pipe.incr(keys.execution("run-1"))  # a hash: WRONGTYPE, raised
    with pytest.raises(redis.ResponseError):
        batch.execute()


# -- the leave sent with a click's decision (bot.delivery.Deliverer.leaving) -----------------

BOB = Actor(id="U0BOB", name="bob", source="slack")


def posted(signoff: Signoff) -> tuple[str, int]:
    """A review posted to #reviews, waiting: the run's id and when it began waiting (ms)."""
    execution_id = signoff.run(ISOLATE, {"host": "web-1", "rule": "beaconing"})
    since = signoff.engine.get(execution_id).waiting.since
    return execution_id, epoch_ms(parse_iso(since))


def decide_with_leave(signoff: Signoff, execution_id: str, actor: Actor = ALICE,
                      then: Callable[[Any], Any] | None = None) -> Any:
    """Decide as a click's worker does: on the run as read, continuing it, the review's
    leave sent with the write that carries the decision."""
    read = signoff.engine.get_annotated(execution_id, annotation_key("review"))
    delivery = Delivery.from_json(read.annotation, execution_id, "review")
    leave = signoff.bot.deliverer.leaving(delivery, read.state.workflow, read.notes)
    return signoff.engine.resume(execution_id, {"approved": True}, actor, step="review",
                                 read=read.state,
                                 then=then or signoff.runtime.runner.continue_decided,
                                 alongside=leave)


def in_indexes(redis_client: redis.Redis, execution_id: str, since_ms: int) -> tuple[bool, bool]:
    """Whether the review is still in #reviews' /approvals index, and its note still kept."""
    noted = keys.annotation_field(noted_key(since_ms))
    return (redis_client.zscore(bot_keys.posted_in(REVIEWS), execution_id) is not None,
            redis_client.hget(keys.execution(execution_id), noted) is not None)


def test_the_leave_sent_with_the_decisions_write_is_done_and_the_rewrite_only_writes(
        signoff: Signoff, redis_client: redis.Redis):
    execution_id, since_ms = posted(signoff)
    assert in_indexes(redis_client, execution_id, since_ms) == (True, True)

    result = decide_with_leave(signoff, execution_id)

    assert isinstance(result.alongside, Left) and result.alongside.digests == set()
    assert in_indexes(redis_client, execution_id, since_ms) == (False, False)
    known = annotated(result.continued, annotation_key("review"), result.notes,
                      signoff.engine.store.load_annotated(execution_id, annotation_key(
                          "review")).trail)
    seen = commands_of(redis_client, lambda: signoff.bot.deliverer.close(
        execution_id, "review", None, known=known, left=result.alongside))
    assert seen == []  # nothing read, nothing left again; Slack's limit asked with the write
    [message] = signoff.messages()
    assert "Approved by" in str(message["blocks"])


def test_a_leave_sent_with_a_write_that_was_refused_takes_nothing_out_of_approvals(
        signoff: Signoff, redis_client: redis.Redis):
    """The first write is refused (a refused attempt moved the trail on while the segment
    ran): the review still waits, so its leave, sent with that write, must not act. The
    decision is then made on a fresh read, without the leave (the rewrite leaves)."""
    execution_id, since_ms = posted(signoff)
    tries: list[Any] = []
    between: list[tuple[bool, bool]] = []

    def then(deferred: Any) -> Any:
        tries.append(deferred)
        if len(tries) == 1:  # a refused attempt lands in the trail: the write will not apply
            signoff.engine.reviews.record_refusal(execution_id, BOB, "not_an_approver")
        else:  # the first write was refused: the review waits, in every index still
            between.append(in_indexes(redis_client, execution_id, since_ms))
            assert deferred.alongside is None  # a fresh read: the leave is the rewrite's
        return signoff.runtime.runner.continue_decided(deferred)

    result = decide_with_leave(signoff, execution_id, then=then)

    assert len(tries) == 2 and between == [(True, True)]
    assert result.decided and result.alongside is None
    signoff.drain()  # the rewrite, from the slack queue: it leaves as it always did
    assert in_indexes(redis_client, execution_id, since_ms) == (False, False)
    assert "Approved by" in str(signoff.messages()[0]["blocks"])


def test_a_leave_whose_note_grew_before_it_ran_leaves_it_to_the_rewrite(
        signoff: Signoff, redis_client: redis.Redis):
    """Someone was let see the review (its note of indexes grew) after the click's read: the
    leave sent with the write does nothing, and the rewrite's leave takes every entry out."""
    execution_id, since_ms = posted(signoff)
    read = signoff.engine.get_annotated(execution_id, annotation_key("review"))
    delivery = Delivery.from_json(read.annotation, execution_id, "review")
    leave = signoff.bot.deliverer.leaving(delivery, read.state.workflow, read.notes)
    signoff.engine.store.add_words(execution_id, noted_key(since_ms), ["U0CAROL"])
    redis_client.zadd(bot_keys.viewer("U0CAROL"), {execution_id: since_ms})

    result = signoff.engine.resume(execution_id, {"approved": True}, ALICE, step="review",
                                   read=read.state,
                                   then=signoff.runtime.runner.continue_decided,
                                   alongside=leave)

    assert result.decided and result.alongside is None
    assert in_indexes(redis_client, execution_id, since_ms) == (True, True)
    signoff.bot.deliverer.close(execution_id, "review", None)
    assert in_indexes(redis_client, execution_id, since_ms) == (False, False)
    assert redis_client.zscore(bot_keys.viewer("U0CAROL"), execution_id) is None


def test_a_post_recorded_after_the_clicks_read_is_left_by_the_rewrite(
        signoff: Signoff, redis_client: redis.Redis):
    """The leave sent with the write was built from the posts read before it; a post
    recorded in between (here in another channel, whose pile holds the review) is not among
    them, so the rewrite leaves again, that channel's pile included."""
    execution_id, since_ms = posted(signoff)
    read = signoff.engine.get_annotated(execution_id, annotation_key("review"))
    delivery = Delivery.from_json(read.annotation, execution_id, "review")
    leave = signoff.bot.deliverer.leaving(delivery, read.state.workflow, read.notes)
    other = pile_id("C0OTHER", read.state.workflow, "review")
    redis_client.sadd(bot_keys.pile(other), execution_id)
    save_delivery(signoff.engine, replace(delivery, posts=(
        *delivery.posts, Post(to="C0OTHER", channel="C0OTHER", ts="1700000000.000100"))))

    result = signoff.engine.resume(execution_id, {"approved": True}, ALICE, step="review",
                                   read=read.state,
                                   then=signoff.runtime.runner.continue_decided,
                                   alongside=leave)
    assert isinstance(result.alongside, Left)
    assert redis_client.sismember(bot_keys.pile(other), execution_id)  # not read: not left
    known = annotated(result.continued, annotation_key("review"), result.notes,
                      signoff.engine.store.load_annotated(execution_id, annotation_key(
                          "review")).trail)

    signoff.bot.deliverer.close(execution_id, "review", None, known=known,
                                left=result.alongside)

    assert not redis_client.sismember(bot_keys.pile(other), execution_id)
    assert in_indexes(redis_client, execution_id, since_ms) == (False, False)
    assert "Approved by" in str(signoff.messages()[0]["blocks"])


def test_a_decision_whose_scripts_redis_forgot_is_written_and_its_review_left(
        signoff: Signoff, redis_client: redis.Redis):
    """Redis restarted (its scripts gone) before the click's write: the write and the leave
    sent with it are each run on their own, in order, and the review leaves /approvals."""
    execution_id, since_ms = posted(signoff)
    redis_client.script_flush()

    result = decide_with_leave(signoff, execution_id)

    assert result.decided and isinstance(result.alongside, Left)
    assert signoff.engine.get(execution_id).decisions["review"].actor["id"] == "U0ALICE"
    assert in_indexes(redis_client, execution_id, since_ms) == (False, False)
