"""Commands of several owners sent to Redis in one round trip (a pipeline, not a MULTI:
each command stands on its own, and may run again): each owner queues its own and reads its
own replies.

A review that closes leaves the indexes /approvals reads (bot.visibility), its channels'
digests (bot.digest) and asks whether Slack's limit for the rewrite holds (bot.ratelimit):
three owners, one round trip; when a click closes it, in the round trip of the write that
carries the decision, after it (``Store.commit``'s ``alongside``: the scripts that change
anything check first that the write applied). An owner adds commands to
:attr:`Batch.pipe` (or a script with :meth:`Batch.script`), notes where its replies begin
(``len(batch)``), and reads them from :meth:`Batch.execute`'s list.

A script in a redis-py pipeline costs a ``SCRIPT EXISTS`` round trip before every
execution; :meth:`Batch.script` sends ``EVALSHA`` alone instead. Should Redis not know
the script (restarted, or its scripts flushed), the rest of the transaction still ran, and
the script is then run on its own, which loads it: only scripts that may run again, and
apart from the rest, may be batched (removing index entries is both; a commit run after
the commands sent with it leaves them undone, their guard not met, for the rewrite). Nor is the batch
atomic: a worker that dies while Redis runs it leaves some of it done, and what it was for
is tried again (a closing review's rewrite, whose leave is the same again).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from engine.errors import StoreUnavailable


class Batch:
    """One round trip of commands from several owners."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pipe = client.pipeline(transaction=False)
        self._scripts: list[tuple[int, Script, list[Any], list[Any]]] = []

    def __len__(self) -> int:
        """How many commands are queued: where the next one's reply will be."""
        return len(self.pipe)

    def script(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue ``script`` (registered on a client of the same Redis) by its SHA-1."""
        self._scripts.append((len(self.pipe), script, list(keys), list(args)))
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)

    def execute(self, *, raise_errors: bool = True) -> list[Any]:
        """Send what is queued, in one round trip; the replies, in order. A reply that is an
        error is raised (the first), once every script Redis did not know has run; with
        ``raise_errors`` False, it is left in its place for its owner."""
        if not len(self.pipe):
            return []
        try:
            replies = self.pipe.execute(raise_on_error=False)
            for at, script, keys, args in self._scripts:
                if isinstance(replies[at], NoScriptError):
                    replies[at] = script(keys=keys, args=args)  # loads it, then runs it
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        for reply in replies if raise_errors else ():
            if isinstance(reply, Exception):
                raise reply
        return list(replies)
