"""The inbox: small, frequent tasks (a reviewer's click) carried to workers many to a job.

An RQ job costs a worker about 5 ms and 25 Redis round trips before its first line
runs, and the process that enqueues it half a millisecond; a burst of 200 clicks as
200 jobs keeps the workers busy with RQ rather than with the clicks. The inbox is a
Redis list instead: :meth:`Inbox.put` appends a task in one round trip and, only when
no drain is already queued, enqueues one RQ job (``engine.jobs.drain_inbox``) that runs
tasks until the list is empty. A drain clears the "queued" flag as it starts, so the
next task queues a second drain, which another free worker takes: during a burst
every worker drains.

Nothing is lost when a worker dies: a drain moves each task to a list of its own
(LMOVE) before running it and removes it afterwards, and keeps a heartbeat key alive
while it drains. :meth:`Inbox.recover`, run by every worker's maintenance sweep, puts
the tasks of a drain whose heartbeat lapsed back at the head of the inbox. A task
therefore runs at least once and must be safe to run twice (a decision is: the
engine's guards turn the second into "already decided").

A task may return a follow-up, a callable run after the task is acknowledged: work the
task has already made durable and that has its own recovery (continuing a run the
task resumed; a lapsed lease gets it re-enqueued). A task that raises is handed to RQ
as an ordinary job, which runs it once more and, if it fails again, keeps it with its
traceback in RQ's failed job registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from rq.utils import import_attribute

from engine import keys

log = logging.getLogger(__name__)

DRAIN_FLAG_MS = 30_000  # a drain queued but not started for this long is queued again
ALIVE_MS = 60_000  # a drain silent for this long is presumed dead; its task is put back
DRAIN_SECONDS = 20.0  # a drain hands over to a new job after this long, so timers interleave
DRAIN_TASKS = 5_000

# RPUSH the tasks; claim the "drain queued" flag. 1: the caller must enqueue a drain.
_PUT = """
redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""
MAX_BATCH = 1_000  # tasks in one write (Lua's unpack takes a few thousand at most)

# Acknowledge the previous task (if any), keep the heartbeat, take the next task.
_NEXT = """
if ARGV[1] ~= '' then redis.call('LREM', KEYS[2], 1, ARGV[1]) end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
"""

