"""Who may act on a review: decide it, escalate it, hand it to someone else.

A step that names approvers (``restricted``) may be decided by them alone; one that
names none, by anyone who sees it. Either way the run's own requester may not, unless
the step allows self-approval. A review may be handed to anyone who is neither the
requester (under the same rule) nor an approver already.

Pure: the review and user ids in, a :class:`Refusal` or None out (or, for
:func:`deciders`, the ids who may decide). The edges resolve
the ids (the bot turns user groups and e-mail addresses into Slack user ids) and say
the refusal in their own words.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from enum import StrEnum

from engine.notify import ReviewRequest


class Refusal(StrEnum):
    """Why someone may not act on a review, or whom it may not be handed to."""

    NOT_AN_APPROVER = "not_an_approver"
    SELF_APPROVAL = "self_approval"
    REASSIGN_TO_REQUESTER = "reassign_to_requester"
    ALREADY_AN_APPROVER = "already_an_approver"


def refusal(review: ReviewRequest, user_id: str, *, approvers: Collection[str],
            restricted: bool, requester: str | None) -> Refusal | None:
    """Why ``user_id`` may not decide ``review`` (nor escalate, nor reassign it); None when
    they may. ``approvers`` and ``requester`` are user ids, as resolved by the caller."""
    if requester is not None and user_id == requester and not review.allow_self_approval:
        return Refusal.SELF_APPROVAL
    if restricted and user_id not in approvers:
        return Refusal.NOT_AN_APPROVER
    return None


def deciders(review: ReviewRequest, *, approvers: Sequence[str],
             requester: str | None) -> tuple[str, ...]:
    """Those of ``approvers`` who may decide ``review`` (in order): all but its requester,
    unless the step allows self-approval."""
    members = frozenset(approvers)  # a user group can hold thousands
    return tuple(u for u in approvers if refusal(review, u, approvers=members, restricted=True,
                                                 requester=requester) is None)


def reassign_refusal(review: ReviewRequest, chosen: str, *, approvers: Collection[str],
                     requester: str | None) -> Refusal | None:
    """Why ``review`` may not be handed to ``chosen``; None when it may."""
    if requester is not None and chosen == requester and not review.allow_self_approval:
        return Refusal.REASSIGN_TO_REQUESTER
    if chosen in approvers:
        return Refusal.ALREADY_AN_APPROVER
    return None
