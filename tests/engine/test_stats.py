"""Review statistics and the graduation flag, as pure functions."""

from __future__ import annotations

import pytest

from engine.run.stats import (
    GRADUATION_WINDOW,
    automate_candidate,
    median,
    percentile,
    review_stats,
    step_stats,
)


def record(outcome: str, ms: int = 1000, *, level: int = 0, breached: bool = False) -> dict:
    return {"id": f"x-{outcome}-{ms}", "o": outcome, "ms": ms, "lv": level, "b": breached}


def test_median_of_odd_and_even_counts():
    assert median([]) is None
    assert median([7]) == 7
    assert median([5, 1, 3]) == 3
    assert median([4, 1, 3, 2]) == 2  # (2 + 3) // 2
    assert median([10, 20]) == 15


def test_p90_is_the_nearest_rank():
    assert percentile([], 0.9) is None
    assert percentile(list(range(1, 11)), 0.9) == 9
    assert percentile(list(range(1, 101)), 0.9) == 90
    assert percentile([5], 0.9) == 5
    assert percentile([1, 2, 3], 1.0) == 3
    with pytest.raises(ValueError):
        percentile([1], 0)


def test_a_step_counts_outcomes_rates_durations_breaches_and_escalations():
    rows = [record("approved", 1_000), record("approved", 3_000, breached=True),
            record("denied", 2_000, level=1), record("submitted", 10_000),
            record("timed_out", 900_000, level=2, breached=True), record("cancelled", 50)]

    stats = step_stats("isolate-host", "review", rows)

    assert (stats.reviews, stats.approved, stats.denied, stats.answered) == (6, 2, 1, 1)
    assert (stats.timed_out, stats.cancelled) == (1, 1)
    assert stats.approval_rate == pytest.approx(2 / 3)  # answers and time-outs don't count
    # Time to decision covers decisions only: 1000, 2000, 3000, 10000.
    assert stats.median_ms == 2_500 and stats.p90_ms == 10_000
    assert stats.sla_breaches == 2 and stats.escalated == 2
    assert stats.automate_candidate is False


def test_nothing_decided_has_no_rate_and_no_durations():
    stats = step_stats("wf", "review", [record("timed_out"), record("cancelled")])
    assert stats.approval_rate is None
    assert stats.median_ms is None and stats.p90_ms is None


def test_fifty_approvals_in_a_row_make_a_candidate_to_automate():
    assert automate_candidate(["approved"] * GRADUATION_WINDOW)
    assert not automate_candidate(["approved"] * (GRADUATION_WINDOW - 1))  # too few yet
    # One denial among the latest fifty decisions spoils it; an older one does not.
    assert not automate_candidate(["approved"] * 10 + ["denied"] + ["approved"] * 60)
    assert automate_candidate(["approved"] * GRADUATION_WINDOW + ["denied"])
    # Time-outs and cancellations are nobody's decision: skipped, not counted.
    assert automate_candidate(["timed_out", "cancelled"] + ["approved"] * GRADUATION_WINDOW)
    # An answer without a yes/no is a decision that is not an approval.
    assert not automate_candidate(["submitted"] + ["approved"] * GRADUATION_WINDOW)


def test_steps_come_busiest_first_with_their_own_graduation_flag():
    records = {("deploy", "review"): [record("approved")] * 3,
               ("isolate-host", "review"): [record("approved")] * 5,
               ("isolate-host", "confirm"): [record("denied")] * 3}
    recent = {("isolate-host", "review"): ["approved"] * GRADUATION_WINDOW}

    found = review_stats(records, recent)

    assert [(s.workflow, s.step) for s in found] == [
        ("isolate-host", "review"), ("deploy", "review"), ("isolate-host", "confirm")]
    assert [s.automate_candidate for s in found] == [True, False, False]
    assert found[0].approval_rate == 1.0 and found[2].approval_rate == 0.0
