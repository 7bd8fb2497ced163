"""Tasks the inbox tests hand in (by import path, as production hands in its own).

They run in the test process (``work()``, ``Inbox.drain``) or in a ``signoff worker``
process; either way ``runtime()`` is the process's installed runtime, and each task
records what it did, or saw, in Redis under ``test:inbox:*`` for the test to read.
"""

from __future__ import annotations

import json
from typing import Any

from engine.state import keys
from engine.worker.runtime import runtime

RAN = "test:inbox:ran"  # list: names, in the order the tasks ran
SEEN = "test:inbox:seen"  # list: JSON of what a task saw of the drain
STARTED = "test:inbox:started"  # list: names of blocking tasks that started
ATTEMPTS = "test:inbox:attempts:"  # + name: counter of a flaky task's attempts


def _redis() -> Any:
    return runtime().store.redis


def drain_state() -> dict[str, Any]:
    """Every drain's taking list, the takers and their heartbeats, as Redis holds them now."""
    r = _redis()
    taking = {key.decode(): [raw.decode() for raw in r.lrange(key, 0, -1)]
              for key in r.scan_iter(match=keys.inbox_taking("*"))}
    takers = sorted(t.decode() for t in r.smembers(keys.inbox_takers(runtime().settings.queue)))
    alive = {t: r.pttl(keys.inbox_alive(t)) for t in takers}
    return {"taking": taking, "takers": takers, "alive": alive}


def record(name: str, *extra: Any) -> None:
    _redis().rpush(RAN, json.dumps([name, *extra]) if extra else name)


def observe(name: str) -> None:
    """Record the drain as the task running inside it sees it."""
    _redis().rpush(SEEN, json.dumps({"who": name, **drain_state()}))
    record(name)


def age_heartbeat(ms: int) -> None:
    """Stand in for a drain that has been at it a while: its heartbeat has ``ms`` left."""
    r = _redis()
    for taker in drain_state()["takers"]:
        r.pexpire(keys.inbox_alive(taker), ms)
    record(f"aged to {ms}")


def hand_in_and_look(name: str) -> None:
    """Hand in another task from inside a drain; record which jobs RQ's queue then holds."""
    rt = runtime()
    rt.engine.scheduler.hand_in(f"{__name__}.record", f"{name}-handed-in")
    queue = rt.engine.scheduler.queue
    _redis().rpush(SEEN, json.dumps([job.func_name for job in queue.get_jobs()]))
    record(name)


def enqueue_job(name: str) -> None:
    """Put an ordinary RQ job (``record(name)``) on the engine's queue, then record ``name``."""
    runtime().engine.scheduler.enqueue(f"{__name__}.record", f"{name}-job")
    record(name)


def returns_a_value(name: str) -> int:
    record(name)
    return 42


def fail(name: str) -> None:
    raise RuntimeError(f"{name} always fails")


def fail_once(name: str) -> None:
    if _redis().incr(ATTEMPTS + name) == 1:
        raise RuntimeError(f"{name} fails the first time")
    record(name)


def block(name: str, release: str) -> None:
    """Say it started, then wait (up to 30 s) for the test to push to ``release``."""
    r = _redis()
    r.rpush(STARTED, name)
    r.blpop([release], timeout=30)
    record(name)


def outlive_heartbeat(name: str) -> None:
    """Run past the drain's heartbeat while another worker sweeps: the state a task
    longer than the heartbeat (60 s) leaves. PEXPIRE stands in for the wait."""
    from engine.worker.scheduler import rq_inbox

    r = _redis()
    queue = runtime().settings.queue
    if not r.set(f"{ATTEMPTS}{name}", 1, nx=True):  # put back by the sweep, it runs again
        record(f"{name} again")
        return
    for taker in drain_state()["takers"]:
        r.pexpire(keys.inbox_alive(taker), 1)
    while any(r.exists(keys.inbox_alive(t)) for t in drain_state()["takers"]):
        pass  # a millisecond
    rq_inbox(r, queue).recover()  # another worker's maintenance sweep
    record(name)


def exit_mid_task(name: str) -> None:
    record(f"{name} started")
    raise SystemExit()  # what RQ's cold shutdown (a second SIGTERM, Ctrl-C) raises in a job


def gave_up(error: str, name: str) -> None:
    """An ``on_failure``: record that the tries of ``name`` ran out, and the last error."""
    record("gave up", name, error)


