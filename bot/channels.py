"""Elastic 9.5's ``with.channels`` on a review: where it goes, and what each channel says.

``slack_api: {connector-id, channels, message}`` posts the review itself (buttons and
modal) to each channel; its connection, when the connections file configures one, may
limit the channels (``allowed-channels``). ``message`` becomes the post's lead text.
``slack: {connector-id, message}`` is an incoming webhook: configured as a
``slack-webhook``, it gets a notification (``message``, else
:func:`bot.texts.webhook_notice`) with a link to the review; not configured, the id
means the default connection, and the review goes to the default channel as before.

A channel's ``message`` arrives rendered as Markdown (event values escaped, see
:class:`engine.definition.templates.ChannelTemplate`), with Elastic's
``context.hitl.externalFormLink`` and ``externalQueryLink`` as placeholders: both become
the link to the review (Signoff has no public resume URL to offer instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot import texts
from bot.block_kit import SECTION_LIMIT, section_block
from bot.mrkdwn import (
    escape_mrkdwn,
    markdown_to_mrkdwn,
    markdown_to_plain,
    slack_date,
    truncate_mrkdwn,
)
from engine.connectors import Connectors
from engine.definition.templates import HITL_LINK_PLACEHOLDERS
from engine.notify import ReviewRequest

API = "slack_api"
WEBHOOK = "slack"


def channel_options(review: ReviewRequest | Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The review's ``with.channels.<key>`` (empty when the step has none)."""
    options = review.options if isinstance(review, ReviewRequest) else review.get("options")
    channels = (options or {}).get("channels") or {}
    found = channels.get(key) if isinstance(channels, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def api_channels(review: ReviewRequest, connectors: Connectors) -> tuple[list[str], list[str]]:
    """(``slack_api`` channels to post to, those its connection does not allow)."""
    connection = connectors.slack(channel_options(review, API).get("connector-id"))
    allowed = [c for c in review.channels if connection is None or connection.allows(c)]
    return allowed, [c for c in review.channels if c not in allowed]


def webhook_connector(review: ReviewRequest) -> str | None:
    """The ``slack`` channel's connector id, when the review has one."""
    found = channel_options(review, WEBHOOK).get("connector-id")
    return str(found) if found else None


def review_channels(review: ReviewRequest, default_channel: str | None,
                    connectors: Connectors) -> list[str]:
    """The channels a review is posted to, each once: the step's `channel`, then the
    ``slack_api`` channels its connection allows, and the default channel when there is
    neither or the ``slack`` webhook's connector id is not a configured webhook (the
    default connection then stands in for it). Empty: DM the approvers."""
    named = [c for c in (review.channel, *api_channels(review, connectors)[0]) if c]
    hook = webhook_connector(review)
    unconfigured_hook = hook is not None and connectors.webhook(hook) is None
    if default_channel and (unconfigured_hook or not named):
        named.append(default_channel)
    return list(dict.fromkeys(named))


def with_links(mrkdwn: str, link: str) -> str:
    """``mrkdwn`` with Elastic's ``context.hitl`` links made ``link``: inside a link's
    ``<…|label>`` as they stand, elsewhere as ``<link>`` (Slack links no bare ``slack://``)."""
    target = link.replace("&", "&amp;")
    for placeholder in HITL_LINK_PLACEHOLDERS.values():
        mrkdwn = mrkdwn.replace(f"<{placeholder}", f"<{target}")
        mrkdwn = mrkdwn.replace(placeholder, f"<{target}>" if target else "")
    return mrkdwn


def needs_link(review: ReviewRequest) -> bool:
    """Whether a channel message of ``review`` links to it (so the link must be found)."""
    messages = [str(channel_options(review, key).get("message") or "") for key in (API, WEBHOOK)]
    return any(p in m for m in messages for p in HITL_LINK_PLACEHOLDERS.values())


def api_lead(review: ReviewRequest, link: str | None) -> str:
    """The mrkdwn lead text of the review's ``slack_api`` posts; empty without ``message``."""
    message = str(channel_options(review, API).get("message") or "")
    if not message.strip():
        return ""
    return truncate_mrkdwn(with_links(markdown_to_mrkdwn(message), link or ""), SECTION_LIMIT)


def with_lead(message: Mapping[str, Any], lead: str) -> dict[str, Any]:
    """``message`` (``{"text", "blocks"}``) led by ``lead``: first block, and the text
    notifications show."""
    if not lead:
        return dict(message)
    return {**message, "text": lead, "blocks": [section_block(lead), *message["blocks"]]}


def webhook_text(review: ReviewRequest, link: str) -> str:
    """What the ``slack`` webhook is posted: its ``message`` rendered, else a sentence saying
    what waits, until when, with the link to the review."""
    message = str(channel_options(review, WEBHOOK).get("message") or "")
    if message.strip():
        return with_links(markdown_to_mrkdwn(message), link)
    due = review.next_deadline
    title = escape_mrkdwn(markdown_to_plain(review.title))
    return texts.webhook_notice(title, escape_mrkdwn(review.workflow),
                                slack_date(due) if due else None, link.replace("&", "&amp;"))
