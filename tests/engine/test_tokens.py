"""API tokens' records in a real Redis: made, found by the hash of their secret, listed,
revoked."""

from __future__ import annotations

import json

import pytest

from engine.errors import TokenExists, TokenNotFound
from engine.state import keys, tokens
from engine.state.tokens import ApiToken, Scope


def make(store, name: str, scopes: str, principal: str | None = None) -> str:
    secret, record = tokens.issue(name, tokens.parse_scopes(scopes), principal,
                                  "2025-01-01T00:00:00.000Z")
    store.add_token(record, tokens.digest(secret))
    return secret


def test_a_token_is_found_by_its_secrets_hash_until_revoked(runtime):
    store = runtime.store
    secret = make(store, "ci", "run, read", principal="ci-bot")
    other = make(store, "alice", "decide")

    found = store.token(tokens.digest(secret))
    assert found == ApiToken(name="ci", scopes=frozenset({Scope.RUN, Scope.READ}),
                             principal="ci-bot", created_at="2025-01-01T00:00:00.000Z")
    assert store.token(tokens.digest(secret + "x")) is None
    assert [t.name for t in store.tokens()] == ["alice", "ci"]
    assert store.token(tokens.digest(other)).acts_as == "alice"

    store.revoke_token("ci")
    assert store.token(tokens.digest(secret)) is None
    assert [t.name for t in store.tokens()] == ["alice"]
    with pytest.raises(TokenNotFound):
        store.revoke_token("ci")


def test_a_taken_name_writes_nothing(runtime, redis_client):
    make(runtime.store, "ci", "run")
    before = sorted(redis_client.keys("signoff:token*"))
    with pytest.raises(TokenExists):
        make(runtime.store, "ci", "admin")
    assert sorted(redis_client.keys("signoff:token*")) == before


def test_a_scope_this_version_does_not_know_grants_nothing(runtime, redis_client):
    secret = make(runtime.store, "ci", "read")
    key = keys.token(tokens.digest(secret))
    record = json.loads(redis_client.get(key))
    record["scopes"] = ["read", "superuser"]
    redis_client.set(key, json.dumps(record))

    assert runtime.store.token(tokens.digest(secret)).scopes == frozenset({Scope.READ})


def test_each_secret_is_new_and_long():
    first, _ = tokens.issue("a", {Scope.RUN}, None, "")
    second, _ = tokens.issue("a", {Scope.RUN}, None, "")
    assert first != second
    assert first.startswith("signoff_") and len(first) == len("signoff_") + 43


def test_a_web_process_keeps_a_found_token_a_tenth_of_a_second_and_no_more():
    now = [100.0]
    recent = tokens.RecentTokens(clock=lambda: now[0], size=2)
    ci = ApiToken(name="ci", scopes=frozenset({Scope.RUN}))
    recent.put("d-ci", ci)
    now[0] += tokens.RECENT_SECONDS * 0.99
    assert recent.get("d-ci") is ci
    assert recent.get("d-unknown") is None
    now[0] += tokens.RECENT_SECONDS * 0.02  # past the bound: read from the store again
    assert recent.get("d-ci") is None
    for name in ("a", "b", "c"):  # at most `size` kept: the oldest goes first
        recent.put(f"d-{name}", ApiToken(name=name, scopes=frozenset({Scope.READ})))
    assert recent.get("d-a") is None
    assert [recent.get(f"d-{n}").name for n in ("b", "c")] == ["b", "c"]


def test_requests_that_miss_the_cache_together_share_one_read(runtime, redis_client):
    """When a busy token's cached record lapses, the requests in flight wait for one read of
    its record, not one each (32 in flight were 32 reads every 0.1 s)."""
    import asyncio

    from engine.api import BearerAuth

    secret = make(runtime.store, "ci", "run")
    auth = BearerAuth(app=None, token="operator-secret", find=runtime.store.token)  # type: ignore[arg-type]

    def gets() -> int:
        return redis_client.info("commandstats").get("cmdstat_get", {}).get("calls", 0)

    async def together(header: bytes, n: int) -> list:
        return await asyncio.gather(*(auth._caller(header) for _ in range(n)))

    before = gets()
    found = asyncio.run(together(b"Bearer " + secret.encode(), 20))
    assert [t.name for t in found] == ["ci"] * 20
    assert gets() - before == 1
    assert auth.reading == {}  # nothing left under way

    # An unknown secret is read once too, and is refused to every request.
    before = gets()
    assert asyncio.run(together(b"Bearer not-a-token", 20)) == [None] * 20
    assert gets() - before == 1
