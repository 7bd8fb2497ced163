"""Slack mrkdwn: escaping, Markdown conversion, and the few markup tokens we build ourselves.

Review messages are Markdown with event values already interpolated. Escaping is
split by syntax, one layer each: the engine backslash-escapes Markdown in every value
a human step's message interpolates (engine/definition/templates.py, unless the author
wrote ``| markdown``), so a value reaches this converter as plain text; the converter
treats all text as untrusted for Slack, author's and event's alike: it escapes ``&``,
``<`` and ``>`` in everything it emits (text, code, link labels, table cells) and writes
Slack's angle-bracket syntax only for links it builds itself, from real Markdown links
to http, https or mailto URLs. Mentions and dates come only from :func:`mention_user`,
:func:`mention_approver`, :func:`mention_conversation` and :func:`slack_date`, called
with ids and datetimes, never with message text. Slack has no escape for ``*``, ``_``,
``~`` and the backtick, so literal text holding them may still be styled (never linked).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache, lru_cache

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.plain_line import plain_line

_USER_ID = re.compile(r"[UW][A-Z0-9]+")
_GROUP_ID = re.compile(r"S[A-Z0-9]+")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]+")
_LINK_SCHEMES = ("http://", "https://", "mailto:")

BULLETS = ("•", "◦", "▪")
INDENT = "    "
RULE = "─" * 24
ELLIPSIS = "…"

DATE_AT_TIME = "{date_short_pretty} at {time}"
DATE_TIME = "{date_short_pretty} {time}"


def escape_mrkdwn(text: str) -> str:
    """``text`` made inert for mrkdwn: no mention, link, date or channel markup survives."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def is_user_id(value: str) -> bool:
    return _USER_ID.fullmatch(value) is not None


def mention_user(user_id: str) -> str:
    """``<@U…>`` for a Slack user id; anything else is shown as escaped text."""
    return f"<@{user_id}>" if is_user_id(user_id) else escape_mrkdwn(user_id)


def mention_approver(approver_id: str) -> str:
    """A user (``<@U…>``) or user-group (``<!subteam^S…>``) mention; other values as text."""
    if _GROUP_ID.fullmatch(approver_id):
        return f"<!subteam^{approver_id}>"
    return mention_user(approver_id)


def mention_conversation(conversation_id: str) -> str:
    """``<#C…>`` for a channel or conversation id; anything else is shown as escaped text."""
    if _CHANNEL_ID.fullmatch(conversation_id):
        return f"<#{conversation_id}>"
    return escape_mrkdwn(conversation_id)


def slack_date(at: datetime, token_format: str = DATE_AT_TIME) -> str:
    """``<!date^…>``: shown in each reader's time zone, with a UTC fallback for old clients."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    # "2026-05-01 12:00 UTC": isoformat's first 16 characters cost about half of strftime.
    fallback = at.astimezone(UTC).isoformat(" ", "minutes")[:16]
    return f"<!date^{int(at.timestamp())}^{token_format}|{fallback} UTC>"


def truncate_plain(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def safe_cut(text: str, limit: int) -> int:
    """Where to cut mrkdwn ``text`` to keep at most ``limit`` characters.

    Prefers a line break, then a space, and never cuts inside an entity such as
    ``&amp;`` or inside ``<…>`` markup, which would leave broken syntax behind.
    """
    if len(text) <= limit:
        return len(text)
    window = text[:limit]
    cut = window.rfind("\n")
    if cut < limit // 2:
        cut = window.rfind(" ")
    if cut < limit // 2:
        cut = limit
    amp = text.rfind("&", 0, cut)
    if amp != -1 and cut - amp < 6 and ";" not in text[amp:cut]:
        cut = amp
    open_bracket = text.rfind("<", 0, cut)
    if open_bracket > 0 and ">" not in text[open_bracket:cut]:
        cut = open_bracket
    return cut


def truncate_mrkdwn(text: str, limit: int) -> str:
    """mrkdwn ``text`` cut to ``limit`` characters at a safe place, ending in an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: safe_cut(text, limit - 1)].rstrip() + ELLIPSIS


