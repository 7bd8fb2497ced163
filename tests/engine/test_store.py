"""The store on a real Redis: the commit script's keys, and Redis errors as StoreUnavailable."""

from __future__ import annotations

import math
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.client import Monitor
from redis.retry import Retry

from engine.errors import StoreUnavailable
from engine.state import keys
from engine.state.embedded_redis import free_port
from engine.state.execution import ExecutionState, ExecutionStatus, Waiting
from engine.state.store import Change, Store
from engine.worker.scheduler import rq_inbox

STARTED_AT = "2024-05-01T12:00:00+00:00"
STARTED_MS = 1714564800000


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client)


def new_execution(store: Store, status: ExecutionStatus = ExecutionStatus.RUNNING
                  ) -> ExecutionState:
    state = ExecutionState(id=uuid.uuid4().hex, workflow="isolate", digest="d1",
                           status=status, started_at=STARTED_AT, event={}, audit_head="")
    store.create(state, "name: isolate\n", [{"type": "execution.started"}])
    return state


def members(r: redis.Redis, key: str) -> dict[str, float]:
    return {m.decode(): s for m, s in r.zrange(key, 0, -1, withscores=True)}


def test_commit_moves_the_status_indexes_and_writes_each_entry_to_its_own_index(store, redis_client):
    state = new_execution(store)
    redis_client.zadd("signoff:idx:approver:U0OLD", {state.id: 1})
    result = store.commit(state, Change(
        status=ExecutionStatus.WAITING_FOR_INPUT, waiting="add", waiting_score=7,
        zadd=[("signoff:idx:approver:U0ALICE", 5, state.id),
              ("signoff:idx:approver:U0BOB", 6, state.id),
              (keys.INDEX_TIMERS, 9, "timer-a"), (keys.INDEX_TIMERS, 10, "timer-b")],
        zrem=[("signoff:idx:approver:U0OLD", state.id)],
        events=[{"type": "step.waiting"}]))

    assert result.ok and result.status == "WAITING_FOR_INPUT"
    assert members(redis_client, keys.index_status("RUNNING")) == {}
    # One index, not two: the status index of WAITING_FOR_INPUT is the waiting index,
    # scored by when the run started waiting.
    assert keys.index_status("WAITING_FOR_INPUT") == keys.INDEX_WAITING
    assert members(redis_client, keys.INDEX_WAITING) == {state.id: 7}
    assert STARTED_MS != 7
    assert members(redis_client, "signoff:idx:approver:U0ALICE") == {state.id: 5}
    assert members(redis_client, "signoff:idx:approver:U0BOB") == {state.id: 6}
    assert members(redis_client, keys.INDEX_TIMERS) == {"timer-a": 9, "timer-b": 10}
    assert members(redis_client, "signoff:idx:approver:U0OLD") == {}
    assert store.load(state.id).status is ExecutionStatus.WAITING_FOR_INPUT


def test_commit_touches_only_the_keys_it_is_given(store, redis_client):
    state = new_execution(store)
    token = store.acquire_lease(state.id, 60_000)
    assert token is not None
    with redis_client.monitor() as monitor:
        store.commit(state, Change(
            status=ExecutionStatus.COMPLETED, running="remove",
            set={"t1": "2024-05-01T12:01:00+00:00"}, delete=["w"],
            zadd=[(keys.stats("isolate", "review"), 1, "closed")],
            zrem=[(keys.INDEX_TIMERS, "timer-a")],
            events=[{"type": "execution.completed"}]),
            guard_status=[ExecutionStatus.RUNNING], guard_lease=token, release_lease=True)
        redis_client.echo("commit done")
        scripted = _script_commands(monitor)

    touched = {(command, args[0]) for declared, command, args in scripted
               if command != "PUBLISH"}
    undeclared = {(command, key) for declared, command, args in scripted
                  for key in args[:1] if command != "PUBLISH" and key not in declared}
    assert ("ZADD", keys.index_status("COMPLETED")) in touched
    assert ("ZADD", keys.stats("isolate", "review")) in touched
    assert ("DEL", keys.lease(state.id)) in touched
    assert undeclared == set()


