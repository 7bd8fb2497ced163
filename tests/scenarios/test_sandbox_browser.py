"""The sandbox in a real browser: Debian's Chromium, driven by Playwright, on `make demo`'s stack.

One stack for the module (Redis, the Slack emulator and its sandbox, `signoff serve`,
`signoff worker`, the stand-in target, the seeded reviews); each test acts on its own
review, as the people of the workspace, only through the page.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.seeds import ISOLATE_HOST, ISOLATE_TITLE, Seed
from demo.stack import Stack
from tests.support.services import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
INSTALL_CHROMIUM = (
    "The sandbox browser test drives Debian's Chromium at /usr/bin/chromium, which is not "
    "installed. Install it with `sudo apt-get install -y chromium` (`.ci/run` does this on CI); "
    "Playwright's own browser downloads are not used.")
SCREENSHOT = ROOT / "docs" / "review-message.png"
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(INSTALL_CHROMIUM, pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run `pip install -e '.[dev]'` (or `make test`)",
                    pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    running = Stack(sandbox_port=0, say=lambda line: None, use_env_redis=False)
    try:
        running.start()
        running.seed()
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    # Twice the pixels, so the README's screenshot stays sharp on high-density screens.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(stack.sandbox.url)  # type: ignore[union-attr]
    yield page
    context.close()
    assert errors == [], f"the page threw: {errors}"


def act_as(page: Any, user_id: str) -> None:
    page.select_option("#switcher", user_id)
    page.locator(f"body[data-user={user_id}]").wait_for(timeout=WAIT_MS)


def review(page: Any, title: str) -> Any:
    """The message in #reviews whose header is ``title``."""
    message = page.locator("article.message").filter(
        has=page.locator("h3.block-header", has_text=title))
    message.wait_for(timeout=WAIT_MS)
    return message


def execution_id(stack: Stack, workflow: str) -> str:
    """The seeded run of ``workflow`` that waits for a review."""
    [found] = [run for seed, run in stack.seeded if seed.workflow == workflow
               and seed.waits_for_review]
    return found


