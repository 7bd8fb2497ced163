"""The tamper-evident audit trail: an append-only, hash-chained event log per execution.

It is a Redis list rather than a stream: Redis 7 preallocates 4 KB for every new
stream node, which alone would double what a paused execution costs. The chain,
not the data type, is what makes the trail tamper-evident.

Each event is canonical JSON ``e`` with ``h = sha256(previous h + e)`` (``h`` in hex);
the chain starts from :data:`GENESIS`. The trail stores each entry as a marker byte,
``h`` as 32 bytes and ``e``, compressed when large (:func:`stored`); entries written by
earlier versions, ``h`` in hex then ``e``, still read and verify (:func:`split`).
The execution keeps the last hash (``ah``), so editing, deleting or reordering any
event, the last one included, breaks verification. Building and checking the chain is
pure; the store appends.

A bare sha256 chain shows accidental damage and a careless edit, not a careful one:
anyone who can write to Redis can edit an event, recompute every later hash and the
head, and the trail verifies. With ``SIGNOFF_AUDIT_KEY`` each link is an HMAC-SHA256
under that key instead (``h = "hmac:" + hmac(key, previous h + e)``); the key is not in
Redis, so such a rewrite no longer verifies. The ``hmac:`` prefix records the scheme
link by link: a verifier without the key says the trail is keyed instead of broken, and
one with the key refuses a bare sha256 link after a keyed one (all that someone without
the key can write). A trail begun before the key was set stays sha256 up to its first
event written with the key. What the key cannot tell apart is a trail that is sha256
from its first event: written before the key was set, or rewritten whole by someone
without it; :attr:`Verification.keyed_from` says which part of a trail the key vouches
for. Rotation is not supported: keyed links verify only with the key that wrote them.

A review's message is stored once, here (``step.waiting_for_input``, with its
``sha256``; see :mod:`engine.state.messages`). Above :data:`PACK_OVER` bytes an event's
``message`` is stored compressed (zlib, then base64: JSON-safe text): as ``messageE``,
compressed with the execution's event (its JSON as stored under ``ev``) as zlib's preset
dictionary, since a review's message mostly quotes its event; or as ``messageZ``
(compressed alone) when no event is at hand or it does not help. Reading ``messageE``
back needs that event; the message's ``sha256`` in the same event checks what comes out,
and the trail's first event holds the event's own hash (``eventSha256``). The chain hashes
the event as stored; :func:`decode` gives it back with ``message``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import SettingsInvalid
from engine.state import compact
from engine.state.execution import canonical, loads

GENESIS = "0" * 64
PACK_OVER = 512  # bytes of message above which an event stores it compressed
PACKED = "messageZ"  # compressed alone
PACKED_WITH_EVENT = "messageE"  # compressed with the execution's event as preset dictionary
KEYED = "hmac:"  # starts a link made with SIGNOFF_AUDIT_KEY; a bare sha256 link is 64 hex

# Event types, as they appear in exports.
CREATED = "execution.created"
STARTED = "execution.started"
COMPLETED = "execution.completed"
FAILED = "execution.failed"
CANCELLED = "execution.cancelled"
TIMED_OUT = "execution.timed_out"
QUEUED = "execution.queued"  # settings.concurrency: waits for a slot of its group
DEQUEUED = "execution.dequeued"  # ... and got one
SKIPPED = "execution.skipped"  # ... never ran: dropped, queue full, or queue-ttl elapsed
STEP_STARTED = "step.started"
STEP_COMPLETED = "step.completed"
STEP_FAILED = "step.failed"
STEP_SKIPPED = "step.skipped"
STEP_RETRY = "step.retry_scheduled"
WAITING_FOR_INPUT = "step.waiting_for_input"
DECIDED = "step.decided"
TIMER_SET = "timer.set"
TIMER_FIRED = "timer.fired"
RECOVERED = "execution.recovered"
REFUSED = "decision.refused"
LOST = "decision.lost"  # acknowledged to the reviewer, but every try to record it failed
APPROVAL_RECORDED = "review.approval_recorded"
ESCALATED = "review.escalated"
REMINDED = "review.reminded"
REASSIGNED = "review.reassigned"
NOTIFICATION_FAILED = "review.notification_failed"  # a channel refused it for good
WOKEN = "execution.woken"  # a run parked for its children woke to read their reports
CHILD_STARTED = "child.started"  # the parent's trail: a child execution was started for a step
CHILD_FINISHED = "child.finished"  # the parent's trail: a child it waits on ended
PARENT_TOLD = "parent.told"  # the child's trail: its end was reported to its parent


@dataclass(frozen=True)
class AuditEntry:
    id: str  # the entry's position in the trail, from 1
    event: dict[str, Any]
    hash: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    problem: str = ""
    entry_id: str | None = None  # the first entry that does not verify
    keyed_from: str | None = None  # the first entry linked with the key (None: unkeyed)
    needs_key: bool = False  # keyed, and checked without the key: neither broken nor intact


def event(kind: str, at: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, "at": at, **{k: v for k, v in data.items() if v is not None}}


def link(previous: str, body: str, key: bytes | None = None) -> str:
    """The hash of ``body`` after ``previous``: sha256, or with ``key`` a prefixed HMAC."""
    message = (previous + body).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return KEYED + hmac.new(key, message, hashlib.sha256).hexdigest()


def chain(previous: str, events: Iterable[Mapping[str, Any]], key: bytes | None = None,
          dictionary: str | None = None) -> tuple[list[tuple[str, str]], str]:
    """Serialize and hash ``events`` after ``previous`` (with ``key`` when given); returns
    [(body, hash)] and the new head. ``dictionary``: the execution's event as stored, which
    long messages are compressed against (see :func:`packed`). SettingsInvalid when the
    trail is keyed and ``key`` is None: an unkeyed link after keyed ones would read as
    tampering."""
    if key is None and previous.startswith(KEYED):
        raise SettingsInvalid("SIGNOFF_AUDIT_KEY: this audit trail is keyed, and this process "
                              "has no key; give every web and worker process the same key")
    linked = []
    head = previous
    for item in events:
        body = canonical(packed(item, dictionary))
        head = link(head, body, key)
        linked.append((body, head))
    return linked, head


def verify(entries: Iterable[tuple[str, str, str]], head: str | None,
           key: bytes | None = None) -> Verification:
    """Check (entry id, body, hash) triples in order against the chain and the stored head;
    keyed links with ``key``. Names the first entry that does not verify."""
    previous = GENESIS
    count = 0
    keyed_from: str | None = None
    for entry_id, body, digest in entries:
        count += 1
        where = f"event {count} ({entry_id})"
        if digest.startswith(KEYED):
            if keyed_from is None:
                keyed_from = entry_id
            if key is None:
                return Verification(False, count - 1, f"this trail is keyed from {where} on; "
                                    "set SIGNOFF_AUDIT_KEY to verify it", entry_id,
                                    keyed_from, needs_key=True)
        elif keyed_from is not None:
            return Verification(False, count, f"{where} has a bare sha256 hash after keyed "
                                "events: it was rewritten by someone without the audit key",
                                entry_id, keyed_from)
        if digest != link(previous, body, key if digest.startswith(KEYED) else None):
            wrong_key = (" (or SIGNOFF_AUDIT_KEY is not the key it was written with)"
                         if entry_id == keyed_from else "")
            return Verification(False, count, f"{where} does not match its hash: it was "
                                f"edited, or an event before it was removed{wrong_key}",
                                entry_id, keyed_from)
        previous = digest
    if head is not None and previous != head:
        return Verification(False, count, "the last event does not match the execution's audit "
                            "head: events were removed from the end of the trail",
                            None, keyed_from)
    return Verification(True, count, keyed_from=keyed_from)


_SHA256 = b"\x01"  # a stored entry that starts so: 32 bytes of sha256, then the body
_HMAC = b"\x02"  # ... 32 bytes of HMAC-SHA256 under SIGNOFF_AUDIT_KEY, then the body
_PACKED = 2  # added to either marker: the body is compressed (engine.state.compact)


def head_stored(digest: str) -> bytes:
    """A hash (an audit head) as the execution stores it: its marker and 32 bytes, as
    :func:`stored` starts an entry; a hash of another form as it is."""
    keyed = digest.startswith(KEYED)
    hexed = digest[len(KEYED):] if keyed else digest
    if len(hexed) != 64:
        return digest.encode()
    return (_HMAC if keyed else _SHA256) + bytes.fromhex(hexed)


def head_text(raw: bytes | str) -> str:
    """A hash as :func:`head_stored` stored it (or in hex, as earlier versions did), in
    hex as the chain links it."""
    if isinstance(raw, str):
        return raw
    if len(raw) == 33 and raw[:1] in (_SHA256, _HMAC):
        return (KEYED if raw[:1] == _HMAC else "") + raw[1:].hex()
    return raw.decode()


def is_packed(entry: bytes) -> bool:
    """Whether a stored entry's body is compressed (its text cannot be searched as is)."""
    return entry[:1] in (bytes([_SHA256[0] + _PACKED]), bytes([_HMAC[0] + _PACKED]))


