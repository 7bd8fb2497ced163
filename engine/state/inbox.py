"""Inboxes: small, frequent tasks (a reviewer's click) carried to workers many to a job.

An RQ job costs a worker about 5 ms and 25 Redis round trips before its first line
runs, and the process that enqueues it half a millisecond; a burst of 200 clicks as
200 jobs keeps the workers busy with RQ rather than with the clicks. An inbox is a
Redis list instead, one per RQ queue: :meth:`Inbox.put` appends a task in one round
trip and, only when no drain is already queued, enqueues one RQ job on that queue
(``engine.worker.jobs.drain_inbox``) that runs tasks until the list is empty. A drain clears
the "queued" flag as it starts, so the next task queues a second drain, which another
free worker takes: during a burst every worker drains. The engine's queue has one
(reviewers' clicks); the bot's ``slack`` queue another (rewriting decided reviews).

Nothing is lost when a worker dies: a drain moves each task to a list of its own
(LMOVE) before running it and removes it afterwards, and keeps a heartbeat key alive
while it drains. :meth:`Inbox.recover`, run by every worker's maintenance sweep, puts
the tasks of a drain whose heartbeat lapsed back at the head of the inbox. A task
therefore runs at least once and must be safe to run twice (a decision is: the
engine's guards turn the second into "already decided").

Each move is one Lua script (in :mod:`engine.state.lua`): ``INBOX_PUT`` appends tasks
and claims the "drain queued" flag (1: the caller enqueues the drain); ``INBOX_NEXT``
acknowledges the task just run and moves the next to the drain's own list (nil: the
inbox is empty; -1: a queue the worker serves first has a job, so the drain yields);
``INBOX_RECOVER`` puts a dead drain's tasks back (how many; -1: its heartbeat is alive).

A task may return a follow-up, a callable run after the task is acknowledged: work the
task has already made durable and that has its own recovery (continuing a run the
task resumed; a lapsed lease gets it re-enqueued). A task that raises is handed to RQ
as an ordinary job, which runs it once more, then by the task's retry intervals, and
keeps it with its traceback in RQ's failed job registry when they run out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio
from rq.utils import import_attribute

from engine.state import keys, lua

log = logging.getLogger(__name__)

DRAIN_FLAG_MS = 30_000  # a drain queued but not started for this long is queued again
ALIVE_MS = 60_000  # a drain silent for this long is presumed dead; its task is put back
DRAIN_SECONDS = 20.0  # a drain hands over to a new job after this long, so timers interleave
DRAIN_TASKS = 5_000

MAX_BATCH = 1_000  # tasks in one write (Lua's unpack takes a few thousand at most)
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps(separators=) builds one a call

@dataclass(frozen=True)
class Task:
    function: str  # an import path, as for RQ
    args: tuple[Any, ...]
    retry: tuple[int, ...] = ()  # seconds between further tries, once handed to RQ

    def encode(self) -> str:
        data: dict[str, Any] = {"f": self.function, "a": list(self.args)}
        if self.retry:
            data["r"] = list(self.retry)
        return _COMPACT.encode(data)

    @classmethod
    def decode(cls, raw: str | bytes) -> Task:
        """Raises ValueError (bad JSON, bad UTF-8 included), KeyError or TypeError."""
        data = json.loads(raw)
        function, args, retry = data["f"], data["a"], data.get("r", [])
        if not (isinstance(function, str) and function and isinstance(args, list)
                and isinstance(retry, list)):
            raise TypeError(f"not an inbox task: {str(raw)[:200]}")
        return cls(function, tuple(args), tuple(int(s) for s in retry))


class Inbox:
    """The inbox of RQ queue ``queue``: put tasks in (any process), drain them (a
    worker's job), put back a dead drain's task (any worker's sweep)."""

    def __init__(self, connection: redis.Redis, queue: str,
                 enqueue_drain: Callable[[], None],
                 run_as_job: Callable[[Task], None]) -> None:
        self.redis = connection
        self.queue = queue
        self.key, self.drain_flag = keys.inbox(queue), keys.inbox_drain(queue)
        self.takers = keys.inbox_takers(queue)
        self.enqueue_drain = enqueue_drain  # queue one drain job (the flag is ours)
        self._run_as_job = run_as_job  # hand a failed task to RQ
        self._put = connection.register_script(lua.INBOX_PUT)
        self._next = connection.register_script(lua.INBOX_NEXT)
        self._recover = connection.register_script(lua.INBOX_RECOVER)
        self._functions: dict[str, Callable[..., Any]] = {}

    # -- in -----------------------------------------------------------------------------------

    def put(self, function: str, *args: Any, retry: tuple[int, ...] = ()) -> None:
        """Have a worker run ``function(*args)`` soon (``args`` must be JSON); should it
        fail, RQ tries it again, then after each of ``retry``'s intervals (seconds)."""
        if self._put(keys=[self.key, self.drain_flag, keys.INBOXES],
                     args=[DRAIN_FLAG_MS, self.queue, Task(function, args, retry).encode()]):
            self.enqueue_drain()

    def pending(self) -> int:
        return int(self.redis.llen(self.key))

    # -- out ----------------------------------------------------------------------------------

    def drain(self, *, max_seconds: float = DRAIN_SECONDS, max_tasks: int = DRAIN_TASKS,
              yield_to: Sequence[str] = ()) -> int:
        """Run tasks until the inbox is empty; returns how many ran (failed ones included,
        entries that are not tasks not).

        Hands over to a new drain job after ``max_seconds`` or ``max_tasks``, and as soon
        as a list in ``yield_to`` (the RQ queues its worker takes jobs from first) has a
        job waiting: clicks come before rewriting Slack messages.
        """
        taker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        taking, alive = keys.inbox_taking(taker), keys.inbox_alive(taker)
        pipe = self.redis.pipeline()
        pipe.delete(self.drain_flag)  # from now on, a new task queues another drain
        pipe.set(alive, "1", px=ALIVE_MS)
        pipe.sadd(self.takers, taker)
        pipe.execute()
        deadline = time.monotonic() + max_seconds
        done, finished, empty, stopped = 0, b"", False, False  # finished: ran, not acknowledged
        try:
            while done < max_tasks and time.monotonic() < deadline:
                raw = self._next(keys=[self.key, taking, alive, self.takers, *yield_to],
                                 args=[finished, ALIVE_MS, taker])
                finished = b""
                if raw is None or raw == -1:
                    empty = raw is None
                    break
                ran, follow_up = self._run(raw)
                finished = raw
                done += ran
                if follow_up is not None:
                    # Acknowledge first: the follow-up is durable work with its own recovery.
                    self.redis.lrem(taking, 1, cast(str, raw))  # redis-py takes bytes too
                    finished = b""
                    self._follow(follow_up)
            stopped = True
        finally:
            # A task cut short (the worker told to stop at once) stays in the taking list:
            # with the heartbeat gone, the next sweep puts it back.
            pipe = self.redis.pipeline()
            if finished:
                pipe.lrem(taking, 1, cast(str, finished))
            pipe.delete(alive)
            if stopped:
                pipe.srem(self.takers, taker)
            pipe.execute()
        if not empty and self.pending():
            self.ensure_drain()  # out of budget, or yielding: another job goes on
        return done

    def _run(self, raw: bytes) -> tuple[int, Any]:
        """Run one task: (1 when it ran, 0 when it was dropped; its follow-up or None)."""
        try:
            task = Task.decode(raw)
        except (ValueError, KeyError, TypeError):
            log.error("dropped an inbox entry that is not a task: %.200r", raw)
            return 0, None
        try:
            function = self._functions.get(task.function)
            if function is None:
                function = self._functions[task.function] = import_attribute(task.function)
            return 1, function(*task.args)
        except Exception:
            log.exception("inbox task %s failed; handing it to RQ to try once more",
                          task.function)
            self._run_as_job(task)
            return 1, None

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
        if self.redis.set(self.drain_flag, "1", nx=True, px=DRAIN_FLAG_MS):
            self.enqueue_drain()
            return True
        return False

    def recover(self) -> int:
        """Put back the tasks of drains that died; queue a drain for anything waiting.
        Returns how many tasks were put back."""
        recovered = 0
        for raw in self.redis.smembers(self.takers):
            taker = raw.decode() if isinstance(raw, bytes) else str(raw)
            moved = int(self._recover(keys=[self.key, keys.inbox_taking(taker),
                                            keys.inbox_alive(taker), self.takers],
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
    only when it cannot be lost. The drain job a write asks for is queued after its
    callers are told (RQ's enqueue is sync and takes a thread, ~0.5 ms): should that
    fail, the tasks are safe and a worker's sweep queues the drain.

    With :meth:`wait_for_replicas` (``SIGNOFF_ACK_REPLICAS``), "in Redis" means on the
    primary and on that many replicas: each write is followed by ``WAIT n timeout`` on
    the same connection (one pipeline, so no extra round trip; the script goes as EVAL, a
    few hundred bytes, rather than EVALSHA with a SCRIPT EXISTS check before each
    pipeline). When fewer replicas acknowledge in time, the shortfall is logged as an
    error and the callers are told all the same: the tasks are on the primary, and are
    lost only if it fails before a replica has them. Without it (the default) no WAIT is
    sent.
    """

    def __init__(self, connection: redis.asyncio.Redis, queue: str,
                 enqueue_drain: Callable[[], None]) -> None:
        self.redis = connection
        self._put = connection.register_script(lua.INBOX_PUT)
        self.queue = queue
        self._drain_flag = keys.inbox_drain(queue)
        self._keys = [keys.inbox(queue), self._drain_flag, keys.INBOXES]
        self._enqueue_drain = enqueue_drain  # sync (RQ): run in the loop's executor
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[Any]] = set()  # drain jobs being queued
        self.replicas = 0  # how many replicas must acknowledge a write (WAIT); 0: none
        self.replica_timeout_ms = 500

    def wait_for_replicas(self, replicas: int, timeout_ms: int) -> None:
        """From now on, tell a caller its task is in once ``replicas`` replicas have it too,
        or ``timeout_ms`` passed (then the shortfall is logged as an error)."""
        self.replicas, self.replica_timeout_ms = replicas, timeout_ms

    async def put(self, function: str, *args: Any, retry: tuple[int, ...] = ()) -> None:
        """Have a worker run ``function(*args)`` soon (as :meth:`Inbox.put`); raises when
        Redis cannot take it."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._waiting.append((Task(function, args, retry).encode(), written))
        if self._writer is None:
            self._writer = loop.create_task(self._write())
        await written

    async def settle(self) -> None:
        """Wait until the drain jobs asked for so far are queued (tests, shutdown)."""
        while self._writer is not None or self._background:
            pending: list[Any] = [*self._background]
            if self._writer is not None:
                pending.append(self._writer)
            await asyncio.gather(*pending, return_exceptions=True)

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    args: list[str | int] = [DRAIN_FLAG_MS, self.queue,
                                             *(task for task, _ in batch)]
                    if self.replicas:
                        drain = await self._write_and_wait(args)
                    else:  # the default: the click path as cheap as it was, one EVALSHA
                        drain = await self._put(keys=self._keys, args=args)
                except Exception as exc:
                    for _, written in batch:
                        if not written.done():
                            written.set_exception(exc)
                    continue
                for _, written in batch:
                    if not written.done():
                        written.set_result(None)
                if drain:
                    self._queue_drain()
        finally:
            self._writer = None

    async def _write_and_wait(self, args: list[str | int]) -> Any:
        """INBOX_PUT with ``args``, then WAIT for the replicas; logs a shortfall."""
        # WAIT counts the writes of its own connection: the pipeline keeps both on one.
        pipe = self.redis.pipeline(transaction=False)
        pipe.eval(lua.INBOX_PUT, len(self._keys), *self._keys, *args)
        pipe.wait(self.replicas, self.replica_timeout_ms)
        drain, acknowledged = await pipe.execute()
        if int(acknowledged) < self.replicas:
            tasks = len(args) - 2  # after the drain flag's lifetime and the queue name
            log.error("only %d of %d replica(s) acknowledged %d task(s) put in inbox %s "
                      "within %d ms (SIGNOFF_ACK_REPLICAS); told the callers they are in: "
                      "they are on the primary, and lost only if it fails before a replica "
                      "has them", int(acknowledged), self.replicas, tasks, self.queue,
                      self.replica_timeout_ms)
        return drain

    def _queue_drain(self) -> None:
        self._keep(asyncio.get_running_loop().run_in_executor(None, self._enqueue_drain),
                   self._drain_queued)

    def _drain_queued(self, enqueue: asyncio.Future[None]) -> None:
        failure = None if enqueue.cancelled() else enqueue.exception()
        if failure is not None:
            # The tasks are safe. Give up the "drain queued" flag, so that the next put,
            # or the next worker's sweep, queues one instead of waiting for it to expire.
            log.error("could not queue a drain of inbox %s; the next put or sweep will",
                      self.queue, exc_info=failure)
            self._keep(asyncio.ensure_future(self.redis.delete(self._drain_flag)), _log_failure)

    def _keep(self, future: asyncio.Future[Any], done: Callable[[asyncio.Future[Any]], None]) -> None:
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        future.add_done_callback(done)


def _log_failure(future: asyncio.Future[Any]) -> None:
    failure = None if future.cancelled() else future.exception()
    if failure is not None:  # the flag expires by itself (DRAIN_FLAG_MS)
        log.error("could not give up an inbox's drain flag", exc_info=failure)
