"""Attack: click Approve on a review one may not decide, to hold the run up. A click's
decision takes the run's lease and acknowledges its inbox task in the commit that records
it: a refused click records nothing, so it must take no lease (which would keep every
worker off the run until it lapsed) and must not be left in a worker's list to be run
again; the approver's click right after it decides and the run goes on at once."""

from __future__ import annotations

import redis

from bot.blocks import ACTION_APPROVE
from engine.state import keys
from engine.state.execution import ExecutionStatus
from tests.bot.conftest import ISOLATE, REVIEWS, Signoff
from tests.bot.test_slack_reviews import EVENT, only_message


def test_a_refused_click_takes_no_lease_and_leaves_no_task_behind(signoff: Signoff,
                                                                   redis_client: redis.Redis):
    execution_id = signoff.run(ISOLATE, EVENT)
    message = only_message(signoff)

    assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()

    assert redis_client.get(keys.lease(execution_id)) is None
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    assert not any(redis_client.llen(k)
                   for k in redis_client.scan_iter(match=keys.inbox_taking("*")))
    assert redis_client.llen(keys.inbox(signoff.runtime.settings.queue)) == 0
    assert [e.event["actor"]["id"] for e in signoff.engine.audit_entries(execution_id)
            if e.event["type"] == "decision.refused"] == ["U0CAROL"]

    # The approver's click, right after: decided, and the run goes on in the same drain.
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    state = signoff.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.decisions["review"].actor["id"] == "U0ALICE"
    assert redis_client.get(keys.lease(execution_id)) is None
