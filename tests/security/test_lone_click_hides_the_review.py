"""Attack: a lone click's worker sends the review's leave (out of /approvals all's indexes
and the channel's digest pile) in the round trip of the write that carries the decision
(bot.delivery.Deliverer.leaving). Someone who may not decide clicks Approve alone, hoping
the leave runs anyway and the review vanishes from the approvers' /approvals while it still
waits. The leave is built from the click's read but only sent with the decision's write,
which a refused click never makes, and each of its scripts acts only once that write has
applied: the review stays listed everywhere it was, its note of whose indexes hold it
intact, until an approver decides."""

from __future__ import annotations

import redis

from bot import keys as bot_keys
from bot.blocks import ACTION_APPROVE
from bot.visibility import noted_key
from engine.state import keys
from engine.state.execution import ExecutionStatus, epoch_ms, parse_iso
from tests.bot.conftest import ISOLATE, REVIEWS, Signoff
from tests.bot.test_slack_reviews import EVENT, only_message
from tests.security.test_lone_click_carries_no_forged_close import engine_queue_only


def listed(redis_client: redis.Redis, execution_id: str, since_ms: int) -> dict[str, object]:
    """Where the review is listed: #reviews' /approvals index, its pile, its note."""
    return {
        "channel index": redis_client.zscore(bot_keys.posted_in(REVIEWS), execution_id),
        "note": redis_client.hget(keys.execution(execution_id),
                                  keys.annotation_field(noted_key(since_ms))),
        "waiting": redis_client.zscore(keys.index_status("WAITING_FOR_INPUT"), execution_id),
    }


def test_a_refused_lone_click_takes_the_review_out_of_no_listing(
        signoff: Signoff, redis_client: redis.Redis):
    execution_id = signoff.run(ISOLATE, EVENT)
    since_ms = epoch_ms(parse_iso(signoff.engine.get(execution_id).waiting.since))
    message = only_message(signoff)
    before = listed(redis_client, execution_id, since_ms)
    assert all(value is not None for value in before.values())

    # Carol may not decide: she clicks alone, and her worker reads the review.
    assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    engine_queue_only(signoff, redis_client)

    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    assert listed(redis_client, execution_id, since_ms) == before

    # Alice decides, alone: now the review leaves every listing.
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    engine_queue_only(signoff, redis_client)
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    assert listed(redis_client, execution_id, since_ms) == {
        "channel index": None, "note": None, "waiting": None}
