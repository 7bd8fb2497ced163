"""A listing reads a waiting review from four fields of its execution (workflow, status,
requester, what it waits on): the review it reads is the one loaded whole, its message
aside (a listing shows the first line), and an execution that waits for no input is none."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields, replace

import pytest

from engine.definition.loader import parse_workflow
from engine.notify import Actor, ReviewRequest
from engine.state import keys
from engine.state.execution import ExecutionStatus, Waiting, review_for, review_request

ALICE = Actor(id="U0ALICE", name="alice", source="slack")

LABELLED = """
name: labelled
steps:
  - name: approve_isolation
    type: waitForApproval
    timeout: 4h
    with:
      message: |
        ## Isolate host {{ event.host }}?
        It talked to a known C2 address.
      approveLabel: Isolate
      rejectLabel: Keep online
      approvers: ["U0ALICE", "U0BOB", "U0CAROL"]
      approvals-required: 2
"""

ESCALATING = """
name: escalating
steps:
  - name: review
    type: waitForInput
    with:
      message: "Disable {{ event.user }}?"
      approvers: ["U0ALICE", "U0BOB"]
      decision-field: disable
      allow-self-approval: true
      sla: 4h
      escalation:
        - approvers: [U0DAVE]
          sla: 8h
      schema:
        type: object
        properties:
          disable: {type: boolean}
          why: {type: string}
        required: [disable]
"""


@pytest.mark.parametrize(("source", "event", "requested_by", "vote"), [
    (LABELLED, {"host": "web-1"}, "U0ERIN", {"approved": True}),
    (ESCALATING, {"user": "mallory"}, None, None),
])
def test_a_listed_review_is_the_review_loaded_whole_but_for_its_message(
        runtime, work, source, event, requested_by, vote):
    engine = runtime.engine
    execution_id = engine.run(parse_workflow(source), event, requested_by=requested_by)
    work()
    if vote is not None:  # one approval of two: the quorum's votes are part of the review
        assert not engine.resume(execution_id, vote, ALICE).decided

    state = engine.store.load(execution_id)
    assert state.waiting is not None
    whole = review_request(state, state.waiting)
    [listed] = engine.store.waiting_reviews([execution_id])
    [row], total = engine.store.review_rows(keys.INDEX_WAITING, 0, 9, [])

    assert listed is not None and total == 1
    assert listed == row.review()
    first_line = whole.message.splitlines()[0]
    assert listed.message == first_line
    assert listed == replace(whole, message=first_line)
    assert listed.requested_by == requested_by
    if vote is not None:
        assert (listed.approve_label, listed.reject_label) == ("Isolate", "Keep online")
        assert [a["actor"]["id"] for a in listed.approvals] == ["U0ALICE"]
    else:
        assert (listed.decision_field, listed.allow_self_approval) == ("disable", True)
        assert listed.levels == 2 and listed.sla_due_at is not None


def test_an_execution_that_waits_for_no_input_lists_no_review(runtime, work, redis_client):
    engine = runtime.engine
    workflow = parse_workflow(ESCALATING)
    waiting, cancelled, gone = (engine.run(workflow, {"user": name}) for name in "abc")
    work()
    engine.cancel(cancelled, ALICE, "not needed")
    redis_client.delete(keys.execution(gone))

    # The cancelled run keeps what it waited on (``w``), and its status says it waits no more.
    assert redis_client.hexists(keys.execution(cancelled), "w")
    assert engine.store.load(cancelled).status is ExecutionStatus.CANCELLED
    reviews = engine.store.waiting_reviews([waiting, cancelled, gone])
    assert [r.execution_id if r is not None else None for r in reviews] == [waiting, None, None]
    assert [r.execution_id for r in engine.pending()[0]] == [waiting]


def test_records_read_without_their_init_have_every_field_and_stay_frozen(runtime, work):
    """What is read for every row of every listing is made without the dataclass's
    ``__init__`` (engine.state.execution.built): each field is there, the record equals
    the one ``__init__`` makes from the same fields, and it cannot be changed."""
    engine = runtime.engine
    execution_id = engine.run(parse_workflow(LABELLED), {"host": "web-1"}, requested_by="U0ERIN")
    work()
    waiting = engine.store.load(execution_id).waiting
    [review] = engine.store.waiting_reviews([execution_id])
    assert waiting is not None and review is not None

    stored = Waiting.from_json(waiting.to_json())  # w keeps the message's first line
    for record, kind in ((stored, Waiting), (review, ReviewRequest)):
        assert set(vars(record)) == {f.name for f in fields(kind)}
        assert kind(**vars(record)) == record
        with pytest.raises(FrozenInstanceError):
            record.step = "another"  # type: ignore[misc]
    assert stored == replace(waiting, message=waiting.message.splitlines()[0])
    assert (stored.complete, waiting.complete) == (False, True)
    plain = ReviewRequest(execution_id="e", workflow="w", step="s", step_type="waitForInput",
                          message="m", message_sha256="0", schema={},
                          created_at=review.created_at)
    made = review_for("e", "w", None, Waiting(step="s", path="s", step_type="waitForInput",
                                              message="m", message_sha256="0", schema={},
                                              since=waiting.since))
    assert made == plain  # every default as the class declares it
