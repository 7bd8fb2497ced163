"""The App Home tab: the viewer's pending reviews, then the review stats of the last 7 days.

Published (``views.publish``) each time the viewer opens the tab (``app_home_opened``),
when they page through their reviews, and after a batch they decided from it. The
reviews carry the same Approve / Deny buttons as ``/approvals``, decided by the
review message's own handlers, and *Decide several* for a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import texts
from bot.block_kit import context_block
from bot.mrkdwn import DATE_AT_TIME, slack_date
from bot.overview import (
    Overview,
    PendingPage,
    Scope,
    parse_more,
    pending_blocks,
    stats_blocks,
)
from engine.run.stats import StepStats

log = logging.getLogger(__name__)

ACTION_HOME_MORE = "signoff.home.more"
STATS_DAYS = 7
MAX_BLOCKS = 100

Ack = Callable[..., Any]


class HomeTab:
    """Publishes each viewer's Home tab from the engine's indexes."""

    def __init__(self, overview: Overview) -> None:
        self.overview = overview

    def opened(self, event: dict[str, Any], client: WebClient) -> None:
        """``app_home_opened``: publish the Home tab (the Messages tab needs nothing)."""
        if event.get("tab") != "home":
            return
        self.publish(client, str(event.get("user") or ""))

    def more(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        _, offset = parse_more(str((body.get("actions") or [{}])[0].get("value") or ""))
        self.publish(client, str((body.get("user") or {}).get("id") or ""), offset)

    def after_batch(self, client: WebClient, user_id: str, where: str) -> None:
        """A batch decided from the Home tab: show what still waits."""
        if where == "home":
            self.publish(client, user_id)

    def publish(self, client: WebClient, user_id: str, offset: int = 0) -> None:
        if not user_id:
            return
        now = datetime.now(UTC)
        view = home_view(self.overview.page(user_id, Scope.MINE, offset),
                         self.overview.stats(STATS_DAYS, now), now=now)
        try:
            client.views_publish(user_id=user_id, view=view)
        except SlackApiError as exc:
            log.warning("views.publish for %s failed: %s", user_id, exc.response.get("error"))


def home_view(page: PendingPage, stats: Sequence[StepStats], *, now: datetime) -> dict[str, Any]:
    """The Home tab: pending reviews (paged, with batch buttons), then the stats summary."""
    blocks = [*pending_blocks(page, now=now, more_action=ACTION_HOME_MORE, where="home"),
              {"type": "divider"},
              *stats_blocks(stats, STATS_DAYS, title=texts.HOME_STATS_TITLE)]
    updated = context_block(texts.home_updated(slack_date(now, DATE_AT_TIME)))
    return {"type": "home", "blocks": [*blocks[:MAX_BLOCKS - 1], updated]}
