"""Block Kit for reviews: the message a reviewer acts on, and what it becomes once closed.

Pure builders: engine records in, plain dicts in Block Kit's JSON shape out.
A review message reads top to bottom the way a reviewer mid-incident needs it:

- header: the decision line (the message's first line, as plain text);
- sections: the evidence (the rest of the message as mrkdwn, cut at paragraph
  boundaries into sections of at most 3000 characters, with a marker saying how
  much was left out and where to read it all);
- context: workflow, step, execution, who asked, when it is next due, who may decide,
  the escalation level and, with a quorum, who approved so far;
- actions: Approve, Deny (with a confirm dialog), Escalate (while a level remains),
  Respond…, and Reassign… in an overflow menu.

Once closed, the buttons give way to a line saying who decided what, and when.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot import texts
from bot.block_kit import (
    HEADER_LIMIT,
    SECTION_LIMIT,
    context_block,
    header_block,
    plain_text,
    section_block,
)
from bot.forms import (
    ReviewRef,
    asks_more_than_decision,
    decision_line,
    humanize,
    offers_decision,
    only_decision_required,
)
from bot.mrkdwn import (
    DATE_AT_TIME,
    DATE_TIME,
    escape_mrkdwn,
    is_user_id,
    markdown_to_mrkdwn_chunks,
    markdown_to_plain,
    mention_approver,
    mention_conversation,
    mention_user,
    safe_cut,
    slack_date,
    truncate_mrkdwn,
    truncate_plain,
)
from engine.notify import SYSTEM_TIMEOUT, Actor, ReviewClosed, ReviewRequest
from engine.run import escalation

ACTION_APPROVE = "signoff.approve"
ACTION_DENY = "signoff.deny"
ACTION_ESCALATE = "signoff.escalate"
ACTION_RESPOND = "signoff.respond"
ACTION_REASSIGN = "signoff.reassign"
ACTIONS_BLOCK_ID = "signoff.review"
CALLBACK_ESCALATE = "signoff.escalate_reason"
CALLBACK_REASSIGN = "signoff.reassign_to"
REASON_BLOCK = "reason"
APPROVER_BLOCK = "approver"
INPUT_ACTION = "value"

MAX_BLOCKS = 50
MAX_EVIDENCE_BLOCKS = 40  # the truncation marker included
# Slack also rejects a message whose blocks carry more than about 12,000 characters
# in all (msg_blocks_too_long, undocumented: slackapi/bolt-js#2509 and #2867), so the
# evidence gets a budget that leaves room for the header, context and buttons.
EVIDENCE_BUDGET = 10_000
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
OPTION_VALUE_LIMIT = 150
REASON_LIMIT = 500
FALLBACK_LIMIT = 3000
MAX_APPROVERS_SHOWN = 15
_FENCE = "```"


@dataclass(frozen=True)
class ReviewContext:
    """What the bot resolved about a review before posting it."""

    approvers: tuple[str, ...] = ()  # Slack user ids (U…/W…) and user-group ids (S…)
    requested_by_display: str = ""  # a user id is mentioned, anything else shown as text
    level: int = 0  # escalation level, 0 for the step's own approvers
    due_at: datetime | None = None  # the next deadline: the level's SLA or the timeout
    escalate_to: tuple[str, ...] = ()  # SIGNOFF_ESCALATE_TO: Escalate's target past the levels
    unanswerable: bool = False  # its approvers resolve to nobody but its requester

    @classmethod
    def from_review(cls, review: ReviewRequest) -> ReviewContext:
        return cls(approvers=review.approvers, requested_by_display=review.requested_by or "",
                   level=review.level, due_at=review.next_deadline)


# -- the review message ----------------------------------------------------------------------


def review_message(review: ReviewRequest, *, context: ReviewContext) -> dict[str, Any]:
    """The message asking for a decision: ``{"text": fallback, "blocks": [...]}``."""
    title, evidence = split_message(review)
    blocks = [header_block(title), *evidence_blocks(evidence, review.execution_id),
              _context(review, context), _actions(review, context)]
    return {"text": truncate_mrkdwn(escape_mrkdwn(title), FALLBACK_LIMIT), "blocks": blocks}


def split_message(review: ReviewRequest) -> tuple[str, str]:
    """(decision line, evidence Markdown): the first line, and the rest of the message."""
    title = decision_line(review)
    lines = review.message.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.strip():
            if len(title) <= HEADER_LIMIT and markdown_to_plain(line):
                return title, "".join(lines[index + 1:])
            # The header cannot hold this line in full, so the evidence repeats it.
            return title, "".join(lines[index:])
    return title, ""


def evidence_blocks(markdown: str, execution_id: str, *, budget: int = EVIDENCE_BUDGET,
                    max_blocks: int = MAX_EVIDENCE_BLOCKS) -> list[dict[str, Any]]:
    """Markdown as mrkdwn sections; cut, with a marker, past ``budget`` characters."""
    pieces = [piece for chunk in markdown_to_mrkdwn_chunks(markdown)
              for piece in _split_chunk(chunk, SECTION_LIMIT)]
    sections = _pack(pieces, SECTION_LIMIT)
    total = sum(len(s) for s in sections)
    if total <= budget and len(sections) <= max_blocks:
        return [section_block(s) for s in sections]
    kept: list[str] = []
    used = 0
    for section in sections:
        room = budget - used
        if len(kept) >= max_blocks - 1 or room <= 0:
            break
        if len(section) > room:
            part = _cut_section(section, room)
            if part:
                kept.append(part)
                used += len(part)
            break
        kept.append(section)
        used += len(section)
    marker = texts.truncated(max(total - used, 1), escape_mrkdwn(execution_id))
    return [*(section_block(s) for s in kept), section_block(marker)]


def _split_chunk(chunk: str, limit: int) -> list[str]:
    if len(chunk) <= limit:
        return [chunk]
    if chunk.startswith(_FENCE + "\n") and chunk.endswith("\n" + _FENCE):
        inner = chunk[4:-4]
        return [f"{_FENCE}\n{piece}\n{_FENCE}" for piece in _cut_all(inner, limit - 8)]
    return _cut_all(chunk, limit)


def _cut_all(text: str, limit: int) -> list[str]:
    pieces = []
    while len(text) > limit:
        cut = safe_cut(text, limit)
        if cut <= 0:
            cut = limit
        piece, text = text[:cut].rstrip(), text[cut:]
        if text[:1] in ("\n", " "):
            text = text[1:]
        if piece:
            pieces.append(piece)
    if text.strip():
        pieces.append(text)
    return pieces


def _pack(pieces: list[str], limit: int) -> list[str]:
    sections: list[str] = []
    for piece in pieces:
        if sections and len(sections[-1]) + 2 + len(piece) <= limit:
            sections[-1] += "\n\n" + piece
        else:
            sections.append(piece)
    return sections


def _cut_section(section: str, room: int) -> str:
    part = section[: safe_cut(section, max(room - len(_FENCE) - 1, 0))].rstrip()
    if part.count(_FENCE) % 2:
        part += "\n" + _FENCE
    return part if part.strip(_FENCE + "\n ") else ""


def _context(review: ReviewRequest, context: ReviewContext) -> dict[str, Any]:
    lines = [texts.context_run(escape_mrkdwn(review.workflow), escape_mrkdwn(review.execution_id),
                               escape_mrkdwn(review.step))]
    if context.requested_by_display:
        lines.append(texts.context_requested_by(_who(context.requested_by_display)))
    if context.due_at is not None:
        lines.append(texts.context_due(slack_date(context.due_at, DATE_AT_TIME)))
    if context.approvers:
        shown = context.approvers[:MAX_APPROVERS_SHOWN]
        lines.append(texts.context_approvers(
            ", ".join(mention_approver(a) for a in shown),
            len(context.approvers) - len(shown), review.approvals_required))
    if context.level > 0:
        lines.append(texts.context_level(context.level + 1, max(review.levels,
                                                                context.level + 1)))
    if context.unanswerable and context.level == 0:
        lines.append(texts.UNANSWERABLE_ESCALATED if context.escalate_to
                     else texts.UNANSWERABLE)
    if review.approvals_required > 1 and review.approvals:
        who = [_actor(Actor.from_json(a.get("actor") or {"id": "?"})) for a in review.approvals]
        lines.append(texts.quorum_progress(len(review.approvals), review.approvals_required,
                                           ", ".join(who[:MAX_APPROVERS_SHOWN])))
    return context_block(*lines)


def _actions(review: ReviewRequest, context: ReviewContext) -> dict[str, Any]:
    value = ReviewRef.of(review).encode()
    if len(value) > BUTTON_VALUE_LIMIT:
        raise ValueError(f"execution id and step of {review.execution_id} are too long for Slack")
    buttons = []
    if offers_decision(review):
        decide = ReviewRef.of(review, one_click=only_decision_required(review)).encode()
        buttons.extend(decision_buttons(review, decide, decision_line(review)))
    if _can_escalate(review, context):
        buttons.append(button(texts.ESCALATE, ACTION_ESCALATE, value))
    if asks_more_than_decision(review):
        buttons.append(button(texts.RESPOND, ACTION_RESPOND, value))
    if review.approvers:  # with nobody named, anyone who sees it may decide already
        if len(value) <= OPTION_VALUE_LIMIT:
            buttons.append({"type": "overflow", "action_id": ACTION_REASSIGN,
                            "options": [{"text": plain_text(texts.REASSIGN), "value": value}]})
        else:  # an overflow option's value is short; a button's holds any reference
            buttons.append(button(texts.REASSIGN, ACTION_REASSIGN, value))
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": buttons}


def decision_buttons(review: ReviewRequest, value: str, title: str) -> list[dict[str, Any]]:
    """Approve, and Deny behind a confirm dialog naming ``title``, both carrying ``value``."""
    approve, deny = decision_labels(review)
    confirm = {
        "title": plain_text(texts.DENY_CONFIRM_TITLE),
        "text": plain_text(truncate_plain(texts.deny_confirm_text(deny, title), 300)),
        "confirm": plain_text(truncate_plain(deny, 30)),
        "deny": plain_text(texts.DENY_CONFIRM_NO),
        "style": "danger",
    }
    return [button(approve, ACTION_APPROVE, value, style="primary"),
            button(deny, ACTION_DENY, value, style="danger", confirm=confirm)]


def decision_labels(review: ReviewRequest) -> tuple[str, str]:
    """What Approve and Deny say: a waitForApproval's own labels, else a form's yes and no."""
    if review.step_type == "waitForApproval":
        return review.approve_label, review.reject_label
    return texts.APPROVE, texts.DENY


def _can_escalate(review: ReviewRequest, context: ReviewContext) -> bool:
    """Escalate is always offered, but past the last level once the workspace's default
    target (SIGNOFF_ESCALATE_TO) has the review."""
    levels = review.options.get("escalation")
    if isinstance(levels, list) and context.level < len(levels):
        return True
    return escalation.beyond_levels(review.options, context.escalate_to, "someone") is not None


def button(text: str, action_id: str, value: str, *, style: str | None = None,
            confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id,
                              "text": plain_text(truncate_plain(text, BUTTON_TEXT_LIMIT)),
                              "value": value}
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


# -- once closed -----------------------------------------------------------------------------


def decided_message(review: ReviewRequest, closed: ReviewClosed) -> dict[str, Any]:
    """The review message once closed: same header and evidence, the outcome instead of buttons."""
    title, evidence = split_message(review)
    label, line = _closed_line(closed, review.decision_field)
    outcome = line
    if closed.reason:
        outcome += "\n" + texts.closed_reason(escape_mrkdwn(closed.reason))
    blocks = [header_block(title), *evidence_blocks(evidence, review.execution_id),
              section_block(outcome)]
    answer = _answer_text(review, closed)
    if answer:
        blocks.append(section_block(answer))
    blocks.append(context_block(texts.context_run(
        escape_mrkdwn(review.workflow), escape_mrkdwn(review.execution_id),
        escape_mrkdwn(review.step))))
    fallback = escape_mrkdwn(texts.closed_fallback(label, title))
    return {"text": truncate_mrkdwn(fallback, FALLBACK_LIMIT), "blocks": blocks}


def ephemeral_already_decided(closed: ReviewClosed, *,
                              decision_field: str = "approved") -> dict[str, Any]:
    """The reply to a click on a review someone else already closed."""
    _, line = _closed_line(closed, decision_field)
    return {"text": truncate_mrkdwn(texts.already_decided(line), FALLBACK_LIMIT)}


def ephemeral_not_allowed(reason: str) -> dict[str, Any]:
    """The reply to a click from someone who may not decide (not an approver, self-approval…)."""
    return {"text": truncate_mrkdwn(texts.not_allowed(escape_mrkdwn(reason)), FALLBACK_LIMIT)}


def _closed_line(closed: ReviewClosed, decision_field: str) -> tuple[str, str]:
    outcome = closed.outcome
    decision = closed.input.get(decision_field)
    if outcome == "submitted" and isinstance(decision, bool):
        outcome = "approved" if decision else "denied"
    if closed.actor.id == SYSTEM_TIMEOUT.id:  # on-timeout decided: say it timed out
        outcome = "timed_out"
    label = texts.outcome_label(outcome)
    who = None if closed.actor.source == "system" else _actor(closed.actor)
    return label, texts.closed_line(label, who, slack_date(closed.at, DATE_TIME))


def _actor(actor: Actor) -> str:
    return mention_user(actor.id) if is_user_id(actor.id) else escape_mrkdwn(actor.display)


def _who(display: str) -> str:
    return mention_user(display) if is_user_id(display) else escape_mrkdwn(display)


def _answer_text(review: ReviewRequest, closed: ReviewClosed) -> str:
    props = review.schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    lines = []
    for name, value in closed.input.items():
        if name == review.decision_field:
            continue
        prop = props.get(name)
        if not isinstance(prop, Mapping):
            prop = {}
        rendered = _answer_value(value, str(prop.get("x-slack-input") or ""))
        if not rendered:
            continue
        label = escape_mrkdwn(str(prop.get("title") or "").strip() or humanize(str(name)))
        if "\n" in rendered:
            quoted = "\n".join(f"> {line}" for line in rendered.split("\n"))
            lines.append(f"*{label}:*\n{quoted}")
        else:
            lines.append(f"*{label}:* {rendered}")
    return "\n".join(lines)


def _answer_value(value: Any, picker: str) -> str:
    if isinstance(value, bool):
        return texts.YES if value else texts.NO
    if isinstance(value, str):
        if picker.endswith("users_select"):
            return mention_user(value)
        if picker.endswith("conversations_select"):
            return mention_conversation(value)
        return escape_mrkdwn(value.strip())
    if isinstance(value, list):
        return ", ".join(part for part in (_answer_value(v, picker) for v in value) if part)
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return escape_mrkdwn(str(value))


# -- replies ---------------------------------------------------------------------------------


def ephemeral_text(text: str) -> dict[str, Any]:
    """A short ephemeral reply from one of :mod:`bot.texts`'s sentences."""
    return {"text": truncate_mrkdwn(text, FALLBACK_LIMIT)}


