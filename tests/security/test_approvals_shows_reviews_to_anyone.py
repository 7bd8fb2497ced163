"""Attack: ``/approvals all`` and ``/approvals ID`` show any pending review to anyone.

Mallory is in the workspace but has nothing to do with a payout review posted to a
private channel: she is no approver at any level, did not ask for it, is not in the
channel and is no admin. She types ``/approvals all`` and ``/approvals <its id>`` (the id
she could have read anywhere) through the Slack emulator, signed as Slack signs, into
the real Bolt app. She must learn nothing: the listing leaves the review out, and the
answer for its id is byte for byte the answer for an id that does not exist. Everyone
who has a part in the review still sees it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.directory import Directory
from bot.overview import Overview, Scope
from bot.settings import BotSettings
from engine.definition.loader import parse_workflow
from slack_emulator import SlackEmulator
from slack_emulator.directory import User, UserGroup
from tests.bot.conftest import (  # noqa: F401 - fixtures reused as they are
    REVIEWS,
    Signoff,
    bot_settings,
    running_slack,
    signoff,
    slack,
    start_signoff,
)

SECRET = "C0PAYOUTS"
# Level 1: Alice; level 2 (after an escalation): the on-call group (Dave). Carol asks.
PAYOUT = f"""
name: payout
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Pay 90,000 EUR to the new supplier?"
      approvers: [U0ALICE]
      channel: {SECRET}
      escalation:
        - approvers: [S0ONCALL]
          sla: 1h
