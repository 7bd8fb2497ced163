"""Batch review: decide several waiting reviews of one workflow step together.

*Decide several* (under ``/approvals`` and on the Home tab) opens a modal listing the
viewer's one-click reviews of that step as checkboxes, with Approve or Deny for the
ones selected. Each is decided on its own through :meth:`engine.run.engine.Engine.resume`,
so it gets its own decision, its own ``step.decided`` audit event and its own run
continuing; those that cannot be decided (someone decided first, the viewer may not
decide it, it needs more than a decision) are reported one by one in the modal that
replaces the form. The modal is answered in the submission's ack, as Slack wants.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import texts
from bot.block_kit import SECTION_LIMIT, context_block, plain_text, section_block
from bot.blocks import ephemeral_text, notice_modal
from bot.delivery import closed_review_text
from bot.directory import Directory
from bot.forms import only_decision_required
from bot.handlers import Reviewer
from bot.mrkdwn import escape_mrkdwn, truncate_mrkdwn, truncate_plain
from bot.outbox import Outbox
from bot.overview import Overview, PendingItem, parse_group
from bot.ratelimit import limited_for
from engine.errors import (
    ActorNotAllowed,
    AlreadyDecided,
    ExecutionNotFound,
    InputInvalid,
    NotWaiting,
)
from engine.notify import Actor
from engine.run.engine import Engine

log = logging.getLogger(__name__)

CALLBACK_BATCH = "signoff.batch"
BLOCK_DECISION = "signoff.batch.decision"
ACTION_SELECT = "select"
ACTION_DECISION = "decision"
BATCH_LIMIT = 50  # reviews in one modal: five groups of ten checkboxes
SCAN_LIMIT = 200  # the viewer's oldest pending reviews searched for the step's
CHOICES_PER_GROUP = 10  # Slack's limit for one checkboxes element

Ack = Callable[..., Any]
Republish = Callable[[WebClient, str, str], None]  # (client, user id, where the batch began)


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one selected review."""

    execution_id: str
    recorded: bool
    line: str  # mrkdwn, for the results modal


