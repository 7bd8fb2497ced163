"""The indexes in Redis, and the listings read from them: never a scan.

Every execution is in two sorted sets scored by its start: one per status (the commit
script, :data:`engine.state.lua.COMMIT`, moves it as its status changes) and one per
workflow; a listing of all of them merges the status indexes' first pages. Other sorted
sets and sets let the engine, the bot and the worker side find things quickly (a
reviewer's reviews, what a viewer may see, the timers due and deferred, the queues that
have an inbox). A page of one index is one round trip; executions by
status and workflow at once walk the smaller index and ask the larger; a union of several
is built in a scratch key and dropped in the same transaction.

:class:`engine.state.store.Store` is an :class:`Indexes` (as redis-py builds its client
from command mixins), so every call of both goes through :meth:`Indexes._call`, which
turns a Redis that cannot be reached into :class:`engine.errors.StoreUnavailable`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from engine.errors import StoreUnavailable
from engine.state import keys, lua
from engine.state.execution import ExecutionStatus, started_at


@dataclass(frozen=True)
class ExecutionSummary:
    id: str
    workflow: str
    status: str
    started_at: str
    finished_at: str | None


class Indexes:
    """Sorted-set and set indexes in Redis, and the listings of executions they give."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._remove_instance = client.register_script(lua.REMOVE_INSTANCE)

    # -- listings ----------------------------------------------------------------------------

    def list_executions(self, *, status: str | None = None, workflow: str | None = None,
             offset: int = 0, limit: int = 50, newest_first: bool = True
             ) -> tuple[list[ExecutionSummary], int]:
        """A page of executions from the indexes (never a scan), and the total that match."""
        if status and workflow:
            ids, total = self._intersect(keys.index_status(status),
                                         keys.index_workflow(workflow), offset, limit,
                                         newest_first)
        elif status or workflow:
            key = keys.index_status(status) if status else keys.index_workflow(workflow or "")
            ids, total = self.index_page(key, offset, limit, newest_first=newest_first)
        else:
            ids, total = self._merged([keys.index_status(s.value) for s in ExecutionStatus],
                                      offset, limit, newest_first)
        return self.summaries(ids), total

    def waiting(self, *, offset: int = 0, limit: int = 50) -> tuple[list[str], int]:
        """Executions waiting for input, oldest first."""
        return self.index_page(keys.INDEX_WAITING, offset, limit)

    def index_page(self, key: str, offset: int, limit: int, *,
                   newest_first: bool = False) -> tuple[list[str], int]:
        """A page of a sorted-set index, lowest score first (highest with ``newest_first``),
        and its size."""
        pipe = self.redis.pipeline(transaction=False)
        page = pipe.zrevrange if newest_first else pipe.zrange
        page(key, offset, offset + limit - 1)
        pipe.zcard(key)
        raw_ids, total = self._call(pipe.execute)
        return [reply_text(i) for i in raw_ids], int(total)

    def index_scored_page(self, key: str, offset: int,
                          limit: int) -> tuple[list[tuple[str, float]], int]:
        """A page of a sorted-set index with scores, lowest score first, and its size."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(key, offset, offset + limit - 1, withscores=True)
        pipe.zcard(key)
        rows, total = self._call(pipe.execute)
        return [(reply_text(m), float(s)) for m, s in rows], int(total)

    def index_scored_from(self, key: str, min_score: float) -> list[tuple[str, float]]:
        """The members of a sorted-set index scored ``min_score`` or more, with their
        scores, lowest first."""
        rows = self._call(self.redis.zrangebyscore, key, min_score, "+inf", withscores=True)
        return [(reply_text(m), float(s)) for m, s in rows]

    def index_scores(self, key: str, members: Sequence[str]) -> list[float | None]:
        """Each member's score in a sorted-set index (None where it is not there)."""
        if not members:
            return []
        return [None if s is None else float(s)
                for s in self._call(self.redis.zmscore, key, list(members))]

    def index_members(self, key: str, min_score: float) -> list[str]:
        rows = self._call(self.redis.zrangebyscore, key, min_score, "+inf")
        return [reply_text(r) for r in rows]

    def index_last(self, key: str, count: int) -> list[str]:
        """The ``count`` highest-scored members, highest first."""
        rows = self._call(self.redis.zrevrange, key, 0, count - 1)
        return [reply_text(r) for r in rows]

    def index_add(self, entries: Sequence[tuple[str, float, str]]) -> None:
        """Add (key, score, member) entries to sorted-set indexes in one round trip; an entry
        already there keeps the higher score (``ZADD GT``: a later instance wins)."""
        if not entries:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key, score, member in entries:
            pipe.zadd(key, {member: score}, gt=True)
        self._call(pipe.execute)

    def index_remove_instance(self, index_keys: Sequence[str], member: str,
                              score: float) -> int:
        """Remove ``member`` from each of ``index_keys`` where it still has ``score``;
        returns how many entries went (see :data:`engine.state.lua.REMOVE_INSTANCE`)."""
        if not index_keys:
            return 0
        return int(self._call(self._remove_instance, keys=list(index_keys),
                              args=[member, score]))

    def index_union_page(self, sources: Sequence[str], within: str, offset: int,
                         limit: int, *, extra: Sequence[tuple[str, float]] = ()
                         ) -> tuple[list[tuple[str, float]], int]:
        """A page (lowest score first, with scores) of the members of any of ``sources``
        (and the ``extra`` members, with their scores) that are also in ``within``, and
        how many there are in all; one MULTI round trip.

        The union is built in a scratch key and deleted in the same transaction: Redis does
        O(N log N) work for the N members of ``sources``, nothing is sent back but the page.
        """
        if not sources and not extra:
            return [], 0
        scratch = keys.scratch(secrets.token_hex(8))
        pipe = self.redis.pipeline(transaction=True)
        if sources:
            pipe.zunionstore(scratch, list(sources), aggregate="MAX")
        if extra:
            pipe.zadd(scratch, dict(extra), gt=True)
        pipe.zinterstore(scratch, {scratch: 1, within: 0})
        pipe.zrange(scratch, offset, offset + limit - 1, withscores=True)
        pipe.zcard(scratch)
        pipe.delete(scratch)
        *_, rows, total, _ = self._call(pipe.execute)
        return [(reply_text(m), float(s)) for m, s in rows], int(total)

    def index_difference(self, key: str, without: str) -> list[str]:
        """The members of sorted set ``key`` that ``without`` lacks, lowest score first
        (``ZDIFF``: Redis walks both sets, only the difference is sent back)."""
        return [reply_text(m) for m in self._call(self.redis.zdiff, [key, without])]

    def set_add(self, key: str, members: Iterable[str]) -> None:
        members = list(members)
        if members:
            self._call(self.redis.sadd, key, *members)

    def delete(self, key: str) -> None:
        self._call(self.redis.delete, key)

    def set_members(self, key: str) -> list[str]:
        return sorted(reply_text(m) for m in self._call(self.redis.smembers, key))

    def index_sizes(self, index_keys: Sequence[str]) -> list[int]:
        """How many members each sorted set has, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for key in index_keys:
            pipe.zcard(key)
        return [int(n) for n in self._call(pipe.execute)]

    def index_ends(self, index_keys: Sequence[str]) -> list[tuple[int, float | None]]:
        """Each sorted set's size and highest score (None when empty), in one round trip:
        O(log N) each, a cheap sign of whether a set changed."""
        pipe = self.redis.pipeline(transaction=False)
        for key in index_keys:
            pipe.zcard(key)
            pipe.zrange(key, -1, -1, withscores=True)
        replies = self._call(pipe.execute)
        return [(int(size), float(last[0][1]) if last else None)
                for size, last in zip(replies[::2], replies[1::2], strict=True)]

    def summaries(self, ids: Iterable[str]) -> list[ExecutionSummary]:
        ids = list(ids)
        pipe = self.redis.pipeline(transaction=False)
        for execution_id in ids:
            pipe.hmget(keys.execution(execution_id), "wf", "st", "t0", "t1", "t0ms")
        rows = self._call(pipe.execute)
        found = []
        for execution_id, row in zip(ids, rows, strict=True):
            if row[0] is None:
                continue
            found.append(ExecutionSummary(
                id=execution_id, workflow=row[0].decode(), status=row[1].decode(),
                started_at=started_at(row[2], row[4]),
                finished_at=row[3].decode() if row[3] else None))
        return found

    def _merged(self, sources: Sequence[str], offset: int, limit: int,
                newest_first: bool) -> tuple[list[str], int]:
        """A page of the union of ``sources``, which share no member (each execution is in
        one status index), and its size: the first ``offset + limit`` of each, merged
        here (a run waiting for input is placed by when it began waiting, its score in
        that index). There is no index of every execution: it would cost each one ~135
        bytes more, for a listing that walks few pages."""
        pipe = self.redis.pipeline(transaction=False)
        for key in sources:
            page = pipe.zrevrange if newest_first else pipe.zrange
            page(key, 0, offset + limit - 1, withscores=True)
            pipe.zcard(key)
        replies = self._call(pipe.execute)
        rows = [(score, reply_text(member)) for found in replies[::2] for member, score in found]
        rows.sort(reverse=newest_first)
        return [m for _, m in rows[offset:offset + limit]], sum(int(n) for n in replies[1::2])

    def _intersect(self, key_a: str, key_b: str, offset: int, limit: int,
                   newest_first: bool) -> tuple[list[str], int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(key_a)
        pipe.zcard(key_b)
        size_a, size_b = self._call(pipe.execute)
        small, large = (key_a, key_b) if size_a <= size_b else (key_b, key_a)
        members = self._call(self.redis.zrange, small, 0, -1, withscores=True)
        if not members:
            return [], 0
        pipe = self.redis.pipeline(transaction=False)
        for member, _ in members:
            pipe.zscore(large, member)
        scores = self._call(pipe.execute)
        both = [(score, member.decode()) for (member, score), other in
                zip(members, scores, strict=True) if other is not None]
        both.sort(reverse=newest_first)
        return [m for _, m in both[offset:offset + limit]], len(both)

    # -- timers ------------------------------------------------------------------------------

    def index_timer(self, member: str, due: float, *, enqueue: Callable[[Any], None]) -> None:
        """Keep a timer (``Timer.member``, due at epoch seconds ``due``) in the overdue-timer
        index, in one transaction with ``enqueue``, which schedules its RQ job."""
        pipe = self.redis.pipeline(transaction=True)
        enqueue(pipe)  # RQ opens the MULTI itself, so it goes first
        pipe.zadd(keys.INDEX_TIMERS, {member: due})
        self._call(pipe.execute)

    def defer_timer(self, member: str, due: float) -> None:
        """Keep a timer due beyond the scheduling horizon without an RQ job, in the deferred
        index alone (moved there from the overdue-timer index, in one transaction), which
        :meth:`take_deferred_timers` reads as it comes within reach."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(keys.INDEX_TIMERS_LATER, {member: due})
        pipe.zrem(keys.INDEX_TIMERS, member)
        self._call(pipe.execute)

    def take_deferred_timers(self, before: float, limit: int) -> list[tuple[str, float]]:
        """Up to ``limit`` deferred timers due before ``before`` (epoch seconds), each taken
        off the deferred index by this caller alone (another worker gets none of them)."""
        rows = self._call(self.redis.zrangebyscore, keys.INDEX_TIMERS_LATER, "-inf", before,
                          start=0, num=limit, withscores=True)
        taken = []
        for member, due in rows:
            if self._call(self.redis.zrem, keys.INDEX_TIMERS_LATER, member):
                taken.append((reply_text(member), float(due)))
        return taken

    def overdue_timers(self, before: float, limit: int) -> list[str]:
        """Up to ``limit`` timers of the overdue-timer index due before ``before`` (epoch
        seconds), soonest first."""
        rows = self._call(self.redis.zrangebyscore, keys.INDEX_TIMERS, "-inf", before,
                          start=0, num=limit)
        return [reply_text(r) for r in rows]

    def forget_timer(self, member: str) -> bool:
        """Take a timer off the overdue-timer index: it ran, or is about to. False when it
        was not there (another worker took it)."""
        return bool(self._call(self.redis.zrem, keys.INDEX_TIMERS, member))

    # -- inboxes -----------------------------------------------------------------------------

    def inbox_queues(self) -> list[str]:
        """The RQ queues that have an inbox (engine.state.inbox), for the workers' sweep."""
        return [reply_text(name) for name in self._call(self.redis.smembers, keys.INBOXES)]

    # -- plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(*args, **kwargs)``, a Redis that cannot be reached as StoreUnavailable."""
        try:
            return func(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc


def reply_text(value: Any) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