def test_a_commit_guarded_by_status_names_only_the_guards_and_the_new_status_index(
        store, redis_client):
    guarded, unguarded = new_execution(store), new_execution(store, ExecutionStatus.WAITING)
    with redis_client.monitor() as monitor:
        store.commit(guarded, Change(status=ExecutionStatus.COMPLETED),
                     guard_status=[ExecutionStatus.RUNNING, ExecutionStatus.WAITING])
        store.commit(unguarded, Change(status=ExecutionStatus.FAILED))
        redis_client.echo("commit done")
        scripted = _script_commands(monitor)

    # (the waiting index, the status index of WAITING_FOR_INPUT, is always among the KEYS)
    indexes = {keys.index_status(s.value) for s in ExecutionStatus} - {keys.INDEX_WAITING}
    first, second = ({k for k in declared if k in indexes}
                     for declared in dict.fromkeys(frozenset(d) for d, _, _ in scripted))
    assert first == {keys.index_status(s) for s in ("RUNNING", "WAITING", "COMPLETED")}
    assert second == indexes  # unguarded: the status it leaves could be any
    assert members(redis_client, keys.index_status("COMPLETED")) == {guarded.id: STARTED_MS}
    assert members(redis_client, keys.index_status("FAILED")) == {unguarded.id: STARTED_MS}
    assert members(redis_client, keys.index_status("RUNNING")) == {}
    assert members(redis_client, keys.index_status("WAITING")) == {}


def test_overdue_timers_come_soonest_first_and_each_is_taken_once(store):
    scheduled = []
    for member, due in (("late", 300.0), ("first", 100.0), ("second", 200.0)):
        store.index_timer(member, due, enqueue=lambda pipe, m=member: scheduled.append(m))

    assert scheduled == ["late", "first", "second"]
    assert store.overdue_timers(250, limit=10) == ["first", "second"]
    assert store.overdue_timers(1000, limit=1) == ["first"]
    assert store.forget_timer("first") is True
    assert store.forget_timer("first") is False  # another worker took it
    assert store.overdue_timers(1000, limit=10) == ["second", "late"]


def test_inbox_queues_names_every_queue_a_task_was_handed_to(store, redis_client):
    assert store.inbox_queues() == []
    for queue in ("signoff", "slack"):
        rq_inbox(redis_client, queue).put("tests.engine.inbox_tasks.record", "x")

    assert sorted(store.inbox_queues()) == ["signoff", "slack"]


@pytest.mark.parametrize("read", [
    lambda s: s.list_executions(status="RUNNING", workflow="isolate"),
    lambda s: s.overdue_timers(0, limit=10),
    lambda s: s.forget_timer("timer"),
    lambda s: s.inbox_queues(),
    lambda s: s.index_timer("timer", 0, enqueue=lambda pipe: None),
    lambda s: s.wait_for_status("x1", lambda status: True, timeout=1),
], ids=["intersect", "overdue", "forget", "inboxes", "index-timer", "wait"])
def test_an_unreachable_redis_is_store_unavailable(read):
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5,
                         retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(StoreUnavailable):
            read(Store(client))
    finally:
        client.close()


def _script_commands(monitor: Monitor) -> list[tuple[set[str], str, list[str]]]:
    """(the KEYS given, command, arguments) of each command scripts ran, read from MONITOR
    until the ECHO that follows them."""
    found: list[tuple[set[str], str, list[str]]] = []
    declared: set[str] = set()
    while True:
        raw = monitor.connection.read_response()
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        _, data = text.split(" ", 1)
        match = monitor.monitor_re.match(data)
        assert match is not None
        _, client, command_text = match.groups()
        command, *args = [a.replace('\\"', '"') for a in monitor.command_re.findall(command_text)]
        command = command.upper()
        if command == "ECHO" and args == ["commit done"]:
            return found
        if command in ("EVALSHA", "EVAL"):
            declared = set(args[2:2 + int(args[1])])
        elif client == "lua":
            found.append((declared, command, args))


