"""Markdown to Slack mrkdwn, and escaping of everything that did not come from us."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.mrkdwn import (
    escape_mrkdwn,
    markdown_to_mrkdwn,
    markdown_to_mrkdwn_chunks,
    markdown_to_plain,
    mention_approver,
    mention_conversation,
    mention_user,
    safe_cut,
    slack_date,
    truncate_mrkdwn,
    truncate_plain,
)
from engine.definition.templates import MarkdownTemplate, escape_markdown, render_value

ANGLE_MARKUP = re.compile(r"<([^<>]*)>")


def assert_only_safe_links(mrkdwn: str) -> None:
    """Every ``<…>`` left in the output is a link we built to http(s) or mailto."""
    for markup in ANGLE_MARKUP.findall(mrkdwn):
        assert markup.startswith(("http://", "https://", "mailto:")), mrkdwn
    stripped = ANGLE_MARKUP.sub("", mrkdwn)
    assert "<" not in stripped and ">" not in stripped.replace("\n> ", "\n").removeprefix("> ")


# -- escaping --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "escaped"), [
    ("<!channel>", "&lt;!channel&gt;"),
    ("<@U123>", "&lt;@U123&gt;"),
    ("<https://evil|click>", "&lt;https://evil|click&gt;"),
    ("R&D", "R&amp;D"),
    ("&amp;", "&amp;amp;"),
    ("<!subteam^S1>", "&lt;!subteam^S1&gt;"),
])
def test_escape_makes_slack_markup_inert(raw: str, escaped: str) -> None:
    assert escape_mrkdwn(raw) == escaped


@pytest.mark.parametrize("evil", [
    "<!channel>", "<!here>", "<!everyone>", "<@U123>", "<#C123>", "<!subteam^S1>",
    "<!date^1^{date}|x>", "<https://evil|click>", "[click](<https://evil|x>)",
    "`<!channel>`", "```\n<!channel>\n```", "**<!here>**", "[<!here>](https://ok.example)",
    "# <@U1> heading", "| a |\n|---|\n| <!channel> |", "> <!channel>", "- <@U1>",
    "<b>html</b> <!-- comment --> <!DOCTYPE x>", "[x](slack://user?id=U1)",
    "[x](javascript:alert(1))", "![<!here>](https://img.example/a.png)",
])
def test_no_mention_or_markup_survives_conversion(evil: str) -> None:
    out = markdown_to_mrkdwn(f"Before {evil} after\n\n{evil}")
    assert "<!" not in out and "<@" not in out and "<#" not in out
    assert_only_safe_links(out)


def test_bare_angle_autolink_is_plain_text() -> None:
    out = markdown_to_mrkdwn("see <https://evil|click>")
    assert out == "see https://evil|click"


def test_ampersand_is_escaped_once() -> None:
    assert markdown_to_mrkdwn("Tom & Jerry &amp; co") == "Tom &amp; Jerry &amp; co"


@given(st.text(max_size=300))
def test_any_text_converts_without_raw_markup(text: str) -> None:
    out = markdown_to_mrkdwn(text)
    assert "<!" not in out and "<@" not in out and "<#" not in out
    assert_only_safe_links(out)


@given(st.text(max_size=80), st.text(max_size=80))
def test_links_with_any_label_and_url_stay_links(label: str, url: str) -> None:
    out = markdown_to_mrkdwn(f"[{label}](https://example.com/{url})")
    assert "<!" not in out and "<@" not in out
    assert_only_safe_links(out)


# -- event values, escaped for Markdown by the engine -----------------------------------------

_LINE = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs"))
                | st.sampled_from(" #+=-.)1`*_[]()<>&~|!:\\"), max_size=80).map(str.strip)


@given(st.lists(_LINE.filter(bool), min_size=1, max_size=4))
def test_an_escaped_value_reaches_slack_as_itself(lines: list[str]) -> None:
    # The engine backslash-escapes Markdown, this converter escapes Slack's & < >: the
    # value's own text is all a reviewer sees, whatever markup it carries.
    value = "\n".join(lines)
    assert markdown_to_mrkdwn(escape_markdown(value)) == escape_mrkdwn(value)


_AROUND = st.text(alphabet="`\\ ~x-#>*[]()\n|1.=_<!", max_size=20)
_VALUES = st.sampled_from(["[x](https://evil.example)", "`[x](https://evil.example)`", "``",
                           "\\[x](https://evil.example)", "\\", "`", "\n```\n<https://evil.example>"])


@given(_AROUND, _VALUES, _AROUND, _VALUES, _AROUND)
def test_no_template_around_values_lets_their_links_through(
        before: str, a: str, between: str, b: str, after: str) -> None:
    # Whatever code spans and fences the author's text opens (or leaves open), the engine
    # escapes a value unless it is sure the value sits inside code that closes.
    template = MarkdownTemplate(f"{before}{{{{ a }}}}{between}{{{{ b }}}}{after}")
    out = markdown_to_mrkdwn(render_value(template, {"a": a, "b": b}))
    assert "<https://evil" not in out


@pytest.mark.parametrize("value", [
    "[https://runbooks.corp.example](https://evil.example/login)",
    "## ✅ Pre-approved", "Pre-approved\n===", "<https://evil.example|https://ok.example>",
    "<!channel>", "<@U0ALICE>", "R&D &amp; <b>html</b>", "**bold** _em_ ~~gone~~ `code`",
    "> quoted", "- item", "1. item", "| a | b |\n|---|---|", "![img](https://evil.example/x.png)",
])
def test_markup_in_an_escaped_value_stays_text(value: str) -> None:
    out = markdown_to_mrkdwn(f"**Field:** {escape_markdown(value)}")
    assert out == f"*Field:* {escape_mrkdwn(value)}"
    assert ANGLE_MARKUP.search(out) is None


# -- conversion of each construct ------------------------------------------------------------


@pytest.mark.parametrize(("md", "expected"), [
    ("# Title", "*Title*"),
    ("### Deep **bold** title", "*Deep bold title*"),
    ("**bold**", "*bold*"),
    ("__bold__", "*bold*"),
    ("*em* and _em_", "_em_ and _em_"),
    ("~~gone~~", "~gone~"),
    ("`code <x>`", "`code &lt;x&gt;`"),
    ("a  \nb", "a\nb"),
    ("a\nb", "a\nb"),
    ("---", "────────────────────────"),
    ("[docs](https://example.com/a?b=1&c=2)", "<https://example.com/a?b=1&amp;c=2|docs>"),
    ("[mail](mailto:a@example.com)", "<mailto:a@example.com|mail>"),
    ("[pipe](https://example.com/a|b>)", "<https://example.com/a%7Cb%3E|pipe>"),
    ("[rel](/docs/page)", "rel"),
    ("![chart](https://img.example/c.png)", "<https://img.example/c.png|chart>"),
    ("**bold *and em***", "*bold _and em_*"),
    ("** spaced **", "** spaced **"),
])
def test_inline_and_simple_blocks(md: str, expected: str) -> None:
    assert markdown_to_mrkdwn(md) == expected


def test_bullet_and_nested_lists_are_indented() -> None:
    md = "- one\n- two\n  - two.a\n    - deep\n- three"
    assert markdown_to_mrkdwn(md) == (
        "• one\n• two\n    ◦ two.a\n        ▪ deep\n• three")


def test_numbered_lists_keep_their_numbers() -> None:
    md = "3. three\n4. four\n   1. inner"
    assert markdown_to_mrkdwn(md) == "3. three\n4. four\n    1. inner"


def test_list_item_with_two_lines_is_aligned() -> None:
    assert markdown_to_mrkdwn("- first\n  continued") == "• first\n  continued"


def test_blockquote_prefixes_each_line() -> None:
    assert markdown_to_mrkdwn("> quoted **text**\n> more") == "> quoted *text*\n> more"


def test_fenced_code_is_escaped_and_language_dropped() -> None:
    md = "```python\nif a < b && c > d:\n    pass\n```"
    assert markdown_to_mrkdwn(md) == "```\nif a &lt; b &amp;&amp; c &gt; d:\n    pass\n```"


def test_indented_code_block() -> None:
    assert markdown_to_mrkdwn("    x = 1") == "```\nx = 1\n```"


def test_table_renders_as_aligned_code_block() -> None:
    md = "| host | score |\n|---|--:|\n| web-01 | 0.97 |\n| db <1> | **1** |"
    assert markdown_to_mrkdwn(md) == (
        "```\n"
        "host   | score\n"
        "-------+------\n"
        "web-01 | 0.97\n"
        "db &lt;1&gt; | 1\n"
        "```")


def test_chunks_are_top_level_blocks() -> None:
    md = "# Head\n\npara one\n\n- a\n- b\n\n```\ncode\n```"
    assert markdown_to_mrkdwn_chunks(md) == ["*Head*", "para one", "• a\n• b", "```\ncode\n```"]


def test_plain_text_for_headers() -> None:
    assert markdown_to_plain("## Alert on `web-01` **now** [docs](https://x.example)") == (
        "Alert on web-01 now docs")
    assert markdown_to_plain("---") == ""


# -- our own markup --------------------------------------------------------------------------


def test_mentions_only_for_real_ids() -> None:
    assert mention_user("U012AB3CD") == "<@U012AB3CD>"
    assert mention_user("W012AB3CD") == "<@W012AB3CD>"
    assert mention_user("<!channel>") == "&lt;!channel&gt;"
    assert mention_user("alice@example.com") == "alice@example.com"
    assert mention_approver("S0614TZR7") == "<!subteam^S0614TZR7>"
    assert mention_approver("U1") == "<@U1>"
    assert mention_approver("S1|x>") == "S1|x&gt;"
    assert mention_conversation("C024BE91L") == "<#C024BE91L>"
    assert mention_conversation("general") == "general"


def test_slack_date_has_token_and_utc_fallback() -> None:
    at = datetime(2026, 11, 22, 14, 2, tzinfo=UTC)
    assert slack_date(at) == (
        f"<!date^{int(at.timestamp())}^{{date_short_pretty}} at {{time}}|2026-11-22 14:02 UTC>")
    paris = datetime(2026, 11, 22, 15, 2, tzinfo=timezone(timedelta(hours=1)))
    assert slack_date(paris).endswith("|2026-11-22 14:02 UTC>")
    naive = datetime(2026, 11, 22, 14, 2)
    assert slack_date(naive) == slack_date(at)


def test_truncation_never_breaks_entities_or_links() -> None:
    text = "x" * 95 + "&amp;" + "y" * 10
    cut = safe_cut(text, 98)
    assert text[:cut].endswith("x")
    linked = "a " * 40 + "<https://example.com/long|label> tail"
    short = truncate_mrkdwn(linked, 90)
    assert len(short) <= 90 and short.endswith("…") and "<https" not in short
    assert truncate_plain("abcdef", 4) == "abc…"
    assert truncate_plain("abc", 4) == "abc"
