"""What a KQL syntax error says, and the column it points at.

The parser (:mod:`engine.definition.kql_parser`) remembers the furthest column it
reached and what it expected there, as a PEG parser reports a failure; this module words
that as one :class:`~engine.errors.ConditionError`, the likeliest cause first: a string
left open, nesting past the limit, a '(' left open, a backslash that escapes nothing,
else what was expected there and what was found.
"""

from __future__ import annotations

from collections.abc import Collection

from engine.errors import ConditionError


def syntax_error(text: str, farthest: int, expected: Collection[str], *,
                 keyword: str | None, words_end: int, nested_too_deep_at: int | None,
                 max_depth: int) -> ConditionError:
    """The error for ``text``, which the parser could read up to ``farthest`` and no
    further; ``keyword`` is the keyword standing there, if one is, and ``words_end``
    where the last word ends (an error at the end points there, not at trailing spaces)."""
    quote = _open_quote(text, farthest)
    if quote is not None:
        return ConditionError(f"unterminated string starting at column {quote + 1}",
                              condition=text, column=quote + 1)
    at_end = farthest >= len(text)
    at = words_end if at_end else farthest
    found = "the end" if at_end else repr(text[at])
    if not at_end and keyword is not None:
        found = f"the keyword {keyword!r} (quote a value that holds it)"
    if nested_too_deep_at is not None:
        return ConditionError(f"nested more than {max_depth} deep at column "
                              f"{nested_too_deep_at + 1}", condition=text,
                              column=nested_too_deep_at + 1)
    if at_end and "')'" in expected:
        opened = _open_parenthesis(text)
        if opened is not None:
            return ConditionError(f"unclosed '(' at column {opened + 1}", condition=text,
                                  column=opened + 1)
    if not at_end and text[at] == "\\":
        message = (f"'\\' at column {at + 1} escapes only a special character "
                   '(\\():<>"*{}), or, and, not, \\t, \\r, \\n or \\uXXXX; '
                   "quote the value to keep a backslash")
        return ConditionError(message, condition=text, column=at + 1)
    described = sorted(expected) or ["something else"]
    listed = described[0] if len(described) == 1 else ", ".join(described[:-1]) + \
        " or " + described[-1]
    return ConditionError(f"expected {listed} at column {at + 1}, found {found}",
                          condition=text, column=at + 1)


def unmatched_parenthesis(text: str, at: int) -> ConditionError:
    """A ')' at ``at`` that closes nothing."""
    return ConditionError(f"unmatched ')' at column {at + 1}", condition=text, column=at + 1)


def nested_too_deeply(text: str, max_depth: int) -> ConditionError:
    """Nesting that ran out of Python's stack before the parser's own limit was reached."""
    return ConditionError(f"nested too deeply (at most {max_depth})", condition=text, column=1)


def _open_quote(text: str, at: int) -> int | None:
    """Where the string still open at ``at`` (the end of the text) starts, if one is."""
    if at < len(text):
        return None
    start: int | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if start is None:
            if char == "\\":
                i += 2
                continue
            if char == '"':
                start = i
        elif char == "\\" and i + 1 < len(text) and text[i + 1] in '\\"':
            i += 2
            continue
        elif char == '"':
            start = None
        i += 1
    return start


def _open_parenthesis(text: str) -> int | None:
    """Where the innermost '(' left open at the end of ``text`` is, outside strings."""
    opened: list[int] = []
    quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            opened.append(i)
        elif not quoted and char == ")" and opened:
            opened.pop()
        i += 1
    return opened[-1] if opened else None
