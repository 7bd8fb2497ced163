"""bot.plain_line reads a simple line of Markdown as markdown-it does, or declines.

Whenever the quick reader answers, its answer is the parser's (``markdown_to_plain_parsed``;
``markdown_to_plain`` asks the quick reader first),
on lines generated from Markdown's special characters; the lines it must read (a
heading with code spans, as review messages start) it does read.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.mrkdwn import markdown_to_plain, markdown_to_plain_parsed
from bot.plain_line import plain_line

# Markdown's special characters, spaces, letters, digits and a few others.
ALPHABET = st.sampled_from(list("\\`*_~[]!<>&#|-+=.:)(0123456789 aZé\u00a0\t\"'/;?{}^$%@,"))
PIECES = st.sampled_from(["## ", "# ", "    ", "1. ", "- ", "`", "``", "\\`", "\\*", "&amp;",
                          "<https://x.test>", "[a](https://x.test)", "**b**", "~~s~~", "###"])
LINES = st.lists(st.one_of(ALPHABET, PIECES), max_size=24).map("".join)


@settings(max_examples=3000, deadline=None)
@given(LINES)
@example("## Isolate `web-00001`?")
@example("` a `b")
@example("``")
@example("\\``x`")
def test_whenever_it_answers_it_answers_as_the_parser(line: str):
    quick = plain_line(line)
    if quick is not None:
        assert quick == markdown_to_plain_parsed(line), line


def test_it_reads_what_review_messages_start_with():
    lines = {"## Isolate `web-00001`?": "Isolate web-00001?",
             "Deploy `api` to prod (v2.3.1)?": "Deploy api to prod (v2.3.1)?",
             "# Refund order 1234\\-5": "Refund order 1234-5",
             "   ### Approve the ` change `?": "Approve the change?",
             "Plain words, nothing else": "Plain words, nothing else"}
    for line, plain in lines.items():
        assert plain_line(line) == plain == markdown_to_plain(line) == markdown_to_plain_parsed(line)


def test_it_declines_markup_it_does_not_read():
    for line in ["**bold**", "_x_", "[a](https://x.test)", "<https://x.test>", "a &amp; b",
                 "- item", "1. item", "> quote", "    code", "``double``", "`open",
                 "a \\q", "# closed #", "a\tb", "~~s~~"]:
        assert plain_line(line) is None, line


@settings(max_examples=1000, deadline=None)
@given(LINES, st.sampled_from(["", "\n", "\r\n"]))
def test_markdown_to_plain_of_a_line_with_or_without_its_break_is_the_parsers(line: str,
                                                                            end: str):
    # markdown_to_plain reads simple lines quickly (a review's decision line, as it is
    # posted and rewritten): whichever way, the parser's answer.
    assert markdown_to_plain(line + end) == markdown_to_plain_parsed(line + end), line
