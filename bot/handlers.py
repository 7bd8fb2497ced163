"""What happens when a reviewer clicks a review's buttons or submits its modal.

Each listener acks first and then does only Redis work (read the review, check
who may decide, record the decision through the engine) plus, for a modal, the
``views.open`` that must use the click's trigger_id within 3 seconds. Anything
else said to the reviewer (an ephemeral refusal, "already decided by …") and the
rewrite of the review message go through RQ jobs on the ``slack`` queue.

A modal's answer is checked before the ack, because its errors travel in the
ack (``response_action: errors``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rq import Queue
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import texts
from bot.blocks import (
    ephemeral_already_decided,
    ephemeral_not_allowed,
    ephemeral_text,
    notice_modal,
)
from bot.delivery import closed_from_state, load_delivery, new_delivery
from bot.directory import Directory
from bot.eligibility import refusal
from bot.forms import (
    ReviewRef,
    modal_for,
    only_decision_required,
    validation_errors,
    values_from_state,
)
from bot.jobs import enqueue_reply
from bot.mrkdwn import truncate_plain
from engine.errors import AlreadyDecided, ExecutionNotFound, InputInvalid, NotWaiting
from engine.notify import Actor, ReviewRequest
from engine.service import Engine

log = logging.getLogger(__name__)

CALLBACK_SUBMIT = "signoff.submit"
MAX_ERROR_LENGTH = 150

Ack = Callable[..., Any]


@dataclass(frozen=True)
class Reviewer:
    """Who clicked or submitted, and where a reply to them goes."""

    user_id: str
    username: str
    team_id: str | None
    channel: str | None
    message_ts: str | None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Reviewer:
        user = body.get("user") or {}
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        return cls(user_id=str(user.get("id") or ""),
                   username=str(user.get("username") or user.get("name") or ""),
                   team_id=(body.get("team") or {}).get("id") or user.get("team_id"),
                   channel=channel, message_ts=container.get("message_ts"))


class ReviewListeners:
    """The Bolt listeners for review buttons and modals, over one engine."""

    def __init__(self, engine: Engine, directory: Directory, replies: Queue) -> None:
        self.engine = engine
        self.directory = directory
        self.replies = replies

    # -- buttons -------------------------------------------------------------------------------

    def approve(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        self._decide(body, client, approved=True)

    def deny(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        self._decide(body, client, approved=False)

    def respond(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        found = self._clicked_review(body)
        if found is None:
            return
        reviewer, review = found
        if self._refused(reviewer, review):
            return
        self._open_modal(client, body, review, None)

    def escalate(self, ack: Ack, body: dict[str, Any]) -> None:
        ack()
        found = self._clicked_review(body)
        if found is None:
            return
        reviewer, review = found
        levels = review.options.get("escalation")
        # Acting on escalation levels arrives with the SLA feature; say so rather than pretend.
        text = texts.ESCALATION_NOT_AVAILABLE if levels else texts.ESCALATION_NOT_CONFIGURED
        self._reply(reviewer, ephemeral_text(text))

    def _decide(self, body: dict[str, Any], client: WebClient, *, approved: bool) -> None:
        found = self._clicked_review(body)
        if found is None:
            return
        reviewer, review = found
        if self._refused(reviewer, review):
            return
        if not only_decision_required(review):
            self._open_modal(client, body, review, approved)
            return
        try:
            self.engine.resume(review.execution_id, {review.decision_field: approved},
                               self._actor(reviewer), step=review.step)
        except (AlreadyDecided, NotWaiting, ExecutionNotFound):
            self._reply_closed(reviewer, review.execution_id, review.step)
        except InputInvalid:
            # The schema wants more than the decision after all: let the modal ask for it.
            self._open_modal(client, body, review, approved)

    def _clicked_review(self, body: Mapping[str, Any]) -> tuple[Reviewer, ReviewRequest] | None:
        """The reviewer and the review they clicked, or None after telling them it is closed."""
        reviewer = Reviewer.from_body(body)
        try:
            ref = ReviewRef.decode(str((body.get("actions") or [{}])[0].get("value") or ""))
        except ValueError:
            log.warning("a click on something that is not a Signoff review: %s",
                        body.get("actions"))
            return None
        review = self._waiting_review(ref)
        if review is not None and reviewer.message_ts is not None:
            delivery = load_delivery(self.engine, ref.execution_id, ref.step)
            # A message of an earlier instance of the same step (inside foreach) is stale too.
            if (delivery is not None and delivery.same_review(review)
                    and reviewer.message_ts not in {p.ts for p in delivery.posts}):
                review = None
        if review is None:
            self._reply_closed(reviewer, ref.execution_id, ref.step)
            return None
        return reviewer, review

    def _open_modal(self, client: WebClient, body: Mapping[str, Any], review: ReviewRequest,
                    approved: bool | None) -> None:
        view = modal_for(review, preset_decision=approved, callback_id=CALLBACK_SUBMIT)
        try:
            client.views_open(trigger_id=body["trigger_id"], view=view)
        except SlackApiError as exc:
            log.warning("views.open for %s failed: %s", review.execution_id,
                        exc.response.get("error"))

    # -- the modal -----------------------------------------------------------------------------

    def submit(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        reviewer = Reviewer.from_body(body)
        try:
            ref = ReviewRef.decode(str(view.get("private_metadata") or ""))
        except ValueError:
            ack()
            return
        review = self._waiting_review(ref)
        if review is None:
            ack(response_action="update", view=notice_modal(
                self._closed_text(ref.execution_id, ref.step)))
            return
        answer = values_from_state(review.schema, (view.get("state") or {}).get("values") or {})
        errors = validation_errors(review.schema, answer)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        reason = self._refusal(reviewer.user_id, review)
        if reason is not None:
            self.engine.record_refusal(review.execution_id, self._actor(reviewer), reason)
            ack(response_action="update",
                view=notice_modal(ephemeral_not_allowed(reason)["text"]))
            return
        try:
            self.engine.resume(review.execution_id, answer, self._actor(reviewer),
                               step=review.step)
        except (AlreadyDecided, NotWaiting, ExecutionNotFound):
            ack(response_action="update", view=notice_modal(
                self._closed_text(ref.execution_id, ref.step)))
        except InputInvalid as exc:
            ack(response_action="errors", errors=_inline_errors(review, exc.violations))
        else:
            ack()

    # -- who may decide ------------------------------------------------------------------------

    def _refused(self, reviewer: Reviewer, review: ReviewRequest) -> bool:
        reason = self._refusal(reviewer.user_id, review)
        if reason is None:
            return False
        self.engine.record_refusal(review.execution_id, self._actor(reviewer), reason)
        self._reply(reviewer, ephemeral_not_allowed(reason))
        return True

    def _refusal(self, user_id: str, review: ReviewRequest) -> str | None:
        delivery = load_delivery(self.engine, review.execution_id, review.step)
        if delivery is None or not delivery.same_review(review):
            # Not recorded yet (the record is written right after each post): resolve as
            # the post job does, from the same cache.
            delivery = new_delivery(review, self.directory)
        return refusal(user_id, approvers=delivery.approvers, restricted=delivery.restricted,
                       requester=delivery.requester,
                       allow_self_approval=review.allow_self_approval)

    def _actor(self, reviewer: Reviewer) -> Actor:
        name = self.directory.display_name(reviewer.user_id, fallback=reviewer.username)
        return Actor(id=reviewer.user_id, name=name, source="slack", team=reviewer.team_id)

    # -- replies -------------------------------------------------------------------------------

    def _waiting_review(self, ref: ReviewRef) -> ReviewRequest | None:
        try:
            review = self.engine.review(ref.execution_id)
        except ExecutionNotFound:
            return None
        return review if review is not None and review.step == ref.step else None

    def _closed_text(self, execution_id: str, step: str) -> str:
        try:
            state = self.engine.get(execution_id)
        except ExecutionNotFound:
            return texts.REVIEW_GONE
        closed = closed_from_state(self.engine, state, step)
        if closed is None:
            return texts.REVIEW_GONE
        delivery = load_delivery(self.engine, execution_id, step)
        field = str((delivery.review if delivery else {}).get("decision_field") or "approved")
        return str(ephemeral_already_decided(closed, decision_field=field)["text"])

    def _reply_closed(self, reviewer: Reviewer, execution_id: str, step: str) -> None:
        self._reply(reviewer, ephemeral_text(self._closed_text(execution_id, step)))

    def _reply(self, reviewer: Reviewer, message: Mapping[str, Any]) -> None:
        if reviewer.channel is None:
            log.warning("no channel to answer %s in", reviewer.user_id)
            return
        enqueue_reply(self.replies, reviewer.channel, reviewer.user_id, message)


def _inline_errors(review: ReviewRequest, violations: list[dict[str, str]]) -> dict[str, str]:
    """The engine's schema violations as ``{block_id: message}`` for the modal."""
    fields = [str(block["block_id"]) for block in modal_for(review, preset_decision=None)["blocks"]
              if block.get("type") == "input"]
    errors: dict[str, str] = {}
    for violation in violations:
        name = violation["path"].split("/", 1)[0]
        block = name if name in fields else (fields[0] if fields else None)
        if block is not None:
            errors.setdefault(block, truncate_plain(violation["message"], MAX_ERROR_LENGTH))
    return errors or ({fields[0]: texts.ERROR_INVALID} if fields else {})
