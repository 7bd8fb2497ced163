"""RQ entry points and inbox tasks on the ``slack`` queue: post a review, refresh a digest
(:mod:`bot.digest`), follow a review's changes (escalation, reassignment, quorum,
reminders), mark it closed, reply to one person, learn a clicker's display name (all
queued by :mod:`bot.outbox`), and record a one-click decision (handed in by a click's
listener), or, when every try at that failed, audit the click as lost and tell the
clicker. A job that calls Slack comes back
later when Slack's rate limit refuses it (:func:`bot.outbox.put_off_when_limited`,
:mod:`bot.ratelimit`): no worker waits a 429 out.

Slack is called only from here (and from ``views.open`` in a click's listener), so a
slow or failing Slack never holds up a run or a click's answer. The rewrite of a message
whose click came alone runs in the engine's drain that decided it, after the run's next
segment (:class:`engine.notify.CarriesClosing`); its retries go to the slack queue, and a
worker that lately failed to reach Slack leaves such rewrites to the slack queue.

Jobs find the process's :class:`BotRuntime` through :func:`bot_runtime`: tests and
embedders install one; otherwise it is built once from the environment, on the
engine runtime of the worker running the job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import texts
from bot.blocks import ephemeral_text
from bot.delivery import Closing, Deliverer, closed_from_json
from bot.digest import TooSoon
from bot.directory import Directory
from bot.forms import ReviewRef
from bot.handlers import Reviewer, ReviewListeners
from bot.outbox import Outbox, again_later, put_off_when_limited
from bot.ratelimit import limited
from bot.review_changes import ReviewChanges
from bot.settings import BotSettings
from bot.slack import web_client
from engine.connectors import Connectors
from engine.errors import ExecutionNotFound
from engine.run.engine import Engine
from engine.state.inbox import running_task
from engine.worker.runtime import runtime

log = logging.getLogger(__name__)


@dataclass
class BotRuntime:
    settings: BotSettings
    engine: Engine
    client: WebClient
    directory: Directory
    connectors: Connectors = field(default_factory=Connectors)  # SIGNOFF_CONNECTORS

    @cached_property
    def deliverer(self) -> Deliverer:
        """Built once per runtime (it wraps the client for Slack's posting limit and registers
        its scripts: work a click's rewrite would otherwise pay each time)."""
        return Deliverer(self.engine, self.client, self.directory, self.settings.channel,
                         self.connectors, digest_after=self.settings.digest_after,
                         digest_every=self.settings.digest_every,
                         refresh_digest=Outbox(self.engine.scheduler).refresh_digest)

    @property
    def review_changes(self) -> ReviewChanges:
        return ReviewChanges(self.deliverer)

    @property
    def listeners(self) -> ReviewListeners:
        return ReviewListeners(self.engine, self.directory,
                               proceed=runtime().runner.continue_decided,
                               leaving=self.deliverer.leaving)


def build_bot_runtime(settings: BotSettings, engine: Engine,
                      client: WebClient | None = None,
                      connectors: Connectors | None = None) -> BotRuntime:
    # Never waits a 429 out; the limits it meets are shared through Redis (bot.ratelimit).
    client = limited(client or web_client(settings), engine.store.redis)
    directory = Directory(client, engine.store, ttl=settings.cache_seconds)
    engine.people = directory  # the engine's rules on who may act ask Slack who is who
    return BotRuntime(settings, engine, client, directory, connectors or Connectors())


_installed: dict[int, BotRuntime] = {}
_lock = threading.Lock()


def install_bot_runtime(runtime_: BotRuntime | None) -> None:
    """Make ``runtime_`` the one jobs in this process use (None: build from the environment)."""
    with _lock:
        _installed.clear()
        if runtime_ is not None:
            _installed[0] = runtime_


def bot_runtime() -> BotRuntime:
    engine = runtime().engine
    with _lock:
        if 0 in _installed:
            return _installed[0]
        key = id(engine)
        if key not in _installed:
            _installed[key] = build_bot_runtime(BotSettings.from_env(), engine,
                                                connectors=runtime().settings.connectors)
        return _installed[key]


# -- jobs --------------------------------------------------------------------------------------

def _redis() -> redis.Redis:
    return bot_runtime().engine.store.redis


# What a job did before Slack's limit refused it is recorded (posts, thread notes, reminders on
# the delivery record) and not done again; rewrites show the review as it stands then.
put_off = put_off_when_limited(_redis)


@put_off
def post_review(execution_id: str, step: str) -> int:
    """Post the review ``execution_id`` waits on at ``step``; returns how many messages.
    At Slack's posting limit for a channel, it comes back once the limit allows (the posts
    made already are recorded and not made again)."""
    delivery = bot_runtime().deliverer.deliver(execution_id, step)
    return len(delivery.posts) if delivery else 0


@put_off
def refresh_digest(pile: str) -> int | None:
    """Bring a digest's count up to date (an inbox task, :mod:`bot.digest`); rewritten
    less than ``digest_every`` seconds ago, it comes back once that has passed."""
    rt = bot_runtime()
    try:
        return rt.deliverer.digests.refresh(pile)
    except TooSoon as soon:
        again_later(rt.engine.store.redis, soon.seconds, "refresh_digest", pile,
                    description=f"refresh digest {pile} (at most one rewrite each "
                                f"{rt.settings.digest_every:g} s)")
        return None


@put_off
def follow_review(execution_id: str, step: str, change: Mapping[str, Any]) -> int:
    """Bring the review's messages in step with a change while it waits (escalated,
    reassigned, a quorum approval, a reminder); returns how many messages it touched."""
    return bot_runtime().review_changes.apply(execution_id, step, change)


@put_off
def update_review(execution_id: str, step: str, closed: Mapping[str, Any] | None = None) -> int:
    """Replace a closed review's buttons with who decided what, in every message showing it."""
    record = closed_from_json(closed) if closed else None
    task = running_task()  # carried by the click's commit: what it read and committed
    handed = task.handed if task is not None and isinstance(task.handed, Closing) else None
    return bot_runtime().deliverer.close(execution_id, step, record,
                                         known=handed.known if handed else None,
                                         left=handed.left if handed else None)


def decide_click(reviewer: Mapping[str, Any], ref: str, approved: bool) -> None:
    """Record a one-click Approve / Deny (an inbox task), and continue the run here."""
    bot_runtime().listeners.decide_click(Reviewer.from_json(reviewer),
                                                ReviewRef.decode(ref), approved=approved,
                                                task=running_task())


def click_lost(error: str, reviewer: Mapping[str, Any], ref: str, approved: bool) -> None:
    """Every try of a one-click decision failed (``decide_click``'s ``on_failure``): audit
    it on the run, with who clicked and the last error, and tell them to click again."""
    rt = bot_runtime()
    who, review = Reviewer.from_json(reviewer), ReviewRef.decode(ref)
    log.error("the %s of %s on %s (step %s) was acknowledged to Slack but never recorded: %s",
              "approval" if approved else "denial", who.user_id, review.execution_id,
              review.step, error)
    try:
        rt.engine.record_lost_decision(review.execution_id,
                                       who.actor(rt.directory, ask_slack=False),
                                       step=review.step, approved=approved,
                                       error=error)
    except ExecutionNotFound:
        log.warning("%s is gone; the lost click is not audited", review.execution_id)
    if who.channel is None:
        log.warning("no channel to tell %s their click was lost in", who.user_id)
        return
    Outbox(rt.engine.scheduler).reply(who.channel, who.user_id,
                                      ephemeral_text(texts.CLICK_NOT_RECORDED))


def learn_name(user_id: str) -> None:
    """Cache the name Slack shows for ``user_id``, best effort (an inbox task that never
    fails: a click is recorded before its clicker's name is known, and never waits for it)."""
    try:
        bot_runtime().directory.display_name(user_id)
    except Exception:
        log.warning("could not look up the name of %s", user_id, exc_info=True)


@put_off
def post_ephemeral(channel: str, user: str, message: Mapping[str, Any]) -> None:
    """Show ``message`` to ``user`` alone in ``channel``."""
    try:
        bot_runtime().client.chat_postEphemeral(channel=channel, user=user, **dict(message))
    except SlackApiError as exc:
        if exc.response.get("error") in ("user_not_in_channel", "channel_not_found"):
            log.warning("could not show %s a reply in %s: %s", user, channel,
                        exc.response.get("error"))
            return
        raise
