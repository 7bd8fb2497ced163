"""Attack: Alice asks for a run she is also an approver of, on a step that does not allow
self-approval, and lists ``/approvals`` hoping the listing offers her one-click Approve.

A listing reads each review from four fields of its execution (engine.state.store.
waiting_review), the requester among them, and keeps what it made of each row; who may
decide is asked at every listing. Her own review must stay out of her ``/approvals``, on
the first listing and from what is kept, and come refused, with no Approve, in
``/approvals all`` and ``/approvals ID``; Bob, the other approver, gets the button. Her
click on the review message is refused by the engine all the same.
"""

from __future__ import annotations

from bot.blocks import ACTION_APPROVE
from bot.texts import SELF_APPROVAL
from engine.state.execution import ExecutionStatus
from tests.bot.conftest import REVIEWS, Signoff
from tests.bot.test_approvals import approvals, buttons, sections

OWN = """
name: grant
steps:
  - name: review
    type: waitForApproval
    with:
      message: "## Grant Alice prod access?"
      approvers: [U0ALICE, U0BOB]
"""
APPROVE = ("signoff.approve", "Approve")


def test_the_requester_is_never_offered_approve_for_her_own_run(signoff: Signoff):
    execution_id = signoff.run(OWN, requested_by="U0ALICE")

    for _ in range(2):  # the first listing, then from what the web process kept
        alices = approvals(signoff, "U0ALICE")
        assert alices["text"] == "Reviews waiting for you: 0"  # not hers to decide
        assert not any(execution_id in s for s in sections(alices))
        bobs = approvals(signoff, "U0BOB")
        assert execution_id in sections(bobs)[0] and APPROVE in buttons(bobs)

    for text in ("all", execution_id):  # shown to her as the requester, refused
        alices = approvals(signoff, "U0ALICE", text)
        [section] = [s for s in sections(alices) if execution_id in s]
        assert SELF_APPROVAL in section
        assert APPROVE not in buttons(alices)
        assert APPROVE in buttons(approvals(signoff, "U0BOB", text))

    [message] = signoff.messages(REVIEWS)
    assert signoff.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE).ok
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
