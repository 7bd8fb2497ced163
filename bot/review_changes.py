"""Keeping a posted review in step while it waits: escalation, reassignment, quorum, reminders.

The engine tells the notifier about each :class:`engine.notify.ReviewChange`; a job
on the ``slack`` queue brings it here:

- ``escalated`` / ``reassigned``: the added approvers are resolved and may decide from
  now on (earlier ones keep the right), each gets the full review as a DM (and a
  level's own ``channel`` gets it too), a thread reply under the earlier messages
  says who it went to and why, and those messages are rewritten to show the level
  and the approvers; the added approvers and the level's channel are indexed for
  ``/approvals all`` (:mod:`bot.visibility`);
- ``approval``: the messages are rewritten to show the quorum so far;
- ``reminder``: each current approver gets a DM linking to the review.

Every step is recorded on the :class:`bot.delivery.Delivery` as it is done, so a
retried job does not post twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from slack_sdk.errors import SlackApiError

from bot import texts
from bot.blocks import thread_note
from bot.delivery import (
    Deliverer,
    Delivery,
    Post,
    deciders,
    load_delivery,
    permalink,
    save_delivery,
    widened,
)
from bot.forms import decision_line
from bot.mrkdwn import (
    DATE_AT_TIME,
    escape_mrkdwn,
    is_user_id,
    mention_approver,
    mention_user,
    slack_date,
)
from engine.notify import Actor, ReviewChange, ReviewRequest
from engine.state.execution import iso

log = logging.getLogger(__name__)

ESCALATED = "escalated"
REASSIGNED = "reassigned"
APPROVAL = "approval"
REMINDER = "reminder"


def change_to_json(change: ReviewChange) -> dict[str, Any]:
    """What a job needs of a change; the review itself is read afresh when the job runs."""
    return {"kind": change.kind, "actor": change.actor.to_json(), "at": iso(change.at),
            "reason": change.reason, "added": list(change.added), "level": change.level,
            "channel": change.channel, "since": iso(change.review.created_at)}


class ReviewChanges:
    """Applies review changes to the messages a :class:`Deliverer` posted."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self.engine = deliverer.engine
        self.client = deliverer.client
        self.directory = deliverer.directory

    def apply(self, execution_id: str, step: str, change: Mapping[str, Any]) -> int:
        """Bring Slack in step with ``change``; returns how many messages were posted or
        rewritten (0 when the review has closed since: its close job has the last word)."""
        review = self.engine.review(execution_id)
        if review is None or review.step != step or iso(review.created_at) != change["since"]:
            return 0
        delivery = load_delivery(self.engine, execution_id, step)
        if delivery is None or not delivery.same_review(review):
            # Never posted (its post job is still being retried): post it now, as it
            # stands, to everyone it concerns by now.
            delivery = self.deliverer.deliver(execution_id, step)
            if delivery is None:
                return 0
        kind = str(change["kind"])
        if kind == REMINDER:
            return self._remind(review, delivery, change)
        if kind in (ESCALATED, REASSIGNED):
            return self._widen(review, delivery, change)
        if kind == APPROVAL:
            count = self.deliverer.rewrite(delivery.posts,
                                           self.deliverer.render(review, delivery))
            self.deliverer.catch_up(delivery)
            return count
        log.warning("unknown review change %r on %s", kind, execution_id)
        return 0

    # -- more people may decide ------------------------------------------------------------

    def _widen(self, review: ReviewRequest, delivery: Delivery,
               change: Mapping[str, Any]) -> int:
        added = tuple(str(a) for a in change.get("added") or ())
        delivery = widened(delivery, added, self.directory)
        save_delivery(self.engine, delivery)  # the new approvers may decide from here on
        review = self.deliverer.share_audience(review, delivery)
        self.deliverer.index_viewers(review, delivery)  # they may see it from now on
        # Who could decide before this change (a retried job finds them widened already).
        before = self.directory.resolve_approvers(
            tuple(s for s in delivery.sources if s not in added)).user_ids
        may_decide = deciders(self.engine, review, delivery)
        done = {p.to for p in delivery.posts}
        earlier = self.deliverer.own_posts(delivery.posts)  # a digest gets no thread note
        message = self.deliverer.render(review, delivery)
        resolved = self.directory.resolve_approvers(added)
        count = 0
        for user in resolved.user_ids:
            if user in may_decide and user not in before and user not in done:
                delivery = self.deliverer.post(delivery, user, message, dm=True)
                count += 1
        channel = change.get("channel")
        if channel and channel not in done:
            delivery = self.deliverer.post(delivery, str(channel), message, dm=False)
            count += 1
        note = self._note(change, resolved.shown or added)
        key = f"{change['kind']}:{change['level']}:{change['at']}"
        for post in earlier:
            delivery = self._reply_once(delivery, post, f"{key}@{post.channel}/{post.ts}", note)
        count += self.deliverer.rewrite(earlier, message)
        self.deliverer.index_viewers(review, delivery)  # the level's channel, posted in now
        self.deliverer.catch_up(delivery)
        return count

    def _note(self, change: Mapping[str, Any], shown: tuple[str, ...]) -> str:
        who = ", ".join(mention_approver(a) for a in shown)
        actor = Actor.from_json(change["actor"])
        if change["kind"] == REASSIGNED:
            return texts.reassigned(who, _mention(actor))
        by = None if actor.source == "system" else _mention(actor)
        return texts.escalated(who, by, escape_mrkdwn(str(change.get("reason") or "")))

    def _reply_once(self, delivery: Delivery, post: Post, key: str, mrkdwn: str) -> Delivery:
        if key in delivery.sent:
            return delivery
        try:
            self.client.chat_postMessage(channel=post.channel, thread_ts=post.ts,
                                         **thread_note(mrkdwn))
        except SlackApiError as exc:
            if exc.response.get("error") not in ("thread_not_found", "channel_not_found",
                                                 "is_archived", "message_not_found"):
                raise
            log.warning("no thread to reply in at %s/%s: %s", post.channel, post.ts,
                        exc.response.get("error"))
        delivery = replace(delivery, sent=(*delivery.sent, key))
        save_delivery(self.engine, delivery)
        return delivery

    # -- reminders --------------------------------------------------------------------------

    def _remind(self, review: ReviewRequest, delivery: Delivery,
                change: Mapping[str, Any]) -> int:
        if review.level != int(change["level"]):
            return 0  # it escalated since: the new level's own reminder will come
        when = slack_date(review.sla_due_at, DATE_AT_TIME) if review.sla_due_at else None
        title = escape_mrkdwn(decision_line(review))
        links: dict[str, str | None] = {}
        count = 0
        for user in deciders(self.engine, review, delivery):
            key = f"remind:{review.level}:{change['at']}:{user}"
            if key in delivery.sent:
                continue
            post = _post_for(delivery, user)
            if post is not None and post.ts not in links:
                links[post.ts] = permalink(self.client, post)
            link = links.get(post.ts) if post is not None else None
            self.client.chat_postMessage(channel=self.deliverer.open_dm(user),
                                         **thread_note(texts.reminder(title, when, link)))
            delivery = replace(delivery, sent=(*delivery.sent, key))
            save_delivery(self.engine, delivery)
            count += 1
        return count


def _post_for(delivery: Delivery, user: str) -> Post | None:
    """The message ``user`` is best sent to: their own DM, else the first channel post."""
    own = next((p for p in delivery.posts if p.to == user), None)
    if own is not None:
        return own
    return next((p for p in delivery.posts if not is_user_id(p.to)), None)


def _mention(actor: Actor) -> str:
    return mention_user(actor.id) if is_user_id(actor.id) else escape_mrkdwn(actor.display)
