"""The engine's front door: start, inspect, resume, cancel and time out executions.

The HTTP API, the CLI, the bot and the RQ jobs all go through :class:`Engine`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema

from engine import audit, keys
from engine.definitions import Workflow
from engine.errors import (
    AlreadyDecided,
    ExecutionNotFound,
    InputInvalid,
    NotWaiting,
    SignoffError,
)
from engine.execution import (
    ACTIVE,
    Decision,
    ExecutionState,
    ExecutionStatus,
    StepResult,
    StepStatus,
    canonical,
    decision_outcome,
    iso,
    parse_iso,
    utcnow,
)
from engine.notify import SYSTEM_TIMEOUT, Actor, Notifier, NullNotifier, ReviewClosed, ReviewRequest
from engine.reviews import review_request
from engine.runner import LEASE_MS
from engine.scheduling import Scheduler
from engine.store import Change, ExecutionSummary, Store
from engine.workflow import workflow_from_stored_text


@dataclass(frozen=True)
class ResumeResult:
    execution_id: str
    decision: Decision


class Engine:
    def __init__(self, store: Store, scheduler: Scheduler, notifier: Notifier | None = None,
                 clock: Callable[[], datetime] = utcnow, lease_ms: int = LEASE_MS) -> None:
        self.store = store
        self.scheduler = scheduler
        self.notifier = notifier or NullNotifier()
        self.clock = clock
        self.lease_ms = lease_ms

    # -- definitions -------------------------------------------------------------------------

    def definition(self, digest: str) -> Workflow:
        return workflow_from_stored_text(self.store.definition_text(digest), digest)

    # -- start -------------------------------------------------------------------------------

    def run(self, workflow: Workflow, event: Any = None, *, requested_by: str | None = None,
            actor: Actor | None = None) -> str:
        """Start an execution of ``workflow`` for ``event``; returns its id."""
        if not workflow.enabled:
            raise SignoffError(f"workflow {workflow.name!r} is disabled (enabled: false)")
        execution_id = str(uuid.uuid4())
        now = self.clock()
        state = ExecutionState(
            id=execution_id, workflow=workflow.name, digest=workflow.digest,
            status=ExecutionStatus.PENDING, started_at=iso(now) or "",
            event=event if event is not None else {}, audit_head=audit.GENESIS,
            requested_by=requested_by,
        )
        created = audit.event(
            audit.CREATED, state.started_at, workflow=workflow.name, digest=workflow.digest,
            eventSha256=hashlib.sha256(canonical(state.event).encode()).hexdigest(),
            requestedBy=requested_by, actor=actor.to_json() if actor else None,
        )
        self.store.create(state, workflow.text, [created],
                          enqueue=lambda pipe: self.scheduler.enqueue_advance(
                              execution_id, pipeline=pipe))
        if workflow.settings.timeout is not None:
            self.scheduler.run_timeout_at(execution_id, now + workflow.settings.timeout)
        return execution_id

    # -- read --------------------------------------------------------------------------------

    def get(self, execution_id: str) -> ExecutionState:
        return self.store.load(execution_id)

    def review(self, execution_id: str) -> ReviewRequest | None:
        """The review an execution waits on, or None when it is not waiting for input."""
        state = self.store.load(execution_id)
        if state.status is not ExecutionStatus.WAITING_FOR_INPUT or state.waiting is None:
            return None
        return review_request(state, None, state.waiting)

    def list_executions(self, *, status: str | None = None, workflow: str | None = None,
             offset: int = 0, limit: int = 50) -> tuple[list[ExecutionSummary], int]:
        return self.store.list_executions(status=status, workflow=workflow, offset=offset, limit=limit)

    def pending(self, *, offset: int = 0, limit: int = 50) -> tuple[list[ReviewRequest], int]:
        """Reviews waiting for input, oldest first, from the waiting index."""
        ids, total = self.store.waiting(offset=offset, limit=limit)
        reviews = []
        for execution_id in ids:
            try:
                review = self.review(execution_id)
            except ExecutionNotFound:
                continue
            if review is not None:
                reviews.append(review)
        return reviews, total

    def audit_entries(self, execution_id: str) -> list[audit.AuditEntry]:
        if not self.store.exists(execution_id):
            raise ExecutionNotFound(execution_id)
        return [audit.decode(*row) for row in self.store.audit_entries(execution_id)]

    def verify_audit(self, execution_id: str) -> audit.Verification:
        if not self.store.exists(execution_id):
            raise ExecutionNotFound(execution_id)
        return audit.verify(self.store.audit_entries(execution_id),
                            self.store.audit_head(execution_id))

    # -- decide ------------------------------------------------------------------------------

    def resume(self, execution_id: str, input_: Any, actor: Actor, *,
               step: str | None = None) -> ResumeResult:
        """Record a reviewer's answer and continue the run, exactly once.

        Raises InputInvalid (every schema violation), NotWaiting, AlreadyDecided
        (someone decided first: who and when) or ExecutionNotFound.
        """
        for _ in range(50):
            state = self.store.load(execution_id)
            waiting = state.waiting
            if state.status is not ExecutionStatus.WAITING_FOR_INPUT or waiting is None:
                raise self._not_waiting(state, step)
            if step is not None and step not in (waiting.step, waiting.path):
                raise self._not_waiting(state, step)
            if not isinstance(input_, Mapping):
                raise InputInvalid(execution_id, [{"path": "", "message":
                                                   "the input must be a JSON object"}])
            violations = schema_violations(waiting.schema, input_)
            if violations:
                raise InputInvalid(execution_id, violations)
            now = iso(self.clock()) or ""
            decision = Decision(
                step=waiting.step, path=waiting.path, actor=actor.to_json(), at=now,
                input=dict(input_), message_sha256=waiting.message_sha256,
                outcome=decision_outcome(input_, str(waiting.options.get("decision-field")
                                                     or "approved")))
            change = self._decide_change(state, decision, dict(input_), now)
            result = self.store.commit(
                state, change, guard_status=(ExecutionStatus.WAITING_FOR_INPUT,),
                guard_field=("w", f'"path":{canonical(waiting.path)}'))
            if result.ok:
                self.scheduler.enqueue_advance(execution_id)
                self._announce_closed(state, decision.outcome, actor, dict(input_))
                return ResumeResult(execution_id, decision)
            if result.reason == "missing":
                raise ExecutionNotFound(execution_id)
            # the head moved or the state changed: look again
        raise SignoffError(f"could not record the decision on {execution_id}: too much contention")

    def _decide_change(self, state: ExecutionState, decision: Decision, output: Any,
                       now: str) -> Change:
        assert state.waiting is not None
        previous = state.results.get(state.waiting.path)
        result = StepResult(status=StepStatus.COMPLETED, output=output,
                            started_at=previous.started_at if previous else None,
                            finished_at=now, resumed_by=decision.actor, resumed_at=now)
        return Change(
            set={keys.decision_field(decision.path): decision.to_json()},
            delete=["w"], status=ExecutionStatus.RUNNING, waiting="remove",
            running="add", running_score=_ms(self.clock()) + 2 * self.lease_ms,
            events=[audit.event(audit.DECIDED, now, step=decision.path, actor=decision.actor,
                                input=decision.input, outcome=decision.outcome,
                                messageSha256=decision.message_sha256)],
        ).step(decision.path, result)

    def _not_waiting(self, state: ExecutionState, step: str | None) -> Exception:
        wanted = step or (state.waiting.path if state.waiting else None)
        decided = None
        if wanted is not None:
            decided = state.decisions.get(wanted) or next(
                (d for d in state.decisions.values() if d.step == wanted), None)
        elif state.decisions:
            decided = max(state.decisions.values(), key=lambda d: d.at)
        if decided is not None:
            who = str(decided.actor.get("name") or decided.actor.get("id"))
            return AlreadyDecided(state.id, step=decided.step, by=who, at=decided.at,
                                  outcome=decided.outcome)
        return NotWaiting(state.id, state.status.value)

    def record_refusal(self, execution_id: str, actor: Actor, reason: str) -> None:
        """Audit a decision attempt that was refused (not an approver, self-approval)."""
        state = self.store.load(execution_id)
        self.store.append_audit(state, [audit.event(audit.REFUSED, iso(self.clock()) or "",
                                                    actor=actor.to_json(), reason=reason)])

    # -- annotations ---------------------------------------------------------------------------

    def annotate(self, execution_id: str, key: str, value: Any) -> None:
        """Keep a plug-in's note on an execution (the bot keeps where it posted the review)."""
        self.store.set_annotation(execution_id, key, value)

    def annotation(self, execution_id: str, key: str) -> Any:
        return self.store.annotation(execution_id, key)

    # -- stop --------------------------------------------------------------------------------

    def cancel(self, execution_id: str, actor: Actor, reason: str = "") -> None:
        self._end(execution_id, ExecutionStatus.CANCELLED, audit.CANCELLED, actor,
                  reason or f"cancelled by {actor.display}")

    def expire(self, execution_id: str) -> bool:
        """``settings.timeout`` elapsed: time the run out unless it has finished."""
        try:
            self._end(execution_id, ExecutionStatus.TIMED_OUT, audit.TIMED_OUT, SYSTEM_TIMEOUT,
                      "settings.timeout elapsed")
        except (NotWaiting, AlreadyDecided):
            return False
        return True

    def _end(self, execution_id: str, status: ExecutionStatus, kind: str, actor: Actor,
             reason: str) -> None:
        for _ in range(50):
            state = self.store.load(execution_id)
            if state.status.is_terminal:
                raise NotWaiting(execution_id, state.status.value)
            now = iso(self.clock()) or ""
            change = Change(status=status, waiting="remove", running="remove",
                            set={"t1": now, "err": reason},
                            events=[audit.event(kind, now, actor=actor.to_json(),
                                                reason=reason)])
            was_waiting = state.status is ExecutionStatus.WAITING_FOR_INPUT
            result = self.store.commit(state, change, guard_status=ACTIVE)
            if result.ok:
                if was_waiting:
                    self._announce_closed(state, "cancelled" if status is
                                          ExecutionStatus.CANCELLED else "timed_out", actor, {},
                                          reason)
                return
            if result.reason == "missing":
                raise ExecutionNotFound(execution_id)
        raise SignoffError(f"could not end {execution_id}: too much contention")

    def step_timed_out(self, execution_id: str, path: str) -> bool:
        """A human step's ``timeout`` elapsed: apply its ``on-timeout`` unless decided."""
        state = self.store.load(execution_id)
        waiting = state.waiting
        if (state.status is not ExecutionStatus.WAITING_FOR_INPUT or waiting is None
                or waiting.path != path):
            return False
        due = parse_iso(waiting.due_at)
        if due is not None and self.clock() < due:
            self.scheduler.step_timeout_at(execution_id, path, due)
            return False
        outcome = str(waiting.options.get("on-timeout") or "fail")
        field = str(waiting.options.get("decision-field") or "approved")
        try:
            if outcome in ("approve", "deny"):
                self.resume(execution_id, {field: outcome == "approve"}, SYSTEM_TIMEOUT,
                            step=path)
            elif outcome == "cancel":
                self._end(execution_id, ExecutionStatus.CANCELLED, audit.CANCELLED,
                          SYSTEM_TIMEOUT, f"step {waiting.step} timed out")
            else:
                self._fail_waiting_step(state, outcome)
        except (NotWaiting, AlreadyDecided, InputInvalid):
            return False
        return True

    def _fail_waiting_step(self, state: ExecutionState, outcome: str) -> None:
        waiting = state.waiting
        assert waiting is not None
        now = iso(self.clock()) or ""
        message = f"no decision before the step's timeout ({waiting.due_at})"
        result = StepResult(status=StepStatus.FAILED, error=message, finished_at=now,
                            output={"timedOut": True, "onTimeout": outcome})
        change = Change(delete=["w"], status=ExecutionStatus.RUNNING, waiting="remove",
                        running="add", running_score=_ms(self.clock()) + 2 * self.lease_ms,
                        events=[audit.event(audit.STEP_FAILED, now, step=waiting.path,
                                            error=message, onTimeout=outcome)]
                        ).step(waiting.path, result)
        committed = self.store.commit(state, change,
                                      guard_status=(ExecutionStatus.WAITING_FOR_INPUT,),
                                      guard_field=("w", f'"path":{canonical(waiting.path)}'))
        if not committed.ok:
            raise NotWaiting(state.id, committed.status)
        self.scheduler.enqueue_advance(state.id)
        self._announce_closed(state, "timed_out", SYSTEM_TIMEOUT, {}, message)

    def _announce_closed(self, state: ExecutionState, outcome: str, actor: Actor,
                         input_: Mapping[str, Any], reason: str = "") -> None:
        waiting = state.waiting
        if waiting is None:
            return
        try:
            self.notifier.review_closed(ReviewClosed(
                execution_id=state.id, workflow=state.workflow, step=waiting.step,
                outcome=outcome, actor=actor, at=self.clock(), input=input_, reason=reason))
        except Exception:  # Slack being down must not undo a recorded decision
            import logging

            logging.getLogger(__name__).exception("notifier failed for %s", state.id)

    # -- recovery ----------------------------------------------------------------------------

    def recover_stalled(self) -> list[str]:
        """Re-enqueue runs whose worker died (lease lapsed); returns their ids."""
        stalled = self.store.stale_running()
        now_ms = _ms(self.clock())
        for execution_id in stalled:
            try:
                status = self.store.status(execution_id)
            except ExecutionNotFound:
                self.store.forget_runnable(execution_id)
                continue
            if status not in (ExecutionStatus.RUNNING, ExecutionStatus.PENDING):
                self.store.forget_runnable(execution_id)
                continue
            self.store.mark_runnable(execution_id, now_ms + self.lease_ms)
            self.scheduler.enqueue_advance(execution_id)
        return stalled


def schema_violations(schema: Mapping[str, Any], value: Any) -> list[dict[str, str]]:
    """Every way ``value`` breaks ``schema`` (Draft 2020-12), as {path, message}."""
    validator = jsonschema.Draft202012Validator(schema,
                                                format_checker=jsonschema.FormatChecker())
    found = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        path = "/".join(str(p) for p in error.absolute_path)
        found.append({"path": path, "message": error.message})
    return found


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
