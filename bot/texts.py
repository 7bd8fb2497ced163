"""Every sentence a reviewer reads in Slack, in one place.

Functions here take mrkdwn fragments that the caller has already escaped (or
built with :mod:`bot.mrkdwn`); they only decide the wording.
"""

from __future__ import annotations

import math

from engine.run.authority import Refusal

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


def context_level(number: int, levels: int) -> str:
    return f"Escalated: level {number} of {levels}"


def quorum_progress(count: int, required: int, who: str) -> str:
    return f"{count} of {required} approvals: {who}"


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
REQUESTER_UNVERIFIABLE = ("its requester is named by e-mail address and Slack does not show "
                          "yours, so Signoff cannot tell that you are not the requester.")
ALREADY_VOTED = "you approved it already; each person counts once towards its quorum."
HANDED_OFF = "you handed it to someone else."

# The Escalate button and its modal (title and submit ≤ 24 characters).
NO_FURTHER_LEVEL = "There is no further level to escalate to: this review is at its last level."


def already_escalated(level_number: int, by: str) -> str:
    """A stale or repeated Escalate: someone moved the review on since the modal opened."""
    return f"Already escalated to level {level_number} by {by}."
ESCALATE_TITLE = "Escalate review"
ESCALATE_REASON_LABEL = "Why escalate?"
ESCALATE_REASON_HINT = "Shown in the review's thread and kept in its audit trail."
ERROR_REASON_REQUIRED = "Say why you are escalating."


def escalate_prompt(title: str, number: int, levels: int, who: str) -> str:
    to = f": {who}" if who else ""
    return (f"Send *{title}* to level {number} of {levels}{to}. They get it as a direct "
            "message; its current approvers can still decide.")


ESCALATE_PICK_LABEL = "Escalate to"


def escalate_pick_prompt(title: str) -> str:
    return (f"*{title}* has no further escalation level. Choose who should decide it and say "
            "why: they get it as a direct message, and you can still decide it.")


UNANSWERABLE = ("⚠️ Nobody named can decide this review: its only approvers requested it. "
                "Set SIGNOFF_ESCALATE_TO, or cancel the run and ask again.")
UNANSWERABLE_REASON = "its approvers resolve to nobody but the run's requester"
UNANSWERABLE_ESCALATED = ("⚠️ Its only approvers requested it, so it went to the workspace's "
                          "escalation contacts.")


def escalated(who: str, by: str | None, reason: str) -> str:
    """The thread reply under a review that moved to its next level."""
    to = f" to {who}" if who else ""
    return f"⬆️ Escalated{to} by {by}: {reason}" if by else f"⬆️ Escalated{to}: {reason}"


# Reassign… (overflow option ≤ 75 characters; modal title and submit ≤ 24).
REASSIGN = "Reassign…"
REASSIGN_TITLE = "Reassign review"
REASSIGN_SUBMIT = "Reassign"
REASSIGN_LABEL = "Who else should decide?"
ERROR_ALREADY_APPROVER = "They can already decide this review."
REASSIGN_ANYONE = "Anyone who sees this review may decide it: there is nobody to reassign."
ERROR_REASSIGN_REQUESTER = "They requested this run, and its step does not allow self-approval."

# The engine's refusals (engine.run.authority), as a reviewer reads them.
REFUSALS = {
    Refusal.NOT_AN_APPROVER: NOT_AN_APPROVER,
    Refusal.SELF_APPROVAL: SELF_APPROVAL,
    Refusal.REQUESTER_UNVERIFIABLE: REQUESTER_UNVERIFIABLE,
    Refusal.ALREADY_VOTED: ALREADY_VOTED,
    Refusal.HANDED_OFF: HANDED_OFF,
    Refusal.REASSIGN_TO_REQUESTER: ERROR_REASSIGN_REQUESTER,
    Refusal.ALREADY_AN_APPROVER: ERROR_ALREADY_APPROVER,
    Refusal.ANYONE_MAY_DECIDE: REASSIGN_ANYONE,
}


def refusal_text(code: str) -> str:
    """A refusal's code (ActorNotAllowed.reason) in a reviewer's words."""
    try:
        return REFUSALS[Refusal(code)]
    except ValueError:
        return code


def reassign_prompt(title: str) -> str:
    return (f"Choose who should decide *{title}* in your place. They get it as a direct "
            "message, and you can no longer decide it.")


def reassigned(who: str, by: str) -> str:
    """The thread reply under a review someone handed to another approver."""
    return f"➡️ Reassigned to {who} by {by}"


# Reminders and quorum.
def reminder(title: str, when: str | None, link: str | None) -> str:
    text = f"⏰ Reminder: *{title}* is waiting for your decision."
    if when:
        text += f" Its SLA passes {when}."
    if link:
        text += f" <{link}|Open the review>"
    return text


