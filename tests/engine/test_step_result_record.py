"""A step's result is stored with its end as milliseconds after its start, and results
stored before (with both timestamps) still read."""

from __future__ import annotations

import json

from engine.state.execution import StepResult, StepStatus


def test_the_end_is_stored_as_milliseconds_after_the_start_and_reads_back_the_same():
    result = StepResult(StepStatus.COMPLETED, output={"host": "web-1"},
                        started_at="2026-12-04T22:24:16.435Z",
                        finished_at="2026-12-04T22:24:17.001Z", attempts=1)
    stored = json.loads(result.to_json())
    assert "t1" not in stored and stored["d1"] == 566
    assert StepResult.from_json(result.to_json()) == result


def test_timestamps_it_cannot_give_back_exactly_are_stored_as_they_are():
    for started, finished in (("2026-12-04T22:24:16.435+00:00", "2026-12-04T22:24:17Z"),
                              ("2026-12-04T22:24:18.435Z", "2026-12-04T22:24:17.000Z"),
                              (None, "2026-12-04T22:24:17.000Z")):
        result = StepResult(StepStatus.FAILED, error="boom", started_at=started,
                            finished_at=finished)
        stored = json.loads(result.to_json())
        assert stored["t1"] == finished and "d1" not in stored
        assert StepResult.from_json(result.to_json()) == result


def test_a_result_stored_before_still_reads():
    older = ('{"st":"COMPLETED","out":{"host":"web-1"},"t0":"2026-12-04T22:24:16.435Z",'
             '"t1":"2026-12-04T22:24:16.435Z","n":1}')
    result = StepResult.from_json(older)
    assert result.finished_at == "2026-12-04T22:24:16.435Z" and result.attempts == 1
