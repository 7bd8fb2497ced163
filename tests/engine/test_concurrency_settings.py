"""settings.concurrency enforced: each strategy, the key grouping runs, a slot given back on
every way a run ends, FIFO queues and their ttl, a race for the last slots, and slots left
behind by a dead worker; over real HTTP, with real RQ jobs and a real Redis."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from engine.notify import Actor
from engine.state import keys
from engine.state.execution import ExecutionStatus, iso, utcnow
from engine.state.store import Change

ALICE = Actor(id="U0ALICE", name="alice", source="api")


def gated(strategy: str, *, max_runs: int = 1, extra: str = "", timeout: str = "") -> str:
    """A run that holds its slot while it waits for a reviewer, then ends as told."""
    settings = f"\n  timeout: {timeout}" if timeout else ""
    return f"""
name: isolate
settings:{settings}
  concurrency:
    key: "{{{{ event.host.name }}}}"
    strategy: {strategy}
    max: {max_runs}{extra}
steps:
  - name: review
    type: waitForInput
    with:
      message: "Isolate {{{{ event.host.name }}}}?"
      schema:
        type: object
        properties:
          approved: {{type: boolean}}
        required: [approved]
  - name: refuse
    type: workflow.fail
    if: "steps.review.output.approved : false"
    with: {{message: "refused"}}