def stored(digest: str, body: str) -> bytes:
    """An entry as the trail stores it: its hash as :func:`head_stored` stores it (a
    marker byte and 32 bytes; the chain itself links hex, see :func:`link`), then its
    canonical JSON, compressed when large (:func:`engine.state.compact.pack`: above 256
    bytes, when smaller for it; the marker says so)."""
    head = head_stored(digest)
    packed = compact.pack(body)
    if packed[:1] == b"x":  # JSON never starts so: compressed
        return bytes([head[0] + _PACKED]) + head[1:] + packed
    return head + body.encode()


def split(entry: bytes | str) -> tuple[str, str]:
    """A stored entry as (hash as the chain links it, body): as :func:`stored` writes
    it, or as earlier versions did (the hash in hex, then the body)."""
    raw = entry.encode() if isinstance(entry, str) else entry
    marker = raw[0] if raw else 0
    if 1 <= marker <= 4:
        packed = marker > _HMAC[0]
        head = bytes([marker - _PACKED if packed else marker]) + raw[1:33]
        return head_text(head), compact.unpack(raw[33:]) if packed else raw[33:].decode()
    text = raw.decode()
    length = len(GENESIS) + (len(KEYED) if text.startswith(KEYED) else 0)
    return text[:length], text[length:]


def decode(entry_id: str, body: str, digest: str, dictionary: str | None = None) -> AuditEntry:
    """An entry as read: its event with ``message`` whole again. A message compressed with
    the execution's event needs that event as stored (``dictionary``); without it the
    event keeps ``messageE`` as stored."""
    return AuditEntry(id=entry_id, event=unpacked(loads(body), dictionary), hash=digest)


