"""Delivering a review to Slack, and marking it closed there.

Where a review went is kept on its execution as the annotation ``slack:{step}``
(a :class:`Delivery`): the messages posted (channel and ts), the approvers and
requester as resolved (widened as the review escalates or is reassigned), and a
copy of the review, so the messages can be rewritten once the run has moved on. The
copy holds the message's hash and first line, not the message: the audit trail keeps
it, and the rewrite reads it back from there (``Store.review_message``). The record is
stored compressed (``Store.set_annotation``).
Posting is idempotent per recipient: a retried job posts only where the last
attempt did not get to. Everyone a posted review is shown to is indexed for
``/approvals all`` (:mod:`bot.visibility`), and taken out again when it closes. Elastic
9.5's ``with.channels`` (:mod:`bot.channels`) add channels, a lead text on their posts, and
an incoming webhook's notification, sent once the review is posted so it can link to it.
Posts go out within Slack's posting limit (:mod:`bot.ratelimit`: a 429 puts the post job off
until the channel's Retry-After has passed, holding no worker); in an alert storm, reviews of
a step past ``SIGNOFF_SLACK_DIGEST_AFTER`` in one channel join that channel's digest instead
of a message each (:mod:`bot.digest`), recorded as a post of the digest's message, which
closing a review never rewrites.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, replace
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import channels as external
from bot import texts
from bot.blocks import ReviewContext, decided_message, ephemeral_already_decided, review_message
from bot.digest import DIGEST_AFTER, Digests
from bot.directory import Directory
from bot.mrkdwn import is_user_id
from bot.ratelimit import ChannelLimits, LimitedClient
from bot.visibility import Visibility
from bot.webhooks import WebhookRefused, post_to_webhook
from engine.connectors import Connectors
from engine.errors import ExecutionNotFound, SignoffError
from engine.notify import SYSTEM_TIMEOUT, Actor, ReviewClosed, ReviewRequest
from engine.run import escalation
from engine.run.engine import Engine
from engine.state import audit, messages
from engine.state.batch import Batch
from engine.state.execution import (
    ExecutionState,
    ExecutionStatus,
    StepStatus,
    dumps,
    first_line,
    iso,
    parse_iso,
)
from engine.state.store import Alongside, Annotated

log = logging.getLogger(__name__)

_GONE = {"message_not_found", "channel_not_found", "is_archived", "cant_update_message"}


class DeliveryError(SignoffError):
    """A review cannot be posted as configured (no channel and nobody to DM)."""


@dataclass(frozen=True)
class Post:
    """One message showing the review: ``to`` is the channel asked for, or the DM'd user."""

    to: str
    channel: str
    ts: str
    lead: str = ""  # mrkdwn shown above the review (with.channels.slack_api.message)


