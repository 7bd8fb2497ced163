"""Configuration, read once from the environment by the entry points (CLI, web, worker)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.connectors import Connectors, load_connectors
from engine.errors import SettingsInvalid
from engine.state.execution import LEASE_MS

MIN_AUDIT_KEY = 16  # characters; 32 random bytes in hex (64) is what the README suggests
ACK_TIMEOUT_MS = 500  # Slack wants its answer within 3 s; leave it most of them


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
    # Host names whose TLS certificates an http step's fetcher.skip_ssl_verification may
    # skip checking (self-signed internal services); elsewhere the option is not honoured.
    http_insecure_tls: tuple[str, ...] = ()
    # HMAC-SHA256 key for the audit chain; kept out of Redis, so a trail cannot be rewritten
    # consistently by someone who can only write to Redis. None: bare sha256 links.
    audit_key: str | None = field(default=None, repr=False)
    # Replicas that must hold a click (Redis WAIT) before Slack gets its 200; 0: no WAIT.
    ack_replicas: int = 0
    ack_timeout_ms: int = ACK_TIMEOUT_MS  # how long the web process waits for them
    # Processes `signoff serve` answers from, sharing its port (WEB_CONCURRENCY, the name
    # uvicorn, gunicorn and PaaS hosts use); `--processes` overrides it.
    web_processes: int = 1
    # Where Escalate sends a review past its last level (or one without levels), and where a
    # review whose approvers are only its requester goes: Slack user (U…) or group (S…)
    # ids, e-mail addresses. None: the reviewer picks someone when escalating.
    escalate_to: tuple[str, ...] = ()
    # SIGNOFF_CONNECTORS: the connections file, loaded (its ${ENV_VAR} secrets resolved)
    # when the settings are read, so a bad file stops a process at start, file:line first.
    connectors: Connectors = field(default_factory=Connectors, repr=False)
    # The agent and CI gate's policy: a YAML file or a directory of them. None: no rules, so
    # every call escalates to a review.
    policy_path: str | None = None

    def __post_init__(self) -> None:
        if self.audit_key is not None and len(self.audit_key) < MIN_AUDIT_KEY:
            raise SettingsInvalid(f"SIGNOFF_AUDIT_KEY: at least {MIN_AUDIT_KEY} characters "
                                  "(for example 64 hex digits: openssl rand -hex 32)")
        if self.ack_replicas < 0:
            raise SettingsInvalid("SIGNOFF_ACK_REPLICAS: a number of replicas, 0 or more")
        if self.web_processes < 1:
            raise SettingsInvalid("WEB_CONCURRENCY: a number of web processes, 1 or more")
        if not 0 < self.ack_timeout_ms < 3000:
            raise SettingsInvalid("SIGNOFF_ACK_TIMEOUT_MS: more than 0 and under Slack's "
                                  "3000 ms")

    @property
    def audit_key_bytes(self) -> bytes | None:
        return self.audit_key.encode() if self.audit_key is not None else None

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
            http_insecure_tls=tuple(h.rstrip(".").lower()
                                    for h in _entries(env.get("SIGNOFF_HTTP_INSECURE_TLS"))),
            audit_key=env.get("SIGNOFF_AUDIT_KEY") or None,
            ack_replicas=_whole_number(env, "SIGNOFF_ACK_REPLICAS", cls.ack_replicas),
            ack_timeout_ms=_whole_number(env, "SIGNOFF_ACK_TIMEOUT_MS", cls.ack_timeout_ms),
            web_processes=_whole_number(env, "WEB_CONCURRENCY", cls.web_processes),
            escalate_to=_entries(env.get("SIGNOFF_ESCALATE_TO")),
            connectors=connectors_from_env(env),
            policy_path=env.get("SIGNOFF_POLICY") or None,
        )

    def __repr__(self) -> str:
        token = "***" if self.api_token else None
        return (f"Settings(redis_url={_mask_url(self.redis_url)!r}, api_token={token!r}, "
                f"workflows_dir={self.workflows_dir!r}, host={self.host!r}, port={self.port}, "
                f"notifier={self.notifier!r}, queue={self.queue!r}, "
                f"lease_seconds={self.lease_seconds}, sweep_seconds={self.sweep_seconds}, "
                f"http_allow={self.http_allow!r}, http_deny={self.http_deny!r}, "
                f"http_insecure_tls={self.http_insecure_tls!r}, "
                f"audit_key={'***' if self.audit_key else None!r}, "
                f"ack_replicas={self.ack_replicas}, ack_timeout_ms={self.ack_timeout_ms}, "
                f"web_processes={self.web_processes}, "
                f"escalate_to={self.escalate_to!r}, connectors={self.connectors!r})")


def connectors_from_env(env: Mapping[str, str] | None = None) -> Connectors:
    """The connections file ``SIGNOFF_CONNECTORS`` names, loaded (none: no connections);
    raises ConnectorsInvalid. ``signoff validate`` reads it alone, without other settings."""
    env = os.environ if env is None else env
    return load_connectors(env.get("SIGNOFF_CONNECTORS") or None, env)


def _whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    value = (env.get(name) or "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise SettingsInvalid(f"{name}: {value!r} is not a whole number")
    return int(value)


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
