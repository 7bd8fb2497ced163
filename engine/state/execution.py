"""An execution's state as records: statuses, step results, what it waits for.

Pure data and rules, no I/O: :mod:`engine.state.store` reads and writes these,
:mod:`engine.run.runner` decides what happens next.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

import orjson

from engine.notify import ReviewRequest

_Built = TypeVar("_Built")

LEASE_MS = 30_000  # how long a worker may go silent before its runs are taken over


class ExecutionStatus(StrEnum):
    QUEUED = "QUEUED"  # waiting for a concurrency slot (settings.concurrency, strategy queue)
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"  # on a timer: a `wait` step or a retry delay
    WAITING_FOR_INPUT = "WAITING_FOR_INPUT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    SKIPPED = "SKIPPED"  # never ran: settings.concurrency dropped it (or its queue was full, or
    # it waited longer than queue-ttl)

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.FAILED,
                      ExecutionStatus.CANCELLED, ExecutionStatus.TIMED_OUT,
                      ExecutionStatus.SKIPPED})
ACTIVE = frozenset(ExecutionStatus) - TERMINAL


class StepStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    WAITING_FOR_INPUT = "WAITING_FOR_INPUT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


TITLE_MAX = 300  # characters of a message's first line kept with what waits on it


def first_line(message: str) -> str:
    """The first non-empty line of ``message`` as written (at most :data:`TITLE_MAX`
    characters): what a review's title is made of (:attr:`engine.notify.ReviewRequest.title`)."""
    for line in message.splitlines():
        if line.strip().lstrip("#").strip():
            return line[:TITLE_MAX]
    return ""


def _elapsed_ms(start: str | None, end: str | None) -> int | None:
    """Milliseconds from ``start`` to ``end`` when :func:`iso` gives both back exactly from
    the start and that many milliseconds; else None (stored as they are)."""
    if not start or not end:
        return None
    try:
        began, ended = parse_iso(start), parse_iso(end)
    except ValueError:
        return None
    if began is None or ended is None or iso(began) != start or iso(ended) != end:
        return None
    took = round((ended - began).total_seconds() * 1000)
    if took < 0 or iso(began + timedelta(milliseconds=took)) != end:
        return None
    return took


def built(cls: type[_Built], fields: dict[str, Any]) -> _Built:
    """A frozen dataclass made from every one of its ``fields`` (each named: no default is
    filled in), without its ``__init__``, which sets each field through
    ``object.__setattr__``: this costs a tenth of it, for the records read for every row
    of every listing (:class:`Waiting`, :class:`engine.notify.ReviewRequest`). For classes
    without ``__post_init__``; the tests check that every field is made."""
    made = object.__new__(cls)
    made.__dict__.update(fields)
    return made


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return _iso(moment)


@functools.lru_cache(maxsize=4096)
def _iso(moment: datetime) -> str:
    # Kept: a listing writes each review's start several times (its buttons, its posts'
    # check), and reviews are listed again and again.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso_from_ms(ms: int) -> str:
    """Epoch milliseconds as :func:`iso` writes a moment (exact: no float in between)."""
    return iso(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)) or ""


def started_at(t0: str | bytes | None, t0ms: str | bytes | None) -> str:
    """An execution's start as stored: ``t0`` when it is there (a start not in whole
    milliseconds, or written by an earlier version), else from ``t0ms``."""
    if t0 is not None:
        return t0.decode() if isinstance(t0, bytes) else t0
    return iso_from_ms(int(t0ms or 0))


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch: the scores of time-ordered indexes."""
    return int(moment.timestamp() * 1000)


def dumps(value: Any) -> str:
    """Compact JSON as stored in Redis."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_default)


def loads(text: str | bytes | bytearray) -> Any:
    """A stored JSON value, read with orjson (two to three times json's speed on a run's
    records); what orjson refuses and json reads (a lone surrogate escaped, an integer past
    64 bits, NaN) is read by json, which raises json.JSONDecodeError on what is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def canonical(value: Any) -> str:
    """Canonical JSON for hashing: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True,
                      default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(frozen=True)
