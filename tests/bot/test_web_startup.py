"""A web process reads what its first listings would otherwise each pay for before it
answers: the whole waiting index's look for unindexed reviews and the workspace's address.
With ``signoff serve --processes N`` every process has a first listing, and each restart
another; at 100,000 reviews the look takes about half a second."""

from __future__ import annotations

from typing import Any

import redis

from bot.web import extension
from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from slack_emulator import SlackDriver
from tests.bot.conftest import ISOLATE, Signoff

REVIEWS = 12


def annotation_lookups(client: redis.Redis) -> int:
    """HEXISTS calls so far: the look for unindexed reviews asks each review's note so."""
    return int(client.info("commandstats").get("cmdstat_hexists", {}).get("calls", 0))


def another_process(signoff: Signoff, served: Any) -> Any:
    """The web app once more, as another process of `serve --processes` builds it."""
    settings = signoff.runtime.settings
    return served(build_api(signoff.engine, WorkflowCatalog(settings.workflows_dir),
                            api_token=settings.api_token,
                            extensions=[extension(settings, signoff.engine,
                                                  bot_settings=signoff.bot.settings)]))


def test_a_new_web_process_looks_before_its_first_listing(signoff, served, redis_client):
    for n in range(REVIEWS):
        signoff.run(ISOLATE, {"host": f"web-{n:02d}", "rule": "beaconing"})
    asked = len(signoff.slack.calls_to("auth.test"))

    before = annotation_lookups(redis_client)
    web = another_process(signoff, served)
    started = annotation_lookups(redis_client)
    assert started - before >= REVIEWS  # each waiting review asked, as the process started
    assert len(signoff.slack.calls_to("auth.test")) == asked + 1  # the workspace's address

    with SlackDriver(signoff.slack, f"{web.url}/slack/events") as driver:
        answer = driver.slash_command("U0BOB", "/approvals", "all")
    assert answer.status == 200 and "web-00" in answer.text
    # The first listing found nothing changed: no review asked again, no Slack call.
    assert annotation_lookups(redis_client) == started
    assert len(signoff.slack.calls_to("auth.test")) == asked + 1