# Put a dead drain's tasks back at the head of the inbox, oldest first; forget the drain.
_RECOVER = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT') do n = n + 1 end
redis.call('SREM', KEYS[4], ARGV[1])
return n
"""


@dataclass(frozen=True)
class Task:
    function: str  # an import path, as for RQ
    args: tuple[Any, ...]

    def encode(self) -> str:
        return json.dumps({"f": self.function, "a": list(self.args)}, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> Task:
        data = json.loads(raw)
        return cls(str(data["f"]), tuple(data["a"]))


class Inbox:
    """Put tasks in (any process); drain them (a worker's job); recover a dead drain's."""

    def __init__(self, connection: redis.Redis,
                 enqueue_drain: Callable[[], None],
                 run_as_job: Callable[[str, tuple[Any, ...]], None]) -> None:
        self.redis = connection
        self._enqueue_drain = enqueue_drain  # queue one drain job
        self._run_as_job = run_as_job  # hand a failed task to RQ
        self._put = connection.register_script(_PUT)
        self._next = connection.register_script(_NEXT)
        self._recover = connection.register_script(_RECOVER)
        self._functions: dict[str, Callable[..., Any]] = {}

    # -- in -----------------------------------------------------------------------------------

    def put(self, function: str, *args: Any) -> None:
        """Have a worker run ``function(*args)`` soon (``args`` must be JSON)."""
        if self._put(keys=[keys.INBOX, keys.INBOX_DRAIN],
                     args=[DRAIN_FLAG_MS, Task(function, args).encode()]):
            self._enqueue_drain()

    def pending(self) -> int:
        return int(self.redis.llen(keys.INBOX))

    # -- out ----------------------------------------------------------------------------------

    def drain(self, *, max_seconds: float = DRAIN_SECONDS, max_tasks: int = DRAIN_TASKS) -> int:
        """Run tasks until the inbox is empty (or the budget is spent); returns how many."""
        taker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        taking, alive = keys.inbox_taking(taker), keys.inbox_alive(taker)
        pipe = self.redis.pipeline()
        pipe.delete(keys.INBOX_DRAIN)  # from now on, a new task queues another drain
        pipe.set(alive, "1", px=ALIVE_MS)
        pipe.sadd(keys.INBOX_TAKERS, taker)
        pipe.execute()
        deadline = time.monotonic() + max_seconds
        done, previous, empty = 0, "", False
        try:
            while done < max_tasks and time.monotonic() < deadline:
                raw = self._next(keys=[keys.INBOX, taking, alive], args=[previous, ALIVE_MS])
                if raw is None:
                    previous, empty = "", True
                    break
                previous = raw.decode() if isinstance(raw, bytes) else raw
                follow_up = self._run(previous)
                done += 1
                if follow_up is not None:
                    # Acknowledge first: the follow-up is durable work with its own recovery.
                    self.redis.lrem(taking, 1, previous)
                    previous = ""
                    self._follow(follow_up)
        finally:
            pipe = self.redis.pipeline()
            if previous:
                pipe.lrem(taking, 1, previous)
            pipe.delete(alive)
            pipe.srem(keys.INBOX_TAKERS, taker)
            pipe.execute()
        if not empty and self.pending():
            self.ensure_drain()  # the budget ran out: another job goes on
        return done

    def _run(self, raw: str) -> Any:
        try:
            task = Task.decode(raw)
        except (ValueError, KeyError, TypeError):
            log.error("dropped an inbox task that is not one: %.200r", raw)
            return None
        try:
            function = self._functions.get(task.function)
            if function is None:
                function = self._functions[task.function] = import_attribute(task.function)
            return function(*task.args)
        except Exception:
            log.exception("inbox task %s failed; handing it to RQ to try once more",
                          task.function)
            self._run_as_job(task.function, task.args)
            return None

    @staticmethod
    def _follow(follow_up: Any) -> None:
        if not callable(follow_up):
            return
        try:
            follow_up()
        except Exception:
            log.exception("the follow-up of an inbox task failed")

    # -- recovery -----------------------------------------------------------------------------

    def ensure_drain(self) -> bool:
        """Queue a drain unless one is queued already; True when this call queued it."""
        if self.redis.set(keys.INBOX_DRAIN, "1", nx=True, px=DRAIN_FLAG_MS):
            self._enqueue_drain()
            return True
        return False

    def recover(self) -> int:
        """Put back the tasks of drains that died; queue a drain for anything waiting.
        Returns how many tasks were put back."""
        recovered = 0
        for raw in self.redis.smembers(keys.INBOX_TAKERS):
            taker = raw.decode() if isinstance(raw, bytes) else str(raw)
            moved = int(self._recover(keys=[keys.INBOX, keys.inbox_taking(taker),
                                            keys.inbox_alive(taker), keys.INBOX_TAKERS],
                                      args=[taker]))
            if moved > 0:
                log.warning("put back %d inbox task(s) of drain %s, whose heartbeat lapsed",
                            moved, taker)
                recovered += moved
        if self.pending():
            self.ensure_drain()
        return recovered


class AsyncInbox:
    """Put tasks from an event loop (the web process), many to a round trip.

    Tasks put while a write is in flight go together in the next one ("group
    commit"): a burst of clicks costs Redis, and the web process, a few writes instead
    of one each. :meth:`put` returns once its task is in Redis, so a click is acked
    only when it cannot be lost.
    """

    def __init__(self, connection: redis.asyncio.Redis,
                 enqueue_drain: Callable[[], None]) -> None:
        self._put = connection.register_script(_PUT)
        self._enqueue_drain = enqueue_drain  # sync (RQ): run in the loop's executor
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def put(self, function: str, *args: Any) -> None:
        """Have a worker run ``function(*args)`` soon; raises when Redis cannot take it."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._waiting.append((Task(function, args).encode(), written))
        if self._writer is None:
            self._writer = loop.create_task(self._write())
        await written

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    drain = await self._put(keys=[keys.INBOX, keys.INBOX_DRAIN],
                                            args=[DRAIN_FLAG_MS, *(task for task, _ in batch)])
                except Exception as exc:
                    for _, written in batch:
                        if not written.done():
                            written.set_exception(exc)
                    continue
                if drain:
                    try:
                        await asyncio.get_running_loop().run_in_executor(None,
                                                                         self._enqueue_drain)
                    except Exception:  # the tasks are safe; a worker's sweep queues a drain
                        log.exception("could not queue an inbox drain; the sweep will")
                for _, written in batch:
                    if not written.done():
                        written.set_result(None)
        finally:
            self._writer = None
