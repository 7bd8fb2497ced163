"""Failure (by bad luck, or by an attacker who can cut the workers off from Slack): a
reviewer's one-click Approve is acked to Slack by the web process, then the worker that
records it cannot reach Slack's Web API. The click must not be lost.

The web process and the emulator stay up; the workers' Slack client is pointed at a
loopback port that refuses connections, or takes them and hangs up (an OSError either
way, not a SlackApiError). The click is
recorded from what the signed payload says (user id, username, team) and the run goes on;
the clicker's display name is looked up afterwards, best effort. When who may decide can
only be learned from Slack (a user group not cached), the click is not decided without
that check: it is tried again with backoff for ten minutes (the inbox's clock is moved
instead of waiting), then the run's audit trail records it as lost, with who clicked and
why, and the clicker is told to click again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from bot import keys as bot_keys
from bot import texts
from bot.blocks import ACTION_APPROVE
from bot.delivery import annotation_key
from bot.jobs import build_bot_runtime, install_bot_runtime
from engine.state.embedded_redis import free_port
from engine.state.execution import ExecutionStatus
from engine.state.inbox import DEFAULT_RETRY
from tests.bot.conftest import ISOLATE, REVIEWS, DrainWorker, Signoff

EVENT = {"host": "web-01", "rule": "beaconing"}

# ISOLATE, decided by a user group: who may decide is learned from usergroups.users.list.
BY_GROUP = ISOLATE.replace("approvers: [U0ALICE, U0BOB]", "approvers: [S0SOCL1]")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Unanswering:
    """A loopback port that takes each connection and closes it unanswered, counting them:
    Slack's Web API as a broken network path shows it (the client raises an OSError)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/api/"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.socket.accept()
                self.connections += 1
                connection.close()

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def cut_off(signoff: Signoff) -> Iterator[Callable[..., None]]:
    """Point the workers' Slack client at ``url`` (by default a closed loopback port:
    connection refused); ``cut(None)`` gives them Slack back."""

    def cut(url: str | None = "") -> None:
        settings = signoff.bot.settings
        if url is not None:
            settings = replace(settings, api_url=url or f"http://127.0.0.1:{free_port()}/api/")
        install_bot_runtime(build_bot_runtime(settings, signoff.engine))

    yield cut
    install_bot_runtime(signoff.bot)


@pytest.fixture
def unanswering() -> Iterator[Unanswering]:
    port = Unanswering()
    yield port
    port.close()


def click_approve(signoff: Signoff, user: str = "U0ALICE") -> None:
    [message] = signoff.messages(REVIEWS)
    answer = signoff.driver.click(user, (REVIEWS, message["ts"]), ACTION_APPROVE)
    assert answer.status == 200  # Slack got its answer: from here on the click must hold


def events(signoff: Signoff, execution_id: str, kind: str) -> list[dict]:
    return [e.event for e in signoff.engine.audit_entries(execution_id)
            if e.event["type"] == kind]


def test_a_click_acked_while_slack_is_unreachable_is_recorded_and_the_run_goes_on(
        signoff: Signoff, cut_off, unanswering: Unanswering):
    execution_id = signoff.run(ISOLATE, EVENT)
    second = signoff.run(ISOLATE, EVENT)  # clicked later
    first_message, second_message = signoff.messages(REVIEWS)
    redis = signoff.engine.store.redis
    redis.delete(bot_keys.user_name("U0ALICE"))  # the name is not cached: users.info would be asked
    cut_off(unanswering.url)

    answer = signoff.driver.click("U0ALICE", (REVIEWS, first_message["ts"]), ACTION_APPROVE)
    assert answer.status == 200  # Slack got its answer: from here on the click must hold
    # The engine's queue alone: it records the click and runs the run to its end. Then, the
    # engine's inbox being empty, its worker tries the rewrite of the message itself (the
    # click's commit carried it): Slack is gone, and the rewrite goes to the slack inbox
    # for its next try, not to the engine's, whose drains a hung Slack must not hold.
    scheduler = signoff.runtime.engine.scheduler
    DrainWorker([signoff.runtime.settings.queue], connection=redis).work(
        burst=True, logging_level="WARNING")

    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    [decided] = events(signoff, execution_id, "step.decided")
    assert decided["actor"] == {"id": "U0ALICE", "name": "alice", "source": "slack",
                                "team": "T0SIGNOFF"}  # from the signed click
    assert signoff.engine.verify_audit(execution_id).ok
    assert unanswering.connections > 0
    assert [task.function for _, task in scheduler.inbox_of("slack").retrying()] == [
        "bot.jobs.update_review"]
    assert scheduler.inbox.retrying() == []

    # The next click's worker, having just failed to reach Slack, leaves the rewrite to the
    # slack queue: the engine's queue does not dial Slack again.
    dialled = unanswering.connections
    answer = signoff.driver.click("U0ALICE", (REVIEWS, second_message["ts"]), ACTION_APPROVE)
    assert answer.status == 200
    DrainWorker([signoff.runtime.settings.queue], connection=redis).work(
        burst=True, logging_level="WARNING")
    assert signoff.engine.get(second).status is ExecutionStatus.COMPLETED
    assert unanswering.connections == dialled

    # Then the slack queue: the name look-up and the message rewrites find Slack gone. The
    # look-up gives up quietly; the rewrites wait for their next try. The runs never waited.
    signoff.drain()
    assert unanswering.connections > dialled
    assert redis.get(bot_keys.user_name("U0ALICE")) is None
    waiting = [task.function for _, task in scheduler.inbox_of("slack").retrying()]
    assert waiting == ["bot.jobs.update_review", "bot.jobs.update_review"]
    assert events(signoff, execution_id, "decision.lost") == []