def notice_modal(mrkdwn: str) -> dict[str, Any]:
    """What a modal turns into when its answer cannot count (closed review, refused reviewer)."""
    return {
        "type": "modal",
        "title": plain_text(texts.MODAL_CLOSED_TITLE),
        "close": plain_text(texts.MODAL_DONE),
        "blocks": [section_block(mrkdwn)],
    }


# -- escalating and reassigning --------------------------------------------------------------


def escalate_modal(review: ReviewRequest, next_approvers: tuple[str, ...], *,
                   pick: bool = False) -> dict[str, Any]:
    """Asks why a review should go to its next level now (the reason is required); with
    ``pick`` (past its last level, no SIGNOFF_ESCALATE_TO) also to whom."""
    number = review.level + 2
    title = escape_mrkdwn(decision_line(review))
    who = ", ".join(mention_approver(a) for a in next_approvers[:MAX_APPROVERS_SHOWN])
    prompt = (texts.escalate_pick_prompt(title) if pick
              else texts.escalate_prompt(title, number, max(review.levels, number), who))
    reason = {"type": "input", "block_id": REASON_BLOCK,
              "label": plain_text(texts.ESCALATE_REASON_LABEL),
              "hint": plain_text(texts.ESCALATE_REASON_HINT),
              "element": {"type": "plain_text_input", "action_id": INPUT_ACTION,
                          "multiline": True, "max_length": REASON_LIMIT}}
    view = _action_modal(review, CALLBACK_ESCALATE, texts.ESCALATE_TITLE, texts.ESCALATE,
                         prompt, reason, with_level=True)
    if pick:
        view["blocks"].insert(1, {"type": "input", "block_id": APPROVER_BLOCK,
                                  "label": plain_text(texts.ESCALATE_PICK_LABEL),
                                  "element": {"type": "users_select",
                                              "action_id": INPUT_ACTION}})
    return view


