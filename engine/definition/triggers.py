"""Scheduled triggers as pure rules: is a cron expression usable, which triggers of a
workflow are scheduled, and when one fires next (UTC). Starting the runs is
:mod:`engine.worker.scheduled_runs`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from croniter import croniter

from engine.definition.durations import parse_duration
from engine.definition.model import Trigger, Workflow


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a usable cron expression, or None."""
    if not croniter.is_valid(expression):
        return (f"{expression!r} is not a cron expression: write 5 fields, "
                "minute hour day-of-month month day-of-week, e.g. \"0 9 * * 1-5\"")
    return None


def scheduled_triggers(workflow: Workflow) -> Iterator[tuple[int, Trigger]]:
    for index, trigger in enumerate(workflow.triggers):
        if trigger.type == "scheduled":
            yield index, trigger


def next_due(trigger: Trigger, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``trigger`` fires (UTC)."""
    options = trigger.with_
    if "every" in options:
        period = parse_duration(options["every"])
        # Align `every` to the epoch, so all workers and restarts agree on the times.
        step = period.total_seconds()
        epoch = after.timestamp()
        return datetime.fromtimestamp((epoch // step + 1) * step, UTC)
    return croniter(str(options["cron"]), after.astimezone(UTC)).get_next(datetime)
