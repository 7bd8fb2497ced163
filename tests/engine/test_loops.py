"""Elastic's loops as the runner executes them (real Redis, real RQ jobs): `while`,
`loop.break` / `loop.continue`, `foreach` on any step, `iteration-timeout`."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from engine.cli import main
from engine.definition import step_types as registry
from engine.definition.loader import load_workflow, parse_workflow
from engine.errors import WorkflowInvalid
from engine.notify import Actor
from engine.state.execution import ExecutionStatus, StepStatus, parse_iso


def run(runtime, work, text, event=None):
    execution_id = runtime.engine.run(parse_workflow(textwrap.dedent(text)), event or {})
    work()
    return runtime.engine.get(execution_id)


def resume(runtime, work, state, answer):
    runtime.engine.resume(state.id, answer, Actor(id="U1"))
    work()
    return runtime.engine.get(state.id)


def outputs(state, path_format, count):
    return [state.results[path_format.format(i)].output for i in range(count)]


# -- while ---------------------------------------------------------------------------------------


COUNTDOWN = """
    name: countdown
    steps:
      - name: poll
        type: while
        condition: "{condition}"
        steps:
          - name: tick
            type: console
            with: {{message: "tick {{{{ while.iteration }}}}"}}
      - name: after
        type: console
        with: {{message: "last {{{{ steps.tick.output }}}}"}}
    """


@pytest.mark.parametrize("condition", ["while.iteration < 3", "${{ while.iteration < 3 }}"])
def test_while_repeats_its_steps_while_the_condition_holds(runtime, work, condition):
    state = run(runtime, work, COUNTDOWN.format(condition=condition))
    assert state.status is ExecutionStatus.COMPLETED
    assert outputs(state, "poll[{}].tick", 3) == ["tick 0", "tick 1", "tick 2"]
    assert "poll[3].tick" not in state.results
    assert state.results["poll"].output["exitReason"] == "condition"
    assert state.results["poll"].output["iterations"] == 3
    assert state.results["after"].output == "last tick 2"


def test_while_runs_its_first_iteration_before_looking_at_the_condition(runtime, work):
    state = run(runtime, work, COUNTDOWN.format(condition="event.again : true"),
                {"again": False})
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["poll[0].tick"].output == "tick 0"
    assert "poll[1].tick" not in state.results


def test_while_condition_reads_the_steps_of_its_body(runtime, work):
    state = run(runtime, work, """
        name: until-three
        steps:
          - name: count
            type: while
            condition: "steps.add.output.n < 3"
            steps:
              - name: add
                type: data.set
                with: {n: "${{ variables.n | default: 0 | plus: 1 }}"}
        """)
    assert state.status is ExecutionStatus.COMPLETED
    assert [state.results[f"count[{i}].add"].output for i in range(3)] == [
        {"n": 1}, {"n": 2}, {"n": 3}]
    assert state.variables == {"n": 3}


def test_while_max_iterations_ends_the_loop_or_fails_it(runtime, work):
    capped = run(runtime, work, COUNTDOWN.format(condition="while.iteration < 100")
                 .replace("type: while", "type: while\n        max-iterations: 2"))
    assert capped.status is ExecutionStatus.COMPLETED
    assert "poll[1].tick" in capped.results and "poll[2].tick" not in capped.results
    assert capped.results["poll"].output["exitReason"] == "max-iterations"

    failing = run(runtime, work, COUNTDOWN.format(condition="while.iteration < 100").replace(
        "type: while", "type: while\n        max-iterations: {limit: 2, on-limit: fail}"))
    assert failing.status is ExecutionStatus.FAILED
    assert failing.error == ("while step 'poll' exceeded its max-iterations limit of 2: "
                             "completed 2 iterations")
    assert "after" not in failing.results


def test_while_without_max_iterations_stops_at_kibanas_default_of_2000(runtime, work):
    state = run(runtime, work, COUNTDOWN.format(condition="while.iteration >= 0"))
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["poll"].output["iterations"] == 2000
    assert state.results["poll[1999].tick"].output == "tick 1999"
    assert "poll[2000].tick" not in state.results


def test_while_if_skips_the_whole_loop(runtime, work):
    state = run(runtime, work, COUNTDOWN.format(condition="while.iteration < 3")
                .replace("type: while", "type: while\n        if: \"event.poll : true\""),
                {"poll": False})
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["poll"].status is StepStatus.SKIPPED
    assert not [path for path in state.results if path.startswith("poll[")]


ASK_AGAIN = """
    name: ask-again
    steps:
      - name: rounds
        type: while
        condition: "steps.ask.output.again : true"
        steps:
          - name: before
            type: console
            with: {message: "round {{ while.iteration }}"}
          - name: ask
            type: waitForInput
            with:
              message: "Again?"
              schema:
                type: object
                properties: {again: {type: boolean}}
          - name: noted
            type: console
            with: {message: "answered {{ steps.ask.output.again }} in {{ while.iteration }}"}
      - name: after
        type: console
        with: {message: "{{ steps.noted.output }}"}
    """


def test_a_run_resumed_inside_a_while_goes_on_in_the_same_iteration(runtime, work):
    state = run(runtime, work, ASK_AGAIN)
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    assert state.waiting is not None and state.waiting.path == "rounds[0].ask"
    state = resume(runtime, work, state, {"again": True})
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    assert state.waiting is not None and state.waiting.path == "rounds[1].ask"
    assert state.results["rounds"].output["iteration"] == 1
    state = resume(runtime, work, state, {"again": False})
    assert state.status is ExecutionStatus.COMPLETED
    assert outputs(state, "rounds[{}].noted", 2) == ["answered true in 0", "answered false in 1"]
    assert outputs(state, "rounds[{}].before", 2) == ["round 0", "round 1"]
    assert "rounds[2].before" not in state.results
    assert state.results["rounds"].output["exitReason"] == "condition"
    assert state.results["after"].output == "answered false in 1"


# -- loop.break and loop.continue ----------------------------------------------------------------


BREAK_AND_CONTINUE = """
    name: controls
    steps:
      - name: hosts
        type: foreach
        foreach: [web-1, skip-me, web-2, stop, web-3]
        steps:
          - name: skip
            type: loop.continue
            if: "foreach.item : skip-me"
          - name: check
            type: if
            condition: "foreach.item : stop"
            steps:
              - name: stop
                type: loop.break
          - name: each
            type: console
            with: {message: "host {{ foreach.item }}"}
      - name: ask
        type: waitForInput
        with: {message: "go on?"}
      - name: after
        type: console
        with: {message: "last {{ steps.each.output }}"}
    """


def test_continue_skips_the_rest_of_an_iteration_and_break_leaves_the_loop(runtime, work):
    state = run(runtime, work, BREAK_AND_CONTINUE)
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    ran = sorted(path for path in state.results if path.endswith(".each"))
    assert ran == ["hosts[0].each", "hosts[2].each"]
    assert state.results["hosts[0].skip"].status is StepStatus.SKIPPED
    assert state.results["hosts[1].skip"].status is StepStatus.COMPLETED
    assert state.results["hosts[1].skip"].output == {"navigateToNode": "exitForeach_hosts"}
    assert "hosts[1].check" not in state.results
    assert state.results["hosts[3].stop"].output == {"navigateToNode": "exitForeach_hosts"}
    assert state.results["hosts[3].check"].status is StepStatus.COMPLETED
    assert "hosts[4].skip" not in state.results
    assert state.results["hosts"].status is StepStatus.COMPLETED

    # The resumed run replays the loop from the top and leaves it the same way.
    done = resume(runtime, work, state, {})
    assert done.status is ExecutionStatus.COMPLETED
    assert done.results["after"].output == "last host web-2"
    assert sorted(path for path in done.results if path.endswith(".each")) == ran


def test_break_leaves_only_the_innermost_loop(runtime, work):
    state = run(runtime, work, """
        name: nested
        steps:
          - name: outer
            type: while
            condition: "while.iteration < 2"
            steps:
              - name: inner
                type: foreach
                foreach: [a, b, c]
                steps:
                  - name: say
                    type: console
                    with: {message: "{{ while.iteration }}{{ foreach.item }}"}
                  - name: enough
                    type: loop.break
                    if: "foreach.item : b"
              - name: end
                type: console
                with: {message: "end {{ while.iteration }}"}
        """)
    assert state.status is ExecutionStatus.COMPLETED
    said = [state.results[p].output for p in sorted(state.results) if p.endswith(".say")]
    assert said == ["0a", "0b", "1a", "1b"]
    assert outputs(state, "outer[{}].end", 2) == ["end 0", "end 1"]
    assert state.results["outer[0].inner[1].enough"].output == {
        "navigateToNode": "exitForeach_inner"}
    assert state.results["outer"].output["exitReason"] == "condition"


def test_break_ends_a_while_with_exit_reason_break(runtime, work):
    state = run(runtime, work, """
        name: until-found
        steps:
          - name: search
            type: while
            condition: "true"
            steps:
              - name: found
                type: loop.break
                if: "${{ while.iteration == 2 }}"
              - name: look
                type: console
                with: {message: "look {{ while.iteration }}"}
        """)
    assert state.status is ExecutionStatus.COMPLETED
    assert outputs(state, "search[{}].look", 2) == ["look 0", "look 1"]
    assert "search[2].look" not in state.results
    assert state.results["search[2].found"].output == {"navigateToNode": "exitWhile_search"}
    assert state.results["search"].output["exitReason"] == "break"
    assert state.results["search"].output["iterations"] == 3


def test_loop_controls_outside_a_loop_are_reported_by_validate(tmp_path, capsys):
    path = tmp_path / "controls.yaml"
    path.write_text(textwrap.dedent("""\
        name: misplaced
        settings:
          on-failure:
            fallback:
              - name: again
                type: loop.continue
        steps:
          - name: check
            type: if
            condition: "event.x : 1"
            steps:
              - name: leave
                type: loop.break
          - name: loop
            type: foreach
            foreach: [a]
            steps:
              - name: branch
                type: if
                condition: "foreach.item : a"
                steps:
                  - name: fine
                    type: loop.break
        """))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert (f"{path}:13:15: step 'leave' of type 'loop.break' is outside any loop: it is only "
            "valid inside the steps of a foreach or while (an if or switch within them "
            "counts); move it inside a loop or remove it") in out
    assert f"{path}:6:15: step 'again' of type 'loop.continue' is outside any loop" in out
    assert "'fine'" not in out


# -- foreach on any step -------------------------------------------------------------------------


def test_foreach_on_an_ordinary_step_runs_it_once_per_item(runtime, work):
    state = run(runtime, work, """
        name: step-foreach
        steps:
          - name: greet
            type: console
            foreach: "${{ event.people }}"
            with: {message: "hi {{ foreach.item }} ({{ foreach.index }}/{{ foreach.total }})"}
          - name: after
            type: console
            with: {message: "{{ steps.greet.output }} ({{ steps.foreach_greet.status }})"}
        """, {"people": ["ann", "bob"]})
    assert state.status is ExecutionStatus.COMPLETED
    assert outputs(state, "foreach_greet[{}].greet", 2) == ["hi ann (0/2)", "hi bob (1/2)"]
    assert state.results["foreach_greet"].output["items"] == ["ann", "bob"]
    assert state.results["foreach_greet"].status is StepStatus.COMPLETED
    assert state.results["after"].output == "hi bob (1/2) (COMPLETED)"


def test_foreach_on_a_step_takes_if_and_the_loop_keys_to_the_loop(runtime, work):
    text = """
        name: step-foreach-keys
        steps:
          - name: greet
            type: console
            foreach: [ann, bob, cy]
            if: "event.go : true"
            max-iterations: 2
            with: {message: "hi {{ foreach.item }}"}
        """
    workflow = parse_workflow(textwrap.dedent(text))
    loop = workflow.steps[0]
    assert (loop.name, loop.type, [s.name for s in loop.steps]) == (
        "foreach_greet", "foreach", ["greet"])
    assert loop.steps[0].foreach is None and loop.steps[0].if_ is None

    ran = run(runtime, work, text, {"go": True})
    assert outputs(ran, "foreach_greet[{}].greet", 2) == ["hi ann", "hi bob"]
    assert "foreach_greet[2].greet" not in ran.results
    skipped = run(runtime, work, text, {"go": False})
    assert skipped.results["foreach_greet"].status is StepStatus.SKIPPED
    assert "foreach_greet[0].greet" not in skipped.results


def test_foreach_where_elastic_ignores_it_is_reported():
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(textwrap.dedent("""\
            name: ignored
            steps:
              - name: ask
                type: waitForInput
                foreach: [a, b]
                with: {message: "ok?"}
            """), "wf.yml")
    assert [str(p) for p in caught.value.problems] == [
        "wf.yml:5:5: key 'foreach' in step 'ask' has no effect on a step of type "
        "'waitForInput' (Elastic ignores it there); wrap the step in a foreach step"]


# -- iteration-timeout ---------------------------------------------------------------------------


def _after(iso_text):
    return parse_iso(iso_text) + timedelta(milliseconds=1)


def _wake_after(runtime, state, path):
    """Advance the run as its timer would, just after the wake-up of the step at ``path``."""
    wake = state.results[path].wake_at
    runtime.runner.clock = lambda: _after(wake)
    runtime.runner.advance(state.id)
    return runtime.engine.get(state.id)


TIMED_ITERATIONS = """
    name: timed
    steps:
      - name: items
        type: foreach
        foreach: [a, b]
        iteration-timeout: 1m
        iteration-on-failure: {continue: true}
        steps:
          - name: pause
            type: wait
            on-failure: {continue: true}
            with: {duration: 1h}
          - name: late
            type: console
            with: {message: "after the pause"}
      - name: ask
        type: waitForInput
        with: {message: "go on?"}
      - name: done
        type: console
        with: {message: "{{ steps.pause.error }}"}
    """


def test_an_iteration_waiting_past_its_timeout_fails_when_its_deadline_comes(runtime, work):
    state = run(runtime, work, TIMED_ITERATIONS)
    assert state.status is ExecutionStatus.WAITING
    started = parse_iso(state.results["items"].output["iterationStartedAt"])
    # The wait's timer is set at the iteration's deadline, not an hour later.
    assert parse_iso(state.results["items[0].pause"].wake_at) == started + timedelta(minutes=1)

    state = _wake_after(runtime, state, "items[0].pause")
    first = state.results["items[0].pause"]
    assert first.status is StepStatus.FAILED
    assert first.error == ("TimeoutError: iteration 0 of step 'items' exceeded its "
                           "iteration-timeout of 60s")
    assert "items[0].late" not in state.results  # the step's own on-failure does not apply
    assert state.status is ExecutionStatus.WAITING  # iteration-on-failure went on to item 1
    state = _wake_after(runtime, state, "items[1].pause")
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    assert state.results["items[1].pause"].status is StepStatus.FAILED

    done = resume(runtime, work, state, {})  # replays both timed-out iterations the same way
    assert done.status is ExecutionStatus.COMPLETED
    assert not [path for path in done.results if path.endswith(".late")]
    assert done.results["done"].output.startswith("TimeoutError: iteration 1 of step 'items'")


@pytest.fixture
def boom(monkeypatch):
    """A step type `test.boom`, for one test, whose function raises RuntimeError("boom")."""
    registry.registered_step_types()
    monkeypatch.setitem(registry._registry, "test.boom", registry.StepType(
        name="test.boom", kind=registry.StepKind.ACTION, run=_boom,
        options_schema={"type": "object"}))


def _boom(ctx):
    raise RuntimeError("boom")


def test_a_retry_due_after_the_iteration_deadline_times_the_iteration_out(runtime, work, boom):
    state = run(runtime, work, """
        name: retrying
        steps:
          - name: poll
            type: while
            condition: "true"
            iteration-timeout: 10m
            steps:
              - name: flaky
                type: test.boom
                on-failure:
                  retry: {max-attempts: 5, delay: 1h}
        """)
    assert state.status is ExecutionStatus.WAITING
    waiting = state.results["poll[0].flaky"]
    started = parse_iso(state.results["poll"].output["iterationStartedAt"])
    assert waiting.attempts == 1 and parse_iso(waiting.wake_at) == started + timedelta(minutes=10)
    state = _wake_after(runtime, state, "poll[0].flaky")
    assert state.status is ExecutionStatus.FAILED
    assert state.results["poll[0].flaky"].attempts == 1  # not tried again past the deadline
    assert state.error == ("TimeoutError: iteration 0 of step 'poll' exceeded its "
                           "iteration-timeout of 600s")


def test_a_loops_own_timeout_is_not_caught_by_its_iteration_on_failure(runtime, work):
    state = run(runtime, work, """
        name: whole-loop
        steps:
          - name: poll
            type: while
            condition: "true"
            timeout: 30m
            iteration-on-failure: {continue: true}
            steps:
              - name: pause
                type: wait
                with: {duration: 1h}
        """)
    assert state.status is ExecutionStatus.WAITING
    state = _wake_after(runtime, state, "poll[0].pause")
    assert state.status is ExecutionStatus.FAILED
    assert state.error == "TimeoutError: step 'poll' exceeded its timeout of 1800s"
    assert "poll[1].pause" not in state.results


def test_a_loops_on_failure_handles_the_failure_of_the_whole_loop(runtime, work, boom):
    state = run(runtime, work, """
        name: loop-on-failure
        steps:
          - name: soft
            type: while
            condition: "true"
            on-failure: {continue: true}
            steps:
              - {name: explode, type: test.boom}
          - name: hard
            type: foreach
            foreach: [a, b]
            on-failure:
              fallback:
                - name: cleanup
                  type: console
                  with: {message: "cleaning after {{ steps.hard.error }}"}
            steps:
              - {name: explode_each, type: test.boom}
          - name: ask
            type: waitForInput
            with: {message: "go on?"}
        """)
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    assert state.results["soft"].status is StepStatus.FAILED
    assert "soft[1].explode" not in state.results
    assert state.results["hard"].status is StepStatus.FAILED
    assert "hard[1].explode_each" not in state.results
    assert state.results["cleanup"].output == (
        "cleaning after step 'hard[0].explode_each' failed: RuntimeError: boom")
    done = resume(runtime, work, state, {})
    assert done.status is ExecutionStatus.COMPLETED


# -- the corpus files, run -----------------------------------------------------------------------


CORPUS = Path(__file__).parent / "elastic_corpus"


def run_file(runtime, work, name, event):
    execution_id = runtime.engine.run(load_workflow(CORPUS / name), event)
    work()
    return runtime.engine.get(execution_id)


def test_corpus_while_polls_until_ready(runtime, work):
    state = run_file(runtime, work, "while-poll-until-ready.yaml",
                     {"poll": True, "statuses": ["pending", "pending", "ready"]})
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["poll_job[2].log_progress"].output == "Attempt 2: status ready"
    assert state.results["report"].output == "finished after 3 checks"
    skipped = run_file(runtime, work, "while-poll-until-ready.yaml", {"poll": False})
    assert skipped.results["poll_job"].status is StepStatus.SKIPPED


def test_corpus_while_waits_between_attempts(runtime, work):
    state = run_file(runtime, work, "while-template-condition.yaml", {"codes": [500]})
    assert state.status is ExecutionStatus.WAITING
    state = _wake_after(runtime, state, "retry_until_ok[0].back_off")
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["retry_until_ok[1].failed_attempt"].output == {"branch": "else"}
    assert "retry_until_ok[1].back_off" not in state.results
    assert state.results["outcome"].output == "last code 200 (condition)"


def test_corpus_loop_break_and_continue(runtime, work):
    state = run_file(runtime, work, "loop-break-continue.yaml", {"hosts": [
        {"name": "a"}, {"name": "b", "maintenance": True}, {"name": "stop"}, {"name": "c"}]})
    assert state.status is ExecutionStatus.COMPLETED
    assert [p for p in state.results if p.endswith(".visit")] == ["each_host[0].visit"]
    assert outputs(state, "search[{}].look", 2) == ["looking, round 0", "looking, round 1"]
    assert state.results["summary"].output == "last visit: visiting a"


def test_corpus_step_foreach_freezes_each_looping_step_as_a_loop():
    workflow = load_workflow(CORPUS / "step-foreach-any-step.yaml")
    assert [(s.name, s.type) for s in workflow.steps] == [
        ("foreach_greet", "foreach"), ("foreach_tag", "foreach"), ("foreach_notify", "foreach")]
    greet = workflow.steps[0]
    assert greet.max_iterations is not None and greet.max_iterations.limit == 50
    assert greet.iteration_timeout == timedelta(minutes=1) and greet.if_ is not None
    notify = workflow.steps[2].steps[0]
    assert notify.on_failure is not None and notify.on_failure.continue_
    assert workflow.steps[1].foreach == ("a", "b")


def test_an_action_in_a_timed_iteration_gets_the_time_left_as_its_timeout(runtime, work,
                                                                           monkeypatch):
    registry.registered_step_types()
    monkeypatch.setitem(registry._registry, "test.timeout", registry.StepType(
        name="test.timeout", kind=registry.StepKind.ACTION,
        run=lambda ctx: ctx.timeout_seconds, options_schema={"type": "object"}))
    state = run(runtime, work, """
        name: time-left
        steps:
          - name: each
            type: foreach
            foreach: [a]
            iteration-timeout: 5m
            steps:
              - {name: left, type: test.timeout}
              - {name: own, type: test.timeout, timeout: 10s}
          - {name: outside, type: test.timeout, timeout: 1h}
        """)
    assert state.status is ExecutionStatus.COMPLETED
    assert 0 < state.results["each[0].left"].output <= 300
    assert state.results["each[0].own"].output == 10
    assert state.results["outside"].output == 3600


def test_validate_checks_while_and_loop_keys():
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(textwrap.dedent("""\
            name: bad-loops
            steps:
              - name: poll
                type: while
                steps:
                  - {name: tick, type: console, with: {message: tick}}
              - name: branch
                type: if
                condition: "event.x : 1"
                foreach: [a]
                steps:
                  - {name: inner, type: console, with: {message: hi}}
            """), "wf.yml")
    assert [str(p) for p in caught.value.problems] == [
        "wf.yml:3:5: steps[0].condition is required (step 'poll')",
        "wf.yml:10:5: key 'foreach' in step 'branch' has no effect on a step of type 'if' "
        "(Elastic ignores it there); wrap the step in a foreach step"]
    # The loop keys are built-in properties of every step in Kibana: accepted, no loop made.
    plain = parse_workflow(textwrap.dedent("""\
        name: plain
        steps:
          - {name: say, type: console, max-iterations: 3, with: {message: hi}}
        """)).steps[0]
    assert (plain.name, plain.type) == ("say", "console")


# -- iteration-on-failure.retry ------------------------------------------------------------------


@pytest.fixture
def flaky(monkeypatch):
    """`test.flaky` fails but in a retried iteration's attempt `with.passes_on` (a path part)."""
    registry.registered_step_types()

    def run_flaky(ctx):
        if ctx.options.get("passes_on", "#2") not in ctx.step_path:
            raise RuntimeError(f"flaky at {ctx.step_path}")
        return "ok"

    monkeypatch.setitem(registry._registry, "test.flaky", registry.StepType(
        name="test.flaky", kind=registry.StepKind.ACTION, run=run_flaky,
        options_schema={"type": "object"}))


