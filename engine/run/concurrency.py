"""``settings.concurrency`` enforced: which group a run belongs to, and what happens when
its group has no free slot (Elastic's collision strategies).

    settings:
      concurrency:
        key: "{{ event.host.name }}"   # groups runs; runs of any workflow with the same
        strategy: drop                 # rendered key share the group, as in Kibana
        max: 1

Defaults and edge cases follow Kibana's ConcurrencyManager: without a ``key``, or with one
that renders empty, or without a ``strategy``, nothing is limited; a key whose template
fails to render is taken as literal text; ``max`` defaults to 1, ``queue-size`` to 100 and
``queue-ttl`` to 24h. A run that takes a slot holds it until it ends, whatever it waits
for meanwhile (a review, a timer): a waiting approval is a run in progress.

    drop                the new run is SKIPPED (its record says why); the others go on
    cancel-in-progress  the oldest runs holding a slot are CANCELLED (their audit trail
                        names the run that displaced them) and the new one starts
    queue               the new run waits, QUEUED, and starts when a slot frees (FIFO); a
                        full queue (queue-size) skips it; past queue-ttl it is skipped when
                        its turn comes

The decision is one Redis script (:class:`engine.state.slots.Slots`), so runs racing for
the last slot never both get it. A slot is given back when the run ends, however it ends
(:meth:`Concurrency.ended`: the runner's finish, a cancel, a time-out), exactly once, and
the group's queue moves on, whichever worker ends it. A worker that dies between a run's
end and giving its slot back leaves it to the workers' sweep (:meth:`Concurrency.reconcile`),
as does a process that took a slot and died before writing its run (after a lease), or
one that died after cancel-in-progress took the slots of older runs and before it
cancelled them (:meth:`engine.run.engine.Engine.recover_stalled` cancels them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.definition.durations import parse_duration
from engine.definition.inputs import input_values
from engine.definition.model import Workflow
from engine.definition.templates import render_text
from engine.errors import DurationError, ExecutionNotFound, TemplateError
from engine.notify import Actor
from engine.run.timers import Scheduler, Timer
from engine.state import audit
from engine.state.execution import (
    ExecutionState,
    ExecutionStatus,
    epoch_ms,
    iso,
)
from engine.state.keys import concurrency_group_id
from engine.state.slots import Admission, Slots
from engine.state.store import Change, Store

log = logging.getLogger(__name__)

DEFAULT_MAX = 1
DEFAULT_QUEUE_SIZE = 100  # Kibana's DEFAULT_CONCURRENCY_QUEUE_SIZE
DEFAULT_QUEUE_TTL = "24h"  # Kibana's DEFAULT_CONCURRENCY_QUEUE_TTL
STRATEGIES = ("drop", "cancel-in-progress", "queue")

SYSTEM_CONCURRENCY = Actor(id="system:concurrency", name="system:concurrency", source="system")


@dataclass(frozen=True)
class Policy:
    """A workflow's ``settings.concurrency`` with Kibana's defaults filled in."""

    key: str
    strategy: str
    max_runs: int = DEFAULT_MAX
    queue_size: int = DEFAULT_QUEUE_SIZE
    queue_ttl: str = DEFAULT_QUEUE_TTL

    @property
    def queue_ttl_ms(self) -> int:
        return int(parse_duration(self.queue_ttl).total_seconds() * 1000)


@dataclass(frozen=True)
class StartedRun:
    """What starting a run came to: PENDING (it runs), QUEUED or SKIPPED (with why)."""

    execution_id: str
    status: ExecutionStatus
    group: str | None = None  # its concurrency group, when its workflow limits one
    reason: str | None = None  # SKIPPED: why, as its record says
    skipped_because: str | None = None  # SKIPPED: dropped | queue_full
    position: int | None = None  # QUEUED: 1 for the head of the queue
    displaced: tuple[str, ...] = ()  # cancel-in-progress: runs it displaced


def policy_of(workflow: Workflow) -> Policy | None:
    """The workflow's concurrency policy; None when it limits nothing."""
    raw = workflow.settings.concurrency
    key = str(raw.get("key") or "").strip()
    strategy = raw.get("strategy")
    if not key or strategy not in STRATEGIES:
        return None
    try:
        ttl = str(raw.get("queue-ttl") or DEFAULT_QUEUE_TTL)
        parse_duration(ttl)
    except DurationError:  # `signoff validate` refuses it; a stored definition may predate that
        ttl = DEFAULT_QUEUE_TTL
    return Policy(key=key, strategy=str(strategy), max_runs=int(raw.get("max") or DEFAULT_MAX),
                  queue_size=int(raw.get("queue-size") or DEFAULT_QUEUE_SIZE), queue_ttl=ttl)