def wait_for_status(stack: Stack, run: str, status: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = stack.execution(run)
        if state["status"] == status:
            return state
        assert time.monotonic() < deadline, f"{run} is {state['status']}, not {status}"
        time.sleep(0.1)


def test_alice_approves_the_waiting_review_and_watches_the_run_complete(page: Any, stack: Stack,
                                                                        tmp_path: Path):
    from playwright.sync_api import expect

    message = review(page, ISOLATE_TITLE)  # Elastic's example, the model's verdict in it
    expect(message.locator("strong", has_text="AI classification:")).to_be_visible()  # **bold**
    approve = message.get_by_role("button", name="Approve")
    expect(approve).to_have_class("btn btn-primary")
    expect(message.get_by_role("button", name="Deny")).to_have_class("btn btn-danger")
    # The README's picture, retaken with SIGNOFF_UPDATE_SCREENSHOT=1 (else kept out of the tree).
    picture = SCREENSHOT if os.environ.get("SIGNOFF_UPDATE_SCREENSHOT") else tmp_path / "m.png"
    picture.parent.mkdir(exist_ok=True)
    message.screenshot(path=str(picture))
    assert picture.stat().st_size > 10_000  # drawn, not blank

    approve.click()

    expect(message).to_contain_text("Approved by @alice", timeout=WAIT_MS)
    expect(message.get_by_role("button")).to_have_count(0)
    state = wait_for_status(stack, execution_id(stack, ISOLATE_HOST), "COMPLETED")
    assert state["steps"]["isolate"]["status"] == "COMPLETED"
    log = page.locator(".panel", has_text="Kibana cases and the EDR")
    expect(log).to_contain_text("EDR POST https://edr.example.com/isolate", timeout=WAIT_MS)
    expect(log).to_contain_text("**Decision:** isolated", timeout=WAIT_MS)


def test_a_non_approver_is_refused_and_the_review_stays_open(page: Any, stack: Stack):
    from playwright.sync_api import expect

    act_as(page, "U0BOB")  # the refund's only approver is alice
    message = review(page, "Refund 249 EUR to Jane Roe?")  # 249.0 prints as JavaScript prints it
    expect(message).to_contain_text("Approvers: @alice")

    message.get_by_role("button", name="Pay out").click()

    refusal = page.locator("article.message.ephemeral",
                           has_text="You can't decide this review: you are not one of its approvers.")
    expect(refusal).to_be_visible(timeout=WAIT_MS)
    expect(refusal).to_contain_text("Only visible to you")
    expect(message.get_by_role("button", name="Pay out")).to_be_visible()
    assert stack.execution(execution_id(stack, "refund-approval"))["status"] == "WAITING_FOR_INPUT"

    act_as(page, "U0ALICE")  # the refusal was bob's alone
    expect(refusal).to_have_count(0, timeout=WAIT_MS)


def test_an_invalid_answer_is_shown_inline_in_the_modal_then_a_valid_one_decides(
        page: Any, stack: Stack):
    from playwright.sync_api import expect

    message = review(page, 'Phishing report: "Your invoice is overdue"')
    message.get_by_role("button", name="Approve").click()
    modal = page.get_by_role("dialog")
    expect(modal).to_be_visible(timeout=WAIT_MS)
    expect(modal.get_by_role("radio", name="Yes")).to_be_checked()  # Approve pre-set it
    modal.get_by_label("phishing").check()
    modal.get_by_label("Incident ticket").fill("tomorrow")

    modal.get_by_role("button", name="Submit").click()

    error = modal.get_by_role("alert").filter(has_text="expected format")
    expect(error).to_be_visible(timeout=WAIT_MS)
    assert stack.execution(execution_id(stack, "phishing-triage"))["status"] == "WAITING_FOR_INPUT"

    modal.get_by_label("Incident ticket").fill("INC-20431")
    modal.get_by_role("button", name="Submit").click()

    expect(modal).to_have_count(0, timeout=WAIT_MS)
    expect(message).to_contain_text("Approved by @alice", timeout=WAIT_MS)
    expect(message).to_contain_text("INC-20431")
    wait_for_status(stack, execution_id(stack, "phishing-triage"), "COMPLETED")


def test_the_modal_offers_each_kind_of_field_the_schema_asks_for(page: Any):
    from playwright.sync_api import expect

    act_as(page, "U0DAVE")
    message = review(page, "Deploy checkout 2.14.0 to production?")
    message.get_by_role("button", name="Respond…").click()
    modal = page.get_by_role("dialog")
    expect(modal).to_be_visible(timeout=WAIT_MS)
    expect(modal.get_by_role("radio", name="Yes")).not_to_be_checked()
    expect(modal.locator("input[type=datetime-local]")).to_have_count(1)
    expect(modal.get_by_role("checkbox", name="Yes")).to_have_count(1)
    expect(modal.get_by_label("Deploy at")).to_be_visible()
    expect(modal).to_contain_text("Leave empty to deploy now")

    modal.get_by_role("button", name="Submit").click()  # the decision is required
    expect(modal.get_by_role("alert").filter(has_text="required")).to_be_visible()

    modal.get_by_role("button", name="Cancel").click()
    expect(modal).to_have_count(0, timeout=WAIT_MS)


def test_event_data_renders_as_text_never_as_markup(page: Any, stack: Stack):
    from playwright.sync_api import expect

    hostile = Seed(ISOLATE_HOST, {"alerts": [{"host": {
        "name": "db-<img src=x onerror=alert(1)> <!channel> <script>alert(2)</script> & "
                "<https://evil.test|click>"}}]}, None)
    stack.run(hostile)
    message = review(page, "Alert on db-<img src=x onerror=alert(1)>")
    expect(message).to_contain_text("<!channel> <script>alert(2)</script> & ")
    expect(message).to_contain_text("evil.test|click")
    assert message.locator("img, script, a").count() == 0
    assert page.locator("#messages img, #messages script").count() == 0


def test_slash_command_and_app_home_show_what_the_app_answers(page: Any):
    from playwright.sync_api import expect

    notes = page.locator("article.message.ephemeral")
    page.locator("body[data-user]").wait_for(timeout=WAIT_MS)  # drawn, as a person would see it
    before = notes.count()
    page.get_by_label("Message or slash command").fill("/approvals")
    page.get_by_label("Message or slash command").press("Enter")
    expect(notes).to_have_count(before + 1, timeout=WAIT_MS)

    page.get_by_role("button", name="Signoff", exact=True).click()
    home = page.locator("#home")
    expect(home).to_be_visible()
    # The app publishes a Home tab, or the sandbox says it did not (and what it answered).
    expect(home.locator(".blocks, .empty")).not_to_have_count(0, timeout=WAIT_MS)


GALLERY_MRKDWN = ("*bold* _italic_ ~strike~ `code` <https://example.com/x?a=1&amp;b=2|a link> "
                  "<javascript:alert(1)|not a link> <@U0BOB> <!subteam^S0ONCALL> <#C0REVIEWS> "
                  "<!date^1700000000^{date_num} {time}|2023-11-14 22:13 UTC> &lt;tag&gt; &amp;\n"
                  "> quoted\n```\ncode block <b>\n```")

EVERY_FIELD = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean", "title": "Go ahead"},
        "urgent": {"type": "boolean", "title": "Urgent"},
        "summary": {"type": "string", "title": "Summary"},
        "notes": {"type": "string", "title": "Notes", "maxLength": 500},
        "contact": {"type": "string", "format": "email", "title": "Contact"},
        "link": {"type": "string", "format": "uri", "title": "Link"},
        "count": {"type": "integer", "title": "Count", "minimum": 1, "maximum": 5},
        "day": {"type": "string", "format": "date", "title": "Day"},
        "at": {"type": "string", "format": "time", "title": "At"},
        "when": {"type": "string", "format": "date-time", "title": "When"},
        "severity": {"type": "string", "enum": ["low", "medium", "high"], "title": "Severity"},
        "region": {"type": "string", "title": "Region",
                   "enum": ["eu-west", "eu-north", "us-east", "us-west", "ap-south", "ap-east"]},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "title": "Tags"},
        "teams": {"type": "array", "title": "Teams",
                  "items": {"enum": [f"team-{n}" for n in range(12)]}},
        "owner": {"type": "string", "x-slack-input": "users_select", "title": "Owner"},
        "watchers": {"type": "array", "x-slack-input": "users_select", "title": "Watchers"},
        "room": {"type": "string", "x-slack-input": "conversations_select", "title": "Room"},
        "rooms": {"type": "array", "x-slack-input": "conversations_select", "title": "Rooms"},
    },
    "required": ["approved"],
}


