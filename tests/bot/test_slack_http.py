"""The bot's Slack client keeps its connection open between calls (bot.slack_http), over
HTTP and HTTPS, and never sends a request on a connection the server has closed; Slack's
errors and refusals reach slack_sdk as its own urllib call gives them."""

from __future__ import annotations

import gc
import logging
import ssl
import warnings
from pathlib import Path

import pytest
from slack_sdk.errors import SlackApiError

from bot.ratelimit import LimitedClient, RateLimited
from demo.elastic import make_tls
from slack_emulator import MethodLimits, PostingLimit, SlackEmulator

CHANNEL = "C0REVIEWS"


def client_for(emulator: SlackEmulator, **kwargs: object) -> LimitedClient:
    return LimitedClient(token=emulator.bot_token, base_url=emulator.api_url, timeout=5,
                         **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def emulator() -> SlackEmulator:
    started = SlackEmulator(posting_limit=PostingLimit.off(),
                            method_limits=MethodLimits.off()).start()
    yield started  # type: ignore[misc]
    started.stop()


def test_many_calls_go_over_one_connection_and_each_gets_its_own_answer(emulator):
    client = client_for(emulator)
    posted = [client.chat_postMessage(channel=CHANNEL, text=f"note {n}")["ts"] for n in range(20)]
    for n, ts in enumerate(posted):
        client.chat_update(channel=CHANNEL, ts=ts, text=f"note {n}, edited")

    assert client.kept.opened == 1
    assert len(set(posted)) == 20
    assert [m["text"] for m in emulator.workspace.messages(CHANNEL)] == [
        f"note {n}, edited" for n in range(20)]
    client.kept.close()


def test_a_connection_the_server_closed_is_replaced_before_the_request_is_sent(
        emulator, caplog: pytest.LogCaptureFixture):
    client = client_for(emulator)
    client.chat_postMessage(channel=CHANNEL, text="before")
    port = emulator.port
    emulator.stop()  # closes the kept connection from the server's side
    again = SlackEmulator(emulator.workspace, port=port, posting_limit=PostingLimit.off(),
                          method_limits=MethodLimits.off()).start()
    try:
        answer = client.chat_postMessage(channel=CHANNEL, text="after")

        assert answer["ok"] and client.kept.opened == 2
        # not sent on the dead one and retried by slack_sdk: no failure at all
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        # sent once, on the new connection: not lost, not posted twice
        assert [m["text"] for m in again.workspace.messages(CHANNEL)] == ["before", "after"]
        assert len(again.calls_to("chat.postMessage")) == 1
    finally:
        client.kept.close()
        again.stop()


def test_slacks_errors_and_refusals_arrive_as_slack_sdk_reads_them(emulator):
    client = client_for(emulator)
    with pytest.raises(SlackApiError) as failed:
        client.chat_update(channel=CHANNEL, ts="1.000001", text="no such message")
    assert failed.value.response["error"] == "message_not_found"

    emulator.methods = type(emulator.methods)(MethodLimits.slack().per_minute("users.info", 1, 1))
    client.users_info(user="U0ALICE")
    with pytest.raises(RateLimited) as limited:  # Slack's 429, its Retry-After read
        client.users_info(user="U0BOB")
    assert limited.value.retry_after == 60 and limited.value.response.status_code == 429
    assert client.kept.opened == 1  # a refusal leaves the connection usable
    assert client.auth_test()["ok"]
    assert client.kept.opened == 1
    client.kept.close()


def test_over_https_the_connection_is_kept_and_the_certificate_checked(tmp_path: Path):
    ca, cert, key = make_tls(tmp_path, host="localhost")
    secure = SlackEmulator(posting_limit=PostingLimit.off(), method_limits=MethodLimits.off(),
                           tls=(str(cert), str(key))).start()
    try:
        assert secure.api_url.startswith("https://localhost:")
        trusting = client_for(secure, ssl=ssl.create_default_context(cafile=str(ca)))
        for n in range(5):
            assert trusting.chat_postMessage(channel=CHANNEL, text=f"over TLS {n}")["ok"]
        assert trusting.kept.opened == 1
        trusting.kept.close()

        # A certificate nobody vouched for: refused, as urllib refuses it, nothing posted.
        doubting = client_for(secure)
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            doubting.chat_postMessage(channel=CHANNEL, text="must not arrive")
        assert len(secure.workspace.messages(CHANNEL)) == 5
        doubting.kept.close()
    finally:
        secure.stop()


def test_kept_connections_close_when_their_client_goes_even_from_a_cycle(emulator):
    client = client_for(emulator)
    assert client.auth_test()["ok"]
    [(connection, _)] = client.kept._kept.values()
    sock = connection.sock
    assert sock is not None and sock.fileno() != -1
    client.itself = client  # type: ignore[attr-defined]  # a cycle: only the collector frees it
    del client, connection

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()

    assert sock.fileno() == -1  # closed by its client's going, not left to its finalizer
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


class _Shown(dict):  # type: ignore[type-arg]
    """A block that counts how often it is turned into text (slack_sdk's debug line does)."""

    shown = 0

    def __repr__(self) -> str:
        _Shown.shown += 1
        return super().__repr__()


def test_the_request_is_not_turned_into_a_debug_line_unless_debug_is_on(
        emulator, caplog: pytest.LogCaptureFixture):
    """slack_sdk formats every request for its debug log when its own logger's level is unset
    (slackapi/python-slack-sdk#1957); the bot's client hands it the effective level."""
    client = client_for(emulator)
    ts = client.chat_postMessage(channel=CHANNEL, text="note")["ts"]
    _Shown.shown = 0
    with caplog.at_level(logging.INFO):  # the root logger at INFO, slack_sdk's own unset
        client.chat_update(channel=CHANNEL, ts=ts, text="edited",
                           blocks=[_Shown(type="section", text={"type": "plain_text",
                                                                "text": "edited"})])
    assert _Shown.shown == 0
    with caplog.at_level(logging.DEBUG, logger="slack_sdk"):
        client.chat_update(channel=CHANNEL, ts=ts, text="again",
                           blocks=[_Shown(type="section", text={"type": "plain_text",
                                                                "text": "again"})])
    assert _Shown.shown >= 1
    assert any("Sending a request" in r.getMessage() and "chat.update" in r.getMessage()
               for r in caplog.records)
    assert [m["text"] for m in emulator.workspace.messages(CHANNEL)] == ["again"]
    client.kept.close()
