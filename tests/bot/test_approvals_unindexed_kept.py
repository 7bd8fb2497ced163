"""``/approvals all`` finds the waiting reviews not indexed yet (bot.visibility.Visibility.unindexed)
without walking every waiting review each time: the first look in a process does; later ones
ask only about those found unindexed before and those that began waiting since, never again
about one found indexed.

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
    # The default margin for late commits (five seconds): every review here began waiting
    # within it, as in an alert storm; those found indexed are not asked about again.
    visibility = Visibility(site.engine.store, Directory(slack, site.engine.store))
    posted = [payout(site, n) for n in range(1, 6)]

    before = asked(client)
    assert visibility.unindexed() == []
    assert asked(client) - before == 5  # the first look: every waiting review
    before = asked(client)
    assert visibility.unindexed() == []
    assert asked(client) == before  # nothing changed: the waiting index's ends alone

    # A review starts waiting; its post job has not run (it is not indexed).
    second = site.engine.run(parse_workflow(TWO_REVIEWS), {}, requested_by="U0CAROL")
    engine_jobs_only(site)
    before = asked(client)
    assert visibility.unindexed() == [second]
    assert asked(client) - before == 1  # the new one; the five found indexed are not asked
    assert listed(site, "U0ALICE") == [*posted, second]  # checked as it stands
    assert listed(site, "U0ERIN") == posted  # not posted anywhere she is

    site.drain()  # posted and indexed: the waiting index itself did not change
    before = asked(client)
    assert visibility.unindexed() == []
    assert asked(client) - before == 1  # the one found unindexed before, asked again
    before = asked(client)
    assert visibility.unindexed() == []
    assert asked(client) == before
    assert listed(site, "U0ERIN") == [*posted, second]  # posted in #payouts


def test_a_wait_committed_late_behind_the_newest_seen_is_still_found(
        site: Signoff):  # noqa: F811 - the fixture imported above
    """A worker whose clock is a second behind commits a wait scored before the newest one
    the last look saw: within the margin, the next look finds it."""
    from engine.state import keys as engine_keys

    client = site.engine.store.redis
    slack = WebClient(token=site.slack.bot_token, base_url=site.slack.api_url)
    visibility = Visibility(site.engine.store, Directory(slack, site.engine.store))
    payout(site, 1)
    assert visibility.unindexed() == []
    [(_, newest)] = client.zrange(engine_keys.INDEX_WAITING, -1, -1, withscores=True)

    late = site.engine.run(parse_workflow(TWO_REVIEWS), {}, requested_by="U0CAROL")
    engine_jobs_only(site)  # waiting, not posted
    client.zadd(engine_keys.INDEX_WAITING, {late: newest - 1000})  # as that clock scored it

    assert visibility.unindexed() == [late]
