"""The engine's front door: start, inspect, resume, cancel and time out executions.

The HTTP API, the CLI, the bot and the RQ jobs all go through :class:`Engine`.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from engine.definition.inputs import input_problems
from engine.definition.loader import stored_workflow
from engine.definition.model import Workflow
from engine.errors import (
    AlreadyDecided,
    CannotEscalate,
    ExecutionNotFound,
    NotWaiting,
    WorkflowDisabled,
    WorkflowInputsInvalid,
)
from engine.notify import (
    SYSTEM_ESCALATION,
    SYSTEM_TIMEOUT,
    Actor,
    Notifier,
    NullNotifier,
    ReviewRequest,
)
from engine.run import authority, identity, timers
from engine.run.authority import Refusal
from engine.run.buffered_writes import Deferred
from engine.run.concurrency import (
    SYSTEM_CONCURRENCY,
    Concurrency,
    StartedRun,
    displacement_reason,
    group_of,
    policy_of,
)
from engine.run.identity import NamedPeople, People
from engine.run.reviews import ResumeResult, Reviews
from engine.run.timers import Scheduler
from engine.state import audit, keys
from engine.state.execution import (
    LEASE_MS,
    ExecutionState,
    ExecutionStatus,
    canonical,
    epoch_ms,
    iso,
    review_request,
    utcnow,
)
from engine.state.inbox import Running
from engine.state.indexes import ExecutionSummary
from engine.state.store import Alongside, Annotated, ReviewRow, Store
from engine.state.tokens import OPERATOR_PRINCIPAL


class Engine:
    def __init__(self, store: Store, scheduler: Scheduler, notifier: Notifier | None = None,
                 clock: Callable[[], datetime] = utcnow, lease_ms: int = LEASE_MS,
                 escalate_to: Sequence[str] = ()) -> None:
        self.store = store
        self.scheduler = scheduler
        self.notifier = notifier or NullNotifier()
        self.clock = clock
        self.lease_ms = lease_ms
        # Who is who, for the rules on who may act: people as written until a directory
        # (the bot's Slack one) is installed here.
        self.people: People = NamedPeople()
        self.reviews = Reviews(store, scheduler, self.notifier, lambda: self.clock(), lease_ms,
                               people=lambda: self.people, escalate_to=escalate_to)
        self.concurrency = Concurrency(store, scheduler, self.definition, lambda: self.clock(),
                                       lease_ms)
        self.reviews.ended = self.concurrency.ended  # a cancel or time-out gives its slot back

    # -- definitions -------------------------------------------------------------------------

    def definition(self, digest: str) -> Workflow:
        return stored_workflow(digest, lambda: self.store.definition_text(digest))

    # -- start -------------------------------------------------------------------------------

    def requester(self, raw: str, known: Collection[str] = ()) -> str:
        """``raw`` as a run's requester: a Slack user id, an e-mail address or an API
        token's principal, normalised (:func:`engine.run.identity.requester`);
        RequesterInvalid for anything else. ``known``: principals the caller vouches for
        (the calling token's own), so the tokens are read only for another one."""
        if identity.kind_of(raw) is not identity.Kind.PRINCIPAL or raw.strip() in known:
            return identity.requester(raw, known)  # no need to read the tokens
        principals = {token.acts_as for token in self.store.tokens()} | {OPERATOR_PRINCIPAL}
        return identity.requester(raw, principals)

    def run(self, workflow: Workflow, event: Any = None, *, requested_by: str | None = None,
            actor: Actor | None = None, principal: str | None = None) -> str:
        """Start an execution of ``workflow`` for ``event``; returns its id (:meth:`start`
        says more: whether ``settings.concurrency`` queued or skipped it)."""
        return self.start(workflow, event, requested_by=requested_by, actor=actor,
                          principal=principal).execution_id

    def start(self, workflow: Workflow, event: Any = None, *, requested_by: str | None = None,
              actor: Actor | None = None, principal: str | None = None) -> StartedRun:
        """Start an execution of ``workflow`` for ``event``: PENDING, or, where
        ``settings.concurrency`` limits its group, maybe QUEUED or SKIPPED (with why).

        ``requested_by`` is normalised (:meth:`requester`; RequesterInvalid when it names
        nobody); ``principal`` is the calling token's own, valid without a look-up.
        WorkflowInputsInvalid when the event's ``inputs`` name one the workflow does not
        declare, miss a required one, or give one a value of another type."""
        if not workflow.enabled:
            raise WorkflowDisabled(workflow.name)
        if requested_by is not None:
            requested_by = self.requester(requested_by, (principal,) if principal else ())
        problems = input_problems(workflow, event)
        if problems:
            raise WorkflowInputsInvalid(workflow.name, problems)
        execution_id = str(uuid.uuid4())
        now = self.clock()
        state = ExecutionState(
            id=execution_id, workflow=workflow.name, digest=workflow.digest,
            status=ExecutionStatus.PENDING, started_at=iso(now) or "",
            event=event if event is not None else {}, audit_head=audit.GENESIS,
            requested_by=requested_by,
        )
        policy = policy_of(workflow)
        group = group_of(policy, workflow, state) if policy is not None else None
        created = audit.event(
            audit.CREATED, state.started_at, workflow=workflow.name, digest=workflow.digest,
            eventSha256=hashlib.sha256(canonical(state.event).encode()).hexdigest(),
            requestedBy=requested_by, actor=actor.to_json() if actor else None,
            concurrencyGroup=group,
        )
        new_timers = []
        if workflow.settings.timeout is not None:
            new_timers.append(timers.run_timeout_timer(execution_id,
                                                       now + workflow.settings.timeout))
        if policy is not None and group is not None:
            reason = displacement_reason(group, execution_id)
            return self.concurrency.start(state, workflow, policy, group, created, new_timers,
                                          displace=lambda other: self._displace(other, reason))
        self.store.create(state, workflow.text, [created],
                          enqueue=lambda pipe: self.scheduler.enqueue_advance(
                              execution_id, pipeline=pipe),
                          timers=[timer.entry for timer in new_timers])
        for timer in new_timers:
            self.scheduler.schedule(timer)
        return StartedRun(execution_id, ExecutionStatus.PENDING)

    def _displace(self, execution_id: str, reason: str) -> None:
        """cancel-in-progress: cancel a run that lost its slot (it may have just ended)."""
        with contextlib.suppress(NotWaiting, ExecutionNotFound):
            self.reviews.end(execution_id, ExecutionStatus.CANCELLED, audit.CANCELLED,
                             SYSTEM_CONCURRENCY, reason)

    # -- read --------------------------------------------------------------------------------

    def get(self, execution_id: str) -> ExecutionState:
        return self.store.load(execution_id)

    def get_annotated(self, execution_id: str, key: str, *, values: Sequence[str] = (),
                      read: Running | None = None) -> Annotated:
        """:meth:`get` and :meth:`annotation` ``key`` in one round trip, with a plug-in's
        small ``values`` and the audit trail as stored (:meth:`Store.load_annotated`).
        ``read``: the inbox task running, handed in with :meth:`annotated_reads` for the
        same execution and values: what its taking read is used, with no round trip."""
        if (read is not None and read.read is not None
                and read.reads == self.annotated_reads(execution_id, values)):
            raw, trail, *found = read.read
            return self.store.read_annotated(execution_id, key, raw, trail, found)
        return self.store.load_annotated(execution_id, key, values=values)

    @staticmethod
    def annotated_reads(execution_id: str, values: Sequence[str] = ()
                        ) -> tuple[tuple[str, str], ...]:
        """What :meth:`get_annotated` reads, as an inbox task's reads
        (:attr:`engine.state.inbox.Task.reads`): a task handed in with them finds them read
        as it was taken (a click's worker decides with no read of its own)."""
        return (("h", keys.execution(execution_id)), ("l", keys.audit(execution_id)),
                *(("s", name) for name in values))

    def review(self, execution_id: str) -> ReviewRequest | None:
        """The review an execution waits on, or None when it is not waiting for input."""
        state = self.store.load(execution_id)
        if state.status is not ExecutionStatus.WAITING_FOR_INPUT or state.waiting is None:
            return None
        return review_request(state, state.waiting)

    def list_executions(self, *, status: str | None = None, workflow: str | None = None,
             offset: int = 0, limit: int = 50) -> tuple[list[ExecutionSummary], int]:
        return self.store.list_executions(status=status, workflow=workflow, offset=offset, limit=limit)

    def pending(self, *, offset: int = 0, limit: int = 50) -> tuple[list[ReviewRequest], int]:
        """Reviews waiting for input, oldest first, from the waiting index."""
        ids, total = self.store.waiting(offset=offset, limit=limit)
        return self._reviews_of(ids), total

    def _reviews_of(self, ids: list[str]) -> list[ReviewRequest]:
        # One round trip for the page, not one per review: /approvals lists ten at a time.
        return [review for review in self.store.waiting_reviews(ids) if review is not None]

    def audit_entries(self, execution_id: str) -> list[audit.AuditEntry]:
        if not self.store.exists(execution_id):
            raise ExecutionNotFound(execution_id)
        event = self.store.event_text(execution_id)  # long messages are packed against it
        return [audit.decode(*row, event) for row in self.store.audit_entries(execution_id)]

    def verify_audit(self, execution_id: str) -> audit.Verification:
        if not self.store.exists(execution_id):
            raise ExecutionNotFound(execution_id)
        return audit.verify(self.store.audit_entries(execution_id),
                            self.store.audit_head(execution_id), self.store.audit_key)

    # -- decide ------------------------------------------------------------------------------

    def resume(self, execution_id: str, input_: Any, actor: Actor, *,
               step: str | None = None, advance: bool = True,
               read: ExecutionState | None = None,
               acknowledge: Running | None = None,
               then: Callable[[Deferred], object] | None = None,
               alongside: Alongside | None = None) -> ResumeResult:
        """Record a reviewer's answer and continue the run, exactly once.

        Raises InputInvalid (every schema violation), NotWaiting, AlreadyDecided
        (someone decided first: who and when) or ExecutionNotFound. With a quorum
        (``approvals-required``) the result says how many approvals are in so far.
        ``read``: the execution as the caller just read it, used for the first try instead
        of reading it again (the commit is guarded all the same: if it changed since, the
        decision is tried again on a fresh read). ``acknowledge``: the inbox task carrying
        the decision, taken off its drain's list by the commit that decides (which may put
        the notifier's closing task in its place: :meth:`Reviews.resume`). ``then``: a
        worker continues the run from the decision, which the run's next write carries
        (:meth:`engine.run.runner.Runner.continue_decided`); ``alongside``: commands sent
        with the write that carries the decision (:meth:`Reviews.resume`).
        """
        return self.reviews.resume(execution_id, input_, actor, step=step, advance=advance,
                                   read=read, acknowledge=acknowledge, then=then,
                                   alongside=alongside)

    @property
    def escalate_to(self) -> tuple[str, ...]:
        """SIGNOFF_ESCALATE_TO: where Escalate goes past a review's last level."""
        return self.reviews.escalate_to

    def escalate(self, execution_id: str, actor: Actor, reason: str, *,
                 step: str | None = None, from_level: int | None = None,
                 to: str | None = None) -> int:
        """Move a review to its next escalation level now; ``actor`` must be allowed to
        decide it (ActorNotAllowed, audited, otherwise). Past its last level it goes to
        :attr:`escalate_to` (once), else to the person named ``to``
        (EscalationTargetRequired without one; CannotEscalate when the default target
        has it already). ``from_level``: the level the person saw; if the review has left
        it, AlreadyEscalated says who moved it (two escalations never skip a level)."""
        return self.reviews.escalate(execution_id, actor, reason, step=step,
                                     expect_level=from_level, beyond=True, to=to)

    def escalate_unanswerable(self, execution_id: str, step: str, reason: str) -> bool:
        """Send a review that nobody named can decide (its approvers are only its requester)
        to :attr:`escalate_to`, as the system; False when there is none (or it was sent)."""
        if not self.escalate_to:
            return False
        try:
            self.reviews.escalate(execution_id, SYSTEM_ESCALATION, reason, step=step,
                                  authorize=False, beyond=True)
        except (CannotEscalate, NotWaiting, AlreadyDecided):
            return False
        return True

    def reassign(self, execution_id: str, actor: Actor, approver: str, *,
                 step: str | None = None, reason: str = "") -> None:
        """Hand ``actor``'s seat on the review to ``approver`` (a hand-off: ``actor`` loses
        it); ActorNotAllowed (audited) when the rules refuse."""
        self.reviews.reassign(execution_id, actor, approver, step=step, reason=reason)

    def set_review_audience(self, execution_id: str, path: str,
                            user_ids: tuple[str, ...]) -> bool:
        """Who (resolved user ids) may decide the waiting review; indexes it for each."""
        return self.reviews.set_audience(execution_id, path, user_ids)

    def pending_for(self, user_id: str, *, offset: int = 0,
                    limit: int = 50) -> tuple[list[ReviewRequest], int]:
        """Reviews ``user_id`` may decide, oldest first, from the per-approver index."""
        ids, total = self.reviews.pending_for(user_id, offset=offset, limit=limit)
        return self._reviews_of(ids), total

    def pending_rows(self, user_id: str, notes: Sequence[str], *, offset: int = 0,
                     limit: int = 50, expect: Sequence[str] = ()) -> tuple[list[ReviewRow], int]:
        """:meth:`pending_for` as stored, each execution with the plug-in notes ``notes``:
        one round trip when ``expect`` names the page's executions
        (:meth:`engine.state.store.Store.review_rows`); ``row.review()`` reads a row."""
        return self.store.review_rows(keys.index_approver(user_id), offset, limit, notes,
                                      expect=expect)

    def record_refusal(self, execution_id: str, actor: Actor, reason: str) -> bool:
        """Audit a decision attempt that was refused (not an approver, self-approval), once a
        minute per person and run; True when this one was audited."""
        return self.reviews.record_refusal(execution_id, actor, reason)

    def record_lost_decision(self, execution_id: str, actor: Actor, *, step: str,
                             approved: bool, error: str) -> None:
        """Audit a decision (``approved``: approve or deny) that was acknowledged to the
        reviewer (a click Slack got its answer for) but could not be recorded: every try
        failed, the last with ``error``."""
        state = self.store.load(execution_id)
        self.store.append_audit(state, [audit.event(audit.LOST, iso(self.clock()) or "",
                                                    actor=actor.to_json(), step=step,
                                                    approved=approved, error=error)])

    def record_notification_failure(self, execution_id: str, step: str, reason: str) -> None:
        """Audit that a notification of ``step``'s review (a channel, a webhook) was refused
        for good, and why (connector id and Slack's answer; never a credential)."""
        state = self.store.load(execution_id)
        self.store.append_audit(state, [audit.event(audit.NOTIFICATION_FAILED,
                                                    iso(self.clock()) or "", step=step,
                                                    reason=reason)])

    def review_timer(self, execution_id: str, path: str, level: int, kind: str) -> bool:
        return self.reviews.review_timer(execution_id, path, level, kind)

    def step_timed_out(self, execution_id: str, path: str) -> bool:
        """A human step's ``timeout`` elapsed: apply its ``on-timeout`` unless decided."""
        return self.reviews.step_timed_out(execution_id, path)

    # -- who may act ---------------------------------------------------------------------------

    def refusal(self, review: ReviewRequest, who: str) -> Refusal | None:
        """Why ``who`` may not decide or escalate ``review``; None when they may. The same
        rules :meth:`resume` and :meth:`escalate` apply (front-ends ask first, to say so
        before opening a form)."""
        return authority.refusal(review, who, self.people)

    def vote_refusal(self, review: ReviewRequest, who: str, approves: bool) -> Refusal | None:
        """:meth:`refusal`, or that ``who`` approved already towards the quorum."""
        return authority.vote_refusal(review, who, approves, self.people)

    def deciders(self, review: ReviewRequest, approvers: Sequence[str]) -> tuple[str, ...]:
        """Those of ``approvers`` (user ids) who may decide ``review``."""
        return authority.deciders(review, approvers, self.people)

    def reassign_refusal(self, review: ReviewRequest, who: str, chosen: str) -> Refusal | None:
        """Why ``who`` may not hand their seat on ``review`` to ``chosen``; None when they may."""
        return authority.reassign_refusal(review, who, chosen, self.people)

    # -- annotations ---------------------------------------------------------------------------

    def annotate(self, execution_id: str, key: str, value: Any) -> None:
        """Keep a plug-in's note on an execution (the bot keeps where it posted the review)."""
        self.store.set_annotation(execution_id, key, value)

    def annotations(self, execution_ids: list[str], key: str) -> list[Any]:
        """The plug-in note ``key`` of several executions at once (None where unset)."""
        return self.store.annotations(execution_ids, key)

    def annotation(self, execution_id: str, key: str) -> Any:
        return self.store.annotation(execution_id, key)

    # -- stop --------------------------------------------------------------------------------

    def cancel(self, execution_id: str, actor: Actor, reason: str = "") -> None:
        self.reviews.end(execution_id, ExecutionStatus.CANCELLED, audit.CANCELLED, actor,
                         reason or f"cancelled by {actor.display}")

    def expire(self, execution_id: str) -> bool:
        """``settings.timeout`` elapsed: time the run out unless it has finished."""
        try:
            self.reviews.end(execution_id, ExecutionStatus.TIMED_OUT, audit.TIMED_OUT,
                             SYSTEM_TIMEOUT, "settings.timeout elapsed")
        except (NotWaiting, AlreadyDecided):
            return False
        return True

    def time_out(self, execution_id: str, reason: str) -> bool:
        """End a run that has not finished as TIMED_OUT, for ``reason`` (a parallel branch
        past its deadline); False when it had finished."""
        try:
            self.reviews.end(execution_id, ExecutionStatus.TIMED_OUT, audit.TIMED_OUT,
                             SYSTEM_TIMEOUT, reason)
        except (NotWaiting, AlreadyDecided, ExecutionNotFound):
            return False
        return True

    # -- recovery ----------------------------------------------------------------------------

    def recover_stalled(self) -> list[str]:
        """Re-enqueue runs whose worker died (lease lapsed), and finish what a process that
        died left of settings.concurrency: start queued runs handed a slot, cancel runs
        cancel-in-progress displaced, give back slots of runs that ended; returns the ids
        of the runs it found stalled."""
        stalled = self.store.stale_running()
        now_ms = epoch_ms(self.clock())
        for execution_id in stalled:
            try:
                status = self.store.status(execution_id)
            except ExecutionNotFound:
                self.store.forget_runnable(execution_id)
                continue
            if status is ExecutionStatus.QUEUED:
                self.concurrency.recover(self.store.load(execution_id))
                continue
            if status not in (ExecutionStatus.RUNNING, ExecutionStatus.PENDING):
                self.store.forget_runnable(execution_id)
                continue
            self.store.mark_runnable(execution_id, now_ms + self.lease_ms)
            self.scheduler.enqueue_advance(execution_id)
        for displaced, (by, group) in self.concurrency.slots.displaced().items():
            self._displace(displaced, displacement_reason(group, by))  # its canceller died
            self.concurrency.slots.forget_displaced(displaced)
        self.concurrency.reconcile()
        return stalled
