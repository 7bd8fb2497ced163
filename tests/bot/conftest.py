"""The bot against the Slack emulator: a real Redis, the real web app on uvicorn, real RQ jobs.

``slack`` is one emulator for the module, reset per test. ``signoff`` starts the
whole Slack side for a test: the engine with the Slack notifier, the bot's job
runtime on the emulator, the web app (API + /slack/events) served on loopback,
and a driver acting as the workspace's people. ``work`` drains both queues.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import redis

from bot.jobs import BotRuntime, build_bot_runtime, install_bot_runtime
from bot.notifier import SlackNotifier
from bot.outbox import QUEUE
from bot.settings import BotSettings
from bot.web import extension
from engine.api import build_api
from engine.connectors import Connectors
from engine.definition.loader import WorkflowCatalog, parse_workflow
from engine.settings import Settings
from engine.worker.runtime import Runtime, build_runtime, install_runtime
from engine.worker.worker import SignoffWorker
from slack_emulator import SlackDriver, SlackEmulator
from tests.support.services import ServedApp

REVIEWS = "C0REVIEWS"
# The isolate-host review the Slack stories run: one-click (only `approved` required),
# two approvers, an `if`-gated step after it and one that names who decided.
ISOLATE = """
name: isolate-host
steps:
  - name: review
    type: waitForInput
    with:
      approvers: [U0ALICE, U0BOB]
      message: |
        ## Isolate `{{ event.host }}`?
        **Rule:** {{ event.rule }}
      schema:
        type: object
        properties:
          approved: {type: boolean, title: Isolate the host}
          notes: {type: string, title: Analyst notes}
        required: [approved]
  - name: isolate
    type: console
    if: "steps.review.output.approved : true"
    with:
      message: "isolating {{ event.host }}"
  - name: record
    type: console
    with:
      message: "decided by {{ steps.review.resumedBy.name }}"
"""

# A review whose form asks for more than the decision: Approve opens the modal.
TICKET = """
name: change-window
steps:
  - name: review
    type: waitForInput
    with:
      message: "Open the change window?"
      schema:
        type: object
        properties:
          approved: {type: boolean, title: Open it}
          ticket: {type: string, title: Change ticket, pattern: "^CHG-[0-9]+$"}
          hours: {type: integer, title: Hours, minimum: 1, maximum: 8}
        required: [approved, ticket]
  - name: open
    type: console
    if: "steps.review.output.approved : true"
    with:
      message: "opening for {{ steps.review.output.ticket }}"
"""


class DrainWorker(SignoffWorker):
    """The worker for in-process drains, without RQ's pub/sub listener: it only serves
    `rq` commands (stop-job, kill-horse) a burst drain never gets, and its thread can
    take a second to stop at the end of every drain."""

    def subscribe(self) -> None:
        pass


@pytest.fixture(scope="module")
def running_slack() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def slack(running_slack: SlackEmulator) -> SlackEmulator:
    running_slack.reset()
    return running_slack


@dataclass
class Signoff:
    """Everything a bot test touches, started for one test."""

    runtime: Runtime
    bot: BotRuntime
    web: ServedApp
    driver: SlackDriver
    slack: SlackEmulator
    drain: Callable[[], None]
    started: list[str] = field(default_factory=list)

    @property
    def engine(self) -> Any:
        return self.runtime.engine

    def run(self, text: str, event: Any = None, *, requested_by: str | None = None) -> str:
        """Start a workflow and run every job until it waits (and its review is posted)."""
        execution_id = self.engine.run(parse_workflow(text), event or {},
                                       requested_by=requested_by)
        self.started.append(execution_id)
        self.drain()
        return execution_id

    def messages(self, channel: str = REVIEWS) -> list[dict[str, Any]]:
        return self.slack.workspace.messages(channel)

    def ephemerals(self, user: str) -> list[str]:
        return [r["message"]["text"] for r in self.slack.workspace.ephemeral_messages(user)]


@pytest.fixture
def bot_settings(slack: SlackEmulator) -> BotSettings:
    return BotSettings(bot_token=slack.bot_token, signing_secret=slack.signing_secret,
                       channel=REVIEWS, api_url=slack.api_url)


@pytest.fixture
def start_signoff(settings: Settings, redis_client: redis.Redis, slack: SlackEmulator,
                  served: Callable[[Any], ServedApp]) -> Iterator[Callable[..., Signoff]]:
    drivers: list[SlackDriver] = []

    def start(bot_settings: BotSettings, *, escalate_to: tuple[str, ...] = (),
              connectors: Connectors | None = None, policy: str | None = None) -> Signoff:
        # SIGNOFF_ESCALATE_TO, SIGNOFF_CONNECTORS, SIGNOFF_POLICY
        engine_settings = replace(settings, escalate_to=escalate_to,
                                  connectors=connectors or Connectors(), policy_path=policy)
        runtime = build_runtime(engine_settings, redis_client,
                                notifier=SlackNotifier(engine_settings, redis_client))
        install_runtime(runtime)
        bot = build_bot_runtime(bot_settings, runtime.engine,
                                connectors=engine_settings.connectors)
        install_bot_runtime(bot)
        app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                        api_token=settings.api_token,
                        extensions=[extension(engine_settings, runtime.engine,
                                                      bot_settings=bot_settings)])
        web = served(app)
        driver = SlackDriver(slack, f"{web.url}/slack/events")
        drivers.append(driver)

        def drain() -> None:
            worker = DrainWorker([settings.queue, QUEUE], connection=redis_client)
            worker.work(burst=True, logging_level="WARNING")

        return Signoff(runtime, bot, web, driver, slack, drain)

    yield start
    for driver in drivers:
        driver.close()
    install_bot_runtime(None)


@pytest.fixture
def signoff(start_signoff: Callable[..., Signoff], bot_settings: BotSettings) -> Signoff:
    return start_signoff(bot_settings)