@dataclass(frozen=True)
class Delivery:
    """Where one review (one step instance, known by when it started waiting) was posted."""

    execution_id: str
    step: str
    since: str
    approvers: tuple[str, ...]  # user ids who may decide; empty: anyone who sees it
    restricted: bool  # the step names approvers (even if none of them resolved)
    shown: tuple[str, ...]  # U… and S… ids for the context line
    requester: str | None  # the run's requester as a user id, when it is one
    posts: tuple[Post, ...]
    review: Mapping[str, Any]  # review_to_json() of what was posted
    sources: tuple[str, ...] = ()  # approver entries as written that ``approvers`` covers
    sent: tuple[str, ...] = ()  # thread replies and reminders already sent (retries skip them)
    failures: tuple[str, ...] = ()  # notifications refused for good (connector id and why)

    def to_json(self) -> dict[str, Any]:
        """The record as stored: empty and default values left out (``sources`` when it is
        the copy's approvers, a post's ``channel`` when it is its ``to``), without its
        execution id and step (the annotation it is stored as names them: read back with
        :meth:`from_json`'s), the review's copy without its execution id, step and start
        (the record's own) and without its message, which the audit trail keeps (see
        :func:`review_to_json`)."""
        data: dict[str, Any] = {"since": self.since}  # its execution and step: its key
        for name in ("approvers", "restricted", "shown", "requester", "sources", "sent",
                     "failures"):
            value = getattr(self, name)
            if value:
                data[name] = value
        if tuple(self.review.get("approvers") or ()) == self.sources:
            data.pop("sources", None)  # read back from the copy's approvers
        # A post's channel is left out when it is the one asked for (``to``).
        data["posts"] = [{k: v for k, v in asdict(p).items()
                          if v and not (k == "channel" and v == p.to)} for p in self.posts]
        # The copy's execution id, step and start are the record's own.
        same = {"execution_id": self.execution_id, "step": self.step, "created_at": self.since}
        data["review"] = {k: v for k, v in self.review.items()
                          if k not in same or v != same[k]}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], execution_id: str, step: str) -> Delivery:
        """The record ``to_json`` stored as the annotation of ``execution_id``'s ``step``
        (records written by earlier versions name both themselves)."""
        execution_id = str(data.get("execution_id") or execution_id)
        step = str(data.get("step") or step)
        review = data.get("review") or {}
        if review:
            review = {"execution_id": execution_id, "step": step,
                      "created_at": str(data["since"]), **review}
        return cls(
            execution_id=execution_id, step=step,
            since=str(data["since"]), approvers=tuple(data.get("approvers") or ()),
            restricted=bool(data.get("restricted")), shown=tuple(data.get("shown") or ()),
            requester=data.get("requester"),
            posts=_posts(data),
            review=review,
            sources=tuple(data.get("sources") or review.get("approvers") or ()),
            sent=tuple(data.get("sent") or ()),
            failures=tuple(data.get("failures") or ()),
        )

    def same_review(self, review: ReviewRequest) -> bool:
        return self.step == review.step and self.since == iso(review.created_at)


def _posts(data: Mapping[str, Any]) -> tuple[Post, ...]:
    return tuple(Post(**{"channel": p["to"], **p}) for p in data.get("posts") or ())


def stored_posts(data: Any, review: ReviewRequest) -> tuple[Post, ...]:
    """The posts of ``review`` in a delivery record as read (its note: None when unset),
    as ``Delivery.from_json(data, …).posts`` when the record is ``review``'s (``same_review``),
    else none; without reading the rest of the record (a listing's row needs no more)."""
    if not isinstance(data, Mapping):
        return ()
    step = str(data.get("step") or review.step)
    if step != review.step or str(data["since"]) != iso(review.created_at):
        return ()
    return _posts(data)


def new_delivery(review: ReviewRequest, directory: Directory) -> Delivery:
    """A review's delivery before anything is posted: its approvers and requester resolved."""
    resolved = directory.resolve_approvers(review.approvers)
    requester = directory.user_id(review.requested_by) if review.requested_by else None
    return Delivery(execution_id=review.execution_id, step=review.step,
                    since=iso(review.created_at) or "", approvers=resolved.user_ids,
                    restricted=bool(review.approvers), shown=resolved.shown,
                    requester=requester, posts=(), review=review_to_json(review),
                    sources=tuple(review.approvers))


def widened(delivery: Delivery, entries: tuple[str, ...], directory: Directory) -> Delivery:
    """``delivery`` with ``entries`` (approvers as written) resolved and added to those before."""
    missing = tuple(e for e in entries if e not in delivery.sources)
    if not missing:
        return delivery
    resolved = directory.resolve_approvers(missing)
    return replace(delivery, approvers=escalation.merged(delivery.approvers, resolved.user_ids),
                   shown=escalation.merged(delivery.shown, resolved.shown),
                   sources=escalation.merged(delivery.sources, missing))


def current_delivery(review: ReviewRequest, stored: Delivery | None,
                     directory: Directory) -> Delivery:
    """``review``'s delivery record (``stored``, as loaded), its approvers as the review
    names them now."""
    if stored is None or not stored.same_review(review):
        # Not recorded yet (the record is written right after each post): resolve as the
        # post job does, from the same cache.
        return new_delivery(review, directory)
    # Approvers added by an escalation or a reassignment may act at once, before the job
    # that tells Slack about them has run.
    return widened(stored, review.approvers, directory)


