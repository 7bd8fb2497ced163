"""Elastic 9.5's keys at run time: inputs under the manual trigger checked when a run
starts, rrule schedules, retry backoff options, loop limits, step size limits and
`continue` written as a condition. On a real Redis, with real workers where time matters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog, parse_workflow
from engine.definition.model import RetryPolicy, Trigger
from engine.definition.triggers import next_due
from engine.errors import WorkflowInputsInvalid
from engine.state.execution import ExecutionStatus, StepStatus, parse_iso
from engine.worker.scheduled_runs import ScheduleKeeper
from tests.support.http_target import PostTarget
from tests.support.services import wait_until

SCHEMA_INPUTS = """
name: contain
triggers:
  - type: manual
    inputs:
      type: object
      properties:
        host: {type: string, pattern: "^[a-z0-9.-]+$"}
        severity: {type: string, enum: [low, high], default: low}
        ticket: {type: integer, minimum: 1}
      required: [host]
steps:
  - name: say
    type: console
    with: {message: "{{ inputs.host }} {{ inputs.severity }}"}
"""

LEGACY_UNDER_TRIGGER = """
name: legacy
triggers:
  - type: manual
    inputs:
      - {name: user, type: string, required: true}
      - {name: systems, type: array, maxItems: 2}
steps:
  - name: say
    type: console
    with: {message: "{{ inputs.user }}"}
"""


# -- inputs under the manual trigger -----------------------------------------------------------


def test_a_json_schema_under_the_manual_trigger_is_checked_when_a_run_starts(runtime, work):
    workflow = parse_workflow(SCHEMA_INPUTS)
    execution_id = runtime.engine.run(workflow, {"inputs": {"host": "web-1"}})
    work()
    assert runtime.engine.get(execution_id).results["say"].output == "web-1 low"  # the default

    with pytest.raises(WorkflowInputsInvalid) as caught:
        runtime.engine.run(workflow, {"inputs": {"host": "Web 1!", "ticket": 0, "extra": 1}})
    problems = {p["input"]: p["message"] for p in caught.value.problems}
    assert problems["extra"].startswith("is not an input of workflow 'contain'")
    assert "does not match" in problems["host"]
    assert "minimum" in problems["ticket"] or "less than" in problems["ticket"]
    with pytest.raises(WorkflowInputsInvalid) as caught:
        runtime.engine.run(workflow, {"inputs": {"severity": "high"}})
    assert caught.value.problems == [{"input": "host", "message": "is required"}]
    assert runtime.engine.list_executions()[1] == 1  # only the valid run started


def test_the_legacy_list_under_the_manual_trigger_is_checked_as_the_top_level_one(runtime):
    workflow = parse_workflow(LEGACY_UNDER_TRIGGER)
    with pytest.raises(WorkflowInputsInvalid) as caught:
        runtime.engine.run(workflow, {"inputs": {"systems": ["a", "b", "c"]}})
    assert caught.value.problems == [
        {"input": "user", "message": "is required"},
        {"input": "systems", "message": "has 3 items; give at most 2"}]
    runtime.engine.run(workflow, {"inputs": {"user": "alice", "systems": ["a"]}})


def test_the_api_answers_422_for_inputs_the_trigger_schema_refuses(runtime, served,
                                                                   workflow_file, settings):
    workflow_file(SCHEMA_INPUTS, "contain.yaml")
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token="test-token")
    with served(app).client(headers={"Authorization": "Bearer test-token"}) as client:
        answer = client.post("/api/workflows/contain/run",
                             json={"inputs": {"host": 42, "severity": "urgent"}})
        assert answer.status_code == 422
        body = answer.json()
        assert body["error"] == "inputs_invalid" and body["workflow"] == "contain"
        assert sorted(p["input"] for p in body["problems"]) == ["host", "severity"]
        assert client.get("/api/workflowExecutions").json()["total"] == 0
        assert client.post("/api/workflows/contain/run",
                           json={"inputs": {"host": "db-2"}}).status_code == 201


def test_inputs_are_declared_in_one_place_only():
    from engine.errors import WorkflowInvalid

    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(LEGACY_UNDER_TRIGGER.replace(
            "steps:", "inputs:\n  - {name: other, type: string}\nsteps:", 1))
    assert "inputs are already declared on line 5" in str(caught.value)


# -- rrule schedules ---------------------------------------------------------------------------


def rrule(**rule: Any) -> Trigger:
    return Trigger("scheduled", {"rrule": rule})


def fire_times(trigger: Trigger, after: datetime, count: int) -> list[datetime]:
    times = []
    for _ in range(count):
        after = next_due(trigger, after)
        times.append(after)
    return times


def test_an_rrule_computes_the_next_fire_times_in_its_zone():
    friday_evening = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)  # 18:00 in Paris
    weekly = rrule(freq="WEEKLY", interval=1, tzid="Europe/Paris", byhour=[9],
                   byminute=[0, 30], byweekday=["MO", "FR"])
    assert fire_times(weekly, friday_evening, 4) == [
        datetime(2026, 12, 7, 8, 0, tzinfo=UTC), datetime(2026, 12, 7, 8, 30, tzinfo=UTC),
        datetime(2026, 12, 11, 8, 0, tzinfo=UTC), datetime(2026, 12, 11, 8, 30, tzinfo=UTC)]
    daily = rrule(freq="DAILY", interval=1, byhour=[6, 18])  # tzid: UTC by default
    assert fire_times(daily, friday_evening, 3) == [
        datetime(2026, 12, 4, 18, 0, tzinfo=UTC), datetime(2026, 12, 5, 6, 0, tzinfo=UTC),
        datetime(2026, 12, 5, 18, 0, tzinfo=UTC)]


def test_an_rrule_keeps_its_interval_counted_from_dtstart_and_follows_summer_time():
    fortnightly = rrule(freq="WEEKLY", interval=2, tzid="America/New_York",
                        dtstart="2026-01-05T09:00:00", byweekday=["MO"], byhour=[9],
                        byminute=[0])
    # 2026-03-02 is 8 weeks after the start, 03-16 ten; New York moves to summer time on 03-08.
    assert fire_times(fortnightly, datetime(2026, 2, 24, tzinfo=UTC), 2) == [
        datetime(2026, 3, 2, 14, 0, tzinfo=UTC), datetime(2026, 3, 16, 13, 0, tzinfo=UTC)]
    monthly = rrule(freq="MONTHLY", interval=1, bymonthday=[1, 15], byhour=[6])
    assert fire_times(monthly, datetime(2026, 12, 20, tzinfo=UTC), 2) == [
        datetime(2027, 1, 1, 6, 0, tzinfo=UTC), datetime(2027, 1, 15, 6, 0, tzinfo=UTC)]


def test_cron_is_read_in_settings_timezone():
    workflow = parse_workflow("""