def fail_once_then_block(name: str, release: str) -> None:
    """Fail the first try; on the next, say it started and wait as :func:`block` does."""
    if _redis().incr(ATTEMPTS + name) == 1:
        raise RuntimeError(f"{name} fails the first time")
    block(name, release)


# -- carried tasks (Running.then) ------------------------------------------------------------

def hand_over(name: str, carried: str, home: str = "", block_on: str = "") -> None:
    """Do what a commit carrying a follow-on does (Change.carry): put ``carried`` (a task
    recording what it was handed; one that always fails when it is ``"fail"``) in this
    task's place on the drain's list, and hand it ``{"from": name}`` in memory; then, with
    ``block_on``, say so and wait for it (as a click's task goes on after its commit)."""
    from engine.state.inbox import Task, running_task

    running = running_task()
    assert running is not None
    function = f"{__name__}.{'fail' if carried == 'fail' else 'record_handed'}"
    entry = Task(function, (carried,), retry=(5,), home=home).encode().encode()
    r = _redis()
    pipe = r.pipeline()
    pipe.lrem(running.taking, 1, running.entry)
    pipe.rpush(running.taking, entry)
    pipe.execute()
    running.acknowledged, running.then, running.hand_on = True, entry, {"from": name}
    record(name)
    if block_on:
        r.rpush(STARTED, name)
        r.blpop([block_on], timeout=30)


def record_handed(name: str) -> None:
    """Record ``name`` and what the task before handed this one (None when not carried)."""
    from engine.state.inbox import running_task

    running = running_task()
    record(name, running.handed if running is not None else "no task")


def acknowledge_then_fail(name: str) -> None:
    """Take this task off the drain's list (as a commit that acknowledges it does), then
    fail: its effect is in, so it must not be tried again."""
    from engine.state.inbox import running_task

    running = running_task()
    assert running is not None
    _redis().lrem(running.taking, 1, running.entry)
    running.acknowledged = True
    record(name)
    raise RuntimeError(f"{name} failed after its commit")


# -- a decision made by an inbox task, with a notifier whose closing work is a task ---------

CLOSED = "test:inbox:closed"  # list: what the notifier's review_closed was told


def decide(execution_id: str, approved: bool) -> None:
    """Approve or deny ``execution_id``'s review as Alice, from inside a drain (as a click's
    task does): the commit that decides acknowledges this task."""
    from engine.notify import Actor
    from engine.state.inbox import running_task

    result = runtime().engine.resume(execution_id, {"approved": approved},
                                     Actor(id="U0ALICE", name="alice", source="slack"),
                                     step="review", acknowledge=running_task())
    record("decided", result.carried)


def decide_and_continue(execution_id: str, approved: bool) -> None:
    """As :func:`decide`, and continue the run here, its next write carrying the decision
    (as a click's task does in a worker: engine.run.runner.Runner.continue_decided)."""
    from engine.notify import Actor
    from engine.state.inbox import running_task

    rt = runtime()
    result = rt.engine.resume(execution_id, {"approved": approved},
                              Actor(id="U0ALICE", name="alice", source="slack"),
                              step="review", acknowledge=running_task(),
                              then=rt.runner.continue_decided)
    record("decided", result.continued is not None)


def closing(execution_id: str, outcome: str) -> None:
    """The notifier's closing task: record it, with what it was handed."""
    record_handed(f"closing {execution_id} {outcome}")


class CarryingNotifier:
    """A notifier whose work on a closed review is an inbox task
    (:class:`engine.notify.CarriesClosing`); review_closed records what it was told."""

    def review_waiting(self, review: Any) -> None:
        pass

    def review_changed(self, change: Any) -> None:
        pass

    def review_closed(self, closed: Any) -> None:
        _redis().rpush(CLOSED, f"{closed.execution_id} {closed.outcome}")

    def closing_task(self, closed: Any) -> Any:
        from engine.state.inbox import Task

        return Task(f"{__name__}.closing", (closed.execution_id, closed.outcome))


def record_read(name: str) -> None:
    """Record what the inbox read for this task as it took it (Running.read), as text."""
    from engine.state.inbox import running_task

    running = running_task()
    assert running is not None

    def text(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, list):
            return [text(v) for v in value]
        return value

    record(name, None if running.read is None else text(running.read))