# An incoming webhook's notification (with.channels.slack) when its `message` is not set:
# buttons cannot work there, so it links to the review. Slack's text limit is 40,000.
def webhook_notice(title: str, workflow: str, when: str | None, link: str) -> str:
    text = f"🔔 *{title}* ({workflow}) is waiting for a decision"
    text += f", due {when}." if when else "."
    return f"{text} <{link}|Open the review>"


def channel_refused(channel: str, connector_id: str) -> str:
    return (f"not posted to {channel}: connector {connector_id}'s allowed-channels "
            "leave it out")


def approval_already_counted(count: int, required: int) -> str:
    return f"Your approval is already counted ({count} of {required})."


# Why a review timed out (shown after "Reason: ").
RUN_TIMED_OUT = "run timed out (settings.timeout)"
NO_DECISION_IN_TIME = "no decision in time"


def on_timeout_applied(reason: str, on_timeout: str) -> str:
    return f"{reason}; on-timeout: {on_timeout} applied"

# A modal whose review can no longer take this answer.
MODAL_CLOSED_TITLE = "Review closed"
MODAL_DONE = "Close"

# A click or an answer on a review that no longer waits, when we cannot say who closed it.
REVIEW_GONE = "This review is no longer waiting for a decision."


# -- /approvals and the App Home ----------------------------------------------------------------

APPROVALS_HELP = (
    "*/approvals*: the reviews waiting for you, oldest first, with Approve and Deny where "
    "one click decides.\n"
    "*/approvals all*: every waiting review you may see, ten at a time.\n"
    "*/approvals ID*: one execution's review, waiting or decided (who decided, and when).\n"
    "*/approvals stats [days]*: per workflow step over the last 7 days (or the days given): "
    "reviews, approval rate, median and 90th-percentile time to decision, SLA breaches, "
    "escalations and time-outs; steps whose last 50 decisions were all approvals are flagged "
    "as candidates to automate.\n"
    "*/approvals help*: this help.\n"
    "To decide several reviews of the same step at once, use *Decide several* under the list.")
MINE_TITLE = "Reviews waiting for you"
ALL_TITLE = "Reviews waiting for a decision"
NONE_FOR_YOU = "No reviews are waiting for you. :tada:"
NONE_AT_ALL = "No reviews are waiting for a decision."
SHOW_MORE = "Show more"
FIRST_PAGE = "Back to the first page"
HOME_STATS_TITLE = "Review stats, last 7 days"
ANSWER_IN_MESSAGE = "It asks for more than a decision: answer it in its message."
OPEN_MESSAGE = "open the message"


def showing(first: int, last: int, total: int) -> str:
    return f"Showing {first}–{last} of {total:,}"


def pending_context(step: str, workflow: str) -> str:
    return f"Step `{step}` of *{workflow}*"


def asked(when: str) -> str:
    return f"asked {when}"


def sla_due(when: str, passed: bool) -> str:
    return f"⚠️ SLA passed {when}" if passed else f"SLA due {when}"


def times_out(when: str) -> str:
    return f"times out {when}"


def level_of(level: int, levels: int) -> str:
    return f"level {level + 1} of {levels}"


def approvals_so_far(count: int, required: int) -> str:
    return f"{count} of {required} approvals"


def execution_line(execution_id: str) -> str:
    return f"Execution `{execution_id}`"


def no_execution(execution_id: str) -> str:
    # The same words for an execution that exists but is not visible to the viewer.
    return (f"No execution `{execution_id}` was found, or it is not visible to you. "
            "Try `/approvals` for your pending reviews.")


def run_status(status: str) -> str:
    return f"Run status: {status.replace('_', ' ').lower()}"


def run_started(when: str) -> str:
    return f"started {when}"


NOTHING_DECIDED = "No review of this run was decided."


