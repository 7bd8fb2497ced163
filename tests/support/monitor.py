"""What Redis ran while something ran, as MONITOR shows it: a real Redis told to show us
every command, for tests that assert which round trips a path makes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis


def monitored(client: redis.Redis, action: Callable[[], Any]) -> list[dict[str, Any]]:
    """Every command Redis ran while ``action`` ran, in order, as redis-py reads MONITOR's
    lines (``command``, ``client_type``: ``lua`` for a script's own commands, shown after
    the script's call; a transaction from its MULTI to its EXEC)."""
    seen: list[dict[str, Any]] = []
    sentinel = f"done-{time.monotonic_ns()}"
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as monitor:
            ready.set()
            for entry in monitor.listen():
                if sentinel in entry["command"]:
                    return
                seen.append(entry)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert ready.wait(5), "MONITOR did not start"
    time.sleep(0.1)  # MONITOR is on before the action begins
    action()
    client.echo(sentinel)
    watcher.join(10)
    return seen