"""


@pytest.fixture
def api_for(runtime, served, workflow_file, settings):
    clients = []

    def make(text: str):
        workflow_file(text, "isolate.yaml")
        app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                        api_token="test-token", workers_seen=lambda: 0)
        client = served(app).client(headers={"Authorization": "Bearer test-token"})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def run(api, host: str = "web-1"):
    return api.post("/api/workflows/isolate/run", json={"host": {"name": host}})


def status(api, execution_id: str) -> str:
    return api.get(f"/api/workflowExecutions/{execution_id}").json()["status"]


def audit_types(api, execution_id: str) -> list[str]:
    body = api.get(f"/api/workflowExecutions/{execution_id}/audit").json()
    assert body["verified"], body["problem"]
    return [entry["type"] for entry in body["events"]]


def audit_of(api, execution_id: str, kind: str) -> dict:
    body = api.get(f"/api/workflowExecutions/{execution_id}/audit").json()
    return next(entry for entry in body["events"] if entry["type"] == kind)


def decide(api, execution_id: str, approved: bool) -> None:
    answer = api.post(f"/api/workflowExecutions/{execution_id}/resume",
                      json={"approved": approved}, headers={"X-Signoff-Actor": "U0ALICE"})
    assert answer.status_code == 200, answer.text


def slots_of(redis_client, group: str) -> set[str]:
    key = keys.concurrency_slots(keys.concurrency_group_id(group))
    return {member.decode() for member in redis_client.zrange(key, 0, -1)}


# -- drop ------------------------------------------------------------------------------------


def test_drop_skips_a_second_run_of_the_same_host_and_says_why(api_for, work):
    api = api_for(gated("drop"))
    first = run(api)
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "PENDING"
    assert first.json()["concurrencyGroup"] == "web-1"
    work()

    second = run(api)
    assert second.status_code == 409, second.text
    body = second.json()
    assert body["error"] == "run_dropped"
    assert body["status"] == "SKIPPED" and body["concurrencyGroup"] == "web-1"
    assert "max of 1" in body["reason"] and "drop" in body["reason"]

    record = api.get(f"/api/workflowExecutions/{body['executionId']}").json()
    assert record["status"] == "SKIPPED"
    assert record["error"] == body["reason"] and record["finishedAt"]
    skipped = audit_of(api, body["executionId"], "execution.skipped")
    assert skipped["group"] == "web-1" and skipped["actor"]["id"] == "system:concurrency"
    assert status(api, first.json()["executionId"]) == "WAITING_FOR_INPUT"
    listed = api.get("/api/workflowExecutions?status=SKIPPED").json()
    assert [row["id"] for row in listed["results"]] == [body["executionId"]]


def test_the_key_template_groups_runs_by_host(api_for, work, redis_client):
    api = api_for(gated("drop"))
    web1 = run(api, "web-1")
    web2 = run(api, "web-2")
    assert (web1.status_code, web2.status_code) == (201, 201)
    assert run(api, "web-2").status_code == 409
    assert slots_of(redis_client, "web-1") == {web1.json()["executionId"]}
    assert slots_of(redis_client, "web-2") == {web2.json()["executionId"]}


def test_without_a_strategy_or_with_an_empty_key_nothing_is_limited(api_for, work):
    # Kibana's ConcurrencyManager: no strategy means no collision handling, and a key that
    # renders empty means no group.
    api = api_for(gated("drop").replace("    strategy: drop\n", ""))
    assert [run(api).status_code for _ in range(3)] == [201, 201, 201]
    api = api_for(gated("drop"))
    empty = [api.post("/api/workflows/isolate/run", json={}).status_code for _ in range(3)]
    assert empty == [201, 201, 201]


def test_a_key_that_does_not_render_is_a_literal_group(api_for, work):
    api = api_for(gated("drop").replace('"{{ event.host.name }}"', '"{{ event.host | nope }}"'))
    first = run(api, "a")
    assert first.status_code == 201 and first.json()["concurrencyGroup"] == \
        "{{ event.host | nope }}"
    assert run(api, "b").status_code == 409


# -- a slot is given back however the run ends ----------------------------------------------


def end_completed(api, runtime, work, execution_id):
    decide(api, execution_id, True)
    work()  # a worker's runner ends it


def end_failed(api, runtime, work, execution_id):
    decide(api, execution_id, False)
    work()  # the workflow.fail step ends it FAILED


# No worker runs after these: a worker's sweep would also find the slot (see below).
def end_cancelled(api, runtime, work, execution_id):
    assert api.post(f"/api/workflowExecutions/{execution_id}/cancel",
                    json={"reason": "no"}).status_code == 200


def end_timed_out(api, runtime, work, execution_id):
    assert runtime.engine.expire(execution_id)  # what the settings.timeout timer job runs


@pytest.mark.parametrize("end, final", [
    (end_completed, "COMPLETED"), (end_failed, "FAILED"), (end_cancelled, "CANCELLED"),
    (end_timed_out, "TIMED_OUT")])
def test_a_slot_is_given_back_however_the_run_ends(api_for, work, runtime, redis_client,
                                                   end, final):
    api = api_for(gated("drop", timeout="1h"))
    holder = run(api).json()["executionId"]
    work()
    assert run(api).status_code == 409

    end(api, runtime, work, holder)
    assert status(api, holder) == final
    assert slots_of(redis_client, "web-1") == set()
    after = run(api)
    assert after.status_code == 201, after.text


def test_a_queued_run_starts_when_a_run_ended_by_a_worker_gives_its_slot_back(
        api_for, work, runtime):
    api = api_for(gated("queue"))
    first = run(api).json()["executionId"]
    second = run(api)
    assert second.status_code == 202 and second.json()["status"] == "QUEUED"
    assert second.json()["position"] == 1
    second_id = second.json()["executionId"]
    work()
    assert status(api, second_id) == "QUEUED"

    decide(api, first, True)
    work()  # the worker's runner ends the first run and starts the queued one
    assert status(api, first) == "COMPLETED"
    assert status(api, second_id) == "WAITING_FOR_INPUT"
    dequeued = audit_of(api, second_id, "execution.dequeued")
    assert dequeued["freedBy"] == first and dequeued["group"] == "web-1"
    assert audit_types(api, second_id)[:3] == ["execution.created", "execution.queued",
                                               "execution.dequeued"]


# -- queue -----------------------------------------------------------------------------------


def test_the_queue_is_first_in_first_out(api_for, work):
    api = api_for(gated("queue"))
    first = run(api).json()["executionId"]
    queued = [run(api).json() for _ in range(3)]
    assert [q["position"] for q in queued] == [1, 2, 3]
    ids = [q["executionId"] for q in queued]
    work()
    order = []
    holder = first
    for _ in ids:
        decide(api, holder, True)
        work()
        started = [i for i in ids if status(api, i) == "WAITING_FOR_INPUT"]
        assert len(started) == 1
        holder = started[0]
        order.append(holder)
    assert order == ids


def test_a_full_queue_skips_new_runs_with_429(api_for, work):
    api = api_for(gated("queue", extra="\n    queue-size: 1"))
    run(api)
    assert run(api).status_code == 202
    full = run(api)
    assert full.status_code == 429, full.text
    assert full.json()["error"] == "queue_full"
    assert "queue-size: 1" in full.json()["reason"]
    assert status(api, full.json()["executionId"]) == "SKIPPED"


def test_a_cancelled_queued_run_leaves_the_queue(api_for, work):
    api = api_for(gated("queue"))
    first = run(api).json()["executionId"]
    second = run(api).json()["executionId"]
    third = run(api).json()["executionId"]
    work()
    assert api.post(f"/api/workflowExecutions/{second}/cancel", json={}).status_code == 200
    decide(api, first, True)
    work()
    assert status(api, second) == "CANCELLED"
    assert status(api, third) == "WAITING_FOR_INPUT"


def test_a_queued_run_past_its_queue_ttl_is_skipped_when_its_turn_comes(api_for, work,
                                                                       runtime):
    api = api_for(gated("queue", max_runs=1, extra="\n    queue-ttl: 1h"))
    first = run(api).json()["executionId"]
    stale = run(api).json()["executionId"]
    work()
    later = utcnow() + timedelta(hours=2)
    runtime.engine.clock = lambda: later  # two hours on, the first run is cancelled
    runtime.engine.cancel(first, ALICE, "done")
    record = api.get(f"/api/workflowExecutions/{stale}").json()
    assert record["status"] == "SKIPPED"
    assert "queue-ttl (1h)" in record["error"]
    fresh = run(api)
    assert fresh.status_code == 201, fresh.text


def test_the_sweep_skips_a_queued_run_past_its_ttl_even_while_the_holder_goes_on(
        api_for, work, runtime):
    api = api_for(gated("queue", extra="\n    queue-ttl: 1h"))
    holder = run(api).json()["executionId"]
    stale = run(api).json()["executionId"]
    later = utcnow() + timedelta(hours=2)
    runtime.engine.clock = lambda: later
    runtime.engine.recover_stalled()  # the workers' sweep
    assert status(api, stale) == "SKIPPED"
    assert status(api, holder) == "PENDING"


# -- cancel-in-progress ----------------------------------------------------------------------


def test_cancel_in_progress_cancels_the_oldest_and_names_the_newcomer(api_for, work, runtime):
    api = api_for(gated("cancel-in-progress", max_runs=2))
    oldest = run(api).json()["executionId"]
    middle = run(api).json()["executionId"]
    work()
    newest = run(api)
    assert newest.status_code == 201, newest.text
    newest_id = newest.json()["executionId"]
    work()
    assert status(api, oldest) == "CANCELLED"
    assert status(api, middle) == "WAITING_FOR_INPUT"
    assert status(api, newest_id) == "WAITING_FOR_INPUT"
    cancelled = audit_of(api, oldest, "execution.cancelled")
    assert newest_id in cancelled["reason"]
    assert cancelled["actor"]["id"] == "system:concurrency"
    assert runtime.engine.concurrency.slots.displaced() == {}  # nothing left for the sweep


def test_runs_displaced_by_a_process_that_died_before_cancelling_them_are_cancelled(
        api_for, work, runtime):
    api = api_for(gated("cancel-in-progress"))
    holder = run(api).json()["executionId"]
    work()
    # A process took the holder's slot for a new run, then died before cancelling it.
    now_ms = int(utcnow().timestamp() * 1000)
    taken = runtime.engine.concurrency.slots.admit(
        "web-1", "newcomer", strategy="cancel-in-progress", max_runs=1, queue_size=100,
        queue_ttl_ms=1000, now_ms=now_ms)
    assert taken.displaced == (holder,)
    assert status(api, holder) == "WAITING_FOR_INPUT"

    runtime.engine.recover_stalled()  # the workers' sweep
    assert status(api, holder) == "CANCELLED"
    assert "run newcomer took its slot" in audit_of(api, holder, "execution.cancelled")["reason"]
    assert runtime.engine.concurrency.slots.displaced() == {}


# -- races and crashes -----------------------------------------------------------------------


def test_concurrent_starts_never_take_more_than_max_slots(api_for, work, redis_client):
    api = api_for(gated("drop", max_runs=3))
    codes: list[int] = []
    barrier = threading.Barrier(16)

    def start() -> None:
        barrier.wait()
        codes.append(run(api).status_code)

    threads = [threading.Thread(target=start) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [201] * 3 + [409] * 13
    assert len(slots_of(redis_client, "web-1")) == 3
    running = api.get("/api/workflowExecutions?status=PENDING").json()["total"]
    assert running == 3


def test_engine_starts_racing_in_threads_for_one_slot(runtime, workflow_file, redis_client):
    from engine.definition.loader import load_workflow

    workflow = load_workflow(workflow_file(gated("drop"), "isolate.yaml"))
    results: list[ExecutionStatus] = []
    barrier = threading.Barrier(24)

    def start() -> None:
        barrier.wait()
        results.append(runtime.engine.start(workflow, {"host": {"name": "db-1"}}).status)

    threads = [threading.Thread(target=start) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(ExecutionStatus.PENDING) == 1
    assert results.count(ExecutionStatus.SKIPPED) == 23


def test_a_burst_of_queued_runs_all_complete_in_arrival_order(runtime, work, redis_client):
    from engine.definition.loader import parse_workflow

    workflow = parse_workflow("""
