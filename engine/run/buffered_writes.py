"""One segment's writes to its execution: applied to the loaded state at once, sent to
Redis under the segment's lease, the results of pure steps buffered.

A pure step (no effect outside the run: console, data.set, a skip, a flow step's
choice) is not written on its own: its change is merged into the next write that must
happen anyway (a step with effects, a pause, the end of the run), so a stretch of
pure steps costs one round trip. A worker that dies before that write only makes them
run again when the run is replayed.

Every write is guarded by the execution's status and the segment's lease token, and
renews the lease. When someone else changed the run meanwhile (cancelled it, timed it
out) the write is refused and :class:`ExecutionChanged` tells the segment to let go.
When only the audit trail moved on (a reviewer's event appended), the write is made
again on the trail's new head.

A segment may begin on a decision not yet written (:class:`Deferred`: a click's worker
continues the run it decided): the decision is the first buffered change, and the first
write carries it with whatever pure steps followed, guarded as the decision's own commit
would be (the run still waiting on that step, its trail where the decider read it, its
lease free) and claiming the lease. A step with effects writes its start before it acts,
so no effect precedes the decision's write; should that write fail, nothing was written and
:class:`DecisionRaced` tells the decider to look again.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from engine.state import keys
from engine.state.execution import ExecutionState, ExecutionStatus, StepResult
from engine.state.store import Alongside, Change, CommitResult, Store

log = logging.getLogger(__name__)

_HEAD_RETRIES = 100


class ExecutionChanged(Exception):
    """Someone else changed the run (cancelled, timed out): this worker lets go."""


class DecisionRaced(Exception):
    """The write carrying a deferred decision found the run changed since the decider read
    it (decided, escalated, its trail moved on), or its lease held: nothing was written."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # the commit's: status | head | field | lease | missing


@dataclass
class Deferred:
    """A decision on a review, not yet written, for the segment that continues the run to
    write with its first write (:meth:`engine.run.runner.Runner.continue_decided`)."""

    change: Change  # the decision's writes (the inbox task it acknowledges with them)
    path: str  # the step the run must still be waiting on
    state: ExecutionState  # the run as the decision leaves it, in memory (trail: as read)
    written: Callable[[CommitResult], None]  # told once the decision is written
    result: CommitResult | None = None  # that write's
    alongside: Alongside | None = None  # another owner's commands sent with that write


class BufferedWrites:
    """The writes of one segment holding the lease ``token`` on ``state`` (with a
    ``deferred`` decision, claiming the lease by its first write)."""

    def __init__(self, store: Store, state: ExecutionState, token: str, lease_ms: int,
                 deferred: Deferred | None = None) -> None:
        self.store = store
        self.state = state
        self.token = token
        self.lease_ms = lease_ms  # what each write renews the lease to
        self.released = False  # a write let go of the lease (the run paused or ended)
        self._pending: Change | None = None
        self._pending_guard: tuple[ExecutionStatus, ...] | None = None
        self.deferred = deferred  # until written: then the lease is ours (or let go)
        if deferred is not None:
            self._pending = deferred.change
            self._pending_guard = (ExecutionStatus.WAITING_FOR_INPUT,)

    @classmethod
    def deciding(cls, store: Store, deferred: Deferred, lease_ms: int) -> BufferedWrites:
        """The writes of a segment that begins on ``deferred``, under a new token."""
        return cls(store, deferred.state, secrets.token_hex(8), lease_ms, deferred)

    def commit(self, change: Change, *,
               guard: tuple[ExecutionStatus, ...] = (ExecutionStatus.RUNNING,),
               release: bool = False, buffer: bool = False) -> None:
        """Apply ``change`` to the state and write it, with anything buffered before it,
        if the run's status is one of ``guard``; with ``buffer``, keep it for the next write."""
        for name, value in change.set.items():
            if name.startswith(keys.STEP_FIELD):
                self.state.results[name.removeprefix(keys.STEP_FIELD)] = StepResult.from_json(value)
        if change.status is not None:
            self.state.status = change.status
        if self._pending is not None:
            change = _merge(self._pending, change)
            guard = self._pending_guard or guard
            self._pending = self._pending_guard = None
        if buffer:
            self._pending, self._pending_guard = change, guard
            return
        if self.deferred is not None:
            self._write_decision(change, guard, release)
            return
        for _ in range(_HEAD_RETRIES):
            result = self.store.commit(self.state, change, guard_status=guard,
                                       guard_lease=self.token, lease_ttl_ms=self.lease_ms,
                                       release_lease=release)
            if result.ok:
                self.released = release
                return
            if result.reason == "head":  # someone appended to the trail: extend the new head
                self.state.audit_head = result.head
                continue
            log.info("execution %s changed under us (%s, now %s): letting go",
                     self.state.id, result.reason, result.status)
            raise ExecutionChanged
        raise ExecutionChanged

    def _write_decision(self, change: Change, guard: tuple[ExecutionStatus, ...],
                        release: bool) -> None:
        """The first write, carrying the deferred decision: guarded as the decision's own
        commit (no retry on a new head: the trail moving on may be the review changing)."""
        deferred = self.deferred
        assert deferred is not None
        result = self.store.commit(self.state, change, guard_status=guard,
                                   guard_waiting=deferred.path, claim_lease=self.token,
                                   lease_ttl_ms=self.lease_ms, release_lease=release,
                                   read_notes=True, alongside=deferred.alongside)
        if not result.ok:
            raise DecisionRaced(result.reason)
        self.deferred, deferred.result = None, result
        self.released = release
        deferred.written(result)

    def flush(self) -> None:
        """Write what is buffered, if anything."""
        if self._pending is not None:
            self.commit(Change())


def _merge(first: Change, then: Change) -> Change:
    """One change with the effect of ``first`` followed by ``then``."""
    merged = Change(set={**first.set, **then.set},
                    delete=[d for d in first.delete if d not in then.set] + then.delete,
                    status=then.status or first.status, events=first.events + then.events,
                    waiting=then.waiting or first.waiting,
                    waiting_score=then.waiting_score if then.waiting else first.waiting_score,
                    running=then.running or first.running,
                    running_score=then.running_score if then.running else first.running_score,
                    zadd=first.zadd + then.zadd, zrem=first.zrem + then.zrem,
                    hset=first.hset + then.hset, lrem=first.lrem + then.lrem,
                    carry=then.carry or first.carry)
    for name in then.delete:
        merged.set.pop(name, None)
    return merged
