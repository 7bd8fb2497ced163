"""The `parallel` step: each branch a child execution on real RQ workers, the parent parked.

Output shapes as Elastic's docs show them, the concurrency cap (counted from the parent's
audit trail, where every branch start and every report read is written), fail-fast and
settled, timeouts, the branch-body limits `signoff validate` enforces, and a worker killed
in the middle of a branch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import WorkflowInvalid
from engine.state.execution import ExecutionStatus, StepStatus
from engine.steps.parallel import Finished, Settings, aggregate, next_moves
from tests.engine.test_durability import Target
from tests.support.services import wait_until

STATIC = """
name: enrich-all
consts: {source: intel}
triggers:
  - type: manual
    inputs:
      - {name: host, type: string, required: true}
steps:
  - name: before
    type: console
    with: {message: "seen {{ inputs.host }}"}
  - name: enrich
    type: parallel
    mode: settled
    branches:
      - name: reputation
        steps:
          - name: check_reputation
            type: console
            with: {message: "{{ steps.before.output }} via {{ consts.source }}"}
      - name: geoip
        steps:
          - name: geo_lookup
            type: data.set
            with: {country: NL}
          - name: geo_fail
            type: workflow.fail
            with: {message: "geo service down"}
      - name: owner
        steps:
          - name: find_owner
            type: data.set
            with: {owner: "team-{{ inputs.host }}"}
  - name: summarize
    type: console
    with:
      message: >-
        {{ steps.check_reputation.output }} |
        {{ steps.enrich.output.branches.geoip.status }} |
        {{ steps.find_owner.output.owner }} | {{ steps.enrich.output.failed }}
"""


def trail(runtime, execution_id: str) -> list[dict]:
    return [entry.event for entry in runtime.engine.audit_entries(execution_id)]


def test_static_branches_run_as_children_and_give_the_documented_output(runtime, work):
    parent_id = runtime.engine.run(parse_workflow(STATIC), {"inputs": {"host": "web-1"}})
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.COMPLETED, parent.error  # settled
    output = parent.results["enrich"].output
    assert {k: output[k] for k in ("total", "succeeded", "failed", "status")} == {
        "total": 3, "succeeded": 2, "failed": 1, "status": "failed"}
    results = output["results"]
    assert [(r["index"], r["key"], r["status"]) for r in results] == [
        (0, "reputation", "completed"), (1, "geoip", "failed"), (2, "owner", "completed")]
    for r in results:
        assert {"startedAt", "finishedAt", "durationMs"} <= set(r)
        assert r["durationMs"] == r["finishedAt"] - r["startedAt"] >= 0
    # A completed branch's output is its last step's; a failed one carries its error.
    assert results[0]["output"] == "seen web-1 via intel"
    assert results[2]["output"] == {"owner": "team-web-1"}
    assert "output" not in results[1] and "geo service down" in results[1]["error"]["message"]
    assert output["branches"]["owner"] == {"status": "completed",
                                           "output": {"owner": "team-web-1"}, "error": None}
    # Steps inside static branches are read by name after the step.
    assert parent.results["summarize"].output == (
        "seen web-1 via intel | failed | team-web-1 | 1")
    # Each branch is its own execution, linked to the parent and its branch.
    started = [e for e in trail(runtime, parent_id) if e["type"] == "child.started"]
    assert [e["branch"] for e in started] == [0, 1, 2]
    for event in started:
        child = runtime.engine.get(event["child"])
        assert child.parent is not None
        assert (child.parent.id, child.parent.path, child.parent.branch) == (
            parent_id, "enrich", event["branch"])
        assert runtime.engine.verify_audit(child.id).ok
        # A branch runs only its own steps.
        body = {"reputation": {"check_reputation"}, "geoip": {"geo_lookup", "geo_fail"},
                "owner": {"find_owner"}}[event["key"]]
        assert set(child.results) == body


def test_a_dynamic_fan_out_sees_foreach_and_keys_results_by_item(runtime, work):
    parent_id = runtime.engine.run(parse_workflow("""
name: fan
steps:
  - name: list
    type: data.set
    with: {hosts: [a, b, c]}
  - name: each
    type: parallel
    foreach: "${{ variables.hosts }}"
    steps:
      - name: ping
        type: console
        with:
          message: >-
            {{ foreach.item }} {{ foreach.index }}/{{ foreach.total }}
            of {{ foreach.items | join: ',' }}
  - name: empty
    type: parallel
    foreach: []
    steps:
      - name: never
        type: console
        with: {message: never}
  - name: after
    type: console
    with: {message: "{{ steps.each.output.results[1].output }} / {{ steps.empty.output.total }}"}
