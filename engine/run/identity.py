"""Who someone is, however they are spelled: Slack user ids, e-mail addresses, token principals.

A run's requester and a review's approvers are written by people and tools in many
spellings of the same person: ``U0ALICE01``, ``u0alice01``, ``<@U0ALICE01>``,
``Alice@Corp.example``, ``alice+ci@corp.example``. The rules that decide (self-approval,
who holds a seat, distinct quorum votes) compare :func:`identity_key` forms, never the
raw strings:

- a Slack user id (``U…`` / ``W…``, any case, with or without ``<@…>``): upper case;
- an e-mail address: lower case, ``+tag`` dropped from the local part (``alice+ci@`` is
  ``alice@``) for comparing;
- anything else (a token's principal, ``operator``, ``system:sla``): as written.

:func:`requester` normalises a requester when a run starts and refuses anything that is
none of these (:class:`RequesterInvalid`, the API's 422 ``requester_invalid``).

:class:`NamedPeople` is the engine's own answer to "is this the same person" and "is
this person among these entries", with no directory behind it: equal keys, and nothing
else. A Slack id and an e-mail address cannot be told apart without one, so it answers
"cannot tell" (None) for that pair; the bot installs its Slack directory on the engine
(:attr:`engine.run.engine.Engine.people`), which can.

Pure.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from enum import StrEnum
from functools import lru_cache
from typing import Protocol

from engine.errors import RequesterInvalid

# Slack's user ids: U or W then upper-case letters and digits (at least one digit: a
# principal like ``ursula`` is not one). Matched after upper-casing.
_SLACK_USER = re.compile(r"[UW](?=[A-Z0-9]*[0-9])[A-Z0-9]{2,20}")
_MENTION = re.compile(r"<@([A-Za-z0-9]+)(?:\|[^>]*)?>")
_EMAIL = re.compile(r"[^@\s<>]{1,64}@[^@\s<>]+\.[^@\s<>]+")
_MAX = 254
# Who may act is asked for every review a listing shows and every click, with the same few
# names again and again: what a name is read as is kept (a pure function of its text).
_KEPT = 4096


class Kind(StrEnum):
    SLACK_USER = "slack"
    EMAIL = "email"
    PRINCIPAL = "principal"


@lru_cache(maxsize=_KEPT)
def slack_user_id(value: str) -> str | None:
    """``value`` as a Slack user id (upper case, ``<@…>`` removed), or None if it is not one."""
    text = value.strip()
    mention = _MENTION.fullmatch(text)
    if mention:
        text = mention.group(1)
    upper = text.upper()
    return upper if _SLACK_USER.fullmatch(upper) else None


@lru_cache(maxsize=_KEPT)
def is_email(value: str) -> bool:
    return _EMAIL.fullmatch(value.strip()) is not None


@lru_cache(maxsize=_KEPT)
def kind_of(value: str) -> Kind:
    if slack_user_id(value) is not None:
        return Kind.SLACK_USER
    if is_email(value):
        return Kind.EMAIL
    return Kind.PRINCIPAL


def email_key(address: str) -> str:
    """An address as compared: lower case, without a ``+tag`` in its local part."""
    local, _, domain = address.strip().lower().rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


@lru_cache(maxsize=_KEPT)
def identity_key(value: str) -> str:
    """The form two spellings of one person share (see the module's docstring)."""
    user = slack_user_id(value)
    if user is not None:
        return user
    if is_email(value):
        return email_key(value)
    return value.strip()


def requester(raw: str, principals: Collection[str] = ()) -> str:
    """A run's requester as stored: a Slack user id (upper case), an e-mail address (lower
    case, ``+tag`` kept), or one of ``principals`` (token principals) as written.
    RequesterInvalid for anything else: a name the engine cannot tie to a person."""
    text = raw.strip()
    user = slack_user_id(text)
    if user is not None:
        return user
    if len(text) <= _MAX and is_email(text):
        return text.lower()
    if text in principals:
        return text
    raise RequesterInvalid(raw, "a requester is a Slack user id (U…), an e-mail address, or "
                                "the principal of an API token")


class People(Protocol):
    """Who is who: the engine's rules ask it, a directory (the bot's Slack one) answers."""

    def same_person(self, a: str, b: str) -> bool | None:
        """Whether ``a`` and ``b`` (ids, addresses, principals) are one person; None when
        it cannot tell (an e-mail address against a Slack id it cannot look up)."""
        ...

    def is_among(self, who: str, entries: Sequence[str]) -> bool:
        """Whether ``who`` is one of ``entries`` (ids, user groups, addresses, principals)."""
        ...


class NamedPeople:
    """People as written: the same key is the same person; nothing is looked up."""

    def same_person(self, a: str, b: str) -> bool | None:
        ka, kb = identity_key(a), identity_key(b)
        if ka == kb:
            return True
        kinds = {kind_of(a), kind_of(b)}
        if kinds == {Kind.SLACK_USER, Kind.EMAIL}:
            return None  # the same person, perhaps: only a directory can say
        return False

    def is_among(self, who: str, entries: Sequence[str]) -> bool:
        key = identity_key(who)
        return any(identity_key(entry) == key for entry in entries)


def keys_of(values: Iterable[str]) -> frozenset[str]:
    return frozenset(identity_key(v) for v in values)