def refusal(engine: Engine, review: ReviewRequest, user_id: str) -> str | None:
    """Why ``user_id`` may not act on ``review``, in a reviewer's words; None when they may.
    The engine decides (its people are the bot's Slack directory)."""
    reason = engine.refusal(review, user_id)
    return texts.REFUSALS[reason] if reason is not None else None


def permalink(client: WebClient, post: Post) -> str | None:
    """A link to the message ``post``; None (logged) when Slack will not give one."""
    try:
        found = client.chat_getPermalink(channel=post.channel, message_ts=post.ts)
    except SlackApiError as exc:
        log.warning("no permalink for %s/%s: %s", post.channel, post.ts,
                    exc.response.get("error"))
        return None
    return str(found["permalink"])


def deciders(engine: Engine, review: ReviewRequest, delivery: Delivery) -> tuple[str, ...]:
    """The approvers ``delivery`` resolved who may decide ``review``, as the engine says."""
    return engine.deciders(review, delivery.approvers)


def annotation_key(step: str) -> str:
    return f"slack:{step}"


def load_delivery(engine: Engine, execution_id: str, step: str) -> Delivery | None:
    data = engine.annotation(execution_id, annotation_key(step))
    return Delivery.from_json(data, execution_id, step) if isinstance(data, Mapping) else None


def save_delivery(engine: Engine, delivery: Delivery) -> None:
    engine.annotate(delivery.execution_id, annotation_key(delivery.step), delivery.to_json())


# -- the review as it was posted ---------------------------------------------------------------

_REVIEW_DEFAULTS = {name: f.default for name, f in ReviewRequest.__dataclass_fields__.items()
                    if f.default is not MISSING}


def review_to_json(review: ReviewRequest) -> dict[str, Any]:
    """A copy of ``review`` as posted, for rewriting its messages once the run has moved on:
    default values left out, and its message as its first line (``title``) and hash; the
    message itself is in the audit trail (:meth:`engine.state.store.Store.review_message`)."""
    data = asdict(review)
    for name in ("created_at", "due_at", "sla_due_at"):
        data[name] = iso(getattr(review, name))
    data["title"] = first_line(data.pop("message"))
    return {k: v for k, v in data.items()
            if k not in _REVIEW_DEFAULTS or v != _REVIEW_DEFAULTS[k] and v not in ((), [])}


def review_from_json(data: Mapping[str, Any], message: str | None = None) -> ReviewRequest:
    """The review a record's copy describes; its message is ``message`` when given, else
    its first line (enough for a title)."""
    fields = dict(data)
    title = fields.pop("title", None)
    fields["message"] = message if message is not None else fields.get("message", title or "")
    for name in ("created_at", "due_at", "sla_due_at"):
        fields[name] = parse_iso(fields.get(name))
    for name in ("approvers", "approvals", "audience", "handed", "channels"):
        fields[name] = tuple(fields.get(name) or ())
    return ReviewRequest(**fields)


def closed_to_json(closed: ReviewClosed) -> dict[str, Any]:
    return {"execution_id": closed.execution_id, "workflow": closed.workflow,
            "step": closed.step, "outcome": closed.outcome, "actor": closed.actor.to_json(),
            "at": iso(closed.at), "input": dict(closed.input), "reason": closed.reason}


def closed_from_json(data: Mapping[str, Any]) -> ReviewClosed:
    at = parse_iso(data["at"])
    assert at is not None
    return ReviewClosed(execution_id=str(data["execution_id"]), workflow=str(data["workflow"]),
                        step=str(data["step"]), outcome=str(data["outcome"]),
                        actor=Actor.from_json(data["actor"]), at=at,
                        input=data.get("input") or {}, reason=str(data.get("reason") or ""))