"""))
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.COMPLETED, parent.error
    output = parent.results["each"].output
    assert [(r["key"], r["output"]) for r in output["results"]] == [
        ("a", "a 0/3 of a,b,c"), ("b", "b 1/3 of a,b,c"), ("c", "c 2/3 of a,b,c")]
    assert "branches" not in output
    assert parent.results["empty"].output == {"results": [], "total": 0, "succeeded": 0,
                                              "failed": 0, "status": "completed"}
    assert parent.results["after"].output == "b 1/3 of a,b,c / 0"


def test_the_concurrency_cap_holds_and_is_reached(runtime, work):
    parent_id = runtime.engine.run(parse_workflow("""
name: capped
steps:
  - name: many
    type: parallel
    foreach: [1, 2, 3, 4, 5, 6, 7]
    concurrency: {max: 3}
    steps:
      - name: one
        type: console
        with: {message: "{{ foreach.item }}"}
"""))
    work()
    assert runtime.engine.get(parent_id).status is ExecutionStatus.COMPLETED
    running, most = set(), 0
    for event in trail(runtime, parent_id):
        if event["type"] == "child.started":
            running.add(event["branch"])
        elif event["type"] == "child.finished":
            running.discard(event["branch"])
        most = max(most, len(running))
    assert most == 3
    assert not running


def test_fail_fast_skips_unstarted_branches_and_fails_with_readable_results(runtime, work):
    parent_id = runtime.engine.run(parse_workflow("""
name: fragile
settings:
  on-failure:
    fallback:
      - name: tell
        type: console
        with: {message: "{{ steps.fan.output.failed }} failed, {{ steps.fan.output.results[4].status }}"}
steps:
  - name: fan
    type: parallel
    foreach: [bad, ok, x, y, z]
    concurrency: 2
    steps:
      - name: maybe
        type: workflow.fail
        if: "foreach.item : bad"
        with: {message: "item {{ foreach.item }} is bad"}
"""))
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.FAILED
    fan = parent.results["fan"]
    assert fan.status is StepStatus.FAILED
    assert fan.error == "1 of 5 branches of step 'fan' failed"
    statuses = [r["status"] for r in fan.output["results"]]
    assert statuses == ["failed", "completed", "skipped", "skipped", "skipped"]
    assert all(set(r) == {"index", "key", "status"} for r in fan.output["results"][2:])
    assert parent.results["tell"].output == "1 failed, skipped"
    started = [e["branch"] for e in trail(runtime, parent_id) if e["type"] == "child.started"]
    assert started == [0, 1]  # nothing started after the failure was seen


def test_a_branch_past_its_branch_timeout_is_timed_out_and_stopped(runtime, worker_process):
    worker_process()
    parent_id = runtime.engine.run(parse_workflow("""
name: slowpoke
steps:
  - name: fan
    type: parallel
    mode: settled
    branch-timeout: 1s
    branches:
      - name: slow
        steps:
          - name: nap
            type: wait
            with: {duration: 1h}
      - name: quick
        steps:
          - name: hi
            type: console
            with: {message: hi}
"""))
    wait_until(lambda: runtime.engine.get(parent_id).status.is_terminal, timeout=30,
               message="the parallel step to give up on its slow branch")
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.COMPLETED
    results = parent.results["fan"].output["results"]
    assert [(r["key"], r["status"]) for r in results] == [("slow", "timed_out"),
                                                          ("quick", "completed")]
    assert parent.results["fan"].output["failed"] == 1
    # The slow branch was told to stop: its execution timed out, its wait never fired.
    slow = next(e["child"] for e in trail(runtime, parent_id)
                if e["type"] == "child.started" and e["key"] == "slow")
    child = runtime.engine.get(slow)
    assert child.status is ExecutionStatus.TIMED_OUT
    assert child.error == "its parallel branch timed out"


def test_count_waiting_false_frees_the_slot_of_a_branch_parked_on_a_timer(runtime,
                                                                           worker_process):
    worker_process()
    parent_id = runtime.engine.run(parse_workflow("""
name: sleepy
steps:
  - name: fan
    type: parallel
    foreach: [a, b]
    concurrency: {max: 1, count-waiting: false}
    steps:
      - name: nap
        type: wait
        with: {duration: 2s}