RETRIED_ITERATIONS = """
    name: retried
    steps:
      - name: items
        type: foreach
        foreach: [a, b]
        iteration-on-failure:
          retry: {{max-attempts: 3, delay: {delay}}}
          continue: true
        steps:
          - name: flaky
            type: test.flaky
            with: {{passes_on: "{passes_on}"}}
          - name: after
            type: console
            with: {{message: "{{{{ foreach.item }}}} passed"}}
      - name: ask
        type: waitForInput
        with: {{message: "go on?"}}
      - name: last
        type: console
        with: {{message: "{{{{ steps.after.output }}}}"}}
    """


def test_a_failed_iteration_is_retried_after_its_delay_under_new_paths(runtime, work, flaky):
    state = run(runtime, work, RETRIED_ITERATIONS.format(delay="1m", passes_on="#2"))
    assert state.status is ExecutionStatus.WAITING
    assert state.results["items"].status is StepStatus.WAITING  # the iteration's retry delay
    assert state.results["items"].output["retried"] == {"0": 2}
    assert state.results["items[0].flaky"].status is StepStatus.FAILED
    assert "items[0].after" not in state.results

    state = _wake_after(runtime, state, "items")
    assert state.results["items[0]#2.flaky"].output == "ok"
    assert state.results["items[0]#2.after"].output == "a passed"
    assert state.results["items[1].flaky"].status is StepStatus.FAILED
    state = _wake_after(runtime, state, "items")
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    assert state.results["items"].output["retried"] == {"0": 2, "1": 2}

    done = resume(runtime, work, state, {})  # the replay takes the retried paths, not waiting
    assert done.status is ExecutionStatus.COMPLETED
    assert done.results["items"].status is StepStatus.COMPLETED
    assert done.results["last"].output == "b passed"
    assert not [path for path in done.results if "#3" in path]