def reassign_modal(review: ReviewRequest) -> dict[str, Any]:
    """Asks who else should decide a review, at its current level."""
    prompt = texts.reassign_prompt(escape_mrkdwn(decision_line(review)))
    picker = {"type": "input", "block_id": APPROVER_BLOCK,
              "label": plain_text(texts.REASSIGN_LABEL),
              "element": {"type": "users_select", "action_id": INPUT_ACTION}}
    return _action_modal(review, CALLBACK_REASSIGN, texts.REASSIGN_TITLE, texts.REASSIGN_SUBMIT,
                         prompt, picker)


def _action_modal(review: ReviewRequest, callback_id: str, title: str, submit: str,
                  prompt: str, field: dict[str, Any], *, with_level: bool = False
                  ) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": ReviewRef.of(review, with_level=with_level).encode(),
        "title": plain_text(title),
        "submit": plain_text(submit),
        "close": plain_text(texts.MODAL_CLOSE),
        "blocks": [section_block(prompt), field],
    }


def thread_note(mrkdwn: str) -> dict[str, Any]:
    """A short message (a thread reply, a reminder DM) from one of :mod:`bot.texts`'s sentences."""
    text = truncate_mrkdwn(mrkdwn, SECTION_LIMIT)
    return {"text": text, "blocks": [section_block(text)]}
