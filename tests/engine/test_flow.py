"""Flow control and failure handling as the runner executes them (real Redis, real RQ jobs)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from engine.definition import step_types as registry
from engine.definition.loader import parse_workflow
from engine.notify import Actor
from engine.state.execution import ExecutionStatus, StepStatus


def run(runtime, work, text, event=None):
    execution_id = runtime.engine.run(parse_workflow(textwrap.dedent(text)), event or {})
    work()
    return runtime.engine.get(execution_id)


HOSTS_LOOP = """
    name: loop
    steps:
      - name: hosts
        type: foreach
        foreach: "${{ event.hosts }}"
        steps:
          - name: each
            type: console
            with: {message: "{{ foreach.index }}:{{ foreach.item.name }}"}
      - name: after
        type: console
        with: {message: "last={{ steps.each.output }}"}
    """


def test_foreach_runs_nested_steps_per_item_with_item_and_index(runtime, work):
    state = run(runtime, work, HOSTS_LOOP, {"hosts": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})
    assert state.status is ExecutionStatus.COMPLETED
    assert [state.results[f"hosts[{i}].each"].output for i in range(3)] == ["0:a", "1:b", "2:c"]
    assert state.results["after"].output == "last=2:c"


def test_if_step_takes_then_or_else(runtime, work):
    text = """
        name: branch
        steps:
          - name: check
            type: if
            condition: "event.score >= 85"
            steps:
              - name: auto
                type: console
                with: {message: auto-approved}
            else:
              - name: manual
                type: console
                with: {message: needs review}
        """
    high = run(runtime, work, text, {"score": 90})
    low = run(runtime, work, text, {"score": 10})
    assert high.results["auto"].output == "auto-approved" and "manual" not in high.results
    assert low.results["manual"].output == "needs review" and "auto" not in low.results
    assert high.results["check"].output["branch"] == "then"


def test_switch_picks_the_matching_case_or_default(runtime, work):
    text = """
        name: route
        steps:
          - name: by_risk
            type: switch
            expression: "{{ event.risk }}"
            cases:
              - match: high
                steps:
                  - {name: page, type: console, with: {message: paging}}
              - match: low
                steps:
                  - {name: log, type: console, with: {message: logged}}
            default:
              - {name: ask, type: console, with: {message: asking}}
        """
    assert "page" in run(runtime, work, text, {"risk": "high"}).results
    assert "log" in run(runtime, work, text, {"risk": "low"}).results
    other = run(runtime, work, text, {"risk": "medium"})
    assert other.results["ask"].output == "asking" and "page" not in other.results


def test_foreach_over_something_else_than_a_list_fails_the_run(runtime, work):
    state = run(runtime, work, HOSTS_LOOP, {"hosts": "web-01"})
    assert state.status is ExecutionStatus.FAILED
    assert state.error == "foreach of step 'hosts' gave str, not a list"
    assert not [path for path in state.results if path.startswith("hosts[")]
    assert "after" not in state.results


def test_a_flow_step_type_plugs_in_by_registering(runtime, work, monkeypatch):
    monkeypatch.setattr(registry, "_registry", registry.registered_step_types())

    @registry.flow_step_type("test.repeat", step_keys=("steps",))
    def repeat(flow):
        times = flow.choose(lambda: {"times": flow.evaluate("event.times")})["times"]
        for round_ in range(times):
            flow.run_steps(flow.step.steps, prefix=f"{flow.path}[{round_}].",
                           scope={"round": round_ + 1})

    state = run(runtime, work, """
        name: repeat
        steps:
          - name: again
            type: test.repeat
            steps:
              - {name: say, type: console, with: {message: "round {{ round }}"}}
          - {name: after, type: console, with: {message: "last {{ steps.say.output }}"}}
        """, {"times": 2})

    assert state.status is ExecutionStatus.COMPLETED
    assert [state.results[f"again[{i}].say"].output for i in range(2)] == ["round 1", "round 2"]
    assert state.results["again"].status is StepStatus.COMPLETED
    assert state.results["again"].output == {"times": 2}
    assert state.results["after"].output == "last round 2"


def test_data_set_sets_variables_for_later_steps(runtime, work):
    state = run(runtime, work, """
        name: vars
        steps:
          - name: remember
            type: data.set
            with: {ticket: "INC-{{ event.n }}", count: "${{ event.n }}"}
          - name: use
            type: console
            if: "variables.count > 3"
            with: {message: "{{ variables.ticket }}"}
        """, {"n": 7})
    assert state.results["use"].output == "INC-7"
    assert state.variables == {"ticket": "INC-7", "count": 7}


def test_workflow_fail_ends_the_run_with_its_message(runtime, work):
    state = run(runtime, work, """
        name: failing
        steps:
          - name: stop
            type: workflow.fail
            with: {message: "refund over limit"}
          - name: never
            type: console
            with: {message: no}
        """)
    assert state.status is ExecutionStatus.FAILED
    assert "refund over limit" in (state.error or "")
    assert "never" not in state.results


@pytest.fixture
def boom(monkeypatch):
    """A step type `test.boom`, for one test, whose function raises RuntimeError("boom")."""
    registry.registered_step_types()  # built-ins and entry points first, so ours is not lost
    monkeypatch.setitem(registry._registry, "test.boom", registry.StepType(
        name="test.boom", kind=registry.StepKind.ACTION, run=_boom, options_schema={"type": "object"}))


def test_on_failure_continue_and_fallback(runtime, work, boom):
    state = run(runtime, work, """
        name: recovering
        steps:
          - name: soft
            type: test.boom
            on-failure: {continue: true}
          - name: hard
            type: test.boom
            on-failure:
              fallback:
                - name: cleanup
                  type: console
                  with: {message: "cleaning after {{ steps.hard.error }}"}
          - name: after
            type: console
            with: {message: "done"}
        """)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["soft"].status is StepStatus.FAILED
    assert state.results["cleanup"].output == "cleaning after RuntimeError: boom"
    assert state.results["after"].output == "done"


def test_workflow_level_fallback_runs_before_the_run_fails(runtime, work, boom):
    state = run(runtime, work, """
        name: cleanup-on-fail
        settings:
          on-failure:
            fallback:
              - name: notify
                type: console
                with: {message: "run failed"}
        steps:
          - name: explode
            type: test.boom
        """)
    assert state.status is ExecutionStatus.FAILED
    assert state.results["notify"].output == "run failed"


def _boom(ctx):
    raise RuntimeError("boom")


def test_human_step_timeout_applies_on_timeout_deny(runtime, work):
    state = run(runtime, work, """
        name: gate
        steps:
          - name: review
            type: waitForInput
            timeout: 1h
            with:
              message: Approve?
              on-timeout: deny
          - name: after
            type: console
            with: {message: "{{ steps.review.output.approved }} by {{ steps.review.resumedBy.id }}"}
        """)
    assert state.waiting is not None and state.waiting.due_at is not None
    # The timer job re-checks the deadline: fired early, it does nothing.
    assert runtime.engine.step_timed_out(state.id, "review") is False
    runtime.engine.clock = lambda: _after(state.waiting.due_at)
    assert runtime.engine.step_timed_out(state.id, "review") is True
    work()
    done = runtime.engine.get(state.id)
    assert done.status is ExecutionStatus.COMPLETED
    assert done.results["after"].output == "false by system:timeout"


def test_human_step_timeout_fails_the_run_by_default(runtime, work):
    state = run(runtime, work, """
        name: gate
        steps:
          - name: review
            type: waitForApproval
            timeout: 1h
            with: {message: "Approve?"}
        """)
    runtime.engine.clock = lambda: _after(state.waiting.due_at)
    assert runtime.engine.step_timed_out(state.id, "review") is True
    work()
    done = runtime.engine.get(state.id)
    assert done.status is ExecutionStatus.FAILED
    assert done.results["review"].status is StepStatus.FAILED


def test_wait_for_approval_accepts_only_a_yes_or_no(runtime, work):
    from engine.errors import InputInvalid

    state = run(runtime, work, """
        name: gate
        steps:
          - name: ok
            type: waitForApproval
            with: {message: "Ship it?", approveLabel: Ship, rejectLabel: Hold}
        """)
    review = runtime.engine.review(state.id)
    assert review.approve_label == "Ship" and review.reject_label == "Hold"
    try:
        runtime.engine.resume(state.id, {"approved": True, "extra": 1}, Actor(id="U1"))
        raise AssertionError("an extra field was accepted")
    except InputInvalid:
        pass
    runtime.engine.resume(state.id, {"approved": True}, Actor(id="U1"))


def test_wait_step_parks_the_run_until_its_timer(runtime, work):
    state = run(runtime, work, """
        name: sleepy
        steps:
          - name: pause
            type: wait
            with: {duration: 1h}
          - name: after
            type: console
            with: {message: awake}
        """)
    assert state.status is ExecutionStatus.WAITING
    wake = state.results["pause"].wake_at
    runtime.runner.advance(state.id)  # early: must not act before the deadline
    assert runtime.engine.get(state.id).status is ExecutionStatus.WAITING
    runtime.runner.clock = lambda: _after(wake)
    runtime.runner.advance(state.id)
    done = runtime.engine.get(state.id)
    assert done.status is ExecutionStatus.COMPLETED
    assert done.results["after"].output == "awake"


def test_custom_step_type_from_an_entry_point(runtime, work, tmp_path, monkeypatch):
    package = tmp_path / "acme_steps"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        from engine.definition.step_types import step_type

        @step_type("acme.ticket", options_schema={
            "type": "object", "properties": {"title": {"type": "string"}},
            "required": ["title"], "additionalProperties": False})
        def ticket(ctx):
            return {"id": "ACME-1", "title": ctx.options["title"]}
    """))
    dist = tmp_path / "acme_steps-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-steps\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[signoff.steps]\nacme = acme_steps\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.delitem(sys.modules, "acme_steps", raising=False)
    state = run(runtime, work, """
        name: custom
        steps:
          - name: open
            type: acme.ticket
            with: {title: "{{ event.t }}"}
        """, {"t": "disk full"})
    assert state.results["open"].output == {"id": "ACME-1", "title": "disk full"}


