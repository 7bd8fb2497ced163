"""The bot's Slack work, queued: post a review, follow its changes, mark it closed, reply to one
person.

Nothing here calls Slack. Each piece of work becomes a job on the ``slack`` queue
(:mod:`bot.jobs` holds the job bodies), handed over through the engine's scheduler seam
(:class:`engine.run.timers.Scheduler`), so a slow or failing Slack never holds up a run
or a click's answer. Posting and closing come in bursts (an alert storm's reviews, a
reviewer approving a batch, an incident's worth of clicks), so they go through the queue's
inbox (:mod:`engine.state.inbox`), many to a job, as do the rewrites of digests
(:mod:`bot.digest`). Jobs are named by import path, so this module does not import the job
bodies (which import the listeners that queue work here).

Work that fails is retried with backoff (a post: after 10 s, 30 s, 2 min, 10 min and 30
min); when a post's retries run out the run still waits and ``signoff redeliver ID`` posts
the review again. A job Slack refuses for a rate limit (429, :mod:`bot.ratelimit`: a post
over a channel's posting limit, a rewrite over ``chat.update``'s, a DM, a thread note...) is
not a failure and does not wait in its worker: :func:`put_off_when_limited` queues it again
for its slot after the Retry-After, its retries untouched, through RQ's scheduler (every
``signoff worker`` runs one).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar, cast

import redis
from rq import Queue, Retry

from bot.delivery import closed_to_json
from bot.ratelimit import RateLimited, slot
from bot.review_changes import change_to_json
from engine.notify import ReviewChange, ReviewClosed
from engine.run.timers import Scheduler
from engine.state.inbox import Task
from engine.worker.scheduler import FAILURE_TTL

log = logging.getLogger(__name__)

QUEUE = "slack"  # also the name of the bot's entry point in signoff.queues
JOBS = "bot.jobs"
JOB_TIMEOUT = 300
REPLY_TIMEOUT = 60
# Slack's own retries (429 with Retry-After, 5xx, resets) run inside each call first.
DELIVERY_RETRY = (10, 30, 120, 600, 1800)
REPLY_RETRY = (2, 10)  # an ephemeral is worth little once the reviewer has moved on


class Outbox:
    """Queues the bot's Slack work through ``scheduler``."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def post(self, execution_id: str, step: str) -> None:
        """Post the review ``execution_id`` waits on at ``step`` (through the inbox: in an
        alert storm, hundreds of reviews start waiting within seconds, and an RQ job each
        would cost the workers more than posting them)."""
        self.scheduler.hand_in_to(QUEUE, f"{JOBS}.post_review", execution_id, step,
                                  retry=DELIVERY_RETRY)

    def refresh_digest(self, pile_id: str) -> None:
        """Bring a digest's message up to date with its pile (through the inbox, so that a
        burst of reviews joining or leaving it costs one rewrite, :mod:`bot.digest`)."""
        self.scheduler.hand_in_to(QUEUE, f"{JOBS}.refresh_digest", pile_id,
                                  retry=DELIVERY_RETRY)

    def follow(self, change: ReviewChange) -> None:
        """Bring a waiting review's messages in step with ``change``."""
        review = change.review
        self.scheduler.enqueue_to(
            QUEUE, f"{JOBS}.follow_review", review.execution_id, review.step,
            change_to_json(change), retry=DELIVERY_RETRY, timeout=JOB_TIMEOUT,
            description=f"{change.kind} review {review.step} of {review.execution_id}")

    def close(self, closed: ReviewClosed) -> None:
        """Mark a closed review's messages closed (through the inbox)."""
        task = close_task(closed)
        self.scheduler.hand_in_to(QUEUE, task.function, *task.args, retry=task.retry)

    def learn_name(self, user_id: str) -> None:
        """Look up and cache the name Slack shows for ``user_id`` (through the inbox; best
        effort: a failure is logged, never retried)."""
        self.scheduler.hand_in_to(QUEUE, f"{JOBS}.learn_name", user_id)

    def reply(self, channel: str, user: str, message: Mapping[str, Any]) -> None:
        """Show ``message`` to ``user`` alone in ``channel``."""
        self.scheduler.enqueue_to(QUEUE, f"{JOBS}.post_ephemeral", channel, user, dict(message),
                                  retry=REPLY_RETRY, timeout=REPLY_TIMEOUT,
                                  description=f"ephemeral to {user} in {channel}")


def close_task(closed: ReviewClosed) -> Task:
    """The inbox task that marks a closed review's messages closed: queued on the ``slack``
    queue by :meth:`Outbox.close`, or carried by the decision's own commit
    (:class:`engine.notify.CarriesClosing`)."""
    return Task(f"{JOBS}.update_review", (closed.execution_id, closed.step,
                                          closed_to_json(closed)), retry=DELIVERY_RETRY,
                home=QUEUE)


Job = TypeVar("Job", bound=Callable[..., Any])


def put_off_when_limited(connection: Callable[[], redis.Redis]) -> Callable[[Job], Job]:
    """Make a ``slack`` queue job (a function of :data:`JOBS`, positional arguments) that
    meets Slack's rate limit queue itself again, with the same arguments, for its slot after
    the Retry-After (:func:`bot.ratelimit.slot`), rather than wait or fail; it then returns
    None. ``connection``: the Redis of the job's runtime."""
    def wrap(job: Job) -> Job:
        @functools.wraps(job)
        def limited(*args: Any) -> Any:
            try:
                return job(*args)
            except RateLimited as exc:
                redis_ = connection()
                seconds = slot(redis_, exc.scope, exc.retry_after)
                named = " ".join(a for a in args if isinstance(a, str))
                log.info("%s %s waits %.1f s for Slack's limit on %s", job.__name__, named,
                         seconds, exc.scope)
                again_later(redis_, seconds, job.__name__, *args,
                            description=f"{job.__name__} {named} (after Slack's limit on "
                                        f"{exc.scope})")
                return None
        return cast(Job, limited)
    return wrap


def again_later(connection: redis.Redis, seconds: float, job: str, *args: Any,
                description: str) -> None:
    """Run the ``slack`` queue's ``job`` with ``args`` in ``seconds`` (RQ's scheduler keeps
    whole seconds), with a job's full retries."""
    queue = Queue(QUEUE, connection=connection)
    options: dict[str, Any] = {
        "job_timeout": JOB_TIMEOUT, "result_ttl": 0, "failure_ttl": FAILURE_TTL,
        "description": description,
        "retry": Retry(max=len(DELIVERY_RETRY), interval=list(DELIVERY_RETRY))}
    if seconds <= 0:  # "Retry-After: 0": now, behind what is queued
        queue.enqueue(f"{JOBS}.{job}", *args, **options)
        return
    delay = timedelta(seconds=seconds)
    queue.enqueue_in(delay, f"{JOBS}.{job}", *args, **options)
