"""Who may act on a review: its approvers (anyone who sees it when none are named), never the
run's own requester unless the step allows self-approval; and whom a review may be handed to.
Pure: ids in, a reason or None out."""

from __future__ import annotations

from collections.abc import Collection

from bot import texts


def refusal(user_id: str, *, approvers: Collection[str], restricted: bool,
            requester: str | None, allow_self_approval: bool) -> str | None:
    """Why ``user_id`` may not decide (nor escalate, nor reassign), as a reviewer reads it;
    None when they may."""
    if requester is not None and user_id == requester and not allow_self_approval:
        return texts.SELF_APPROVAL
    if restricted and user_id not in approvers:
        return texts.NOT_AN_APPROVER
    return None


def reassign_refusal(chosen: str, *, approvers: Collection[str], requester: str | None,
                     allow_self_approval: bool) -> str | None:
    """Why a review cannot be handed to ``chosen``; None when it can."""
    if requester is not None and chosen == requester and not allow_self_approval:
        return texts.ERROR_REASSIGN_REQUESTER
    if chosen in approvers:
        return texts.ERROR_ALREADY_APPROVER
    return None
