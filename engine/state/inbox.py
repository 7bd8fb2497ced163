"""Inboxes: small, frequent tasks (a reviewer's click) carried to workers many to a job.

An RQ job costs a worker about 5 ms and 25 Redis round trips before its first line
runs, and the process that enqueues it half a millisecond; a burst of 200 clicks as
200 jobs keeps the workers busy with RQ rather than with the clicks. An inbox is a
Redis list instead, one per RQ queue: :meth:`Inbox.put` appends a task in one round
trip and, only when no drain is already queued, queues one RQ job on that queue
(``engine.worker.jobs.drain_inbox``) that runs tasks until the list is empty. A drain clears
the "queued" flag as it starts, so the next task queues a second drain, which another
free worker takes: during a burst every worker drains. The engine's queue has one
(reviewers' clicks, and every run segment: a run started, resumed or recovered is a task,
so one drain runs many segments); the bot's ``slack`` queue another (rewriting decided
reviews).

On RQ (:func:`engine.worker.scheduler.rq_inbox`) the drain job is one job kept per queue,
``signoff-drain-{queue}`` (:class:`DrainJob`): ``INBOX_RING`` appends the tasks, claims the
flag and pushes the job's id on the RQ queue in one script, so a put can be part of a
caller's transaction (:meth:`Inbox.put_in`: an execution's creation and its first
segment land together), and ``signoff worker`` runs the drain without RQ's per-job
bookkeeping (:mod:`engine.worker.worker`).

Nothing is lost when a worker dies: a drain moves each task to a list of its own
(LMOVE) before running it and removes it afterwards, and keeps a heartbeat key alive
while it drains. :meth:`Inbox.recover`, run by every worker's maintenance sweep, puts
the tasks of a drain whose heartbeat lapsed back at the head of the inbox. A task
therefore runs at least once and must be safe to run twice (a decision is: the
engine's guards turn the second into "already decided").

Each move is one Lua script (in :mod:`engine.state.lua`): ``INBOX_PUT`` appends tasks
and claims the "drain queued" flag (1: the caller enqueues the drain; ``INBOX_RING``
queues the RQ drain job itself); ``INBOX_START`` begins a drain; ``INBOX_NEXT``
acknowledges the task just run and moves the next to the drain's own list (nil: the
inbox is empty, and the drain has ended; -1: a queue the worker serves first has a job,
so the drain yields);
``INBOX_RECOVER`` puts a dead drain's tasks back (how many; -1: its heartbeat is alive).
Given the worker's queues (:meth:`Inbox.drain_then`), the script that ends a drain also
begins the next one the worker runs, when the first job waiting on them is a drain job
(the rewrite of a clicked review's message after the click): no round trip of its own.

A task put first (``put(first=True)``; the web process's clicks) goes before the tasks
waiting that were not (run segments), behind those that were: during an alert storm a
click waits for no run (see ``_PUT_TAKE`` in :mod:`engine.state.lua`).

The first task of a drain may have its commit put the task that follows from it in its
place on the drain's list (a lone click's decision, the rewrite of its message:
:class:`Running`), which the drain runs next, with what the first handed it in memory.

A task that raises is tried again later, by its retry intervals (by default
:data:`DEFAULT_RETRY`: 1 s, 2 s, 4 s … capped at 2 minutes, a little over 10 minutes in
all). ``INBOX_LATER`` moves it from the drain's own list to the inbox's "later" sorted set
(scored by when it is due, its count of failed tries raised by one) in one step, so a
worker killed at any point leaves it in one place or the other, never in neither; the
drain goes on with the next task meanwhile. ``INBOX_DUE`` moves the tasks that have come
due back to the tail of the inbox: every drain does so as it starts, a drain job is
queued in RQ's scheduler for the moment the task is due, and every worker's sweep does
so too, should that job be lost. When the tries run out the error is logged, the task's
``on_failure`` (an import path, when it has one) is called with the error and the task's
arguments, and only then is the task acknowledged: a worker killed before that runs it,
and its ``on_failure``, again.
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
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, cast

import redis
import redis.asyncio
from rq.utils import import_attribute

from engine.state import keys, lua
from engine.state.execution import loads

log = logging.getLogger(__name__)


@dataclass
class Running:
    """The inbox task this thread runs: the drain's list it waits in until acknowledged,
    and its entry there. A task whose own commit takes the entry off that list, in the same
    script as its effect (a decision: :attr:`engine.state.store.Change.lrem`), sets
    ``acknowledged``, and its drain does not acknowledge it again; should it raise after
    that, it is not tried again (its effect is in).

    Such a commit may instead put the task that follows from it in its place on that list
    (:attr:`engine.state.store.Change.carry`: a decision's closing work, the rewrite of its
    Slack message), when the task came alone: the first of its drain (``inbox``, the
    inbox's list, is set only then; in a burst the follow-ons go to their own inboxes and
    the drain goes on with the tasks), with that list empty. The commit sets ``then``
    (that task's entry), and the drain runs it next, with no round trip to hand it over,
    and acknowledges it as any task. ``hand_on`` is what the task gives that one in memory
    (what it read and committed, so that it need not read it again): the next task's
    ``handed``. Should the worker die first, the entry is put back in the inbox as any task
    is, and runs from its arguments alone."""

    taking: str
    entry: bytes
    acknowledged: bool = False
    inbox: str = ""  # the inbox's list: a follow-on task is carried only when it is empty
    then: bytes | None = None  # the follow-on task's entry, put in this one's place
    hand_on: Any = None  # given to the follow-on task in memory (its ``handed``)
    handed: Any = None  # what the task before gave this one, when it was carried
    reads: tuple[tuple[str, str], ...] = ()  # its Task.reads
    read: list[Any] | None = None  # their replies, read as it was taken (None: not asked)


_running: ContextVar[Running | None] = ContextVar("signoff_inbox_task", default=None)


def running_task() -> Running | None:
    """The inbox task this thread is running, if any (see :class:`Running`)."""
    return _running.get()

DRAIN_FLAG_MS = 30_000  # a drain queued but not started for this long is queued again
ALIVE_MS = 60_000  # a drain silent for this long is presumed dead; its task is put back
DRAIN_SECONDS = 20.0  # a drain hands over to a new job after this long, so timers interleave
DRAIN_TASKS = 5_000

MAX_BATCH = 1_000  # tasks in one write (Lua's unpack takes a few thousand at most)
DUE_BATCH = 1_000  # tasks moved back from "later" in one script
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps(separators=) builds one a call
_HOST = socket.gethostname()  # a drain's name: host:pid:random


def backoff(first: int = 1, cap: int = 120, at_least: int = 600) -> tuple[int, ...]:
    """Seconds before each further try: doubling from ``first`` up to ``cap``, as many as it
    takes for the waits to add up to ``at_least``."""
    intervals: list[int] = []
    while sum(intervals) < at_least:
        intervals.append(min(cap, first * 2 ** len(intervals)))
    return tuple(intervals)


# A task without retry intervals of its own: 1, 2, 4 … 64, then 120 s four times (607 s):
# a Slack or Redis outage of up to ten minutes costs no click.
DEFAULT_RETRY = backoff()

@dataclass(frozen=True)
class Task:
    function: str  # an import path, as for RQ
    args: tuple[Any, ...]
    retry: tuple[int, ...] = ()  # seconds before each further try; (): DEFAULT_RETRY
    on_failure: str = ""  # import path, called as on_failure(error, *args) when tries run out
    failures: int = 0  # tries that failed so far
    # The queue whose inbox the task belongs in, when it may run in another's drain (carried
    # there by a commit, see Running): tried again in its own inbox, should it fail.
    home: str = ""
    # What it reads first, as (op, key): h a hash (HGETALL), l a list (LRANGE), s a value
    # (GET), read by the script that takes it (Running.read): no round trip of its own.
    reads: tuple[tuple[str, str], ...] = ()

    @property
    def intervals(self) -> tuple[int, ...]:
        return self.retry or DEFAULT_RETRY

    def encode(self) -> str:
        data: dict[str, Any] = {"f": self.function, "a": list(self.args)}
        if self.retry:
            data["r"] = list(self.retry)
        if self.on_failure:
            data["x"] = self.on_failure
        if self.failures:
            data["n"] = self.failures
        if self.home:
            data["h"] = self.home
        if self.reads:
            data["p"] = [list(read) for read in self.reads]
        return _COMPACT.encode(data)

    @classmethod
    def decode(cls, raw: str | bytes) -> Task:
        """Raises ValueError (bad JSON, bad UTF-8 included), KeyError or TypeError."""
        data = loads(raw)
        function, args, retry = data["f"], data["a"], data.get("r", [])
        on_failure, failures, home = data.get("x", ""), data.get("n", 0), data.get("h", "")
        reads = data.get("p", [])
        if not (isinstance(function, str) and function and isinstance(args, list)
                and isinstance(retry, list) and isinstance(on_failure, str)
                and isinstance(failures, int) and isinstance(home, str)
                and isinstance(reads, list)
                and all(isinstance(r, list) and len(r) == 2 and r[0] in READ_OPS
                        and isinstance(r[1], str) for r in reads)):
            raise TypeError(f"not an inbox task: {str(raw)[:200]}")
        return cls(function, tuple(args), tuple(int(s) for s in retry), on_failure, failures,
                   home, tuple((op, key) for op, key in reads))


READ_OPS = ("h", "l", "s")  # Task.reads: a hash, a list, a value

NOT_CHAINED = -2  # Drained.following when the drain did not end with the inbox empty


@dataclass(frozen=True)
class Drained:
    """What a drain did: how many tasks ran, and what its worker runs next (given a chain,
    :meth:`Inbox.drain_then`): the position (1 ..) in the chain of the queue whose drain
    job was taken off it and whose drain began (``begun``: its name and first task), 0 when
    no queue has a job waiting, -1 when the first job waiting is another (RQ's loop runs
    it), NOT_CHAINED when the drain ended otherwise (out of budget, yielding) or was given
    no chain."""

    ran: int
    following: int = NOT_CHAINED
    begun: tuple[str, Any] | None = None


@dataclass(frozen=True)
class Link:
    """One of a worker's queues, for a drain's chain (:meth:`Inbox.drain_then`)."""

    queue_key: str  # the RQ queue's list
    job_id: str  # its drain job's id
    inbox: Inbox


@dataclass(frozen=True)
class DrainJob:
    """A queue's drain as one RQ job kept for good (its hash written again at each ring),
    whose id :data:`INBOX_RING` pushes on the RQ queue: queueing a drain is then part of
    the script that claims the flag, and a worker that knows the id runs the drain without
    RQ's per-job bookkeeping (engine.worker.worker)."""

    queue_key: str  # the RQ queue's list
    queues_key: str  # RQ's set of queues
    job_key: str  # the job's hash
    job_id: str
    fields: tuple[Any, ...]  # the job's hash, field, value, field, value ...


class Inbox:
    """The inbox of RQ queue ``queue``: put tasks in (any process), drain them (a
    worker's job), put back a dead drain's task (any worker's sweep).

    With ``drain_job`` a drain is queued by :data:`INBOX_RING`, in the script that puts the
    tasks (and :meth:`put` can join a caller's transaction); otherwise ``enqueue_drain``
    queues one after the put."""

    def __init__(self, connection: redis.Redis, queue: str,
                 enqueue_drain: Callable[[], None] | None = None,
                 enqueue_drain_in: Callable[[float], None] | None = None, *,
                 clock: Callable[[], float] = time.time,
                 drain_job: DrainJob | None = None) -> None:
        self.redis = connection
        self.queue = queue
        self.key, self.drain_flag = keys.inbox(queue), keys.inbox_drain(queue)
        self.takers, self.later = keys.inbox_takers(queue), keys.inbox_later(queue)
        self.first = keys.inbox_first(queue)  # how many tasks at the head were put first
        self.drain_job = drain_job
        if enqueue_drain is None and drain_job is None:
            raise ValueError("an inbox needs enqueue_drain or a drain_job")
        # queue one drain job (the flag is ours)
        self.enqueue_drain: Callable[[], None] = enqueue_drain or self._ring
        self._enqueue_drain_in = enqueue_drain_in  # queue a drain job to start in n seconds
        self.clock = clock  # seconds since the epoch: when a failed task is due again
        self._put = connection.register_script(lua.INBOX_PUT)
        self._ring_script = connection.register_script(lua.INBOX_RING)
        self._start = connection.register_script(lua.INBOX_START)
        self._next = connection.register_script(lua.INBOX_NEXT)
        self._recover = connection.register_script(lua.INBOX_RECOVER)
        self._later = connection.register_script(lua.INBOX_LATER)
        self._due = connection.register_script(lua.INBOX_DUE)
        self._functions: dict[str, Callable[..., Any]] = {}
        # The inbox of another queue, for a task of that queue's run here that failed (a
        # carried one, see Task.home): its tries go back there. None: they stay here.
        self.inbox_of: Callable[[str], Inbox] | None = None

    # -- in -----------------------------------------------------------------------------------

    def put(self, function: str, *args: Any, retry: tuple[int, ...] = (),
            on_failure: str = "", first: bool = False,
            reads: tuple[tuple[str, str], ...] = ()) -> None:
        """Have a worker run ``function(*args)`` soon (``args`` must be JSON); should it
        fail, it is tried again after each of ``retry``'s intervals (seconds; by default
        :data:`DEFAULT_RETRY`), then ``on_failure(error, *args)`` is called. ``first``: it
        goes before the tasks waiting that were not put first (a click before run
        segments), after those that were. ``reads``: what the task reads first
        (:attr:`Task.reads`), read as it is taken (:attr:`Running.read`)."""
        task = Task(function, args, retry, on_failure, reads=reads)
        if self.drain_job is not None:
            self._ring_call(DRAIN_FLAG_MS, task.encode(), first=first)
            return
        put_keys = [self.key, self.drain_flag, keys.INBOXES, *([self.first] if first else [])]
        if self._put(keys=put_keys, args=[DRAIN_FLAG_MS, self.queue, task.encode()]):
            self.enqueue_drain()

    def put_in(self, pipeline: Any, function: str, *args: Any) -> None:
        """:meth:`put`, as one more command of ``pipeline`` (a transaction the caller
        executes): the task is in exactly when the caller's writes are. Needs a
        ``drain_job``."""
        if self.drain_job is None:
            raise TypeError(f"inbox {self.queue} queues its drains in Python: use put()")
        self._ring_call(DRAIN_FLAG_MS, Task(function, args).encode(), client=pipeline)

    def _ring(self) -> None:
        """Queue a drain whatever the flag says (the caller holds it)."""
        job = self.drain_job
        assert job is not None
        pipe = self.redis.pipeline()
        pipe.hset(job.job_key, items=list(job.fields))
        pipe.rpush(job.queue_key, job.job_id)
        pipe.sadd(job.queues_key, job.queue_key)
        pipe.execute()

    def _ring_call(self, flag_ms: int | str, *tasks: str, client: Any = None,
                   first: bool = False) -> int:
        job = self.drain_job
        assert job is not None
        keys_ = [self.key, self.drain_flag, keys.INBOXES, job.queue_key, job.queues_key,
                 job.job_key, *([self.first] if first else [])]
        if client is not None:
            # EVAL, not EVALSHA: redis-py checks a pipeline's scripts with SCRIPT EXISTS
            # before each execute, a round trip more than the ~1 KB of script and job.
            args = [flag_ms, self.queue, job.queue_key, job.job_id, len(job.fields),
                    *job.fields, *tasks]
            client.eval(lua.INBOX_RING, len(keys_), *keys_, *args)
            return 0
        # Without the job's hash (~40 arguments to send), which is written again only when
        # it is missing (-1: the flag is ours, the tasks are in, the drain is not queued).
        rang = int(self._ring_script(keys=keys_, args=[flag_ms, self.queue, job.queue_key,
                                                       job.job_id, 0, *tasks]))
        if rang == -1:
            self._ring()
            return 1
        return rang

    def pending(self) -> int:
        return int(self.redis.llen(self.key))

    def retrying(self) -> list[tuple[float, Task]]:
        """The tasks waiting to be tried again, soonest first, with when each is due."""
        found = cast(list[tuple[bytes, float]],
                     self.redis.zrange(self.later, 0, -1, withscores=True))
        return [(score / 1000, Task.decode(_without_tag(member))) for member, score in found]

    # -- out ----------------------------------------------------------------------------------

    def drain(self, *, max_seconds: float = DRAIN_SECONDS, max_tasks: int = DRAIN_TASKS,
              yield_to: Sequence[str] = ()) -> int:
        """Run tasks until the inbox is empty; returns how many ran (failed ones included,
        entries that are not tasks not).

        Hands over to a new drain job after ``max_seconds`` or ``max_tasks``, and as soon
        as a list in ``yield_to`` (the RQ queues its worker takes jobs from first) has a
        job waiting: clicks come before rewriting Slack messages.
        """
        return self.drain_then(max_seconds=max_seconds, max_tasks=max_tasks,
                               yield_to=yield_to).ran

    def drain_then(self, *, max_seconds: float = DRAIN_SECONDS, max_tasks: int = DRAIN_TASKS,
                   yield_to: Sequence[str] = (), chain: Sequence[Link] = (),
                   begun: tuple[str, Any] | None = None) -> Drained:
        """:meth:`drain`, and, with ``chain`` (the worker's queues, in the order it serves
        them), the drain its worker runs next, begun by the script that ended this one (no
        round trip of its own): when the first job waiting on those queues is a queue's
        drain job, it is taken off its queue and that queue's drain begins, its first task
        taken (:attr:`Drained.following`, :attr:`Drained.begun`). ``begun``: this drain was
        begun so, by another's end (its name and first task): run it from there."""
        chain_keys: list[str] = []
        chain_args: list[str] = []
        next_taker = ""
        if chain:
            next_taker = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            chain_keys = [keys.inbox_alive(next_taker), keys.inbox_taking(next_taker)]
            for link in chain:
                other = link.inbox
                chain_keys += [link.queue_key, other.drain_flag, other.takers, other.key,
                               other.first]
            chain_args = [next_taker, *(link.job_id for link in chain)]
        following, next_begun = NOT_CHAINED, None
        if begun is None:
            taker = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            taking, alive = keys.inbox_taking(taker), keys.inbox_alive(taker)
            # One script: the flag given up (a new task now queues another drain), the
            # heartbeat started, the tasks whose next try is due moved back, the first taken.
            take = "1" if max_seconds > 0 and max_tasks > 0 else "0"
            started = self._start(
                keys=[self.drain_flag, alive, self.takers, self.later, self.key, taking,
                      self.first, *yield_to, *chain_keys],
                args=[ALIVE_MS, taker, int(self.clock() * 1000), DUE_BATCH, take,
                      len(yield_to), *chain_args])
            moved, first = started[0], started[1]
            if len(started) > 2:  # the inbox was empty, and the chain looked
                following = int(started[2])
                if len(started) > 3:
                    next_begun = (next_taker, started[3])
        else:  # begun by the script that ended the drain before
            (taker, first), moved = begun, 0
            taking, alive = keys.inbox_taking(taker), keys.inbox_alive(taker)
        deadline = time.monotonic() + max_seconds
        done, finished, empty, stopped = 0, b"", False, False  # finished: ran, not acknowledged
        ended = False  # the last script found the inbox empty and ended the drain
        next_keys = [self.key, taking, alive, self.takers, self.first, *yield_to, *chain_keys]
        carried: tuple[bytes, Any] | None = None  # a task's follow-on, on our list already
        raw: Any = None  # what the last script gave: a task, None, -1, or the chain's reply
        try:
            if int(moved) >= DUE_BATCH:
                self.move_due()
            while True:
                handed = read = None
                if carried is not None:  # run now, whatever the budget: it is ours to run
                    (raw, handed), carried = carried, None
                elif first != -2:  # taken by INBOX_START
                    (raw, read), first = _taken(None if first == 0 else first), -2
                elif done < max_tasks and time.monotonic() < deadline:
                    raw, read = _taken(self._next(
                        keys=next_keys, args=[finished, ALIVE_MS, taker, "1", len(yield_to),
                                              *chain_args]))
                else:
                    break
                finished = b""
                if isinstance(raw, list):  # empty, the drain ended, and the chain looked
                    following = int(raw[1])
                    if len(raw) > 2:
                        next_begun = (next_taker, raw[2])
                    raw = None
                if raw is None or raw == -1:
                    empty = ended = raw is None
                    break
                # Only the first task of a drain may carry a follow-on: a lone click's. In a
                # burst the drain runs on, and the follow-ons go to their own inboxes.
                ran, later, acknowledged, carried = self._run(raw, taking, handed,
                                                              alone=not done, read=read)
                # A task due later is off our list already, one that acknowledged itself too.
                finished = b"" if later or acknowledged else raw
                done += ran
            stopped = True
        finally:
            # A task cut short (the worker told to stop at once) stays in the taking list:
            # with the heartbeat gone, the next sweep puts it back.
            if not ended:
                pipe = self.redis.pipeline()
                if finished:
                    pipe.lrem(taking, 1, cast(str, finished))
                pipe.delete(alive)
                if stopped:
                    pipe.srem(self.takers, taker)
                pipe.execute()
        if not empty and self.pending():
            self.ensure_drain()  # out of budget, or yielding: another job goes on
        if chain and ended:
            return Drained(done, following, next_begun)
        return Drained(done)

    def _run(self, raw: bytes, taking: str, handed: Any = None, *, alone: bool = False,
             read: list[Any] | None = None
             ) -> tuple[int, bool, bool, tuple[bytes, Any] | None]:
        """Run one task: (1 when it ran, 0 when it was dropped; True when it failed and was
        put off till later, off the drain's list; True when it acknowledged itself; the
        entry of the task that took its place on the drain's list, to run next, with what it
        hands that one, see :class:`Running`). ``alone``: the drain's first task, which may
        carry a follow-on (``Running.inbox`` is set); ``read``: what it asked to be read as
        it was taken (:attr:`Task.reads`). What a task returns is not used."""
        try:
            task = Task.decode(raw)
        except (ValueError, KeyError, TypeError):
            log.error("dropped an inbox entry that is not a task: %.200r", raw)
            return 0, False, False, None
        running = Running(taking, raw, inbox=self.key if alone else "", handed=handed,
                          reads=task.reads, read=read)
        token = _running.set(running)
        try:
            self._function(task.function)(*task.args)
        except Exception as exc:
            if not running.acknowledged:
                return 1, self._failed(raw, task, exc, taking), False, None
            # Its effect is committed and its entry gone: not to be tried again. A follow-on
            # put in its place runs next all the same, from its arguments.
            log.exception("inbox task %s failed after its commit acknowledged it",
                          task.function)
            running.hand_on = None
        finally:
            _running.reset(token)
        then = running.then
        return (1, False, running.acknowledged,
                (then, running.hand_on) if then is not None else None)

    def _function(self, path: str) -> Callable[..., Any]:
        function = self._functions.get(path)
        if function is None:
            function = self._functions[path] = import_attribute(path)
        return function

    def _failed(self, raw: bytes, task: Task, exc: Exception, taking: str) -> bool:
        """Put ``task`` off till its next try (True), or, its tries spent, log it and call its
        ``on_failure`` (False: the drain acknowledges it afterwards)."""
        intervals = task.intervals
        if task.failures < len(intervals):
            delay = intervals[task.failures]
            log.warning("inbox task %s failed (try %d of %d); trying again in %d s",
                        task.function, task.failures + 1, len(intervals) + 1, delay,
                        exc_info=exc)
            again = replace(task, failures=task.failures + 1)
            home = (self.inbox_of(task.home) if task.home and task.home != self.queue
                    and self.inbox_of is not None else self)
            due_ms = int((home.clock() + delay) * 1000)
            home._later(keys=[taking, home.later],
                        args=[raw, due_ms, f"{uuid.uuid4().hex[:8]}|{again.encode()}"])
            home._wake_in(delay)
            return True
        log.error("inbox task %s failed %d times over %d s; giving up: %.500s",
                  task.function, task.failures + 1, sum(intervals), task.encode(), exc_info=exc)
        if task.on_failure:
            try:
                self._function(task.on_failure)(_describe(exc), *task.args)
            except Exception:
                log.exception("the on_failure of inbox task %s failed", task.function)
        return False

    def _wake_in(self, delay: float) -> None:
        """Have a drain start when a task put off by ``delay`` seconds is due (should this
        fail, the next drain or sweep moves it back)."""
        if self._enqueue_drain_in is None:
            return
        try:
            self._enqueue_drain_in(delay)
        except Exception:
            log.exception("could not queue a drain of inbox %s in %s s", self.queue, delay)

    def move_due(self) -> int:
        """Move the tasks whose next try has come due back to the inbox; how many."""
        moved = 0
        while True:
            n = int(self._due(keys=[self.later, self.key],
                              args=[int(self.clock() * 1000), DUE_BATCH]))
            moved += n
            if n < DUE_BATCH:
                return moved

    # -- recovery -----------------------------------------------------------------------------

    def ensure_drain(self) -> bool:
        """Queue a drain unless one is queued already; True when this call queued it."""
        if self.drain_job is not None:
            return bool(self._ring_call(DRAIN_FLAG_MS))
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
                                            keys.inbox_alive(taker), self.takers, self.first],
                                      args=[taker]))
            if moved > 0:
                log.warning("put back %d inbox task(s) of drain %s, whose heartbeat lapsed",
                            moved, taker)
                recovered += moved
        self.move_due()
        if self.pending() and not self.ensure_drain() and self.drain_job is not None \
                and self.redis.lpos(self.drain_job.queue_key, self.drain_job.job_id) is None:
            # The flag says a drain is queued, yet its job is on no queue: a worker took
            # it and stopped before the drain began (killed, or its queue emptied). Queue it
            # again now rather than when the flag lapses (30 s); should that worker's drain
            # begin after all, the second finds the inbox empty and ends at once.
            log.warning("inbox %s has tasks and no drain queued; queueing one", self.queue)
            self.redis.delete(self.drain_flag)
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
                 enqueue_drain: Callable[[], None], *, first: bool = False) -> None:
        """``first``: every task goes first (see :meth:`Inbox.put`)."""
        self.redis = connection
        self._put = connection.register_script(lua.INBOX_PUT)
        self.queue = queue
        self._drain_flag = keys.inbox_drain(queue)
        self._keys = [keys.inbox(queue), self._drain_flag, keys.INBOXES,
                      *([keys.inbox_first(queue)] if first else [])]
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

    async def put(self, function: str, *args: Any, retry: tuple[int, ...] = (),
                  on_failure: str = "", reads: tuple[tuple[str, str], ...] = ()) -> None:
        """Have a worker run ``function(*args)`` soon (as :meth:`Inbox.put`); raises when
        Redis cannot take it."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._waiting.append((Task(function, args, retry, on_failure, reads=reads).encode(),
                              written))
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


def _taken(reply: Any) -> tuple[Any, list[Any] | None]:
    """A script's reply where a task may be (INBOX_START's first, INBOX_NEXT's, a chained
    drain's): the task's entry as taken, and the replies to its reads when it named any
    (``_PUT_TAKE``'s take gives them as ``{task, reads}``); anything else as it is."""
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], bytes):
        return reply[0], reply[1]
    return reply, None


def _without_tag(member: bytes | str) -> str:
    """A task as kept in the "later" set: ``tag|task``, the tag keeping equal tasks apart."""
    text = member.decode() if isinstance(member, bytes) else member
    return text.split("|", 1)[1]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _log_failure(future: asyncio.Future[Any]) -> None:
    failure = None if future.cancelled() else future.exception()
    if failure is not None:  # the flag expires by itself (DRAIN_FLAG_MS)
        log.error("could not give up an inbox's drain flag", exc_info=failure)