"""))
    wait_until(lambda: runtime.engine.get(parent_id).status.is_terminal, timeout=30,
               message="both branches to finish")
    assert runtime.engine.get(parent_id).status is ExecutionStatus.COMPLETED
    order = [(e["type"], e["branch"]) for e in trail(runtime, parent_id)
             if e["type"] in ("child.started", "child.finished")]
    # The second branch started while the first was still asleep.
    assert order.index(("child.started", 1)) < order.index(("child.finished", 0))


@pytest.fixture
def target():
    t = Target()
    yield t
    t.close()


def test_a_worker_killed_mid_branch_is_recovered(runtime, worker_process, target):
    target.stall.add("/b")
    env = {"SIGNOFF_LEASE_SECONDS": "2", "SIGNOFF_SWEEP_SECONDS": "1"}
    first = worker_process(extra_env=env)
    parent_id = runtime.engine.run(parse_workflow(f"""
name: sturdy
steps:
  - name: fan
    type: parallel
    foreach: [a, b]
    steps:
      - name: call
        type: http
        with: {{method: POST, url: "{target.url}/{{{{ foreach.item }}}}"}}
  - name: after
    type: console
    with: {{message: "{{{{ steps.fan.output.results[1].output.data.path }}}}"}}
"""))
    wait_until(lambda: target.hits.get("/b"), timeout=20, message="branch b's call to start")
    first.kill()
    target.release.set()
    worker_process(extra_env=env)
    wait_until(lambda: runtime.engine.get(parent_id).status.is_terminal, timeout=40,
               message="the run to complete on the new worker")
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.COMPLETED, parent.error
    assert parent.results["after"].output == "/b"
    assert target.hits["/a"] == 1 and target.hits["/b"] == 2  # the interrupted call, again
    for event in trail(runtime, parent_id):
        if event["type"] == "child.started":
            assert runtime.engine.verify_audit(event["child"]).ok


# -- what signoff validate refuses ------------------------------------------------------------

def problems_of(text: str) -> list[str]:
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(text, "p.yaml")
    return [str(problem) for problem in caught.value.problems]


def test_branch_bodies_are_straight_lines_checked_at_load():
    found = problems_of("""
name: busy
steps:
  - name: fan
    type: parallel
    branches:
      - name: one
        steps:
          - name: branchy
            type: if
            condition: "true"
            steps:
              - {name: inner, type: console, with: {message: x}}
          - name: ask
            type: waitForApproval
            with: {message: "go"}
      - name: two
        steps:
          - name: guarded
            type: console
            timeout: 5s
            on-failure: {continue: true}
            with: {message: y}
""")
    assert found[0].startswith("p.yaml:10:19: steps[0].branches[0].steps[0].type: 'if': "
                               "nested flow control cannot run in a parallel branch")
    assert found[1].startswith("p.yaml:15:19: steps[0].branches[0].steps[1].type: "
                               "'waitForApproval': a human step cannot run")
    assert found[2].startswith("p.yaml:21:13: steps[0].branches[1].steps[0].timeout: a step in "
                               "a parallel branch cannot have a timeout")
    assert found[3].startswith("p.yaml:22:13: steps[0].branches[1].steps[0].on-failure: a step "
                               "in a parallel branch cannot have on-failure")
    assert len(found) == 4


def test_the_parallel_step_itself_is_checked_at_load():
    found = problems_of("""
name: shapeless
steps:
  - name: both
    type: parallel
    foreach: [1]
    steps: [{name: a, type: console, with: {message: a}}]
    branches:
      - {name: x, steps: [{name: b, type: console, with: {message: b}}]}
      - {name: x, steps: [{name: c, type: console, with: {message: c}}]}
  - name: lonely
    type: parallel
    if: "true"
    concurrency: 21
    mode: eventually
    branches:
      - {name: only, steps: [{name: d, type: console, with: {message: d}}]}
