"""Attack: ``/approvals all`` shows a review to someone with no part in it while the bot's
index of who may see it is not written yet, or after the run moved on.

``/approvals all`` lists a person's own indexes (the engine's index of the reviews they
may decide and the bot's of the others they may see) and their channels', and finds the
reviews not indexed yet (not posted: the post job has not run) by looking for the note
the bot writes on the execution as it posts. Mallory has no part in a two-step run: she
is no approver, did not ask, is in neither channel, is no admin. Alice decides the first
step; the second is Bob's, posted to a channel Alice is not in. At each moment (the
second review waiting but not posted, then posted) Mallory, typing ``/approvals all``
signed as Slack signs through the real Bolt app, sees nothing; nor does Alice once her
step is decided; Bob sees the review.
"""

from __future__ import annotations

from engine.definition.loader import parse_workflow
from tests.bot.conftest import Signoff
from tests.bot.test_approvals import sections
from tests.bot.test_approvals_visibility import (  # noqa: F401 - fixtures reused as they are
    ALICE,
    NOTHING,
    TWO_REVIEWS,
    approvals,
    engine_jobs_only,
    listed,
    site,
    workspace,
)


def test_a_review_without_its_index_yet_or_after_its_step_is_shown_to_nobody_without_a_part(
        site: Signoff):  # noqa: F811 - the fixture imported above
    execution_id = site.engine.run(parse_workflow(TWO_REVIEWS), {}, requested_by="U0CAROL")
    site.drain()
    assert listed(site, "U0ALICE") == [execution_id]
    assert sections(approvals(site, "U0MALLORY", "all")) == NOTHING

    site.engine.resume(execution_id, {"approved": True}, ALICE)
    engine_jobs_only(site)  # the second review waits; the bot has not posted or indexed it
    review = site.engine.review(execution_id)
    assert review is not None and review.step == "second"

    assert sections(approvals(site, "U0MALLORY", "all")) == NOTHING  # found unindexed: not hers
    assert listed(site, "U0ALICE") == []  # the engine's index of hers no longer names it
    assert listed(site, "U0BOB") == [execution_id]

    site.drain()  # posted and indexed
    assert sections(approvals(site, "U0MALLORY", "all")) == NOTHING
    assert listed(site, "U0MALLORY") == [] and listed(site, "U0ALICE") == []
    assert listed(site, "U0BOB") == [execution_id]
