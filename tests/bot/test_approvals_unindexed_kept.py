"""``/approvals all`` keeps the answer of its ``ZDIFF`` (bot.visibility.Visibility.unindexed)
while the waiting and indexed sets are unchanged, and asks again as soon as either changes.

Counted with Redis's own command statistics, over the served app: listings with nothing
new cost no ``ZDIFF``; a review that starts waiting (not posted yet) is found at the next
listing and shown to its approver at once, and again once its post job indexed it.
"""

from __future__ import annotations

import redis

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


def zdiffs(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_zdiff", {}).get("calls", 0))


def test_the_unindexed_reviews_are_asked_again_only_when_the_indexes_change(
        site: Signoff):  # noqa: F811 - the fixture imported above
    client = site.engine.store.redis
    first = payout(site)
    assert listed(site, "U0ERIN") == [first]  # in #payouts
    asked = zdiffs(client)
    assert listed(site, "U0ERIN") == [first] and listed(site, "U0ALICE") == [first]
    assert zdiffs(client) == asked  # nothing changed: the kept answer

    # A review starts waiting; its post job has not run (it is not indexed).
    second = site.engine.run(parse_workflow(TWO_REVIEWS), {}, requested_by="U0CAROL")
    engine_jobs_only(site)
    assert listed(site, "U0ALICE") == [first, second]  # checked as it stands
    assert zdiffs(client) == asked + 1
    assert listed(site, "U0ERIN") == [first]  # not posted anywhere she is
    assert zdiffs(client) == asked + 1

    site.drain()  # posted and indexed: the indexed set changed
    assert listed(site, "U0ALICE") == [first, second]
    assert zdiffs(client) == asked + 2
    assert listed(site, "U0ERIN") == [first, second]  # posted in #payouts
    assert zdiffs(client) == asked + 2
