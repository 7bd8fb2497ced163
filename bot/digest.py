"""Digests: in an alert storm, one message for many reviews of the same step in one channel.

An alert storm starts hundreds of runs of one workflow within seconds, each waiting on the
same review step, all posted to the same channel. Slack takes about one message a second
per channel (:mod:`bot.ratelimit`), so 1,000 messages would take a quarter of an hour to
post and bury the channel. Instead, once more than ``threshold`` reviews of one workflow
step wait in one channel (``SIGNOFF_SLACK_DIGEST_AFTER``, default :data:`DIGEST_AFTER`;
0 turns digests off), each further review of that step joins the channel's *digest*: one
message, "42 reviews of isolate-host are waiting: review them together", whose button
opens batch review (:mod:`bot.batch`) for that step. Reviews posted before the threshold
was passed keep their own messages.

Each review in a digest stays its own execution: its own decision, its own ``step.decided``
audit event, its own run continuing. Batch review decides each through the engine, which
decides who may act (someone who may not decide a review finds nothing to tick, and a
forged submission is refused and audited, one review at a time). ``/approvals`` and the Home
tab list digested reviews as any other, each decidable on its own, linking to the digest.

The digest is recorded on each review's delivery record as a post (the digest's channel and
ts), so a retried post job does not post the review again, ``/approvals all`` shows it to the
channel's members, and notifications link to it. :meth:`Digests.digests_among` (and
:meth:`Digests.leave`, as a review closes) tell those posts apart, so that closing one review
never rewrites the digest with that review's message, nor an escalation notes it under it.
``signoff redeliver`` gives a digested review a message of its own.

The digest's count follows the pile (the reviews of that step still waiting in that channel,
in its own messages or in the digest): each review that joins or leaves marks the digest
out of date and hands a refresh to the ``slack`` queue's inbox, so a burst of changes costs
one ``chat.update``; and one digest is rewritten at most once every
``SIGNOFF_SLACK_DIGEST_EVERY`` seconds (3 by default: Slack's ``chat.update`` takes about 50
a minute), a refresh due sooner coming back then through RQ's scheduler. When the pile
is empty the digest says so, loses its button, and the next review of that step is posted
on its own again.

Redis keys are listed in :mod:`bot.keys`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import keys, texts
from bot.block_kit import context_block, plain_text, section_block
from bot.forms import decision_line
from bot.mrkdwn import escape_mrkdwn, is_user_id, truncate_mrkdwn, truncate_plain
from bot.ratelimit import ChannelLimits
from engine.errors import ExecutionNotFound
from engine.notify import ReviewRequest
from engine.run.engine import Engine
from engine.state.batch import Batch

log = logging.getLogger(__name__)

DIGEST_AFTER = 20  # reviews of one step waiting in one channel before a digest takes the next
TITLES_SHOWN = 3  # the newest reviews' titles shown in the digest
TITLE_LIMIT = 150
LOCK_SECONDS = 30
DIRTY_TTL = 600  # seconds; were a refresh handed in lost, the next change after hands in one
FINISHED_TTL = 30 * 86400  # how long a closed digest's message stays known as one
PRUNE_SAMPLE = 20  # members checked for having closed unseen, per refresh
WHERE = "digest"  # the batch modal's origin, for bot.batch
ACTION_DIGEST = "signoff.digest.batch"  # opens batch review (bot.approvals wires it)


# A closing review leaves the piles of the channels it was posted to, in one command (of the
# close's one round trip, engine.state.batch): ARGV execution id, how many piles (P); KEYS,
# for each pile: its members, the members its digest counted, its digest; then digest
# messages. For each pile, SREM from the first two and whether the third exists; then
# whether each digest message exists. Returns those replies, flat, in that order. Sent with
# the commit that closes the review (guarded: ARGV field, value; the execution hash last in
# KEYS), nothing is done unless that field holds that value, and it returns {-1}.
_LEAVE = """
local last = #KEYS
if ARGV[3] then  -- sent with a commit: only once it applied (the hash's head is the commit's)
  if redis.call('HGET', KEYS[last], ARGV[3]) ~= ARGV[4] then return {-1} end
  last = last - 1