def test_an_instance_is_removed_only_where_its_score_is_still_the_one_given(store, redis_client):
    store.index_add([("idx:a", 100, "x1"), ("idx:b", 100, "x1"), ("idx:b", 50, "x2")])
    store.index_add([("idx:b", 200, "x1"), ("idx:a", 90, "x1")])  # a later instance; an older

    assert members(redis_client, "idx:a") == {"x1": 100}  # GT: the older one did not win
    assert store.index_remove_instance(["idx:a", "idx:b", "idx:none"], "x1", 100) == 1
    assert members(redis_client, "idx:a") == {}
    assert members(redis_client, "idx:b") == {"x2": 50, "x1": 200}  # the later one stays


def test_a_union_page_counts_and_pages_only_what_is_also_in_the_other_index(store, redis_client):
    store.index_add([("idx:mine", n, f"r{n}") for n in range(0, 30, 2)]
                    + [("idx:channel", n, f"r{n}") for n in range(20, 40)]
                    + [("idx:waiting", n, f"r{n}") for n in range(5, 40)])

    rows, total = store.index_union_page(["idx:mine", "idx:channel"], "idx:waiting", 0, 3,
                                         extra=[("r7", 7.0), ("r99", 99.0)])

    # r0..r4 no longer wait, r99 never did; r7 comes in through `extra`.
    assert rows == [("r6", 6.0), ("r7", 7.0), ("r8", 8.0)]
    assert total == len({6, 7, 8, 10, 12, 14, 16, 18, *range(20, 40)})
    last, count = store.index_union_page(["idx:mine", "idx:channel"], "idx:waiting",
                                         total - 2, 3)
    assert last == [("r39", 39.0)] and count == total - 1  # without r7 this time
    assert store.index_union_page([], "idx:waiting", 0, 3) == ([], 0)
    assert not list(redis_client.scan_iter(keys.scratch("*")))  # nothing left behind
    assert store.index_difference("idx:waiting", "idx:channel") == [f"r{n}" for n in range(5, 20)]


def test_all_executions_are_listed_from_the_status_indexes_newest_first(store, redis_client):
    """There is no index of every execution: a listing of all merges the status indexes."""
    states = []
    for n, status in enumerate([ExecutionStatus.RUNNING, ExecutionStatus.COMPLETED,
                                ExecutionStatus.FAILED, ExecutionStatus.RUNNING,
                                ExecutionStatus.COMPLETED]):
        state = ExecutionState(id=f"run-{n}", workflow="isolate", digest="d1", status=status,
                               started_at=f"2024-05-01T12:00:0{n}.000Z", event={},
                               audit_head="")
        store.create(state, "name: isolate\n", [{"type": "execution.started"}])
        states.append(state)
    assert not redis_client.exists("signoff:idx:all")

    page, total = store.list_executions(offset=1, limit=3)
    assert total == 5
    assert [s.id for s in page] == ["run-3", "run-2", "run-1"]
    assert [s.status for s in page] == ["RUNNING", "FAILED", "COMPLETED"]
    oldest, _ = store.list_executions(offset=0, limit=2, newest_first=False)
    assert [s.id for s in oldest] == ["run-0", "run-1"]
    last, total = store.list_executions(offset=4, limit=10)
    assert [s.id for s in last] == ["run-0"] and total == 5


def test_hashes_are_stored_as_bytes_and_those_stored_in_hex_before_still_read_and_guard(
        store, redis_client):
    from engine.state import audit

    digest = "ab" * 32
    state = ExecutionState(id="run-hex", workflow="isolate", digest=digest,
                           status=ExecutionStatus.RUNNING, started_at=STARTED_AT, event={},
                           audit_head="")
    store.create(state, "name: isolate\n", [{"type": "execution.started"}])
    stored = redis_client.hmget(keys.execution(state.id), "d", "ah")
    assert [len(v) for v in stored] == [32, 33]  # not 64 hex characters
    assert store.load(state.id).digest == digest
    assert store.load(state.id).audit_head == state.audit_head

    # As an earlier version wrote them: hex. They read the same, and a commit's guard on
    # the head still holds; the head it writes is stored as bytes again.
    redis_client.hset(keys.execution(state.id), mapping={"d": digest, "ah": state.audit_head})
    loaded = store.load(state.id)
    assert loaded.digest == digest and loaded.audit_head == state.audit_head
    assert store.commit(loaded, Change(events=[{"type": "step.started"}])).ok
    assert len(redis_client.hget(keys.execution(state.id), "ah")) == 33
    stale = ExecutionState(id=state.id, workflow="isolate", digest=digest,
                           status=ExecutionStatus.RUNNING, started_at=STARTED_AT, event={},
                           audit_head=state.audit_head)  # the head before that commit
    assert store.commit(stale, Change(events=[{"type": "step.started"}])).reason == "head"
    check = audit.verify(store.audit_entries(state.id), store.audit_head(state.id))
    assert check.ok and check.checked == 2


