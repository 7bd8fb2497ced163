"""API tokens: who calls the HTTP API (its principal) and what it may do there (its scopes).

A token is a random secret (``signoff_`` and 43 URL-safe characters: 256 bits) shown
once, by ``signoff token create``. Redis never holds the secret, only its SHA-256: the
token's record (:class:`ApiToken`: name, scopes, principal, when it was made) is kept
under ``signoff:token:{sha256}`` and its name in ``signoff:tokens`` (see
:mod:`engine.state.keys`). A request's token is hashed and its record read by that hash,
one GET: the secret is never compared, so no timing says how much of it was right, and
a plain SHA-256 is enough because the secret is random, not a password someone could
guess from a list. Revoking deletes the record. Each web process keeps a token it found for
:data:`RECENT_SECONDS` (:class:`RecentTokens`), so a busy API reads each token's record
once per 0.1 s rather than on every request (a Redis round trip and a hop to a thread: two
thirds of a gate check's cost): a revoked token is refused from 0.1 s after its revocation
on, in every web process. Unknown secrets are never kept, so a new token works at once.

The principal is who a token acts as: the requester of the runs it starts and the actor
of the decisions it makes. Only a token with ``act-as`` (a trusted front-end that
authenticates its own users) may name someone else in ``X-Signoff-Requested-By`` or
``X-Signoff-Actor``. ``SIGNOFF_API_TOKEN`` is the operator's token, :data:`OPERATOR`:
every scope, principal ``operator``, never stored.

Pure: the store reads and writes the records (``Store.add_token``, ``Store.token``,
``Store.tokens``, ``Store.revoke_token``).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from engine.errors import TokenError
from engine.state.execution import loads


class Scope(StrEnum):
    """What a token may do on the API."""

    RUN = "run"  # start runs
    READ = "read"  # read executions, their audit trails, the lists
    DECIDE = "decide"  # resume a waiting step (as the principal)
    ACT_AS = "act-as"  # name another actor or requester in a header
    ADMIN = "admin"  # cancel runs


EVERY_SCOPE = frozenset(Scope)
SECRET_PREFIX = "signoff_"  # lets secret scanners and people tell a Signoff token at sight
OPERATOR_PRINCIPAL = "operator"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PRINCIPAL_MAX = 254  # the longest e-mail address


@dataclass(frozen=True)
class ApiToken:
    """A token's record: everything about it but its secret."""

    name: str
    scopes: frozenset[Scope]
    principal: str | None = None
    created_at: str | None = None

    @property
    def acts_as(self) -> str:
        """Who the token acts as: its principal, or its name when it has none."""
        return self.principal or self.name

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "scopes": sorted(self.scopes),
                           "principal": self.principal, "createdAt": self.created_at})

    @classmethod
    def from_json(cls, raw: str | bytes) -> ApiToken:
        data = loads(raw)
        # A scope this version does not know (written by a newer one) grants nothing.
        known = frozenset(Scope(s) for s in data.get("scopes", ()) if s in _SCOPE_NAMES)
        return cls(name=str(data["name"]), scopes=known, principal=data.get("principal"),
                   created_at=data.get("createdAt"))


OPERATOR = ApiToken(name="operator", scopes=EVERY_SCOPE, principal=OPERATOR_PRINCIPAL)
_SCOPE_NAMES = frozenset(s.value for s in Scope)


def issue(name: str, scopes: Iterable[Scope], principal: str | None,
          created_at: str) -> tuple[str, ApiToken]:
    """A new secret and the record kept for it; TokenError when the name or principal
    is unusable or no scope is given."""
    if not _NAME.fullmatch(name):
        raise TokenError(f"token name {name!r}: use 1 to 64 letters, digits, '.', '_' or "
                         "'-', starting with a letter or digit")
    if name == OPERATOR.name:
        raise TokenError(f"{name!r} is SIGNOFF_API_TOKEN's name; pick another")
    if principal is not None and not (0 < len(principal) <= _PRINCIPAL_MAX
                                      and principal.isprintable() and " " not in principal):
        raise TokenError(f"principal {principal!r}: give a user id, an e-mail address or a "
                         f"service name, without spaces, at most {_PRINCIPAL_MAX} characters")
    scopes = frozenset(scopes)
    if not scopes:
        raise TokenError("a token needs at least one scope")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    return secret, ApiToken(name=name, scopes=scopes, principal=principal,
                            created_at=created_at)


RECENT_SECONDS = 0.1  # how long a revoked token may still be accepted, at most
RECENT_MAX = 1024  # tokens kept at most; the oldest go first


class RecentTokens:
    """The tokens found in the last ``seconds``, by the SHA-256 of their secret: at most
    ``size`` of them, the oldest forgotten first. Not thread-safe: the API's auth uses it
    from the event loop alone."""

    def __init__(self, seconds: float = RECENT_SECONDS, size: int = RECENT_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.size = size
        self.clock = clock
        self._found: OrderedDict[str, tuple[float, ApiToken]] = OrderedDict()

    def get(self, secret_digest: str) -> ApiToken | None:
        """The token found under ``secret_digest`` less than ``seconds`` ago, else None."""
        entry = self._found.get(secret_digest)
        if entry is None:
            return None
        if self.clock() - entry[0] >= self.seconds:
            del self._found[secret_digest]
            return None
        return entry[1]

    def put(self, secret_digest: str, token: ApiToken) -> None:
        """Keep ``token``, just read from the store under ``secret_digest``."""
        self._found.pop(secret_digest, None)
        self._found[secret_digest] = (self.clock(), token)
        while len(self._found) > self.size:
            self._found.popitem(last=False)


def parse_scopes(text: str) -> frozenset[Scope]:
    """``run,read`` as scopes; TokenError naming the ones that do not exist."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in _SCOPE_NAMES]
    if unknown:
        raise TokenError(f"unknown scope(s) {', '.join(map(repr, unknown))}; the scopes are "
                         f"{', '.join(s.value for s in Scope)}")
    return frozenset(Scope(n) for n in names)


def digest(secret: str | bytes) -> str:
    """The SHA-256 (hex) of a token's secret: what Redis keeps instead of the secret."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(raw).hexdigest()
