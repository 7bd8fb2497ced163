"""The engine's :class:`engine.notify.Notifier`, for Slack: queue the work, never call Slack here.

The runner and :class:`engine.run.engine.Engine` call it right after a review starts
waiting, changes while it waits (escalated, reassigned, a quorum approval, a
reminder) or stops waiting; posting and updating happen in :mod:`bot.jobs` on the
``slack`` queue, retried there, so Slack being slow or down never slows a run down.
"""

from __future__ import annotations

from typing import Any

import redis

from bot.outbox import Outbox
from engine.notify import ReviewChange, ReviewClosed, ReviewRequest
from engine.worker.scheduler import RQScheduler


class SlackNotifier:
    """Registered as ``slack`` in ``signoff.notifiers``."""

    def __init__(self, settings: Any = None, connection: redis.Redis | None = None) -> None:
        if connection is None:
            raise ValueError("SlackNotifier needs the Redis connection the engine uses")
        # Built before the engine (``load_notifier`` runs first), so its own scheduler:
        # the one the engine gets, over the same connection and queue.
        queue = getattr(settings, "queue", None)
        self.outbox = Outbox(RQScheduler(connection, queue) if queue else RQScheduler(connection))

    def review_waiting(self, review: ReviewRequest) -> None:
        self.outbox.post(review.execution_id, review.step)

    def review_changed(self, change: ReviewChange) -> None:
        self.outbox.follow(change)

    def review_closed(self, closed: ReviewClosed) -> None:
        self.outbox.close(closed)
