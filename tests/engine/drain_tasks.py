"""Tasks the drain-job tests hand in (by import path): each records its name in Redis."""

from __future__ import annotations

from engine.definition.loader import parse_workflow
from engine.worker.runtime import runtime

RAN = "test:drains:ran"  # list: names, in the order the tasks (and jobs) ran
OTHER = "elsewhere"  # a second queue, served after the engine's (as the bot's slack queue)
# A five-step automatic run, as the throughput benchmark has it.
FIVE = parse_workflow("""
name: five
steps:
  - {name: a, type: console, with: {message: "a {{ event.n }}"}}
  - {name: b, type: data.set, with: {n: "${{ event.n }}"}}
  - {name: c, type: console, if: "variables.n >= 2", with: {message: "big"}}
  - {name: d, type: console, if: "variables.n < 2", with: {message: "small"}}
  - {name: e, type: console, with: {message: "done {{ variables.n }}"}}
""")


def record(name: str) -> None:
    runtime().store.redis.rpush(RAN, name)


def hand_on(name: str) -> None:
    """Record ``name``, then hand a task to the other queue's inbox (as a click hands the
    rewrite of its message to the slack queue)."""
    record(name)
    runtime().engine.scheduler.hand_in_to(OTHER, f"{__name__}.record", f"{name}-elsewhere")


def enqueue_then_hand_on(name: str) -> None:
    """Put an ordinary RQ job on the engine's queue, then do as :func:`hand_on`."""
    runtime().engine.scheduler.enqueue(f"{__name__}.record", f"{name}-job")
    hand_on(name)