@cache
def _parser() -> MarkdownIt:
    # Raw HTML is off: `<!channel>` parses as text (and is escaped) rather than as an HTML block.
    return MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough")


def _tree(md: str) -> SyntaxTreeNode:
    return SyntaxTreeNode(_parser().parse(md))


def markdown_to_mrkdwn(md: str) -> str:
    """Markdown converted to Slack mrkdwn, with every piece of text escaped."""
    return "\n\n".join(markdown_to_mrkdwn_chunks(md))


# A process keeps its last RENDERED conversions of texts up to RENDERED_MAX characters: a
# review's message is converted as it is posted and again as it is rewritten once closed
# (by the same worker, often), and both conversions are pure functions of the text.
RENDERED = 512
RENDERED_MAX = 8_192


def markdown_to_mrkdwn_chunks(md: str) -> list[str]:
    """The mrkdwn of each top-level Markdown block (paragraph, list, code, table…), in order."""
    if len(md) <= RENDERED_MAX:
        return list(_kept_chunks(md))
    return _chunks(md)


@lru_cache(maxsize=RENDERED)
def _kept_chunks(md: str) -> tuple[str, ...]:
    return tuple(_chunks(md))


def _chunks(md: str) -> list[str]:
    renderer = _Renderer()
    return [chunk for chunk in (renderer.block(node, 0) for node in _tree(md).children) if chunk]


def markdown_to_plain(md: str) -> str:
    """The text of some Markdown without any markup, on one line (for plain_text fields).
    A simple line (a heading, a sentence with code spans) is read without the parser
    (bot.plain_line): a review's decision line, at every post and rewrite."""
    line = md.rstrip("\r\n")
    if "\n" not in line and "\r" not in line:
        simple = plain_line(line)
        if simple is not None:
            return simple
    return _kept_plain(md) if len(md) <= RENDERED_MAX else _plain_text(md)


def markdown_to_plain_parsed(md: str) -> str:
    """:func:`markdown_to_plain` as markdown-it reads it, always (what bot.plain_line's
    quick reader must agree with)."""
    return _plain_text(md)


@lru_cache(maxsize=RENDERED)
def _kept_plain(md: str) -> str:
    return _plain_text(md)


def _plain_text(md: str) -> str:
    parts: list[str] = []

    def walk(node: SyntaxTreeNode) -> None:
        if node.type == "inline":
            parts.append(_plain(node.children))
        elif node.type in ("fence", "code_block"):
            parts.append(node.content)
        for child in node.children:
            if node.type != "inline":
                walk(child)

    walk(_tree(md))
    return " ".join(" ".join(parts).split())


def _plain(nodes: Sequence[SyntaxTreeNode]) -> str:
    out: list[str] = []
    for node in nodes:
        if node.type in ("text", "code_inline", "html_inline"):
            out.append(node.content)
        elif node.type in ("softbreak", "hardbreak"):
            out.append(" ")
        else:
            out.append(_plain(node.children))
    return "".join(out)


def _wrap(mark: str, inner: str) -> str:
    # Slack only honours *, _ and ~ hugging non-space text on a single line.
    lines = []
    for line in inner.split("\n"):
        core = line.strip()
        if not core:
            lines.append(line)
            continue
        start = line.index(core)
        lines.append(f"{line[:start]}{mark}{core}{mark}{line[start + len(core):]}")
    return "\n".join(lines)


def _link_target(href: str) -> str | None:
    if not href.lower().startswith(_LINK_SCHEMES):
        return None
    for char, encoded in (("|", "%7C"), ("<", "%3C"), (">", "%3E"), (" ", "%20")):
        href = href.replace(char, encoded)
    return href.replace("&", "&amp;")


def _code_block(content: str) -> str:
    body = escape_mrkdwn(content.rstrip("\n")) or " "
    return f"```\n{body}\n```"