name: tokyo
settings: {timezone: Asia/Tokyo}
triggers:
  - type: scheduled
    with: {cron: "0 9 * * *"}
steps:
  - {name: tick, type: console, with: {message: tick}}
""")
    assert next_due(workflow.triggers[0], datetime(2026, 12, 4, 1, 0, tzinfo=UTC)) == \
        datetime(2026, 12, 5, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo


def test_the_keeper_starts_an_rrule_schedule_once_at_its_time(runtime, tmp_path):
    (tmp_path / "daily.yaml").write_text("""
name: daily
triggers:
  - type: scheduled
    with:
      rrule: {freq: DAILY, interval: 1, tzid: Europe/Paris, byhour: [9], byminute: [0]}
steps:
  - {name: tick, type: console, with: {message: tick}}
""")
    now = [datetime(2026, 12, 4, 7, 50, tzinfo=UTC)]
    keepers = [ScheduleKeeper(runtime.store, runtime.engine.scheduler,
                              WorkflowCatalog(str(tmp_path)), clock=lambda: now[0])
               for _ in range(2)]
    assert [k.tick(timedelta(seconds=2)) for k in keepers] == [[], []]  # first sight
    now[0] = datetime(2026, 12, 4, 7, 59, 59, tzinfo=UTC)
    fired = [due for k in keepers for _, due in k.tick(timedelta(seconds=2))]
    assert fired == [datetime(2026, 12, 4, 8, 0, tzinfo=UTC)]  # 09:00 in Paris, once


# -- retry backoff -----------------------------------------------------------------------------


def test_retry_delays_grow_by_the_multiplier_up_to_max_delay_with_jitter_on_top():
    policy = RetryPolicy(5, timedelta(seconds=1), "exponential", multiplier=3,
                         max_delay=timedelta(seconds=5))
    assert [policy.delay_before(n).total_seconds() for n in (2, 3, 4, 5)] == [1, 3, 5, 5]
    jittery = RetryPolicy(3, timedelta(seconds=4), "fixed", jitter=True)
    assert jittery.delay_before(2, chance=0.0) == timedelta(seconds=4)
    assert jittery.delay_before(2, chance=0.5) == timedelta(seconds=4.5)


class Flaky:
    """A local HTTP endpoint that answers 503 to its first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        self.hits = 0
        self.failures = failures
        self.service = PostTarget(self._answer)
        self.url = self.service.url

    def _answer(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.hits += 1
        return (503 if self.hits <= self.failures else 200), b""

    def close(self) -> None:
        self.service.close()


@pytest.fixture
def flaky():
    made: list[Flaky] = []

    def create(failures: int) -> Flaky:
        made.append(Flaky(failures))
        return made[-1]

    yield create
    for server in made:
        server.close()


def test_a_worker_honours_the_multiplier_and_max_delay_of_a_retry(runtime, worker_process,
                                                                  flaky):
    endpoint = flaky(3)
    workflow = parse_workflow(f"""
name: backoff
steps:
  - name: call
    type: http
    with: {{method: POST, url: "{endpoint.url}/isolate"}}
    on-failure:
      retry: {{max-attempts: 4, delay: 1s, strategy: exponential, multiplier: 3, max-delay: 2s}}
""")
    worker_process()
    execution_id = runtime.engine.run(workflow, {})
    wait_until(lambda: runtime.engine.get(execution_id).status.is_terminal, timeout=45,
               message="the run to finish")
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED and state.results["call"].attempts == 4
    retries = [e.event for e in runtime.engine.audit_entries(execution_id)
               if e.event["type"] == "step.retry_scheduled"]
    delays = [round(((parse_iso(r["retryAt"]) or datetime.min) - (parse_iso(r["at"])
                                                                   or datetime.min))
                    .total_seconds(), 1) for r in retries]
    assert delays == [1.0, 2.0, 2.0]  # 1s, then 3s and 9s capped at 2s
    started = [parse_iso(e.event["at"]) for e in runtime.engine.audit_entries(execution_id)
               if e.event["type"] == "step.started"]
    gaps = [(later - earlier).total_seconds()  # type: ignore[operator]
            for earlier, later in zip(started, started[1:], strict=False)]
    assert all(gap >= wanted - 0.05 for gap, wanted in zip(gaps, (1, 2, 2), strict=True)), gaps


def test_a_retry_condition_decides_which_failures_are_retried(runtime, work, flaky):
    endpoint = flaky(99)
    workflow = parse_workflow(f"""
name: conditional
steps:
  - name: call
    type: http
    with: {{method: POST, url: "{endpoint.url}/x"}}
    on-failure:
      retry: {{max-attempts: 3, delay: 0s, condition: "error.message : *timed*out*"}}
      continue: "error.message : *503*"
  - name: after
    type: console
    with: {{message: went on}}
""")
    execution_id = runtime.engine.run(workflow, {})
    work()
    state = runtime.engine.get(execution_id)
    assert endpoint.hits == 1  # a 503 is not a time-out: not retried
    assert state.results["call"].status is StepStatus.FAILED
    assert state.status is ExecutionStatus.COMPLETED  # `continue` held for the 503
    assert state.results["after"].output == "went on"


# -- loops and sizes ---------------------------------------------------------------------------


LOOP = """
name: loop
steps:
  - name: each
    type: foreach
    foreach: '["a", "b", "c"]'
    max-iterations: {limit}
    steps:
      - name: say
        type: console
        with: {{message: "{{{{ foreach.item }}}}"}}
"""


def test_max_iterations_caps_a_foreach(runtime, work):
    # As in Kibana: a bare number ends the loop at the cap (on-limit: continue); with
    # on-limit: fail the first `limit` items run, then the step fails.
    bare = runtime.engine.run(parse_workflow(LOOP.format(limit=2)))
    fail = runtime.engine.run(parse_workflow(LOOP.format(limit="{limit: 2, on-limit: fail}")))
    enough = runtime.engine.run(parse_workflow(LOOP.format(limit=3)))
    work()
    ran = runtime.engine.get(bare)
    assert ran.status is ExecutionStatus.COMPLETED
    assert [ran.results[f"each[{i}].say"].output for i in range(2)] == ["a", "b"]
    assert "each[2].say" not in ran.results
    failed = runtime.engine.get(fail)
    assert failed.status is ExecutionStatus.FAILED
    assert failed.error == ("foreach step 'each' exceeded its max-iterations limit of 2: "
                            "processed 2 of 3 items")
    assert [failed.results[f"each[{i}].say"].output for i in range(2)] == ["a", "b"]
    assert runtime.engine.get(enough).status is ExecutionStatus.COMPLETED


def test_an_output_larger_than_max_step_size_fails_the_step(runtime, work):
    workflow = parse_workflow("""
name: sizes
settings: {max-step-size: 1kb}
steps:
  - name: small
    type: console
    with: {message: fits}
  - name: big
    type: console
    max-step-size: 20b
    with: {message: "this message is longer than twenty bytes"}
""")
    execution_id = runtime.engine.run(workflow, {})
    work()
    state = runtime.engine.get(execution_id)
    assert state.results["small"].status is StepStatus.COMPLETED
    assert state.status is ExecutionStatus.FAILED
    assert "more than its max-step-size of 20 bytes" in (state.error or "")


def test_an_rrule_without_tzid_is_read_in_settings_timezone():
    workflow = parse_workflow("""
name: paris
settings: {timezone: Europe/Paris}
triggers:
  - type: scheduled
    with: {rrule: {freq: DAILY, interval: 1, byhour: [9], byminute: [0]}}
steps:
  - {name: tick, type: console, with: {message: tick}}
""")
    assert next_due(workflow.triggers[0], datetime(2026, 12, 4, 1, 0, tzinfo=UTC)) == \
        datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def test_step_names_with_spaces_run_and_are_read_by_name(runtime, work):
    from pathlib import Path

    workflow = parse_workflow((Path(__file__).parent / "elastic_corpus" / "step-names.yaml")
                              .read_text(encoding="utf-8"))
    execution_id = runtime.engine.run(workflow, {})
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["3rd step"].output == "looking"


ITERATIONS = """
name: iterations
steps:
  - name: each
    type: foreach
    foreach: [1, 2, 3]
    iteration-on-failure: {policy}
    steps:
      - name: call
        type: http
        if: "foreach.item : 2"
        with: {{method: POST, url: "{url}/x"}}
      - name: say
        type: console
        with: {{message: "item {{{{ foreach.item }}}}"}}
  - name: after
    type: console
    with: {{message: done}}
"""


def test_iteration_on_failure_lets_the_loop_go_on_or_runs_its_fallback(runtime, work, flaky):
    endpoint = flaky(99)
    go_on = runtime.engine.run(parse_workflow(ITERATIONS.format(
        policy="{continue: true}", url=endpoint.url)))
    fallback = runtime.engine.run(parse_workflow(ITERATIONS.format(
        policy="{fallback: [{name: note, type: console, with: {message: 'item failed'}}]}",
        url=endpoint.url).replace("name: iterations", "name: with-fallback")))
    work()
    ran = runtime.engine.get(go_on)
    assert ran.status is ExecutionStatus.COMPLETED
    assert ran.results["each[1].call"].status is StepStatus.FAILED
    assert "each[1].say" not in ran.results  # the failed iteration stopped where it failed
    assert ran.results["each[2].say"].output == "item 3"
    assert ran.results["after"].output == "done"
    caught = runtime.engine.get(fallback)
    assert caught.status is ExecutionStatus.COMPLETED
    assert caught.results["each[1].note"].output == "item failed"
    assert "each[0].note" not in caught.results


def test_workflow_fail_in_an_iteration_is_not_caught(runtime, work):
    workflow = parse_workflow("""
name: stop
steps:
  - name: each
    type: foreach
    foreach: [1, 2]
    iteration-on-failure: {continue: true}
    steps:
      - name: stop
        type: workflow.fail
        with: {message: stop here}
""")
    execution_id = runtime.engine.run(workflow, {})
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.FAILED and "each[1].stop" not in state.results


def test_signoff_validate_says_what_is_wrong_with_the_new_keys():
    from engine.errors import WorkflowInvalid

    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow("""\
name: bad
settings:
  timezone: Mars/Olympus
  max-step-size: 10 parsecs
triggers:
  - type: alert
    inputs: [{name: x, type: string}]
  - type: manual
    inputs:
      type: object
      properties: {host: {type: string}}
      required: [hots]
  - type: scheduled
    with:
      rrule: {freq: DAILY, interval: 1, tzid: Nowhere/Land}
steps:
  - name: each
    type: foreach
    foreach: [1]
    max-iterations: {limit: 2, on-limit: maybe}
    steps:
      - name: x
        type: console
        with: {message: hi}
        on-failure:
          retry: {max-attempts: 2, multiplier: 0.5}
""", "bad.yml")
    found = {(p.line, p.column): p.message for p in caught.value.problems}
    assert found == {
        (3, 13): "settings.timezone: 'Mars/Olympus' is not an IANA time zone name "
                 "(e.g. \"UTC\", \"Europe/Paris\")",
        (4, 18): "settings.max-step-size: '10 parsecs' is not a byte size; write a number and "
                 "a unit: b, kb, mb or gb (e.g. 512kb, 10mb)",
        (7, 5): "key 'inputs' in triggers[0] only applies to manual triggers, not 'alert'",
        (12, 18): "triggers[1].inputs.required names 'hots', which is not one of its "
                  "properties (did you mean 'host'?)",
        (15, 47): "triggers[2].with.rrule.tzid: 'Nowhere/Land' is not an IANA time zone name "
                  "(e.g. \"UTC\", \"Europe/Paris\")",
        (20, 42): "steps[0].max-iterations.on-limit must be one of 'continue', 'fail', "
                  "not 'maybe' (step 'each')",
        (26, 48): "steps[0].steps[0].on-failure.retry.multiplier must be at least 1, not 0.5 "
                  "(step 'x')",
    }