"""
TITLE = "Pay 90,000 EUR to the new supplier?"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
NOBODY_HERE = "No reviews are waiting for a decision."


def person(user_id: str, name: str) -> User:
    return User(id=user_id, name=name, real_name=name.title(), display_name=name,
                email=f"{name}@site.test")


@pytest.fixture
def workspace(request: pytest.FixtureRequest) -> SlackEmulator:
    """The seeded workspace plus Mallory (an outsider), Erin (in the payouts channel only),
    Frank (an admin by user id) and Grace (an admin through the S0ADMINS group)."""
    emulator: SlackEmulator = request.getfixturevalue("slack")
    for user_id, name in (("U0MALLORY", "mallory"), ("U0ERIN", "erin"),
                          ("U0FRANK", "frank"), ("U0GRACE", "grace")):
        emulator.workspace.add_user(person(user_id, name))
    emulator.workspace.add_usergroup(UserGroup("S0ADMINS", "admins", "Admins", ("U0GRACE",)))
    # Everyone types /approvals in #reviews (Slack answers only members there); the
    # payout review goes elsewhere.
    everyone = [*emulator.workspace.members(REVIEWS), "U0MALLORY", "U0ERIN", "U0FRANK", "U0GRACE"]
    emulator.workspace.add_channel(REVIEWS, "reviews", everyone)
    emulator.workspace.add_channel(SECRET, "payouts", ["U0ERIN", "U0SIGNOFFBOT"])
    return emulator


@pytest.fixture
def site(workspace: SlackEmulator, request: pytest.FixtureRequest) -> Signoff:
    """The Slack side of Signoff, served, on that workspace (the bot tests' ``signoff``)."""
    return request.getfixturevalue("signoff")


@pytest.fixture
def start(workspace: SlackEmulator, request: pytest.FixtureRequest) -> Callable[..., Signoff]:
    return request.getfixturevalue("start_signoff")


def approvals(site: Signoff, user: str, text: str) -> dict[str, Any]:
    answer = site.driver.slash_command(user, "/approvals", text)
    assert answer.status == 200
    return dict(answer.body)


def listed(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


def request_payout(site: Signoff) -> str:
    execution_id = site.engine.run(parse_workflow(PAYOUT), {}, requested_by="U0CAROL")
    site.drain()
    message = site.messages(SECRET)[-1]
    assert TITLE in json.dumps(message)  # posted where Mallory cannot read it
    assert execution_id in json.dumps(message)
    return execution_id


def test_an_outsider_sees_nothing_of_a_review_and_its_id_answers_as_an_unknown_id(
        workspace: SlackEmulator, site: Signoff):
    execution_id = request_payout(site)

    everything = approvals(site, "U0MALLORY", "all")
    one = approvals(site, "U0MALLORY", execution_id)
    unknown = approvals(site, "U0MALLORY", UNKNOWN)

    assert execution_id not in listed(everything) and TITLE not in listed(everything)
    assert [b["text"]["text"] for b in everything["blocks"] if b["type"] == "section"] == [
        NOBODY_HERE]
    assert execution_id in listed(one)  # echoed back, as for any id typed
    assert listed(one).replace(execution_id, "ID") == listed(unknown).replace(UNKNOWN, "ID")
    assert "not visible to you" in listed(unknown)
    # Nor does the Show more button page past the filter into the review.
    assert "site.approvals.more" not in listed(everything)
    # Her App Home lists only her own reviews: none.
    site.driver.open_app_home("U0MALLORY")
    assert TITLE not in json.dumps(workspace.workspace.views.home("U0MALLORY") or {})


@pytest.mark.parametrize("viewer", [
    pytest.param("U0ALICE", id="approver"),
    pytest.param("U0DAVE", id="approver-at-a-later-level-through-a-group"),
    pytest.param("U0CAROL", id="requester"),
    pytest.param("U0ERIN", id="member-of-the-channel"),
])
def test_those_with_a_part_in_the_review_see_it(workspace: SlackEmulator, site: Signoff,
                                                viewer: str):
    execution_id = request_payout(site)

    everything = approvals(site, viewer, "all")
    one = approvals(site, viewer, execution_id)

    assert execution_id in listed(everything) and TITLE in listed(everything)
    assert "Showing 1–1 of 1" in listed(everything)
    assert TITLE in listed(one) and "not visible" not in listed(one)


def test_the_outsider_paging_all_counts_only_what_she_may_see(workspace: SlackEmulator,
                                                               site: Signoff):
    hidden = [request_payout(site) for _ in range(3)]
    workspace.workspace.add_channel("C0PUBLIC", "public", ["U0MALLORY", "U0SIGNOFFBOT"])
    public = site.engine.run(parse_workflow(PAYOUT.replace(SECRET, "C0PUBLIC")), {},
                                requested_by="U0CAROL")
    site.drain()

    everything = approvals(site, "U0MALLORY", "all")

    assert "Showing 1–1 of 1" in listed(everything)  # the total counts her review alone
    assert public in listed(everything)
    assert not any(h in listed(everything) for h in hidden)


def test_when_slack_will_not_say_who_is_in_a_channel_membership_lets_nobody_in(
        workspace: SlackEmulator, site: Signoff):
    """Fail closed: without channels:read (or while Slack is down) a channel member sees
    nothing through membership, and the answer is asked again next time, not cached."""
    execution_id = request_payout(site)
    workspace.fail_next("conversations.members", error="missing_scope")

    refused = approvals(site, "U0ERIN", "all")
    allowed = approvals(site, "U0ERIN", "all")

    assert execution_id not in listed(refused)
    assert execution_id in listed(allowed)


@pytest.fixture
def admins_settings(request: pytest.FixtureRequest) -> BotSettings:
    plain: BotSettings = request.getfixturevalue("bot_settings")
    return BotSettings(bot_token=plain.bot_token, signing_secret=plain.signing_secret,
                       channel=plain.channel, api_url=plain.api_url,
                       admins=("U0FRANK", "S0ADMINS"))


@pytest.mark.parametrize("admin", [pytest.param("U0FRANK", id="by-user-id"),
                                   pytest.param("U0GRACE", id="by-user-group")])
def test_admins_see_every_review(workspace: SlackEmulator, start: Callable[..., Signoff],
                                 admins_settings: BotSettings, admin: str):
    """What SIGNOFF_ADMINS grants, decided by the bot's Overview, with Slack as the emulator."""
    site = start(admins_settings)
    execution_id = request_payout(site)
    client = WebClient(token=admins_settings.bot_token, base_url=admins_settings.api_url)
    overview = Overview(site.engine, client, Directory(client, site.engine.store),
                        admins_settings.admins)

    page = overview.page(admin, Scope.ALL)
    outsider = overview.page("U0MALLORY", Scope.ALL)

    assert [i.review.execution_id for i in page.items] == [execution_id] and page.total == 1
    assert outsider.items == () and outsider.total == 0


@pytest.mark.parametrize("admin", [pytest.param("U0FRANK", id="by-user-id"),
                                   pytest.param("U0GRACE", id="by-user-group")])
def test_admins_see_every_review_through_the_slash_command(
        workspace: SlackEmulator, start: Callable[..., Signoff],
        admins_settings: BotSettings, admin: str):
    site = start(admins_settings)
    execution_id = request_payout(site)

    everything = approvals(site, admin, "all")
    one = approvals(site, admin, execution_id)

    assert execution_id in listed(everything) and TITLE in listed(one)


def test_signoff_admins_is_read_from_the_environment():
    settings = BotSettings.from_env({"SIGNOFF_ADMINS": " U0FRANK, S0ADMINS ,,"})
    assert settings.admins == ("U0FRANK", "S0ADMINS")
    assert BotSettings.from_env({}).admins == ()


def test_a_channel_member_past_slacks_first_page_of_members_is_still_a_member(
        workspace: SlackEmulator, site: Signoff):
    """conversations.members answers at most 1000 ids a page; the Directory reads them all,
    once, then from its cache."""
    crowd = [f"U0M{n:05d}" for n in range(1500)]
    workspace.workspace.add_channel("C0CROWD", "crowd", crowd)
    client = WebClient(token=workspace.bot_token, base_url=workspace.api_url)
    directory = Directory(client, site.engine.store)

    assert directory.conversation_members("C0CROWD") == frozenset(crowd)
    assert directory.conversation_members("C0CROWD") == frozenset(crowd)
    assert len(workspace.calls_to("conversations.members")) == 2  # two pages, then cached

    first = client.conversations_members(channel="C0CROWD", limit=2)
    assert first["members"] == crowd[:2] and first["response_metadata"]["next_cursor"]
    second = client.conversations_members(
        channel="C0CROWD", limit=2, cursor=first["response_metadata"]["next_cursor"])
    assert second["members"] == crowd[2:4]
    with pytest.raises(SlackApiError) as refused:
        client.conversations_members(channel="C0CROWD", cursor="not-a-cursor")
    assert refused.value.response["error"] == "invalid_cursor"
    assert directory.conversation_members("C0GONE") == frozenset()
