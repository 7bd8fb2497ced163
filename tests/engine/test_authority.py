"""Who may act on a review: the rules alone, no Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from engine.notify import ReviewRequest
from engine.run.authority import Refusal, deciders, reassign_refusal, refusal


def review(**overrides: Any) -> ReviewRequest:
    fields: dict[str, Any] = {
        "execution_id": "exe-1", "workflow": "isolate-host", "step": "review",
        "step_type": "waitForApproval", "message": "Isolate web-01?", "message_sha256": "0" * 64,
        "schema": {}, "created_at": datetime(2026, 11, 22, 13, 2, tzinfo=UTC),
        "approvers": ("U0ALICE", "S0SOC"), "requested_by": "erin@corp.test",
    }
    fields.update(overrides)
    return ReviewRequest(**fields)


APPROVERS = ("U0ALICE", "U0BOB")  # the step's approvers, resolved (S0SOC holds U0BOB)


@pytest.mark.parametrize(("user", "expected"), [
    ("U0ALICE", None),
    ("U0BOB", None),
    ("U0DAVE", Refusal.NOT_AN_APPROVER),
    ("U0ERIN", Refusal.SELF_APPROVAL),
])
def test_only_the_approvers_decide_a_restricted_review_and_never_its_requester(user, expected):
    assert refusal(review(), user, approvers=APPROVERS, restricted=True,
                   requester="U0ERIN") is expected


def test_the_requester_is_refused_as_such_even_when_an_approver():
    assert refusal(review(), "U0ALICE", approvers=APPROVERS, restricted=True,
                   requester="U0ALICE") is Refusal.SELF_APPROVAL


def test_a_step_that_allows_self_approval_lets_its_requester_decide():
    allowed = review(allow_self_approval=True)
    assert refusal(allowed, "U0ALICE", approvers=APPROVERS, restricted=True,
                   requester="U0ALICE") is None
    # ...as an approver only: self-approval does not make the requester one.
    assert refusal(allowed, "U0ERIN", approvers=APPROVERS, restricted=True,
                   requester="U0ERIN") is Refusal.NOT_AN_APPROVER


def test_anyone_but_the_requester_decides_a_review_that_names_no_approvers():
    open_review = review(approvers=())
    assert refusal(open_review, "U0DAVE", approvers=(), restricted=False,
                   requester="U0ERIN") is None
    assert refusal(open_review, "U0ERIN", approvers=(), restricted=False,
                   requester="U0ERIN") is Refusal.SELF_APPROVAL
    assert refusal(open_review, "U0ERIN", approvers=(), restricted=False,
                   requester=None) is None  # a requester Slack does not know refuses nobody


def test_approvers_that_did_not_resolve_still_restrict_the_review():
    assert refusal(review(approvers=("nobody@corp.test",)), "U0DAVE", approvers=(),
                   restricted=True, requester=None) is Refusal.NOT_AN_APPROVER


def test_the_deciders_are_the_approvers_but_the_requester_unless_self_approval_is_allowed():
    approvers = ("U0ALICE", "U0ERIN", "U0BOB")
    assert deciders(review(), approvers=approvers, requester="U0ERIN") == ("U0ALICE", "U0BOB")
    assert deciders(review(allow_self_approval=True), approvers=approvers,
                    requester="U0ERIN") == approvers
    assert deciders(review(), approvers=approvers, requester=None) == approvers
    assert deciders(review(approvers=()), approvers=(), requester="U0ERIN") == ()


@pytest.mark.parametrize(("chosen", "allow_self_approval", "expected"), [
    ("U0DAVE", False, None),
    ("U0BOB", False, Refusal.ALREADY_AN_APPROVER),
    ("U0ERIN", False, Refusal.REASSIGN_TO_REQUESTER),
    ("U0ERIN", True, None),
])
def test_a_review_is_handed_to_someone_new_who_is_not_its_requester(
        chosen, allow_self_approval, expected):
    assert reassign_refusal(review(allow_self_approval=allow_self_approval), chosen,
                            approvers=APPROVERS, requester="U0ERIN") is expected


def test_refusals_are_codes_an_edge_words_itself():
    assert [r.value for r in Refusal] == [
        "not_an_approver", "self_approval", "reassign_to_requester", "already_an_approver"]
