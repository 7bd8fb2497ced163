"""``data.regexExtract`` and ``data.regexReplace``: Elastic's regex data steps, run by RE2.

Kibana runs these patterns in JavaScript's backtracking engine and guards it with limits
and a list of risky shapes; Signoff runs them in RE2 (google-re2), whose time is linear in
the text, so no pattern can hang a worker. RE2 has no backreferences (``\\1``) or
lookaround (``(?=``, ``(?!``, ``(?<=``, ``(?<!``): ``signoff validate`` refuses a pattern
RE2 cannot compile, and one known only at run time (a template) fails the step. Kibana's
limits are kept: a pattern of at most 10,000 characters, a source of at most 100,000
characters per string and 10,000 strings per list.

JavaScript syntax RE2 reads differently is translated: ``\\uXXXX`` becomes ``\\x{XXXX}``
(named groups ``(?<name>...)`` RE2 reads as they are). The flags: ``i`` (ignore case),
``m`` (``^``/``$`` at line ends) and ``s`` (``.`` matches a newline) become RE2's inline
flags; ``g`` replaces every match rather than the first (``data.regexExtract`` always
reads the first match, as Kibana does); ``u`` and ``d`` change nothing (RE2 matches
Unicode text). ``y`` (sticky) and anything else is refused. One difference stays: RE2's
``\\s`` and ``\\b`` are ASCII-only where JavaScript's ``\\s`` also matches Unicode spaces.

A replacement is read as JavaScript reads it: ``$1``..``$99``, ``$<name>``, ``$&`` (the
match), ``$``` and ``$'`` (the text before and after it) and ``$$`` (a dollar sign).

The source may be a string or a list of strings (the output is then a list, item by
item). ``data.regexExtract`` outputs the ``fields`` it maps to groups (``$1`` or a group
name), null for no match (or fails with ``errorIfNoMatch: true``). ``data.regexReplace``
outputs the replaced text, or with ``detailed: true`` ``{original, replaced,
matchCount}``; Signoff counts the matches it replaced (Kibana's count is only right with
``g``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import re2

from engine.definition.answer_schema import LINEAR_TIME
from engine.definition.step_types import StepContext, step_type
from engine.definition.templates import has_template
from engine.errors import StepFailed

MAX_PATTERN = 10_000  # characters
MAX_SOURCE = 100_000  # characters in each string of the source ("100 KB" in Elastic's docs)
MAX_SOURCE_ITEMS = 10_000  # strings in a source list

_INLINE_FLAGS = {"i": "i", "m": "m", "s": "s"}
_NO_EFFECT = frozenset("gud")
_UNICODE_ESCAPE = re.compile(r"u([0-9A-Fa-f]{4})")
_REPLACEMENT = re.compile(r"\$(?:(\$)|(&)|(`)|(')|(\d{1,2})|<([^>]*)>)")


class PatternRefused(ValueError):
    """A pattern or its flags cannot run in RE2; the message says why."""


def _pattern_options(*, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"pattern": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN},
                       "flags": {"type": "string"}, **extra},
        "required": ["pattern", *extra],
        "additionalProperties": False,
    }


def _check_pattern(options: Mapping[str, Any],
                   params: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    pattern, flags = options.get("pattern"), options.get("flags", "")
    if not isinstance(pattern, str) or not isinstance(flags, str):
        return
    if has_template(flags):
        flags = ""  # known at run time; no flag changes whether RE2 can run the pattern
    try:
        _flag_prefix(flags)
    except PatternRefused as exc:
        yield ("with", "flags"), str(exc)
        return
    if has_template(pattern):
        return
    try:
        compile_pattern(pattern, flags)
    except PatternRefused as exc:
        yield ("with", "pattern"), f"{pattern!r} cannot be used: {exc}. {LINEAR_TIME}"


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str, flags: str = "") -> Any:
    """``pattern`` written for JavaScript with its ``flags``, compiled by RE2; PatternRefused
    when RE2 cannot run it."""
    if len(pattern) > MAX_PATTERN:
        raise PatternRefused(f"the pattern is {len(pattern):,} characters long, more than "
                             f"{MAX_PATTERN:,}")
    try:
        return re2.compile(_flag_prefix(flags) + _translated(pattern), _options())
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        raise PatternRefused(detail.decode(errors="replace") if isinstance(detail, bytes)
                             else str(detail)) from None


@functools.cache
def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print each refused pattern to stderr
    return options


def _flag_prefix(flags: str) -> str:
    inline = ""
    for flag in flags:
        if flag in _INLINE_FLAGS:
            inline += _INLINE_FLAGS[flag]
        elif flag not in _NO_EFFECT:
            raise PatternRefused(f"unknown regex flag {flag!r}: the flags are g, i, m, s "
                                 "(and u, d, which change nothing here); y (sticky) is not "
                                 "supported")
    if len(set(flags)) != len(flags):
        raise PatternRefused(f"flags {flags!r} repeat a flag")
    return f"(?{inline})" if inline else ""


def _translated(pattern: str) -> str:
    """JavaScript escapes RE2 spells differently: ``\\uXXXX`` as ``\\x{XXXX}``."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            unicode = _UNICODE_ESCAPE.match(pattern, i + 1)
            if unicode:
                out.append(f"\\x{{{unicode.group(1)}}}")
                i = unicode.end()
                continue
            out.append(pattern[i:i + 2])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _compiled(ctx: StepContext) -> Any:
    try:
        return compile_pattern(str(ctx.options["pattern"]), str(ctx.options.get("flags") or ""))
    except PatternRefused as exc:  # known only now: the pattern or flags were templates
        raise StepFailed(f"with.pattern cannot be used: {exc}. {LINEAR_TIME}",
                         retryable=False) from exc