def closed_from_state(engine: Engine, state: ExecutionState, step: str,
                      since: str | None = None) -> ReviewClosed | None:
    """How ``step``'s review ended, read back from the execution; None while it still waits.

    ``since`` (when the review started waiting) tells one instance of a step in a
    ``foreach`` from the next.
    """
    waiting = state.waiting
    if (state.status is ExecutionStatus.WAITING_FOR_INPUT and waiting is not None
            and waiting.step == step and since in (None, waiting.since)):
        return None
    # How each instance of the step ended (more than one inside a foreach): decided, or
    # failed once its timeout passed (``on-timeout: fail`` or ``continue``).
    ended = [ReviewClosed(execution_id=state.id, workflow=state.workflow, step=step,
                          outcome=d.outcome, actor=Actor.from_json(d.actor),
                          at=_moment(d.at, state), input=d.input)
             for d in state.decisions.values() if d.step == step]
    ended += [ReviewClosed(execution_id=state.id, workflow=state.workflow, step=step,
                           outcome="timed_out", actor=SYSTEM_TIMEOUT,
                           at=_moment(r.finished_at, state), reason=r.error or "")
              for path, r in state.results.items()
              if r.status is StepStatus.FAILED and _instance_of(path, step)]
    if ended:
        # The instance that started waiting at ``since`` ended first after it; else the last.
        # Strictly after: times are in milliseconds, and the decision that closed the
        # instance before can fall in the millisecond the next one started waiting.
        start = parse_iso(since) if since else None
        after = [c for c in ended if start is not None and c.at > start]
        return min(after, key=lambda c: c.at) if after else max(ended, key=lambda c: c.at)
    if state.status in (ExecutionStatus.CANCELLED, ExecutionStatus.TIMED_OUT):
        outcome = "cancelled" if state.status is ExecutionStatus.CANCELLED else "timed_out"
        actor = SYSTEM_TIMEOUT
        kind = audit.CANCELLED if outcome == "cancelled" else audit.TIMED_OUT
        entries: list[audit.AuditEntry] = engine.audit_entries(state.id)
        for entry in reversed(entries):
            if entry.event.get("type") == kind and isinstance(entry.event.get("actor"), Mapping):
                actor = Actor.from_json(entry.event["actor"])
                break
        at = parse_iso(state.finished_at) or parse_iso(state.started_at)
        assert at is not None
        return ReviewClosed(execution_id=state.id, workflow=state.workflow, step=step,
                            outcome=outcome, actor=actor, at=at, reason=state.error or "")
    return None


def _instance_of(path: str, step: str) -> bool:
    """Whether ``path`` names an instance of ``step``: itself, or inside a foreach
    (``hosts[0].review``); step names are unique in a workflow."""
    return path == step or path.endswith(f".{step}")


def _moment(at: str | None, state: ExecutionState) -> datetime:
    return parse_iso(at) or parse_iso(state.started_at) or datetime.now().astimezone()


# -- posting -----------------------------------------------------------------------------------

