"""Every sentence a reviewer reads in Slack, in one place.

Functions here take mrkdwn fragments that the caller has already escaped (or
built with :mod:`bot.mrkdwn`); they only decide the wording.
"""

from __future__ import annotations

# Buttons (≤ 75 characters each).
APPROVE = "Approve"
DENY = "Deny"
ESCALATE = "Escalate"
RESPOND = "Respond…"

# The confirm dialog on Deny (title ≤ 100, text ≤ 300, buttons ≤ 30).
DENY_CONFIRM_TITLE = "Are you sure?"
DENY_CONFIRM_NO = "Go back"


def deny_confirm_text(label: str, title: str) -> str:
    return f"{label}: {title}\nThe workflow goes on down its denied path; this cannot be undone."


# Modals (title, submit and close ≤ 24 characters each).
MODAL_TITLE = "Review"
MODAL_SUBMIT = "Submit"
MODAL_CLOSE = "Cancel"
YES = "Yes"
NO = "No"
EMPTY_OPTION = "(empty)"
NULL_OPTION = "(none)"

# How a review ended, by ReviewClosed.outcome.
OUTCOMES = {
    "approved": "✅ Approved",
    "denied": "❌ Denied",
    "submitted": "📝 Answered",
    "timed_out": "⏱ Timed out",
    "cancelled": "🚫 Cancelled",
    "failed": "⚠️ Failed",
}


def outcome_label(outcome: str) -> str:
    return OUTCOMES.get(outcome, outcome.replace("_", " ").capitalize())


def closed_line(label: str, who: str | None, when: str) -> str:
    if who:
        return f"{label} by {who} at {when}"
    return f"{label} at {when}"


def closed_fallback(label: str, title: str) -> str:
    return f"{label}: {title}"


def closed_reason(reason: str) -> str:
    return f"Reason: {reason}"


def truncated(more_characters: int, execution_id: str) -> str:
    return (f"…truncated, {more_characters:,} more characters; "
            f"full text: `signoff status {execution_id}`")


# The context line under a review.
def context_run(workflow: str, execution_id: str, step: str) -> str:
    return f"Workflow *{workflow}* · step `{step}` · execution `{execution_id}`"


def context_requested_by(who: str) -> str:
    return f"Requested by {who}"


def context_due(when: str) -> str:
    return f"Due {when}"


def context_approvers(mentions: str, more: int, approvals_required: int) -> str:
    text = f"Approvers: {mentions}"
    if more:
        text += f" and {more} more"
    if approvals_required > 1:
        text += f" ({approvals_required} approvals needed)"
    return text


def context_level(level: int) -> str:
    return f"Escalated: level {level}"


# Ephemeral replies to a click that cannot count.
def already_decided(line: str) -> str:
    return f"This review is already closed: {line}"


def not_allowed(reason: str) -> str:
    return f"You can't decide this review: {reason}"


# Inline errors in a modal (≤ about 150 characters each).
ERROR_REQUIRED = "This field is required."
ERROR_ENUM = "Choose one of the offered options."
ERROR_UNIQUE = "Choose each option only once."
ERROR_INVALID = "This value is not accepted."

_TYPE_NAMES = {
    "string": "some text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "yes or no",
    "array": "a list",
    "object": "an object",
    "null": "nothing",
}


def error_type(expected: str | list[str]) -> str:
    names = [expected] if isinstance(expected, str) else list(expected)
    return "Enter " + " or ".join(_TYPE_NAMES.get(name, name) for name in names) + "."


def error_min_length(n: int) -> str:
    return f"Enter at least {n} character{'s' if n != 1 else ''}."


def error_max_length(n: int) -> str:
    return f"Enter at most {n} character{'s' if n != 1 else ''}."


def error_minimum(n: object) -> str:
    return f"Enter {n} or more."


def error_maximum(n: object) -> str:
    return f"Enter {n} or less."


def error_exclusive_minimum(n: object) -> str:
    return f"Enter more than {n}."


def error_exclusive_maximum(n: object) -> str:
    return f"Enter less than {n}."


def error_multiple_of(n: object) -> str:
    return f"Enter a multiple of {n}."


def error_pattern(pattern: str) -> str:
    return f"Doesn't match the expected format ({pattern})."


def error_const(value: str) -> str:
    return f"Must be {value}."


def error_min_items(n: int) -> str:
    return f"Choose at least {n}."


def error_max_items(n: int) -> str:
    return f"Choose at most {n}."


def error_format(fmt: str) -> str:
    return f"Enter a valid {fmt}."


# What `signoff validate` says about a schema the Slack modal cannot show.
def unsupported(name: str, why: str) -> str:
    return f"field {name!r}: {why}"


# Why a click cannot count (shown after "You can't decide this review: ").
NOT_AN_APPROVER = "you are not one of its approvers."
SELF_APPROVAL = "you requested this run, and its step does not allow self-approval."

# The Escalate button, until the SLA feature acts on it.
ESCALATION_NOT_CONFIGURED = "Escalation levels are not configured for this review."
ESCALATION_NOT_AVAILABLE = ("Escalation is handled by the SLA feature, which this Signoff "
                            "does not have yet: nothing was escalated.")

# A modal whose review can no longer take this answer.
MODAL_CLOSED_TITLE = "Review closed"
MODAL_DONE = "Close"

# A click or an answer on a review that no longer waits, when we cannot say who closed it.
REVIEW_GONE = "This review is no longer waiting for a decision."
