"""/approvals keeps what it made of each stored review, and never shows a stale one.

The web process keeps, per review as stored (its bytes in Redis), the review, its links
and the blocks it built (bot.overview.Overview._known), and reads a person's page with
the reviews it held at their last listing in one command. Each test lists once (filling
what is kept), changes the review through the engine (decided, reassigned, escalated,
voted on, a review of a new step), and lists again: the second answer shows the
change. What is kept is shared between viewers, so each viewer still gets their own
link (their own DM).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from bot.app import build_bot
from bot.overview import Overview
from bot.settings import BotSettings
from bot.web import CommandPath
from engine.notify import Actor
from tests.bot.conftest import Signoff
from tests.bot.test_approvals import ISOLATE, QUORUM, approvals, buttons, sections, start
from tests.bot.test_approvals_command_path import by_short_path, signed_form

ALICE = Actor(id="U0ALICE", name="alice", source="slack")
BOB = Actor(id="U0BOB", name="bob", source="slack")

class Listing:
    """The web's short path for /approvals, built here on the test's engine (the served
    app's own is out of reach): signed forms in, answers out, its Overview in view."""

    def __init__(self, signoff: Signoff, bot_settings: BotSettings) -> None:
        bot = build_bot(bot_settings, signoff.engine)
        self.secret = str(bot_settings.signing_secret)
        self.path = CommandPath(self.secret, bot.approvals)
        self.overview: Overview = bot.approvals.overview

    def __call__(self, user: str, text: str = "") -> dict[str, Any]:
        status, body = by_short_path(self.path, *signed_form(self.secret, user_id=user,
                                                             text=text))
        assert status == 200
        return dict(body)


def kept_listing(signoff: Signoff, user: str) -> dict[str, Any]:
    """``/approvals`` over HTTP, twice: the first teaches the web process where the step's
    delivery records are, the second reads them with the page and keeps each row."""
    first = approvals(signoff, user)
    assert approvals(signoff, user) == first
    return first


@pytest.fixture
def listing(signoff: Signoff, bot_settings: BotSettings) -> Listing:
    return Listing(signoff, bot_settings)


def test_a_second_listing_reuses_what_the_first_made_of_each_review(
        signoff: Signoff, listing: Listing):
    start(signoff, 3)
    first = listing("U0ALICE")  # learns where the step's delivery records are
    assert listing.overview._steps == ("review",) and not listing.overview._rows
    second = listing("U0ALICE")  # reads them with the page, and keeps each row
    kept = dict(listing.overview._rows)
    assert len(kept) == 3
    assert all(known.blocks for known in kept.values())  # the blocks built, kept

    third = listing("U0ALICE")

    assert first == second == third
    assert listing.overview._rows == kept  # nothing read anew: the same rows
    assert all(a is b for a, b in zip(listing.overview._rows.values(), kept.values(),
                                      strict=True))


def test_a_decided_review_leaves_the_listing_at_once(signoff: Signoff):
    ids = start(signoff, 12)
    assert kept_listing(signoff, "U0ALICE")["text"] == "Reviews waiting for you: 12"

    signoff.engine.resume(ids[0], {"approved": True}, ALICE)

    again = approvals(signoff, "U0ALICE")
    assert again["text"] == "Reviews waiting for you: 11"
    texts = sections(again)
    assert not any(ids[0] in text for text in texts)
    assert ids[10] in texts[9]  # the eleventh moved into the page: read in a second command
    assert len(texts) == 10


def test_a_reassigned_review_leaves_the_old_approvers_listing_and_joins_the_new(
        signoff: Signoff):
    [execution_id] = start(signoff, 1)
    assert execution_id in sections(kept_listing(signoff, "U0ALICE"))[0]
    assert approvals(signoff, "U0DAVE")["text"] == "Reviews waiting for you: 0"

    signoff.engine.reassign(execution_id, ALICE, "U0DAVE", reason="on leave")
    signoff.drain()  # the bot tells Slack, and indexes the review for Dave

    assert approvals(signoff, "U0ALICE")["text"] == "Reviews waiting for you: 0"
    daves = approvals(signoff, "U0DAVE")
    assert daves["text"] == "Reviews waiting for you: 1"
    assert execution_id in sections(daves)[0]
    assert ("signoff.approve", "Approve") in buttons(daves)
    bobs = approvals(signoff, "U0BOB")  # kept before the change: shown as it is now
    assert execution_id in sections(bobs)[0]


def test_an_escalated_review_shows_its_new_level(signoff: Signoff):
    [execution_id] = start(signoff, 1)
    assert "level 1 of 2" in sections(kept_listing(signoff, "U0ALICE"))[0]

    signoff.engine.escalate(execution_id, ALICE, "need a lead")
    signoff.drain()

    carols = approvals(signoff, "U0CAROL")
    assert "level 2 of 2" in sections(carols)[0]
    alices = approvals(signoff, "U0ALICE")  # earlier levels keep their seats by default
    assert "level 2 of 2" in sections(alices)[0]


def test_a_vote_towards_a_quorum_shows_in_the_next_listing(signoff: Signoff):
    [execution_id] = start(signoff, 1, QUORUM)
    assert "0 of 2 approvals" in sections(kept_listing(signoff, "U0BOB"))[0]

    signoff.engine.resume(execution_id, {"approved": True}, ALICE)
    signoff.drain()

    assert "1 of 2 approvals" in sections(approvals(signoff, "U0BOB"))[0]


def test_viewers_of_one_kept_review_each_get_their_own_link(
        start_signoff: Callable[..., Signoff], bot_settings: BotSettings):
    signoff = start_signoff(replace(bot_settings, channel=None))  # each approver gets a DM
    listing = Listing(signoff, bot_settings)
    [execution_id] = start(signoff, 1)
    dms = {user: signoff.slack.workspace.open_dm(user) for user in ("U0ALICE", "U0BOB")}
    listing("U0ALICE")  # learns where the step's records are
    alices = listing("U0ALICE")
    bobs = listing("U0BOB")  # the same stored review, kept from Alice's listing

    assert len(listing.overview._rows) == 1
    assert f"/archives/{dms['U0ALICE']}/p" in sections(alices)[0]
    assert f"/archives/{dms['U0BOB']}/p" in sections(bobs)[0]  # his own DM, not hers
    assert execution_id in sections(bobs)[0]
    assert f"/archives/{dms['U0ALICE']}/p" in sections(listing("U0ALICE"))[0]
    assert ("signoff.approve", "Approve") in buttons(bobs)


def test_a_review_of_a_step_not_seen_before_gets_its_link(signoff: Signoff,
                                                          listing: Listing):
    start(signoff, 1)
    listing("U0ALICE")
    start(signoff, 1, QUORUM)  # step "review" of another workflow: the same record key
    other = ISOLATE.replace("name: review", "name: triage").replace(
        "steps.review.", "steps.triage.")
    start(signoff, 1, other)  # a step name this process has not read records of

    texts = sections(listing("U0ALICE"))

    assert len(texts) == 3
    assert all("/archives/" in text for text in texts)  # each linked to its message
    assert "triage" in listing.overview._steps
    assert sections(listing("U0ALICE")) == texts  # read with the page from now on


def test_kept_rows_are_freed_by_reference_counting_alone(signoff: Signoff, listing: Listing):
    """The web process leaves kept rows out of the collector's passes (gc.freeze): that is
    only sound if a row that goes is freed without the collector, i.e. holds no cycle."""
    start(signoff, 3)
    listing("U0ALICE")
    listing("U0ALICE")
    kept = list(listing.overview._rows.values())
    assert len(kept) == 3
    refs = [weakref.ref(k) for k in kept] + [weakref.ref(k.review) for k in kept]
    del kept
    gc.disable()
    try:
        listing.overview._rows.clear()
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        gc.enable()


FORM = """
name: disable-account
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE, U0BOB]
      message: "## Disable {{ event.host }}'s account?"
      schema:
        type: object
        properties:
          approved: {type: boolean}
          ticket: {type: string, title: Change ticket}
        required: [approved, ticket]
"""


def test_a_kept_review_that_asks_more_than_the_decision_is_answered_in_its_message(
        signoff: Signoff, listing: Listing):
    """Whether one click decides is kept with the row: a form that also asks for a ticket
    gets no Approve / Deny in the listing, first read or kept (nor in ``/approvals all``),
    and one that asks only the decision does."""
    [form] = start(signoff, 1, FORM)
    [one_click] = start(signoff, 1)
    listing("U0ALICE")  # learns where the step's delivery records are
    answers = [listing("U0ALICE") for _ in range(2)]  # read and kept, then from what is kept
    assert len(listing.overview._rows) == 2

    for answer in answers:
        [asks_more, decides] = sections(answer)
        assert form in asks_more and "answer it in its message" in asks_more
        assert one_click in decides and "answer it in its message" not in decides
        assert buttons(answer).count(("signoff.approve", "Approve")) == 1
    assert answers[0] == answers[1]
    everything = listing("U0ALICE", "all")  # read through the visibility index, not kept
    assert "answer it in its message" in sections(everything)[0]
    assert buttons(everything).count(("signoff.approve", "Approve")) == 1