def test_a_click_whose_deciders_slack_must_name_is_retried_for_ten_minutes_then_audited_as_lost(
        signoff: Signoff, cut_off):
    execution_id = signoff.run(BY_GROUP, EVENT)
    redis = signoff.engine.store.redis
    # The click comes before the review's delivery was recorded, the group's members not
    # cached: only Slack can say whether Alice may decide.
    signoff.engine.annotate(execution_id, annotation_key("review"), None)
    redis.delete(bot_keys.group_members("S0SOCL1"))
    inbox = signoff.runtime.engine.scheduler.inbox
    inbox.clock = clock = Clock(1_000_000.0)
    cut_off()

    click_approve(signoff)
    signoff.drain()
    tries = []
    while retrying := inbox.retrying():
        [(due, task)] = retrying
        assert task.function == "bot.jobs.decide_click"
        # Never decided without the check, nor refused for want of it, while it waits.
        assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
        assert events(signoff, execution_id, "decision.refused") == []
        tries.append(due - 1_000_000.0)
        clock.now = due
        inbox.drain()

    assert [round(b - a) for a, b in zip([0.0, *tries], tries, strict=False)] == list(DEFAULT_RETRY)
    assert tries[-1] >= 600
    assert signoff.engine.get(execution_id).status is ExecutionStatus.WAITING_FOR_INPUT
    [lost] = events(signoff, execution_id, "decision.lost")
    assert lost["actor"]["id"] == "U0ALICE" and lost["step"] == "review"
    assert lost["approved"] is True
    assert lost["error"].startswith("URLError") and "refused" in lost["error"]
    assert signoff.engine.verify_audit(execution_id).ok

    # The clicker is told, once Slack answers again.
    cut_off(None)
    signoff.drain()
    assert signoff.ephemerals("U0ALICE") == [texts.CLICK_NOT_RECORDED]


def test_a_click_slack_was_briefly_unreachable_for_is_decided_on_a_later_try(
        signoff: Signoff, cut_off):
    execution_id = signoff.run(BY_GROUP, EVENT)
    signoff.engine.annotate(execution_id, annotation_key("review"), None)
    redis = signoff.engine.store.redis
    redis.delete(bot_keys.group_members("S0SOCL1"), bot_keys.user_name("U0ALICE"))
    inbox = signoff.runtime.engine.scheduler.inbox
    inbox.clock = clock = Clock(1_000_000.0)
    cut_off()

    click_approve(signoff)
    signoff.drain()
    [(due, _)] = inbox.retrying()

    cut_off(None)
    clock.now = due
    inbox.drain()
    signoff.drain()
    assert signoff.engine.get(execution_id).status is ExecutionStatus.COMPLETED
    [decided] = events(signoff, execution_id, "step.decided")
    assert decided["actor"]["id"] == "U0ALICE"
    assert events(signoff, execution_id, "decision.lost") == []
    assert redis.get(bot_keys.user_name("U0ALICE")) == b"alice"  # learned after the decision
