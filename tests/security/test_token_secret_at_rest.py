"""Attack: read a token's secret back, from `signoff token list` or from Redis itself
(a backup, a replica, someone with redis-cli)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from tests.support.services import ROOT


def signoff(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "REDIS_URL": redis_url})


def everything_in(redis_client) -> bytes:
    """Every key name and every value in the database, as one blob."""
    seen = []
    for key in redis_client.scan_iter(count=1000):
        seen.append(key)
        kind = redis_client.type(key)
        if kind == b"string":
            seen.append(redis_client.get(key))
        elif kind == b"hash":
            for field, value in redis_client.hgetall(key).items():
                seen += [field, value]
        elif kind == b"list":
            seen += redis_client.lrange(key, 0, -1)
        elif kind == b"set":
            seen += list(redis_client.smembers(key))
        elif kind == b"zset":
            seen += [member for member, _ in redis_client.zrange(key, 0, -1, withscores=True)]
        else:
            raise AssertionError(f"{key!r} is a {kind!r}, which this scan does not read")
    return b"\n".join(seen)


def test_neither_the_list_nor_redis_holds_a_tokens_secret(runtime, redis_client, redis_url,
                                                          client_for):
    made = signoff(redis_url, "token", "create", "ci", "--scopes", "run,read",
                   "--principal", "ci-bot")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[0]
    assert client_for(secret).get("/api/workflowExecutions").status_code == 200

    listed = signoff(redis_url, "token", "list")
    assert listed.returncode == 0, listed.stderr
    assert "ci" in listed.stdout and "run,read" in listed.stdout and "ci-bot" in listed.stdout
    body = secret.removeprefix("signoff_")
    assert body not in listed.stdout and body not in listed.stderr

    stored = everything_in(redis_client)
    assert b"ci-bot" in stored  # the scan does see the token's record
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
    for piece in (secret, body, body[:16], body[-16:]):
        assert piece.encode() not in stored, f"{piece!r} is in Redis"
