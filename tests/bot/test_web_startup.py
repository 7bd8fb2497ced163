"""A web process reads what its first listings would otherwise each pay for before it
answers: the whole waiting index's look for unindexed reviews and the workspace's address.
With ``signoff serve --processes N`` every process has a first listing, and each restart
another; at 100,000 reviews the look takes about half a second."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from bot.visibility import Visibility, noted_key
from bot.web import extension
from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from engine.state import keys as engine_keys
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


def test_listings_at_once_share_one_look(redis_client, signoff):
    """Listings on the command threads at the same moment, in a process that has not
    looked yet, wait for one look rather than each reading the whole waiting index."""
    count = 3000
    pipe = redis_client.pipeline(transaction=False)
    for n in range(count):  # waiting and indexed (each has its note), as posted reviews are
        score = 1_700_000_000_000 + n
        pipe.zadd(engine_keys.INDEX_WAITING, {f"run-{n}": score})
        pipe.hset(engine_keys.execution(f"run-{n}"),
                  engine_keys.annotation_field(noted_key(score)), "U0BOB")
    pipe.execute()
    visibility = Visibility(signoff.engine.store, signoff.bot.directory)
    before = annotation_lookups(redis_client)
    together = threading.Barrier(4)

    def look() -> list[str]:
        together.wait()
        return visibility.unindexed()

    with ThreadPoolExecutor(4) as threads:
        found = list(threads.map(lambda _: look(), range(4)))
    assert found == [[], [], [], []]
    assert annotation_lookups(redis_client) - before == count  # once, not four times
