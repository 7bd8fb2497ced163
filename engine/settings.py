"""Configuration, read once from the environment by the entry points (CLI, web, worker)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.state.execution import LEASE_MS


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    api_token: str | None = field(default=None, repr=False)
    workflows_dir: str = "./workflows"
    host: str = "127.0.0.1"
    port: int = 8000
    notifier: str | None = None  # entry-point name in signoff.notifiers; None: none
    queue: str = "signoff"
    lease_seconds: float = LEASE_MS / 1000  # a silent worker's runs are taken over after this
    sweep_seconds: int = 15  # how often workers look for runs whose worker died
    # Host names, addresses and CIDRs http steps may reach despite the built-in refusals
    # (loopback, link-local, cloud metadata), and ones they may not reach at all.
    http_allow: tuple[str, ...] = ()
    http_deny: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        notifier = env.get("SIGNOFF_NOTIFIER")
        if notifier is None and env.get("SLACK_BOT_TOKEN"):
            notifier = "slack"
        return cls(
            redis_url=env.get("REDIS_URL") or cls.redis_url,
            api_token=env.get("SIGNOFF_API_TOKEN") or None,
            workflows_dir=env.get("SIGNOFF_WORKFLOWS") or cls.workflows_dir,
            host=env.get("HOST") or cls.host,
            port=int(env.get("PORT") or cls.port),
            notifier=notifier or None,
            queue=env.get("SIGNOFF_QUEUE") or cls.queue,
            lease_seconds=float(env.get("SIGNOFF_LEASE_SECONDS") or cls.lease_seconds),
            sweep_seconds=int(env.get("SIGNOFF_SWEEP_SECONDS") or cls.sweep_seconds),
            http_allow=_entries(env.get("SIGNOFF_HTTP_ALLOW")),
            http_deny=_entries(env.get("SIGNOFF_HTTP_DENY")),
        )

    def __repr__(self) -> str:
        token = "***" if self.api_token else None
        return (f"Settings(redis_url={_mask_url(self.redis_url)!r}, api_token={token!r}, "
                f"workflows_dir={self.workflows_dir!r}, host={self.host!r}, port={self.port}, "
                f"notifier={self.notifier!r}, queue={self.queue!r}, "
                f"lease_seconds={self.lease_seconds}, sweep_seconds={self.sweep_seconds}, "
                f"http_allow={self.http_allow!r}, http_deny={self.http_deny!r})")


def _entries(value: str | None) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped."""
    return tuple(entry.strip() for entry in (value or "").split(",") if entry.strip())


def _mask_url(url: str) -> str:
    """Hide a password in redis://user:password@host URLs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
