"""Attack: an alert field written as Markdown, to show a trusted URL that links elsewhere.

``[https://runbooks.corp.example](https://evil.example/login)`` in an event field used to
become, in the review posted to Slack, a link labelled with the trusted URL and pointing
at evil.example; ``<https://evil.example|…>`` (Slack's own link syntax) and mentions are
the same attack one layer down. End to end: a workflow whose message interpolates the
field, a run started with the forging value, the review posted to the Slack emulator,
and its blocks read back: the value shows as literal text, no link leads to evil.example
and no mention pings anyone, while the links the author wrote in the YAML still work,
and ``| markdown`` lets an author trust a value on purpose.
"""

from __future__ import annotations

import re
from typing import Any

from tests.bot.conftest import REVIEWS, Signoff

FORGED = "[https://runbooks.corp.example](https://evil.example/login)"

ALERT = """
name: isolate-host
steps:
  - name: review
    type: waitForApproval
    with:
      approvers: [U0ALICE]
      message: |
        ## Isolate {{ event.host }}?
        **Runbook:** {{ event.runbook }}
        **Notes:** {{ event.notes }}

        Read [the isolation playbook](https://wiki.corp.example/isolate) first.
"""

TRUSTED = ALERT.replace("{{ event.runbook }}", "{{ event.runbook | markdown }}")

# Slack's angle-bracket markup: <url>, <url|label>, <@U…>, <!channel>, <#C…>.
_SLACK_MARKUP = re.compile(r"<([^<>|]+)(?:\|[^<>]*)?>")


def mrkdwn_texts(node: Any) -> list[str]:
    """Every mrkdwn text in a message's blocks (sections, fields, context)."""
    if isinstance(node, list):
        return [text for item in node for text in mrkdwn_texts(item)]
    if not isinstance(node, dict):
        return []
    found = [node["text"]] if node.get("type") == "mrkdwn" else []
    return found + [text for value in node.values() for text in mrkdwn_texts(value)]


def link_targets(message: dict[str, Any]) -> list[str]:
    """Where the links a reviewer can click in a posted message lead."""
    targets = [match.group(1) for text in mrkdwn_texts(message["blocks"])
               for match in _SLACK_MARKUP.finditer(text)]
    targets += [match.group(1) for match in _SLACK_MARKUP.finditer(message.get("text", ""))]
    return [t for t in targets if not t.startswith(("@", "!", "#"))]


def evidence(message: dict[str, Any]) -> str:
    """The message's sections: what the workflow's message became (the context block
    after them mentions the approvers on purpose)."""
    return "\n".join(block["text"]["text"] for block in message["blocks"]
                     if block["type"] == "section" and "text" in block)


def mentions(message: dict[str, Any]) -> list[str]:
    return [match.group(1) for match in _SLACK_MARKUP.finditer(evidence(message))
            if match.group(1).startswith(("@", "!", "#"))]


def review_posted(signoff: Signoff, workflow: str, event: dict[str, Any]) -> dict[str, Any]:
    signoff.run(workflow, event)
    [message] = signoff.messages(REVIEWS)
    return message


def test_a_markdown_link_in_an_event_field_shows_as_text(signoff: Signoff):
    message = review_posted(signoff, ALERT, {"host": "web-01", "runbook": FORGED,
                                             "notes": "none"})

    assert not [t for t in link_targets(message) if "evil.example" in t]
    assert f"*Runbook:* {FORGED}" in evidence(message)
    # The author's own link still renders as one.
    assert "<https://wiki.corp.example/isolate|the isolation playbook>" in evidence(message)


def test_slack_link_markup_and_mentions_in_an_event_field_stay_inert(signoff: Signoff):
    forged = "<https://evil.example/login|https://runbooks.corp.example>"
    message = review_posted(signoff, ALERT, {
        "host": "<https://evil.example|web-01>", "runbook": forged,
        "notes": "<!channel> approved by <@U0ALICE> & <#C0REVIEWS>"})

    assert not [t for t in link_targets(message) if "evil.example" in t]
    assert mentions(message) == []
    assert "&lt;https://evil.example/login|https://runbooks.corp.example&gt;" in evidence(message)
    assert "&lt;!channel&gt; approved by &lt;@U0ALICE&gt; &amp; &lt;#C0REVIEWS&gt;" in evidence(
        message)
    assert message["blocks"][0]["text"]["text"] == "Isolate <https://evil.example|web-01>?"
    assert message["blocks"][0]["text"]["type"] == "plain_text"


def test_an_author_opts_a_trusted_value_in_with_the_markdown_filter(signoff: Signoff):
    message = review_posted(signoff, TRUSTED, {"host": "web-01", "runbook": FORGED,
                                               "notes": FORGED})

    assert "<https://evil.example/login|https://runbooks.corp.example>" in evidence(message)
    # Only the value the author trusted: the other field still shows as text.
    assert f"*Notes:* {FORGED}" in evidence(message)
