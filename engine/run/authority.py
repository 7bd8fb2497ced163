"""Who may act on a review: decide it, escalate it, hand their seat to someone else.

The one place these rules live; the engine applies them on every path (the API, the
CLI, Slack's buttons and modals, batch review), so no front-end can skip them:

- A review that names approvers (``restricted``) is decided by the holders of its
  seats alone: the approvers of its current level, of earlier levels unless the step
  says ``earlier-levels-keep-rights: false``, and those a seat was handed to. One who
  handed their seat away holds none. A review that names nobody may be decided by
  anyone who sees it.
- The run's requester may not decide (nor escalate, nor take a seat) unless the step
  says ``allow-self-approval: true``. The requester is compared as a person, not as a
  string (see :mod:`engine.run.identity`): when the requester is an e-mail address and
  the actor's own address cannot be looked up, the rules refuse (fail closed).
- A quorum (``approvals-required: N``) counts distinct people: someone who approved
  may not approve again, nor hand their seat on.
- Reassigning is a hand-off: a seat holder who has not voted gives *their own* seat to
  someone who holds none and is not the requester.

Pure: the review, the ids and a :class:`~engine.run.identity.People` in; a
:class:`Refusal` or None out. The edges say the refusal in their own words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from engine.notify import ReviewRequest
from engine.run.identity import NamedPeople, People


class Refusal(StrEnum):
    """Why someone may not act on a review, or whom it may not be handed to."""

    NOT_AN_APPROVER = "not_an_approver"
    SELF_APPROVAL = "self_approval"
    REQUESTER_UNVERIFIABLE = "requester_unverifiable"  # fail closed: cannot compare e-mails
    ALREADY_VOTED = "already_voted"
    HANDED_OFF = "handed_off"
    REASSIGN_TO_REQUESTER = "reassign_to_requester"
    ALREADY_AN_APPROVER = "already_an_approver"
    ANYONE_MAY_DECIDE = "anyone_may_decide"  # nothing to hand off: the review names nobody


EXPLANATIONS: dict[Refusal, str] = {
    Refusal.NOT_AN_APPROVER: "they are not an approver of this review",
    Refusal.SELF_APPROVAL: "they requested this run and the step does not allow "
                           "self-approval",
    Refusal.REQUESTER_UNVERIFIABLE: "the run's requester is an e-mail address and theirs "
                                    "cannot be looked up, so they might be the requester",
    Refusal.ALREADY_VOTED: "they approved already; a quorum counts each person once",
    Refusal.HANDED_OFF: "they handed their seat on this review to someone else",
    Refusal.REASSIGN_TO_REQUESTER: "the review cannot be handed (or escalated) to the run's "
                                   "requester",
    Refusal.ALREADY_AN_APPROVER: "the person chosen is an approver of this review already",
    Refusal.ANYONE_MAY_DECIDE: "the review names no approvers: anyone who sees it may "
                               "decide, so there is no seat to hand on",
}

_DEFAULT_PEOPLE = NamedPeople()


def restricted(review: ReviewRequest) -> bool:
    """The review names approvers (even if none of them resolve to anyone)."""
    return bool(review.approvers or review.options.get("approvers") or review.handed)


def refusal(review: ReviewRequest, who: str, people: People = _DEFAULT_PEOPLE
            ) -> Refusal | None:
    """Why ``who`` may not decide ``review`` (nor escalate it); None when they may."""
    requester = review.requested_by
    if requester and not review.allow_self_approval:
        same = people.same_person(who, requester)
        if same is None:
            return Refusal.REQUESTER_UNVERIFIABLE
        if same:
            return Refusal.SELF_APPROVAL
    if review.handed and people.is_among(who, review.handed):
        return Refusal.HANDED_OFF
    if restricted(review) and not people.is_among(who, review.approvers):
        return Refusal.NOT_AN_APPROVER
    return None


def vote_refusal(review: ReviewRequest, who: str, answer_approves: bool,
                 people: People = _DEFAULT_PEOPLE) -> Refusal | None:
    """Why ``who``'s answer may not count: :func:`refusal`, or (an approval towards a
    quorum) that they approved already."""
    found = refusal(review, who, people)
    if found is not None:
        return found
    if answer_approves and review.approvals_required > 1 and voted(review.approvals, who, people):
        return Refusal.ALREADY_VOTED
    return None


def voted(approvals: Sequence[Mapping[str, Any]], who: str,
          people: People = _DEFAULT_PEOPLE) -> bool:
    """``who`` has an approval among ``approvals`` (under any spelling of them)."""
    return any(people.same_person(str((a.get("actor") or {}).get("id") or ""), who) is True
               for a in approvals)


def deciders(review: ReviewRequest, approvers: Sequence[str],
             people: People = _DEFAULT_PEOPLE) -> tuple[str, ...]:
    """Those of ``approvers`` (resolved user ids) who may decide ``review``, in order: all
    but its requester (unless self-approval is allowed) and those who handed off."""
    requester = review.requested_by
    found = []
    for user in dict.fromkeys(approvers):  # a user group can hold thousands
        if requester and not review.allow_self_approval and people.same_person(
                user, requester):
            continue
        if review.handed and people.is_among(user, review.handed):
            continue
        found.append(user)
    return tuple(found)


def reassign_refusal(review: ReviewRequest, who: str, chosen: str,
                     people: People = _DEFAULT_PEOPLE) -> Refusal | None:
    """Why ``who`` may not hand their seat on ``review`` to ``chosen``; None when they may."""
    if not restricted(review):
        return Refusal.ANYONE_MAY_DECIDE
    found = refusal(review, who, people)
    if found is not None:
        return found
    if voted(review.approvals, who, people):
        return Refusal.ALREADY_VOTED
    return target_refusal(review, chosen, people)


def target_refusal(review: ReviewRequest, chosen: str,
                   people: People = _DEFAULT_PEOPLE) -> Refusal | None:
    """Why ``review`` may not be escalated to ``chosen`` (a person the escalating reviewer
    picked): they are its requester, or may decide it already."""
    requester = review.requested_by
    if requester and not review.allow_self_approval and people.same_person(
            chosen, requester) is not False:
        return Refusal.REASSIGN_TO_REQUESTER
    if people.is_among(chosen, review.approvers) and not (
            review.handed and people.is_among(chosen, review.handed)):
        return Refusal.ALREADY_AN_APPROVER
    return None


def explain(reason: Refusal) -> str:
    return EXPLANATIONS[reason]