def test_stored_values_orjson_refuses_are_read_back_as_json_reads_them(store):
    """Records are read with orjson; what it refuses and json reads (an integer past 64
    bits, NaN, a lone surrogate written as an escape) comes back all the same."""
    event = {"bytes": 2 ** 70, "score": float("nan"), "ratio": float("-inf"), "plain": "x" * 300}
    state = ExecutionState(id=uuid.uuid4().hex, workflow="isolate", digest="d1",
                           status=ExecutionStatus.RUNNING, started_at=STARTED_AT,
                           event=event, audit_head="", variables={"note": "\\ud800 escaped"})
    store.create(state, "name: isolate\n", [{"type": "execution.started"}])
    store.redis.hset(keys.execution(state.id), "v", '{"note":"\\ud800 escaped"}')

    loaded = store.load(state.id)

    assert loaded.event["bytes"] == 2 ** 70 and loaded.event["plain"] == "x" * 300
    assert math.isnan(loaded.event["score"]) and loaded.event["ratio"] == float("-inf")
    assert loaded.variables == {"note": "\ud800 escaped"}


def _client_commands(monitor: Monitor, until: str) -> list[str]:
    """The commands clients (not scripts) sent, read from MONITOR until ECHO ``until``."""
    found = []
    while True:
        raw = monitor.connection.read_response()
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        match = monitor.monitor_re.match(text.split(" ", 1)[1])
        assert match is not None
        _, client, command_text = match.groups()
        command, *args = monitor.command_re.findall(command_text)
        if command.upper() == "ECHO" and args == [until]:
            return found
        if client != "lua" and command.upper() not in ("PING", "HELLO", "CLIENT"):
            found.append(command.upper())  # not a new connection's greeting


@pytest.mark.parametrize("expected", [0, 1, 3])
def test_a_review_page_is_read_in_one_command_whatever_the_caller_expected_on_it(
        store, redis_client, expected):
    """A person's first listing (nothing expected), a page that changed (some expected) and
    one as it was (all expected) each read the page and its executions in one command, in
    page order; an execution gone from Redis is left out."""
    waiting = [new_execution(store, ExecutionStatus.WAITING_FOR_INPUT) for _ in range(4)]
    on = Waiting(step="review", path="review", step_type="waitForInput", message="## Isolate?",
                 message_sha256="0" * 64, schema={}, since="2024-05-01T12:00:00.000Z")
    for state in waiting:
        redis_client.hset(keys.execution(state.id), "w", on.to_json())
    index = keys.index_approver("U0PAGE")
    redis_client.zadd(index, {state.id: n for n, state in enumerate(waiting)})
    redis_client.hset(keys.execution(waiting[1].id), "n:slack:review", '{"posts":[]}')
    redis_client.delete(keys.execution(waiting[2].id))  # gone; its index entry not yet
    expect = [waiting[n].id for n in (3, 1, 0)[:expected]]
    store.review_rows(index, 0, 0, [])  # Redis knows the script from now on

    with redis_client.monitor() as monitor:
        rows, total = store.review_rows(index, 0, 9, ["slack:review"], expect=expect)
        redis_client.echo("page done")
        sent = _client_commands(monitor, "page done")

    assert sent == ["EVALSHA"]
    assert total == 4
    assert [row.execution_id for row in rows] == [waiting[n].id for n in (0, 1, 3)]
    assert [(r.execution_id, r.step, r.title) for r in (row.review() for row in rows)
            if r is not None] == [(waiting[n].id, "review", "Isolate?") for n in (0, 1, 3)]
    assert [row.note("slack:review") for row in rows] == [None, {"posts": []}, None]
