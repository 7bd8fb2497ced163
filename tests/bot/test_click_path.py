"""The short path for one-click decisions: signed, recognised, queued; anything else to Bolt."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import quote_plus, unquote_plus

from rq import Queue

from bot.forms import ReviewRef
from bot.web import OneClickPath, form_value
from engine.state import keys
from engine.state.inbox import Task

SECRET = "shh"


def signed(payload: dict, *, secret: str = SECRET, age: float = 0) -> tuple[bytes, str, str]:
    body = ("payload=" + quote_plus(json.dumps(payload))).encode()
    timestamp = str(int(time.time() - age))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return body, timestamp, "v0=" + digest.hexdigest()


def click(action_id: str, one_click: bool) -> dict:
    value = ReviewRef("exe-1", "review", one_click=one_click).encode()
    return {"type": "block_actions", "user": {"id": "U0ALICE", "username": "alice"},
            "team": {"id": "T0SIGNOFF"}, "channel": {"id": "C0REVIEWS"},
            "container": {"type": "message", "message_ts": "1.2", "channel_id": "C0REVIEWS"},
            "actions": [{"action_id": action_id, "value": value}]}


def test_a_signed_one_click_approve_is_handed_to_a_worker_by_the_inbox(runtime):
    path = OneClickPath(SECRET, runtime.engine)
    queue = Queue(runtime.settings.queue, connection=runtime.store.redis)
    assert path.handle(*signed(click("signoff.approve", True))) is True
    assert path.handle(*signed(click("signoff.deny", True))) is True
    [job] = queue.get_jobs()  # one drain for both clicks
    assert job.func_name == "engine.worker.jobs.drain_inbox"
    inbox = keys.inbox(runtime.settings.queue)
    tasks = [Task.decode(raw) for raw in runtime.store.redis.lrange(inbox, 0, -1)]
    assert [t.function for t in tasks] == ["bot.jobs.decide_click"] * 2
    reviewer, ref, approved = tasks[0].args
    assert reviewer["user_id"] == "U0ALICE" and approved is True
    assert ReviewRef.decode(ref).execution_id == "exe-1"
    assert tasks[1].args[2] is False


def test_everything_else_goes_to_bolt(runtime):
    path = OneClickPath(SECRET, runtime.engine)
    queue = Queue(runtime.settings.queue, connection=runtime.store.redis)
    assert path.handle(*signed(click("signoff.approve", False))) is False  # needs the form
    assert path.handle(*signed(click("signoff.respond", True))) is False
    assert path.handle(*signed(click("signoff.approve", True), secret="forged")) is False
    assert path.handle(*signed(click("signoff.approve", True), age=600)) is False  # stale
    body, timestamp, _ = signed(click("signoff.approve", True))
    assert path.handle(body, timestamp, "") is False
    assert path.handle(b"command=%2Fapprovals", timestamp, "v0=x") is False
    assert queue.count == 0 and runtime.store.redis.llen(keys.inbox(runtime.settings.queue)) == 0


def test_form_values_decode_as_the_standard_library_does():
    text = '{"a":"héllo ✓ \\\\ \\" %zz + 🙂 \\x41 <!channel>"}'
    encoded = quote_plus(text).encode()
    assert form_value(encoded) == unquote_plus(encoded.decode()) == text
    # Malformed escapes and bytes that are not UTF-8 decode as unquote_plus decodes them.
    for raw in (b"100%", b"%4", b"%zz1", b"a%ffb", b"caf%C3%A9+au+lait", b"\\x41", b"\\"):
        assert form_value(raw) == unquote_plus(raw.decode("utf-8", "replace")), raw
