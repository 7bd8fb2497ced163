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
_MARKUP_AT = re.compile(r"[\\`*_~\[\]!<>&#|]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # tabs, line breaks, NUL and other controls
_HEADING = re.compile(r"(#{1,6})(?: +|$)")
_ORDERED = re.compile(r"[0-9]{1,9}[.)]")
_BLOCK_START = frozenset("-+*=>_`~#<[!\\|:")  # list, quote, fence, break, html... (or unsure)
_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def plain_line(line: str) -> str | None:
    """``line`` (one line, no line break) as :func:`bot.mrkdwn.markdown_to_plain` gives it,
    its whitespace collapsed; None when the line needs the Markdown parser."""
    if _CONTROL.search(line) is not None:
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
        found = _MARKUP_AT.search(text, n)  # the next character that may be markup
        if found is None:
            out.append(text[n:])
            break
        at = found.start()
        out.append(text[n:at])
        c = text[at]
        if c == "\\":
            if at + 1 < size and text[at + 1] in _PUNCTUATION:
                out.append(text[at + 1])
                n = at + 2
            else:
                return None
        elif c == "`":
            end = text.find("`", at + 1)
            if end <= at + 1 or text.startswith("`", end + 1):
                return None  # no closing backtick, an empty span or a longer run
            code = text[at + 1:end]
            if code.startswith(" ") and code.endswith(" ") and code.strip(" "):
                code = code[1:-1]
            out.append(code)
            n = end + 1
        else:
            return None
    return " ".join("".join(out).split())
