"""The tamper-evident audit trail: an append-only, hash-chained event log per execution.

It is a Redis list rather than a stream: Redis 7 preallocates 4 KB for every new
stream node, which alone would double what a paused execution costs. The chain,
not the data type, is what makes the trail tamper-evident.

Each event is canonical JSON ``e`` with ``h = sha256(previous h + e)``; the chain
starts from :data:`GENESIS`. The execution keeps the last hash (``ah``), so
editing, deleting or reordering any event, the last one included, breaks
verification. Building and checking the chain is pure; the store appends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.state.execution import canonical

GENESIS = "0" * 64

# Event types, as they appear in exports.
CREATED = "execution.created"
STARTED = "execution.started"
COMPLETED = "execution.completed"
FAILED = "execution.failed"
CANCELLED = "execution.cancelled"
TIMED_OUT = "execution.timed_out"
STEP_STARTED = "step.started"
STEP_COMPLETED = "step.completed"
STEP_FAILED = "step.failed"
STEP_SKIPPED = "step.skipped"
STEP_RETRY = "step.retry_scheduled"
WAITING_FOR_INPUT = "step.waiting_for_input"
DECIDED = "step.decided"
TIMER_SET = "timer.set"
TIMER_FIRED = "timer.fired"
RECOVERED = "execution.recovered"
REFUSED = "decision.refused"
APPROVAL_RECORDED = "review.approval_recorded"
ESCALATED = "review.escalated"
REMINDED = "review.reminded"
REASSIGNED = "review.reassigned"


@dataclass(frozen=True)
class AuditEntry:
    id: str  # the entry's position in the trail, from 1
    event: dict[str, Any]
    hash: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    problem: str = ""
    entry_id: str | None = None


def event(kind: str, at: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, "at": at, **{k: v for k, v in data.items() if v is not None}}


def link(previous: str, body: str) -> str:
    return hashlib.sha256((previous + body).encode()).hexdigest()


def chain(previous: str, events: Iterable[Mapping[str, Any]]) -> tuple[list[tuple[str, str]], str]:
    """Serialize and hash ``events`` after ``previous``; returns [(body, hash)] and the new head."""
    linked = []
    head = previous
    for item in events:
        body = canonical(item)
        head = link(head, body)
        linked.append((body, head))
    return linked, head


def verify(entries: Iterable[tuple[str, str, str]], head: str | None) -> Verification:
    """Check (entry id, body, hash) triples in order against the chain and the stored head."""
    previous = GENESIS
    count = 0
    for entry_id, body, digest in entries:
        count += 1
        expected = link(previous, body)
        if digest != expected:
            return Verification(False, count, f"event {count} ({entry_id}) does not match its "
                                f"hash: it was edited, or an event before it was removed",
                                entry_id)
        previous = digest
    if head is not None and previous != head:
        return Verification(False, count, "the last event does not match the execution's audit "
                            "head: events were removed from the end of the trail")
    return Verification(True, count)


def decode(entry_id: str, body: str, digest: str) -> AuditEntry:
    return AuditEntry(id=entry_id, event=json.loads(body), hash=digest)