def test_every_kind_of_block_and_form_field_is_drawn(page: Any, stack: Stack):
    from datetime import UTC, datetime

    from playwright.sync_api import expect

    from bot.forms import modal_for
    from engine.notify import ReviewRequest

    workspace = stack.emulator.workspace  # type: ignore[union-attr]
    channel, posted = workspace.post_message("C0REVIEWS", {"text": "gallery", "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "Gallery <b>"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": GALLERY_MRKDWN},
         "fields": [{"type": "mrkdwn", "text": "*Field:* one"}]},
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "plain_text", "text": "plain *not bold*"}]},
    ]})
    workspace.post_message(channel, {"text": "a reply in the thread"}, thread_ts=posted["ts"])
    message = review(page, "Gallery <b>")
    expect(message.locator("strong")).to_have_text(["bold", "Field:"])
    expect(message.locator("em")).to_have_text("italic")
    expect(message.locator("s")).to_have_text("strike")
    expect(message.locator("code")).to_have_text("code")
    link = message.get_by_role("link", name="a link")
    expect(link).to_have_attribute("href", "https://example.com/x?a=1&b=2")
    expect(message.get_by_role("link")).to_have_count(1)  # javascript: is shown as text
    expect(message).to_contain_text("not a link")
    expect(message.locator(".mention")).to_have_text(["@bob", "@oncall", "#reviews"])
    expect(message.locator("time.date")).to_have_text("2023-11-14 23:13")  # alice: Paris
    expect(message).to_contain_text("<tag> &")
    expect(message.locator("blockquote")).to_have_text("quoted")
    expect(message.locator("pre.code-block")).to_have_text("code block <b>")
    expect(message).to_contain_text("plain *not bold*")
    message.get_by_role("button", name="1 reply").click()
    expect(page.locator("#side")).to_contain_text("a reply in the thread")

    review_request = ReviewRequest("no-such-run", "gallery", "review", "waitForInput",
                                   "Fill in everything", "0" * 64, EVERY_FIELD,
                                   datetime.now(UTC))
    workspace.views.open("U0ALICE", modal_for(review_request, preset_decision=None))
    modal = page.get_by_role("dialog")
    expect(modal).to_be_visible(timeout=WAIT_MS)

    def field(name: str) -> Any:
        return modal.locator(f".block-input[data-block-id={name}]")

    expect(field("notes").locator("textarea")).to_have_count(1)
    for name in ("summary", "contact", "link", "count"):
        expect(field(name).locator("input[type=text]")).to_have_count(1)
    for name, kind in (("day", "date"), ("at", "time"), ("when", "datetime-local")):
        expect(field(name).locator(f"input[type={kind}]")).to_have_count(1)
    expect(field("severity").get_by_role("radio")).to_have_count(3)
    expect(field("tags").get_by_role("checkbox")).to_have_count(3)
    expect(field("region").locator("select:not([multiple]) option")).to_have_count(7)
    expect(field("teams").locator("select[multiple] option")).to_have_count(12)
    expect(field("owner").locator("select:not([multiple])")).to_contain_text("bob (Bob Chen)")
    expect(field("watchers").locator("select[multiple]")).to_have_count(1)
    expect(field("room").locator("select:not([multiple])")).to_contain_text("#reviews")
    expect(field("rooms").locator("select[multiple]")).to_have_count(1)

    field("approved").get_by_label("Yes").check()
    field("urgent").get_by_label("Yes").check()
    field("summary").locator("input").fill("all of it")
    field("notes").locator("textarea").fill("line one\nline two")
    field("contact").locator("input").fill("oncall@signoff.test")
    field("link").locator("input").fill("https://example.com")
    field("count").locator("input").fill("3")
    field("day").locator("input").fill("2026-12-01")
    field("at").locator("input").fill("14:30")
    field("when").locator("input").fill("2026-12-01T14:30")
    field("severity").get_by_label("high").check()
    field("region").locator("select").select_option(label="us-east")
    field("tags").get_by_label("b").check()
    field("teams").locator("select").select_option(["\"team-1\"", "\"team-3\""])
    field("owner").locator("select").select_option("U0BOB")
    field("watchers").locator("select").select_option(["U0CAROL", "U0DAVE"])
    field("room").locator("select").select_option("C0REVIEWS")
    field("rooms").locator("select").select_option(["C0REVIEWS"])
    modal.get_by_role("button", name="Submit").click()

    # The app knows no such run: it answers by turning the modal into a notice, which
    # means every value above reached it in a shape Slack's client would have sent.
    expect(modal).not_to_contain_text("Go ahead", timeout=WAIT_MS)
    expect(modal.locator(".modal-banner")).to_be_hidden()
    modal.locator(".modal-x").click()
    expect(modal).to_have_count(0, timeout=WAIT_MS)
