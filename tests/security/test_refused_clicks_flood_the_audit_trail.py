"""Attack: click Approve again and again on a review one may not decide (by hand or with a
script replaying the click), to flood the run's audit trail with refusals. Each click is
still refused and told why; the trail records the first in each minute per person."""

from __future__ import annotations

from bot.blocks import ACTION_APPROVE
from engine.state import keys
from engine.state.execution import ExecutionStatus
from tests.bot.conftest import ISOLATE, REVIEWS, Signoff
from tests.bot.test_slack_reviews import EVENT, only_message


def refusals(signoff: Signoff, execution_id: str) -> list[str]:
    return [e.event["actor"]["id"] for e in signoff.engine.audit_entries(execution_id)
            if e.event["type"] == "decision.refused"]


def test_repeated_refused_clicks_are_audited_once_a_minute_per_person(signoff: Signoff):
    execution_id = signoff.run(ISOLATE, EVENT)
    message = only_message(signoff)

    for _ in range(6):
        assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    assert signoff.driver.click("U0DAVE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()

    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    assert len(signoff.ephemerals("U0CAROL")) == 6  # every click is still told why
    assert refusals(signoff, execution_id) == ["U0CAROL", "U0DAVE"]
    assert signoff.engine.verify_audit(execution_id).ok

    # A minute later (the marker expired), a refused click is audited again.
    signoff.engine.store.redis.delete(keys.refused(execution_id, "U0CAROL"))
    assert signoff.driver.click("U0CAROL", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert refusals(signoff, execution_id) == ["U0CAROL", "U0DAVE", "U0CAROL"]
    ttl = signoff.engine.store.redis.pttl(keys.refused(execution_id, "U0CAROL"))
    assert 0 < ttl <= 60_000