def group_of(policy: Policy, workflow: Workflow, state: ExecutionState) -> str | None:
    """The run's concurrency group: its key rendered against what the run starts with (the
    event, inputs, consts, its id and start, the workflow's name); None when it renders
    empty (no limit, as Kibana). A key that does not render is a literal group name."""
    scope: Mapping[str, Any] = {
        "event": state.event, "inputs": input_values(workflow, state.event),
        "consts": dict(workflow.consts),
        "execution": {"id": state.id, "startedAt": state.started_at},
        "workflow": {"name": workflow.name},
    }
    try:
        rendered = render_text(policy.key, scope).strip()
    except TemplateError:
        return policy.key
    return rendered or None


class Concurrency:
    """Admits runs into their groups and gives their slots back; one per Engine and Runner."""

    def __init__(self, store: Store, scheduler: Scheduler,
                 load_workflow: Callable[[str], Workflow], clock: Callable[[], datetime],
                 lease_ms: int) -> None:
        self.store = store
        self.scheduler = scheduler
        self.load_workflow = load_workflow  # digest -> Workflow
        self.clock = clock
        self.lease_ms = lease_ms
        self.slots = Slots(store.redis)

    # -- start -------------------------------------------------------------------------------

    def start(self, state: ExecutionState, workflow: Workflow, policy: Policy, group: str,
              created: dict[str, Any], timers: Sequence[Timer],
              displace: Callable[[str], None]) -> StartedRun:
        """Admit a new run into ``group`` and write it as the decision says: PENDING with its
        job enqueued, QUEUED, or SKIPPED. ``state`` is the run as it would start (PENDING);
        ``displace`` cancels a run cancel-in-progress took the slot of, before this one starts."""
        now = self.clock()
        admission = self.slots.admit(group, state.id, strategy=policy.strategy,
                                     max_runs=policy.max_runs, queue_size=policy.queue_size,
                                     queue_ttl_ms=policy.queue_ttl_ms, now_ms=epoch_ms(now))
        at = iso(now) or ""
        if admission.decision == "run":
            for displaced in admission.displaced:
                displace(displaced)
                self.slots.forget_displaced(displaced)
            self.store.create(state, workflow.text, [created],
                              enqueue=lambda pipe: self.scheduler.enqueue_advance(
                                  state.id, pipeline=pipe),
                              timers=[timer.entry for timer in timers])
            for timer in timers:
                self.scheduler.schedule(timer)
            return StartedRun(state.id, ExecutionStatus.PENDING, group,
                              displaced=admission.displaced)
        if admission.decision == "queued":
            state.status = ExecutionStatus.QUEUED
            queued = audit.event(audit.QUEUED, at, group=group, strategy=policy.strategy,
                                 max=policy.max_runs, position=admission.position,
                                 queueTtl=policy.queue_ttl)
            self.store.create(state, workflow.text, [created, queued],
                              timers=[timer.entry for timer in timers])
            for timer in timers:
                self.scheduler.schedule(timer)
            # A slot may have freed while the record was being written: whoever freed it
            # found no record to start, so it is ours to start.
            if self.slots.holds(group, state.id):
                self._start_queued(state.id, group, freed_by=None)
            return StartedRun(state.id, ExecutionStatus.QUEUED, group,
                              position=admission.position)
        return self._create_skipped(state, workflow, policy, group, admission, created, at)

    def _create_skipped(self, state: ExecutionState, workflow: Workflow, policy: Policy,
                        group: str, admission: Admission, created: dict[str, Any],
                        at: str) -> StartedRun:
        if admission.decision == "full":
            because = "queue_full"
            reason = (f"concurrency group {group!r}: its queue is full "
                      f"(queue-size: {policy.queue_size})")
        else:
            because = "dropped"
            reason = (f"concurrency group {group!r} is at its max of {policy.max_runs} "
                      f"running (strategy: drop)")
        state.status = ExecutionStatus.SKIPPED
        self.store.create(state, workflow.text, [created])
        self.store.commit(state, Change(set={"t1": at, "err": reason}, events=[audit.event(
            audit.SKIPPED, at, group=group, reason=reason, actor=SYSTEM_CONCURRENCY.to_json())]))
        state.finished_at, state.error = at, reason
        return StartedRun(state.id, ExecutionStatus.SKIPPED, group, reason=reason,
                          skipped_because=because)

    # -- end ---------------------------------------------------------------------------------

    def ended(self, state: ExecutionState, workflow: Workflow | None = None) -> None:
        """The run ended (however): give its slot back and let its group's queue move on.
        Never raises: a slot it fails to give back is the sweep's to find. A child
        execution (a workflow.execute call, a parallel branch) was never admitted: it holds
        no slot of its own."""
        if state.parent is not None:
            return
        try:
            workflow = workflow or self.load_workflow(state.digest)
            policy = policy_of(workflow)
            group = group_of(policy, workflow, state) if policy else None
            if group is not None:
                self._release(group, state.id)
        except Exception:
            log.exception("could not give back the concurrency slot of %s", state.id)

    def _release(self, group: str, execution_id: str) -> None:
        now = self.clock()
        done = self.slots.release(concurrency_group_id(group), execution_id,
                                  now_ms=epoch_ms(now), deadline_ms=epoch_ms(now) + self.lease_ms)
        for promoted in done.promoted:
            self._start_queued(promoted, group, freed_by=execution_id or None)
        for expired in done.expired:
            self._skip_expired(expired, group)

    def _start_queued(self, execution_id: str, group: str, freed_by: str | None) -> None:
        """A queued run was handed a slot: start it (once, whoever else tries)."""
        for _ in range(20):
            try:
                state = self.store.load(execution_id)
            except ExecutionNotFound:
                return  # not written yet: its starter finds the slot and starts it
            if state.status is not ExecutionStatus.QUEUED:
                if state.status.is_terminal:  # it ended while waiting: the slot goes on
                    self._release(group, execution_id)
                return
            now = self.clock()
            change = Change(status=ExecutionStatus.PENDING, running="add",
                            running_score=epoch_ms(now) + 2 * self.lease_ms,
                            events=[audit.event(audit.DEQUEUED, iso(now) or "", group=group,
                                                freedBy=freed_by)])
            result = self.store.commit(state, change, guard_status=(ExecutionStatus.QUEUED,))
            if result.ok:
                self.scheduler.enqueue_advance(execution_id)
                return
            if result.reason == "missing":
                return
        log.warning("could not start queued run %s: it kept changing", execution_id)

    def _skip_expired(self, execution_id: str, group: str) -> None:
        try:
            state = self.store.load(execution_id)
        except ExecutionNotFound:
            return
        workflow = self.load_workflow(state.digest)
        policy = policy_of(workflow)
        ttl = policy.queue_ttl if policy else DEFAULT_QUEUE_TTL
        for _ in range(20):
            if state.status is not ExecutionStatus.QUEUED:
                self.store.forget_runnable(execution_id)
                return
            at = iso(self.clock()) or ""
            reason = f"concurrency group {group!r}: waited in the queue past its queue-ttl ({ttl})"
            result = self.store.commit(state, Change(
                status=ExecutionStatus.SKIPPED, running="remove", set={"t1": at, "err": reason},
                events=[audit.event(audit.SKIPPED, at, group=group, reason=reason,
                                    actor=SYSTEM_CONCURRENCY.to_json())]),
                guard_status=(ExecutionStatus.QUEUED,))
            if result.ok or result.reason == "missing":
                return
            state = self.store.load(execution_id)

    # -- recovery ----------------------------------------------------------------------------

    def recover(self, state: ExecutionState) -> None:
        """A QUEUED run in the running index: it was taken off its queue and whoever took it
        died before starting (or skipping) it. Finish the hand-over."""
        workflow = self.load_workflow(state.digest)
        policy = policy_of(workflow)
        group = group_of(policy, workflow, state) if policy else None
        if group is None:
            self.store.forget_runnable(state.id)
            return
        if self.slots.holds(group, state.id):
            self._start_queued(state.id, group, freed_by=None)
        elif self.slots.waits(group, state.id):
            self.store.forget_runnable(state.id)
        else:
            self._skip_expired(state.id, group)

    def reconcile(self) -> list[str]:
        """Give back the slots of runs that ended (or were never written) without giving
        them back, their worker dead in between, and move on every queue with runs waiting;
        returns the runs whose slots were given back. Three round trips however many groups
        are in use, and one more for each group given a slot back or with a queue."""
        now_ms = epoch_ms(self.clock())
        groups = self.slots.groups()
        occupancy = self.slots.occupancy(list(groups))
        holders = [execution_id for held, _ in occupancy for execution_id, _ in held]
        statuses = dict(zip(holders, self.slots.statuses(holders), strict=True))
        freed: list[str] = []
        for group, (held, waiting) in zip(groups.values(), occupancy, strict=True):
            for execution_id, since_ms in held:
                status = statuses[execution_id]
                gone = status is None and since_ms < now_ms - self.lease_ms
                if gone or (status is not None and ExecutionStatus(status).is_terminal):
                    self._release(group, execution_id)
                    freed.append(execution_id)
            if waiting:
                self._release(group, "")  # skips the expired, fills free slots
        return freed


def displacement_reason(group: str, by: str) -> str:
    """Why a run was cancelled by cancel-in-progress, naming the run that took its slot."""
    return (f"cancelled by concurrency: run {by} took its slot in group {group!r} "
            f"(strategy: cancel-in-progress)")
