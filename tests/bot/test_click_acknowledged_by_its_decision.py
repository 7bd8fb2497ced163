"""A one-click decision's inbox task is taken off its drain's list by the very script that
records the decision: no round trip of its own, and never one without the other. A click
that decides nothing (someone decided first) is acknowledged by its drain as any task is.
Nothing is left behind in either case."""

from __future__ import annotations

import redis

from engine.state import keys
from tests.bot.conftest import ISOLATE, REVIEWS, Signoff
from tests.support.monitor import monitored


def takers_lists(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(match=keys.inbox_taking("*")))


def test_the_decision_and_its_tasks_acknowledgement_are_one_script(signoff: Signoff,
                                                                   redis_client: redis.Redis):
    execution_id = signoff.run(ISOLATE, {"host": "web-1", "rule": "beaconing"})
    [message] = signoff.messages()
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), "signoff.approve").ok

    seen = monitored(redis_client, signoff.drain)

    removals = [e for e in seen if e["command"].upper().startswith("LREM ")]
    assert removals, "the click's task was never acknowledged"
    # Every acknowledgement came from a script: none on its own round trip.
    assert all(e.get("client_type") == "lua" for e in removals), [
        (e.get("client_type"), e["command"][:80]) for e in removals]
    decide = [e for e in removals if "decide_click" in e["command"]]
    assert len(decide) == 1
    # ... and it was the decision's: the same script wrote the decision's audit entry.
    at = seen.index(decide[0])
    script = max(i for i in range(at) if seen[i].get("client_type") != "lua")
    assert seen[script]["command"].upper().startswith("EVALSHA")
    assert any(e["command"].upper().startswith("HSET") and "dec:review" in e["command"]
               for e in seen[script:at])
    state = signoff.engine.get(execution_id)
    assert state.status.value == "COMPLETED"
    assert state.decisions["review"].actor["id"] == "U0ALICE"
    assert not any(redis_client.llen(k) for k in takers_lists(redis_client))
    assert redis_client.llen(keys.inbox(signoff.runtime.settings.queue)) == 0


def test_a_click_that_decides_nothing_is_acknowledged_by_its_drain(signoff: Signoff,
                                                                   redis_client: redis.Redis):
    execution_id = signoff.run(ISOLATE, {"host": "web-2", "rule": "beaconing"})
    [message] = signoff.messages()
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), "signoff.deny").ok
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), "signoff.approve").ok

    signoff.drain()

    state = signoff.engine.get(execution_id)
    [decision] = state.decisions.values()
    assert decision.actor["id"] == "U0BOB" and decision.outcome == "denied"
    assert any("already" in text.lower() for text in signoff.ephemerals("U0ALICE"))
    # Both tasks gone: the first with its decision, the second by the drain.
    assert not any(redis_client.llen(k) for k in takers_lists(redis_client))
    assert redis_client.llen(keys.inbox(signoff.runtime.settings.queue)) == 0
