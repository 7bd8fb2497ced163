"""Large values compressed as Redis stores them: zlib above :data:`THRESHOLD` bytes.

A compressed value is zlib's stream, whose first byte (0x78, ``x``) no JSON text starts
with, so a reader tells the two apart without a flag. Values are compressed with a preset
dictionary (:data:`DICTIONARY`: the names and words Signoff's records repeat), which
zlib's header names by its Adler-32; values written before it (no dictionary) read as
they are. The dictionary is part of the stored format: never edit it, add another (with
its own Adler-32) and keep reading this one. Compressing 1 KB of JSON costs ~20 us and
reading it back ~6 us: paid once when a run starts and on each load.
"""

from __future__ import annotations

import zlib

THRESHOLD = 256  # bytes: smaller values are stored as they are
_ZLIB = b"\x78"
_FDICT = 0x20  # zlib's header: a preset dictionary was used (its Adler-32 follows)

# What Signoff's stored records repeat (the Slack delivery record, a review's copy, an
# event's usual fields), most frequent last: zlib reaches the end of a dictionary first.
DICTIONARY = (
    b'"severity":"rule":{"name":"description":"host":{"name":"hostname":"user":'
    b'"alert":{"id":"kibana":{"alert":{"rule":{"name":"@timestamp":"signal":"source":'
    b'{"ip":"destination":"process":{"name":"pid":"command_line":"event":{"kind":"'
    b'"risk_score":"score":"message":"reason":"url":"tags":["labels":{"'
    b'"lead":"","sent":["failures":["level":1,"sla_due_at":"approvals_required":2,'
    b'"requested_by":"allow_self_approval":true,"decision_field":"approve_label":'
    b'"reject_label":"approvals":[{"handed":["audience":["channels":["webhook":true,'
    b'"channel":"C0'
    b'"options":{"approvers":["S0'
    b'"schema":{"type":"object","properties":{"approved":{"type":"boolean","title":"'
    b'"},"notes":{"type":"string","title":"Notes"}},"required":["approved"]},'
    b'"review":{"workflow":"'
    b'","step_type":"waitForInput","step_type":"waitForApproval","message_sha256":"'
    b'"approvers":["U0'
    b'","restricted":true,"shown":["S0'
    b'"],"sources":["S0'
    b'"],"posts":[{"to":"C0'
    b'","ts":"1'
    b'"}],"due_at":"2026-'
    b'"execution_id":"'
    b'","step":"review","since":"2026-'
    b'T00:00:00.000Z",'
    b'"title":"## '
)
_DICTIONARY_ID = zlib.adler32(DICTIONARY)
# zlib's memory level. At its default (8) each compressor takes and clears a 64 KB hash
# table, which glibc hands back to the system on free and faults in again the next time:
# 20-45 us per value, most of it page faults, against ~2 us at 4. The values compressed
# here are a few KB, which come out the same size (within 1% at 100 KB). The level is not
# in the stream: any reader reads it.
MEM_LEVEL = 4


def compressor(zdict: bytes | None = None) -> zlib._Compress:
    """A zlib compressor at level 6 (zlib's default) and :data:`MEM_LEVEL`, with ``zdict``
    as its preset dictionary when given."""
    if zdict is None:
        return zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS, MEM_LEVEL)
    return zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS, MEM_LEVEL, zdict=zdict)


def pack(text: str) -> bytes:
    """``text`` as stored: UTF-8, compressed when large and smaller for it."""
    raw = text.encode()
    if len(raw) <= THRESHOLD:
        return raw
    packer = compressor(DICTIONARY)
    packed = packer.compress(raw) + packer.flush()
    return packed if len(packed) < len(raw) else raw


def unpack(stored: bytes | str) -> str:
    """The text :func:`pack` stored (or its previous format, without a dictionary)."""
    if isinstance(stored, str):
        return stored
    if stored[:1] == _ZLIB:
        if len(stored) > 1 and stored[1] & _FDICT:
            if int.from_bytes(stored[2:6], "big") != _DICTIONARY_ID:
                raise ValueError("a value compressed with a dictionary this version does not know")
            unpacker = zlib.decompressobj(zdict=DICTIONARY)
            text = unpacker.decompress(stored)
            # A whole value ends its stream: flush() would find nothing left (and give up
            # the GIL once more, as each zlib call does).
            return (text if unpacker.eof else text + unpacker.flush()).decode()
        return zlib.decompress(stored).decode()
    return stored.decode()
