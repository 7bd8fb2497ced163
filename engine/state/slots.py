"""Concurrency slots in Redis (``settings.concurrency``): which runs hold a slot of a group,
which wait for one, in what order.

A group is named by its key as rendered (Elastic's concurrency group key); runs of any
workflow whose key renders the same share it. Per group: a sorted set of the runs holding
a slot (by when they got it: ``cancel-in-progress`` displaces the oldest), a sorted set of
the runs waiting (by arrival, from one counter: FIFO even within a millisecond) and a hash
of each waiting run's own ``queued-ms ttl-ms max``. A hash of every group in use lets the
workers' sweep find slots whose run ended without giving them back.

Cost: admitting a run is one script call (:data:`engine.state.lua.SLOT_ADMIT`), giving a
slot back one more (:data:`engine.state.lua.SLOT_RELEASE`); a group with one run holds
three small keys, and none once it is idle (the scripts delete what they empty).

When a process dies mid-way: a slot is given back by the same atomic ``ZREM`` that
answers whether it was held, so exactly once, whoever asks; a run taken off a queue
enters the running index in the same script, so the sweep finishes starting it (or
skipping it) if its caller died first (:meth:`engine.run.concurrency.Concurrency.recover`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from engine.errors import StoreUnavailable
from engine.state import keys, lua


@dataclass(frozen=True)
class Admission:
    """What :meth:`Slots.admit` decided for a starting run."""

    decision: str  # run | queued | dropped | full
    displaced: tuple[str, ...] = ()  # cancel-in-progress: the runs that lost their slot to it
    position: int | None = None  # queued: 1 for the head of the queue


@dataclass(frozen=True)
class Release:
    """What :meth:`Slots.release` did: whether the run held a slot, and the waiting runs it
    took off the queue (given a slot, or expired past their queue-ttl)."""

    released: bool
    promoted: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()


class Slots:
    """The concurrency groups' keys; every write goes through one of two scripts."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._admit = client.register_script(lua.SLOT_ADMIT)
        self._release = client.register_script(lua.SLOT_RELEASE)

    def admit(self, group: str, execution_id: str, *, strategy: str, max_runs: int,
              queue_size: int, queue_ttl_ms: int, now_ms: int) -> Admission:
        """Take a slot of ``group`` for the run, queue it, or refuse it, atomically."""
        group_id = keys.concurrency_group_id(group)
        raw = _call(self._admit,
                    keys=[keys.concurrency_slots(group_id), keys.concurrency_queue(group_id),
                          keys.concurrency_meta(group_id), keys.CONCURRENCY_GROUPS,
                          keys.CONCURRENCY_SEQ, keys.CONCURRENCY_DISPLACED],
                    args=[execution_id, strategy, max_runs, queue_size, now_ms, queue_ttl_ms,
                          group_id, group])
        decision = _text(raw[0])
        if decision == "queued":
            return Admission("queued", position=int(raw[1]))
        return Admission(decision, displaced=tuple(_text(item) for item in raw[1:]))

    def release(self, group_id: str, execution_id: str, *, now_ms: int,
                deadline_ms: int) -> Release:
        """Give back the run's slot (or its place in the queue) and hand free slots to the
        queue's oldest runs; ``execution_id`` '' only hands out free slots."""
        raw = _call(self._release,
                    keys=[keys.concurrency_slots(group_id), keys.concurrency_queue(group_id),
                          keys.concurrency_meta(group_id), keys.CONCURRENCY_GROUPS,
                          keys.INDEX_RUNNING],
                    args=[execution_id, now_ms, deadline_ms, group_id])
        promoted = int(raw[1])
        ids = [_text(item) for item in raw[2:]]
        return Release(bool(int(raw[0])), tuple(ids[:promoted]), tuple(ids[promoted:]))

    def holds(self, group: str, execution_id: str) -> bool:
        slots = keys.concurrency_slots(keys.concurrency_group_id(group))
        return _call(self.redis.zscore, slots, execution_id) is not None

    def waits(self, group: str, execution_id: str) -> bool:
        queue = keys.concurrency_queue(keys.concurrency_group_id(group))
        return _call(self.redis.zrank, queue, execution_id) is not None

    def groups(self) -> dict[str, str]:
        """Every group in use: its id -> its key as rendered."""
        raw = _call(self.redis.hgetall, keys.CONCURRENCY_GROUPS)
        return {_text(k): _text(v) for k, v in raw.items()}

    def occupancy(self, group_ids: Sequence[str]) -> list[tuple[list[tuple[str, int]], int]]:
        """For each group, in one round trip: the runs holding a slot, oldest first, with
        when they got it (ms), and how many runs wait in its queue."""
        pipe = self.redis.pipeline(transaction=False)
        for group_id in group_ids:
            pipe.zrange(keys.concurrency_slots(group_id), 0, -1, withscores=True)
            pipe.zcard(keys.concurrency_queue(group_id))
        rows = _call(pipe.execute)
        return [([(_text(member), int(score)) for member, score in rows[i]], int(rows[i + 1]))
                for i in range(0, len(rows), 2)]

    def statuses(self, execution_ids: Sequence[str]) -> list[str | None]:
        """The status of each run, in one round trip (None for a run that does not exist)."""
        pipe = self.redis.pipeline(transaction=False)
        for execution_id in execution_ids:
            pipe.hget(keys.execution(execution_id), "st")
        return [None if raw is None else _text(raw) for raw in _call(pipe.execute)]

    def displaced(self) -> dict[str, tuple[str, str]]:
        """Runs cancel-in-progress took the slot of and nobody has cancelled yet: each to
        (the run that took it, the group)."""
        raw = _call(self.redis.hgetall, keys.CONCURRENCY_DISPLACED)
        found = {}
        for member, value in raw.items():
            by, _, group = _text(value).partition(" ")
            found[_text(member)] = (by, group)
        return found

    def forget_displaced(self, execution_id: str) -> None:
        """The displaced run is cancelled (or had ended)."""
        _call(self.redis.hdel, keys.CONCURRENCY_DISPLACED, execution_id)


def _call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
