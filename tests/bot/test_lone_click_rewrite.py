"""A click that arrives alone is decided, its run continued and its message rewritten by
one drain of the engine's queue: the decision's commit puts the rewrite in the click's place
on the drain's list (engine.state.store.Change.carry), and the rewrite works from what that
commit read back, without reading the run again or going through the slack queue. Clicks
that come in a burst (others waiting behind them, or before them in the same drain) leave
their rewrites to the slack queue, as before."""

from __future__ import annotations

import redis

from bot import keys as bot_keys
from bot.blocks import ACTION_APPROVE
from bot.outbox import QUEUE as SLACK_QUEUE
from engine.state import keys
from engine.state.execution import ExecutionStatus
from tests.bot.conftest import ISOLATE, REVIEWS, DrainWorker, Signoff
from tests.support.http_target import PostTarget
from tests.support.monitor import monitored

EVENT = {"host": "web-01", "rule": "beaconing"}


def engine_queue_only(signoff: Signoff, redis_client: redis.Redis) -> None:
    DrainWorker([signoff.runtime.settings.queue], connection=redis_client).work(
        burst=True, logging_level="WARNING")


def rewrites_queued(signoff: Signoff) -> list[str]:
    """The rewrites of closed reviews waiting in the slack queue's inbox."""
    inbox = signoff.runtime.engine.scheduler.inbox_of(SLACK_QUEUE)
    redis_ = signoff.engine.store.redis
    return [raw.decode() for raw in redis_.lrange(inbox.key, 0, -1)
            if b'"bot.jobs.update_review"' in raw]


def test_a_lone_clicks_message_is_rewritten_by_the_drain_that_decided_it_without_reading_again(
        signoff: Signoff, redis_client: redis.Redis):
    execution_id = signoff.run(ISOLATE, EVENT)
    [message] = signoff.messages(REVIEWS)
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).status == 200
    updates = len(signoff.slack.calls_to("chat.update"))

    seen = monitored(redis_client, lambda: engine_queue_only(signoff, redis_client))

    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    [rewritten] = signoff.messages(REVIEWS)
    assert rewritten["ts"] == message["ts"] and "Approved by" in str(rewritten["blocks"])
    assert "alice" in str(rewritten["blocks"]).lower()
    assert len(signoff.slack.calls_to("chat.update")) == updates + 1
    # The rewrite did not go through the slack queue (where the look-up of Alice's name
    # went): it never was in its inbox.
    assert rewrites_queued(signoff) == []
    assert not any(keys.inbox(SLACK_QUEUE) in e["command"] and "update_review" in e["command"]
                   for e in seen)
    assert any(keys.inbox(SLACK_QUEUE) in e["command"] and "learn_name" in e["command"]
               for e in seen)  # what the slack queue did get: MONITOR saw its puts
    # The run's hash was read once, by the script that took the click off the inbox (the
    # task names what it reads first), and by no command of the worker's own; the rewrite
    # used that read and the annotations the decision's write gave back.
    execution = keys.execution(execution_id)
    reads = [e["command"] for e in seen if e["client_type"] != "lua"
             and e["command"].split()[0].upper() in ("HGETALL", "HGET", "HMGET")
             and execution in e["command"]]
    assert reads == []
    scripts = [e["command"] for e in seen if e["client_type"] == "lua"
               and e["command"].startswith("HGETALL") and execution in e["command"]]
    assert len(scripts) == 2  # as the click was taken, and the decision's write's annotations


def test_clicks_with_others_waiting_behind_them_leave_their_rewrites_to_the_slack_queue(
        signoff: Signoff, redis_client: redis.Redis):
    first, second = signoff.run(ISOLATE, EVENT), signoff.run(ISOLATE, EVENT)
    one, two = signoff.messages(REVIEWS)
    for message in (one, two):  # both in the engine's inbox before a worker looks
        assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]),
                                    ACTION_APPROVE).status == 200

    engine_queue_only(signoff, redis_client)

    assert {signoff.engine.get(i).status for i in (first, second)} == {ExecutionStatus.COMPLETED}
    # The first click had the second waiting behind it, and the second was not the first
    # task of its drain (a burst): both rewrites went to the slack queue, after the clicks.
    assert [first in task and second not in task for task in rewrites_queued(signoff)] == [
        True, False]
    assert ["Approved by" in str(m["blocks"]) for m in signoff.messages(REVIEWS)] == [
        False, False]

    signoff.drain()
    assert ["Approved by" in str(m["blocks"]) for m in signoff.messages(REVIEWS)] == [True, True]
    assert rewrites_queued(signoff) == []


EVIDENCE = "powershell.exe -nop -w hidden -enc " + "SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA" * 40


def test_a_lone_clicks_rewrite_shows_the_long_message_the_reviewers_saw(
        signoff: Signoff, redis_client: redis.Redis):
    """A long message is stored once, in the audit trail; the rewrite shows it whole, as
    the click's read found it there (handed on with the read, not looked for again)."""
    long_review = ISOLATE.replace("**Rule:** {{ event.rule }}",
                                  "**Rule:** {{ event.rule }}\n\n        {{ event.evidence }}")
    execution_id = signoff.run(long_review, {**EVENT, "evidence": EVIDENCE})
    [message] = signoff.messages(REVIEWS)
    assert EVIDENCE[:60] in str(message["blocks"])
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).status == 200

    engine_queue_only(signoff, redis_client)

    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    [rewritten] = signoff.messages(REVIEWS)
    assert "Approved by" in str(rewritten["blocks"])
    shown = "".join(str(b) for b in rewritten["blocks"])
    assert EVIDENCE[:60] in shown and EVIDENCE[-60:] in shown  # the message, whole
    assert rewrites_queued(signoff) == []


def test_a_lone_clicks_review_leaves_approvals_with_the_write_that_decides_it(
        signoff: Signoff, redis_client: redis.Redis):
    """The review's leave (the /approvals indexes, the digests' piles) goes with the write
    that carries the decision, in its round trip: by the time the step after the review
    acts, the review is out of /approvals all's index already, and the rewrite that follows
    only writes the message."""
    runs: list[str] = []
    at_isolation: list[object] = []

    def isolate(path: str, body: bytes) -> tuple[int, bytes]:
        at_isolation.append(redis_client.zscore(bot_keys.posted_in(REVIEWS), runs[0]))
        return 200, b'{"isolated": true}'

    target = PostTarget(isolate)
    try:
        runs.append(signoff.run(f"""
name: isolate-now
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE]
      message: "## Isolate `{{{{ event.host }}}}`?"
  - name: isolate
    type: http
    with: {{method: POST, url: "{target.url}/isolate", body: {{host: "{{{{ event.host }}}}"}}}}
""", EVENT))
        assert redis_client.zscore(bot_keys.posted_in(REVIEWS), runs[0]) is not None
        [message] = signoff.messages(REVIEWS)
        assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]),
                                    ACTION_APPROVE).status == 200

        engine_queue_only(signoff, redis_client)
    finally:
        target.close()

    assert signoff.engine.get(runs[0]).status is ExecutionStatus.COMPLETED
    assert at_isolation == [None]
    [rewritten] = signoff.messages(REVIEWS)
    assert "Approved by" in str(rewritten["blocks"])
    assert rewrites_queued(signoff) == []