class StepResult:
    """One step instance's result, stored under ``s:{path}``."""

    status: StepStatus
    output: Any = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    wake_at: str | None = None  # WAITING: when the timer is due
    resumed_by: Mapping[str, Any] | None = None  # human steps: the actor
    resumed_at: str | None = None

    def to_json(self) -> str:
        """The result as stored: None left out, and the end as milliseconds after the
        start (``d1``) when both are timestamps as :func:`iso` writes them."""
        data: dict[str, Any] = {"st": self.status.value}
        took = _elapsed_ms(self.started_at, self.finished_at)
        for key, value in (("out", self.output), ("err", self.error), ("t0", self.started_at),
                           ("t1", self.finished_at if took is None else None),
                           ("d1", took), ("wake", self.wake_at),
                           ("by", self.resumed_by), ("at", self.resumed_at)):
            if value is not None:
                data[key] = value
        if self.attempts:
            data["n"] = self.attempts
        return dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> StepResult:
        data = loads(text)
        finished = data.get("t1")
        if "d1" in data and data.get("t0"):
            start = parse_iso(data["t0"])
            assert start is not None
            finished = iso(start + timedelta(milliseconds=int(data["d1"])))
        return cls(status=StepStatus(data["st"]), output=data.get("out"), error=data.get("err"),
                   started_at=data.get("t0"), finished_at=finished,
                   attempts=data.get("n", 0), wake_at=data.get("wake"),
                   resumed_by=data.get("by"), resumed_at=data.get("at"))

    def evolve(self, **changes: Any) -> StepResult:
        return replace(self, **changes)

    def scope_entry(self) -> dict[str, Any]:
        """What templates and conditions see as ``steps.<name>``."""
        entry: dict[str, Any] = {"output": self.output, "error": self.error,
                                 "status": self.status.value}
        if self.resumed_by is not None:
            entry["resumedBy"] = self.resumed_by
            entry["resumedAt"] = self.resumed_at
        return entry


@dataclass(frozen=True)
class Waiting:
    """What a WAITING_FOR_INPUT execution waits for, stored under ``w``.

    The message itself is stored once, in the audit trail's ``step.waiting_for_input``
    event, with its SHA-256; ``w`` keeps that hash and the message's first line (what a
    listing shows). :meth:`engine.state.store.Store.load` puts the message back from the
    trail; a listing (``Store.waiting_reviews``) leaves ``message`` as that first line, with
    ``complete`` False.
    """

    step: str  # the step's name
    path: str  # the step instance's path (differs inside foreach)
    step_type: str
    message: str
    message_sha256: str
    schema: Mapping[str, Any]
    since: str
    approvers: tuple[str, ...] = ()  # who may decide now: every level reached, plus reassigned
    due_at: str | None = None  # the step timeout or settings.timeout, whichever is first
    options: Mapping[str, Any] = field(default_factory=dict)
    level: int = 0  # 0: the first approvers; n: escalated n times
    level_due: str | None = None  # when the current level's SLA passes
    first_due: str | None = None  # when the first level's SLA passed or passes (breaches)
    remind_at: str | None = None
    approvals: tuple[Mapping[str, Any], ...] = ()  # quorum: approvals recorded so far
    audience: tuple[str, ...] = ()  # resolved user ids who may decide (set by the notifier)
    handed: tuple[str, ...] = ()  # who handed their seat on (reassigned it) and holds none
    complete: bool = field(default=True, compare=False)  # False: message is its first line

    def to_json(self) -> str:
        # "path" always: engine.run.reviews guards its commits on it.
        data: dict[str, Any] = {
            "step": self.step, "path": self.path, "type": self.step_type,
            "ti": first_line(self.message), "sha": self.message_sha256, "schema": self.schema,
            "since": self.since}
        for key, value in (("approvers", self.approvers), ("due", self.due_at),
                           ("opt", self.options), ("lv", self.level),
                           ("ldue", self.level_due), ("fdue", self.first_due),
                           ("rem", self.remind_at), ("apv", self.approvals),
                           ("aud", self.audience), ("hnd", self.handed)):
            if value:
                data[key] = value
        return dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Waiting:
        data = loads(text)
        # Before the message was stored once, ``w`` held it whole.
        complete = "message" in data
        return built(cls, {
            "step": data["step"], "path": data["path"], "step_type": data["type"],
            "message": data["message"] if complete else str(data.get("ti") or ""),
            "message_sha256": data["sha"], "schema": data["schema"], "since": data["since"],
            "approvers": tuple(data.get("approvers") or ()), "due_at": data.get("due"),
            "options": data.get("opt") or {}, "level": int(data.get("lv") or 0),
            "level_due": data.get("ldue"), "first_due": data.get("fdue"),
            "remind_at": data.get("rem"), "approvals": tuple(data.get("apv") or ()),
            "audience": tuple(data.get("aud") or ()), "handed": tuple(data.get("hnd") or ()),
            "complete": complete})

    @property
    def next_deadline(self) -> str | None:
        """The earliest moment something happens on its own: an SLA or a timeout."""
        moments = [m for m in (self.level_due, self.due_at) if m]
        return min(moments, key=lambda m: parse_iso(m) or 0) if moments else None

    def evolve(self, **changes: Any) -> Waiting:
        return replace(self, **changes)


