"""Slack's rate-limit tiers in the emulator: each method other than chat.postMessage limited
per method (one workspace, one app), HTTP 429 with Retry-After and ``ratelimited`` past it,
as Slack answers; Slack's figures by default, configurable, and possible to turn off."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from slack_emulator import MethodLimits, PostingLimit, SlackEmulator
from slack_emulator.ratelimit import METHOD_TIERS, TIER_PER_MINUTE, MethodBuckets

BURST = 3


@pytest.fixture(scope="module")
def limited() -> Iterator[SlackEmulator]:
    # chat.update: three at once, then one every 100 s, so nothing refills while a test runs.
    limits = MethodLimits.slack().per_minute("chat.update", 0.6, BURST)
    with SlackEmulator(method_limits=limits, posting_limit=PostingLimit.off()) as emulator:
        yield emulator


@pytest.fixture
def emulator(limited: SlackEmulator) -> SlackEmulator:
    limited.reset()
    return limited


def call(emulator: SlackEmulator, method: str, token: str | None = None,
         **data: str) -> httpx.Response:
    return httpx.post(emulator.api_url + method,
                      headers={"Authorization": f"Bearer {token or emulator.bot_token}"},
                      data=data)


def posted(emulator: SlackEmulator) -> str:
    return str(call(emulator, "chat.postMessage", channel="C0REVIEWS", text="hi").json()["ts"])


def test_past_its_burst_a_method_gets_slacks_429_with_retry_after(emulator: SlackEmulator):
    ts = posted(emulator)
    for n in range(BURST):
        assert call(emulator, "chat.update", channel="C0REVIEWS", ts=ts,
                    text=f"edit {n}").json()["ok"] is True

    refused = call(emulator, "chat.update", channel="C0REVIEWS", ts=ts, text="too many")

    assert refused.status_code == 429
    assert refused.json() == {"ok": False, "error": "ratelimited"}
    assert refused.headers["Retry-After"] == "100"  # 0.6 a minute: a token every 100 s
    # Refused: the message keeps the last edit that went through.
    assert emulator.workspace.message("C0REVIEWS", ts)["text"] == f"edit {BURST - 1}"
    assert emulator.methods.refused == 1
    assert emulator.methods.refused_by_key == {"chat.update": 1}


def test_the_limit_is_per_method_whatever_the_channel_or_message(emulator: SlackEmulator):
    emulator.workspace.add_channel("C0OTHER", "other", ["U0ALICE", "U0SIGNOFFBOT"])
    first = posted(emulator)
    other = str(call(emulator, "chat.postMessage", channel="C0OTHER", text="x").json()["ts"])
    for _ in range(BURST):
        call(emulator, "chat.update", channel="C0REVIEWS", ts=first, text="e")

    # Another message, another channel: the same method's bucket.
    assert call(emulator, "chat.update", channel="C0OTHER", ts=other,
                text="e").status_code == 429
    # Other methods have their own.
    assert call(emulator, "users.info", user="U0ALICE").json()["ok"] is True
    assert call(emulator, "chat.postMessage", channel="C0REVIEWS", text="y").json()["ok"]


def test_slack_sdk_sees_ratelimited_with_its_retry_after(emulator: SlackEmulator):
    client = WebClient(token=emulator.bot_token, base_url=emulator.api_url)  # no retry handler
    ts = posted(emulator)
    for _ in range(BURST):
        client.chat_update(channel="C0REVIEWS", ts=ts, text="hi")

    with pytest.raises(SlackApiError) as raised:
        client.chat_update(channel="C0REVIEWS", ts=ts, text="hi")

    assert raised.value.response.status_code == 429
    assert raised.value.response["error"] == "ratelimited"
    assert raised.value.response.headers["Retry-After"] == "100"


def test_calls_refused_for_their_token_take_nothing_and_a_reset_refills(
        emulator: SlackEmulator):
    ts = posted(emulator)
    for _ in range(5):
        assert call(emulator, "chat.update", token="xoxb-wrong", channel="C0REVIEWS", ts=ts,
                    text="x").json()["error"] == "invalid_auth"
    statuses = [call(emulator, "chat.update", channel="C0REVIEWS", ts=ts, text="x").status_code
                for _ in range(BURST + 1)]
    assert statuses == [200] * BURST + [429]

    emulator.reset()

    ts = posted(emulator)
    assert call(emulator, "chat.update", channel="C0REVIEWS", ts=ts, text="x").json()["ok"]


def test_slacks_tiers_are_the_default_for_the_methods_signoff_calls():
    limits = MethodLimits.from_env({})
    assert limits == MethodLimits.slack()
    # The tiers each method's reference page names (Special ones are not limited here).
    assert METHOD_TIERS["chat.update"] == 3 and METHOD_TIERS["conversations.open"] == 3
    assert METHOD_TIERS["views.open"] == 4 and METHOD_TIERS["users.info"] == 4
    assert METHOD_TIERS["usergroups.users.list"] == 2
    assert limits.rates["chat.update"] == (50 / 60, 50)  # Tier 3: 50 a minute
    assert limits.rates["usergroups.users.list"] == (20 / 60, 20)
    assert TIER_PER_MINUTE == {1: 1, 2: 20, 3: 50, 4: 100}
    for special in ("chat.postMessage", "auth.test", "chat.getPermalink"):
        assert special not in limits.rates


def test_a_tier_takes_a_minutes_calls_at_once_then_its_rate():
    now = [0.0]
    buckets = MethodBuckets(MethodLimits.slack(), clock=lambda: now[0])
    assert all(buckets.take("chat.update") is None for _ in range(50))
    assert buckets.take("chat.update") == 2  # 1.2 s to the next token, rounded up
    now[0] = 1.2
    assert buckets.take("chat.update") is None
    assert buckets.take("auth.test") is None  # Special: not limited


def test_the_limits_can_be_set_or_turned_off_by_the_environment():
    assert not MethodLimits.from_env({"SLACK_EMULATOR_METHOD_LIMITS": "off"}).enabled
    set_ = MethodLimits.from_env({"SLACK_EMULATOR_METHOD_LIMITS": "chat.update=6:2,views.open=off"})
    assert set_.rates["chat.update"] == (0.1, 2)
    assert "views.open" not in set_.rates
    assert set_.rates["users.info"] == MethodLimits.slack().rates["users.info"]
    off = MethodBuckets(MethodLimits.off())
    assert all(off.take("chat.update") is None for _ in range(500))


def test_an_emulator_without_method_limits_answers_every_call():
    with SlackEmulator(method_limits=MethodLimits.off()) as emulator:
        ts = posted(emulator)
        assert all(call(emulator, "chat.update", channel="C0REVIEWS", ts=ts,
                        text=str(n)).status_code == 200 for n in range(60))
        assert emulator.methods.refused == 0