class Deliverer:
    """Posts reviews, keeps their messages in step while they wait, and rewrites them once
    closed, for one workspace."""

    def __init__(self, engine: Engine, client: WebClient, directory: Directory,
                 default_channel: str | None, connectors: Connectors | None = None, *,
                 digest_after: int = DIGEST_AFTER, digest_every: float = 0.0,
                 refresh_digest: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.client = client
        self.directory = directory
        self.default_channel = default_channel
        self.connectors = connectors or Connectors()
        self.visibility = Visibility(engine.store, directory)
        self.limits = ChannelLimits(engine.store.redis, client)
        # refresh_digest: hand a digest's rewrite to a job (Outbox.refresh_digest); None: now.
        self.digests = Digests(engine, client, self.limits, threshold=digest_after,
                               every=digest_every, refresh_later=refresh_digest)
        self._app_home: str | None = None

    def deliver(self, execution_id: str, step: str, *, again: bool = False) -> Delivery | None:
        """Post the review ``execution_id`` waits on at ``step``; None if it no longer waits.

        ``again`` posts it anew everywhere (``signoff redeliver``); otherwise only where
        an earlier attempt did not get to.
        """
        review = self.engine.review(execution_id)
        if review is None or review.step != step:
            log.info("%s no longer waits on %s: nothing to post", execution_id, step)
            return None
        delivery = load_delivery(self.engine, execution_id, step)
        if delivery is None or not delivery.same_review(review):
            delivery = new_delivery(review, self.directory)
        channels = external.review_channels(review, self.default_channel, self.connectors)
        targets = channels or list(delivery.approvers)
        if not targets:
            raise DeliveryError(
                f"review {step} of {execution_id} has nowhere to go: set `channel` on the step "
                "or SIGNOFF_SLACK_CHANNEL, or name approvers to message them directly")
        message = self.render(review, delivery)
        api_channels, refused = external.api_channels(review, self.connectors)
        lead = external.api_lead(review, self.app_home_link() if external.needs_link(review)
                                 else None)
        done = set() if again else {p.to for p in delivery.posts}
        for target in targets:
            if target in done:
                continue
            # `signoff redeliver` (again) gives the review a message of its own.
            digest = self.digests.absorb(review, target) if channels and not again else None
            if digest is not None:  # an alert storm: the step's digest shows it
                delivery = replace(delivery, posts=(*delivery.posts, Post(
                    to=target, channel=digest[0], ts=digest[1])))
                save_delivery(self.engine, delivery)
                continue
            delivery = self.post(delivery, target, message, dm=not channels,
                                 lead=lead if target in api_channels else "")
        for channel in refused:
            delivery = self.record_failure(delivery, f"slack_api:{channel}", texts.channel_refused(
                channel, str(external.channel_options(review, external.API)["connector-id"])))
        review = self.share_audience(review, delivery)
        self.index_viewers(review, delivery)
        if self.unanswerable(review, delivery) and review.level == 0:
            # A vote that can never count: send it on rather than let it wait for nobody.
            self.engine.escalate_unanswerable(execution_id, step, texts.UNANSWERABLE_REASON)
        if not self.catch_up(delivery):
            delivery = self.notify_webhook(review, delivery, again=again)
        return delivery

    def notify_webhook(self, review: ReviewRequest, delivery: Delivery, *,
                       again: bool = False) -> Delivery:
        """Post the ``slack`` webhook's notification, once (``again``: anew), linking to the
        review; a refusal for good is recorded, not retried. Raises WebhookUnavailable (the
        job is retried) while the webhook cannot take it."""
        connection = self.connectors.webhook(external.webhook_connector(review))
        if connection is None:
            return delivery
        key = f"webhook:{connection.id}"
        if key in delivery.sent and not again:
            return delivery
        text = external.webhook_text(review, self.review_link(delivery))
        refused = post_to_webhook(connection, text)
        if isinstance(refused, WebhookRefused):
            return self.record_failure(delivery, key, str(refused))
        delivery = replace(delivery, sent=escalation.merged(delivery.sent, (key,)))
        save_delivery(self.engine, delivery)
        return delivery

    def record_failure(self, delivery: Delivery, key: str, why: str) -> Delivery:
        """Record for good that ``key`` (a notification, a channel) could not be posted: on
        the delivery record, in the run's audit trail, in the log. Retries skip it."""
        if key in delivery.sent:
            return delivery
        log.warning("review %s of %s: %s", delivery.step, delivery.execution_id, why)
        delivery = replace(delivery, sent=(*delivery.sent, key),
                           failures=(*delivery.failures, why))
        save_delivery(self.engine, delivery)
        self.engine.record_notification_failure(delivery.execution_id, delivery.step, why)
        return delivery

    def review_link(self, delivery: Delivery) -> str:
        """Where a notification sends people: the review's first message in a channel,
        else (it went to DMs alone) the app's Home tab, which lists it for its deciders."""
        for post in delivery.posts:
            if not post.channel.startswith("D"):  # a DM's link opens for its one reader
                found = permalink(self.client, post)
                if found:
                    return found
        return self.app_home_link()

    def app_home_link(self) -> str:
        """Slack's deep link to this app's Home tab (``slack://app?team=…&id=…&tab=home``)."""
        if self._app_home is None:
            me = self.client.auth_test()
            bot = self.client.bots_info(bot=str(me["bot_id"]))["bot"]
            self._app_home = f"slack://app?team={me['team_id']}&id={bot['app_id']}&tab=home"
        return self._app_home

    def unanswerable(self, review: ReviewRequest, delivery: Delivery) -> bool:
        """The review names approvers and they resolve to people, but to nobody who may
        decide: only its requester (``access-request``'s owner taken from the event)."""
        return bool(delivery.approvers) and not deciders(self.engine, review, delivery)

    def render(self, review: ReviewRequest, delivery: Delivery) -> dict[str, Any]:
        """The review's message as it stands: level, next deadline, approvers, approvals."""
        return review_message(review, context=ReviewContext(
            approvers=tuple(a for a in delivery.shown if a not in review.handed),
            requested_by_display=delivery.requester or review.requested_by or "",
            level=review.level, due_at=review.next_deadline,
            escalate_to=self.engine.escalate_to,
            unanswerable=self.unanswerable(review, delivery)))

    def post(self, delivery: Delivery, target: str, message: Mapping[str, Any], *,
             dm: bool, lead: str = "") -> Delivery:
        """Post the review to a channel (or, with ``dm``, a user) and record where; ``lead``
        (mrkdwn) goes above it, in this post and every rewrite of it."""
        conversation = self.open_dm(target) if dm else target
        shown = external.with_lead(message, lead)
        posted = self.limits.post(  # raises RateLimited rather than wait (bot.ratelimit)
            conversation, text=shown["text"], blocks=shown["blocks"],
            unfurl_links=False, unfurl_media=False)
        post = Post(to=target, channel=str(posted["channel"]), ts=str(posted["ts"]), lead=lead)
        delivery = replace(delivery, posts=(*delivery.posts, post))
        save_delivery(self.engine, delivery)
        return delivery

    def own_posts(self, posts: tuple[Post, ...]) -> tuple[Post, ...]:
        """``posts`` without the digests (bot.digest) among them: the review's own messages."""
        digests = self.digests.digests_among([(p.channel, p.ts) for p in posts
                                              if not is_user_id(p.to)])  # a DM never is
        return tuple(p for p in posts if (p.channel, p.ts) not in digests)

    def share_audience(self, review: ReviewRequest, delivery: Delivery) -> ReviewRequest:
        """Tell the engine who may decide, so the review is listed for each of them;
        returns ``review`` with the audience the engine now lists it for."""
        audience = deciders(self.engine, review, delivery)
        if audience and self.engine.set_review_audience(review.execution_id, review.step,
                                                         audience):
            return replace(review, audience=audience)
        return review

    def index_viewers(self, review: ReviewRequest, delivery: Delivery) -> None:
        """Let everyone ``review`` is shown to find it in ``/approvals all`` (bot.visibility);
        ``review`` as :meth:`share_audience` returned it."""
        self.visibility.record(review, delivery)

    def open_dm(self, user_id: str) -> str:
        return str(self.client.conversations_open(users=user_id)["channel"]["id"])

    def catch_up(self, delivery: Delivery) -> bool:
        """Mark the messages closed if the review closed while they were being written;
        True when it has closed."""
        # The review may have been decided while we posted (an API call, a fast click on
        # the first DM): the update job then found nothing to update, or rewrote them
        # before we did, so do it here.
        try:
            state = self.engine.get(delivery.execution_id)
        except ExecutionNotFound:
            return True
        closed = closed_from_state(self.engine, state, delivery.step, delivery.since)
        if closed is None:
            return False
        digests = self.leave(delivery, state.workflow)
        if delivery.posts:
            self.mark_closed(delivery, closed, state.status, digests=digests)
        return True

    def close(self, execution_id: str, step: str, closed: ReviewClosed | None, *,
              known: Annotated | None = None, left: Left | None = None) -> int:
        """Rewrite the messages of a closed review; returns how many were rewritten.
        ``known``: what this would read (the execution, its delivery record, its trail),
        as the commit that closed the review left it (a click's, whose drain runs this
        next: :class:`engine.state.inbox.Running`); a post recorded after that commit
        sees the review closed and marks itself closed (:meth:`catch_up`). ``left``: the
        review's leave, sent with that commit (:meth:`leaving`), for the posts ``known``
        names; the leave is not made again."""
        try:  # the execution, its delivery record and the messages it showed, in one read
            read = known or self.engine.get_annotated(execution_id, annotation_key(step))
        except ExecutionNotFound:
            return 0
        note, state = read.annotation, read.state
        delivery = (Delivery.from_json(note, execution_id, step) if isinstance(note, Mapping)
                    else None)
        if delivery is None:
            return 0  # never posted; the post job, if still to run, will not post it
        found = closed_from_state(self.engine, state, step, delivery.since)
        if found is None:
            # What was posted still waits: this closure was of an earlier instance of the
            # step (foreach), whose record a later post replaced.
            return 0
        if left is not None and left.posts == delivery.posts:
            digests = left.settle()
        else:
            digests = self.leave(delivery, state.workflow, read.notes)
        return self.mark_closed(delivery, closed or found, state.status, digests=digests,
                                trail=read.trail, event=state.event, found=read.message)

    def leave(self, delivery: Delivery, workflow: str,
              notes: Mapping[str, bytes] | None = None) -> set[tuple[str, str]]:
        """A closed review leaves /approvals all's indexes (bot.visibility) and its
        channels' digests (bot.digest), and Slack's limit for its rewrite is asked, in one
        round trip; which of its posts are digests. Raises RateLimited (the task is put off,
        bot.outbox) when posts of its own are to be rewritten and ``chat.update`` is
        limited. ``notes``: the execution's annotations, when just read."""
        batch = Batch(self.engine.store.redis)
        read = self._leaving(batch, delivery, workflow, notes)
        left = read(batch.execute())
        assert left is not None  # not guarded: done
        return left.settle()

    def leaving(self, delivery: Delivery, workflow: str, notes: Mapping[str, bytes]
                ) -> Alongside:
        """:meth:`leave`, to be sent with the commit that closes the review (a click's
        decision: :meth:`engine.run.engine.Engine.resume`'s ``alongside``) and acting only
        once it applied, built from ``notes``, the run's annotations as read before it. Its
        reader gives a :class:`Left` for the rewrite, or None (the commit did not apply,
        or the review's note of whose indexes hold it changed since it was read): the
        rewrite then leaves as usual. The leave may run again: each part of it may."""
        def queue(batch: Batch, guard: tuple[str, str, bytes]
                  ) -> Callable[[Sequence[Any]], Left | None]:
            return self._leaving(batch, delivery, workflow, notes, guard)

        return queue

    def _leaving(self, batch: Batch, delivery: Delivery, workflow: str,
                 notes: Mapping[str, bytes] | None,
                 guard: tuple[str, str, bytes] | None = None
                 ) -> Callable[[Sequence[Any]], Left | None]:
        forgotten = self.visibility.forget(batch, delivery.execution_id, delivery.since, notes,
                                           guard=guard)
        left = self.digests.leave(batch, delivery.execution_id, workflow, delivery.step,
                                  [(p.to, p.channel, p.ts) for p in delivery.posts],
                                  guard=guard)
        asked = (self.client.ask_later(batch, "chat.update")
                 if isinstance(self.client, LimitedClient) else None)

        def read(replies: Sequence[Any]) -> Left | None:
            forgot, digests = forgotten(replies), left(replies)  # each marks what it must
            if forgot is None or digests is None:
                return None
            return Left(delivery.posts, digests, asked(replies) if asked is not None else None)

        return read

    def mark_closed(self, delivery: Delivery, closed: ReviewClosed,
                    status: ExecutionStatus | None = None, *,
                    digests: set[tuple[str, str]] | None = None,
                    trail: Sequence[bytes] | None = None, event: Any = None,
                    found: tuple[str, str] | None = None) -> int:
        """``trail``: the execution's audit trail when the caller read it already, with
        ``event``, the execution's event (a long message is packed against it); ``found``:
        a message found in that trail already, as (its SHA-256, the message)."""
        copy = delivery.review
        # The message as the reviewers saw it, from the audit trail, where it is stored once.
        shown = None
        if "message" not in copy:
            sha256 = str(copy.get("message_sha256") or "")
            if found is not None and found[0] == sha256:
                shown = found[1]
            elif trail is not None:
                shown = messages.find(trail, sha256, dumps(event) if event is not None else None)
            else:
                shown = self.engine.store.review_message(delivery.execution_id, sha256)
        review = review_from_json(copy, shown)
        message = decided_message(review, explained(closed, review, status))
        return self.rewrite(delivery.posts, message, digests=digests)

    def rewrite(self, posts: tuple[Post, ...], message: Mapping[str, Any], *,
                digests: set[tuple[str, str]] | None = None) -> int:
        """Replace ``posts`` with ``message``, but not the digests among them (``digests``
        when known, else asked of Redis); returns how many were still there to replace."""
        updated = 0
        own = (self.own_posts(posts) if digests is None
               else tuple(p for p in posts if (p.channel, p.ts) not in digests))
        for post in own:  # a digest shows many reviews: bot.digest rewrites it
            shown = external.with_lead(message, post.lead)
            try:
                self.client.chat_update(channel=post.channel, ts=post.ts, text=shown["text"],
                                        blocks=shown["blocks"])
            except SlackApiError as exc:
                if exc.response.get("error") not in _GONE:
                    raise
                log.warning("review message %s/%s is gone: %s", post.channel, post.ts,
                            exc.response.get("error"))
                continue
            updated += 1
        return updated


@dataclass(frozen=True)
class Left:
    """A closed review's leave (:meth:`Deliverer.leave`), done: which of its posts are
    digests, and Slack's limit for the rewrite of the others as asked then."""

    posts: tuple[Post, ...]
    digests: set[tuple[str, str]]
    asked: Callable[[], None] | None  # applies the answer: raises RateLimited while limited

    def settle(self) -> set[tuple[str, str]]:
        """The digests among the posts; RateLimited while posts of its own are to be
        rewritten and ``chat.update`` is limited."""
        if self.asked is not None and any((p.channel, p.ts) not in self.digests
                                          for p in self.posts):
            self.asked()
        return self.digests


@dataclass(frozen=True)
class Closing:
    """What a click's decision hands the rewrite of its review's messages, run next by the
    same drain: the run as its write left it (:class:`engine.state.store.Annotated`), and
    the review's leave when it was sent with that write and holds (:class:`Left`)."""

    known: Annotated
    left: Left | None = None


def explained(closed: ReviewClosed, review: ReviewRequest,
              status: ExecutionStatus | None) -> ReviewClosed:
    """``closed`` with a reason saying why, when time (not a person) closed the review."""
    if closed.actor.id != SYSTEM_TIMEOUT.id:
        return closed
    if status is ExecutionStatus.TIMED_OUT:
        return replace(closed, reason=texts.RUN_TIMED_OUT)
    on_timeout = str(review.options.get("on-timeout") or "fail")
    return replace(closed, reason=texts.on_timeout_applied(
        closed.reason or texts.NO_DECISION_IN_TIME, on_timeout))


def closed_review_text(engine: Engine, execution_id: str, step: str,
                       since: str | None = None) -> str:
    """What to tell someone who acts on a review that is no longer waiting (``since``: the
    instance they acted on, when a later one of the same step waits now)."""
    try:
        state = engine.get(execution_id)
    except ExecutionNotFound:
        return texts.REVIEW_GONE
    closed = closed_from_state(engine, state, step, since)
    if closed is None:
        return texts.REVIEW_GONE
    delivery = load_delivery(engine, execution_id, step)
    field = str((delivery.review if delivery else {}).get("decision_field") or "approved")
    return str(ephemeral_already_decided(closed, decision_field=field)["text"])
