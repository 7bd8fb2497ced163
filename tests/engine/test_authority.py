"""Who may act on a review: the rules alone, no Redis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.errors import RequesterInvalid
from engine.notify import ReviewRequest
from engine.run.authority import (
    Refusal,
    deciders,
    reassign_refusal,
    refusal,
    vote_refusal,
)
from engine.run.identity import NamedPeople, identity_key, requester


class Groups(NamedPeople):
    """People with user groups, as a directory (the bot's Slack one) would expand them."""

    def __init__(self, groups: dict[str, tuple[str, ...]], emails: dict[str, str] | None = None):
        self.groups = groups
        self.emails = emails or {}  # user id -> e-mail address; absent: cannot be looked up

    def same_person(self, a: str, b: str) -> bool | None:
        found = super().same_person(a, b)
        if found is not None:
            return found
        user, address = (a, b) if "@" in b else (b, a)
        known = self.emails.get(identity_key(user))
        return None if known is None else identity_key(known) == identity_key(address)

    def is_among(self, who: str, entries: Sequence[str]) -> bool:
        return super().is_among(who, entries) or any(
            identity_key(who) in self.groups.get(entry, ()) for entry in entries)


PEOPLE = Groups({"S0SOC": ("U0BOB",)}, {
    "U0ERIN01": "Erin+work@Corp.test", "U0ALICE": "alice@corp.test", "U0BOB": "bob@corp.test",
    "U0CAROL1": "carol@corp.test", "U0DAVE": "dave@corp.test"})  # U0FRANK1's: unknown


def review(**overrides: Any) -> ReviewRequest:
    fields: dict[str, Any] = {
        "execution_id": "exe-1", "workflow": "isolate-host", "step": "review",
        "step_type": "waitForApproval", "message": "Isolate web-01?", "message_sha256": "0" * 64,
        "schema": {}, "created_at": datetime(2026, 11, 22, 13, 2, tzinfo=UTC),
        "approvers": ("U0ALICE", "S0SOC", "U0ERIN01"), "requested_by": "erin@corp.test",
    }
    fields.update(overrides)
    return ReviewRequest(**fields)


@pytest.mark.parametrize(("user", "expected"), [
    ("U0ALICE", None),
    ("u0alice", None),  # any spelling of an approver
    ("U0BOB", None),  # through the group
    ("U0DAVE", Refusal.NOT_AN_APPROVER),
    ("U0ERIN01", Refusal.SELF_APPROVAL),  # the requester's e-mail, looked up
    ("erin+ci@corp.test", Refusal.SELF_APPROVAL),  # a +tag does not make another person
    ("U0CAROL1", Refusal.NOT_AN_APPROVER),
])
def test_only_the_approvers_decide_a_restricted_review_and_never_its_requester(user, expected):
    assert refusal(review(), user, PEOPLE) is expected


def test_a_requester_by_email_whose_clicker_cannot_be_looked_up_is_refused_fail_closed():
    unknown = review(approvers=("U0FRANK1",))
    assert refusal(unknown, "U0FRANK1", PEOPLE) is Refusal.REQUESTER_UNVERIFIABLE
    assert refusal(unknown, "U0FRANK1", Groups({}, {"U0FRANK1": "frank@corp.test"})) is None
    assert refusal(replace(unknown, requested_by="U0ERIN01"), "U0FRANK1",
                   PEOPLE) is None  # ids compare without a look-up


def test_a_step_that_allows_self_approval_lets_its_requester_decide():
    allowed = review(allow_self_approval=True)
    assert refusal(allowed, "U0ERIN01", PEOPLE) is None
    # ...as an approver only: self-approval does not make the requester one.
    assert refusal(review(allow_self_approval=True, requested_by="U0DAVE"), "U0DAVE",
                   PEOPLE) is Refusal.NOT_AN_APPROVER


def test_anyone_but_the_requester_decides_a_review_that_names_no_approvers():
    open_review = review(approvers=(), requested_by="U0ERIN01")
    assert refusal(open_review, "U0DAVE", PEOPLE) is None
    assert refusal(open_review, "<@u0erin01>", PEOPLE) is Refusal.SELF_APPROVAL
    assert refusal(review(approvers=(), requested_by=None), "U0ERIN01", PEOPLE) is None


def test_approvers_that_did_not_resolve_still_restrict_the_review():
    assert refusal(review(approvers=("nobody@corp.test",), requested_by=None), "U0DAVE",
                   PEOPLE) is Refusal.NOT_AN_APPROVER


def test_a_quorum_counts_each_person_once_under_any_spelling():
    quorum = review(approvals_required=2, requested_by=None,
                    approvals=({"actor": {"id": "U0ALICE"}},))
    assert vote_refusal(quorum, "u0alice", True, PEOPLE) is Refusal.ALREADY_VOTED
    assert vote_refusal(quorum, "U0ALICE", False, PEOPLE) is None  # one deny denies
    assert vote_refusal(quorum, "U0BOB", True, PEOPLE) is None


def test_the_deciders_are_the_approvers_but_the_requester_and_who_handed_off():
    approvers = ("U0ALICE", "U0ERIN01", "U0BOB")
    assert deciders(review(), approvers, PEOPLE) == ("U0ALICE", "U0BOB")
    assert deciders(review(allow_self_approval=True), approvers, PEOPLE) == approvers
    assert deciders(review(handed=("U0ALICE",)), approvers, PEOPLE) == ("U0BOB",)


@pytest.mark.parametrize(("who", "chosen", "expected"), [
    ("U0ALICE", "U0DAVE", None),
    ("U0ALICE", "U0BOB", Refusal.ALREADY_AN_APPROVER),
    ("U0ALICE", "erin@corp.test", Refusal.REASSIGN_TO_REQUESTER),
    ("U0ALICE", "U0ERIN01", Refusal.REASSIGN_TO_REQUESTER),
    ("U0DAVE", "U0FRANK1", Refusal.NOT_AN_APPROVER),  # only a seat holder hands one on
    ("U0CAROL1", "U0DAVE", Refusal.NOT_AN_APPROVER),
])
def test_a_seat_is_handed_by_its_holder_to_someone_new_who_is_not_the_requester(
        who, chosen, expected):
    assert reassign_refusal(review(), who, chosen, PEOPLE) is expected


def test_who_voted_cannot_hand_their_seat_on_and_an_open_review_has_no_seats():
    voted = review(approvals_required=2, approvals=({"actor": {"id": "U0ALICE"}},))
    assert reassign_refusal(voted, "U0ALICE", "U0DAVE", PEOPLE) is Refusal.ALREADY_VOTED
    assert reassign_refusal(review(approvers=()), "U0ALICE", "U0DAVE",
                            PEOPLE) is Refusal.ANYONE_MAY_DECIDE


@pytest.mark.parametrize(("raw", "stored"), [
    ("U0ALICE01", "U0ALICE01"),
    ("u0alice01", "U0ALICE01"),
    ("<@U0ALICE01>", "U0ALICE01"),
    ("<@u0alice01|alice>", "U0ALICE01"),
    ("Alice+CI@Corp.example", "alice+ci@corp.example"),
    ("ci-bot", "ci-bot"),  # a token's principal
])
def test_a_requester_is_normalised_when_the_run_starts(raw, stored):
    assert requester(raw, {"ci-bot"}) == stored


@pytest.mark.parametrize("raw", ["alice", "ursula", "@alice", "", "<@>", "a" * 300 + "@x.io"])
def test_a_requester_that_names_nobody_is_refused(raw):
    with pytest.raises(RequesterInvalid):
        requester(raw, {"ci-bot"})


def test_refusals_are_codes_an_edge_words_itself():
    assert {r.value for r in Refusal} == {
        "not_an_approver", "self_approval", "requester_unverifiable", "already_voted",
        "handed_off", "reassign_to_requester", "already_an_approver", "anyone_may_decide"}