class _Renderer:
    """Walks markdown-it's syntax tree; one method per kind of node."""

    def block(self, node: SyntaxTreeNode, depth: int) -> str:
        kind = node.type
        if kind == "paragraph":
            return self.inline(node.children[0].children if node.children else [])
        if kind == "heading":
            inner = self.inline(node.children[0].children if node.children else [], bold=True)
            return _wrap("*", inner)
        if kind in ("bullet_list", "ordered_list"):
            return self.list(node, depth)
        if kind == "blockquote":
            inner = "\n".join(self.block(child, depth) for child in node.children)
            return "\n".join(f"> {line}" for line in inner.split("\n"))
        if kind in ("fence", "code_block"):
            return _code_block(node.content)
        if kind == "hr":
            return RULE
        if kind == "table":
            return self.table(node)
        return escape_mrkdwn(node.content)

    def list(self, node: SyntaxTreeNode, depth: int) -> str:
        lines: list[str] = []
        pad = INDENT * depth
        start = int(node.attrs.get("start", 1)) if node.type == "ordered_list" else 1
        for index, item in enumerate(node.children):
            if node.type == "ordered_list":
                marker = f"{item.info or start + index}."
            else:
                marker = BULLETS[depth % len(BULLETS)]
            first = True
            for child in item.children:
                if child.type in ("bullet_list", "ordered_list"):
                    lines.extend(self.list(child, depth + 1).split("\n"))
                    continue
                for line in self.block(child, depth + 1).split("\n"):
                    if first:
                        lines.append(f"{pad}{marker} {line}")
                        first = False
                    else:
                        lines.append(f"{pad}{' ' * (len(marker) + 1)}{line}")
            if first:
                lines.append(f"{pad}{marker}")
        return "\n".join(lines)

    def table(self, node: SyntaxTreeNode) -> str:
        rows: list[list[str]] = []
        for section in node.children:
            for row in section.children:
                rows.append([" ".join(_plain(cell.children[0].children).split())
                             if cell.children else "" for cell in row.children])
        width = max(len(row) for row in rows)
        rows = [row + [""] * (width - len(row)) for row in rows]
        widths = [max(len(row[col]) for row in rows) for col in range(width)]
        lines = [" | ".join(cell.ljust(widths[col]) for col, cell in enumerate(row)).rstrip()
                 for row in rows]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return _code_block("\n".join(lines))

    def inline(self, nodes: Sequence[SyntaxTreeNode], *, bold: bool = False,
               italic: bool = False, strike: bool = False) -> str:
        out: list[str] = []
        for node in nodes:
            kind = node.type
            if kind == "text":
                out.append(escape_mrkdwn(node.content))
            elif kind in ("softbreak", "hardbreak"):
                out.append("\n")
            elif kind == "code_inline":
                # Slack has no way to escape a backtick inside code.
                out.append(f"`{escape_mrkdwn(node.content.replace('`', 'ˋ'))}`")
            elif kind == "strong":
                inner = self.inline(node.children, bold=True, italic=italic, strike=strike)
                out.append(inner if bold else _wrap("*", inner))
            elif kind == "em":
                inner = self.inline(node.children, bold=bold, italic=True, strike=strike)
                out.append(inner if italic else _wrap("_", inner))
            elif kind == "s":
                inner = self.inline(node.children, bold=bold, italic=italic, strike=True)
                out.append(inner if strike else _wrap("~", inner))
            elif kind in ("link", "image"):
                out.append(self.link(node))
            else:
                out.append(escape_mrkdwn(node.content))
        return "".join(out)

    def link(self, node: SyntaxTreeNode) -> str:
        label = " ".join(_plain(node.children).split())
        href = str(node.attrs.get("src" if node.type == "image" else "href", ""))
        if node.info == "auto":
            # A bare URL in angle brackets: shown as text, which Slack links by itself.
            return escape_mrkdwn(label)
        target = _link_target(href)
        if target is None:
            return escape_mrkdwn(label or href)
        if not label:
            return f"<{target}>"
        return f"<{target}|{escape_mrkdwn(label)}>"
