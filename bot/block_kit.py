"""Block Kit's smallest pieces, for every message, modal and Home tab the bot builds: text
objects, and the section, header and context blocks made of them.

Each block keeps to Slack's length limit (a longer text is cut, with an ellipsis), so
a caller cannot build one Slack would refuse. They live apart from :mod:`bot.blocks`
because :mod:`bot.forms` builds its modals from them and :mod:`bot.blocks` builds on
:mod:`bot.forms`.
"""

from __future__ import annotations

from typing import Any

from bot.mrkdwn import truncate_mrkdwn, truncate_plain

SECTION_LIMIT = 3000  # a section's text, a context element's text
HEADER_LIMIT = 150


def plain_text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def mrkdwn_text(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def section_block(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": mrkdwn_text(truncate_mrkdwn(mrkdwn, SECTION_LIMIT))}


def header_block(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain_text(truncate_plain(text, HEADER_LIMIT))}


def context_block(*mrkdwn: str) -> dict[str, Any]:
    """Small grey lines under a message's body."""
    return {"type": "context",
            "elements": [mrkdwn_text(truncate_mrkdwn(line, SECTION_LIMIT)) for line in mrkdwn]}
