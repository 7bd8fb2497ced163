"""Who is in a workspace: the team, its people, their groups, and the installed app."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PROFILE_UPDATED = 1732240000


@dataclass(frozen=True)
class Team:
    id: str
    domain: str
    name: str


@dataclass(frozen=True)
class User:
    id: str
    name: str
    real_name: str
    display_name: str = ""
    email: str = ""
    tz: str = "UTC"
    title: str = ""
    is_bot: bool = False
    bot_id: str | None = None

    def to_slack(self, team_id: str, app_id: str | None = None) -> dict[str, Any]:
        """The ``user`` object of ``users.info``."""
        profile: dict[str, Any] = {
            "title": self.title,
            "real_name": self.real_name,
            "real_name_normalized": self.real_name,
            "display_name": self.display_name,
            "display_name_normalized": self.display_name,
            "team": team_id,
        }
        if self.email:
            profile["email"] = self.email
        if self.is_bot:
            profile["bot_id"] = self.bot_id
            profile["api_app_id"] = app_id
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "deleted": False,
            "real_name": self.real_name,
            "tz": self.tz,
            "tz_label": self.tz,
            "tz_offset": _tz_offset(self.tz),
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "updated": PROFILE_UPDATED,
        }


@dataclass(frozen=True)
class UserGroup:
    id: str
    handle: str
    name: str
    user_ids: tuple[str, ...]


@dataclass(frozen=True)
class AppInstallation:
    """The app installed in the workspace, with the credentials it is given."""

    app_id: str
    bot_user_id: str
    bot_id: str
    bot_token: str = field(repr=False)
    signing_secret: str = field(repr=False)
    verification_token: str = field(default="emulator-verification-token", repr=False)


def _tz_offset(tz: str) -> int:
    try:
        offset = datetime.now(ZoneInfo(tz)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        return 0
    return int(offset.total_seconds()) if offset else 0