end
local found = {}
local piles = tonumber(ARGV[2])
for i = 1, piles do
  table.insert(found, redis.call('SREM', KEYS[3 * i - 2], ARGV[1]))
  table.insert(found, redis.call('SREM', KEYS[3 * i - 1], ARGV[1]))
  table.insert(found, redis.call('EXISTS', KEYS[3 * i]))
end
for i = 3 * piles + 1, last do
  table.insert(found, redis.call('EXISTS', KEYS[i]))
end
return found
"""

# A review joins its pile, and the pile's digest when there is one, in one round trip:
# KEYS pile, digested, digest, titles, dirty; ARGV execution id, title, titles kept, dirty
# TTL. Returns {1, channel, ts, 1 if the digest needs a refresh handed in} with a digest,
# else {0, how many wait in the pile}.
_ABSORB = """
redis.call('SADD', KEYS[1], ARGV[1])
local found = redis.call('HMGET', KEYS[3], 'channel', 'ts')
if not found[1] or not found[2] then
  return {0, redis.call('SCARD', KEYS[1])}
end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[4], ARGV[2])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[3]) - 1)
end
local dirty = redis.call('SET', KEYS[5], '1', 'NX', 'EX', tonumber(ARGV[4]))
return {1, found[1], found[2], dirty and 1 or 0}
"""


def pile_id(channel: str, workflow: str, step: str) -> str:
    """The reviews of ``step`` in ``workflow`` waiting in ``channel``."""
    return json.dumps([channel, workflow, step], separators=(",", ":"))


def parse_pile(pile: str) -> tuple[str, str, str]:
    channel, workflow, step = json.loads(pile)
    return str(channel), str(workflow), str(step)


class Digests:
    """The digests of one workspace's channels, over one engine."""

    def __init__(self, engine: Engine, client: WebClient, limits: ChannelLimits, *,
                 threshold: int = DIGEST_AFTER, every: float = 0.0,
                 refresh_later: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.every = every  # seconds at least between two rewrites of one digest (0: none)
        self.redis: redis.Redis = engine.store.redis
        self.client = client
        self.limits = limits
        self.threshold = threshold
        self._refresh_later = refresh_later
        self._absorb = self.redis.register_script(_ABSORB)
        self._leave = self.redis.register_script(_LEAVE)

    # -- a review joins --------------------------------------------------------------------------

    def absorb(self, review: ReviewRequest, target: str) -> tuple[str, str] | None:
        """Count ``review`` as waiting in channel ``target``; if it belongs in the step's
        digest there (posted now if need be), the digest's ``(channel, ts)``; None when it
        gets a message of its own. Raises :class:`bot.ratelimit.RateLimited` when the digest
        cannot be posted yet (the caller's job comes back later)."""
        if self.threshold <= 0 or is_user_id(target):
            return None
        pile = pile_id(target, review.workflow, review.step)
        found = self._absorb(
            keys=[keys.pile(pile), keys.digested(pile), keys.digest(pile),
                  keys.digest_titles(pile), keys.digest_dirty(pile)],
            args=[review.execution_id, decision_line(review), TITLES_SHOWN, DIRTY_TTL])
        if int(found[0]) == 1:  # the digest exists: the review is in it now
            if int(found[3]):
                self._hand_in(pile)
            return _text(found[1]), _text(found[2])
        if int(found[1]) <= self.threshold:
            return None
        with self.redis.lock(keys.digest_lock(pile), timeout=LOCK_SECONDS,
                             blocking_timeout=LOCK_SECONDS):
            digest = _message(self.redis.hgetall(keys.digest(pile)))
            if digest is None:
                count = int(self.redis.scard(keys.pile(pile)))
                if count <= self.threshold:
                    return None
                digest = self._post(pile, target, review, count)
            self._join(pile, review)
        self.changed(pile)
        return digest

    def _join(self, pile: str, review: ReviewRequest) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(keys.digested(pile), review.execution_id)
        pipe.lpush(keys.digest_titles(pile), decision_line(review))
        pipe.ltrim(keys.digest_titles(pile), 0, TITLES_SHOWN - 1)
        pipe.execute()

    def _post(self, pile: str, target: str, review: ReviewRequest,
              count: int) -> tuple[str, str]:
        _, workflow, step = parse_pile(pile)
        message = digest_message(workflow, step, count, [decision_line(review)])
        posted = self.limits.post(target, text=message["text"], blocks=message["blocks"],
                                  unfurl_links=False, unfurl_media=False)
        channel, ts = str(posted["channel"]), str(posted["ts"])
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.digest(pile), mapping={"channel": channel, "ts": ts})
        pipe.set(keys.digest_message(channel, ts), pile)
        pipe.execute()
        log.info("digest for %s posted in %s (%s reviews waiting)", step, channel, count)
        return channel, ts

    # -- a review leaves -------------------------------------------------------------------------

    def leave(self, batch: Batch, execution_id: str, workflow: str, step: str,
              posts: Sequence[tuple[str, str, str]], *,
              guard: tuple[str, str, bytes] | None = None
              ) -> Callable[[Sequence[Any]], set[tuple[str, str]] | None]:
        """``execution_id``'s review of ``step`` no longer waits where it was posted
        (``posts``: target, channel, ts; DMs are skipped), queued in ``batch``; the reader it
        returns gives which of the posts are digests (``(channel, ts)``), and marks the
        digests that counted the review out of date. ``guard``: sent with the commit that
        closes the review (:data:`engine.state.store.Alongside`): nothing is done unless it
        applied, and the reader then gives None."""
        targets = list(dict.fromkeys(t for t, _, _ in posts if not is_user_id(t)))
        shown = [(channel, ts) for target, channel, ts in posts if not is_user_id(target)]
        if not targets:
            return lambda replies: set()
        piles = [pile_id(target, workflow, step) for target in targets]
        at = len(batch)
        batch.script(self._leave, [
            *(key for pile in piles
              for key in (keys.pile(pile), keys.digested(pile), keys.digest(pile))),
            *(keys.digest_message(channel, ts) for channel, ts in shown),
            *([guard[0]] if guard is not None else [])],
            [execution_id, len(piles), *([guard[1], guard[2]] if guard is not None else [])])

        def read(replies: Sequence[Any]) -> set[tuple[str, str]] | None:
            found = replies[at]
            if isinstance(found, Exception):
                raise found
            if found and int(found[0]) < 0:
                return None
            for n, pile in enumerate(piles):
                removed, _, has_digest = found[3 * n:3 * n + 3]
                if removed and has_digest:
                    self.changed(pile)
            return {post for post, exists in zip(shown, found[3 * len(piles):], strict=True)
                    if exists}

        return read

    # -- the digest's message --------------------------------------------------------------------

    def digests_among(self, posts: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``posts`` (channel, ts) are digest messages."""
        if not posts:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for channel, ts in posts:
            pipe.exists(keys.digest_message(channel, ts))
        return {post for post, found in zip(posts, pipe.execute(), strict=True) if found}

    def changed(self, pile: str) -> None:
        """Mark ``pile``'s digest out of date; hand in one refresh for any number of marks."""
        if self.redis.set(keys.digest_dirty(pile), "1", nx=True, ex=DIRTY_TTL):
            self._hand_in(pile)

    def _hand_in(self, pile: str) -> None:
        if self._refresh_later is not None:
            self._refresh_later(pile)
        else:
            self.refresh(pile)

    def refresh(self, pile: str) -> int | None:
        """Rewrite ``pile``'s digest with the count as it stands (closed, once the pile is
        empty); the count shown, None without a digest. Raises :class:`TooSoon` when the
        digest was rewritten less than ``every`` seconds ago: it stays marked out of date
        (further changes hand in nothing), and the caller comes back then."""
        if self.every > 0 and not self.redis.set(keys.digest_paced(pile), "1", nx=True,
                                                 px=max(1, int(self.every * 1000))):
            raise TooSoon(pile, max(int(self.redis.pttl(keys.digest_paced(pile))), 1) / 1000)
        self.redis.delete(keys.digest_dirty(pile))
        digest = _message(self.redis.hgetall(keys.digest(pile)))
        if digest is None:
            return None
        self._prune(pile)
        _, workflow, step = parse_pile(pile)
        count = int(self.redis.scard(keys.pile(pile)))
        if count == 0:
            with self.redis.lock(keys.digest_lock(pile), timeout=LOCK_SECONDS,
                                 blocking_timeout=LOCK_SECONDS):
                if self.redis.scard(keys.pile(pile)) == 0:
                    self._update(digest, digest_message(workflow, step, 0, []))
                    pipe = self.redis.pipeline(transaction=True)
                    pipe.delete(keys.digest(pile), keys.digested(pile),
                                keys.digest_titles(pile))
                    pipe.expire(keys.digest_message(*digest), FINISHED_TTL)
                    pipe.execute()
                    return 0
            count = int(self.redis.scard(keys.pile(pile)))
        titles = [t.decode() if isinstance(t, bytes) else str(t)
                  for t in self.redis.lrange(keys.digest_titles(pile), 0, TITLES_SHOWN - 1)]
        self._update(digest, digest_message(workflow, step, count, titles))
        return count

    def _update(self, digest: tuple[str, str], message: Mapping[str, Any]) -> None:
        channel, ts = digest
        try:
            self.client.chat_update(channel=channel, ts=ts, text=message["text"],
                                    blocks=message["blocks"])
        except SlackApiError as exc:
            if exc.response.get("error") not in ("message_not_found", "channel_not_found",
                                                 "is_archived", "cant_update_message"):
                raise
            log.warning("digest %s/%s is gone: %s", channel, ts, exc.response.get("error"))

    def _prune(self, pile: str) -> None:
        """Take out members that closed without their close reaching the pile (a post job
        that died after counting its review, which closed before the job was retried)."""
        _, _, step = parse_pile(pile)
        sample = self.redis.srandmember(keys.pile(pile), PRUNE_SAMPLE) or []
        gone = []
        for raw in sample:
            execution_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                review = self.engine.review(execution_id)
            except ExecutionNotFound:
                review = None
            if review is None or review.step != step:
                gone.append(execution_id)
        if gone:
            self.redis.srem(keys.pile(pile), *gone)
            self.redis.srem(keys.digested(pile), *gone)


class TooSoon(Exception):
    """A digest's rewrite must wait ``seconds`` (:meth:`Digests.refresh`)."""

    def __init__(self, pile: str, seconds: float) -> None:
        super().__init__(f"digest {pile} was rewritten less than its interval ago; "
                         f"again in {seconds:.1f} s")
        self.pile = pile
        self.seconds = seconds


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _message(found: Mapping[Any, Any] | None) -> tuple[str, str] | None:
    if not found:
        return None
    data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                            else v) for k, v in found.items()}
    if not data.get("channel") or not data.get("ts"):
        return None
    return str(data["channel"]), str(data["ts"])