def _after(iso_text):
    from datetime import timedelta

    from engine.state.execution import parse_iso

    return parse_iso(iso_text) + timedelta(milliseconds=1)


BAD_OPTIONS = """
    name: bad-options
    steps:
      - name: pause
        type: wait
        with: {duration: "{{ event.delay }}"}
      - name: review
        type: waitForApproval
        with: {message: "Isolate {{ event.hosts | where_exp: 'h', event.bad }}?"}
      - name: after
        type: console
        with: {message: "went on"}
    """


def test_options_that_fail_to_render_fail_the_step_not_the_job(runtime, work):
    # A wait whose duration is not one, and a review whose message cannot render, are the
    # workflow's failures: recorded, audited, and the run ends (or goes on by on-failure);
    # the job itself must not raise, or the sweep would retry the run forever.
    state = run(runtime, work, BAD_OPTIONS, {"delay": "soon", "hosts": [1], "bad": "h >"})
    assert state.status is ExecutionStatus.FAILED
    assert state.results["pause"].status is StepStatus.FAILED
    assert "'soon' is not a duration" in (state.results["pause"].error or "")
    assert "review" not in state.results

    text = BAD_OPTIONS.replace('with: {duration: "{{ event.delay }}"}',
                               'with: {duration: "{{ event.delay }}"}\n'
                               '        on-failure: {continue: true}')
    state = run(runtime, work, text, {"delay": "soon", "hosts": [1], "bad": "h >"})
    assert state.status is ExecutionStatus.FAILED
    assert state.results["pause"].status is StepStatus.FAILED
    assert state.results["review"].status is StepStatus.FAILED
    assert "bad expression" in (state.results["review"].error or "")
    assert state.error is not None and "review" in state.error
    assert not runtime.store.stale_running(now_ms=2**62)  # nothing left for the sweep


def test_outputs_of_steps_inside_a_finished_flow_step_survive_a_pause(runtime, work):
    """A run resumed after a review replays from the top: the steps inside a completed
    `if` or `foreach` put their outputs back in scope for the steps after the pause."""
    text = """
        name: replay
        steps:
          - name: check
            type: if
            condition: "event.x : 1"
            steps:
              - {name: inner, type: console, with: {message: hello}}
          - name: loop
            type: foreach
            foreach: [a, b]
            steps:
              - {name: each, type: console, with: {message: "item {{ foreach.item }}"}}
          - name: ask
            type: waitForInput
            with: {message: go}
          - name: after
            type: console
            with: {message: "{{ steps.inner.output }} / {{ steps.each.output }}"}
        """
    state = run(runtime, work, text, {"x": 1})
    assert state.status is ExecutionStatus.WAITING_FOR_INPUT
    runtime.engine.resume(state.id, {}, Actor(id="U1"))
    work()
    state = runtime.engine.get(state.id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["after"].output == "hello / item b"
