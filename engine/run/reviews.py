"""Human reviews while they wait: decisions (with quorum), SLA escalation, reminders,
reassignment, time-outs, who may decide, and the statistics of closed reviews.

Every change is one guarded commit (status WAITING_FOR_INPUT, the same step, the same
level where it matters), so a timer that fires after a decision, or twice, or a
double click, changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any, cast

from engine.definition.answer_schema import answer_errors
from engine.errors import (
    ActorNotAllowed,
    AlreadyDecided,
    AlreadyEscalated,
    CannotEscalate,
    Contention,
    EscalationTargetRequired,
    ExecutionError,
    ExecutionNotFound,
    InputInvalid,
    NotWaiting,
)
from engine.notify import (
    SYSTEM_SLA,
    SYSTEM_TIMEOUT,
    Actor,
    CarriesClosing,
    Notifier,
    ReviewChange,
    ReviewClosed,
)
from engine.run import authority, children, escalation, timers
from engine.run.authority import Refusal
from engine.run.buffered_writes import DecisionRaced, Deferred
from engine.run.identity import NamedPeople, People
from engine.run.timers import Scheduler
from engine.state import audit, keys
from engine.state.execution import (
    LEASE_MS,
    Decision,
    ExecutionState,
    ExecutionStatus,
    StepResult,
    StepStatus,
    Waiting,
    decision_outcome,
    dumps,
    epoch_ms,
    iso,
    parse_iso,
    review_request,
    utcnow,
)
from engine.state.inbox import Running
from engine.state.store import Alongside, Change, CommitResult, Store
from engine.steps import human

log = logging.getLogger(__name__)

REFUSAL_WINDOW_MS = 60_000  # a person's repeated refused attempts on one run: audited once


@dataclass(frozen=True)
class ResumeResult:
    execution_id: str
    decision: Decision | None  # None while a quorum is still short
    approvals: int = 1  # quorum: approvals recorded, this one included
    required: int = 1
    # then: the run as the segment that wrote the decision left it (None: not continued
    # here), and the run's annotations as that write left them
    continued: ExecutionState | None = None
    notes: Mapping[str, bytes] = field(default_factory=dict)
    # the notifier's closing task took the acknowledged inbox task's place (CarriesClosing):
    # its drain runs it next, and review_closed was not called
    carried: bool = False
    # what the commands sent alongside the decision's write made of their replies
    alongside: Any = None

    @property
    def decided(self) -> bool:
        return self.decision is not None


class Reviews:
    def __init__(self, store: Store, scheduler: Scheduler, notifier: Notifier,
                 clock: Callable[[], datetime] = utcnow, lease_ms: int = LEASE_MS,
                 people: Callable[[], People] = NamedPeople,
                 escalate_to: Sequence[str] = ()) -> None:
        self.store = store
        self.scheduler = scheduler
        self.notifier = notifier
        self.clock = clock
        self.lease_ms = lease_ms
        self.people = people  # who is who, asked at each check (the bot installs Slack's)
        self.escalate_to = tuple(escalate_to)  # SIGNOFF_ESCALATE_TO
        # Told of every run end() ended (the engine gives back its concurrency slot).
        self.ended: Callable[[ExecutionState], None] = lambda state: None

    # -- deciding ----------------------------------------------------------------------------

    def resume(self, execution_id: str, input_: Any, actor: Actor, *,
               step: str | None = None, reason: str = "", advance: bool = True,
               authorize: bool = True, read: ExecutionState | None = None,
               acknowledge: Running | None = None,
               then: Callable[[Deferred], object] | None = None,
               alongside: Alongside | None = None) -> ResumeResult:
        """Record an answer, exactly once; with ``approvals-required: N`` an approval counts
        toward the quorum and the N-th distinct approver decides (one deny denies).

        ``actor`` must be allowed to decide (:mod:`engine.run.authority`): otherwise the
        attempt is audited and ActorNotAllowed says why. ``authorize=False`` is for the
        engine's own decisions (``on-timeout``). ``reason`` travels to the notifier (why
        ``system:timeout`` decided). With ``advance=False`` no segment is queued: the
        caller continues the run itself; if it dies first, the sweeper does.

        ``then`` (a worker that decided a click: :meth:`engine.run.runner.Runner.
        continue_decided`) continues the run before the decision is written: the segment's
        first write carries the decision with the pure steps after it, guarded as the
        decision's own commit (:class:`engine.run.buffered_writes.Deferred`), and it is
        tried again on a fresh read should the run have changed meanwhile. A lease another
        holds, or a segment that fails before that write, leaves the decision to its own
        commit, and the run to a queued segment.

        ``read``: the execution as the caller just read it, for the first try (the commit's
        guards catch any change since, and the next try reads afresh). ``acknowledge``: the
        inbox task carrying the decision, which the commit that decides takes off its
        drain's list, in the same script, setting ``acknowledge.acknowledged``; when the
        notifier's work on the closed review is an inbox task (:class:`CarriesClosing`),
        the inbox task came alone (``acknowledge.inbox`` set) and the inbox is empty, that
        task takes its place (``acknowledge.then``, run next by the same drain) and
        ``review_closed`` is not called.

        ``alongside``: with ``then``, another owner's commands, built from ``read``, sent
        in the round trip of the write that carries the decision, after it, and acting only
        once it applied (:data:`engine.state.store.Alongside`): the bot's leave of the
        closed review. Only the first try sends them (a later one reads afresh); what their
        reader made of their replies is :attr:`ResumeResult.alongside`."""
        for _ in range(50):
            given = read is not None  # the caller's read, which ``alongside`` was built from
            state, waiting = self._waiting(execution_id, step, read)
            read = None
            if not isinstance(input_, Mapping):
                raise InputInvalid(execution_id, [{"path": "", "message":
                                                   "the input must be a JSON object"}])
            field = str(waiting.options.get("decision-field") or "approved")
            outcome = decision_outcome(input_, field)
            if authorize:
                why = authority.vote_refusal(review_request(state, waiting), actor.id,
                                             outcome == "approved", self.people())
                if why is not None:
                    raise self.refused(execution_id, actor, why)
            violations = schema_violations(waiting.schema, input_)
            if violations:
                raise InputInvalid(execution_id, violations)
            now = self.clock()
            required = escalation.approvals_required(waiting.options)
            approval = {"actor": actor.to_json(), "at": iso(now), "input": dict(input_)}
            if outcome == "approved" and required > 1:
                if authority.voted(waiting.approvals, actor.id, self.people()):
                    return ResumeResult(execution_id, None, len(waiting.approvals), required)
                if len(waiting.approvals) + 1 < required:
                    if self._record_approval(state, waiting, approval, actor, now):
                        return ResumeResult(execution_id, None, len(waiting.approvals) + 1,
                                            required)
                    continue
            approvals: list[Mapping[str, Any]] = (
                [*waiting.approvals, approval] if outcome == "approved" else [approval])
            decision = Decision(step=waiting.step, path=waiting.path, actor=actor.to_json(),
                                at=iso(now) or "", input=dict(input_),
                                message_sha256=waiting.message_sha256, outcome=outcome)
            change, result = self._decide_change(state, waiting, decision, approvals, now)
            closing = None
            if acknowledge is not None:
                closing = self._closing_task(state, outcome, actor, dict(input_), reason,
                                             now) if acknowledge.inbox else None
                if closing is not None:
                    change.carry = (acknowledge.taking, acknowledge.entry, closing,
                                    acknowledge.inbox)
                else:
                    change.lrem.append((acknowledge.taking, acknowledge.entry))
            written = partial(self._decision_written, acknowledge, closing, state, outcome,
                              actor, dict(input_), reason)
            if then is not None:
                decided = replace(state, status=ExecutionStatus.RUNNING, waiting=None,
                                  variables=dict(state.variables),
                                  results={**state.results, waiting.path: result},
                                  decisions={**state.decisions, waiting.path: decision})
                deferred = Deferred(change, waiting.path, decided, written,
                                    alongside=alongside if given else None)
                try:
                    then(deferred)
                except DecisionRaced as raced:
                    if raced.reason == "missing":
                        raise ExecutionNotFound(execution_id) from raced
                    if raced.reason == "lease":  # another holds it: a queued segment goes on
                        then, advance = None, True
                    continue  # on a fresh read
                except Exception:
                    if deferred.result is not None:
                        raise  # decided and acknowledged: the run is the sweeper's now
                    log.exception("continuing %s before its decision failed; the decision "
                                  "is written on its own", execution_id)
                    then, advance = None, True
                    continue
                if deferred.result is not None:
                    return ResumeResult(execution_id, decision, len(approvals), required,
                                        continued=deferred.state, notes=deferred.result.notes,
                                        carried=deferred.result.carried,
                                        alongside=deferred.result.alongside)
                then, advance = None, True  # no write at all: cannot be, but never lose it
                continue
            committed = self._commit_waiting(state, waiting, change)
            if committed:
                written(committed)
                if advance:
                    self.scheduler.enqueue_advance(execution_id)
                return ResumeResult(execution_id, decision, len(approvals), required,
                                    carried=committed.carried)
        raise Contention(execution_id, "record the decision on")

    def _decision_written(self, acknowledge: Running | None, closing: bytes | None,
                          state: ExecutionState, outcome: str, actor: Actor,
                          input_: Mapping[str, Any], reason: str,
                          committed: CommitResult) -> None:
        """The decision is written (by its own commit, or by the segment that continued the
        run): the inbox task is acknowledged, and the review announced closed unless the
        notifier's closing task took the task's place."""
        if acknowledge is not None:
            acknowledge.acknowledged = True
            if committed.carried:
                acknowledge.then = closing
        if not committed.carried:
            self._announce_closed(state, outcome, actor, input_, reason)

    def _record_approval(self, state: ExecutionState, waiting: Waiting,
                         approval: dict[str, Any], actor: Actor, now: datetime) -> bool:
        updated = waiting.evolve(approvals=(*waiting.approvals, approval))
        change = Change(set={"w": updated.to_json()}, events=[audit.event(
            audit.APPROVAL_RECORDED, iso(now) or "", step=waiting.path, actor=actor.to_json(),
            input=approval["input"], count=len(updated.approvals),
            required=escalation.approvals_required(waiting.options))])
        if not self._commit_waiting(state, waiting, change):
            return False
        self._announce_change(state, updated, "approval", actor, now)
        return True

    def _decide_change(self, state: ExecutionState, waiting: Waiting, decision: Decision,
                       approvals: list[Mapping[str, Any]], now: datetime
                       ) -> tuple[Change, StepResult]:
        previous = state.results.get(waiting.path)
        output = human.answer_output(waiting.step_type, decision.input, decision.actor,
                                     decision.at)
        result = StepResult(status=StepStatus.COMPLETED, output=output,
                            started_at=previous.started_at if previous else None,
                            finished_at=decision.at, resumed_by=decision.actor,
                            resumed_at=decision.at)
        event = audit.event(audit.DECIDED, decision.at, step=decision.path,
                            actor=decision.actor, input=decision.input,
                            outcome=decision.outcome, messageSha256=decision.message_sha256,
                            level=waiting.level or None,
                            approvals=[a["actor"] for a in approvals] if len(approvals) > 1
                            else None)
        change = Change(
            set={keys.decision_field(decision.path): decision.to_json()}, delete=["w"],
            status=ExecutionStatus.RUNNING, waiting="remove", running="add",
            running_score=epoch_ms(self.clock()) + 2 * self.lease_ms, events=[event],
        ).step(decision.path, result)
        self.close_into(change, state, waiting, decision.outcome, now)
        return change, result

    def _not_waiting(self, state: ExecutionState, step: str | None) -> ExecutionError:
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

    def refused(self, execution_id: str, actor: Actor, why: Refusal) -> ActorNotAllowed:
        """The error for a refused attempt, after auditing it (once a minute per person)."""
        self.record_refusal(execution_id, actor, why.value)
        return ActorNotAllowed(execution_id, actor.display, why.value, authority.explain(why))

    def record_refusal(self, execution_id: str, actor: Actor, reason: str) -> bool:
        """Audit a decision attempt that was refused (not an approver, self-approval), once
        per :data:`REFUSAL_WINDOW_MS` per person and execution: someone clicking again and
        again (or a script) cannot flood the trail. True when this one was audited."""
        if not self.store.first_in_window(keys.refused(execution_id, actor.id),
                                          REFUSAL_WINDOW_MS):
            return False
        state = self.store.load(execution_id)
        self.store.append_audit(state, [audit.event(audit.REFUSED, iso(self.clock()) or "",
                                                    actor=actor.to_json(), reason=reason)])
        return True

    # -- escalation, reminders, reassignment -------------------------------------------------

    def escalate(self, execution_id: str, actor: Actor, reason: str, *,
                 step: str | None = None, from_level: int | None = None,
                 expect_level: int | None = None, authorize: bool = True,
                 beyond: bool = False, to: str | None = None) -> int:
        """Move the review to its next level now; returns the new level.

        A compare-and-set on the level: with ``from_level`` (a timer) a review that has
        left that level is left alone; with ``expect_level`` (a person, who saw that level)
        it raises AlreadyEscalated naming who moved it, so two people escalating at once, or
        one submission replayed, never skip a level.

        Past the step's last level (or without levels), ``beyond`` (a person's Escalate)
        adds a level: the workspace's ``escalate_to`` once, else the person named ``to``
        (EscalationTargetRequired without one; ActorNotAllowed when ``to`` is the requester
        or can decide already). Otherwise CannotEscalate at the last level. NotWaiting /
        AlreadyDecided when decided.
        """
        for _ in range(50):
            state, waiting = self._waiting(execution_id, step)
            review = review_request(state, waiting)
            if authorize:
                why = authority.refusal(review, actor.id, self.people())
                if why is not None:
                    raise self.refused(execution_id, actor, why)
            if from_level is not None and waiting.level != from_level:
                return waiting.level  # someone escalated it already
            if expect_level is not None and waiting.level != expect_level:
                raise self._already_escalated(state.id, waiting.level)
            options = waiting.options
            target = waiting.level + 1
            if target >= len(escalation.levels(options)):
                added = escalation.beyond_levels(options, self.escalate_to, to) if beyond else None
                if added is None:
                    if beyond and not self.escalate_to and not to:
                        raise EscalationTargetRequired(execution_id)
                    raise CannotEscalate(
                        f"review {waiting.step} of {execution_id} is at its last level "
                        f"({waiting.level + 1} of {target}): there is no one "
                        "further to escalate to", execution_id=execution_id)
                if added["added"] == escalation.CHOSEN_TARGET and to is not None:
                    why = authority.target_refusal(review, to, self.people())
                    if why is not None:
                        raise self.refused(execution_id, actor, why)
                options = {**options, "escalation": [*(options.get("escalation") or ()), added]}
            if self._move_to_level(state, waiting, target, options, actor, reason):
                return target
        raise Contention(execution_id, "escalate")

    def _already_escalated(self, execution_id: str, level: int) -> AlreadyEscalated:
        by, at = "someone", ""
        for entry in reversed(self.store.audit_entries(execution_id)):
            event = audit.decode(*entry).event
            if event.get("type") == audit.ESCALATED and event.get("toLevel") == level:
                actor = event.get("actor") or {}
                by, at = str(actor.get("name") or actor.get("id") or by), str(event.get("at"))
                break
        return AlreadyEscalated(execution_id, level=level, by=by, at=at)

    def _move_to_level(self, state: ExecutionState, waiting: Waiting, target: int,
                       options: Mapping[str, Any], actor: Actor, reason: str) -> bool:
        now = self.clock()
        level = escalation.levels(options)[target]
        due = now + level.sla if level.sla is not None else None
        remind = escalation.remind_time(waiting.options, now, due)
        if escalation.earlier_levels_keep_rights(waiting.options):
            seats, handed = escalation.merged(waiting.approvers, level.approvers), waiting.handed
        else:  # the new level alone decides; seats handed on at earlier levels lapse
            seats, handed = tuple(level.approvers), ()
        updated = waiting.evolve(level=target, level_due=iso(due), remind_at=iso(remind),
                                 approvers=seats, handed=handed, options=options)
        new_timers = []
        if due is not None:
            new_timers.append(timers.review_timer(state.id, waiting.path, target, "sla", due))
        if remind is not None:
            new_timers.append(timers.review_timer(state.id, waiting.path, target, "remind",
                                                  remind))
        change = Change(set={"w": updated.to_json()}, events=[audit.event(
            audit.ESCALATED, iso(now) or "", step=waiting.path, actor=actor.to_json(),
            fromLevel=waiting.level, toLevel=target, approvers=list(level.approvers),
            reason=reason, slaDueAt=iso(due),
            target=(options.get("escalation") or [{}])[target - 1].get("added"))],
            zadd=[timer.entry for timer in new_timers])
        if not self._commit_waiting(state, waiting, change):
            return False
        for timer in new_timers:
            self.scheduler.schedule(timer)
        self._announce_change(state, updated, "escalated", actor, now, reason=reason,
                              added=level.approvers, channel=level.channel)
        return True

    def review_timer(self, execution_id: str, path: str, level: int, kind: str) -> bool:
        """An SLA or remind timer fired: act if the review still waits at that level."""
        try:
            state, waiting = self._waiting(execution_id, path)
        except (NotWaiting, AlreadyDecided, ExecutionNotFound):
            return False
        if waiting.level != level:
            return False
        due = parse_iso(waiting.level_due if kind == "sla" else waiting.remind_at)
        if due is None:
            return False
        if self.clock() < due:  # RQ fired early: never act before the deadline
            self.scheduler.review_timer_at(execution_id, path, level, kind, due)
            return False
        if kind == "remind":
            return self._remind(state, waiting)
        sla = escalation.levels(waiting.options)[level].sla
        reason = f"SLA of {_spell(waiting.options, level)} passed" if sla else "SLA passed"
        try:
            self.escalate(execution_id, SYSTEM_SLA, reason, step=path, from_level=level,
                          authorize=False)
        except CannotEscalate:
            return self._apply_on_timeout(execution_id, path, f"{reason} at the last level")
        except (NotWaiting, AlreadyDecided):
            return False
        return True

    def _remind(self, state: ExecutionState, waiting: Waiting) -> bool:
        now = self.clock()
        updated = waiting.evolve(remind_at=None)
        change = Change(set={"w": updated.to_json()}, events=[audit.event(
            audit.REMINDED, iso(now) or "", step=waiting.path, level=waiting.level,
            approvers=list(waiting.approvers), slaDueAt=waiting.level_due)])
        if not self._commit_waiting(state, waiting, change):
            return False
        self._announce_change(state, updated, "reminder", SYSTEM_SLA, now,
                              reason=f"SLA passes at {waiting.level_due}")
        return True

    def reassign(self, execution_id: str, actor: Actor, approver: str, *,
                 step: str | None = None, reason: str = "", authorize: bool = True) -> None:
        """Hand ``actor``'s seat on the review to ``approver``: they may decide from now on,
        and ``actor`` no longer may (:func:`engine.run.authority.reassign_refusal` says who
        may hand what to whom). ActorNotAllowed (audited) when the rules refuse."""
        for _ in range(50):
            state, waiting = self._waiting(execution_id, step)
            if authorize:
                why = authority.reassign_refusal(review_request(state, waiting), actor.id,
                                                 approver, self.people())
                if why is not None:
                    raise self.refused(execution_id, actor, why)
            now = self.clock()
            handed = tuple(h for h in waiting.handed if h != approver)
            if authorize:
                handed = escalation.merged(handed, [actor.id])
            updated = waiting.evolve(
                approvers=escalation.merged(waiting.approvers, [approver]), handed=handed,
                audience=tuple(u for u in waiting.audience if u not in handed))
            change = Change(set={"w": updated.to_json()}, events=[audit.event(
                audit.REASSIGNED, iso(now) or "", step=waiting.path, actor=actor.to_json(),
                approver=approver, level=waiting.level, reason=reason or None,
                handedOff=actor.id if authorize else None)],
                zrem=[(keys.index_approver(u), execution_id) for u in waiting.audience
                      if u in handed])
            if self._commit_waiting(state, waiting, change):
                self._announce_change(state, updated, "reassigned", actor, now,
                                      added=(approver,), reason=reason)
                return
        raise Contention(execution_id, "reassign")

    def set_audience(self, execution_id: str, path: str, user_ids: tuple[str, ...]) -> bool:
        """Record who (resolved user ids) may decide, and index the review under each."""
        for _ in range(50):
            try:
                state, waiting = self._waiting(execution_id, path)
            except (NotWaiting, AlreadyDecided):
                return False
            audience = tuple(dict.fromkeys(user_ids))
            if audience == waiting.audience:
                return True
            since = epoch_ms(parse_iso(waiting.since) or self.clock())
            change = Change(set={"w": waiting.evolve(audience=audience).to_json()},
                            zadd=[(keys.index_approver(u), since, execution_id)
                                  for u in audience if u not in waiting.audience],
                            zrem=[(keys.index_approver(u), execution_id)
                                  for u in waiting.audience if u not in audience])
            if self._commit_waiting(state, waiting, change):
                return True
        return False

    # -- time-outs ---------------------------------------------------------------------------

    def step_timed_out(self, execution_id: str, path: str) -> bool:
        """A human step's ``timeout`` elapsed: apply its ``on-timeout`` unless decided."""
        try:
            _, waiting = self._waiting(execution_id, path)
        except (NotWaiting, AlreadyDecided, ExecutionNotFound):
            return False
        due = parse_iso(waiting.due_at)
        if due is not None and self.clock() < due:
            self.scheduler.step_timeout_at(execution_id, path, due)
            return False
        return self._apply_on_timeout(execution_id, path,
                                      f"no decision before the step's timeout ({waiting.due_at})")

    def _apply_on_timeout(self, execution_id: str, path: str, reason: str) -> bool:
        state, waiting = self._waiting(execution_id, path)
        outcome = str(waiting.options.get("on-timeout") or "fail")
        field = str(waiting.options.get("decision-field") or "approved")
        try:
            if outcome in ("approve", "deny"):
                self.resume(execution_id, {field: outcome == "approve"}, SYSTEM_TIMEOUT,
                            step=path, reason=reason, authorize=False)
            elif outcome == "cancel":
                self.end(execution_id, ExecutionStatus.CANCELLED, audit.CANCELLED,
                         SYSTEM_TIMEOUT, f"step {waiting.step}: {reason}")
            else:
                self._fail_waiting_step(state, waiting, outcome, reason)
        except (NotWaiting, AlreadyDecided, InputInvalid):
            return False
        return True

    def _fail_waiting_step(self, state: ExecutionState, waiting: Waiting, outcome: str,
                           reason: str) -> None:
        now = self.clock()
        result = StepResult(status=StepStatus.FAILED, error=reason, finished_at=iso(now),
                            output={"timedOut": True, "onTimeout": outcome,
                                    **human.responder(SYSTEM_TIMEOUT.to_json(), iso(now) or "")})
        change = Change(delete=["w"], status=ExecutionStatus.RUNNING, waiting="remove",
                        running="add", running_score=epoch_ms(now) + 2 * self.lease_ms,
                        events=[audit.event(audit.STEP_FAILED, iso(now) or "",
                                            step=waiting.path, error=reason,
                                            onTimeout=outcome)]
                        ).step(waiting.path, result)
        self.close_into(change, state, waiting, "timed_out", now)
        if not self._commit_waiting(state, waiting, change):
            raise NotWaiting(state.id, state.status.value)
        self.scheduler.enqueue_advance(state.id)
        self._announce_closed(state, "timed_out", SYSTEM_TIMEOUT, {}, reason)

    # -- ending a run ------------------------------------------------------------------------

    def end(self, execution_id: str, status: ExecutionStatus, kind: str, actor: Actor,
            reason: str) -> None:
        """End a run that has not finished (cancel, settings.timeout)."""
        from engine.state.execution import ACTIVE

        for _ in range(50):
            state = self.store.load(execution_id)
            if state.status.is_terminal:
                raise NotWaiting(execution_id, state.status.value)
            now = self.clock()
            change = Change(status=status, waiting="remove", running="remove",
                            set={"t1": iso(now) or "", "err": reason},
                            events=[audit.event(kind, iso(now) or "", actor=actor.to_json(),
                                                reason=reason)])
            waiting = (state.waiting if state.status is ExecutionStatus.WAITING_FOR_INPUT
                       else None)
            outcome = "cancelled" if status is ExecutionStatus.CANCELLED else "timed_out"
            if waiting is not None:
                self.close_into(change, state, waiting, outcome, now)
            parent_timer = children.report_end(change, state, status, now, error=reason)
            result = self.store.commit(state, change, guard_status=ACTIVE)
            if result.ok:
                self.ended(state)
                children.wake_parent(self.store, self.scheduler, parent_timer)
                # Kibana cancels a child its parent waits on with the parent; one that
                # ended meanwhile is left as it ended.
                for child in children.awaited_children(state):
                    with contextlib.suppress(NotWaiting, ExecutionNotFound):
                        self.end(child, ExecutionStatus.CANCELLED, audit.CANCELLED, actor,
                                 f"its parent {execution_id} ended: {reason}")
                if waiting is not None:
                    self._announce_closed(state, outcome, actor, {}, reason)
                return
            if result.reason == "missing":
                raise ExecutionNotFound(execution_id)
        raise Contention(execution_id, "end")

    def close_into(self, change: Change, state: ExecutionState, waiting: Waiting, outcome: str,
                   now: datetime) -> None:
        """Add to ``change`` what closing the review means: unindex it, count it in stats."""
        change.zrem.extend((keys.index_approver(u), state.id) for u in waiting.audience)
        since = parse_iso(waiting.since)
        first_due = parse_iso(waiting.first_due)
        record = {"id": state.id, "o": outcome,
                  "ms": epoch_ms(now) - epoch_ms(since) if since else 0, "lv": waiting.level,
                  "b": bool(first_due and now > first_due)}
        member = dumps(record)
        stats_key = keys.stats(state.workflow, waiting.step)
        change.zadd.append((stats_key, epoch_ms(now), member))
        change.zadd.append((keys.STATS_INDEX, epoch_ms(now), f"{state.workflow}\x1f{waiting.step}"))

    # -- reading -----------------------------------------------------------------------------

    def pending_for(self, user_id: str, *, offset: int = 0,
                    limit: int = 50) -> tuple[list[str], int]:
        """Executions whose review ``user_id`` may decide, oldest first."""
        return self.store.index_page(keys.index_approver(user_id), offset, limit)

    def stats(self, since: datetime) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Closed reviews since ``since``, per (workflow, step), oldest first."""
        found: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for member in self.store.index_members(keys.STATS_INDEX, epoch_ms(since)):
            workflow, _, step = member.partition("\x1f")
            rows = self.store.index_members(keys.stats(workflow, step), epoch_ms(since))
            found[(workflow, step)] = [json.loads(r) for r in rows]
        return found

    def recent_outcomes(self, workflow: str, step: str, count: int) -> list[str]:
        rows = self.store.index_last(keys.stats(workflow, step), count)
        return [json.loads(r)["o"] for r in rows]

    # -- plumbing ----------------------------------------------------------------------------

    def _waiting(self, execution_id: str, step: str | None,
                 read: ExecutionState | None = None) -> tuple[ExecutionState, Waiting]:
        state = read if read is not None and read.id == execution_id else self.store.load(
            execution_id)
        waiting = state.waiting
        if state.status is not ExecutionStatus.WAITING_FOR_INPUT or waiting is None:
            raise self._not_waiting(state, step)
        if step is not None and step not in (waiting.step, waiting.path):
            raise self._not_waiting(state, step)
        return state, waiting

    def _commit_waiting(self, state: ExecutionState, waiting: Waiting,
                        change: Change) -> CommitResult | None:
        """Commit if nothing changed since ``state`` was read (the audit head guards that:
        every change appends an event); None means look again."""
        result = self.store.commit(state, change,
                                   guard_status=(ExecutionStatus.WAITING_FOR_INPUT,),
                                   guard_waiting=waiting.path)
        if result.reason == "missing":
            raise ExecutionNotFound(state.id)
        return result if result.ok else None

    def _announce_change(self, state: ExecutionState, waiting: Waiting, kind: str,
                         actor: Actor, now: datetime, *, reason: str = "",
                         added: tuple[str, ...] = (), channel: str | None = None) -> None:
        try:
            self.notifier.review_changed(ReviewChange(
                review=review_request(state, waiting), kind=kind, actor=actor, at=now,
                reason=reason, added=tuple(added), level=waiting.level, channel=channel))
        except Exception:  # Slack being down must not undo what was recorded
            log.exception("notifier failed for %s", state.id)

    def _announce_closed(self, state: ExecutionState, outcome: str, actor: Actor,
                         input_: Mapping[str, Any], reason: str = "") -> None:
        closed = _closed(state, outcome, actor, input_, reason, self.clock())
        if closed is None:
            return
        try:
            self.notifier.review_closed(closed)
        except Exception:  # Slack being down must not undo a recorded decision
            log.exception("notifier failed for %s", state.id)

    def _closing_task(self, state: ExecutionState, outcome: str, actor: Actor,
                      input_: Mapping[str, Any], reason: str, at: datetime) -> bytes | None:
        """The notifier's work on the review as it closes, as an inbox task's entry, when it
        is one (:class:`CarriesClosing`); None otherwise (review_closed announces it)."""
        closed = _closed(state, outcome, actor, input_, reason, at)
        if closed is None or getattr(self.notifier, "closing_task", None) is None:
            return None
        task = cast(CarriesClosing, self.notifier).closing_task(closed)
        return task.encode().encode() if task is not None else None


def _closed(state: ExecutionState, outcome: str, actor: Actor, input_: Mapping[str, Any],
            reason: str, at: datetime) -> ReviewClosed | None:
    """The review ``state`` waits on, as it closes (None when it waits on none)."""
    waiting = state.waiting
    if waiting is None:
        return None
    return ReviewClosed(execution_id=state.id, workflow=state.workflow, step=waiting.step,
                        outcome=outcome, actor=actor, at=at, input=input_, reason=reason)


def schema_violations(schema: Mapping[str, Any], value: Any) -> list[dict[str, str]]:
    """Every way ``value`` breaks ``schema`` (Draft 2020-12, patterns in linear time), as
    {path, message}."""
    found = []
    for error in sorted(answer_errors(schema, value), key=lambda e: list(e.absolute_path)):
        path = "/".join(str(p) for p in error.absolute_path)
        found.append({"path": path, "message": error.message})
    return found


def _spell(options: Mapping[str, Any], level: int) -> str:
    if level == 0:
        return str(options.get("sla"))
    return str((options.get("escalation") or [])[level - 1].get("sla"))