@dataclass(frozen=True)
class Decision:
    """A human step's answer, stored under ``dec:{path}`` and in the audit trail."""

    step: str
    path: str
    actor: Mapping[str, Any]
    at: str
    input: Mapping[str, Any]
    message_sha256: str
    outcome: str  # approved | denied | submitted | timed_out

    def to_json(self) -> str:
        return dumps({"step": self.step, "path": self.path, "actor": self.actor, "at": self.at,
                      "input": self.input, "sha": self.message_sha256, "outcome": self.outcome})

    @classmethod
    def from_json(cls, text: str | bytes) -> Decision:
        data = loads(text)
        return cls(step=data["step"], path=data["path"], actor=data["actor"], at=data["at"],
                   input=data["input"], message_sha256=data["sha"], outcome=data["outcome"])


@dataclass(frozen=True)
class ParentLink:
    """A child execution's link to the run that started it, stored under ``par``.

    ``workflow.execute`` and ``workflow.executeAsync`` start a child of another workflow;
    a ``parallel`` step starts one child per branch, of its own definition, running only
    that branch's steps (``branch``) in the parent's scope as it was (``scope``: the
    outputs of the steps before, and ``foreach`` for a fan-out)."""

    id: str  # the parent execution
    path: str  # the parent's step that started it
    awaited: bool = True  # the parent waits: the child reports its end (engine.run.children)
    depth: int = 1  # how deep in workflow.execute calls; a top-level run is 0
    branch: int | None = None  # a parallel branch: its index
    scope: Mapping[str, Any] | None = None  # a parallel branch: {"steps": ..., "frame": ...}

    def to_json(self) -> str:
        data: dict[str, Any] = {"id": self.id, "path": self.path, "depth": self.depth}
        if not self.awaited:
            data["async"] = True
        if self.branch is not None:
            data["branch"] = self.branch
            data["scope"] = self.scope or {}
        return dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> ParentLink:
        data = loads(text)
        return cls(id=data["id"], path=data["path"], awaited=not data.get("async"),
                   depth=int(data.get("depth", 1)), branch=data.get("branch"),
                   scope=data.get("scope"))


