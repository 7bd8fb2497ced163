"""Slack's posting limit in the emulator: about one chat.postMessage a second per channel,
a burst allowed, then HTTP 429 with Retry-After and ``ratelimited``, as Slack answers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from slack_emulator import PostingLimit, SlackEmulator
from slack_emulator.ratelimit import DEFAULT_BURST, DEFAULT_RATE, ChannelBuckets

BURST = 3


@pytest.fixture(scope="module")
def limited() -> Iterator[SlackEmulator]:
    # A slow refill (one post every 100 s) so that nothing refills while a test runs.
    with SlackEmulator(posting_limit=PostingLimit(rate=0.01, burst=BURST)) as emulator:
        yield emulator


@pytest.fixture
def emulator(limited: SlackEmulator) -> SlackEmulator:
    limited.reset()
    return limited


def post(emulator: SlackEmulator, channel: str = "C0REVIEWS") -> httpx.Response:
    return httpx.post(emulator.api_url + "chat.postMessage",
                      headers={"Authorization": f"Bearer {emulator.bot_token}"},
                      data={"channel": channel, "text": "hello"})


def test_past_the_burst_a_post_gets_slacks_429_with_retry_after(emulator: SlackEmulator):
    for _ in range(BURST):
        assert post(emulator).json()["ok"] is True

    refused = post(emulator)

    assert refused.status_code == 429
    assert refused.json() == {"ok": False, "error": "ratelimited"}
    # Whole seconds until the next token: at 0.01 a second, 100.
    assert refused.headers["Retry-After"] == "100"
    assert len(emulator.workspace.messages("C0REVIEWS")) == BURST  # nothing posted
    assert emulator.posting.refused == 1


def test_the_limit_is_per_channel(emulator: SlackEmulator):
    for _ in range(BURST):
        post(emulator)
    assert post(emulator).status_code == 429

    emulator.workspace.add_channel("C0OTHER", "other", ["U0ALICE"])
    assert post(emulator, "C0OTHER").json()["ok"] is True


def test_slack_sdk_sees_ratelimited_with_its_retry_after(emulator: SlackEmulator):
    client = WebClient(token=emulator.bot_token, base_url=emulator.api_url)  # no retry handler
    for _ in range(BURST):
        client.chat_postMessage(channel="C0REVIEWS", text="hi")

    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel="C0REVIEWS", text="hi")

    assert raised.value.response.status_code == 429
    assert raised.value.response["error"] == "ratelimited"
    assert raised.value.response.headers["Retry-After"] == "100"


def test_other_methods_and_refused_calls_take_nothing_from_the_bucket(emulator: SlackEmulator):
    ts = post(emulator).json()["ts"]
    client = WebClient(token=emulator.bot_token, base_url=emulator.api_url)
    for _ in range(5):
        client.chat_update(channel="C0REVIEWS", ts=ts, text="edited")
    bad = httpx.post(emulator.api_url + "chat.postMessage",
                     headers={"Authorization": "Bearer xoxb-wrong"},
                     data={"channel": "C0REVIEWS", "text": "x"})
    assert bad.json()["error"] == "invalid_auth"

    assert [post(emulator).status_code for _ in range(BURST)] == [200, 200, 429]


def test_a_reset_refills_every_bucket(emulator: SlackEmulator):
    for _ in range(BURST):
        post(emulator)
    assert post(emulator).status_code == 429

    emulator.reset()

    assert post(emulator).json()["ok"] is True


def test_the_bucket_refills_at_the_rate_and_holds_the_burst_at_most():
    now = [0.0]
    buckets = ChannelBuckets(PostingLimit(rate=1.0, burst=2), clock=lambda: now[0])
    assert [buckets.take("C1") for _ in range(3)] == [None, None, 1]
    now[0] = 0.5
    assert buckets.take("C1") == 1  # half a token: still a second to wait, rounded up
    now[0] = 1.0
    assert buckets.take("C1") is None
    now[0] = 100.0  # a long quiet spell refills up to the burst, no more
    assert [buckets.take("C1") for _ in range(3)] == [None, None, 1]


def test_the_limit_is_on_at_slacks_rate_by_default_and_can_be_turned_off():
    assert PostingLimit.from_env({}) == PostingLimit(DEFAULT_RATE, DEFAULT_BURST)
    assert DEFAULT_RATE == 1.0
    assert not PostingLimit.from_env({"SLACK_EMULATOR_POST_RATE": "0"}).enabled
    assert PostingLimit.from_env({"SLACK_EMULATOR_POST_BURST": "5"}).burst == 5
    off = ChannelBuckets(PostingLimit.off())
    assert all(off.take("C1") is None for _ in range(DEFAULT_BURST * 2))
