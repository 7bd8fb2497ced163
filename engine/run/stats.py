"""Review statistics per workflow step, and which steps are candidates to automate.

Pure: the closed-review records :meth:`engine.run.reviews.Reviews.stats` reads
(``{"o": outcome, "ms": time to decision, "lv": level reached, "b": SLA breached}``)
and the latest outcomes of each step go in, :class:`StepStats` come out.

- *reviews*: reviews closed in the window, whatever their outcome;
- *approval rate*: approvals among approvals and denials (answers without a yes/no
  decision, time-outs and cancellations are not counted either way);
- *time to decision*: from the review's start to its decision, for decided reviews
  (approved, denied, answered): the median and the 90th percentile (nearest rank);
- *SLA breaches*: reviews still open when their first SLA passed;
- *escalations*: reviews that went past their first level;
- *time-outs*: reviews closed because nobody answered in time (``timed_out``).

A step is a *candidate to automate* when its latest :data:`GRADUATION_WINDOW` decisions
(time-outs and cancellations skipped) were all approvals: reviewers rubber-stamp it,
so an auto-allow rule would save their attention for the checkpoints that matter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GRADUATION_WINDOW = 50
# Outcomes that are somebody's decision; timed_out and cancelled are not.
DECISIONS = ("approved", "denied", "submitted")
# How many latest outcomes to read to find GRADUATION_WINDOW decisions among them.
RECENT_OUTCOMES = 4 * GRADUATION_WINDOW


@dataclass(frozen=True)
class StepStats:
    """One workflow step's closed reviews over a window."""

    workflow: str
    step: str
    reviews: int
    approved: int
    denied: int
    answered: int  # decided without a yes/no (outcome "submitted")
    timed_out: int
    cancelled: int
    sla_breaches: int
    escalated: int
    median_ms: int | None  # time to decision; None when nothing was decided
    p90_ms: int | None
    automate_candidate: bool

    @property
    def approval_rate(self) -> float | None:
        """Approvals among approvals and denials, 0.0 to 1.0; None without either."""
        decided = self.approved + self.denied
        return self.approved / decided if decided else None


def step_stats(workflow: str, step: str, records: Iterable[Mapping[str, Any]],
               recent_outcomes: Sequence[str] = ()) -> StepStats:
    """Statistics of ``records`` (closed reviews of one step); ``recent_outcomes`` are the
    step's latest outcomes, newest first, whatever the window (for the graduation flag)."""
    rows = list(records)
    outcomes = [str(r.get("o")) for r in rows]
    durations = [int(r.get("ms") or 0) for r in rows if r.get("o") in DECISIONS]
    return StepStats(
        workflow=workflow, step=step, reviews=len(rows),
        approved=outcomes.count("approved"), denied=outcomes.count("denied"),
        answered=outcomes.count("submitted"), timed_out=outcomes.count("timed_out"),
        cancelled=outcomes.count("cancelled"),
        sla_breaches=sum(1 for r in rows if r.get("b")),
        escalated=sum(1 for r in rows if int(r.get("lv") or 0) > 0),
        median_ms=median(durations), p90_ms=percentile(durations, 0.9),
        automate_candidate=automate_candidate(recent_outcomes),
    )


def review_stats(records: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
                 recent_outcomes: Mapping[tuple[str, str], Sequence[str]] | None = None
                 ) -> list[StepStats]:
    """Every step's statistics, the busiest first (then by workflow and step name)."""
    recent = recent_outcomes or {}
    found = [step_stats(workflow, step, rows, recent.get((workflow, step), ()))
             for (workflow, step), rows in records.items()]
    return sorted(found, key=lambda s: (-s.reviews, s.workflow, s.step))


def automate_candidate(outcomes_newest_first: Sequence[str],
                       window: int = GRADUATION_WINDOW) -> bool:
    """True when the latest ``window`` decisions were all approvals (and there were that many)."""
    decisions = [o for o in outcomes_newest_first if o in DECISIONS][:window]
    return len(decisions) == window and all(o == "approved" for o in decisions)


def median(values: Sequence[int]) -> int | None:
    """The middle value (the mean of the two middle ones for an even count), rounded down."""
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) // 2


def percentile(values: Sequence[int], p: float) -> int | None:
    """Nearest-rank percentile: the smallest value with at least ``p`` of them at or below it."""
    if not values:
        return None
    if not 0 < p <= 1:
        raise ValueError(f"percentile must be in (0, 1], not {p}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]