def test_an_iteration_failing_every_attempt_goes_to_the_rest_of_its_policy(runtime, work, flaky):
    state = run(runtime, work, RETRIED_ITERATIONS.format(delay=0, passes_on="never"))
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    for item in (0, 1):
        assert state.results[f"items[{item}].flaky"].status is StepStatus.FAILED
        assert state.results[f"items[{item}]#2.flaky"].status is StepStatus.FAILED
        assert state.results[f"items[{item}]#3.flaky"].error == (
            f"RuntimeError: flaky at items[{item}]#3.flaky")
    assert not [path for path in state.results if "#4" in path or path.endswith(".after")]
    assert resume(runtime, work, state, {}).status is ExecutionStatus.COMPLETED


def test_loop_controls_in_fallbacks_act_on_the_loop_around_them(runtime, work, boom):
    state = run(runtime, work, """
        name: fallback-controls
        steps:
          - name: outer
            type: foreach
            foreach: [a, c, b, d]
            iteration-on-failure:
              fallback:
                - name: give_up
                  type: loop.break
                  if: "foreach.item : b"
            steps:
              - name: try_it
                type: test.boom
                if: "not foreach.item : a"
                on-failure:
                  fallback:
                    - name: next_one
                      type: loop.continue
                      if: "foreach.item : c"
              - name: explode
                type: test.boom
                if: "foreach.item : b"
              - name: reached
                type: console
                with: {message: "reached {{ foreach.item }}"}
          - name: after
            type: console
            with: {message: "{{ steps.reached.output }}"}
        """)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["outer[0].reached"].output == "reached a"
    # c: try_it's fallback continues with the next item, past `reached`.
    assert state.results["outer[1].next_one"].output == {"navigateToNode": "exitForeach_outer"}
    assert "outer[1].reached" not in state.results
    # b: `explode` fails the iteration; the loop's fallback breaks: d never runs.
    assert state.results["outer[2].next_one"].status is StepStatus.SKIPPED
    assert state.results["outer[2].give_up"].output == {"navigateToNode": "exitForeach_outer"}
    assert "outer[2].reached" not in state.results and "outer[3].try_it" not in state.results
    assert state.results["after"].output == "reached a"