name: burst
settings:
  concurrency: {key: "{{ event.host }}", strategy: queue, max: 3}
steps:
  - name: note
    type: console
    with: {message: "{{ event.n }}"}
""")
    started: list = []
    barrier = threading.Barrier(12)

    def start(n: int) -> None:
        barrier.wait()
        started.append(runtime.engine.start(workflow, {"host": "h", "n": n}))

    threads = [threading.Thread(target=start, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(s.status is ExecutionStatus.PENDING for s in started) == 3
    queued = sorted((s for s in started if s.status is ExecutionStatus.QUEUED),
                    key=lambda s: s.position)
    assert [s.position for s in queued] == list(range(1, 10))
    work()
    assert {runtime.engine.get(s.execution_id).status for s in started} == \
        {ExecutionStatus.COMPLETED}
    dequeued_at = [runtime.engine.audit_entries(s.execution_id)[2].event for s in queued]
    assert [event["type"] for event in dequeued_at] == ["execution.dequeued"] * 9
    assert [event["at"] for event in dequeued_at] == sorted(event["at"] for event in dequeued_at)
    assert slots_of(redis_client, "h") == set()
    assert redis_client.hlen(keys.CONCURRENCY_GROUPS) == 0


def test_a_slot_left_by_a_worker_that_died_after_ending_its_run_is_given_back(
        api_for, work, runtime, redis_client):
    api = api_for(gated("queue"))
    holder = run(api).json()["executionId"]
    waiting = run(api).json()["executionId"]
    work()
    # The worker committed the end, then died before giving the slot back.
    state = runtime.store.load(holder)
    assert runtime.store.commit(state, Change(status=ExecutionStatus.FAILED,
                                              set={"t1": iso(utcnow()) or ""})).ok
    assert slots_of(redis_client, "web-1") == {holder}

    runtime.engine.recover_stalled()  # the workers' sweep
    work()
    assert slots_of(redis_client, "web-1") == {waiting}
    assert status(api, waiting) == "WAITING_FOR_INPUT"


def test_a_slot_taken_by_a_run_never_written_is_given_back_after_a_lease(
        runtime, workflow_file, redis_client):
    # A process that died between taking the slot and writing the run.
    from engine.definition.loader import load_workflow

    workflow = load_workflow(workflow_file(gated("drop"), "isolate.yaml"))
    long_ago = int((utcnow() - timedelta(minutes=5)).timestamp() * 1000)
    runtime.engine.concurrency.slots.admit("db-9", "ghost", strategy="drop", max_runs=1,
                                           queue_size=100, queue_ttl_ms=1000, now_ms=long_ago)
    assert runtime.engine.start(workflow, {"host": {"name": "db-9"}}).status is \
        ExecutionStatus.SKIPPED
    runtime.engine.recover_stalled()
    assert slots_of(redis_client, "db-9") == set()
    assert runtime.engine.start(workflow, {"host": {"name": "db-9"}}).status is \
        ExecutionStatus.PENDING


def test_a_queued_run_handed_a_slot_by_a_dying_process_is_started_by_the_sweep(
        api_for, work, runtime, redis_client):
    api = api_for(gated("queue"))
    holder = run(api).json()["executionId"]
    waiting = run(api).json()["executionId"]
    work()
    # The process ending the holder gave the slot on to the queue, then died before
    # starting the queued run: the script put it in the running index, lease already lapsed.
    group_id = keys.concurrency_group_id("web-1")
    state = runtime.store.load(holder)
    assert runtime.store.commit(state, Change(status=ExecutionStatus.COMPLETED)).ok
    now_ms = int(utcnow().timestamp() * 1000)
    handed = runtime.engine.concurrency.slots.release(group_id, holder, now_ms=now_ms,
                                                      deadline_ms=now_ms - 1)
    assert handed.promoted == (waiting,)
    assert status(api, waiting) == "QUEUED"

    runtime.engine.recover_stalled()
    work()
    assert status(api, waiting) == "WAITING_FOR_INPUT"


# -- the CLI ---------------------------------------------------------------------------------


def test_signoff_run_says_queued_on_stderr_and_exits_1_when_skipped(tmp_path, redis_client,
                                                                   redis_url):
    from tests.engine.test_cli import signoff

    path = tmp_path / "isolate.yaml"
    path.write_text(gated("queue", extra="\n    queue-size: 1"))
    event = '{"host": {"name": "web-7"}}'
    first = signoff(redis_url, "run", str(path), "--event", event)
    assert first.returncode == 0 and first.stderr == ""
    queued = signoff(redis_url, "run", str(path), "--event", event)
    assert queued.returncode == 0, queued.stderr
    queued_id = queued.stdout.strip()
    assert f"{queued_id} is queued (position 1)" in queued.stderr and "'web-7'" in queued.stderr
    skipped = signoff(redis_url, "run", str(path), "--event", event)
    assert skipped.returncode == 1
    assert "skipped" in skipped.stderr and "queue-size: 1" in skipped.stderr
    status = signoff(redis_url, "status", queued_id)
    assert '"status": "QUEUED"' in status.stdout
    other = '{"host": {"name": "web-8"}}'
    assert signoff(redis_url, "run", str(path), "--event", other).returncode == 0
    waited = signoff(redis_url, "run", str(path), "--event", other, "--wait", "--timeout", "0.1")
    assert waited.returncode == 1
    assert "still queued" in waited.stderr and "no free slot" in waited.stderr


# -- a worker process killed mid-run ---------------------------------------------------------


def test_a_worker_killed_mid_run_leaks_no_slot(runtime, worker_process):
    # The holder's worker dies inside an http step; a new worker's sweep takes the run
    # over, it ends there, and its slot goes to the run queued behind it.
    from engine.definition.loader import parse_workflow
    from tests.engine.test_durability import Target, http_chain
    from tests.support.services import wait_until

    target = Target()
    try:
        target.stall.add("/three")
        workflow = parse_workflow(http_chain(target.url).replace("name: chain\n", """name: chain