def packed(event: Mapping[str, Any], dictionary: str | None = None) -> Mapping[str, Any]:
    """``event`` as stored: a long ``message`` compressed, into ``messageE`` against
    ``dictionary`` (the execution's event as stored) when given and smaller for it, else
    into ``messageZ``."""
    message = event.get("message")
    if not isinstance(message, str) or len(message.encode()) <= PACK_OVER:
        return event
    raw = message.encode()
    plain = compact.compressor()
    name, squeezed = PACKED, plain.compress(raw) + plain.flush()
    if dictionary:
        packer = compact.compressor(dictionary.encode())
        with_event = packer.compress(raw) + packer.flush()
        if len(with_event) < len(squeezed):
            name, squeezed = PACKED_WITH_EVENT, with_event
    text = base64.b64encode(squeezed).decode()
    if len(text) >= len(canonical(message)):
        return event
    return {**{k: v for k, v in event.items() if k != "message"}, name: text}


def unpacked(event: dict[str, Any], dictionary: str | None = None) -> dict[str, Any]:
    """An event as :func:`packed` stored it, with its ``message`` whole again (a
    ``messageE`` only with ``dictionary``; a wrong one leaves it as stored)."""
    squeezed = event.pop(PACKED, None)
    if isinstance(squeezed, str):
        event["message"] = zlib.decompress(base64.b64decode(squeezed)).decode()
    with_event = event.get(PACKED_WITH_EVENT)
    if isinstance(with_event, str) and dictionary is not None:
        try:
            unpacker = zlib.decompressobj(zdict=dictionary.encode())
            message = (unpacker.decompress(base64.b64decode(with_event))
                       + unpacker.flush()).decode()
        except (zlib.error, ValueError):  # not the event it was packed with
            return event
        del event[PACKED_WITH_EVENT]
        event["message"] = message
    return event
