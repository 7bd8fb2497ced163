"""Posting to Slack incoming webhooks (Elastic 9.5's ``with.channels.slack``).

A webhook can only post: no buttons work there (their clicks would come to whoever made
the webhook, not to Signoff), so what it gets is a notification with a link to the
review (:func:`bot.texts.webhook_notice`), while the review itself, buttons and all, is
posted through the Web API as usual.

The URL is the webhook's credential. It is read from the connections file
(:mod:`engine.connectors`) and lives only in memory: an error raised here names the
connector id and Slack's answer, never the URL, and does not chain slack_sdk's or
urllib's exception (whose text could hold it), because RQ keeps a failed job's
traceback in Redis.

How an answer is taken: ``ok`` posted; 429 (after waiting ``Retry-After``), 5xx and
connection failures are retried inside the call (:func:`bot.slack.webhook_client`) and
then raise :class:`WebhookUnavailable`, so the post job is retried with backoff; every
other answer (``404 no_service``, ``410 channel_is_archived``, ``403 action_prohibited``,
``400 invalid_payload``...) is permanent: :class:`WebhookRefused`, recorded by the
caller and not tried again.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.slack import webhook_client
from engine.connectors import SlackWebhookConnection
from engine.errors import SignoffError

MAX_TEXT = 10_240  # kbn-workflows' MAX_HITL_MESSAGE_LENGTH (Slack itself takes ~40,000)


class WebhookUnavailable(SignoffError):
    """The webhook did not take the post for now (rate limit, 5xx, unreachable): retry later."""


@dataclass(frozen=True)
class WebhookRefused:
    """The webhook refused the post for good: Slack's status and error code."""

    connector_id: str
    status: int
    error: str

    def __str__(self) -> str:
        return f"webhook {self.connector_id} refused the notification: {self.status} {self.error}"


def post_to_webhook(connection: SlackWebhookConnection, text: str) -> WebhookRefused | None:
    """Post ``text`` (mrkdwn) to ``connection``; None once Slack answered ``ok``."""
    client = webhook_client(connection.url)
    try:
        answer = client.send(text=text[:MAX_TEXT], unfurl_links=False, unfurl_media=False)
    except Exception as exc:  # urllib's errors: the URL must not travel on in their text
        raise WebhookUnavailable(
            f"webhook {connection.id} could not be reached ({type(exc).__name__})") from None
    if answer.status_code == 200:
        return None
    error = (answer.body or "").strip()[:100] or "no answer"
    if answer.status_code == 429 or answer.status_code >= 500:
        raise WebhookUnavailable(f"webhook {connection.id} answered {answer.status_code} {error}")
    return WebhookRefused(connection.id, answer.status_code, error)
