"""What happens when a reviewer clicks a review's buttons or submits one of its modals.

Each listener acks first and then does only Redis work (read the review, ask the
engine who may decide, record the decision through the engine) plus, for a modal,
the ``views.open`` that must use the click's trigger_id within 3 seconds. Anything
else said to the reviewer (an ephemeral refusal, "already decided by …") and the
rewrite of the review message are jobs on the ``slack`` queue (:mod:`bot.outbox`).

A modal's answer is checked before the ack, because its errors travel in the
ack (``response_action: errors``). Escalate… and Reassign… open small modals of
their own (a reason; a person), allowed to the same people as deciding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import texts
from bot.blocks import (
    ACTION_APPROVE,
    ACTION_DENY,
    APPROVER_BLOCK,
    INPUT_ACTION,
    REASON_BLOCK,
    ephemeral_not_allowed,
    ephemeral_text,
    escalate_modal,
    notice_modal,
    reassign_modal,
)
from bot.delivery import (
    Closing,
    Delivery,
    Left,
    annotation_key,
    closed_review_text,
    load_delivery,
    refusal,
)
from bot.directory import Directory
from bot.forms import (
    ReviewRef,
    modal_for,
    only_decision_required,
    validation_errors,
    values_from_state,
)
from bot.mrkdwn import truncate_plain
from bot.outbox import Outbox
from bot.ratelimit import limited_for
from engine.errors import (
    ActorNotAllowed,
    AlreadyDecided,
    AlreadyEscalated,
    CannotEscalate,
    ExecutionNotFound,
    InputInvalid,
    NotWaiting,
)
from engine.notify import Actor, ReviewRequest
from engine.run import escalation
from engine.run.authority import Refusal
from engine.run.buffered_writes import Deferred
from engine.run.engine import Engine
from engine.state.execution import ExecutionState, ExecutionStatus, review_request
from engine.state.inbox import Running
from engine.state.store import Alongside, annotated

log = logging.getLogger(__name__)

CALLBACK_SUBMIT = "signoff.submit"
DECIDE_CLICK = "bot.jobs.decide_click"  # records a one-click decision, handed in to a worker
CLICK_LOST = "bot.jobs.click_lost"  # when every try of DECIDE_CLICK failed: audit, tell them
MAX_ERROR_LENGTH = 150
# Reassign refusals about the reassigner, not the person chosen: said in place of the modal.
_NOT_ABOUT_CHOSEN = {Refusal.NOT_AN_APPROVER, Refusal.SELF_APPROVAL, Refusal.HANDED_OFF,
                     Refusal.REQUESTER_UNVERIFIABLE, Refusal.ALREADY_VOTED,
                     Refusal.ANYONE_MAY_DECIDE}
_ABOUT_CHOSEN = {Refusal.REASSIGN_TO_REQUESTER, Refusal.ALREADY_AN_APPROVER}

Ack = Callable[..., Any]


@dataclass(frozen=True)
class Reviewer:
    """Who clicked or submitted, and where a reply to them goes."""

    user_id: str
    username: str
    team_id: str | None
    channel: str | None
    message_ts: str | None
    ephemeral: bool = False  # clicked in an ephemeral list (/approvals), not a review message

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Reviewer:
        user = body.get("user") or {}
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        return cls(user_id=str(user.get("id") or ""),
                   username=str(user.get("username") or user.get("name") or ""),
                   team_id=(body.get("team") or {}).get("id") or user.get("team_id"),
                   channel=channel, message_ts=container.get("message_ts"),
                   ephemeral=bool(container.get("is_ephemeral")))

    def actor(self, directory: Directory, *, ask_slack: bool = True) -> Actor:
        """Who this is in the audit trail, by the name Slack shows for them (with
        ``ask_slack`` False, only if it is cached: else the username the signed request
        carries, and Slack is not called)."""
        if ask_slack:
            name = directory.display_name(self.user_id, fallback=self.username)
        else:
            name = directory.cached_name(self.user_id) or self.username
        return Actor(id=self.user_id, name=name, source="slack", team=self.team_id)

    def to_json(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict deep-copies, a tenth of a click's short path.
        return {"user_id": self.user_id, "username": self.username, "team_id": self.team_id,
                "channel": self.channel, "message_ts": self.message_ts,
                "ephemeral": self.ephemeral}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reviewer:
        return cls(**data)


class ReviewListeners:
    """The Bolt listeners for review buttons and modals, over one engine."""

    def __init__(self, engine: Engine, directory: Directory,
                 proceed: Callable[[Deferred], object] | None = None,
                 leaving: Callable[[Delivery, str, Mapping[str, bytes]], Alongside] | None = None
                 ) -> None:
        self.engine = engine
        self.directory = directory
        self.outbox = Outbox(engine.scheduler)
        # In a worker, a decided run continues right here, its first write carrying the
        # decision (engine.run.runner.Runner.continue_decided), instead of in another job;
        # the message is then rewritten by the same drain when the click came alone, else
        # by the slack queue after the decisions waiting (engine.notify.CarriesClosing).
        self.proceed = proceed
        # With a click that came alone, the review's leave (bot.delivery.Deliverer.leaving)
        # goes with the decision's write, in its round trip; its rewrite then only writes.
        self.leaving = leaving

    # -- buttons -------------------------------------------------------------------------------

    def approve(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        self._click(body, client, approved=True)

    def deny(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        self._click(body, client, approved=False)

    def _click(self, body: dict[str, Any], client: WebClient, *, approved: bool) -> None:
        """A one-click decision goes to a worker (the answer to Slack is only the ack, so
        it leaves at once); a click that opens the form needs its trigger_id here."""
        ref = _ref_of(body)
        if ref is not None and ref.one_click:
            hand_to_worker(self.engine, body, ref, approved=approved)
            return
        self._decide(body, client, approved=approved)

    def decide_click(self, reviewer: Reviewer, ref: ReviewRef, *,
                     approved: bool, task: Running | None = None) -> None:
        """A one-click decision, in a worker: check who clicked what, record it, and
        continue the run here (the decision is written by the run's next write). The
        review, its delivery record and the clicker's cached name come in one round trip,
        and the engine decides on that read (the write is guarded: on any change since, it
        is tried again on a fresh read).

        Slack has had its answer, so the click must not be lost to Slack being down: the
        audit names the clicker by the signed click (or the name cached), and their display
        name is looked up afterwards, by a job. Slack is called first only to learn who may
        decide, when that is not cached; should it fail, this raises and the inbox tries the
        click again (see engine.state.inbox), rather than deciding without the check.
        ``task``: the inbox task carrying this click, acknowledged by the commit that decides
        (its drain then does not)."""
        found = self._review_clicked(reviewer, ref, task)
        if found is None:
            return None
        review, stored, state, cached, trail, notes = found
        alongside = None
        if (task is not None and task.inbox and self.proceed is not None
                and self.leaving is not None and stored is not None
                and stored.same_review(review)):
            alongside = self.leaving(stored, state.workflow, notes)
        actor = Actor(id=reviewer.user_id, name=cached or reviewer.username, source="slack",
                      team=reviewer.team_id)  # as reviewer.actor(ask_slack=False), one read
        try:  # the engine decides who may, and audits a refusal; the read is checked again
            result = self.engine.resume(review.execution_id, {review.decision_field: approved},
                                        actor, step=review.step, read=state, acknowledge=task,
                                        then=self.proceed, alongside=alongside)
        except ActorNotAllowed as exc:
            self._reply(reviewer, _refusal_message(review, exc))
            return None
        except (AlreadyDecided, NotWaiting, ExecutionNotFound):
            self._reply_closed(reviewer, review.execution_id, review.step)
            return None
        except InputInvalid:  # the schema changed its mind: the form must ask
            self._reply(reviewer, ephemeral_text(texts.NEEDS_FORM))
            return None
        if result.carried and result.continued is not None and task is not None:
            # The rewrite of the review's messages runs next in this drain: what it would
            # read, as the run was left (the delivery record as the decision's write left
            # it), and the trail.
            waiting = state.waiting  # as read, its message found in the trail
            shown = ((waiting.message_sha256, waiting.message)
                     if waiting is not None and waiting.complete else None)
            # The leave sent with the write is for the posts read before it; the rewrite
            # leaves again should a post have been recorded in between (Deliverer.close).
            left = result.alongside if isinstance(result.alongside, Left) else None
            task.hand_on = Closing(annotated(result.continued, annotation_key(review.step),
                                             result.notes, trail, message=shown), left)
        if cached is None:
            self.outbox.learn_name(reviewer.user_id)  # for the next audit entry and /approvals
        return None

    def respond(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        found = self._clicked_by_decider(body)
        if found is None:
            return
        _, review = found
        self._open_modal(client, body, review, None)

    def escalate(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        found = self._clicked_by_decider(body, record=False)
        if found is None:
            return
        reviewer, review = found
        levels = escalation.levels(review.options)
        if review.level + 1 < len(levels):
            view = escalate_modal(review, levels[review.level + 1].approvers)
        elif self.engine.escalate_to:  # past the levels: the workspace's default target, once
            if escalation.beyond_levels(review.options, self.engine.escalate_to, None) is None:
                self._reply(reviewer, ephemeral_text(texts.NO_FURTHER_LEVEL))
                return
            view = escalate_modal(review, self.engine.escalate_to)
        else:  # nobody configured: the reviewer chooses whom
            view = escalate_modal(review, (), pick=True)
        self._open_view(client, body, review, view)

    def reassign(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        found = self._clicked_review(body)
        if found is None:
            return
        reviewer, review, _, _ = found
        if not review.approvers:
            self._reply(reviewer, ephemeral_text(texts.REASSIGN_ANYONE))
            return
        if self._refused(reviewer, review, record=False):
            return
        if self._counted(reviewer, review):  # who voted keeps their seat
            self._reply(reviewer, ephemeral_not_allowed(texts.ALREADY_VOTED))
            return
        self._open_view(client, body, review, reassign_modal(review))

    def _decide(self, body: dict[str, Any], client: WebClient, *, approved: bool) -> None:
        found = self._clicked_by_decider(body)
        if found is None:
            return
        reviewer, review = found
        if approved and self._already_counted(reviewer, review):
            return
        if not only_decision_required(review):
            self._open_modal(client, body, review, approved)
            return
        try:
            self.engine.resume(review.execution_id, {review.decision_field: approved},
                               reviewer.actor(self.directory), step=review.step)
        except ActorNotAllowed as exc:
            self._reply(reviewer, _refusal_message(review, exc))
        except (AlreadyDecided, NotWaiting, ExecutionNotFound):
            self._reply_closed(reviewer, review.execution_id, review.step)
        except InputInvalid:
            # The schema wants more than the decision after all: let the modal ask for it.
            self._open_modal(client, body, review, approved)

    def _clicked_review(self, body: Mapping[str, Any]
                        ) -> tuple[Reviewer, ReviewRequest, Delivery | None,
                                   ExecutionState] | None:
        """The reviewer, the review they clicked, its delivery record (None before it is
        written) and the execution as read, or None after telling them the review is
        closed."""
        ref = _ref_of(body)
        if ref is None:
            return None
        reviewer = Reviewer.from_body(body)
        found = self._review_clicked(reviewer, ref)
        return (reviewer, *found[:3]) if found is not None else None

    def _clicked_by_decider(self, body: Mapping[str, Any], *, record: bool = True
                            ) -> tuple[Reviewer, ReviewRequest] | None:
        """The reviewer and the review they clicked, or None after telling them it is closed
        or that they may not act on it (``record``: the audit trail keeps the refusal)."""
        found = self._clicked_review(body)
        if found is None:
            return None
        reviewer, review, _, _ = found
        if self._refused(reviewer, review, record=record):
            return None
        return reviewer, review

    def _review_clicked(self, reviewer: Reviewer, ref: ReviewRef, task: Running | None = None
                        ) -> tuple[ReviewRequest, Delivery | None, ExecutionState,
                                   str | None, list[bytes], Mapping[str, bytes]] | None:
        """The review clicked, its delivery record, the execution, the clicker's cached
        name (:meth:`Directory.cached_name`), the audit trail and the run's annotations as
        stored, from one round trip, or none: read as the click's inbox task was taken
        (``task``, handed in with :func:`click_reads`)."""
        name_key = self.directory.name_key(reviewer.user_id)
        trail: list[bytes] = []
        notes: Mapping[str, bytes] = {}
        try:
            read = self.engine.get_annotated(ref.execution_id, annotation_key(ref.step),
                                             values=[name_key], read=task)
            state, note, trail, notes = read.state, read.annotation, read.trail, read.notes
            cached = self.directory.name_from(read.values[0])
        except ExecutionNotFound:
            state, note, cached = None, None, None
        review = self._review_of(state, ref) if state is not None else None
        stored = None
        if review is not None:
            stored = (Delivery.from_json(note, ref.execution_id, ref.step)
                      if isinstance(note, Mapping) else None)
            # A message of an earlier instance of the same step (inside foreach) is stale too.
            if (stored is not None and stored.same_review(review)
                    and reviewer.message_ts is not None and not reviewer.ephemeral
                    and reviewer.message_ts not in {p.ts for p in stored.posts}):
                review = None
        if review is None or state is None:
            self._reply_closed(reviewer, ref.execution_id, ref.step, ref.since)
            return None
        return review, stored, state, cached, trail, notes

    def _open_modal(self, client: WebClient, body: Mapping[str, Any], review: ReviewRequest,
                    approved: bool | None) -> None:
        view = modal_for(review, preset_decision=approved, callback_id=CALLBACK_SUBMIT)
        self._open_view(client, body, review, view)

    def _open_view(self, client: WebClient, body: Mapping[str, Any], review: ReviewRequest,
                   view: dict[str, Any]) -> None:
        try:
            client.views_open(trigger_id=body["trigger_id"], view=view)
        except SlackApiError as exc:
            log.warning("views.open for %s failed: %s", review.execution_id,
                        exc.response.get("error"))
            busy = limited_for(exc)  # Slack's rate limit: the trigger expires before it ends
            if busy is not None:
                self._reply(Reviewer.from_body(body), ephemeral_text(texts.slack_busy(busy)))

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
            self._ack_closed(ack, ref.execution_id, ref.step, ref.since)
            return
        answer = values_from_state(review.schema, (view.get("state") or {}).get("values") or {})
        errors = validation_errors(review.schema, answer)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        if answer.get(review.decision_field) is True and self._counted(reviewer, review):
            ack(response_action="update", view=notice_modal(texts.approval_already_counted(
                len(review.approvals), review.approvals_required)))
            return
        try:  # the engine decides who may, and audits a refusal
            self.engine.resume(review.execution_id, answer, reviewer.actor(self.directory),
                               step=review.step)
        except ActorNotAllowed as exc:
            ack(response_action="update", view=notice_modal(
                ephemeral_not_allowed(texts.refusal_text(exc.reason))["text"]))
        except (AlreadyDecided, NotWaiting, ExecutionNotFound):
            self._ack_closed(ack, ref.execution_id, ref.step, ref.since)
        except InputInvalid as exc:
            ack(response_action="errors", errors=_inline_errors(review, exc.violations))
        else:
            ack()

    # -- the Escalate and Reassign modals ------------------------------------------------------

    def submit_escalation(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        found = self._submitted_review(ack, body, view)
        if found is None:
            return
        reviewer, review = found
        picks = any(b.get("block_id") == APPROVER_BLOCK for b in view.get("blocks") or ())
        chosen = None
        if picks:
            chosen = _required_input(ack, view, APPROVER_BLOCK, "selected_user",
                                     texts.ERROR_REQUIRED)
            if chosen is None:
                return
        reason = _required_input(ack, view, REASON_BLOCK, "value", texts.ERROR_REASON_REQUIRED)
        if reason is None:
            return
        opened_at = ReviewRef.decode(str(view.get("private_metadata") or "")).level
        try:
            self.engine.escalate(review.execution_id, reviewer.actor(self.directory), reason,
                                 step=review.step, from_level=opened_at, to=chosen)
        except ActorNotAllowed as exc:
            if picks and exc.reason in _ABOUT_CHOSEN:
                ack(response_action="errors",
                    errors={APPROVER_BLOCK: texts.refusal_text(exc.reason)})
            else:
                ack(response_action="update", view=notice_modal(
                    ephemeral_not_allowed(texts.refusal_text(exc.reason))["text"]))
        except AlreadyEscalated as exc:
            ack(response_action="errors", errors={
                REASON_BLOCK: texts.already_escalated(exc.level + 1, exc.by)})
        except CannotEscalate:
            ack(response_action="errors", errors={REASON_BLOCK: texts.NO_FURTHER_LEVEL})
        except (AlreadyDecided, NotWaiting, ExecutionNotFound):
            self._ack_closed(ack, review.execution_id, review.step)
        else:
            ack()

    def submit_reassignment(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        found = self._submitted_review(ack, body, view)
        if found is None:
            return
        reviewer, review = found
        chosen = _required_input(ack, view, APPROVER_BLOCK, "selected_user", texts.ERROR_REQUIRED)
        if chosen is None:
            return
        why = self.engine.reassign_refusal(review, reviewer.user_id, chosen)
        if why is not None and why not in _NOT_ABOUT_CHOSEN:
            ack(response_action="errors", errors={APPROVER_BLOCK: texts.REFUSALS[why]})
            return
        try:  # the engine decides (and audits a refusal of the reassigner themself)
            self.engine.reassign(review.execution_id, reviewer.actor(self.directory), chosen,
                                 step=review.step)
        except ActorNotAllowed as exc:
            ack(response_action="update", view=notice_modal(
                ephemeral_not_allowed(texts.refusal_text(exc.reason))["text"]))
        except (AlreadyDecided, NotWaiting, ExecutionNotFound):
            self._ack_closed(ack, review.execution_id, review.step)
        else:
            ack()

    def _submitted_review(self, ack: Ack, body: Mapping[str, Any], view: Mapping[str, Any]
                          ) -> tuple[Reviewer, ReviewRequest] | None:
        """Who submitted a modal and the review it is about; None after acking when the
        review has closed or the submitter may not act on it."""
        reviewer = Reviewer.from_body(body)
        try:
            ref = ReviewRef.decode(str(view.get("private_metadata") or ""))
        except ValueError:
            ack()
            return None
        review = self._waiting_review(ref)
        if review is None:
            self._ack_closed(ack, ref.execution_id, ref.step, ref.since)
            return None
        reason = self._refusal(reviewer.user_id, review)
        if reason is not None:
            ack(response_action="update",
                view=notice_modal(ephemeral_not_allowed(reason)["text"]))
            return None
        return reviewer, review

    # -- who may decide ------------------------------------------------------------------------

    def _refused(self, reviewer: Reviewer, review: ReviewRequest, *,
                 record: bool = True) -> bool:
        reason = self._refusal(reviewer.user_id, review)
        if reason is None:
            return False
        if record:  # the audit trail keeps refused decisions
            self.engine.record_refusal(review.execution_id, reviewer.actor(self.directory), reason)
        self._reply(reviewer, ephemeral_not_allowed(reason))
        return True

    def _refusal(self, user_id: str, review: ReviewRequest) -> str | None:
        return refusal(self.engine, review, user_id)

    def _stored(self, review: ReviewRequest) -> Delivery | None:
        return load_delivery(self.engine, review.execution_id, review.step)

    def _counted(self, reviewer: Reviewer, review: ReviewRequest) -> bool:
        return (review.approvals_required > 1
                and self.engine.vote_refusal(review, reviewer.user_id, True)
                is Refusal.ALREADY_VOTED)

    def _already_counted(self, reviewer: Reviewer, review: ReviewRequest) -> bool:
        """With a quorum, tell a repeat approver that their approval is counted once."""
        if not self._counted(reviewer, review):
            return False
        self._reply(reviewer, ephemeral_text(texts.approval_already_counted(
            len(review.approvals), review.approvals_required)))
        return True

    # -- replies -------------------------------------------------------------------------------

    def _waiting_review(self, ref: ReviewRef) -> ReviewRequest | None:
        try:
            state = self.engine.get(ref.execution_id)
        except ExecutionNotFound:
            return None
        return self._review_of(state, ref)

    @staticmethod
    def _review_of(state: ExecutionState, ref: ReviewRef) -> ReviewRequest | None:
        """The review ``state`` waits on, if it is the one ``ref`` refers to."""
        if state.status is not ExecutionStatus.WAITING_FOR_INPUT or state.waiting is None:
            return None
        review = review_request(state, state.waiting)
        return review if ref.refers_to(review) else None

    def _closed_text(self, execution_id: str, step: str, since: str | None = None) -> str:
        return closed_review_text(self.engine, execution_id, step, since)

    def _ack_closed(self, ack: Ack, execution_id: str, step: str,
                    since: str | None = None) -> None:
        """Answer a modal about a review that has closed: the modal says by whom and when."""
        ack(response_action="update",
            view=notice_modal(self._closed_text(execution_id, step, since)))

    def _reply_closed(self, reviewer: Reviewer, execution_id: str, step: str,
                      since: str | None = None) -> None:
        self._reply(reviewer, ephemeral_text(self._closed_text(execution_id, step, since)))

    def _reply(self, reviewer: Reviewer, message: Mapping[str, Any]) -> None:
        if reviewer.channel is None:
            log.warning("no channel to answer %s in", reviewer.user_id)
            return
        self.outbox.reply(reviewer.channel, reviewer.user_id, message)


def _refusal_message(review: ReviewRequest, exc: ActorNotAllowed) -> dict[str, Any]:
    """What a reviewer the engine refused is told."""
    if exc.reason == Refusal.ALREADY_VOTED:
        return ephemeral_text(texts.approval_already_counted(len(review.approvals),
                                                             review.approvals_required))
    return ephemeral_not_allowed(texts.refusal_text(exc.reason))


def hand_to_worker(engine: Engine, body: Mapping[str, Any], ref: ReviewRef, *,
                   approved: bool) -> None:
    """Hand a one-click decision to a worker (``bot.jobs.decide_click``, by the inbox)."""
    reviewer = Reviewer.from_body(body)
    engine.scheduler.hand_in(DECIDE_CLICK, reviewer.to_json(), ref.encode(), approved,
                             on_failure=CLICK_LOST, first=True,
                             reads=click_reads(ref, reviewer.user_id))


def click_reads(ref: ReviewRef, user_id: str) -> tuple[tuple[str, str], ...]:
    """What a one-click decision's worker reads first (the run, its trail, the clicker's
    cached name), for the inbox to read as it takes the task: its keys are named from the
    button's value and the signed user id, and the worker uses what was read only when they
    are the ones it would read itself (:meth:`Engine.get_annotated`)."""
    return Engine.annotated_reads(ref.execution_id, [Directory.name_key(user_id)])


def one_click_decision(body: Mapping[str, Any]) -> tuple[ReviewRef, bool] | None:
    """The review and the answer when ``body`` is a one-click Approve or Deny; else None."""
    if body.get("type") != "block_actions":
        return None
    actions = body.get("actions") or []
    if len(actions) != 1 or actions[0].get("action_id") not in (ACTION_APPROVE, ACTION_DENY):
        return None
    try:
        ref = ReviewRef.decode(str(actions[0].get("value") or ""))
    except ValueError:
        return None
    return (ref, actions[0]["action_id"] == ACTION_APPROVE) if ref.one_click else None


def _ref_of(body: Mapping[str, Any]) -> ReviewRef | None:
    action = (body.get("actions") or [{}])[0]
    value = action.get("value") or (action.get("selected_option") or {}).get("value")
    try:
        return ReviewRef.decode(str(value or ""))
    except ValueError:
        log.warning("a click on something that is not a Signoff review: %s", body.get("actions"))
        return None


def _required_input(ack: Ack, view: Mapping[str, Any], block_id: str, key: str,
                    missing: str) -> str | None:
    """A modal's answer in ``block_id`` (its state's ``key``), or None after acking with
    ``missing`` under the empty field."""
    values = (view.get("state") or {}).get("values") or {}
    state = (values.get(block_id) or {}).get(INPUT_ACTION)
    value = str((state if isinstance(state, Mapping) else {}).get(key) or "").strip()
    if not value:
        ack(response_action="errors", errors={block_id: missing})
        return None
    return value


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
