"""Attack (by bad luck rather than by hand): Slack gets its 200 for a click, then the Redis
primary fails over to a replica that never received the click, and the decision is gone.

With ``SIGNOFF_ACK_REPLICAS=N`` the web process sends ``WAIT N timeout`` after writing a
click and before answering Slack. Against real redis-servers: a real replica
(``REPLICAOF``) holds the click by the time the web process is told it is in; with no
replica to acknowledge, the shortfall is logged as an error, the click is acked all the
same and is in the inbox; with the default (0) no WAIT is sent at all, so the click path
costs what it did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import pytest
import redis

from bot.blocks import ACTION_APPROVE
from engine.errors import SettingsInvalid
from engine.settings import Settings
from engine.state import keys
from engine.state.embedded_redis import EmbeddedRedis
from engine.state.execution import ExecutionStatus
from engine.state.inbox import AsyncInbox, Task
from engine.state.store import connect_async
from tests.bot.conftest import (  # noqa: F401 - fixtures reused as they are
    ISOLATE,
    REVIEWS,
    bot_settings,
    running_slack,
    signoff,
    slack,
    start_signoff,
)
from tests.support.services import wait_until

TIMEOUT_MS = 200  # the web process's wait for replicas in these tests


@pytest.fixture
def settings(settings, request):
    """The shared settings, with SIGNOFF_ACK_REPLICAS from the test's parameter."""
    return replace(settings, ack_replicas=request.param, ack_timeout_ms=TIMEOUT_MS)


@pytest.fixture
def deployment(request: pytest.FixtureRequest, settings):
    """The bot tests' served web app, engine and Slack emulator (their ``signoff``)."""
    return request.getfixturevalue("signoff")


def waits(client: redis.Redis) -> int:
    """How many WAIT commands this Redis has run since its statistics were reset."""
    return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def click_approve(deployment) -> tuple[str, float]:
    execution_id = deployment.run(ISOLATE, {"host": "web-01", "rule": "beaconing"})
    [message] = deployment.messages(REVIEWS)
    deployment.runtime.store.redis.config_resetstat()
    started = time.monotonic()
    answer = deployment.driver.click("U0ALICE", (REVIEWS, message["ts"]), ACTION_APPROVE)
    assert answer.status == 200
    return execution_id, time.monotonic() - started


def inbox_tasks(deployment) -> list[Task]:
    redis_ = deployment.runtime.store.redis
    raw = redis_.lrange(keys.inbox(deployment.runtime.settings.queue), 0, -1)
    return [Task.decode(entry) for entry in raw]


@pytest.mark.parametrize("settings", [0], indirect=True)
def test_by_default_a_click_is_acked_without_a_wait(deployment, caplog):
    click_approve(deployment)
    assert waits(deployment.runtime.store.redis) == 0
    assert [t.function for t in inbox_tasks(deployment)] == ["bot.jobs.decide_click"]
    assert "replica" not in caplog.text


@pytest.mark.parametrize("settings", [1], indirect=True)
def test_without_the_replicas_asked_for_the_click_is_acked_and_the_shortfall_logged(
        deployment, caplog):
    caplog.set_level(logging.ERROR, logger="engine.state.inbox")
    execution_id, took = click_approve(deployment)
    assert took >= TIMEOUT_MS / 1000  # it waited for the replica that is not there
    assert waits(deployment.runtime.store.redis) == 1
    [record] = [r for r in caplog.records if "replica" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "only 0 of 1 replica(s) acknowledged 1 task(s)" in record.getMessage()
    [task] = inbox_tasks(deployment)  # acked, and in Redis
    assert task.function == "bot.jobs.decide_click" and task.args[2] is True
    deployment.drain()
    assert deployment.engine.get(execution_id).status is ExecutionStatus.COMPLETED


def test_with_a_real_replica_the_task_is_on_it_before_the_caller_is_told(caplog):
    caplog.set_level(logging.ERROR, logger="engine.state.inbox")
    with EmbeddedRedis() as primary, EmbeddedRedis() as replica:
        to_replica = redis.Redis.from_url(replica.url)
        to_replica.replicaof("127.0.0.1", primary.port)
        wait_until(lambda: to_replica.info("replication").get("master_link_status") == "up",
                   timeout=20, message="the replica to sync")

        async def put() -> float:
            connection = connect_async(primary.url)
            inbox = AsyncInbox(connection, "signoff", enqueue_drain=lambda: None)
            inbox.wait_for_replicas(1, 2000)
            started = time.monotonic()
            await inbox.put("bot.jobs.decide_click", {"user_id": "U0ALICE"}, "ref", True)
            took = time.monotonic() - started
            await inbox.settle()
            await connection.aclose()
            return took

        took = asyncio.run(put())
        # Read from the replica at once: the WAIT made sure it already has the task.
        [raw] = to_replica.lrange(keys.inbox("signoff"), 0, -1)
        assert Task.decode(raw).args == ({"user_id": "U0ALICE"}, "ref", True)
        assert took < 1.0 and not caplog.records
        to_primary = redis.Redis.from_url(primary.url)
        assert waits(to_primary) == 1
        to_primary.close()
        to_replica.close()


def test_the_ack_settings_are_read_and_checked_at_start():
    read = Settings.from_env({"SIGNOFF_ACK_REPLICAS": "2", "SIGNOFF_ACK_TIMEOUT_MS": "250"})
    assert (read.ack_replicas, read.ack_timeout_ms) == (2, 250)
    assert (Settings.from_env({}).ack_replicas, Settings.from_env({}).ack_timeout_ms) == (0, 500)
    for env in ({"SIGNOFF_ACK_REPLICAS": "one"}, {"SIGNOFF_ACK_REPLICAS": "-1"},
                {"SIGNOFF_ACK_TIMEOUT_MS": "3000"}, {"SIGNOFF_ACK_TIMEOUT_MS": "0"}):
        with pytest.raises(SettingsInvalid, match=next(iter(env))):
            Settings.from_env(env)