class BatchReview:
    """The *Decide several* button and its modal, over one engine."""

    def __init__(self, engine: Engine, directory: Directory, overview: Overview,
                 republish: Republish | None = None) -> None:
        self.engine = engine
        self.directory = directory
        self.overview = overview
        self.republish = republish

    # -- the button: open the modal -------------------------------------------------------------

    def open(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        group = parse_group(str((body.get("actions") or [{}])[0].get("value") or ""))
        if group is None:
            return
        user_id = str((body.get("user") or {}).get("id") or "")
        reviews, _ = self.engine.pending_for(user_id, limit=SCAN_LIMIT)
        same_step = [r for r in reviews
                     if (r.workflow, r.step) == (group["workflow"], group["step"])]
        items = [i for i in self.overview.items(user_id, same_step, links=False) if i.decidable]
        if items:
            view = batch_modal(items[:BATCH_LIMIT], group, more=len(items) - BATCH_LIMIT,
                               now=datetime.now(UTC))
        else:
            view = notice_modal(texts.BATCH_NOTHING_LEFT)
        try:
            client.views_open(trigger_id=body["trigger_id"], view=view)
        except SlackApiError as exc:
            log.warning("views.open for a batch of %s failed: %s", group["step"],
                        exc.response.get("error"))
            busy = limited_for(exc)  # Slack's rate limit: the trigger expires before it ends
            clicker = Reviewer.from_body(body)
            if busy is not None and clicker.channel is not None:  # not from the Home tab
                Outbox(self.engine.scheduler).reply(clicker.channel, clicker.user_id,
                                                    ephemeral_text(texts.slack_busy(busy)))

    # -- the modal: decide each -----------------------------------------------------------------

    def submit(self, ack: Ack, body: dict[str, Any], view: dict[str, Any],
               client: WebClient) -> None:
        try:
            group = json.loads(str(view.get("private_metadata") or ""))
            workflow, step = str(group["workflow"]), str(group["step"])
        except (ValueError, TypeError, KeyError):
            ack()
            return
        values = (view.get("state") or {}).get("values") or {}
        selected = selected_reviews(values)
        decision = ((values.get(BLOCK_DECISION) or {}).get(ACTION_DECISION) or {}).get(
            "selected_option") or {}
        if not selected:
            first = next((b["block_id"] for b in view.get("blocks", [])
                          if b.get("type") == "input" and b.get("block_id") != BLOCK_DECISION),
                         BLOCK_DECISION)
            ack(response_action="errors", errors={first: texts.BATCH_NONE_SELECTED})
            return
        actor = Reviewer.from_body(body).actor(self.directory)
        outcomes = self.decide(actor, selected, workflow, step,
                               approved=decision.get("value") == "approve")
        ack(response_action="update", view=results_modal(outcomes))
        if self.republish is not None:
            try:
                self.republish(client, actor.id, str(group.get("where") or "command"))
            except SlackApiError as exc:
                log.warning("could not refresh %s's Home tab: %s", actor.id,
                            exc.response.get("error"))

    def decide(self, actor: Actor, selected: Sequence[tuple[str, str]], workflow: str, step: str,
               *, approved: bool) -> list[BatchOutcome]:
        """Decide each selected ``(execution id, title)`` on its own; say what became of it."""
        outcomes = []
        for execution_id, title in dict.fromkeys(selected):
            outcomes.append(self._decide_one(actor, execution_id, escape_mrkdwn(title),
                                             workflow, step, approved))
        return outcomes

    def _decide_one(self, actor: Actor, execution_id: str, title: str, workflow: str, step: str,
                    approved: bool) -> BatchOutcome:
        def not_recorded(why: str) -> BatchOutcome:
            return BatchOutcome(execution_id, False, texts.batch_not_recorded(title, why))

        try:
            review = self.engine.review(execution_id)
        except ExecutionNotFound:
            return not_recorded(texts.REVIEW_GONE)
        if review is None or (review.workflow, review.step) != (workflow, step):
            return not_recorded(self._closed_text(execution_id, step))
        if not only_decision_required(review):
            return not_recorded(texts.ANSWER_IN_MESSAGE)
        # The engine decides who may (as for the review's own buttons) and audits a refusal.
        try:
            result = self.engine.resume(execution_id, {review.decision_field: approved}, actor,
                                        step=review.step)
        except ActorNotAllowed as exc:
            return not_recorded(texts.not_allowed(escape_mrkdwn(texts.refusal_text(exc.reason))))
        except (AlreadyDecided, NotWaiting, ExecutionNotFound):
            return not_recorded(self._closed_text(execution_id, step))
        except InputInvalid:
            return not_recorded(texts.ANSWER_IN_MESSAGE)
        if not result.decided:
            return BatchOutcome(execution_id, True, texts.batch_approval_counted(
                title, result.approvals, result.required))
        label = texts.outcome_label("approved" if approved else "denied")
        return BatchOutcome(execution_id, True, texts.batch_recorded(label, title))

    def _closed_text(self, execution_id: str, step: str) -> str:
        return closed_review_text(self.engine, execution_id, step)


def selected_reviews(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(execution id, title shown)`` for every ticked checkbox, in the order shown."""
    found = []
    for block_id, actions in values.items():
        if block_id == BLOCK_DECISION or not isinstance(actions, Mapping):
            continue
        for option in (actions.get(ACTION_SELECT) or {}).get("selected_options") or ():
            found.append((str(option.get("value")),
                          str((option.get("text") or {}).get("text") or option.get("value"))))
    return found


# -- Block Kit -------------------------------------------------------------------------------------

def batch_modal(items: Sequence[PendingItem], group: Mapping[str, str], *, more: int,
                now: datetime) -> dict[str, Any]:
    """Checkboxes for ``items`` (one step's reviews), ten to a group, and Approve or Deny."""
    workflow, step = group["workflow"], group["step"]
    blocks: list[dict[str, Any]] = [section_block(texts.batch_intro(
        len(items), escape_mrkdwn(step), escape_mrkdwn(workflow)))]
    if more > 0:
        blocks.append(context_block(texts.batch_more_waiting(more)))
    for start in range(0, len(items), CHOICES_PER_GROUP):
        chunk = items[start:start + CHOICES_PER_GROUP]
        blocks.append({
            "type": "input", "block_id": f"signoff.batch.{start // CHOICES_PER_GROUP}",
            "optional": True,
            "label": plain_text(texts.batch_group(start + 1, start + len(chunk))),
            "element": {"type": "checkboxes", "action_id": ACTION_SELECT,
                        "options": [_option(item, now) for item in chunk]},
        })
    blocks.append({
        "type": "input", "block_id": BLOCK_DECISION, "label": plain_text(texts.BATCH_DECISION),
        "element": {"type": "radio_buttons", "action_id": ACTION_DECISION, "options": [
            {"text": plain_text(texts.BATCH_APPROVE), "value": "approve"},
            {"text": plain_text(texts.BATCH_DENY), "value": "deny"}]},
    })
    metadata = json.dumps({"workflow": workflow, "step": step,
                           "where": group.get("where") or "command"}, separators=(",", ":"))
    return {"type": "modal", "callback_id": CALLBACK_BATCH, "private_metadata": metadata,
            "title": plain_text(texts.BATCH_TITLE), "submit": plain_text(texts.BATCH_SUBMIT),
            "close": plain_text(texts.MODAL_CLOSE), "blocks": blocks}


def _option(item: PendingItem, now: datetime) -> dict[str, Any]:
    review = item.review
    waited = max(0, int((now - review.created_at).total_seconds() * 1000))
    facts = [texts.waiting_for(waited)]
    if review.levels > 1:
        facts.append(texts.level_of(review.level, review.levels))
    return {"text": plain_text(truncate_plain(item.title, 75)),
            "description": plain_text(truncate_plain(" · ".join(facts), 75)),
            "value": review.execution_id}


def results_modal(outcomes: Sequence[BatchOutcome]) -> dict[str, Any]:
    """What the form turns into: how many were recorded, then each review's line."""
    recorded = sum(1 for o in outcomes if o.recorded)
    blocks = [section_block(f"*{texts.batch_summary(recorded, len(outcomes) - recorded)}*")]
    chunk: list[str] = []
    for outcome in outcomes:
        line = truncate_mrkdwn(outcome.line, 1000)
        if chunk and sum(len(c) + 1 for c in chunk) + len(line) > SECTION_LIMIT:
            blocks.append(section_block("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append(section_block("\n".join(chunk)))
    return {"type": "modal", "title": plain_text(texts.BATCH_DONE_TITLE),
            "close": plain_text(texts.MODAL_DONE), "blocks": blocks}


