"""The engine's :class:`engine.notify.Notifier`, for Slack: queue the work, never call Slack here.

The runner and :class:`engine.run.engine.Engine` call it right after a review starts
waiting, changes while it waits (escalated, reassigned, a quorum approval, a
reminder) or stops waiting; posting and updating happen in :mod:`bot.jobs` on the
``slack`` queue, retried there, so Slack being slow or down never slows a run down.
"""

from __future__ import annotations

from typing import Any

import redis

from bot.jobs import enqueue_change, enqueue_post, hand_in_update, slack_inbox, slack_queue
from engine.notify import ReviewChange, ReviewClosed, ReviewRequest


class SlackNotifier:
    """Registered as ``slack`` in ``signoff.notifiers``."""

    def __init__(self, settings: Any = None, connection: redis.Redis | None = None) -> None:
        if connection is None:
            raise ValueError("SlackNotifier needs the Redis connection the engine uses")
        self.queue = slack_queue(connection)
        self.inbox = slack_inbox(connection)

    def review_waiting(self, review: ReviewRequest) -> None:
        enqueue_post(self.queue, review.execution_id, review.step)

    def review_changed(self, change: ReviewChange) -> None:
        enqueue_change(self.queue, change)

    def review_closed(self, closed: ReviewClosed) -> None:
        hand_in_update(self.inbox, closed)