@dataclass(frozen=True)
class ChildReport:
    """What a finished child tells its parent, in the parent's children hash
    (:func:`engine.state.keys.children`), written in the child's final commit."""

    id: str
    status: ExecutionStatus
    outputs: Any = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    steps: Mapping[str, Any] = field(default_factory=dict)  # a branch: its steps' scope entries

    def to_json(self) -> str:
        return dumps({"id": self.id, "st": self.status.value, "out": self.outputs,
                      "err": self.error, "t0": self.started_at, "t1": self.finished_at,
                      "steps": self.steps})

    @classmethod
    def from_json(cls, text: str | bytes) -> ChildReport:
        data = loads(text)
        return cls(id=data["id"], status=ExecutionStatus(data["st"]), outputs=data.get("out"),
                   error=data.get("err"), started_at=data.get("t0"),
                   finished_at=data.get("t1"), steps=data.get("steps") or {})


@dataclass
class ExecutionState:
    """An execution as loaded from Redis; the runner mutates its copy while it holds the lease."""

    id: str
    workflow: str
    digest: str
    status: ExecutionStatus
    started_at: str
    event: Any
    audit_head: str
    finished_at: str | None = None
    requested_by: str | None = None
    error: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    waiting: Waiting | None = None
    results: dict[str, StepResult] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    outputs: Any = None  # what `workflow.output` emitted (the run's outputs)
    parent: ParentLink | None = None  # a child execution: who started it

    @property
    def depth(self) -> int:
        """How deep in ``workflow.execute`` calls this run is (a top-level run is 0)."""
        return self.parent.depth if self.parent is not None else 0


def decision_outcome(input_: Mapping[str, Any], decision_field: str = "approved") -> str:
    """approved / denied when the answer carries a boolean decision, else submitted."""
    value = input_.get(decision_field)
    if value is True:
        return "approved"
    if value is False:
        return "denied"
    return "submitted"


def review_request(state: ExecutionState, waiting: Waiting) -> ReviewRequest:
    """The :class:`ReviewRequest` a reviewer sees for ``state`` waiting on ``waiting``."""
    return review_for(state.id, state.workflow, state.requested_by, waiting)


def review_for(execution_id: str, workflow: str, requested_by: str | None,
               waiting: Waiting) -> ReviewRequest:
    """:func:`review_request` from the three fields of the execution it reads (a listing
    reads no more: :func:`engine.state.store.waiting_review`)."""
    opts = waiting.options
    # A waitForApproval's own button labels; ReviewRequest holds the defaults.
    labels = {name: str(opts[key]) for key, name in (("approveLabel", "approve_label"),
                                                     ("rejectLabel", "reject_label"))
              if opts.get(key) and waiting.step_type == "waitForApproval"}
    created = parse_iso(waiting.since)
    assert created is not None
    external = opts.get("channels") or {}
    return built(ReviewRequest, {
        "execution_id": execution_id,
        "workflow": workflow,
        "step": waiting.step,
        "step_type": waiting.step_type,
        "message": waiting.message,
        "message_sha256": waiting.message_sha256,
        "schema": waiting.schema,
        "created_at": created,
        "decision_field": str(opts.get("decision-field") or "approved"),
        "approvers": tuple(waiting.approvers),
        "channel": opts.get("channel"),
        "channels": tuple(str(c) for c in
                          (external.get("slack_api") or {}).get("channels") or ()),
        "webhook": "slack" in external,
        "requested_by": requested_by,
        "due_at": parse_iso(waiting.due_at),
        "approve_label": labels.get("approve_label", ReviewRequest.approve_label),
        "reject_label": labels.get("reject_label", ReviewRequest.reject_label),
        "allow_self_approval": bool(opts.get("allow-self-approval", False)),
        "approvals_required": int(opts.get("approvals-required") or 1),
        "options": dict(opts),
        "level": waiting.level,
        "sla_due_at": parse_iso(waiting.level_due),
        "approvals": tuple(waiting.approvals),
        "audience": tuple(waiting.audience),
        "handed": tuple(waiting.handed),
    })
