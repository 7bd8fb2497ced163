"""Every error the Slack emulator raises on purpose.

EmulatorError
├── SlackApiFailure      a Web API call Slack would answer with ``{"ok": false, ...}``
├── DriverError          the driver cannot act as asked (no such button, required input empty)
└── EmulatorStartError   the HTTP server did not come up
"""

from __future__ import annotations

from typing import Any


class EmulatorError(Exception):
    """Base of every error the emulator raises on purpose."""


class SlackApiFailure(EmulatorError):
    """A Slack error code (``channel_not_found``...) plus the extra fields Slack sends with it."""

    def __init__(self, error: str, **extra: Any) -> None:
        self.error = error
        self.extra = extra
        super().__init__(error)

    def to_json(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error, **self.extra}


class DriverError(EmulatorError):
    """What a real user could not do either: click a missing button, submit an empty field."""


class EmulatorStartError(EmulatorError):
    """The emulator's HTTP server did not start listening in time."""
