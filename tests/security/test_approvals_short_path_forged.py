"""Attack: a forged ``/approvals`` on the web's short path, to read someone's reviews.

``/approvals`` is answered without Bolt's dispatch (bot.web.CommandPath), and the signed
form is the only word on who asks: its ``user_id`` picks whose reviews are listed.
Mallory knows Alice's user id and posts ``/approvals`` as her to the Request URL of the
served app, over real HTTP: unsigned, with a stale timestamp, with a made-up signature,
signed with another app's secret, and a form Slack really signed for Mallory with its
``user_id`` changed to Alice's afterwards. Each is refused with Bolt's 401, and none of
the answers names Alice's review. The same command, signed by Slack for Alice, lists it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx

from slack_emulator import SlackDriver, Tamper
from tests.bot.conftest import Signoff  # its fixtures come with tests/security/conftest.py

REVIEW = """
name: payout
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Pay 90,000 EUR to the new supplier?"
      approvers: [U0ALICE]
"""
TITLE = "Pay 90,000 EUR to the new supplier?"


def form(user_id: str) -> str:
    return ("token=verification&team_id=T0SIGNOFF&channel_id=C0REVIEWS&command=%2Fapprovals"
            f"&text=&user_id={user_id}&response_url=https%3A%2F%2Fhooks.slack.test%2F1")


def post(signoff: Signoff, body: str, timestamp: str, signature: str) -> httpx.Response:
    return httpx.post(signoff.driver.app_url, content=body.encode(), timeout=10, headers={
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": timestamp, "x-slack-signature": signature})


def signature(secret: str, timestamp: str, body: str) -> str:
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256)
    return "v0=" + digest.hexdigest()


def test_a_forged_approvals_for_someone_else_is_refused(signoff: Signoff):
    signoff.run(REVIEW)
    now = str(int(time.time()))
    secret = signoff.slack.signing_secret

    # The emulator's driver spoils its own signed request in each way it knows.
    answers = [signoff.driver.slash_command("U0ALICE", "/approvals", tamper=tamper)
               for tamper in (Tamper.NO_SIGNATURE, Tamper.STALE_TIMESTAMP,
                              Tamper.WRONG_SIGNATURE)]
    # Signed by another app (its own secret, Alice's id).
    with SlackDriver(signoff.slack, signoff.driver.app_url,
                     signing_secret="another-app") as other:
        answers.append(other.slash_command("U0ALICE", "/approvals"))
    refused = [(a.status, str(a.body)) for a in answers]
    # Signed by Slack for Mallory, then changed to ask as Alice: the signature no longer fits.
    genuine = signature(secret, now, form("U0MALLORY"))
    swapped = post(signoff, form("U0ALICE"), now, genuine)
    refused.append((swapped.status_code, swapped.text))
    # Old enough that Slack's signature check calls it a replay, though correctly signed.
    old = str(int(time.time()) - 600)
    replayed = post(signoff, form("U0ALICE"), old, signature(secret, old, form("U0ALICE")))
    refused.append((replayed.status_code, replayed.text))

    for status, body in refused:
        assert status == 401, (status, body)
        assert TITLE not in body and "Reviews waiting" not in body
    # The same form as Mallory signed it is answered, for her: nothing waits for her.
    mallory = post(signoff, form("U0MALLORY"), now, genuine)
    assert mallory.status_code == 200 and TITLE not in mallory.text
    # And signed by Slack for Alice, the command lists her review.
    alice = signoff.driver.slash_command("U0ALICE", "/approvals")
    assert alice.status == 200 and TITLE in str(alice.body)
