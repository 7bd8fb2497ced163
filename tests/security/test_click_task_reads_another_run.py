"""Attack: a click's inbox task names what its worker reads first (the run, its trail, the
clicker's cached name: engine.state.inbox.Task.reads), read by the script that takes it.
The keys are named from the button's value and the signed user id; a task whose reads
name another run (a task written by hand into the inbox, or a bug in whoever wrote it)
must not make the worker decide on, or check the click against, that other run. The
worker uses what was read only when it is exactly what it would read itself; otherwise it
reads the run the button names, and the decision lands there, by the one who clicked."""

from __future__ import annotations

import json
from dataclasses import replace

import redis

from bot.blocks import ACTION_APPROVE
from bot.forms import ReviewRef
from bot.handlers import click_reads
from engine.state import keys
from engine.state.execution import ExecutionStatus
from tests.bot.conftest import ISOLATE, REVIEWS, Signoff
from tests.bot.test_slack_reviews import EVENT, has_buttons


def test_a_click_whose_task_reads_another_run_decides_the_run_its_button_names(
        signoff: Signoff, redis_client: redis.Redis):
    clicked = signoff.run(ISOLATE, EVENT)
    other = signoff.run(ISOLATE, {**EVENT, "host": "db-01"})
    mine, theirs = signoff.messages(REVIEWS)
    assert signoff.driver.click("U0ALICE", (REVIEWS, mine["ts"]), ACTION_APPROVE).ok

    # The click's task, as the web process put it, its reads then pointed at the other run.
    inbox = keys.inbox(signoff.runtime.settings.queue)
    [entry] = redis_client.lrange(inbox, 0, -1)
    task = json.loads(entry)
    ref = ReviewRef.decode(task["a"][1])
    assert ref.execution_id == clicked
    assert [tuple(r) for r in task["p"]] == list(click_reads(ref, "U0ALICE"))
    task["p"] = [list(r) for r in click_reads(replace(ref, execution_id=other), "U0ALICE")]
    redis_client.lset(inbox, 0, json.dumps(task, separators=(",", ":")))
    signoff.drain()

    assert signoff.engine.get(clicked).status is ExecutionStatus.COMPLETED
    assert signoff.engine.get(clicked).decisions["review"].actor["id"] == "U0ALICE"
    assert signoff.engine.get(other).status is ExecutionStatus.WAITING_FOR_INPUT
    assert signoff.engine.get(other).decisions == {}
    rewritten, untouched = signoff.messages(REVIEWS)
    assert not has_buttons(rewritten) and "alice" in str(rewritten["blocks"]).lower()
    assert has_buttons(untouched) and untouched["ts"] == theirs["ts"]
    assert signoff.ephemerals("U0ALICE") == []  # not told the review was closed
