"""The durable execution store: every read and write of an execution goes through here.

State changes are atomic: one Lua script (:data:`engine.state.lua.COMMIT`) checks guards
(the status the change expects, the audit head it extends, the lease it holds), writes
the fields, moves the indexes and appends the audit events, all or nothing. Two
reviewers at once, a double click or a cancel racing a worker can therefore never
produce two decisions or a lost one. The script is given every key it may touch: the
execution's, every status index and the other indexes the change names.

The audit events are hashed here, in Python, before the script appends them: with an
audit key (``SIGNOFF_AUDIT_KEY``) each link is an HMAC under it (:mod:`engine.state.audit`),
and the key never goes to Redis.

Large texts are stored once and compressed: a review's message in its audit event, read
back into what the run waits on when it is loaded (:mod:`engine.state.messages`), the
event and the plug-ins' large annotations with zlib (:mod:`engine.state.compact`).

A store is also the :class:`engine.state.indexes.Indexes` the listings read and the
worker side keeps its timers in. Plug-ins' small values and the API tokens' records
(:mod:`engine.state.tokens`) go through here too, so a Redis that cannot be reached is
:class:`engine.errors.StoreUnavailable` in one place. Only RQ and the inboxes
(:mod:`engine.state.inbox`) use the client directly.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from engine.errors import (
    DefinitionMissing,
    ExecutionNotFound,
    StoreUnavailable,
    TokenError,
    TokenExists,
    TokenNotFound,
)
from engine.notify import ReviewRequest
from engine.state import audit, compact, keys, lua, messages
from engine.state.batch import Batch
from engine.state.execution import (
    ChildReport,
    Decision,
    ExecutionState,
    ExecutionStatus,
    ParentLink,
    StepResult,
    Waiting,
    canonical,
    dumps,
    epoch_ms,
    iso_from_ms,
    loads,
    parse_iso,
    review_for,
    started_at,
)
from engine.state.indexes import Indexes, reply_text
from engine.state.tokens import ApiToken

log = logging.getLogger(__name__)


def connect(url: str) -> redis.Redis:
    """A Redis client that rides out restarts and fail-overs instead of failing at once."""
    return redis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=30),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
        socket_keepalive=True,
        socket_connect_timeout=5,
    )


def connect_async(url: str) -> redis.asyncio.Redis:
    """An asyncio Redis client for a web process's event loop; it retries for about a
    second, not longer: a request waiting on it has an answer due (Slack's 3 s)."""
    from redis.asyncio.retry import Retry as AsyncRetry

    return redis.asyncio.Redis.from_url(
        url,
        retry=AsyncRetry(ExponentialBackoff(cap=0.5, base=0.05), retries=4),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        socket_keepalive=True,
        socket_connect_timeout=2,
    )


@dataclass(frozen=True)
class CommitResult:
    ok: bool
    status: str
    head: str
    reason: str  # ok | status | head | field | lease | missing
    # read_notes: the run's annotations (plug-ins' notes, n:…) as the commit left them, stored
    notes: Mapping[str, bytes] = field(default_factory=dict)
    carried: bool = False  # Change.carry: the other entry took the acknowledged one's place
    # what the commands sent alongside the commit made of their replies (Alongside), once
    # it was applied; None when none were sent, or their reader failed
    alongside: Any = None


# Commands of another owner sent in the same round trip as a commit, after it
# (Store.commit's ``alongside``): queued in the batch, given a guard (the execution's hash
# key, its field holding the trail's head, and the head the commit leaves, as stored) that
# those that change anything check first, so that they act only once the commit applied.
# Returns the reader of their replies, called only once the commit applied.
Alongside = Callable[[Batch, tuple[str, str, bytes]], Callable[[Sequence[Any]], Any]]


@dataclass
class Change:
    """A set of writes to one execution, applied atomically by :meth:`Store.commit`."""

    set: dict[str, str] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    status: ExecutionStatus | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    waiting: str | None = None  # add | remove
    waiting_score: float = 0
    running: str | None = None  # add | remove
    running_score: float = 0
    zadd: list[tuple[str, float, str]] = field(default_factory=list)  # other indexes: key, score, member
    zrem: list[tuple[str, str]] = field(default_factory=list)  # key, member
    hset: list[tuple[str, str, str]] = field(default_factory=list)  # other hashes: key, field, value
    # entries taken off lists (one each) with the change: an inbox task it acknowledges
    lrem: list[tuple[str, bytes]] = field(default_factory=list)  # key, entry
    # (list, entry, other, inbox): the entry taken off the list, once, and, when ``inbox``
    # (a list) is empty, ``other`` put on the list in its place: an inbox task acknowledged
    # by the change hands its drain the task that follows from it (CommitResult.carried)
    carry: tuple[str, bytes, bytes, str] | None = None

    def step(self, path: str, result: StepResult) -> Change:
        self.set[keys.step_field(path)] = result.to_json()
        return self


class Store(Indexes):
    """Executions, their audit trails and indexes in Redis."""

    def __init__(self, client: redis.Redis, *, audit_key: bytes | None = None) -> None:
        super().__init__(client)
        self.audit_key = audit_key  # SIGNOFF_AUDIT_KEY: audit links are HMACs under it
        self._commit = client.register_script(lua.COMMIT)
        self._release = client.register_script(lua.RELEASE_LEASE)
        self._annotate = client.register_script(lua.ANNOTATE)
        self._drop_words = client.register_script(lua.DROP_WORDS)
        self._cas = client.register_script(lua.COMPARE_AND_SET)
        self._add_words = client.register_script(lua.ADD_WORDS)
        self._add_token = client.register_script(lua.ADD_TOKEN)
        self._revoke_token = client.register_script(lua.REVOKE_TOKEN)
        self._load_with_message = client.register_script(messages.LOAD_WITH_MESSAGE)
        self._review_page = client.register_script(lua.REVIEW_PAGE)

    # -- definitions -------------------------------------------------------------------------

    def definition_text(self, digest: str) -> str:
        text = self._call(self.redis.get, keys.definition(digest))
        if text is None:
            raise DefinitionMissing(digest)
        return text.decode() if isinstance(text, bytes) else str(text)

    # -- create ------------------------------------------------------------------------------

    def create(self, state: ExecutionState, definition_text: str, events: Sequence[dict[str, Any]],
               *, enqueue: Callable[[Any], None] | None = None,
               timers: Sequence[tuple[str, float, str]] = ()) -> None:
        """Write a new execution, its first audit events and indexes (and the index entries
        of its ``timers``), and enqueue its job, atomically."""
        event_text = dumps(state.event)
        linked, head = audit.chain(audit.GENESIS, events, self.audit_key, event_text)
        started_ms = _ms(state.started_at)
        fields: dict[Any, Any] = {
            "wf": state.workflow, "d": _digest_stored(state.digest), "st": state.status.value,
            "t0ms": str(started_ms), "ev": compact.pack(event_text),
            "ah": audit.head_stored(head),
        }
        if state.started_at != iso_from_ms(started_ms):  # else read back from t0ms
            fields["t0"] = state.started_at
        if state.requested_by:
            fields["rb"] = state.requested_by
        if state.variables:
            fields["v"] = dumps(state.variables)
        if state.parent is not None:
            fields["par"] = state.parent.to_json()
        pipe = self.redis.pipeline(transaction=True)
        if enqueue is not None:  # RQ opens the MULTI itself, so it goes first
            enqueue(pipe)
        pipe.set(keys.definition(state.digest), definition_text, nx=True)
        pipe.hset(keys.execution(state.id), mapping=fields)
        for body, digest in linked:
            pipe.rpush(keys.audit(state.id), audit.stored(digest, body))
        pipe.zadd(keys.index_status(state.status.value), {state.id: started_ms})
        pipe.zadd(keys.index_workflow(state.workflow), {state.id: started_ms})
        for key, score, member in timers:
            pipe.zadd(key, {member: score})
        self._call(pipe.execute)
        state.audit_head = head

    # -- read --------------------------------------------------------------------------------

    def load(self, execution_id: str) -> ExecutionState:
        """The execution, its review's message (when it waits for input) read back from its
        audit trail in the same round trip."""
        raw, trail = self._call(self._load_with_message,
                                keys=[keys.execution(execution_id), keys.audit(execution_id)])
        if not raw:
            raise ExecutionNotFound(execution_id)
        state = _state_from_hash(execution_id, dict(zip(raw[::2], raw[1::2], strict=True)))
        _complete(state, trail)
        return state

    def load_annotated(self, execution_id: str, key: str, *,
                       values: Sequence[str] = ()) -> Annotated:
        """:meth:`load`, :meth:`annotation` ``key``, the small values ``values`` (as
        :meth:`get_values`) and the audit trail's stored entries (where
        :func:`engine.state.messages.find` finds a review's message), in one round trip (a
        MULTI: the execution and its trail are read together)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(keys.execution(execution_id))
        pipe.lrange(keys.audit(execution_id), 0, -1)  # the review's message is kept there
        for name in values:
            pipe.get(name)
        raw, trail, *found = self._call(pipe.execute)
        return self.read_annotated(execution_id, key, raw, trail, found)

    def read_annotated(self, execution_id: str, key: str, raw: Mapping[bytes, bytes] | list[bytes],
                       trail: list[bytes], values: list[bytes | None]) -> Annotated:
        """:meth:`load_annotated`'s answer from what was read elsewhere, as read: the
        execution's hash (HGETALL's reply, or a script's flat list of fields and values), its
        audit trail and the small values (an inbox task's :attr:`Task.reads
        <engine.state.inbox.Task.reads>`, read as it was taken)."""
        if isinstance(raw, list):
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        if not raw:
            raise ExecutionNotFound(execution_id)
        state = _state_from_hash(execution_id, raw)
        _complete(state, trail)
        return annotated(state, key, _notes(raw), trail, values)

    def review_message(self, execution_id: str, sha256: str) -> str | None:
        """The message a review of the execution showed its reviewers, known by its SHA-256,
        from the audit trail (where it is stored once); None when the trail has no such
        message."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lrange(keys.audit(execution_id), 0, -1)
        pipe.hget(keys.execution(execution_id), "ev")
        rows, event = self._call(pipe.execute)
        return messages.find(rows, sha256, compact.unpack(event) if event is not None else None)

    def event_text(self, execution_id: str) -> str | None:
        """The execution's event as stored (its JSON): what long review messages in its
        audit trail are compressed against (:func:`engine.state.audit.packed`)."""
        raw = self._call(self.redis.hget, keys.execution(execution_id), "ev")
        return compact.unpack(raw) if raw is not None else None

    def _complete_message(self, state: ExecutionState) -> None:
        """Put the review's message back into ``state.waiting`` when it holds only its
        first line (a second round trip, for runs that wait for input)."""
        waiting = state.waiting
        if waiting is not None and not waiting.complete:
            _complete(state, self._call(self.redis.lrange, keys.audit(state.id), 0, -1))

    def waiting_reviews(self, ids: Sequence[str]) -> list[ReviewRequest | None]:
        """The review each of ``ids`` waits on, as a listing shows it, in one round trip:
        None where the execution is gone or waits for no input. Its message is its first
        line: :meth:`load` reads it whole (see :func:`waiting_review`)."""
        pipe = self.redis.pipeline(transaction=False)
        for execution_id in ids:
            pipe.hmget(keys.execution(execution_id), *_REVIEW_FIELDS)
        rows = self._call(pipe.execute)
        return [waiting_review(execution_id, row) for execution_id, row in zip(ids, rows, strict=True)]

    def annotations(self, ids: Sequence[str], key: str) -> list[Any]:
        """Field ``n:{key}`` of several executions, in one round trip (None where unset)."""
        pipe = self.redis.pipeline(transaction=False)
        for execution_id in ids:
            pipe.hget(keys.execution(execution_id), keys.annotation_field(key))
        return [loads(compact.unpack(raw)) if raw is not None else None
                for raw in self._call(pipe.execute)]

    def review_rows(self, index: str, offset: int, limit: int, notes: Sequence[str], *,
                    expect: Sequence[str] = ()) -> tuple[list[ReviewRow], int]:
        """A page of the sorted-set ``index`` (lowest score first) and its size, each
        execution on it read as :meth:`waiting_reviews` reads it, with its plug-in notes
        ``notes`` (:meth:`annotations`), as stored (:class:`ReviewRow` reads a row);
        those gone are left out. One command (:data:`engine.state.lua.REVIEW_PAGE`):
        ``expect``, the ids the caller expects on the page (the page it read last time),
        are named to it; the others on the page are read under the execution prefix."""
        notes = tuple(notes)
        fields = [*_REVIEW_FIELDS, *(keys.annotation_field(key) for key in notes)]
        raw_ids, total, *rows, others = self._call(
            self._review_page, keys=[index, *(keys.execution(i) for i in expect)],
            args=[offset, offset + limit - 1, keys.execution(""), *fields])
        ids = [reply_text(i) for i in raw_ids]
        found = dict(zip(expect, rows, strict=True))
        missing = [i for i in ids if i not in found]
        found.update(zip(missing, others, strict=True))
        return [ReviewRow(i, tuple(found[i]), notes) for i in ids
                if found[i][0] is not None], int(total)

    def exists(self, execution_id: str) -> bool:
        return bool(self._call(self.redis.exists, keys.execution(execution_id)))

    def status(self, execution_id: str) -> ExecutionStatus:
        raw = self._call(self.redis.hget, keys.execution(execution_id), "st")
        if raw is None:
            raise ExecutionNotFound(execution_id)
        return ExecutionStatus(raw.decode())

    # -- write -------------------------------------------------------------------------------

    def commit(self, state: ExecutionState, change: Change, *,
               guard_status: Iterable[ExecutionStatus] | None = None,
               guard_head: bool = True, guard_lease: str | None = None,
               guard_field: tuple[str, str] | None = None,
               guard_waiting: str | None = None,
               guard_hlen: tuple[str, int] | None = None,
               lease_ttl_ms: int | None = None, release_lease: bool = False,
               claim_lease: str | None = None, read_notes: bool = False,
               alongside: Alongside | None = None) -> CommitResult:
        """Apply ``change`` if the guards hold; on success ``state`` follows it (status, head).
        ``guard_waiting``: the path of the step the execution must be waiting on (``wp``).
        ``claim_lease``: a token; the lease must be free (reason ``lease`` otherwise), and
        once applied it is the caller's under that token for ``lease_ttl_ms``, or left free
        with ``release_lease`` (a segment whose first write is its last). ``read_notes``:
        return the run's annotations as the commit left them (:attr:`CommitResult.notes`).
        ``alongside``: another owner's commands, sent after the commit in its round trip
        (:data:`Alongside`; only with events, whose new head is the guard); what their
        reader made of their replies is :attr:`CommitResult.alongside`."""
        linked, head = audit.chain(state.audit_head, change.events, self.audit_key,
                                   _event_text(state, change.events))
        spec: dict[str, Any] = {}
        values: list[bytes] = []  # ARGV after the status names: values as stored, any bytes
        # The status indexes and names go to COMMIT only when the status changes: most
        # commits (a step's result) leave it, and each argument costs the client. Guarded by
        # status, the status it leaves is one of the guard's: only theirs and the new one go.
        guarded = [s.value for s in guard_status] if guard_status is not None else None
        statuses: list[str] = []
        if change.status is not None:
            statuses = (list(dict.fromkeys([*guarded, change.status.value]))
                        if guarded is not None else _STATUS_NAMES)
        first = len(statuses) + 4  # Lua counts ARGV from 1
        if change.set:
            spec["set"], packed = _stored_fields(change.set)
            if packed:
                spec["setv"] = {name: first + i for i, name in enumerate(packed)}
                values = list(packed.values())
        if linked:
            spec["events"] = [first + len(values), first + len(values) + len(linked) - 1]
            values += [audit.stored(digest, body) for body, digest in linked]
            spec["head"] = first + len(values)
            values.append(audit.head_stored(head))
        if change.delete:
            spec["del"] = [*change.delete, *(["wp"] if "w" in change.delete else [])]
        if change.status is not None:
            spec["status"] = change.status.value
            spec["nstatus"] = len(statuses)
        if guarded is not None:
            spec["guard_status"] = guarded
        if guard_head:  # as stored now, or in hex by an earlier version
            spec["guard_head"] = [first + len(values), state.audit_head]
            values.append(audit.head_stored(state.audit_head))
        if guard_lease is not None:
            spec["guard_lease"] = guard_lease
            if lease_ttl_ms:
                spec["lease_ttl_ms"] = lease_ttl_ms
            if release_lease:
                spec["release"] = True
        if claim_lease is not None:
            spec["claim"] = [claim_lease, 0 if release_lease else lease_ttl_ms or 0]
        if read_notes:
            spec["notes"] = True
        if guard_field is not None:
            spec["guard_field"] = list(guard_field)
        if guard_waiting is not None:
            spec["guard_waiting"] = [guard_waiting, f'"path":{canonical(guard_waiting)}']
        if change.waiting:
            spec["waiting"] = change.waiting
            spec["waiting_score"] = change.waiting_score
        if change.running:
            spec["running"] = change.running
            spec["running_score"] = change.running_score
        # The other indexes the change names go in KEYS after the status indexes; its
        # entries refer to them by position (see engine.state.lua.COMMIT).
        named: dict[str, int] = {}

        def position(key: str) -> int:
            return named.setdefault(key, 6 + len(statuses) + len(named))

        if change.zadd:
            spec["zadd"] = [[position(key), score, member] for key, score, member in change.zadd]
        if change.zrem:
            spec["zrem"] = [[position(key), member] for key, member in change.zrem]
        if change.hset:
            spec["hset"] = [[position(key), name, value] for key, name, value in change.hset]
        if change.lrem:  # the entries go as values of their own: any bytes
            spec["lrem"] = []
            for key, entry in change.lrem:
                spec["lrem"].append([position(key), first + len(values)])
                values.append(entry)
        if change.carry is not None:
            listed, entry, other, inbox = change.carry
            spec["carry"] = [position(listed), first + len(values), first + len(values) + 1,
                             position(inbox)]
            values += [entry, other]
        if guard_hlen is not None:  # the hash must have as many fields as the caller read
            spec["guard_hlen"] = [position(guard_hlen[0]), guard_hlen[1]]
        commit_keys = [keys.execution(state.id), keys.audit(state.id), keys.lease(state.id),
                       keys.INDEX_WAITING, keys.INDEX_RUNNING,
                       *(keys.index_status(name) for name in statuses), *named]
        commit_args = [json.dumps(spec), state.id, keys.status_channel(state.id), *statuses,
                       *values]
        reader = replies = None
        if alongside is not None and linked:
            batch = Batch(self.redis)
            batch.script(self._commit, commit_keys, commit_args)
            reader = alongside(batch, (keys.execution(state.id), "ah", audit.head_stored(head)))
            replies = batch.execute(raise_errors=False)  # theirs by their place, as queued
            raw = replies[0]
            if isinstance(raw, Exception):
                raise raw
        else:
            raw = self._call(self._commit, keys=commit_keys, args=commit_args)
        notes = {}
        if read_notes and len(raw) > 4 and raw[4]:
            notes = _notes(dict(zip(raw[4][::2], raw[4][1::2], strict=True)))
        ok, made = bool(raw[0]), None
        if ok and reader is not None:
            try:
                made = reader(replies or [])
            except Exception:  # theirs to do again: the commit stands
                log.exception("the commands sent with a commit to %s failed", state.id)
        result = CommitResult(ok=ok, status=reply_text(raw[1]),
                              head=audit.head_text(raw[2]), reason=reply_text(raw[3]),
                              notes=notes, carried=len(raw) > 5 and raw[5] == 1,
                              alongside=made)
        if result.ok:
            state.audit_head = result.head
            if change.status is not None:
                state.status = change.status
        return result

    def append_audit(self, state: ExecutionState, events: Sequence[dict[str, Any]]) -> None:
        """Append events to a trail that others may be extending: retried until the chain holds."""
        for _ in range(50):
            result = self.commit(state, Change(events=list(events)))
            if result.ok:
                return
            if result.reason == "missing":
                raise ExecutionNotFound(state.id)
            state.audit_head = result.head
        raise StoreUnavailable(f"could not append to the audit trail of {state.id}")

    # -- small values ------------------------------------------------------------------------

    def get_value(self, key: str) -> bytes | None:
        value: bytes | None = self._call(self.redis.get, key)
        return value

    def get_values(self, names: Sequence[str]) -> list[bytes | None]:
        """Several small values in one round trip (None where unset): plug-ins' caches."""
        if not names:
            return []
        values: list[bytes | None] = self._call(self.redis.mget, list(names))
        return values

    def set_value(self, key: str, value: str, *, ttl_seconds: int | None = None) -> None:
        """Set a small value, expiring after ``ttl_seconds`` when given."""
        self._call(self.redis.set, key, value, ex=ttl_seconds)

    def add_counts(self, key: str, fields: Sequence[str]) -> None:
        """Add one to each of ``fields`` of the counter hash ``key``, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for name in fields:
            pipe.hincrby(key, name, 1)
        self._call(pipe.execute)

    def counts(self, key: str) -> dict[str, int]:
        """The counter hash ``key``, field by field."""
        raw = self._call(self.redis.hgetall, key)
        return {name.decode(): int(value) for name, value in raw.items()}

    def first_in_window(self, key: str, window_ms: int) -> bool:
        """True for the first call naming ``key`` in ``window_ms``, False for the others
        (a marker that expires): to do something once per window however often asked."""
        return bool(self._call(self.redis.set, key, "1", nx=True, px=window_ms))

    def compare_and_set(self, key: str, expected: bytes | str | None, new: str) -> bool:
        """Set ``key`` to ``new`` only if it still holds ``expected`` (None: absent)."""
        if expected is None:
            return bool(self._call(self.redis.set, key, new, nx=True))
        return bool(self._call(self._cas, keys=[key], args=[expected, new]))

    # -- annotations -------------------------------------------------------------------------

    def set_annotation(self, execution_id: str, key: str, value: Any) -> None:
        """Set field ``n:{key}`` (JSON, compressed above 256 bytes: engine.state.compact) of
        an existing execution; plug-ins keep state here."""
        written = self._call(self._annotate, keys=[keys.execution(execution_id)],
                             args=[keys.annotation_field(key), compact.pack(dumps(value))])
        if not written:
            raise ExecutionNotFound(execution_id)

    def annotation(self, execution_id: str, key: str) -> Any:
        raw = self._call(self.redis.hget, keys.execution(execution_id), keys.annotation_field(key))
        return loads(compact.unpack(raw)) if raw is not None else None

    def add_words(self, execution_id: str, key: str, words: Iterable[str]) -> bool:
        """Add ``words`` (none with a space) to annotation ``n:{key}``, a space-separated
        set, each once, atomically (written empty when there are none, so that it is
        there); False when the execution is gone (nothing written).
        A few words cost tens of bytes in the execution's hash, where a Redis set of its
        own costs hundreds."""
        words = list(words)
        if any(" " in w or not w for w in words):
            raise ValueError(f"annotation words may not be empty or hold a space: {words!r}")
        return bool(self._call(self._add_words, keys=[keys.execution(execution_id)],
                               args=[keys.annotation_field(key), *words]))

    def have_annotations(self, wanted: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each (execution id, key) has annotation ``n:{key}``: pipelined, in
        rounds of 5,000."""
        found: list[bool] = []
        for start in range(0, len(wanted), 5000):
            pipe = self.redis.pipeline(transaction=False)
            for execution_id, key in wanted[start:start + 5000]:
                pipe.hexists(keys.execution(execution_id), keys.annotation_field(key))
            found += [bool(n) for n in self._call(pipe.execute)]
        return found

    def drop_words(self, batch: Batch, execution_id: str, key: str,
                   index_keys: Sequence[str], member: str, score: float, *,
                   legacy_set: str | None = None,
                   guard: tuple[str, str, bytes] | None = None, read: bytes | None = None
                   ) -> Callable[[Sequence[Any]], tuple[int, list[str]] | None]:
        """Queue in ``batch`` (one MULTI, with other owners' commands), as one script
        (:data:`engine.state.lua.DROP_WORDS`): remove ``member`` from ``index_keys`` where
        it still has ``score`` (as :meth:`index_remove_instance`) and delete annotation
        ``n:{key}``, and read and delete ``legacy_set`` (a Redis set that held such words
        before). The reader it returns gives, from the batch's replies, how many entries
        went and the legacy set's members. ``guard`` (sent with a commit: :data:`Alongside`,
        whose key is the execution's hash): nothing is done unless the commit applied and
        the note still is ``read`` (None: absent), as the words were read; the reader then
        gives None."""
        at = len(batch)
        execution = keys.execution(execution_id)
        args: list[Any] = [keys.annotation_field(key), member, score,
                           "1" if legacy_set is not None else "0"]
        if guard is not None:
            assert guard[0] == execution
            args += [guard[1], guard[2], "0" if read is None else "1", read or b""]
        batch.script(self._drop_words, [execution, legacy_set or execution, *index_keys], args)

        def reader(replies: Sequence[Any]) -> tuple[int, list[str]] | None:
            if isinstance(replies[at], Exception):
                raise replies[at]
            removed, legacy = replies[at]
            if int(removed) < 0:
                return None
            return int(removed), sorted(reply_text(m) for m in legacy)

        return reader

    def words(self, execution_id: str, key: str) -> list[str]:
        """Annotation ``n:{key}`` as :meth:`add_words` wrote it."""
        raw = self._call(self.redis.hget, keys.execution(execution_id),
                         keys.annotation_field(key))
        return sorted(reply_text(raw).split()) if raw is not None else []

    # -- children (engine.run.children) ------------------------------------------------------

    def child_reports(self, execution_id: str) -> dict[str, ChildReport]:
        """What the finished children of an execution reported, by
        :func:`engine.state.keys.child_field`."""
        raw = self._call(self.redis.hgetall, keys.children(execution_id))
        return {reply_text(name): ChildReport.from_json(value) for name, value in raw.items()}

    # -- leases ------------------------------------------------------------------------------

    def acquire_lease(self, execution_id: str, ttl_ms: int) -> str | None:
        token, pipe = self._taking_lease(execution_id, ttl_ms)
        acquired, _ = self._call(pipe.execute)
        return token if acquired else None

    def acquire_lease_and_load(self, execution_id: str, ttl_ms: int
                               ) -> tuple[str | None, ExecutionState]:
        """Take the lease and read the execution in one round trip."""
        token, pipe = self._taking_lease(execution_id, ttl_ms)
        pipe.hgetall(keys.execution(execution_id))
        acquired, _, raw = self._call(pipe.execute)
        if not raw:
            if acquired:
                self.release_lease(execution_id, token)
            self.forget_runnable(execution_id)
            raise ExecutionNotFound(execution_id)
        state = _state_from_hash(execution_id, raw)
        self._complete_message(state)
        return (token if acquired else None), state

    def _taking_lease(self, execution_id: str, ttl_ms: int) -> tuple[str, Any]:
        """A new lease token, and a transaction that takes the lease with it (if free) and
        marks the run as being advanced until the lease's deadline."""
        token = secrets.token_hex(8)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.lease(execution_id), token, nx=True, px=ttl_ms)
        pipe.zadd(keys.INDEX_RUNNING, {execution_id: _now_ms() + ttl_ms})
        return token, pipe

    def extend_lease(self, execution_id: str, token: str, ttl_ms: int) -> None:
        """Stretch the lease before a long step, so the sweeper leaves the run alone."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.pexpire(keys.lease(execution_id), ttl_ms)
        pipe.zadd(keys.INDEX_RUNNING, {execution_id: _now_ms() + ttl_ms}, xx=True)
        self._call(pipe.execute)

    def release_lease(self, execution_id: str, token: str) -> None:
        self._call(self._release, keys=[keys.lease(execution_id)], args=[token])

    def stale_running(self, now_ms: int | None = None, limit: int = 100) -> list[str]:
        """Executions that should be running but whose lease lapsed (their worker died)."""
        now_ms = now_ms or _now_ms()
        ids = self._call(self.redis.zrangebyscore, keys.INDEX_RUNNING, "-inf", now_ms,
                         start=0, num=limit)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for raw in ids:
            pipe.exists(keys.lease(raw.decode()))
        held = self._call(pipe.execute)
        return [raw.decode() for raw, alive in zip(ids, held, strict=True) if not alive]

    def mark_runnable(self, execution_id: str, deadline_ms: int) -> None:
        self._call(self.redis.zadd, keys.INDEX_RUNNING, {execution_id: deadline_ms})

    def forget_runnable(self, execution_id: str) -> None:
        self._call(self.redis.zrem, keys.INDEX_RUNNING, execution_id)

    def wait_for_status(self, execution_id: str, wanted: Callable[[ExecutionStatus], bool],
                        timeout: float) -> ExecutionStatus:
        """Block until the execution's status satisfies ``wanted`` (told by Redis pub/sub on
        every status change) or ``timeout`` seconds pass; returns the last status seen."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            self._call(pubsub.subscribe, keys.status_channel(execution_id))
            status = self.status(execution_id)  # after subscribing: no change is missed
            deadline = time.monotonic() + timeout
            while not wanted(status):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                message = self._call(pubsub.get_message, timeout=remaining)
                if message is not None:
                    status = ExecutionStatus(reply_text(message["data"]))
            return status
        finally:
            pubsub.close()

    # -- API tokens (engine.state.tokens) ----------------------------------------------------

    def add_token(self, token: ApiToken, secret_digest: str) -> None:
        """Keep a new token's record under the hash of its secret, name and record together;
        TokenExists when the name is taken."""
        added = self._call(self._add_token, keys=[keys.TOKEN_NAMES, keys.token(secret_digest)],
                           args=[token.name, secret_digest, token.to_json()])
        if not added:
            raise TokenExists(token.name)

    def token(self, secret_digest: str) -> ApiToken | None:
        """The token whose secret hashes to ``secret_digest``; None when there is none
        (never made, or revoked)."""
        raw = self._call(self.redis.get, keys.token(secret_digest))
        return ApiToken.from_json(raw) if raw is not None else None

    def tokens(self) -> list[ApiToken]:
        """Every token's record, by name."""
        names = self._call(self.redis.hgetall, keys.TOKEN_NAMES)
        ordered = sorted((reply_text(name), reply_text(digest)) for name, digest in names.items())
        rows = self.get_values([keys.token(digest) for _, digest in ordered])
        return [ApiToken.from_json(raw) for raw in rows if raw is not None]

    def revoke_token(self, name: str) -> None:
        """Forget a token: the next request that shows its secret is refused.
        TokenNotFound when no token has that name."""
        for _ in range(10):  # each turn loses only to a revoke-and-make-again of this name
            found = self._call(self.redis.hget, keys.TOKEN_NAMES, name)
            if found is None:
                raise TokenNotFound(name)
            secret_digest = reply_text(found)
            if self._call(self._revoke_token,
                          keys=[keys.TOKEN_NAMES, keys.token(secret_digest)],
                          args=[name, secret_digest]):
                return
        raise TokenError(f"token {name!r} kept changing while being revoked; try again")

    # -- audit -------------------------------------------------------------------------------

    def audit_entries(self, execution_id: str) -> list[tuple[str, str, str]]:
        """(sequence number, body, hash) for every event, oldest first."""
        rows = self._call(self.redis.lrange, keys.audit(execution_id), 0, -1)
        entries = []
        for number, raw in enumerate(rows, start=1):
            digest, body = audit.split(raw)
            entries.append((str(number), body, digest))
        return entries

    def audit_head(self, execution_id: str) -> str | None:
        raw = self._call(self.redis.hget, keys.execution(execution_id), "ah")
        return audit.head_text(raw) if raw is not None else None

    # -- plumbing ----------------------------------------------------------------------------

    def ping(self) -> bool:
        """Is Redis reachable right now? Answers within ~1 s: no retries, a fresh connection."""
        pool = self.redis.connection_pool
        given = pool.connection_kwargs
        kwargs: dict[str, Any] = {k: given[k] for k in ("host", "port", "db", "username",
                                                        "password", "unix_socket_path")
                                  if k in given}
        kwargs["ssl"] = pool.connection_class.__name__.startswith("SSL")
        probe = redis.Redis(**kwargs, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(probe.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        finally:
            probe.close()


@dataclass(frozen=True)
class Annotated:
    """What :meth:`Store.load_annotated` read in its one round trip."""

    state: ExecutionState
    annotation: Any  # the plug-in note asked for (None when unset)
    values: list[bytes | None]  # the small values asked for, in order (None where unset)
    trail: list[bytes]  # the audit trail's entries as stored, oldest first
    notes: Mapping[str, bytes] = field(default_factory=dict)  # every annotation, as stored
    # A review's message found in the trail already, by its SHA-256 (sha256, message): a
    # reader handed this need not look for it again (messages.find)
    message: tuple[str, str] | None = None


@dataclass(frozen=True)
class ReviewRow:
    """An execution as a review listing reads it (:meth:`Store.review_rows`), as stored:
    the same bytes are the same execution, so a reader may keep what it made of a row."""

    execution_id: str
    raw: tuple[bytes | None, ...]  # the review fields, then the notes
    notes: tuple[str, ...]  # the plug-in notes read, in order

    def review(self) -> ReviewRequest | None:
        """The review the execution waits on (:meth:`Store.waiting_reviews`); None when it
        waits for no input."""
        return waiting_review(self.execution_id, self.raw[:len(_REVIEW_FIELDS)])

    def note(self, key: str) -> Any:
        """The plug-in note ``key`` (one of :attr:`notes`), None when unset."""
        raw = self.raw[len(_REVIEW_FIELDS) + self.notes.index(key)]
        return loads(compact.unpack(raw)) if raw is not None else None


def waiting_review(execution_id: str, stored: Sequence[bytes | None]) -> ReviewRequest | None:
    """The review an execution waits on, from its fields :data:`_REVIEW_FIELDS` as stored;
    None when it is gone or waits for no input (a run that ended while it waited keeps its
    ``w``). Only what the review is made of is read: a listing's rows cost a third of
    loading each execution. Its message is its first line (``Waiting.complete`` is False)."""
    workflow, status, requested_by, waiting = stored
    if workflow is None or waiting is None or status != _WAITING_FOR_INPUT:
        return None
    return review_for(execution_id, workflow.decode(),
                      requested_by.decode() if requested_by is not None else None,
                      Waiting.from_json(compact.unpack(waiting)))


def annotated(state: ExecutionState, key: str, notes: Mapping[str, bytes],
              trail: list[bytes], values: list[bytes | None] | None = None, *,
              message: tuple[str, str] | None = None) -> Annotated:
    """What :meth:`Store.load_annotated` gives, from what was read otherwise: ``notes``,
    the execution's annotations as stored (:attr:`CommitResult.notes`), and its ``trail``;
    ``message``: a review's message found in it already (:attr:`Annotated.message`)."""
    note = notes.get(key)
    return Annotated(state, loads(compact.unpack(note)) if note is not None else None,
                     values or [], trail, notes, message)


def _notes(raw: Mapping[bytes, bytes]) -> dict[str, bytes]:
    """The annotations (``n:…``, the plug-ins' notes) of an execution hash as read, as stored,
    by key."""
    return {name.decode()[2:]: value for name, value in raw.items() if name.startswith(b"n:")}


def _state_from_hash(execution_id: str, raw: Mapping[bytes, bytes]) -> ExecutionState:
    # Annotations (n:…) are the plug-ins' (Store.annotation), possibly compressed.
    data = {name: (_BINARY_FIELDS[name](value) if name in _BINARY_FIELDS
                   else value.decode() if name in _PLAIN_FIELDS else compact.unpack(value))
            for name, value in ((k.decode(), v) for k, v in raw.items()
                                if not k.startswith(b"n:"))}
    results: dict[str, StepResult] = {}
    decisions: dict[str, Decision] = {}
    for name, value in data.items():
        if name.startswith(keys.STEP_FIELD):
            results[name.removeprefix(keys.STEP_FIELD)] = StepResult.from_json(value)
        elif name.startswith(keys.DECISION_FIELD):
            decisions[name.removeprefix(keys.DECISION_FIELD)] = Decision.from_json(value)
    return ExecutionState(
        id=execution_id, workflow=data["wf"], digest=data["d"],
        status=ExecutionStatus(data["st"]), started_at=started_at(data.get("t0"), data["t0ms"]),
        event=loads(data["ev"]) if "ev" in data else None,
        audit_head=data.get("ah", audit.GENESIS), finished_at=data.get("t1"),
        requested_by=data.get("rb"), error=data.get("err"),
        variables=loads(data["v"]) if "v" in data else {},
        waiting=Waiting.from_json(data["w"]) if "w" in data else None,
        results=results, decisions=decisions,
        outputs=loads(data["out"]) if "out" in data else None,
        parent=ParentLink.from_json(data["par"]) if "par" in data else None,
    )


_STATUS_NAMES = [status.value for status in ExecutionStatus]  # COMMIT's ARGV[4 ..]
# What a review is made of (waiting_review): workflow (None: the execution is gone),
# status, requester, what it waits on.
_REVIEW_FIELDS = ("wf", "st", "rb", "w")
_WAITING_FOR_INPUT = ExecutionStatus.WAITING_FOR_INPUT.value.encode()
# Fields scripts and listings read as they are (COMMIT, summaries): never compressed.
# Text that is not JSON (an error, a name) may start with "x" like zlib's stream: also
# never compressed, and never read as if it were.
_PLAIN_FIELDS = frozenset({"wf", "d", "st", "t0", "t0ms", "t1", "ah", "rb", "err", "wp"})


def _digest_stored(digest: str) -> bytes:
    """A definition's SHA-256 as the execution stores it: 32 bytes (a digest of another
    form as it is)."""
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        return digest.encode()
    return raw if len(raw) == 32 else digest.encode()


def _digest_text(raw: bytes) -> str:
    return raw.hex() if len(raw) == 32 else raw.decode()


# Hashes stored as bytes, read back in hex (values of earlier versions, in hex, as they are).
_BINARY_FIELDS = {"d": _digest_text, "ah": audit.head_text}


def _stored_fields(fields: Mapping[str, str]) -> tuple[dict[str, str], dict[str, bytes]]:
    """``fields`` as the execution hash stores them: (text fields, compressed fields).
    Large values are compressed (:mod:`engine.state.compact`: a waiting review's state
    shrinks to 40%); they go to COMMIT as arguments of their own, since its JSON carries
    text only. Setting ``w`` sets ``wp``, the path it waits on, for ``guard_waiting``."""
    text: dict[str, str] = {}
    packed: dict[str, bytes] = {}
    for name, value in fields.items():
        stored = None if name in _PLAIN_FIELDS else compact.pack(value)
        if stored is not None and stored[:1] == b"x":  # JSON never starts so: compressed
            packed[name] = stored
        else:
            text[name] = value
    if "w" in fields:
        text["wp"] = str(loads(fields["w"])["path"])
    return text, packed


def _complete(state: ExecutionState, trail: Sequence[bytes]) -> None:
    """Put the message back into ``state.waiting`` from its audit ``trail``, if found there."""
    waiting = state.waiting
    if waiting is None or waiting.complete:
        return
    found = messages.find(trail, waiting.message_sha256, dumps(state.event))
    if found is not None:
        state.waiting = waiting.evolve(message=found, complete=True)


def _event_text(state: ExecutionState, events: Sequence[Mapping[str, Any]]) -> str | None:
    """``state``'s event as stored (``dumps`` gives back the text it was stored as), when
    one of ``events`` carries a message long enough to be compressed against it."""
    if state.event is None or not any(len(str(e.get("message") or "").encode()) > audit.PACK_OVER
                                      for e in events):
        return None
    return dumps(state.event)


def _ms(iso_text: str) -> int:
    moment = parse_iso(iso_text)
    assert moment is not None
    return epoch_ms(moment)


def _now_ms() -> int:
    return int(time.time() * 1000)
