"""Every Redis key the Slack bot adds to the engine's, built in one place.

    signoff:slack:user:{U…}                 string  a display name (users.info)
    signoff:slack:group:{S…}                string  JSON list of a user group's member ids
                                                    (usergroups.users.list)
    signoff:slack:email:{address}           string  the user id behind an address, or "" when
                                                    nobody has it (users.lookupByEmail)
    signoff:slack:address:{U…}              string  a user's e-mail address, or "" when Slack
                                                    shows none (users.info)
    signoff:slack:permalink:{channel}:{ts}  string  a review message's permalink (chat.getPermalink)
    signoff:slack:members:{channel}         string  JSON list of a conversation's member ids
                                                    (conversations.members, every page)

All six cache what Slack answered and expire (:mod:`bot.directory`, :mod:`bot.overview`);
losing them costs Slack calls, nothing else. What the bot must keep, where it posted a
review, it keeps on the execution itself, as an annotation (:mod:`engine.state.keys`).

Who may see each waiting review, for ``/approvals all`` (:mod:`bot.visibility`), written
as reviews are posted and widened and taken out as they close:

    signoff:slack:sees:{U…}                 zset    the reviews user U may see as one of their
                                                    people (approver at any level, requester,
                                                    DM'd), by when they started waiting
    signoff:slack:posted:{channel}          zset    the reviews posted in a channel (not a
                                                    DM), by when they started waiting
    signoff:slack:posted-channels           set     every channel with a ``posted`` index
    signoff:slack:indexed                   zset    written by earlier versions: reviews they
                                                    indexed (entries go as those close)
    signoff:slack:seen-by:{id}:{ms}         set     written by earlier versions: whose
                                                    indexes hold the review (now the
                                                    execution's ``n:slack:seen:{ms}``)

Slack's posting limit and the digests of an alert storm (:mod:`bot.ratelimit`,
:mod:`bot.digest`):

    signoff:slack:ratelimited:{channel}     string  set while Slack's 429 for a channel lasts
                                                    (expires with its Retry-After)
    signoff:slack:next-slot:{channel}       string  when the last post put off by the limit
                                                    comes back (epoch seconds)
    signoff:slack:pile:{pile}               set     reviews of one workflow step waiting in one
                                                    channel (pile: JSON [channel, workflow, step])
    signoff:slack:digest:{pile}             hash    the pile's digest message: channel, ts
    signoff:slack:digested:{pile}           set     the reviews shown by the digest alone
    signoff:slack:digest-titles:{pile}      list    the newest reviews' titles, for the digest
    signoff:slack:digest-dirty:{pile}       string  set while a refresh of the digest is due
    signoff:slack:digest-lock:{pile}        string  held while a digest is posted or closed
    signoff:slack:digest-message:{ch}:{ts}  string  the pile of a digest message: its posts on
                                                    delivery records are never rewritten

Losing a ``pile`` set makes its digest's count low until its reviews close; losing the
``digest-message`` keys lets a closing review rewrite a digest with its own message.

Losing the ``n:slack:seen:{ms}`` notes makes those waiting reviews ones not indexed, which
``/approvals all`` indexes again as it finds them (:meth:`bot.overview.Overview.page`);
losing some indexes but not the notes hides those reviews from all but admins until they
change or close.
"""

from __future__ import annotations

from engine.state.keys import PREFIX as ENGINE_PREFIX

PREFIX = f"{ENGINE_PREFIX}slack:"


def user_name(user_id: str) -> str:
    return f"{PREFIX}user:{user_id}"


def group_members(group_id: str) -> str:
    return f"{PREFIX}group:{group_id}"


def email_user(address: str) -> str:
    return f"{PREFIX}email:{address}"


def user_email(user_id: str) -> str:
    return f"{PREFIX}address:{user_id}"


def permalink(channel: str, ts: str) -> str:
    return f"{PREFIX}permalink:{channel}:{ts}"


def conversation_members(channel: str) -> str:
    return f"{PREFIX}members:{channel}"


def viewer(user_id: str) -> str:
    return f"{PREFIX}sees:{user_id}"


def posted_in(channel: str) -> str:
    return f"{PREFIX}posted:{channel}"


POSTED_CHANNELS = f"{PREFIX}posted-channels"

INDEXED = f"{PREFIX}indexed"


def seen_by(execution_id: str, since_ms: int) -> str:
    return f"{PREFIX}seen-by:{execution_id}:{since_ms}"


def rate_limited(channel: str) -> str:
    return f"{PREFIX}ratelimited:{channel}"


def next_slot(channel: str) -> str:
    return f"{PREFIX}next-slot:{channel}"


def pile(pile_id: str) -> str:
    return f"{PREFIX}pile:{pile_id}"


def digest(pile_id: str) -> str:
    return f"{PREFIX}digest:{pile_id}"


def digested(pile_id: str) -> str:
    return f"{PREFIX}digested:{pile_id}"


def digest_titles(pile_id: str) -> str:
    return f"{PREFIX}digest-titles:{pile_id}"


def digest_dirty(pile_id: str) -> str:
    return f"{PREFIX}digest-dirty:{pile_id}"


def digest_paced(pile_id: str) -> str:
    return f"{PREFIX}digest-paced:{pile_id}"


def digest_lock(pile_id: str) -> str:
    return f"{PREFIX}digest-lock:{pile_id}"


def digest_message(channel: str, ts: str) -> str:
    return f"{PREFIX}digest-message:{channel}:{ts}"
