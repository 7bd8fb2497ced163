"""Scheduled triggers as pure rules: is a cron expression or an rrule usable, which triggers
of a workflow are scheduled, and when one fires next. Starting the runs is
:mod:`engine.worker.scheduled_runs`.

``every`` is aligned to the epoch and ``cron`` is read in the trigger's zone (its
``with.timezone``, else ``settings.timezone``, else UTC). An ``rrule`` (Elastic's form:
``freq``, ``interval``, ``tzid``, ``dtstart``, ``byhour``, ``byminute``, ``byweekday``,
``bymonthday``) is evaluated by python-dateutil's ``rrule`` in its ``tzid`` (else
``settings.timezone``, else UTC), counting from its ``dtstart`` (default midnight,
1 January 2000, in that zone), so every worker computes the same times.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from dateutil import rrule as dateutil_rrule

from engine.definition.durations import parse_duration
from engine.definition.model import Trigger, Workflow

RRULE_EPOCH = datetime(2000, 1, 1)  # an rrule's dtstart when it gives none (in its tzid)
_FREQUENCIES = {"DAILY": dateutil_rrule.DAILY, "WEEKLY": dateutil_rrule.WEEKLY,
                "MONTHLY": dateutil_rrule.MONTHLY}
_WEEKDAYS = {"MO": dateutil_rrule.MO, "TU": dateutil_rrule.TU, "WE": dateutil_rrule.WE,
             "TH": dateutil_rrule.TH, "FR": dateutil_rrule.FR, "SA": dateutil_rrule.SA,
             "SU": dateutil_rrule.SU}


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a usable cron expression, or None."""
    if not croniter.is_valid(expression):
        return (f"{expression!r} is not a cron expression: write 5 fields, "
                "minute hour day-of-month month day-of-week, e.g. \"0 9 * * 1-5\"")
    return None


def timezone_problem(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone (``Europe/Paris``, ``UTC``), or None."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not an IANA time zone name (e.g. \"UTC\", \"Europe/Paris\")"
    return None


def rrule_problem(options: Mapping[str, Any]) -> tuple[str, str] | None:
    """(the key, why) when an rrule that passed the workflow schema cannot be evaluated."""
    tzid = options.get("tzid", "UTC")
    problem = timezone_problem(str(tzid))
    if problem:
        return "tzid", problem
    dtstart = options.get("dtstart")
    if dtstart is not None:
        try:
            datetime.fromisoformat(str(dtstart))
        except ValueError:
            return "dtstart", (f"{dtstart!r} is not an ISO 8601 date-time "
                               "(e.g. \"2026-01-05T09:00:00\")")
    if not isinstance(options.get("freq"), str) or not isinstance(options.get("interval"), int):
        return None  # the workflow schema says what is missing
    try:
        _rrule(options)
    except (ValueError, KeyError, TypeError) as exc:
        return "rrule", f"cannot be evaluated: {exc}"
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
    if "rrule" in options:
        rule = {"tzid": trigger.timezone, **options["rrule"]}
        local = after.astimezone(ZoneInfo(str(rule["tzid"])))
        following = _rrule(rule, near=local).after(local, inc=False)
        if following is None:  # a rule with an end; Elastic's have none
            raise ValueError("the rrule has no time after " + after.isoformat())
        return following.astimezone(UTC)
    zone = ZoneInfo(str(options.get("timezone") or trigger.timezone))
    local = croniter(str(options["cron"]), after.astimezone(zone)).get_next(datetime)
    return local.astimezone(UTC)


def _rrule(options: Mapping[str, Any], near: datetime | None = None) -> dateutil_rrule.rrule:
    zone = ZoneInfo(str(options.get("tzid", "UTC")))
    given = options.get("dtstart")
    start = datetime.fromisoformat(str(given)) if given is not None else RRULE_EPOCH
    start = start.replace(tzinfo=zone) if start.tzinfo is None else start.astimezone(zone)
    freq, interval = str(options["freq"]), int(options["interval"])
    if near is not None:
        start = _whole_periods_on(start, freq, interval, near)
    weekdays = options.get("byweekday")
    return dateutil_rrule.rrule(
        _FREQUENCIES[freq], dtstart=start, interval=interval,
        byhour=options.get("byhour"), byminute=options.get("byminute"), bysecond=0,
        byweekday=[_WEEKDAYS[day] for day in weekdays] if weekdays else None,
        bymonthday=options.get("bymonthday"), cache=False)


def _whole_periods_on(start: datetime, freq: str, interval: int, near: datetime) -> datetime:
    """``start`` moved forward by whole multiples of the rule's period, to no later than
    ``near``'s day: the rule yields the same times from then on, and dateutil does not
    walk every day since ``dtstart`` to find the next one."""
    if freq == "MONTHLY":
        months = (near.year - start.year) * 12 + near.month - start.month
        shift = months // interval * interval
        if shift <= 0 or start.day > 28:  # a 31st has no twin in every month
            return start
        month = start.month - 1 + shift
        return start.replace(year=start.year + month // 12, month=month % 12 + 1)
    days = interval * (7 if freq == "WEEKLY" else 1)
    shift = (near.date() - start.date()).days // days * days
    if shift <= 0:
        return start
    moved = start.date() + timedelta(days=shift)
    return start.replace(year=moved.year, month=moved.month, day=moved.day)