def test_a_review_in_a_timed_iteration_is_due_at_the_iterations_deadline(runtime, work):
    state = run(runtime, work, """
        name: timed-review
        steps:
          - name: hosts
            type: foreach
            foreach: [web-1, web-2]
            iteration-timeout: 10m
            iteration-on-failure: {continue: true}
            steps:
              - name: ask
                type: waitForApproval
                with: {message: "Isolate {{ foreach.item }}?"}
        """)
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    started = parse_iso(state.results["hosts"].output["iterationStartedAt"])
    assert state.waiting is not None
    assert parse_iso(state.waiting.due_at) == started + timedelta(minutes=10)  # not 24 h

    # The timer set at the deadline applies the step's on-timeout (fail): the iteration
    # fails, and iteration-on-failure goes on with the next host.
    assert runtime.engine.step_timed_out(state.id, "hosts[0].ask") is False  # not yet due
    runtime.engine.clock = lambda: _after(state.waiting.due_at)
    assert runtime.engine.step_timed_out(state.id, "hosts[0].ask") is True
    work()
    state = runtime.engine.get(state.id)
    assert state.results["hosts[0].ask"].status is StepStatus.FAILED
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    assert state.waiting is not None and state.waiting.path == "hosts[1].ask"


def test_the_loop_of_a_step_with_foreach_takes_its_name():
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(textwrap.dedent("""\
            name: clash
            steps:
              - {name: foreach_greet, type: console, with: {message: first}}
              - name: greet
                type: console
                foreach: [a]
                with: {message: "{{ foreach.item }}"}
            """), "wf.yml")
    assert [str(p) for p in caught.value.problems] == [
        "wf.yml:6:5: step 'greet' with foreach runs as a loop named 'foreach_greet', as in "
        "Elastic, but the step on line 3 has that name; rename one of them"]
