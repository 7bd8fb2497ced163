"""Who may see each waiting review, indexed as it is posted: ``/approvals all`` for one person.

A review is shown to its approvers at any level (user ids, members of the user groups,
the users behind the e-mails, plus the engine's ``audience``), its requester, whoever it
was DM'd to, members of the channels it was posted in, and the admins
(:meth:`bot.overview.Overview.may_see` says so for one review). Rather than check every
waiting review against that at each listing, :class:`bot.delivery.Deliverer` writes it
down as it posts (:meth:`Visibility.record`), in sorted sets scored by when the review
started waiting, its execution id the member (keys in :mod:`bot.keys`):

- ``sees:{U}``: each of the review's *people* (everyone above but channel members and
  admins), resolved when it is posted, again when it is escalated or reassigned (the
  approvers added, the level's channel), and whenever it is posted again; but not those
  the engine already lists it for (its ``audience``, who may decide it: the engine's
  ``idx:approver:{U}``, which listings read as well), so that the usual review, seen
  by its approvers, is indexed once for each of them, not twice;
- ``posted:{C}``: each channel (not DM) it was posted in, and ``posted-channels``, the
  set of those channels;
- on the execution itself, the annotation ``n:slack:seen:{ms}`` (:func:`noted_key`):
  the people and channels the review was indexed under, for its close to take it out of
  theirs, and the mark that it was indexed (a few words in the execution's hash, where
  a Redis set of its own cost 320 bytes a review, and an index of every indexed review
  135 more; reviews indexed by earlier versions kept a ``seen-by:{id}:{ms}`` set and an
  ``indexed`` entry, still taken out at their close).

``/approvals all`` for someone who is not an admin (:meth:`Visibility.page`) reads the
union of their own indexes (``sees`` and the engine's ``idx:approver``) and the
``posted`` indexes of the channels they are a member of (``conversations.members``,
read through :class:`bot.directory.Directory`'s one-hour cache: one Redis read per
channel that has waiting reviews, a Slack call only when its cache has lapsed, never one
per review), kept to what is still in the engine's waiting index, and pages it in Redis:
one MULTI, O(V log V) for the V reviews the person may see, and only the page is sent
back. Someone who sees reviews through one index alone (no channel with reviews,
nothing unindexed) has it paged as it is, O(log V): a page
read, no union (at 100,000 reviews the union took Redis about as long as Slack allows
an answer). Its entries for reviews that closed a moment ago (their close job has not
run) count in its total until that job takes them out; on a page, they are found and
taken out as below. Channel membership is therefore read at listing time as
before: someone who joins a channel sees its reviews once the cached member list is
renewed (within the hour), someone who leaves stops seeing them likewise.

A closed review (decided, timed out, cancelled) drops out at once, since the listing keeps
only what the waiting index still holds; its close job then takes its entries out
(:meth:`Visibility.forget`). An entry for an earlier step of a run that now waits on
another review is told apart by its score (when that review started waiting), left out
and taken out by the listing that finds it. Entries are only removed where their score is
still that instance's (:data:`engine.state.lua.REMOVE_INSTANCE`), so a later review of the
same run keeps its own.

A waiting review without that note (its post job has not run yet, or it was posted
before this index existed) is found by :meth:`Visibility.unindexed`, which after its
first call in a process looks only at those it found before and those that began
waiting since (five seconds' margin for a late commit or a clock behind; a review whose
wait committed later still than that, not posted yet, is missed by listings that would
show it only as unposted, while its approvers still see it in ``/approvals``);
:meth:`bot.overview.Overview.page` indexes those that were posted, for a bounded time per
listing, and checks the others one by one.

Not covered, by design: who joins a user group or takes over an e-mail address after the
review was posted sees it from its next change (escalation, reassignment, ``signoff
redeliver``), not before; whoever left a group keeps seeing it until it closes. A review
appears in the listing once its post job has run (as in ``/approvals``), not while that
job waits. ``/approvals ID`` still checks the one review as it stands
(:meth:`bot.overview.Overview.may_see`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot import keys
from bot.directory import Directory
from bot.mrkdwn import is_user_id
from engine.notify import ReviewRequest
from engine.run import escalation
from engine.state import keys as engine_keys
from engine.state.batch import Batch
from engine.state.execution import epoch_ms, parse_iso
from engine.state.store import Store

# Listing passes that may find entries of reviews a run has moved on from; each takes
# out what it found, so a second pass is the exception and a third is not expected.
PASSES = 3
# How far back each look for unindexed reviews reaches behind the newest it has seen: a
# wait committed that much after its score was taken (a slow commit, a worker's clock
# behind the others') is still found.
LATE_MS = 5_000


@dataclass(frozen=True)
class _Unindexed:
    """What :meth:`Visibility.unindexed` read last."""

    stamp: tuple[int, float | None]  # the waiting index's size and newest score
    newest: float | None  # the newest score read
    found: dict[str, float]  # the reviews found unindexed (id: score)
    confirmed: dict[str, float]  # those found indexed within LATE_MS of the newest


class Post(Protocol):
    """One message showing a review (:class:`bot.delivery.Post`)."""

    @property
    def to(self) -> str: ...  # the channel asked for, or the DM'd user

    @property
    def channel(self) -> str: ...


class Delivery(Protocol):
    """What the index reads of where a review went (:class:`bot.delivery.Delivery`)."""

    @property
    def approvers(self) -> tuple[str, ...]: ...

    @property
    def requester(self) -> str | None: ...

    @property
    def posts(self) -> Sequence[Post]: ...


def people(review: ReviewRequest, delivery: Delivery, directory: Directory) -> tuple[str, ...]:
    """Who may see ``review`` as one of its people: approvers at every level (resolved as
    its buttons resolve them), the engine's audience, the requester and those it was DM'd
    to; channel members and admins are found at listing time."""
    named = escalation.merged(review.approvers, (
        a for level in escalation.levels(review.options) for a in level.approvers))
    resolved = directory.resolve_approvers(named).user_ids
    dms = (p.to for p in delivery.posts if is_user_id(p.to))
    requester = (delivery.requester,) if delivery.requester else ()
    return escalation.merged(escalation.merged(delivery.approvers, resolved),
                             (*review.audience, *requester, *dms))


def noted_key(since_ms: int) -> str:
    """The execution's annotation that names whose indexes hold its review that started
    waiting at ``since_ms`` (space-separated user ids and ``#`` channels); ``since_ms``
    in base 36, as the name is stored with each review."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    written = ""
    while True:
        since_ms, digit = divmod(since_ms, 36)
        written = digits[digit] + written
        if not since_ms:
            return f"slack:seen:{written}"


def _index_keys(noted: Sequence[str]) -> list[str]:
    """The indexes a review's note names: people's (``sees``) and ``#`` channels'."""
    return [keys.posted_in(m[1:]) if m.startswith("#") else keys.viewer(m) for m in noted]


def channels(delivery: Delivery) -> tuple[str, ...]:
    """The channels (not DMs) ``delivery`` posted in."""
    return tuple(dict.fromkeys(p.channel for p in delivery.posts if not is_user_id(p.to)))


class Visibility:
    """The per-person and per-channel indexes of who may see each waiting review."""

    def __init__(self, store: Store, directory: Directory, *, late_ms: int = LATE_MS) -> None:
        self.store = store
        self.directory = directory
        self.late_ms = late_ms  # see LATE_MS
        self._unindexed: _Unindexed | None = None  # what unindexed() read last
        self._unindexed_lock = threading.Lock()  # one look at a time builds on the last

    def record(self, review: ReviewRequest, delivery: Delivery) -> None:
        """Index ``review`` for everyone ``delivery`` shows it to (again: no harm), and note
        them on the execution (:func:`noted_key`) for :meth:`forget`. Those the engine
        already lists it for (``review.audience``: its approver index) are not indexed
        again: a listing reads that index too."""
        covered = set(review.audience)
        who = [u for u in people(review, delivery, self.directory) if u not in covered]
        where = channels(delivery)
        score = epoch_ms(review.created_at)
        if not self.store.add_words(review.execution_id, noted_key(score),
                                    [*who, *(f"#{c}" for c in where)]):
            return  # the run is gone: nothing to list
        self.store.set_add(keys.POSTED_CHANNELS, where)
        self.store.index_add([(keys.viewer(u), score, review.execution_id) for u in who]
                             + [(keys.posted_in(c), score, review.execution_id)
                                for c in where])

    def noted(self, execution_id: str, since_ms: int) -> list[str]:
        """Whose indexes (people, and ``#`` channels) hold the review of ``execution_id``
        that started waiting at ``since_ms``, as :meth:`record` noted them."""
        return sorted({*self.store.words(execution_id, noted_key(since_ms)),
                       *self.store.set_members(keys.seen_by(execution_id, since_ms))})

    def forget(self, batch: Batch, execution_id: str, since: str,
               notes: Mapping[str, bytes] | None = None, *,
               guard: tuple[str, str, bytes] | None = None
               ) -> Callable[[Sequence[Any]], int | None]:
        """Take the review of ``execution_id`` that started waiting at ``since`` out of every
        index it was put in, queued in ``batch`` (a closing review's one round trip, with
        other owners' commands); the reader it returns gives how many entries went.
        ``notes``: the execution's annotations as just read
        (:attr:`engine.state.store.Annotated.notes`), so that its note is not read again;
        else it is read first. A review an earlier version indexed kept the note in a set
        of its own, read and deleted in the batch; its entries go in one more round trip.
        ``guard``: sent with the commit that closes the review (with ``notes`` as read before
        it, :data:`engine.state.store.Alongside`): nothing is done unless it applied and the
        note is still as read, and the reader then gives None."""
        moment = parse_iso(since)
        if moment is None:
            return lambda replies: 0
        score = epoch_ms(moment)
        key = noted_key(score)
        raw = notes.get(key) if notes is not None else None
        if notes is not None:
            words = raw.decode().split() if raw is not None else []
        else:
            words = self.store.words(execution_id, key)
        dropped = self.store.drop_words(
            batch, execution_id, key, _index_keys(words), execution_id, score,
            legacy_set=keys.seen_by(execution_id, score), guard=guard, read=raw)

        def read(replies: Sequence[Any]) -> int | None:
            found = dropped(replies)
            if found is None:
                return None
            removed, legacy = found
            if legacy:
                removed += self.store.index_remove_instance(
                    [*_index_keys(legacy), keys.INDEXED], execution_id, score)
            return removed

        return read

    def page(self, user_id: str, offset: int, limit: int,
             also: Sequence[ReviewRequest] = ()) -> tuple[list[ReviewRequest], int]:
        """A page of the waiting reviews ``user_id`` may see (admins aside), oldest first,
        and how many there are; ``also``: reviews not indexed that they may see."""
        sources = self.sources(user_id)
        extra = [(r.execution_id, float(epoch_ms(r.created_at))) for r in also]
        reviews: list[ReviewRequest] = []
        total = 0
        if not sources and not extra:
            return [], 0
        for _ in range(PASSES):
            if len(sources) == 1 and not extra:  # one index alone: read, not merged
                rows, total = self.store.index_scored_page(sources[0], offset, limit)
            else:
                rows, total = self.store.index_union_page(sources, engine_keys.INDEX_WAITING,
                                                          offset, limit, extra=extra)
            reviews, stale = self._reviews(rows)
            if not stale:
                break
            for member, score in stale:  # its run waits on another review now
                self.store.index_remove_instance([*sources, keys.INDEXED], member, score)
            total -= len(stale)
        return reviews, max(total, len(reviews))

    def unindexed(self) -> list[str]:
        """The waiting reviews not indexed, oldest first: not posted yet (their post job
        has not run, or never will: a worker stopped between a run's wait and its post),
        or posted before this index existed (see :meth:`bot.overview.Overview.page`).

        A review is indexed once its execution has its note (:func:`noted_key`). The
        first call in a process reads the whole waiting index and asks each review (at
        100,000 reviews, about half a second, once). Later calls first read the waiting
        index's size and newest score (one round trip, O(log N)); they ask again about
        those found unindexed before and, when either changed, about those that began
        waiting since the newest seen, less :data:`LATE_MS` (a wait committed late, or by
        a worker whose clock is behind), leaving out those already found indexed: a range
        read and one pipelined look-up of their notes. Nothing waiting unindexed and
        nothing changed: the one round trip. Listings on other threads wait for a look
        under way rather than make their own (each process's first, among them); the web
        process makes its first as it starts (:meth:`bot.overview.Overview.warm`).
        """
        with self._unindexed_lock:
            return self._look_for_unindexed()

    def _look_for_unindexed(self) -> list[str]:
        kept = self._unindexed
        stamp = self.store.index_ends([engine_keys.INDEX_WAITING])[0]
        if kept is not None and kept.stamp == stamp:
            if not kept.found:
                return []
            fresh: list[tuple[str, float]] = []  # nothing began waiting: ask those found only
        else:
            since = (float("-inf") if kept is None or kept.newest is None
                     else kept.newest - self.late_ms)
            fresh = self.store.index_scored_from(engine_keys.INDEX_WAITING, since)
        pending = kept.found if kept is not None else {}
        confirmed = kept.confirmed if kept is not None else {}
        scores = dict(zip(pending, self.store.index_scores(engine_keys.INDEX_WAITING,
                                                           list(pending)), strict=True))
        candidates = {m: s for m, s in scores.items() if s is not None}
        candidates.update((m, s) for m, s in fresh if confirmed.get(m) != s)
        ordered = sorted(candidates.items(), key=lambda row: (row[1], row[0]))
        noted = self.store.have_annotations([(m, noted_key(int(s))) for m, s in ordered])
        found = {m: s for (m, s), has in zip(ordered, noted, strict=True) if not has}
        newest = max((s for _, s in fresh), default=kept.newest if kept is not None else None)
        edge = float("-inf") if newest is None else newest - self.late_ms
        confirmed = {m: s for m, s in [*confirmed.items(), *((m, s) for (m, s), has
                                                             in zip(ordered, noted, strict=True)
                                                             if has)]
                     if s >= edge}
        self._unindexed = _Unindexed(stamp, newest, found, confirmed)
        return list(found)

    def sources(self, user_id: str) -> list[str]:
        """The indexes that hold reviews ``user_id`` may see, empty ones left out: their
        own (``sees``), the engine's of those they may decide (``idx:approver``, which
        :meth:`record` does not repeat) and those of the channels with reviews they are a
        member of. Two round trips, and a Slack call per channel whose cached members
        lapsed."""
        posted = self.store.set_members(keys.POSTED_CHANNELS)
        own = [keys.viewer(user_id), engine_keys.index_approver(user_id)]
        sizes = self.store.index_sizes([*own, *(keys.posted_in(c) for c in posted)])
        found = [key for key, size in zip(own, sizes, strict=False) if size]
        return found + [keys.posted_in(c) for c, size in zip(posted, sizes[len(own):], strict=True)
                        if size and user_id in self.directory.conversation_members(c)]

    def _reviews(self, rows: Sequence[tuple[str, float]]
                 ) -> tuple[list[ReviewRequest], list[tuple[str, float]]]:
        """The reviews ``rows`` name, and the rows whose run now waits on another review."""
        found: list[ReviewRequest] = []
        stale: list[tuple[str, float]] = []
        loaded = self.store.waiting_reviews([member for member, _ in rows])
        for (member, score), review in zip(rows, loaded, strict=True):
            if review is not None and epoch_ms(review.created_at) == int(score):
                found.append(review)
            else:
                stale.append((member, score))
        return found, stale