def duration(ms: int) -> str:
    """A time to decision as people say it: 850 ms, 42 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def waiting_for(ms: int) -> str:
    return f"waiting {duration(ms)}"


# Review stats.
def stats_title(days: int) -> str:
    return f"Review stats, last {days} day{'s' if days != 1 else ''}"


def no_stats(days: int) -> str:
    return f"No reviews closed in the last {days} day{'s' if days != 1 else ''}."


def stats_line(reviews: int, rate: str, median: str, p90: str, breaches: int, escalated: int,
               timed_out: int) -> str:
    return (f"{reviews:,} review{'s' if reviews != 1 else ''} · {rate} approved · "
            f"median {median} · p90 {p90} to decide · {breaches:,} SLA breach"
            f"{'es' if breaches != 1 else ''} · {escalated:,} escalated · "
            f"{timed_out:,} timed out")


NOT_APPLICABLE = "n/a"


def automate_candidate(window: int) -> str:
    return (f"🎓 Candidate to automate: its last {window} decisions were all approvals. "
            "Consider an auto-allow rule for this checkpoint.")


def more_steps(count: int) -> str:
    return f"…and {count:,} more step{'s' if count != 1 else ''}."


# Batch review (modal titles and buttons ≤ 24 characters, options ≤ 75).
BATCH_TITLE = "Decide several"
BATCH_SUBMIT = "Record decisions"
BATCH_DONE_TITLE = "Batch review"
BATCH_DECISION = "Decision"
BATCH_APPROVE = "Approve each selected review"
BATCH_DENY = "Deny each selected review"
BATCH_NONE_SELECTED = "Select at least one review."
BATCH_NOTHING_LEFT = "None of these reviews is waiting for you any more."


def batch_button(step: str, workflow: str, count: int) -> str:
    return f"Decide several: {step} ({workflow}, {count})"


def batch_intro(count: int, step: str, workflow: str) -> str:
    return (f"{count} review{'s' if count != 1 else ''} of step `{step}` of *{workflow}* "
            "wait for you. Select the ones to decide the same way: each is recorded as its own "
            "decision, in its own audit trail.")


def batch_more_waiting(count: int) -> str:
    return f"{count:,} more wait after these; decide these first, then open this again."


def batch_group(first: int, last: int) -> str:
    return f"Reviews {first}–{last}"


def batch_summary(recorded: int, refused: int) -> str:
    text = f"{recorded} decision{'s' if recorded != 1 else ''} recorded"
    if refused:
        text += f", {refused} not recorded"
    return text + "."


def batch_recorded(label: str, title: str) -> str:
    return f"{label}: {title}"


def batch_approval_counted(title: str, count: int, required: int) -> str:
    return f"👍 Approval recorded ({count} of {required}): {title}"


def batch_not_recorded(title: str, why: str) -> str:
    return f"⚠️ Not recorded: {title}. {why}"


def step_title(step: str) -> str:
    return f"Review of step {step}"


def home_updated(when: str) -> str:
    return f"Updated {when}. Reopen the tab to refresh."

NEEDS_FORM = ("This review now needs more than a yes or no: use *Respond…* on the review "
              "message to answer its form.")

def slack_busy(seconds: float) -> str:
    """A click whose modal Slack's rate limit refused (``views.open`` cannot wait: its
    trigger expires within 3 seconds)."""
    wait = max(1, math.ceil(seconds))
    return (f"Slack is busy and could not open this form. Nothing was changed; please try "
            f"again in {wait} second{'s' if wait != 1 else ''}.")


CLICK_NOT_RECORDED = ("Your decision on this review could not be recorded: Signoff could not "
                      "reach Slack or its store for ten minutes. Nothing was decided; please "
                      "click again.")


# The agent and CI gate's policy in /approvals stats (bot.policy_stats).

POLICY_STATS_TITLE = "Agent and CI policy"


def policy_broken(problems: int) -> str:
    return (f"⚠️ The policy (SIGNOFF_POLICY) has {problems} problem{'s' if problems != 1 else ''}:"
            " the gate decides nothing until they are fixed (`signoff validate`).")


def graduation_line(rule: str, decisions: int, deciders: str) -> str:
    return (f"🎓 Escalating rule {rule}: its last {decisions} decisions were all approvals"
            f" (by {deciders}). An allow rule could replace it:")


def shadow_line(rule: str, action: str, calls: int, changed: int) -> str:
    return (f"👤 Shadow rule {rule}, `{action}`: matched {calls:,} call{'s' if calls != 1 else ''};"
            f" enforced, it would have changed the decision of {changed:,}.")


def graduation_hint(last: int) -> str:
    return (f"Candidates are rules whose last {last} decisions were all approvals; "
            "`signoff policy suggest` prints the same. Edit the policy file to adopt one.")


def more_rules(count: int) -> str:
    return f"…and {count:,} more rule{'s' if count != 1 else ''}."


# -- digests of an alert storm (bot.digest); step and workflow names come escaped ----------------

DIGEST_BUTTON = "Review them together"
DIGEST_HOW = ("Each is decided on its own: pick some or all in batch review, or one by one in "
              "`/approvals`.")


def digest_waiting(count: int, step: str) -> str:
    """The digest's notification text and headline (without the bold)."""
    return (f"{count} review{'s' if count != 1 else ''} of {step} {'is' if count == 1 else 'are'}"
            " waiting: review them together.")


def digest_closed(step: str) -> str:
    return f"Every review of {step} in this digest was closed."


def digest_details(workflow: str) -> str:
    return f"Workflow *{workflow}*. {DIGEST_HOW}"


DIGEST_CLOSED_DETAILS = "Each one's decision is in its run's audit trail."
