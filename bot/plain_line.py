"""One line of Markdown as plain text without a Markdown parser, when the line is simple.

A listing's decision lines (:func:`bot.forms.decision_line`) are the first line of each
review's message as plain text. markdown-it turns a line into plain text in about 100 us;
a person's first ``/approvals`` has ten of them to convert. Most first lines are a
heading or a sentence with a code span or two (``## Isolate `web-01`?``), which this
module reads in a few microseconds. Anything else (emphasis, links, entities, lists,
quotes, a backslash before a letter, a tab) returns None, and the caller asks markdown-it
as before. ``tests/bot/test_plain_line.py`` checks the two agree on every line generated
from Markdown's special characters.
"""

from __future__ import annotations

import re

# Characters that may start or be markup in a line; text holding none of them (outside
# code spans, and but for backslash escapes) is its own plain text.
_MARKUP = frozenset("\\`*_~[]!<>&#|")
_HEADING = re.compile(r"(#{1,6})(?: +|$)")
_ORDERED = re.compile(r"[0-9]{1,9}[.)]")
_BLOCK_START = frozenset("-+*=>_`~#<[!\\|:")  # list, quote, fence, break, html... (or unsure)
_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def plain_line(line: str) -> str | None:
    """``line`` (one line, no line break) as :func:`bot.mrkdwn.markdown_to_plain` gives it,
    its whitespace collapsed; None when the line needs the Markdown parser."""
    if any(c < " " or c == "\x7f" for c in line):
        return None  # tabs, line breaks, NUL and other controls: the parser's
    text = line.lstrip(" ")
    if len(line) - len(text) > 3:
        return None  # an indented code block
    heading = _HEADING.match(text)
    if heading is not None:
        text = text[heading.end():]
    elif text and (text[0] in _BLOCK_START or _ORDERED.match(text)):
        return None
    out: list[str] = []
    n, size = 0, len(text)
    while n < size:
        c = text[n]
        if c not in _MARKUP:
            out.append(c)
            n += 1
        elif c == "\\":
            if n + 1 < size and text[n + 1] in _PUNCTUATION:
                out.append(text[n + 1])
                n += 2
            else:
                return None
        elif c == "`":
            end = text.find("`", n + 1)
            if end <= n + 1 or text.startswith("`", end + 1):
                return None  # no closing backtick, an empty span or a longer run
            code = text[n + 1:end]
            if code.startswith(" ") and code.endswith(" ") and code.strip(" "):
                code = code[1:-1]
            out.append(code)
            n = end + 1
        else:
            return None
    return " ".join("".join(out).split())
