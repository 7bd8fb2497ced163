"""``/approvals all`` finds the waiting reviews not indexed yet (bot.visibility.Visibility.unindexed)
without walking every waiting review each time: the first look in a process does; later ones
ask only about those found unindexed before and those that began waiting since.

Counted with Redis's own command statistics (``HEXISTS``: one per review asked about); a
review that starts waiting (not posted yet) is found at the next look and shown to its
approver at once, and drops out once its post job indexed it.
"""

from __future__ import annotations

import redis
from slack_sdk import WebClient

from bot.directory import Directory
from bot.visibility import Visibility
from engine.definition.loader import parse_workflow
from tests.bot.conftest import Signoff
from tests.bot.test_approvals_visibility import (  # noqa: F401 - fixtures reused as they are
    TWO_REVIEWS,
    engine_jobs_only,
    listed,
    payout,
    site,
    workspace,
)


def asked(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_hexists", {}).get("calls", 0))


def test_later_looks_ask_only_about_what_began_waiting_since_and_what_was_unindexed(
        site: Signoff):  # noqa: F811 - the fixture imported above
    client = site.engine.store.redis
    slack = WebClient(token=site.slack.bot_token, base_url=site.slack.api_url)
    # No margin for late commits, so that the test can count (LATE_MS is a minute).
    visibility = Visibility(site.engine.store, Directory(slack, site.engine.store), late_ms=0)
    posted = [payout(site, n) for n in range(1, 6)]

    before = asked(client)
    assert visibility.unindexed() == []
    assert asked(client) - before == 5  # the first look: every waiting review

    # A review starts waiting; its post job has not run (it is not indexed).
    second = site.engine.run(parse_workflow(TWO_REVIEWS), {}, requested_by="U0CAROL")
    engine_jobs_only(site)
    before = asked(client)
    assert visibility.unindexed() == [second]
    assert asked(client) - before <= 2  # the new one (and the newest seen, at the edge)
    assert listed(site, "U0ALICE") == [*posted, second]  # checked as it stands
    assert listed(site, "U0ERIN") == posted  # not posted anywhere she is

    site.drain()  # posted and indexed
    before = asked(client)
    assert visibility.unindexed() == []
    assert asked(client) - before == 1  # the one found unindexed before
    before = asked(client)
    assert visibility.unindexed() == []
    assert asked(client) - before <= 1  # nothing new: the newest seen, at the edge
    assert listed(site, "U0ERIN") == [*posted, second]  # posted in #payouts