""")
    text = "\n".join(found)
    assert "p.yaml:6:5: steps[0].foreach: a parallel step takes either `branches` or `foreach`" \
           " with `steps`, not both" in text
    assert "p.yaml:10:16: steps[0].branches[1].name: branch name 'x' is already used" in text
    assert "p.yaml:13:5: steps[1].if: a parallel step does not take `if`" in text
    assert "p.yaml:14:18: steps[1].concurrency: 21 is greater than the maximum of 20" in text
    assert "p.yaml:15:11: steps[1].mode must be one of 'fail-fast', 'settled', not " \
           "'eventually'" in text
    assert "p.yaml:17:7: steps[1].branches: a parallel step needs at least 2 branches" in text


# -- the decisions, without Redis -------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_next_moves_respects_max_and_stops_starting_after_a_failure():
    moves = next_moves(5, Settings(max=2), {}, {}, T0, T0)
    assert (moves.start, moves.done) == ((0, 1), False)
    started = {0: T0, 1: T0}
    moves = next_moves(5, Settings(max=2), started, {0: Finished("completed")}, T0, T0)
    assert moves.start == (2,)
    moves = next_moves(5, Settings(max=2), started, {0: Finished("failed")}, T0, T0)
    assert (moves.start, moves.done) == ((), False)  # branch 1 still runs
    settled = next_moves(5, Settings(max=2, fail_fast=False), started,
                         {0: Finished("failed")}, T0, T0)
    assert settled.start == (2,)


def test_next_moves_times_out_branches_and_the_whole_step():
    settings = Settings(max=5, branch_timeout=timedelta(seconds=10),
                        timeout=timedelta(seconds=30))
    moves = next_moves(2, settings, {0: T0, 1: T0 + timedelta(seconds=5)}, {}, T0,
                       T0 + timedelta(seconds=11))
    assert moves.timed_out == (0,)
    assert moves.wake_at == T0 + timedelta(seconds=15)  # branch 1's deadline
    over = next_moves(3, settings, {0: T0}, {}, T0, T0 + timedelta(seconds=31))
    assert (over.timed_out, over.start, over.done) == ((0,), (), True)


def test_aggregate_counts_timeouts_as_failures():
    output = aggregate(["a", "b"], ["a", "b"], {0: T0, 1: T0},
                       {0: Finished("timed_out", error="branch timed out",
                                    finished_at=T0 + timedelta(seconds=2)),
                        1: Finished("completed", output=1, finished_at=T0)})
    assert (output["failed"], output["succeeded"], output["status"]) == (1, 1, "failed")
    assert output["results"][0]["durationMs"] == 2000
    assert output["branches"]["a"]["error"] == {"message": "branch timed out"}


def test_cancelling_the_parent_cancels_its_running_branches(runtime, work):
    from engine.notify import Actor

    parent_id = runtime.engine.run(parse_workflow("""
name: long-fan
steps:
  - name: fan
    type: parallel
    foreach: [a, b, c]
    concurrency: 2
    steps:
      - name: nap
        type: wait
        with: {duration: 1h}
"""))
    work()
    assert runtime.engine.get(parent_id).status is ExecutionStatus.WAITING
    started = [e["child"] for e in trail(runtime, parent_id) if e["type"] == "child.started"]
    assert len(started) == 2  # the cap: the third is not started
    runtime.engine.cancel(parent_id, Actor(id="U9", name="ops", source="api"))
    work()
    assert [runtime.engine.get(child).status for child in started] == [
        ExecutionStatus.CANCELLED, ExecutionStatus.CANCELLED]
    assert runtime.engine.get(parent_id).status is ExecutionStatus.CANCELLED


def test_merge_is_not_a_step_type_here_as_kibanas_engine_does_not_run_it():
    found = problems_of("""
name: merging
steps:
  - name: join
    type: merge
    sources: [a, b]
    steps: [{name: after, type: console, with: {message: x}}]
""")
    assert found[0].startswith("p.yaml:5:11: unknown step type 'merge' in step 'join'")


def test_a_parallel_step_inside_a_foreach_fans_out_once_per_item(runtime, work):
    parent_id = runtime.engine.run(parse_workflow("""
name: nested
steps:
  - name: per_host
    type: foreach
    foreach: [h1, h2]
    steps:
      - name: checks
        type: parallel
        branches:
          - name: ping
            steps:
              - name: do_ping
                type: console
                with: {message: "ping {{ foreach.item }}"}
          - name: scan
            steps:
              - name: do_scan
                type: console
                with: {message: "scan {{ foreach.item }}"}
"""))
    work()
    parent = runtime.engine.get(parent_id)
    assert parent.status is ExecutionStatus.COMPLETED, parent.error
    for index, host in enumerate(["h1", "h2"]):
        output = parent.results[f"per_host[{index}].checks"].output
        assert [r["output"] for r in output["results"]] == [f"ping {host}", f"scan {host}"]
