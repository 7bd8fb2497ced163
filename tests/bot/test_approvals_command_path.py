"""``/approvals`` on the web's short path (bot.web.CommandPath) answers as Bolt's listener.

The served app answers the command without Bolt's dispatch. Here the same signed forms
go to the short path and, in the same process, to the Bolt app built alongside it: the
answers are the same, for each kind of request. What the short path does not take
(another command, a form that only mentions /approvals) is left to Bolt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

from slack_bolt.request import BoltRequest

from bot.app import build_bot
from bot.settings import BotSettings
from bot.web import CommandPath
from tests.bot.conftest import Signoff
from tests.bot.test_approvals import ISOLATE, start


def signed_form(secret: str, **fields: str) -> tuple[bytes, str, str]:
    """A slash command's form, signed as Slack signs it: body, timestamp, signature."""
    form = {"token": "verification", "team_id": "T0SIGNOFF", "channel_id": "C0REVIEWS",
            "command": "/approvals", "text": "", "user_id": "U0ALICE",
            "response_url": "https://hooks.slack.test/commands/1", "trigger_id": "1.2.3",
            **fields}
    body = urlencode(form).encode()
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return body, timestamp, "v0=" + digest.hexdigest()


def by_bolt(bot: Any, body: bytes, timestamp: str, signature: str) -> tuple[int, Any]:
    answer = bot.app.dispatch(BoltRequest(body=body.decode(), headers={
        "content-type": ["application/x-www-form-urlencoded"],
        "x-slack-request-timestamp": [timestamp], "x-slack-signature": [signature]}))
    return answer.status, json.loads(answer.body) if answer.body else None


def by_short_path(path: CommandPath, body: bytes, timestamp: str,
                  signature: str) -> tuple[int, Any]:
    asked = path.recognise(body, timestamp, signature)
    assert asked is not None
    answer = path.answer(*asked)
    return answer.status_code, json.loads(bytes(answer.body))


def test_the_short_path_answers_every_kind_of_request_as_bolt_does(
        signoff: Signoff, bot_settings: BotSettings):
    ids = start(signoff, 12, ISOLATE)  # more than a page: the Show more button too
    bot = build_bot(bot_settings, signoff.engine)
    secret = str(bot_settings.signing_secret)
    path = CommandPath(secret, bot.approvals)
    requests = [("U0ALICE", ""), ("U0ALICE", "all"), ("U0CAROL", "all"), ("U0DAVE", ""),
                ("U0ALICE", "help"), ("U0ALICE", "stats 30"), ("U0ALICE", ids[0]),
                ("U0DAVE", ids[0]), ("U0ALICE", "what?"), ("", "")]
    for user, text in requests:
        form = signed_form(secret, user_id=user, text=text)
        bolt = by_bolt(bot, *form)
        short = by_short_path(path, *form)
        assert short == bolt, (user, text)
        assert short[0] == 200 and short[1]["response_type"] == "ephemeral"
    mine = by_short_path(path, *signed_form(secret))[1]
    assert mine["text"] == "Reviews waiting for you: 12"
    assert "Isolate web-00?" in json.dumps(mine["blocks"])
    assert "/archives/C0REVIEWS/p" in json.dumps(mine["blocks"])  # linked to its message


def test_what_the_short_path_leaves_to_bolt(signoff: Signoff, bot_settings: BotSettings):
    bot = build_bot(bot_settings, signoff.engine)
    secret = str(bot_settings.signing_secret)
    path = CommandPath(secret, bot.approvals)
    assert path.recognise(*signed_form(secret, command="/other")) is None
    # Only the command field counts, not another field that spells it.
    assert path.recognise(*signed_form(secret, command="/other",
                                       xcommand="/approvals")) is None
    assert path.recognise(*signed_form(secret, command="/approvalsx")) is None
    assert path.recognise(*signed_form(secret, ssl_check="1")) is None
    assert path.recognise(*signed_form(secret)) == ("U0ALICE", "")
