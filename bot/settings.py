"""The bot's configuration, read once from the environment by its entry points."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

SLACK_API_URL = "https://slack.com/api/"


@dataclass(frozen=True)
class BotSettings:
    """Slack credentials and where reviews go; tokens and secrets never appear in a repr."""

    bot_token: str | None = field(default=None, repr=False)
    signing_secret: str | None = field(default=None, repr=False)
    app_token: str | None = field(default=None, repr=False)
    channel: str | None = None  # SIGNOFF_SLACK_CHANNEL: where reviews go without `with.channel`
    api_url: str = SLACK_API_URL
    cache_seconds: int = 3600  # how long display names, groups and e-mail look-ups are kept
    admins: tuple[str, ...] = ()  # SIGNOFF_ADMINS: user (U…) or user-group (S…) ids who see
    # every pending review in /approvals
    digest_after: int = 20  # SIGNOFF_SLACK_DIGEST_AFTER: reviews of one step waiting in one
    # channel before further ones join a digest (bot.digest); 0: never
    digest_every: float = 3.0  # SIGNOFF_SLACK_DIGEST_EVERY: seconds at least between two
    # rewrites of one digest (Slack's chat.update takes about 50 a minute); 0: every change

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        env = os.environ if env is None else env
        api_url = env.get("SLACK_API_URL") or cls.api_url
        return cls(
            bot_token=env.get("SLACK_BOT_TOKEN") or None,
            signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            app_token=env.get("SLACK_APP_TOKEN") or None,
            channel=env.get("SIGNOFF_SLACK_CHANNEL") or None,
            api_url=api_url if api_url.endswith("/") else api_url + "/",
            cache_seconds=int(env.get("SIGNOFF_SLACK_CACHE_SECONDS") or cls.cache_seconds),
            admins=tuple(a.strip() for a in (env.get("SIGNOFF_ADMINS") or "").split(",")
                         if a.strip()),
            digest_after=int(env.get("SIGNOFF_SLACK_DIGEST_AFTER") or cls.digest_after),
            digest_every=float(env.get("SIGNOFF_SLACK_DIGEST_EVERY") or cls.digest_every),
        )

    def __repr__(self) -> str:
        def mask(secret: str | None) -> str | None:
            return "***" if secret else None

        return (f"BotSettings(bot_token={mask(self.bot_token)!r}, "
                f"signing_secret={mask(self.signing_secret)!r}, "
                f"app_token={mask(self.app_token)!r}, channel={self.channel!r}, "
                f"api_url={self.api_url!r}, cache_seconds={self.cache_seconds}, "
                f"admins={self.admins!r}, digest_after={self.digest_after}, "
                f"digest_every={self.digest_every})")
