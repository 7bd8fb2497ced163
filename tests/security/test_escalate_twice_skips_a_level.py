"""Attack: two reviewers (or one, submitting twice) escalate a review at the same time, so
that it skips a level and lands with people the chain meant to reach only later. Escalating
is a compare-and-set from the level the Escalate modal was opened at: the second is told who
escalated first, and the review moves one level."""

from __future__ import annotations

import pytest

from bot.blocks import ACTION_ESCALATE, REASON_BLOCK
from engine.errors import AlreadyEscalated
from engine.notify import Actor
from tests.bot.conftest import REVIEWS, Signoff
from tests.bot.test_slack_escalation import CHAIN, SLOW, audit, modal, only

TWO_FIRST = CHAIN.replace("approvers: [U0ALICE]", "approvers: [U0ALICE, U0BOB]")


def test_two_escalations_from_the_same_level_move_the_review_one_level(signoff: Signoff):
    execution_id = signoff.run(TWO_FIRST.format(**SLOW), {"host": "web-1"})
    message = only(signoff)
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_ESCALATE).ok
    alices = modal(signoff, "U0ALICE")
    assert signoff.driver.click("U0BOB", (REVIEWS, message["ts"]), ACTION_ESCALATE).ok
    bobs = modal(signoff, "U0BOB")

    assert signoff.driver.submit_view("U0ALICE", alices["id"], {REASON_BLOCK: "lead's call"}).ok
    late = signoff.driver.submit_view("U0BOB", bobs["id"], {REASON_BLOCK: "me too"})
    signoff.drain()

    assert late.body == {"response_action": "errors",
                         "errors": {REASON_BLOCK: "Already escalated to level 2 by alice."}}
    assert [e["toLevel"] for e in audit(signoff, execution_id, "review.escalated")] == [1]
    review = signoff.engine.review(execution_id)
    assert review is not None and review.level == 1  # level 2 of 3, not 3 of 3


def test_an_escalation_from_a_level_the_review_left_names_who_moved_it(signoff: Signoff):
    execution_id = signoff.run(TWO_FIRST.format(**SLOW), {"host": "web-1"})
    alice = Actor(id="U0ALICE", name="alice", source="slack")
    assert signoff.engine.escalate(execution_id, alice, "first", from_level=0) == 1
    with pytest.raises(AlreadyEscalated) as caught:
        signoff.engine.escalate(execution_id, alice, "replayed", from_level=0)
    assert (caught.value.level, caught.value.by) == (1, "alice")
    assert [e["toLevel"] for e in audit(signoff, execution_id, "review.escalated")] == [1]