def _sources(ctx: StepContext) -> tuple[list[Any], bool]:
    """The source as a list, and whether it was one."""
    source = ctx.params.get("source")
    if source is None:
        raise StepFailed("source is null: give a string or a list of strings", retryable=False)
    if isinstance(source, list):
        if len(source) > MAX_SOURCE_ITEMS:
            raise StepFailed(f"source has {len(source):,} items, more than the "
                             f"{MAX_SOURCE_ITEMS:,} a regex step takes", retryable=False)
        return source, True
    if not isinstance(source, str):
        raise StepFailed(f"source must be a string or a list of strings, not "
                         f"{type(source).__name__}", retryable=False)
    return [source], False


def _check_length(text: str) -> None:
    if len(text) > MAX_SOURCE:
        raise StepFailed(f"a source string is {len(text):,} characters long, more than the "
                         f"{MAX_SOURCE:,} a regex step reads", retryable=False)


@step_type("data.regexExtract", pure=True, check=_check_pattern, params_schema={
    "type": "object",
    "properties": {"source": {}, "errorIfNoMatch": {"type": "boolean"}},
    "required": ["source"],
}, options_schema=_pattern_options(extra={
    "fields": {"type": "object", "additionalProperties": {"type": "string"}},
}))
def data_regex_extract(ctx: StepContext) -> Any:
    """The groups of the first match of ``with.pattern`` in ``source``, named by ``with.fields``."""
    sources, was_list = _sources(ctx)
    if not sources:
        return []
    regex = _compiled(ctx)
    fields = {str(k): str(v) for k, v in ctx.options["fields"].items()}
    extracted: list[dict[str, Any] | None] = []
    for text in sources:
        if not isinstance(text, str):
            extracted.append(None)
            continue
        _check_length(text)
        match = regex.search(text)
        if match is None:
            if ctx.params.get("errorIfNoMatch"):
                raise StepFailed(f"Pattern {ctx.options['pattern']!r} did not match the source "
                                 "text; set errorIfNoMatch to false to output null instead",
                                 retryable=False)
            extracted.append(None)
            continue
        extracted.append({name: _group(match, regex, ref) for name, ref in fields.items()})
    return extracted if was_list else extracted[0]


def _group(match: Any, regex: Any, ref: str) -> str | None:
    if ref.startswith("$"):
        digits = re.match(r"\d+", ref[1:])
        index = int(digits.group()) if digits else -1
        return match.group(index) if 0 <= index <= regex.groups else None
    return match.groupdict().get(ref) if ref in regex.groupindex else None


@step_type("data.regexReplace", pure=True, check=_check_pattern, params_schema={
    "type": "object",
    "properties": {"source": {}, "detailed": {"type": "boolean"}},
    "required": ["source"],
}, options_schema=_pattern_options(extra={"replacement": {"type": "string"}}))
def data_regex_replace(ctx: StepContext) -> Any:
    """``source`` with the matches of ``with.pattern`` replaced (every one with the ``g`` flag)."""
    sources, was_list = _sources(ctx)
    if not sources:
        return []
    regex = _compiled(ctx)
    replacement = str(ctx.options["replacement"])
    every = "g" in str(ctx.options.get("flags") or "")
    replaced: list[str] = []
    matches = 0
    for text in sources:
        if not isinstance(text, str):
            replaced.append(_js_string(text))
            continue
        _check_length(text)
        new, count = regex.subn(lambda match: _expand(match, regex, replacement), text,
                                count=0 if every else 1)
        replaced.append(new)
        matches += count
    if ctx.params.get("detailed"):
        return {"original": sources if was_list else sources[0],
                "replaced": replaced if was_list else replaced[0], "matchCount": matches}
    return replaced if was_list else replaced[0]


def _expand(match: Any, regex: Any, replacement: str) -> str:
    """``replacement`` for ``match``, read as JavaScript's String.prototype.replace reads it."""

    def one(token: re.Match[str]) -> str:
        dollar, whole, before, after, digits, name = token.groups()
        if dollar:
            return "$"
        if whole:
            return str(match.group(0))
        if before:
            return str(match.string[:match.start()])
        if after:
            return str(match.string[match.end():])
        if digits:
            # "$12" is group 12 when there is one, else group 1 followed by "2".
            for size in (len(digits), 1):
                index = int(digits[:size])
                if 1 <= index <= regex.groups:
                    return str(match.group(index) or "") + digits[size:]
            return token.group(0)
        if not regex.groupindex:
            return token.group(0)  # without named groups, "$<" is literal text
        return str(match.groupdict().get(name) or "")

    return _REPLACEMENT.sub(one, replacement)


def _js_string(value: Any) -> str:
    """What JavaScript's String() gives for a non-string item Kibana passes through."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Mapping):
        return "[object Object]"
    if isinstance(value, list):
        return ",".join("" if v is None else _js_string(v) for v in value)
    return str(value)
