"""Reviews while they wait: SLA escalation, reminders, quorum, reassignment, audience, stats."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import (
    ActorNotAllowed,
    AlreadyDecided,
    CannotEscalate,
    EscalationTargetRequired,
)
from engine.notify import Actor, ReviewChange, ReviewClosed, ReviewRequest
from engine.state.execution import ExecutionStatus, parse_iso
from tests.support.services import reviewer_answer, wait_until

CHAIN = """
name: contain
steps:
  - name: review
    type: waitForInput
    with:
      message: "Isolate {{ event.host }}?"
      approvers: ["S0SOCL1", "U0ALICE"]
      sla: {sla0}
      remind: {remind}
      escalation:
        - approvers: ["U0LEAD01", "U0BOB"]
          sla: {sla1}
        - approvers: ["S0ONCALL"]
          sla: {sla2}
      on-timeout: deny
  - name: after
    type: console
    with: {{message: "{{{{ steps.review.output.approved }}}} by {{{{ steps.review.resumedBy.id }}}}"}}
"""

ALICE = Actor(id="U0ALICE", name="alice", source="slack")
BOB = Actor(id="U0BOB", name="bob", source="slack")


class Recorder:
    """A Notifier that keeps what it is told (the engine's seam; the bot is another)."""

    def __init__(self):
        self.seen: list[object] = []

    def review_waiting(self, review: ReviewRequest) -> None:
        self.seen.append(("waiting", review))

    def review_changed(self, change: ReviewChange) -> None:
        self.seen.append((change.kind, change))

    def review_closed(self, closed: ReviewClosed) -> None:
        self.seen.append(("closed", closed))

    def kinds(self):
        return [kind for kind, _ in self.seen]


@pytest.fixture
def recorder(runtime):
    rec = Recorder()
    runtime.engine.notifier = rec
    runtime.engine.reviews.notifier = rec
    runtime.runner.notifier = rec
    return rec


def start(runtime, work, text, event=None):
    execution_id = runtime.engine.run(parse_workflow(textwrap.dedent(text)), event or {})
    work()
    return execution_id


def at(iso_text, delta=timedelta(milliseconds=1)):
    return parse_iso(iso_text) + delta


def test_sla_chain_escalates_level_by_level_then_applies_on_timeout(runtime, work, recorder):
    execution_id = start(runtime, work, CHAIN.format(sla0="15m", remind="10m", sla1="15m",
                                                     sla2="30m"), {"host": "web-1"})
    engine = runtime.engine
    waiting = engine.get(execution_id).waiting
    assert waiting.approvers == ("S0SOCL1", "U0ALICE") and waiting.level == 0
    assert parse_iso(waiting.level_due) - parse_iso(waiting.since) == timedelta(minutes=15)

    # Timers that fire early do nothing (RQ's scheduler can be a second early).
    assert engine.review_timer(execution_id, "review", 0, "sla") is False
    engine.clock = lambda: at(waiting.remind_at)
    assert engine.review_timer(execution_id, "review", 0, "remind") is True
    assert engine.review_timer(execution_id, "review", 0, "remind") is False  # only once

    engine.clock = lambda: at(waiting.level_due)
    assert engine.review_timer(execution_id, "review", 0, "sla") is True
    assert engine.review_timer(execution_id, "review", 0, "sla") is False  # fired twice
    level1 = engine.get(execution_id).waiting
    assert level1.level == 1 and level1.approvers == ("S0SOCL1", "U0ALICE", "U0LEAD01",
                                                              "U0BOB")

    engine.clock = lambda: at(level1.level_due)
    assert engine.review_timer(execution_id, "review", 1, "sla") is True
    level2 = engine.get(execution_id).waiting
    assert level2.level == 2 and level2.approvers == ("S0SOCL1", "U0ALICE", "U0LEAD01",
                                                              "U0BOB", "S0ONCALL")

    engine.clock = lambda: at(level2.level_due)
    assert engine.review_timer(execution_id, "review", 2, "sla") is True
    work()
    state = engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["after"].output == "false by system:timeout"

    assert recorder.kinds() == ["waiting", "reminder", "escalated", "escalated", "closed"]
    escalated = [c for kind, c in recorder.seen if kind == "escalated"]
    assert escalated[0].added == ("U0LEAD01", "U0BOB") and escalated[0].reason == "SLA of 15m passed"
    assert escalated[1].level == 2 and escalated[1].reason == "SLA of 15m passed"
    events = [e.event for e in engine.audit_entries(execution_id)]
    kinds = [e["type"] for e in events]
    assert kinds.count("review.escalated") == 2 and "review.reminded" in kinds
    decided = next(e for e in events if e["type"] == "step.decided")
    assert decided["actor"]["id"] == "system:timeout" and decided["level"] == 2
    assert engine.verify_audit(execution_id).ok


def test_a_decision_just_before_the_deadline_wins_and_the_timer_does_nothing(
        runtime, work, recorder):
    execution_id = start(runtime, work, CHAIN.format(sla0="1m", remind="30s", sla1="1m",
                                                     sla2="1m"))
    waiting = runtime.engine.get(execution_id).waiting
    runtime.engine.clock = lambda: at(waiting.level_due, timedelta(milliseconds=-1))
    runtime.engine.resume(execution_id, {"approved": True}, ALICE)
    runtime.engine.clock = lambda: at(waiting.level_due)
    assert runtime.engine.review_timer(execution_id, "review", 0, "sla") is False
    work()
    state = runtime.engine.get(execution_id)
    assert state.results["after"].output == "true by U0ALICE"
    assert "escalated" not in recorder.kinds()


def test_manual_escalation_with_a_reason_and_refusal_past_the_last_level(runtime, work,
                                                                         recorder):
    execution_id = start(runtime, work, CHAIN.format(sla0="1h", remind="30m", sla1="1h",
                                                     sla2="1h"))
    engine = runtime.engine
    assert engine.escalate(execution_id, ALICE, "need a lead's call") == 1
    assert engine.escalate(execution_id, ALICE, "still unsure") == 2
    # Past the last level with no SIGNOFF_ESCALATE_TO: whom to must be named.
    with pytest.raises(EscalationTargetRequired) as caught:
        engine.escalate(execution_id, ALICE, "more")
    assert "SIGNOFF_ESCALATE_TO" in str(caught.value)
    with pytest.raises(ActorNotAllowed) as chosen:  # the chosen one can decide already
        engine.escalate(execution_id, ALICE, "more", to="U0BOB")
    assert chosen.value.reason == "already_an_approver"
    assert engine.escalate(execution_id, ALICE, "the CISO's call", to="U0CISO01") == 3
    assert engine.get(execution_id).waiting.approvers[-1] == "U0CISO01"
    assert engine.review(execution_id).levels == 4
    events = [e.event for e in engine.audit_entries(execution_id)
              if e.event["type"] == "review.escalated"]
    assert [e["reason"] for e in events] == ["need a lead's call", "still unsure",
                                             "the CISO's call"]
    assert [e.get("target") for e in events] == [None, None, "chosen"]
    assert events[0]["actor"]["id"] == "U0ALICE"
    # The old level's SLA timer, firing late, must not escalate again.
    engine.clock = lambda: at(engine.get(execution_id).waiting.level_due, timedelta(hours=5))
    assert engine.review_timer(execution_id, "review", 0, "sla") is False


QUORUM = """
name: prod-change
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Deploy 4.2 to production?"
      approvers: ["U0ALICE", "U0BOB", "U0CAROL"]
      approvals-required: 2
  - name: deploy
    type: console
    if: "steps.review.output.approved : true"
    with: {message: deploying}
"""


def test_quorum_needs_distinct_approvers_and_one_deny_denies(runtime, work, recorder):
    engine = runtime.engine
    execution_id = start(runtime, work, QUORUM)
    first = engine.resume(execution_id, {"approved": True}, ALICE)
    assert not first.decided and (first.approvals, first.required) == (1, 2)
    with pytest.raises(ActorNotAllowed) as again:  # counts once
        engine.resume(execution_id, {"approved": True}, ALICE)
    assert again.value.reason == "already_voted"
    assert engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    second = engine.resume(execution_id, {"approved": True}, BOB)
    assert second.decided and second.decision.outcome == "approved"
    work()
    assert engine.get(execution_id).results["deploy"].output == "deploying"
    decided = next(e.event for e in engine.audit_entries(execution_id)
                   if e.event["type"] == "step.decided")
    assert [a["id"] for a in decided["approvals"]] == ["U0ALICE", "U0BOB"]
    assert recorder.kinds().count("approval") == 1

    denied_id = start(runtime, work, QUORUM)
    engine.resume(denied_id, {"approved": True}, ALICE)
    result = engine.resume(denied_id, {"approved": False}, BOB)
    assert result.decided and result.decision.outcome == "denied"
    with pytest.raises(AlreadyDecided):
        engine.resume(denied_id, {"approved": True}, Actor(id="U0CAROL", name="carol"))


def test_reassign_hands_the_reassigners_seat_to_someone_new(runtime, work, recorder):
    execution_id = start(runtime, work, QUORUM)
    runtime.engine.reassign(execution_id, ALICE, "U0DAVE", reason="on leave")
    waiting = runtime.engine.get(execution_id).waiting
    assert "U0DAVE" in waiting.approvers and waiting.handed == ("U0ALICE",)
    with pytest.raises(ActorNotAllowed) as refused:
        runtime.engine.resume(execution_id, {"approved": True}, ALICE)
    assert refused.value.reason == "handed_off"
    change = next(c for kind, c in recorder.seen if kind == "reassigned")
    assert change.added == ("U0DAVE",) and change.actor.id == "U0ALICE"
    event = next(e.event for e in runtime.engine.audit_entries(execution_id)
                 if e.event["type"] == "review.reassigned")
    assert event["approver"] == "U0DAVE" and event["handedOff"] == "U0ALICE"
    assert event["reason"] == "on leave"


def test_audience_index_lists_a_users_reviews_and_forgets_closed_ones(runtime, work):
    engine = runtime.engine
    ids = [start(runtime, work, QUORUM) for _ in range(3)]
    for execution_id in ids:
        assert engine.set_review_audience(execution_id, "review", ("U0ALICE", "U0BOB"))
    engine.set_review_audience(ids[2], "review", ("U0BOB",))  # alice removed from one
    mine, total = engine.pending_for("U0ALICE")
    assert total == 2 and [r.execution_id for r in mine] == ids[:2]
    engine.resume(ids[0], {"approved": False}, ALICE)
    engine.cancel(ids[1], ALICE)
    assert engine.pending_for("U0ALICE")[1] == 0
    assert engine.pending_for("U0BOB")[1] == 1
    assert engine.set_review_audience(ids[0], "review", ("U0ALICE",)) is False  # closed


def test_stats_record_outcome_time_escalations_and_breaches(runtime, work):
    engine = runtime.engine
    text = CHAIN.format(sla0="1m", remind="30s", sla1="1m", sla2="1m")
    fast = start(runtime, work, text)
    engine.resume(fast, {"approved": True}, ALICE)
    slow = start(runtime, work, text)
    waiting = engine.get(slow).waiting
    engine.clock = lambda: at(waiting.level_due)
    engine.review_timer(slow, "review", 0, "sla")
    engine.resume(slow, {"approved": False}, BOB)
    rows = engine.reviews.stats(parse_iso(waiting.since) - timedelta(hours=1))
    records = rows[("contain", "review")]
    assert [r["o"] for r in records] == ["approved", "denied"]
    assert [r["lv"] for r in records] == [0, 1] and [r["b"] for r in records] == [False, True]
    assert records[1]["ms"] >= 60_000
    assert engine.reviews.recent_outcomes("contain", "review", 50) == ["denied", "approved"]


def test_real_timers_escalate_through_a_worker_process(runtime, worker_process, recorder):
    worker_process()
    execution_id = runtime.engine.run(parse_workflow(CHAIN.format(
        sla0="1s", remind="500ms", sla1="1s", sla2="1s")), {"host": "db-2"})
    wait_until(lambda: runtime.engine.get(execution_id).status is ExecutionStatus.COMPLETED,
               timeout=30, message="the chain to run out and on-timeout to deny")
    events = [e.event for e in runtime.engine.audit_entries(execution_id)]
    escalations = [e for e in events if e["type"] == "review.escalated"]
    assert [e["toLevel"] for e in escalations] == [1, 2]
    # Each level moved on no earlier than the deadline set when it began.
    waiting_event = next(e for e in events if e["type"] == "step.waiting_for_input")
    assert escalations[0]["at"] >= waiting_event["slaDueAt"]
    assert escalations[1]["at"] >= escalations[0]["slaDueAt"]
    decided = next(e for e in events if e["type"] == "step.decided")
    assert decided["at"] >= escalations[1]["slaDueAt"]
    assert reviewer_answer(runtime.engine.get(execution_id).results["review"].output) == {"approved": False}


def test_a_timer_due_while_its_worker_was_killed_is_acted_on_by_a_new_worker(
        runtime, worker_process, recorder):
    env = {"SIGNOFF_SWEEP_SECONDS": "1"}
    first = worker_process(extra_env=env)
    execution_id = runtime.engine.run(parse_workflow(CHAIN.format(
        sla0="4s", remind="1h", sla1="1h", sla2="1h")), {"host": "db-3"})
    wait_until(lambda: runtime.engine.get(execution_id).status
               is ExecutionStatus.WAITING_FOR_INPUT, timeout=20, message="the review to wait")
    first.kill()
    # A killed worker's scheduler lock holds other schedulers off for about a minute; hold
    # it here too, so the test does not depend on whether the dead one had taken it yet.
    runtime.store.redis.set(f"rq:scheduler-lock:{runtime.settings.queue}", "killed-worker",
                            ex=60)
    due = parse_iso(runtime.engine.get(execution_id).waiting.level_due)
    wait_until(lambda: datetime.now(UTC) > due, timeout=10, message="the SLA to pass")
    assert runtime.engine.get(execution_id).waiting.level == 0  # nobody acted yet

    second = worker_process(extra_env=env)
    wait_until(lambda: runtime.engine.get(execution_id).waiting.level == 1, timeout=30,
               message="a new worker to escalate the overdue review")
    assert "overdue timer" in second.log()  # our sweep, not RQ's (still locked) scheduler
    escalated = [e.event for e in runtime.engine.audit_entries(execution_id)
                 if e.event["type"] == "review.escalated"]
    assert len(escalated) == 1 and escalated[0]["reason"] == "SLA of 4s passed"


def test_a_review_whose_timers_never_reached_rq_still_escalates(runtime, work):
    from rq import Queue
    from rq.registry import ScheduledJobRegistry

    from engine.state import keys

    execution_id = runtime.engine.run(parse_workflow(CHAIN.format(
        sla0="1s", remind="1h", sla1="1h", sla2="1h")), {"host": "db-4"})  # no remind: after SLA
    work()
    waiting = runtime.engine.get(execution_id).waiting
    # The wait was committed together with its timers' entries in the overdue index...
    members = runtime.store.redis.zrange(keys.INDEX_TIMERS, 0, -1)
    assert members == [f'["review_timer","{execution_id}","review","0","sla"]'.encode()]
    # (the default 72 h timeout, the step setting none, waits in the deferred index: no RQ
    # job for days)
    assert runtime.store.redis.zrange(keys.INDEX_TIMERS_LATER, 0, -1) == [
        f'["step_timed_out","{execution_id}","review"]'.encode()]
    # ...so a worker that dies before RQ hears of them (here: RQ forgets them) loses nothing.
    registry = ScheduledJobRegistry(queue=Queue(runtime.settings.queue,
                                                connection=runtime.store.redis))
    for job_id in registry.get_job_ids():
        registry.remove(job_id, delete_job=True)
    assert parse_iso(waiting.level_due) is not None
    # The sweep fires it once it is due (polled: the index's score is in whole ms, and the
    # sweep is what this test is about, not the clock).
    wait_until(lambda: runtime.engine.scheduler.fire_overdue(timedelta(0)) == 1, timeout=5,
               message="the sweep to fire the overdue SLA timer")
    work()
    assert runtime.engine.get(execution_id).waiting.level == 1


def test_a_far_timer_gets_its_rq_job_from_the_sweep_as_it_comes_near(runtime, work):
    from rq import Queue
    from rq.registry import ScheduledJobRegistry

    from engine.state import keys

    execution_id = runtime.engine.run(parse_workflow(CHAIN.format(
        sla0="30m", remind="10m", sla1="1h", sla2="1h")), {"host": "db-5"})
    work()
    registry = ScheduledJobRegistry(queue=Queue(runtime.settings.queue,
                                                connection=runtime.store.redis))
    scheduled = len(registry.get_job_ids())  # the SLA and remind timers: within the horizon
    scheduler = runtime.engine.scheduler
    assert scheduler.schedule_deferred(timedelta(hours=1)) == 0  # 72 h away: not yet
    assert scheduler.schedule_deferred(timedelta(hours=73)) == 1
    assert scheduler.schedule_deferred(timedelta(hours=73)) == 0  # taken once
    assert len(registry.get_job_ids()) == scheduled + 1
    assert runtime.store.redis.zcard(keys.INDEX_TIMERS_LATER) == 0
    assert f'["step_timed_out","{execution_id}","review"]'.encode() in \
        runtime.store.redis.zrange(keys.INDEX_TIMERS, 0, -1)  # the overdue net again


NEW_LEVEL_ONLY = """
name: contain
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Isolate web-01?"
      approvers: ["U0ALICE", "U0BOB"]
      earlier-levels-keep-rights: false
      escalation:
        - approvers: ["U0LEAD01"]
"""


def test_without_earlier_levels_keeping_rights_only_the_new_level_decides(runtime, work):
    engine = runtime.engine
    execution_id = start(runtime, work, NEW_LEVEL_ONLY)
    engine.reassign(execution_id, BOB, "U0DAVE")  # a seat handed on at level 1 lapses too
    assert engine.escalate(execution_id, ALICE, "need the lead") == 1
    waiting = engine.get(execution_id).waiting
    assert waiting.approvers == ("U0LEAD01",) and waiting.handed == ()
    for who in (ALICE, Actor(id="U0DAVE", name="dave")):
        with pytest.raises(ActorNotAllowed) as refused:
            engine.resume(execution_id, {"approved": True}, who)
        assert refused.value.reason == "not_an_approver"
    engine.resume(execution_id, {"approved": True}, Actor(id="U0LEAD01", name="lead"))
    assert engine.get(execution_id).status is ExecutionStatus.RUNNING


def test_past_the_last_level_escalate_goes_to_the_workspace_default_once(runtime, work):
    from engine.run.engine import Engine

    engine = Engine(runtime.store, runtime.engine.scheduler,
                    escalate_to=("S0CISO", "ciso@corp.test"))
    execution_id = start(runtime, work, NEW_LEVEL_ONLY.replace(
        "      earlier-levels-keep-rights: false\n", ""))
    assert engine.escalate(execution_id, ALICE, "lead is out") == 1
    assert engine.escalate(execution_id, ALICE, "no answer", to="U0IGNORED1") == 2
    assert engine.get(execution_id).waiting.approvers[-2:] == ("S0CISO", "ciso@corp.test")
    with pytest.raises(CannotEscalate) as caught:
        engine.escalate(execution_id, ALICE, "again")
    assert not isinstance(caught.value, EscalationTargetRequired)