settings:
  concurrency: {key: "{{ event.host }}", strategy: queue, max: 1}
"""))
        env = {"SIGNOFF_LEASE_SECONDS": "2", "SIGNOFF_SWEEP_SECONDS": "1"}
        first = worker_process(extra_env=env)
        holder = runtime.engine.start(workflow, {"host": "h"})
        queued = runtime.engine.start(workflow, {"host": "h"})
        assert (holder.status, queued.status) == (ExecutionStatus.PENDING,
                                                  ExecutionStatus.QUEUED)
        wait_until(lambda: target.hits.get("/three"), timeout=20, message="step three to start")
        first.kill()
        target.stall.discard("/three")
        target.release.set()
        assert runtime.engine.get(holder.execution_id).status is ExecutionStatus.RUNNING

        worker_process(extra_env=env)
        wait_until(lambda: runtime.engine.get(queued.execution_id).status
                   is ExecutionStatus.COMPLETED, timeout=30,
                   message="the queued run to complete after the recovered one")
        assert runtime.engine.get(holder.execution_id).status is ExecutionStatus.COMPLETED
        # A run gives its slot back just after its end is committed: a loaded machine can
        # show the end first; a leaked slot never goes.
        wait_until(lambda: slots_of(runtime.store.redis, "h") == set(), timeout=10,
                   message="the slots to be given back")
    finally:
        target.close()
