"""The engine's :class:`engine.notify.Notifier`, for Slack: queue the work, never call Slack here.

The runner and :class:`engine.run.engine.Engine` call it right after a review starts
waiting, changes while it waits (escalated, reassigned, a quorum approval, a
reminder) or stops waiting; posting and updating happen in :mod:`bot.jobs` on the
``slack`` queue, retried there, so Slack being slow or down never slows a run down.
"""

from __future__ import annotations

from typing import Any

import redis

from bot.jobs import bot_runtime
from bot.outbox import Outbox, close_task
from engine.notify import ReviewChange, ReviewClosed, ReviewRequest
from engine.state.inbox import Task
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

    def closing_task(self, closed: ReviewClosed) -> Task | None:
        """The rewrite of the closed review's messages, which a click's commit carries
        (:class:`engine.notify.CarriesClosing`): its worker rewrites them once the run's
        next segment has run. Not while the client that would call Slack has lately failed
        to reach it (:meth:`bot.slack_http.KeptConnections.unreachable_lately`): a call that
        hangs would hold the engine's drain, so the rewrite goes to the slack queue
        (review_closed)."""
        kept = getattr(bot_runtime().client, "kept", None)  # the client the rewrite uses
        if kept is not None and kept.unreachable_lately():
            return None
        return close_task(closed)
