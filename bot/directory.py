"""Who is who in Slack: display names, user-group members, conversation members and e-mail
look-ups, cached in Redis (the keys are in :mod:`bot.keys`).

A :class:`Directory` is the engine's :class:`engine.run.identity.People` wherever the bot
runs (installed as ``engine.people``): the engine's rules on who may decide ask it
whether a clicker is among a review's approvers (through user groups and addresses) and
whether they are its requester (by the address Slack shows for them).

Each entry expires after ``BotSettings.cache_seconds``; a miss asks Slack again.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import keys
from bot.mrkdwn import is_user_id
from engine.run.identity import NamedPeople, email_key, slack_user_id
from engine.state.store import Store

log = logging.getLogger(__name__)

NEGATIVE_TTL = 300  # an unknown e-mail is asked about again after five minutes
_GROUP_ID = re.compile(r"S[A-Z0-9]+")
# Slack answers these for an id or address that does not exist; anything else may pass.
_NOT_FOUND = {"user_not_found", "users_not_found", "no_such_subteam", "subteam_not_found"}
# conversations.members for a conversation that is gone or the bot cannot read.
_NO_CONVERSATION = {"channel_not_found", "not_in_channel", "method_not_supported_for_channel_type"}
MEMBERS_PAGE = 1000  # Slack's largest conversations.members page
_AS_WRITTEN = NamedPeople()


def is_group_id(value: str) -> bool:
    return _GROUP_ID.fullmatch(value) is not None


def is_email(value: str) -> bool:
    return "@" in value and not value.startswith("@")


@dataclass(frozen=True)
class ResolvedApprovers:
    """``with.approvers`` turned into people: who may decide, and how to show them."""

    user_ids: tuple[str, ...]  # every person who may decide
    shown: tuple[str, ...]  # U… and S… ids for the context line, in the order written
    unresolved: tuple[str, ...]  # entries Slack does not know


class Directory:
    """Slack's directory behind a cache in the engine's store."""

    def __init__(self, client: WebClient, store: Store, ttl: int = 3600) -> None:
        self.client = client
        self.store = store
        self.ttl = ttl

    def display_name(self, user_id: str, fallback: str = "") -> str:
        """The name people see for ``user_id``; ``fallback`` (or the id) when Slack can't say,
        or can't be reached."""
        cached = self.cached_name(user_id)
        if cached is not None:
            return cached
        key = keys.user_name(user_id)
        try:
            user = self.client.users_info(user=user_id)["user"]
        except SlackApiError as exc:
            log.warning("users.info %s failed: %s", user_id, exc.response.get("error"))
            return fallback or user_id
        except OSError as exc:  # Slack unreachable: a name is never worth failing for
            log.warning("users.info %s failed: %s", user_id, exc)
            return fallback or user_id
        profile = user.get("profile") or {}
        name = str(profile.get("display_name") or profile.get("real_name")
                   or user.get("real_name") or user.get("name") or fallback or user_id)
        self.store.set_value(key, name, ttl_seconds=self.ttl)
        return name

    def cached_name(self, user_id: str) -> str | None:
        """The name people see for ``user_id`` if it is cached; Slack is not asked."""
        return self._cached(keys.user_name(user_id))

    @staticmethod
    def name_key(user_id: str) -> str:
        """Where :meth:`cached_name` looks, for a caller that reads it along with other
        things (a click reads it with the review); :meth:`name_from` reads the value."""
        return keys.user_name(user_id)

    @staticmethod
    def name_from(value: bytes | str | None) -> str | None:
        """:meth:`cached_name` from the value read at :meth:`name_key`."""
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def group_members(self, group_id: str) -> tuple[str, ...] | None:
        """The members of a user group; None when Slack has no such group."""
        key = keys.group_members(group_id)
        cached = self._cached(key)
        if cached is not None:
            return tuple(json.loads(cached))
        try:
            members = tuple(self.client.usergroups_users_list(usergroup=group_id)["users"])
        except SlackApiError as exc:
            if exc.response.get("error") in _NOT_FOUND:
                return None
            raise
        self.store.set_value(key, json.dumps(list(members)), ttl_seconds=self.ttl)
        return members

    def conversation_members(self, channel: str) -> frozenset[str]:
        """Who is in a conversation (every page of ``conversations.members``); empty when
        Slack has no such conversation or will not say, so nobody is let in by a failure."""
        key = keys.conversation_members(channel)
        cached = self._cached(key)
        if cached is not None:
            return frozenset(json.loads(cached))
        members: list[str] = []
        cursor = ""
        try:
            while True:
                page = self.client.conversations_members(channel=channel, limit=MEMBERS_PAGE,
                                                         cursor=cursor or None)
                members.extend(page["members"])
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or ""
                if not cursor:
                    break
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error in _NO_CONVERSATION:
                self.store.set_value(key, "[]", ttl_seconds=NEGATIVE_TTL)
            else:  # missing_scope (channels:read, groups:read), a rate limit: ask next time
                log.warning("conversations.members %s failed: %s", channel, error)
            return frozenset()
        except OSError as exc:  # Slack unreachable: nobody is let in, nothing is kept
            log.warning("conversations.members %s failed: %s", channel, exc)
            return frozenset()
        self.store.set_value(key, json.dumps(members), ttl_seconds=self.ttl)
        return frozenset(members)

    def is_among(self, who: str, entries: Sequence[str]) -> bool:
        """``who`` (a user id, an address or a principal) is one of ``entries`` as written:
        user ids, user-group ids (their members), e-mail addresses (their owner)."""
        user = slack_user_id(who)
        for entry in entries:
            if self.same_person(who, entry):
                return True
            if user is not None and is_group_id(entry) and user in (
                    self.group_members(entry) or ()):
                return True
        return False

    def same_person(self, a: str, b: str) -> bool | None:
        """Whether ``a`` and ``b`` are one person: the same key (:mod:`engine.run.identity`),
        or a user id and the address Slack shows for that user. None when the address of
        the user cannot be looked up (the rules then refuse: fail closed)."""
        found = _AS_WRITTEN.same_person(a, b)
        if found is not None:
            return found
        user, address = (a, b) if slack_user_id(a) is not None else (b, a)
        user = slack_user_id(user) or user
        # One cached look-up answers for every user compared with the same address (a
        # group's members against the requester), rather than one users.info per member.
        try:
            owner = self.user_for_email(email_key(address))
        except SlackApiError as exc:  # missing users:read.email, a rate limit: ask the user's
            log.warning("users.lookupByEmail failed: %s", exc.response.get("error"))
            owner = None
        if owner is not None:
            return owner == user
        email = self.email_of(user)  # nobody has that address: unless this user's own is unknown
        if email is None:
            return None
        return email_key(email) == email_key(address)

    def email_of(self, user_id: str) -> str | None:
        """The e-mail address Slack shows for ``user_id`` (users.info; needs the
        ``users:read.email`` scope); None when it shows none or cannot say now."""
        key = keys.user_email(user_id)
        cached = self._cached(key)
        if cached is not None:
            return cached or None
        try:
            user = self.client.users_info(user=user_id)["user"]
        except SlackApiError as exc:
            log.warning("users.info %s failed: %s", user_id, exc.response.get("error"))
            return None
        email = str((user.get("profile") or {}).get("email") or "")
        self.store.set_value(key, email, ttl_seconds=self.ttl if email else NEGATIVE_TTL)
        return email or None

    def user_for_email(self, email: str) -> str | None:
        """The user id behind an e-mail address; None when nobody in the workspace has it."""
        address = email.strip().lower()
        key = keys.email_user(address)
        cached = self._cached(key)
        if cached is not None:
            return cached or None
        try:
            user_id = str(self.client.users_lookupByEmail(email=address)["user"]["id"])
        except SlackApiError as exc:
            if exc.response.get("error") in _NOT_FOUND:
                self.store.set_value(key, "", ttl_seconds=NEGATIVE_TTL)
                return None
            raise
        self.store.set_value(key, user_id, ttl_seconds=self.ttl)
        return user_id

    def _cached(self, key: str) -> str | None:
        value = self.store.get_value(key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def user_id(self, who: str) -> str | None:
        """A user id for a U… id or an e-mail address (a run's requester); None otherwise."""
        who = who.strip()
        if is_user_id(who):
            return who
        if is_email(who):
            return self.user_for_email(who)
        return None

    def resolve_approvers(self, approvers: tuple[str, ...] | list[str]) -> ResolvedApprovers:
        """Expand user groups and look up e-mail addresses; unknown entries are set aside.

        Slack failing (rate limits that outlast the retries, an outage) raises, so the
        caller's job is retried rather than posting a review nobody can decide.
        """
        users: list[str] = []
        shown: list[str] = []
        unresolved: list[str] = []
        for raw in approvers:
            entry = str(raw).strip()
            if is_user_id(entry):
                users.append(entry)
                shown.append(entry)
            elif is_group_id(entry):
                members = self.group_members(entry)
                if members is None:
                    unresolved.append(entry)
                    continue
                users.extend(members)
                shown.append(entry)
            elif is_email(entry):
                found = self.user_for_email(entry)
                if found is None:
                    unresolved.append(entry)
                    continue
                users.append(found)
                shown.append(found)
            else:
                unresolved.append(entry)
        if unresolved:
            log.warning("approvers Slack does not know: %s", ", ".join(unresolved))
        return ResolvedApprovers(tuple(dict.fromkeys(users)), tuple(dict.fromkeys(shown)),
                                 tuple(unresolved))
