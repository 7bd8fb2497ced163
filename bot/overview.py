"""What ``/approvals`` and the App Home show: pending reviews and review stats.

Pages come from the engine's indexes (the per-approver or the global waiting index),
never from a scan of executions. Each review comes with where it was posted (its
:class:`bot.delivery.Delivery`) and a link to that message, written in the form Slack's
``chat.getPermalink`` answers for a message that is not a thread reply (review messages
never are): the workspace's address (``auth.test``'s ``url``, asked once per process),
``archives/{channel}/p{ts without its dot}``. A person's first listing no longer waits
on one ``chat.getPermalink`` per review. Until ``auth.test`` has answered (Slack
unreachable), links are asked of Slack as before, within a time budget so a slow Slack
cannot hold up the 3-second answer, and kept in Redis:

    signoff:slack:permalink:{channel}:{ts}  string  the message's permalink

Who sees a review: its approvers at any level (user ids, members of the user groups and
the users behind the e-mails it names, resolved as its buttons resolve them, plus its
``audience``), its requester, members of the conversations it was posted in
(``conversations.members``, cached by :class:`bot.directory.Directory`) and the admins
(``SIGNOFF_ADMINS``). Everyone else is shown nothing of it. ``/approvals all`` reads
only what the viewer may see, from the indexes :mod:`bot.visibility` writes as reviews
are posted; :meth:`Overview.may_see` checks one review as it stands (``/approvals ID``).

``/approvals`` (your own reviews, and the Home tab's list) reads a page of the viewer's
index and each review on it, with its delivery record, in one Redis command when the
page holds what it held at the viewer's last listing (:meth:`Overview._mine`). What a
listing makes of a stored review (the review, its posts, its decision line and the
blocks built for it) is kept in the web process by the review's bytes as read, so a
review that changed (decided, escalated, reassigned, voted on, posted again) is a new
row and nothing kept can be stale; who may decide is asked at every listing, and each
viewer gets the link to their own copy.

The builders below are pure: a page in, Block Kit out, for the slash command's
ephemeral answers and for the Home tab alike.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from slack_sdk import WebClient

from bot import keys, texts
from bot.block_kit import context_block, header_block, section_block
from bot.blocks import button, decision_buttons
from bot.delivery import (
    Delivery,
    Post,
    annotation_key,
    current_delivery,
    permalink,
    refusal,
    stored_posts,
)
from bot.directory import Directory
from bot.forms import ReviewRef, decision_line, only_decision_required
from bot.mrkdwn import (
    DATE_AT_TIME,
    escape_mrkdwn,
    is_user_id,
    slack_date,
)
from bot.plain_line import plain_line
from bot.visibility import Visibility
from engine.notify import ReviewRequest
from engine.run import escalation
from engine.run.engine import Engine
from engine.run.stats import GRADUATION_WINDOW, RECENT_OUTCOMES, StepStats, review_stats
from engine.state.store import ReviewRow

log = logging.getLogger(__name__)

PAGE_SIZE = 10
ACTION_MORE = "signoff.approvals.more"  # value: {"scope": "mine" | "all", "offset": n}
ACTION_BATCH = "signoff.approvals.batch"  # value: {"workflow", "step", "where"}
BATCH_BUTTONS = 4
PERMALINK_TTL = 30 * 86400
PERMALINK_BUDGET = 1.0  # seconds a listing waits for chat.getPermalink answers, at most
PERMALINK_TIMEOUT = 2
PERMALINK_THREADS = 16
TITLES_KEPT = 10_000  # decision lines kept parsed, by message digest
PAGES_KEPT = 10_000  # viewers' last pages remembered, to read the next with its page
ROWS_KEPT = 10_000  # stored rows whose review, posts, title and blocks are kept (~10 KB each)
STEPS_READ = 8  # step names whose delivery records are read with each page
FREEZE_EVERY = 1_000  # rows kept between two gc.freeze() (see Overview._known)
VARIANTS_KEPT = 8  # blocks kept per stored row (link, refusal, SLA passed, position)
MAX_STATS_SHOWN = 20
# Reviews the visibility index does not hold yet (bot.visibility). Those already posted
# (before the index existed) are indexed by the listing that finds them, for this long at
# most; the rest are checked one by one (about 0.35 ms each, measured before the index),
# this many at most, so the answer stays well within Slack's 3 s even right after an
# upgrade, while the index fills.
BACKFILL_BUDGET = 0.5  # seconds
MAX_CHECKED = 1_000


class Scope(StrEnum):
    MINE = "mine"  # the reviews the viewer may decide (the per-approver index)
    ALL = "all"  # every waiting review


@dataclass(frozen=True)
class PendingItem:
    """A waiting review as one viewer sees it."""

    review: ReviewRequest
    title: str  # the decision line, plain text
    permalink: str | None
    refusal: str | None  # why the viewer may not decide it; None when they may
    # Blocks already built for this review as stored, by what else they show (the
    # listing's memo, kept with the row it read: Overview._known); None: build each time.
    # One click decides it: only the decision is asked (only_decision_required), made
    # once per review kept (Overview._known) or listed (Overview.items).
    one_click: bool
    rendered: dict[tuple[Any, ...], list[dict[str, Any]]] | None = field(
        default=None, compare=False, repr=False)

    @property
    def decidable(self) -> bool:
        """The viewer may decide it, and one click does."""
        return self.refusal is None and self.one_click


@dataclass(frozen=True)
class _Known:
    """What a listing made of one stored row (:meth:`Overview._known`)."""

    review: ReviewRequest
    posts: tuple[Post, ...]  # its delivery record's (the rest of the record is not kept)
    title: str
    one_click: bool
    blocks: dict[tuple[Any, ...], list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class PendingPage:
    scope: Scope
    items: tuple[PendingItem, ...]
    offset: int
    total: int

    @property
    def next_offset(self) -> int | None:
        following = self.offset + PAGE_SIZE
        return following if following < self.total else None


class Overview:
    """Loads pages of pending reviews, with links to their messages, and review stats."""

    def __init__(self, engine: Engine, client: WebClient, directory: Directory,
                 admins: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self.store = engine.store
        # Its own client: one short try per link, no retries, so a slow Slack costs the
        # answer a missing link rather than the whole answer.
        self.links = WebClient(token=client.token, base_url=client.base_url,
                               timeout=PERMALINK_TIMEOUT, retry_handlers=[])
        self._asking = ThreadPoolExecutor(PERMALINK_THREADS, thread_name_prefix="permalink")
        self._titles: dict[tuple[str, str, str], str] = {}
        self._workspace: str | None = None  # auth.test's url, once Slack has said
        self.directory = directory  # who may decide a review not posted yet
        self.admins = admins  # user and user-group ids who see every review
        self.visibility = Visibility(engine.store, directory)
        # What makes a listing one round trip: the steps whose delivery records are read
        # with each page, and each viewer's last page (its executions, read with the page).
        self._steps: tuple[str, ...] = ()
        self._pages: dict[tuple[str, int, int], tuple[str, ...]] = {}
        self._rows: dict[ReviewRow, _Known] = {}  # oldest first
        self._rows_lock = threading.Lock()
        self._unfrozen = 0  # rows kept since the collector was last told to skip them

    def is_admin(self, user_id: str) -> bool:
        return bool(user_id) and self.directory.is_among(user_id, self.admins)

    def may_see(self, user_id: str, review: ReviewRequest, stored: Delivery | None,
                memo: dict[Any, frozenset[str]] | None = None) -> bool:
        """``user_id`` decides, requested, or was shown ``review`` (its delivery ``stored``);
        ``memo`` keeps look-ups (channel members, later levels) across one listing."""
        if not user_id:
            return False
        delivery = current_delivery(review, stored, self.directory)
        if (user_id in delivery.approvers or user_id in review.audience
                or user_id == delivery.requester):
            return True
        memo = {} if memo is None else memo
        later = tuple(a for level in escalation.levels(review.options)[1:]
                      for a in level.approvers)
        if later:
            if later not in memo:
                memo[later] = frozenset(self.directory.resolve_approvers(later).user_ids)
            if user_id in memo[later]:
                return True
        for post in delivery.posts:
            if is_user_id(post.to):  # a DM: its only people are the bot and ``post.to``
                if user_id == post.to:
                    return True
                continue
            if post.channel not in memo:
                memo[post.channel] = self.directory.conversation_members(post.channel)
            if user_id in memo[post.channel]:
                return True
        return False

    def page(self, user_id: str, scope: Scope, offset: int = 0,
             limit: int = PAGE_SIZE) -> PendingPage:
        offset = max(0, offset)
        if scope is Scope.MINE:  # only the viewer's own: nothing to filter
            return self._mine(user_id, offset, limit)
        if self.is_admin(user_id):
            reviews, total = self.engine.pending(offset=offset, limit=limit)
        else:
            # Only what the viewer may see, paged in Redis (bot.visibility): offsets and
            # the total count nothing else. Only reviews the index does not hold yet
            # (normally none) are checked one by one.
            reviews, total = self.visibility.page(user_id, offset, limit,
                                                  also=self._unindexed(user_id))
        return PendingPage(scope, tuple(self.items(user_id, reviews)), offset, total)

    def _mine(self, user_id: str, offset: int, limit: int) -> PendingPage:
        """The reviews ``user_id`` may decide: the page and its executions read in one
        round trip (the executions this viewer's last listing showed named to it, those
        new on the page found by it), their delivery records with them (for the steps
        this process has read records of). What each stored row shows is kept by the row's bytes
        (:meth:`_known`); who may decide is asked each time."""
        where = (user_id, offset, limit)
        rows, total = self.engine.pending_rows(
            user_id, [annotation_key(step) for step in self._steps], offset=offset,
            limit=limit, expect=self._pages.get(where, ()))
        if len(self._pages) >= PAGES_KEPT:
            self._pages.clear()
        self._pages[where] = tuple(row.execution_id for row in rows)
        known = [k for k in map(self._known, rows) if k is not None]
        posts = [_post_in(user_id, k.posts) for k in known]
        found = self.permalinks([p for p in posts if p is not None])
        return PendingPage(Scope.MINE, tuple(
            PendingItem(k.review, k.title, found.get((p.channel, p.ts)) if p else None,
                        refusal(self.engine, k.review, user_id), k.one_click,
                        rendered=k.blocks)
            for k, p in zip(known, posts, strict=True)), offset, total)

    def _known(self, row: ReviewRow) -> _Known | None:
        """What ``row`` shows: its review, delivery record and decision line, made once per
        row as stored (a review that changes is another row: decided, escalated,
        reassigned, voted on, posted again); None when it no longer waits."""
        known = self._rows.get(row)
        if known is not None:
            return known
        review = row.review()
        if review is None:
            return None
        note = annotation_key(review.step)
        read = note in row.notes  # else a step whose records this process has not read yet
        if read:
            posts = stored_posts(row.note(note), review)
        else:
            [delivery] = self._deliveries([review])
            posts = delivery.posts if delivery else ()
        known = _Known(review, posts, self.title(review), only_decision_required(review))
        if not read:  # its record was read on its own: the row does not hold it to keep
            return known
        with self._rows_lock:
            while len(self._rows) >= ROWS_KEPT:
                del self._rows[next(iter(self._rows))]  # the oldest kept
            self._rows[row] = known
            self._unfrozen += 1
            if self._unfrozen >= FREEZE_EVERY:
                # Kept rows hold no reference cycles: reference counting frees them when
                # they go, so the collector need not walk them at each full pass (at
                # 10,000 rows kept, a pass paused the process for tens of ms). Collect
                # what came since the last time (a few ms), then freeze what is left.
                self._unfrozen = 0
                gc.collect()
                gc.freeze()
        return known

    def _unindexed(self, user_id: str) -> list[ReviewRequest]:
        """The waiting reviews the visibility index does not hold that ``user_id`` may see.

        Those posted before the index existed (an upgrade) are indexed here, for up to
        :data:`BACKFILL_BUDGET` per listing, then found in the index like the others; those
        whose post job has not run yet (normally none or a few) and any left over are
        checked one by one, the oldest :data:`MAX_CHECKED` of them at most.
        """
        waiting = [r for r in self.store.waiting_reviews(self.visibility.unindexed())
                   if r is not None]
        if not waiting:
            return []
        deadline = time.monotonic() + BACKFILL_BUDGET
        checked = []
        for review, stored in zip(waiting, self._deliveries(waiting), strict=True):
            if stored is not None and stored.posts and time.monotonic() < deadline:
                self.visibility.record(review, stored)
            else:
                checked.append((review, stored))
        memo: dict[Any, frozenset[str]] = {}  # one look-up per conversation per listing
        return [review for review, stored in checked[:MAX_CHECKED]
                if self.may_see(user_id, review, stored, memo)]

    def items(self, user_id: str, reviews: Sequence[ReviewRequest], *,
              links: bool = True) -> list[PendingItem]:
        """``reviews`` as ``user_id`` sees them; ``links=False`` skips the permalinks."""
        deliveries = self._deliveries(reviews)
        posts = [_post_for(user_id, d) if d is not None and links else None
                 for d in deliveries]
        found = self.permalinks([p for p in posts if p is not None])
        # Who may decide each, resolved as the review's own buttons resolve it.
        return [PendingItem(review, self.title(review),
                            found.get((p.channel, p.ts)) if p else None,
                            refusal(self.engine, review, user_id),
                            only_decision_required(review))
                for review, delivery, p in zip(reviews, deliveries, posts, strict=True)]

    def title(self, review: ReviewRequest) -> str:
        """The review's decision line; parsing Markdown is the costliest part of a listing,
        and a message does not change, so each is parsed once."""
        key = (review.message_sha256, review.workflow, review.step)
        title = self._titles.get(key)
        if title is None:
            title = quick_decision_line(review) or decision_line(review)
            if len(self._titles) >= TITLES_KEPT:
                self._titles.clear()
            self._titles[key] = title
        return title

    def _deliveries(self, reviews: Sequence[ReviewRequest]) -> list[Delivery | None]:
        """Each review's delivery record, one round trip per step; the steps' records are
        read with the pages of :meth:`_mine` from then on."""
        found: list[Delivery | None] = []
        notes: dict[str, Any] = {}
        for step in {r.step for r in reviews}:
            ids = [r.execution_id for r in reviews if r.step == step]
            notes.update(zip(ids, self.engine.annotations(ids, annotation_key(step)),
                             strict=True))
            if step not in self._steps:  # a new tuple, for threads reading the last one
                self._steps = (*self._steps, step)[-STEPS_READ:]
        for review in reviews:
            data = notes.get(review.execution_id)
            delivery = (Delivery.from_json(data, review.execution_id, review.step)
                        if isinstance(data, Mapping) else None)
            found.append(delivery if delivery is not None and delivery.same_review(review)
                         else None)
        return found

    def permalinks(self, posts: Sequence[Post]) -> dict[tuple[str, str], str]:
        """Links to ``posts``: from Redis, else asked of Slack (in parallel) while the time
        budget lasts; a link that comes later is kept for the next listing."""
        if not posts:
            return {}
        workspace = self.workspace_url()
        if workspace is not None:
            built = {(p.channel, p.ts): archive_link(workspace, p) for p in posts}
            return {where: link for where, link in built.items() if _safe_link(link)}
        cached = self.store.get_values([_permalink_key(p) for p in posts])
        found: dict[tuple[str, str], str] = {}
        asked = []
        for post, value in zip(posts, cached, strict=True):
            if value is not None:
                found[(post.channel, post.ts)] = (value.decode() if isinstance(value, bytes)
                                                  else str(value))
            else:
                asked.append((post, self._asking.submit(self._ask_permalink, post)))
        if asked:
            wait([future for _, future in asked], timeout=PERMALINK_BUDGET)
            for post, future in asked:
                link = (future.result() if future.done() and future.exception() is None
                        else None)
                if link is not None:
                    found[(post.channel, post.ts)] = link
        return found

    def warm(self) -> None:
        """What a process's first listings would otherwise each pay, done as it starts: the
        first look for unindexed reviews (which reads the whole waiting index: about half
        a second at 100,000 reviews) and the workspace's address (a Slack call). A failure
        (Redis or Slack unreachable) is logged; the listings then do it themselves."""
        try:
            self.visibility.unindexed()
        except Exception as exc:
            log.warning("could not read the unindexed reviews ahead of the first listing: %s",
                        exc)
        self.workspace_url()

    def workspace_url(self) -> str | None:
        """The workspace's address (``https://acme.slack.com/``): ``auth.test``, asked once
        (within the links' budget); None while Slack has not said."""
        if self._workspace is None:
            asked = self._asking.submit(self.links.auth_test)
            try:
                url = str(asked.result(timeout=PERMALINK_BUDGET).get("url") or "")
            except Exception as exc:  # timeouts, refusals, Slack's errors: links asked instead
                log.warning("auth.test failed, links are asked one by one: %s", exc)
                return None
            if _safe_link(url):
                self._workspace = url if url.endswith("/") else url + "/"
        return self._workspace

    def _ask_permalink(self, post: Post) -> str | None:
        try:
            link = permalink(self.links, post)
        except OSError as exc:  # timeouts and refused connections
            log.warning("no permalink for %s/%s: %s", post.channel, post.ts, exc)
            return None
        if link is None or not _safe_link(link):
            return None
        self.store.set_value(_permalink_key(post), link, ttl_seconds=PERMALINK_TTL)
        return link

    def stats(self, days: int, now: datetime | None = None) -> list[StepStats]:
        """Each workflow step's closed reviews over the last ``days`` days, busiest first."""
        since = (now or datetime.now(UTC)) - timedelta(days=days)
        records = self.engine.reviews.stats(since)
        recent = {key: self.engine.reviews.recent_outcomes(*key, RECENT_OUTCOMES)
                  for key in records}
        return review_stats(records, recent)


def quick_decision_line(review: ReviewRequest) -> str | None:
    """:func:`bot.forms.decision_line` read without the Markdown parser when its line is
    simple (:mod:`bot.plain_line`); None when it is not, or when it is empty."""
    for line in review.message.splitlines():
        if line.strip():
            return plain_line(line) or None
    return None


def _post_for(user_id: str, delivery: Delivery) -> Post | None:
    """The message to link to: the viewer's own DM if they got one, else the first post."""
    return _post_in(user_id, delivery.posts)


def _post_in(user_id: str, posts: Sequence[Post]) -> Post | None:
    return next((p for p in posts if p.to == user_id), posts[0] if posts else None)


def archive_link(workspace: str, post: Post) -> str:
    """The permalink of a message that is not a thread reply, as ``chat.getPermalink``
    writes it: ``https://acme.slack.com/archives/C0123/p1700000000123456``."""
    return f"{workspace}archives/{post.channel}/p{post.ts.replace('.', '')}"


def _permalink_key(post: Post) -> str:
    return keys.permalink(post.channel, post.ts)


def _safe_link(link: str) -> bool:
    return link.startswith(("https://", "http://")) and not any(c in link for c in "<>| \n")


# -- Block Kit -------------------------------------------------------------------------------------

def pending_blocks(page: PendingPage, *, now: datetime, more_action: str = ACTION_MORE,
                   where: str = "command") -> list[dict[str, Any]]:
    """A page of pending reviews: title, each review, then Show more and Decide several."""
    title = texts.MINE_TITLE if page.scope is Scope.MINE else texts.ALL_TITLE
    if not page.items:
        empty = texts.NONE_FOR_YOU if page.scope is Scope.MINE else texts.NONE_AT_ALL
        if page.offset and page.total:  # paged past the end (reviews were decided meanwhile)
            return [header_block(title),
                    section_block(texts.showing(page.total, page.total, page.total)),
                    _actions("signoff.pending.nav", [button(
                        texts.FIRST_PAGE, more_action, _more_value(page.scope, 0))])]
        return [header_block(title), section_block(empty)]
    first, last = page.offset + 1, page.offset + len(page.items)
    blocks: list[dict[str, Any]] = [
        header_block(title), context_block(texts.showing(first, last, page.total))]
    for n, item in enumerate(page.items):
        blocks.extend(item_blocks(item, now=now, block_id=f"signoff.pending.{n}"))
    navigation = []
    if page.next_offset is not None:
        navigation.append(button(texts.SHOW_MORE, more_action,
                                  _more_value(page.scope, page.next_offset)))
    elif page.offset:
        navigation.append(button(texts.FIRST_PAGE, more_action, _more_value(page.scope, 0)))
    if page.scope is Scope.MINE:
        navigation.extend(batch_buttons(page.items, where))
    if navigation:
        blocks.append(_actions("signoff.pending.nav", navigation))
    return blocks


def item_blocks(item: PendingItem, *, now: datetime,
                block_id: str = "signoff.pending") -> list[dict[str, Any]]:
    """One waiting review: what to decide, where and since when, and its buttons."""
    review = item.review
    if item.rendered is None:
        return _item_blocks(item, now=now, block_id=block_id)
    passed = review.sla_due_at is not None and review.sla_due_at <= now
    key = (item.permalink, item.refusal, item.title, passed, block_id)
    blocks = item.rendered.get(key)
    if blocks is None:
        blocks = _item_blocks(item, now=now, block_id=block_id)
        if len(item.rendered) >= VARIANTS_KEPT:
            item.rendered.clear()
        item.rendered[key] = blocks
    return list(blocks)


def _item_blocks(item: PendingItem, *, now: datetime,
                 block_id: str) -> list[dict[str, Any]]:
    review = item.review
    title = escape_mrkdwn(item.title)
    headline = f"*<{item.permalink}|{title}>*" if item.permalink else f"*{title}*"
    facts = [texts.pending_context(escape_mrkdwn(review.step), escape_mrkdwn(review.workflow)),
             texts.asked(slack_date(review.created_at, "{ago}"))]
    if review.sla_due_at is not None:
        facts.append(texts.sla_due(slack_date(review.sla_due_at, DATE_AT_TIME),
                                   passed=review.sla_due_at <= now))
    if review.due_at is not None:
        facts.append(texts.times_out(slack_date(review.due_at, DATE_AT_TIME)))
    if review.levels > 1:
        facts.append(texts.level_of(review.level, review.levels))
    if review.approvals_required > 1:
        facts.append(texts.approvals_so_far(len(review.approvals), review.approvals_required))
    lines = [headline, " · ".join(facts), texts.execution_line(escape_mrkdwn(review.execution_id))]
    if item.refusal is not None:
        lines.append(f"_{texts.not_allowed(escape_mrkdwn(item.refusal))}_")
    elif not item.one_click:
        lines.append(f"_{texts.ANSWER_IN_MESSAGE}_")
    blocks = [section_block("\n".join(lines))]
    if item.decidable:
        # The review message's own action ids, so its handlers decide (shown only where one
        # click decides). The value also names the review instance (``since``), for a
        # handler to tell it from a later instance of the same step.
        value = ReviewRef.of(review, one_click=True).encode()
        blocks.append(_actions(block_id, decision_buttons(review, value, item.title)))
    return blocks


def batch_buttons(items: Sequence[PendingItem], where: str) -> list[dict[str, Any]]:
    """One *Decide several* button per workflow step with two or more one-click reviews."""
    groups: dict[tuple[str, str], int] = {}
    for item in items:
        if item.decidable:
            key = (item.review.workflow, item.review.step)
            groups[key] = groups.get(key, 0) + 1
    buttons: list[dict[str, Any]] = []
    for (workflow, step), count in groups.items():
        if count < 2 or len(buttons) >= BATCH_BUTTONS:
            continue
        value = json.dumps({"workflow": workflow, "step": step, "where": where},
                           separators=(",", ":"))
        buttons.append(button(texts.batch_button(step, workflow, count), ACTION_BATCH, value))
    return buttons


def stats_blocks(stats: Sequence[StepStats], days: int, *,
                 title: str | None = None) -> list[dict[str, Any]]:
    """Per workflow step: reviews, approval rate, time to decision, breaches, candidates."""
    blocks = [header_block(title or texts.stats_title(days))]
    if not stats:
        return [*blocks, section_block(texts.no_stats(days))]
    for step in stats[:MAX_STATS_SHOWN]:
        blocks.append(section_block(stats_text(step)))
    if len(stats) > MAX_STATS_SHOWN:
        blocks.append(context_block(texts.more_steps(len(stats) - MAX_STATS_SHOWN)))
    return blocks


def stats_text(step: StepStats) -> str:
    rate = step.approval_rate
    lines = [f"*{escape_mrkdwn(step.workflow)}* · step `{escape_mrkdwn(step.step)}`",
             texts.stats_line(
                 step.reviews,
                 f"{rate * 100:.0f}%" if rate is not None else texts.NOT_APPLICABLE,
                 _spoken(step.median_ms), _spoken(step.p90_ms), step.sla_breaches,
                 step.escalated, step.timed_out)]
    if step.automate_candidate:
        lines.append(texts.automate_candidate(GRADUATION_WINDOW))
    return "\n".join(lines)


def _spoken(ms: int | None) -> str:
    return texts.duration(ms) if ms is not None else texts.NOT_APPLICABLE


def _more_value(scope: Scope, offset: int) -> str:
    return json.dumps({"scope": scope.value, "offset": offset}, separators=(",", ":"))


def parse_more(value: str) -> tuple[Scope, int]:
    """The scope and offset a Show more button carries; the first page of yours if unreadable."""
    try:
        data = json.loads(value)
        return Scope(data.get("scope", Scope.MINE)), max(0, int(data.get("offset", 0)))
    except (ValueError, TypeError, AttributeError):
        return Scope.MINE, 0


def parse_group(value: str) -> Mapping[str, str] | None:
    """The workflow, step and origin a Decide several button carries."""
    try:
        data = json.loads(value)
        return {"workflow": str(data["workflow"]), "step": str(data["step"]),
                "where": str(data.get("where") or "command")}
    except (ValueError, TypeError, KeyError):
        return None


# -- small builders --------------------------------------------------------------------------------

def _actions(block_id: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "actions", "block_id": block_id, "elements": elements}


