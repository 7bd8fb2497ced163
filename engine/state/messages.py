"""A review's message is stored once: in the audit trail, with its SHA-256.

The ``step.waiting_for_input`` event keeps the message the reviewer saw, hash-chained
with the rest of the trail. What waits on it (``w``, :class:`engine.state.execution.Waiting`)
and the Slack delivery record (:mod:`bot.delivery`) keep its hash and first line, and
find the message here: the last such event of the step instance whose ``sha256`` matches.
A long message is compressed there with the execution's event as zlib's dictionary
(:func:`engine.state.audit.packed`): reading it back takes the event as stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from engine.state import audit
from engine.state.execution import loads

# The execution hash and, when it waits for input, its audit trail, in one round trip
# (a new script: engine.state.lua's are shared with the worker's).
LOAD_WITH_MESSAGE = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 or redis.call('HEXISTS', KEYS[1], 'w') == 0 then
  return {fields, {}}
end
return {fields, redis.call('LRANGE', KEYS[2], 0, -1)}
"""

_MARK = b'"type":"' + audit.WAITING_FOR_INPUT.encode() + b'"'


def find(entries: Iterable[bytes | str], sha256: str, event_text: str | None = None) -> str | None:
    """The message of the last ``step.waiting_for_input`` event whose hash is ``sha256``,
    among stored trail ``entries`` (oldest first); ``event_text``: the execution's event as
    stored (its JSON), for a message compressed against it. None when there is none, or
    its text does not match the hash."""
    for raw in reversed(list(entries)):
        stored = raw if isinstance(raw, bytes) else raw.encode()
        if _MARK not in stored and not audit.is_packed(stored):
            continue
        _, body = audit.split(stored)
        if _MARK.decode() not in body:
            continue
        event = audit.unpacked(loads(body), event_text)
        if event.get("sha256") != sha256:
            continue
        message = event.get("message")
        if isinstance(message, str) and hashlib.sha256(message.encode()).hexdigest() == sha256:
            return message
    return None
