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
