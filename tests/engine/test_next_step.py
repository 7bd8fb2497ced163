"""What the runner does next with a step, decided from the definition, the recorded
results and the clock: no Redis, no worker, just the rules."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from textwrap import dedent

import pytest

from engine.definition.loader import parse_workflow
from engine.definition.model import Step, Workflow
from engine.definition.step_types import StepType, get_step_type
from engine.run.next_step import (
    AskReviewer,
    AwaitReviewer,
    FailRun,
    FinishWait,
    GoOn,
    HandleFailure,
    Retry,
    RunAction,
    RunFallback,
    RunFlow,
    Skip,
    StartWait,
    SuspendUntil,
    TimersFired,
    UseRecorded,
    after_failure,
    next_step,
    retry_after,
    start_review,
    timers_due,
)
from engine.state.execution import StepResult, StepStatus, iso
from tests.support.services import ROOT

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)

WORKFLOW = parse_workflow(dedent("""\
    name: every-kind
    steps:
      - name: call
        type: http
        if: "event.go : true"
        with: {url: "https://example.invalid"}
        on-failure:
          retry: {max-attempts: 3, delay: 10s, strategy: exponential}
      - name: say
        type: console
        if: "${{ event.n | where_exp: 'i', 'i >' }}"
        with: {message: hi}
        on-failure: {continue: true}
      - name: pause
        type: wait
        with: {duration: 5m}
      - name: ask
        type: waitForApproval
        timeout: 1h
        with: {message: "Ship it?", approvers: [U0ALICE], sla: 15m, remind: 5m}
      - name: check
        type: if
        condition: "event.go : true"
        steps:
          - name: quick
            type: console
            with: {message: quick}
            on-failure:
              retry: {max-attempts: 2, delay: 0s}
              fallback:
                - {name: tidy, type: console, with: {message: tidy}}
    """))


def step(name: str, workflow: Workflow = WORKFLOW) -> Step:
    return workflow.step(name)


def spec_of(name: str) -> StepType:
    found = get_step_type(step(name).type)
    assert found is not None
    return found


def decide(name: str, recorded: StepResult | None = None, event: object = None,
           now: datetime = NOW):
    return next_step(step(name), f"outer.{name}", spec_of(name), recorded,
                     {"event": event if event is not None else {"go": True, "n": 1}}, now)


# -- what an earlier pass recorded -----------------------------------------------------------


@pytest.mark.parametrize("status", [StepStatus.COMPLETED, StepStatus.SKIPPED])
def test_a_finished_step_is_put_back_in_scope_not_run_again(status: StepStatus) -> None:
    done = StepResult(status=status, output={"status": 200})

    assert decide("call", done, event={"go": False}) == UseRecorded(done)


def test_a_step_that_failed_for_good_goes_to_its_failure_handling() -> None:
    failed = StepResult(status=StepStatus.FAILED, error="boom")

    assert decide("call", failed) == HandleFailure(failed)


# -- if: --------------------------------------------------------------------------------------


def test_a_step_whose_if_does_not_hold_is_skipped_now() -> None:
    assert decide("call", event={"go": False}) == Skip(
        StepResult(status=StepStatus.SKIPPED, finished_at=iso(NOW)))
    assert decide("call", event={"go": True}) == RunAction(spec_of("call"), attempt=1,
                                                           recovered=False)


def test_if_is_not_asked_again_once_the_step_has_started() -> None:
    started = StepResult(status=StepStatus.RUNNING, attempts=1)

    assert decide("call", started, event={"go": False}) == RunAction(
        spec_of("call"), attempt=2, recovered=True)


def test_an_if_that_cannot_be_evaluated_fails_the_run_at_that_step() -> None:
    decision = decide("say")

    assert isinstance(decision, FailRun)
    assert decision.message.startswith("condition of step 'say' failed: bad expression 'i >'")
    assert decision.step == "say"


def test_a_step_type_not_installed_here_fails_the_run_at_its_path() -> None:
    decision = next_step(step("call"), "outer.call", None, None, {"event": {"go": True}}, NOW)

    assert decision == FailRun("step type 'http' is not installed on this worker", "outer.call")


# -- by kind ----------------------------------------------------------------------------------


def test_an_action_waiting_out_a_retry_delay_suspends_until_it_is_due() -> None:
    waiting = StepResult(status=StepStatus.WAITING, attempts=2, wake_at=iso(LATER))

    assert decide("call", waiting) == SuspendUntil(LATER)
    assert decide("call", waiting, now=LATER) == RunAction(spec_of("call"), attempt=3,
                                                           recovered=False)


def test_a_wait_step_sets_its_timer_then_finishes_when_due() -> None:
    waiting = StepResult(status=StepStatus.WAITING, started_at=iso(NOW), wake_at=iso(LATER))

    assert decide("pause") == StartWait()
    assert decide("pause", waiting, now=LATER - timedelta(milliseconds=1)) == SuspendUntil(LATER)
    assert decide("pause", waiting, now=LATER) == FinishWait(
        waiting.evolve(status=StepStatus.COMPLETED, finished_at=iso(LATER)))


def test_a_human_step_asks_once_then_awaits_the_answer() -> None:
    assert decide("ask") == AskReviewer()
    assert decide("ask", StepResult(status=StepStatus.WAITING_FOR_INPUT)) == AwaitReviewer()


def test_a_flow_step_runs_with_the_choice_it_recorded() -> None:
    chosen = StepResult(status=StepStatus.RUNNING, output={"branch": "else"})

    assert decide("check") == RunFlow(spec_of("check"), None)
    assert decide("check", chosen) == RunFlow(spec_of("check"), chosen)


# -- a run parked on timers -------------------------------------------------------------------


def test_a_parked_run_wakes_only_once_its_timer_is_due() -> None:
    results = {
        "call": StepResult(status=StepStatus.COMPLETED),
        "pause": StepResult(status=StepStatus.WAITING, wake_at=iso(LATER)),
    }

    assert timers_due(results, NOW) == SuspendUntil(LATER)
    assert timers_due(results, LATER) == TimersFired(("pause",))
    assert timers_due({}, NOW) == TimersFired(())


# -- failures ---------------------------------------------------------------------------------


def test_a_retryable_failure_is_retried_with_the_policy_delay_until_attempts_run_out() -> None:
    second = StepResult(status=StepStatus.RUNNING, attempts=2)

    retry = retry_after(step("call"), second, "503", retryable=True, now=NOW)

    assert retry == Retry(second.evolve(status=StepStatus.WAITING, error="503",
                                        wake_at=iso(NOW + timedelta(seconds=20))),
                          NOW + timedelta(seconds=20), immediately=False)  # 10s, doubled
    assert retry_after(step("call"), second, "400", retryable=False, now=NOW) is None
    third = second.evolve(attempts=3)
    assert retry_after(step("call"), third, "503", retryable=True, now=NOW) is None
    assert retry_after(step("say"), second, "503", retryable=True, now=NOW) is None  # no retry


def test_a_services_retry_after_is_waited_at_least_and_at_most_an_hour() -> None:
    second = StepResult(status=StepStatus.RUNNING, attempts=2)

    def wake(asked: float | None) -> datetime:
        retry = retry_after(step("call"), second, "429", retryable=True, now=NOW,
                            service_asked=asked)
        assert retry is not None
        return retry.wake_at

    assert wake(None) == NOW + timedelta(seconds=20)  # the policy's delay
    assert wake(5) == NOW + timedelta(seconds=20)  # shorter than the policy's: the policy's
    assert wake(90) == NOW + timedelta(seconds=90)  # longer: what the service asked
    assert wake(10**9) == NOW + timedelta(hours=1)  # a hostile answer parks it an hour at most


def test_retry_after_reads_seconds_and_http_dates_of_a_429_or_503_only() -> None:
    import httpx

    from engine.steps.http import retry_after_seconds

    def answer(status: int, value: str) -> httpx.Response:
        return httpx.Response(status, headers={"Retry-After": value})

    assert retry_after_seconds(answer(429, "7")) == 7.0
    assert retry_after_seconds(answer(503, "0.5")) == 0.5
    later = answer(429, "Wed, 21 Oct 2099 07:28:00 GMT")
    assert (retry_after_seconds(later) or 0) > 365 * 24 * 3600
    assert retry_after_seconds(answer(429, "soon")) is None
    assert retry_after_seconds(answer(500, "7")) is None
    assert retry_after_seconds(httpx.Response(429)) is None


def test_a_retry_without_delay_is_tried_again_at_once() -> None:
    first = StepResult(status=StepStatus.RUNNING, attempts=1)

    retry = retry_after(step("quick"), first, "flaky", retryable=True, now=NOW)

    assert retry is not None and retry.immediately and retry.wake_at == NOW


def test_a_failure_for_good_runs_the_fallback_continues_or_fails_the_run() -> None:
    failed = StepResult(status=StepStatus.FAILED, error="boom")

    assert after_failure(step("quick"), "check.quick", failed) == RunFallback(
        step("quick").on_failure.fallback)
    assert after_failure(step("say"), "say", failed) == GoOn()
    assert after_failure(step("pause"), "p[1].pause", failed) == FailRun(
        "step 'p[1].pause' failed: boom", "p[1].pause")
    timed_out = failed.evolve(output={"onTimeout": "continue"})
    assert after_failure(step("pause"), "pause", timed_out) == GoOn()


# -- a review starting ------------------------------------------------------------------------


def test_a_review_is_due_at_the_earlier_of_its_timeout_and_the_runs_deadline() -> None:
    run_deadline = NOW + timedelta(minutes=30)
    options = dict(step("ask").with_)

    review = start_review(step("ask"), "ask", options, "ex1", NOW, run_deadline)

    waiting = review.waiting
    assert (waiting.message, waiting.approvers, waiting.step_type) == (
        "Ship it?", ("U0ALICE",), "waitForApproval")
    assert waiting.due_at == iso(run_deadline)
    assert waiting.level_due == waiting.first_due == iso(NOW + timedelta(minutes=15))
    assert waiting.remind_at == iso(NOW + timedelta(minutes=5))
    assert waiting.schema["required"] == ["approved"]
    assert "message" not in waiting.options and waiting.options["sla"] == "15m"
    assert review.result == StepResult(status=StepStatus.WAITING_FOR_INPUT, started_at=iso(NOW))
    assert [(t.job, t.args, t.when) for t in review.timers] == [
        ("step_timed_out", ("ex1", "ask"), NOW + timedelta(hours=1)),
        ("review_timer", ("ex1", "ask", "0", "sla"), NOW + timedelta(minutes=15)),
        ("review_timer", ("ex1", "ask", "0", "remind"), NOW + timedelta(minutes=5)),
    ]
    alone = start_review(step("ask"), "ask", options, "ex1", NOW, None)
    assert alone.waiting.due_at == iso(NOW + timedelta(hours=1))


def test_deciding_imports_no_redis_rq_or_store() -> None:
    probe = ("import sys, engine.run.next_step; from engine.definition.step_types import "
             "get_step_type; get_step_type('http'); "
             "print(sorted(m for m in ('redis', 'rq', 'engine.state.store', 'engine.run.runner') "
             "if m in sys.modules))")

    imported = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                              text=True, check=True, timeout=60)

    assert imported.stdout.strip() == "[]"


CONDITIONAL = parse_workflow(dedent("""\
    name: conditional-failures
    steps:
      - name: call
        type: http
        with: {url: "https://example.invalid"}
        on-failure:
          retry:
            max-attempts: 5
            delay: 1s
            strategy: exponential
            multiplier: 4
            max-delay: 10s
            condition: "error.message : *503*"
          continue: "event.optional : true"
    """))


def test_a_retry_condition_and_a_continue_condition_read_the_failure_and_the_scope() -> None:
    call = step("call", CONDITIONAL)
    third = StepResult(status=StepStatus.RUNNING, attempts=3)

    retry = retry_after(call, third, "HTTP 503", retryable=True, now=NOW)
    assert retry is not None and retry.wake_at == NOW + timedelta(seconds=10)  # 16s, capped
    assert retry_after(call, third, "HTTP 502", retryable=True, now=NOW) is None

    failed = StepResult(status=StepStatus.FAILED, error="HTTP 400")
    assert after_failure(call, "call", failed, {"event": {"optional": True}}) == GoOn()
    assert isinstance(after_failure(call, "call", failed, {"event": {"optional": False}}),
                      FailRun)
