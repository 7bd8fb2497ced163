"""Attack: a huge unsigned body posted to /slack/events, to make the web process hold it.

The signature check needs the whole body, and anyone can post to the Request URL: a 512 MB
body raised the web process to 1.1 GB before its 413. Over real HTTP against the served web
app, with a raw socket so the test controls what is sent: a 5 MB body declared by
Content-Length is refused before any of it is sent, a chunked one (no Content-Length) as
soon as it passes 1 MiB, long before the 5 MB are sent; then the app still answers a
normal signed request.
"""

from __future__ import annotations

import select
import socket
from urllib.parse import urlsplit

import pytest

from bot.web import MAX_BODY
from slack_emulator import SlackDriver
from tests.bot.conftest import (  # noqa: F401 - fixtures reused as they are
    bot_settings,
    running_slack,
    signoff,
    slack,
    start_signoff,
)

FIVE_MB = 5 * 1024 * 1024
CHUNK = 64 * 1024


@pytest.fixture
def driver(request: pytest.FixtureRequest) -> SlackDriver:
    """The Slack driver of a served web app (the bot tests' ``signoff``)."""
    return request.getfixturevalue("signoff").driver


class RawPost:
    """A POST to /slack/events written by hand, its body sent only while no answer came."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        head = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}",
                "Content-Type: application/x-www-form-urlencoded",
                *(f"{k}: {v}" for k, v in headers.items())]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        self.sent = 0

    def answered(self, wait: float = 0.0) -> bool:
        return bool(select.select([self.sock], [], [], wait)[0])

    def send_chunked(self, total: int) -> None:
        """Send ``total`` bytes in chunks, stopping as soon as the server answers."""
        while self.sent < total and not self.answered(0.005):
            try:
                self.sock.sendall(b"%x\r\n%s\r\n" % (CHUNK, b"a" * CHUNK))
            except OSError:  # the server closed its end: it will not read more
                return
            self.sent += CHUNK
        if self.sent >= total:
            self.sock.sendall(b"0\r\n\r\n")

    def status(self) -> int:
        received = b""
        while b"\r\n" not in received:
            data = self.sock.recv(4096)
            if not data:
                break
            received += data
        self.sock.close()
        return int(received.split(b" ", 2)[1])


def test_a_declared_oversized_body_is_refused_before_it_is_sent(driver):
    post = RawPost(driver.app_url, {"Content-Length": str(FIVE_MB)})
    assert post.answered(wait=10), "no answer without the body: the app waited to read it"
    assert post.status() == 413
    assert post.sent == 0


def test_a_streamed_oversized_body_is_refused_once_it_passes_the_cap(driver):
    post = RawPost(driver.app_url, {"Transfer-Encoding": "chunked"})
    post.send_chunked(FIVE_MB)
    assert post.status() == 413
    assert MAX_BODY < post.sent < FIVE_MB  # answered long before the whole body was sent


def test_a_body_within_the_cap_goes_on_to_the_signature_check(driver):
    post = RawPost(driver.app_url, {"Transfer-Encoding": "chunked"})
    post.send_chunked(MAX_BODY - CHUNK)
    assert post.status() == 401  # unsigned: refused by the signature check, not the cap


def test_the_app_still_answers_signed_requests_after_oversized_ones(driver):
    for headers, total in (({"Content-Length": str(FIVE_MB)}, 0),
                           ({"Transfer-Encoding": "chunked"}, FIVE_MB)):
        post = RawPost(driver.app_url, headers)
        if total:
            post.send_chunked(total)
        assert post.status() == 413

    answer = driver.send_json({"type": "url_verification", "challenge": "still-here",
                                       "token": "unused"})
    assert answer.status == 200
    assert answer.body == {"challenge": "still-here"}
