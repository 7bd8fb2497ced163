"""Markdown escaping for what a reviewer reads: a value made literal, wherever it lands.

A human step's message is Markdown the workflow's author wrote, with values from the
event interpolated (:mod:`engine.definition.templates` renders it). Outside code, a
value's Markdown syntax is backslash-escaped (:func:`escape_markdown`); inside a code
span or fence, where a backslash is literal, a backtick (or a fence's tilde) becomes a
look-alike instead, and :class:`CodeTracker` says which of the two a value lands in,
reading the output once as it grows. Pure string logic: no Liquid, no I/O.
"""

from __future__ import annotations

import re
from typing import Any


class TrustedMarkdown(str):
    """A value the author let through with ``| markdown``: written as it is."""

    __slots__ = ()


# CommonMark lets a backslash make any ASCII punctuation character literal. Escaped
# wherever they are: what starts inline syntax (code, emphasis, links and images, autolinks
# and HTML, entities, strikethrough, table cells, escapes), except an underscore between two
# letters or digits, which never emphasizes (`svc_backup` stays readable). Escaped at the
# start of a line only (a value may begin one): what starts a block (headings, lists,
# setext underlines, rules); fences and quotes start with characters escaped everywhere.
_MARKDOWN_INLINE = re.compile(r"[\\`*\[\]<>&~|]|(?<![^\W_])_|_(?![^\W_])")
_MARKDOWN_LINE_START = re.compile(r"(?:^|(?<=\r))([ \t]*)(?:([#+=-])|(\d{1,9})([.)]))",
                                   re.MULTILINE)
_CODE_MARK = re.compile(r"\\+|`+")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
# Inside code a backslash is literal, so a backtick is swapped for a look-alike instead.
_BACKTICK_LOOKALIKE = "\u02cb"  # ˋ, as bot/mrkdwn.py shows a backtick inside code
_TILDE_LOOKALIKE = "\u223c"  # ∼


def escape_markdown(text: str) -> str:
    """``text`` made literal Markdown: what could start Markdown syntax backslash-escaped."""
    text = _MARKDOWN_INLINE.sub(r"\\\g<0>", text)
    return _MARKDOWN_LINE_START.sub(_escape_line_start, text)


def _escape_line_start(match: re.Match[str]) -> str:
    indent, mark, number, delimiter = match.groups()
    if mark is not None:
        return f"{indent}\\{mark}"
    return f"{indent}{number}\\{delimiter}"


class CodeTracker:
    """Whether the Markdown written so far to one buffer leaves the next output inside code.

    It reads each written character once (a message looping over a large event costs
    linear time): fences open and close on whole lines, a code span opens and closes on
    backtick runs of one length within the current line (outside a span, a backslash
    makes the backtick after it literal). A span left open at a line's end may go on in
    the next line or not, depending on the blocks around it: until the next blank line,
    no output counts as inside a span. An output written as inside code is trusted only
    if that code turns out to close (:meth:`all_closed`): an unclosed backtick is
    literal text, and the value after it would be Markdown.
    """

    __slots__ = ("closed", "fence", "fence_id", "line", "opened", "pos", "run", "slashes",
                 "span", "span_id", "tangled", "written_in")

    # A fence line is short; a longer line is kept only this far (it cannot close a fence).
    _LINE_KEPT = 256

    def __init__(self) -> None:
        self.pos = 0  # how much of the buffer was read
        self.fence: str | None = None  # the open fence's run, e.g. "```"
        self.line = ""  # the current line so far (its first _LINE_KEPT characters)
        self.span: int | None = None  # the open code span's backtick-run length
        self.run = 0  # the backtick run the text read so far ends with
        self.slashes = 0  # the backslash run the text read so far ends with
        self.opened = 0  # how many spans and fences opened: each one's id
        self.span_id = self.fence_id = 0
        self.closed: set[int] = set()  # the ids of those that closed
        self.written_in: set[int] = set()  # the ids of those an output was written in
        self.tangled = False  # a span was open at a line's end since the last blank line

    def context(self, buffer: Any) -> str | None:
        """"```" or "~~~" (in a fenced block), "`" (in a code span), or None."""
        self.read(buffer)
        if self.fence is not None:
            self.written_in.add(self.fence_id)
            return self.fence[0] * 3
        if self.span is not None and not self.tangled:
            self.written_in.add(self.span_id)
            return "`"
        return None

    def all_closed(self, buffer: Any) -> bool:
        """Whether every span or fence an output was written in closed (``buffer`` is whole)."""
        self.read(buffer)
        self._end_line()
        return self.written_in <= self.closed

    def read(self, buffer: Any) -> None:
        end = buffer.tell()
        if end > self.pos:
            buffer.seek(self.pos)
            text = buffer.read(end - self.pos)
            buffer.seek(end)
            self.pos = end
            for index, piece in enumerate(text.split("\n")):
                if index:
                    self._end_line()
                self._scan(piece)
        self._end_run()

    def _scan(self, piece: str) -> None:
        if len(self.line) < self._LINE_KEPT:
            self.line += piece[: self._LINE_KEPT - len(self.line)]
        at = 0
        for match in _CODE_MARK.finditer(piece):
            if match.start() > at:
                self._end_run()
                self.slashes = 0
            run = match.group()
            if run[0] == "\\":
                self._end_run()
                self.slashes += len(run)
            else:
                if not self.run and self.span is None and self.slashes % 2:
                    run = run[1:]  # an escaped backtick: the run starts after it
                self.slashes = 0
                self.run += len(run)
            at = match.end()
        if at < len(piece):
            self._end_run()
            self.slashes = 0

    def _end_run(self) -> None:
        if not self.run:
            return
        if self.span is None:
            self.span, self.opened = self.run, self.opened + 1
            self.span_id = self.opened
        elif self.run == self.span:
            self.closed.add(self.span_id)
            self.span = None
        self.run = 0

    def _end_line(self) -> None:
        self._end_run()
        match = _FENCE.match(self.line)
        if match is not None:
            run, rest = match.group(1), self.line[match.end():]
            if self.fence is None:
                if not (run[0] == "`" and "`" in rest):  # else it is no fence
                    self.fence, self.opened = run, self.opened + 1
                    self.fence_id = self.opened
            elif (run[0] == self.fence[0] and len(run) >= len(self.fence)
                  and len(self.line) < self._LINE_KEPT and not rest.strip()):
                self.closed.add(self.fence_id)
                self.fence = None
        if self.span is not None:
            self.tangled = True
        elif not self.line.strip():
            self.tangled = False
        self.line = ""
        self.span = None
        self.slashes = 0


def escaped_for(text: str, code: str | None) -> str:
    """``text`` made literal where it lands: in code (``code``: "`", "```" or "~~~") or
    not (None)."""
    if code is None:
        return escape_markdown(text)
    text = text.replace("`", _BACKTICK_LOOKALIKE)
    if code == "~~~":
        return text.replace("~", _TILDE_LOOKALIKE)
    if code == "`":
        # A blank line would end the span and let the rest be read as Markdown.
        return " ".join(text.splitlines())
    return text
