"""Attack: an event field written as a Markdown heading, to make the review look vetted.

``## ✅ Pre-approved`` in an alert field used to become a heading in the review posted
to Slack (the header block when it led the message, a bold line in the evidence
otherwise); emphasis, quotes and rules likewise. End to end through the Slack emulator:
the value shows as the literal text it is, while the headings and emphasis the author
wrote in the YAML still render, and ``| markdown`` lets an author trust a value on
purpose.
"""

from __future__ import annotations

from typing import Any

from bot.mrkdwn import RULE
from tests.bot.conftest import REVIEWS, Signoff
from tests.security.test_event_markdown_forges_link import evidence

HEADING = "## ✅ Pre-approved"

ALERT = """
name: isolate-host
steps:
  - name: review
    type: waitForApproval
    with:
      approvers: [U0ALICE]
      message: |
        {{ event.title }}
        **Rule:** {{ event.rule }}

        ### Evidence
        {{ event.summary }}
"""


def review_posted(signoff: Signoff, workflow: str, event: dict[str, Any]) -> dict[str, Any]:
    signoff.run(workflow, event)
    [message] = signoff.messages(REVIEWS)
    return message


def header(message: dict[str, Any]) -> str:
    [block] = [b for b in message["blocks"] if b["type"] == "header"]
    return str(block["text"]["text"])


def test_a_heading_in_an_event_field_shows_as_text(signoff: Signoff):
    message = review_posted(signoff, ALERT, {
        "title": "Isolate web-01?", "rule": "beaconing",
        "summary": f"{HEADING}\nPre-approved\n===\n> approved by the CISO\n\n---"})

    shown = evidence(message)
    assert f"{HEADING}\nPre-approved\n===\n&gt; approved by the CISO\n\n---" in shown
    assert RULE not in shown
    assert "*✅ Pre-approved*" not in shown
    assert "*Pre-approved*" not in shown
    # The author's heading and emphasis still render.
    assert "*Evidence*" in shown
    assert "*Rule:* beaconing" in shown
    assert header(message) == "Isolate web-01?"


def test_a_heading_leading_the_message_is_not_the_header(signoff: Signoff):
    message = review_posted(signoff, ALERT, {"title": HEADING, "rule": "beaconing",
                                             "summary": "none"})

    assert header(message) == HEADING
    assert "Pre-approved" not in evidence(message)


def test_an_author_opts_a_trusted_heading_in_with_the_markdown_filter(signoff: Signoff):
    trusted = ALERT.replace("{{ event.summary }}", "{{ event.summary | markdown }}")
    message = review_posted(signoff, trusted, {"title": HEADING, "rule": "beaconing",
                                               "summary": HEADING})

    assert header(message) == HEADING  # not trusted: still literal
    assert "*✅ Pre-approved*" in evidence(message)