# -- Block Kit -------------------------------------------------------------------------------------

def digest_text(step: str, count: int) -> str:
    """The notification text (mrkdwn, escaped)."""
    if count == 0:
        return texts.digest_closed(escape_mrkdwn(step))
    return texts.digest_waiting(count, escape_mrkdwn(step))


def digest_message(workflow: str, step: str, count: int,
                   titles: Sequence[str]) -> dict[str, Any]:
    """The digest: how many reviews of ``step`` wait, the newest few (``titles``, plain text
    from event data, escaped here), and the button that opens batch review."""
    if count == 0:
        closed = texts.digest_closed(f"`{escape_mrkdwn(step)}`")
        return {"text": digest_text(step, 0), "blocks": [section_block(
            f"{closed} {texts.DIGEST_CLOSED_DETAILS}")]}
    headline = texts.digest_waiting(count, f"`{escape_mrkdwn(step)}`")
    blocks: list[dict[str, Any]] = [section_block(
        f"*{headline}*\n{texts.digest_details(escape_mrkdwn(workflow))}")]
    if titles:
        blocks.append(context_block(*(
            truncate_mrkdwn(escape_mrkdwn(t), TITLE_LIMIT) for t in titles[:TITLES_SHOWN])))
    value = json.dumps({"workflow": workflow, "step": step, "where": WHERE},
                       separators=(",", ":"))
    blocks.append({"type": "actions", "block_id": "signoff.digest", "elements": [
        {"type": "button", "action_id": ACTION_DIGEST, "style": "primary",
         "text": plain_text(truncate_plain(texts.DIGEST_BUTTON, 75)), "value": value}]})
    return {"text": digest_text(step, count), "blocks": blocks}
