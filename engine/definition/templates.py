"""Liquid templates in step options: text rendering, typed ``${{ }}`` values, analysis.

A string holding ``{{ expr }}`` or ``{% tag %}`` renders to text. A string that is
exactly ``${{ expr }}`` (starting with ``$`` and ending with ``}}``, as Kibana requires)
evaluates to the expression's own value, so a list stays a list and an int an int.
Inside ``{{ }}`` the Elastic Workflows ternary ``cond ? a : b`` is accepted and read as
Liquid's ``a if cond else b``.

Templates are read as Elastic's LiquidJS reads them (engine/definition/liquidjs_*.py):
``{{ a > 3 and b == 'x' }}`` renders ``true`` or ``false``, ``<`` and ``contains`` compare
as JavaScript does, a ``for`` tag ignores a filter, ``inputs.limit`` is a property, and
Elastic's filters are there (engine/definition/template_filters.py).

A :class:`MarkdownTemplate` (a human step's ``message``: Markdown a reviewer reads)
renders with every interpolated value escaped for Markdown, so event data shows as
literal text and cannot forge a link, a heading or emphasis; the template's own text
is the author's Markdown and renders. ``{{ value | markdown }}`` opts a trusted value
in. Slack's own syntax (``&``, ``<``, ``>``, mentions) is left to the bot, which
escapes it in all text it converts (bot/mrkdwn.py). Other strings are not escaped.

python-liquid enters Signoff through this module, and those it builds on: liquidjs_*.py
and template_filters.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import StringIO
from typing import Any

from liquid import BoundTemplate, Environment, RenderContext, is_undefined
from liquid.ast import Node
from liquid.builtin.output import OutputNode
from liquid.builtin.tags.capture_tag import CaptureNode, CaptureTag
from liquid.builtin.tags.echo_tag import EchoNode
from liquid.exceptions import (
    LiquidError,
    LiquidInterrupt,
)
from liquid.expression import Expression
from liquid.filter import int_arg
from liquid.parser import get_parser

from engine.definition import template_filters
from engine.definition.liquidjs_comparisons import with_javascript_operators
from engine.definition.liquidjs_filters import EXPRESSION_FILTERS
from engine.definition.liquidjs_parser import (
    LiquidJSAssign,
    LiquidJSEcho,
    LiquidJSOutput,
    LiquidJSTokenStream,
)
from engine.definition.liquidjs_printing import liquidjs_text
from engine.definition.markdown_escape import (
    CodeTracker,
    TrustedMarkdown,
    escape_markdown,
    escaped_for,
)
from engine.errors import TemplateError

__all__ = [
    "MarkdownTemplate",
    "check_value",
    "compile_template",
    "escape_markdown",
    "evaluate_expression",
    "has_template",
    "references",
    "render_text",
    "render_value",
]

_CACHE_SIZE = 4096

# The whole value is one output statement marked with "$": keep the expression's type.
# As in Kibana, nothing may stand before the "$" or after the "}}", not even a space.
_TYPED = re.compile(r"\$(?P<output>\{\{.*\}\})", re.DOTALL)


class _SignoffEnvironment(Environment):
    ternary_expressions = True  # `a if cond else b`, the target of the `? :` rewrite
    shorthand_indexes = True  # `event.alerts.0.host`, as Elastic workflows write it
    logical_not_operator = True
    logical_parentheses = True
    # A runaway `{% for %}` must not wedge a worker.
    loop_iteration_limit = 100_000

    def _parse(self, source: str) -> list[Node]:
        return get_parser(self).parse(LiquidJSTokenStream(self.tokenizer()(source)))


def _json_default(obj: object) -> object:
    if is_undefined(obj):
        return None
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, dt.date | dt.time):
        return obj.isoformat()
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        return list(obj)
    return str(obj)


def _json_filter(obj: object, indent: object = None) -> object:
    if is_undefined(obj):
        return obj  # JSON.stringify(undefined) is undefined, which renders as nothing
    separators = (",", ":") if indent is None else None
    return json.dumps(
        obj,
        default=_json_default,
        ensure_ascii=False,
        indent=int_arg(indent) if indent is not None else None,
        separators=separators,
    )


class MarkdownTemplate(str):
    """A template whose output is Markdown a reviewer reads: interpolated values are escaped."""

    __slots__ = ()


class ChannelTemplate(MarkdownTemplate):
    """A human step's ``with.channels.<key>.message`` (Elastic 9.5): Markdown like the step's
    message, rendered when the step starts, with Elastic's ``context.hitl`` links standing
    as the placeholders in :data:`HITL_LINK_PLACEHOLDERS`: the link exists only once the
    review is posted, so whoever posts the notification puts it in."""

    __slots__ = ()


# context.hitl.externalFormLink / externalQueryLink (kbn-workflows common/hitl.ts) while a
# channel message renders: URL-shaped (reserved .invalid domain) so Markdown keeps them whole.
HITL_LINK_PLACEHOLDERS = {
    "externalFormLink": "https://signoff.invalid/context.hitl.externalFormLink",
    "externalQueryLink": "https://signoff.invalid/context.hitl.externalQueryLink",
}


def _with_hitl_links(scope: Mapping[str, Any]) -> dict[str, Any]:
    context = scope.get("context")
    hitl = {name: TrustedMarkdown(link) for name, link in HITL_LINK_PLACEHOLDERS.items()}
    return {**scope, "context": {**(context if isinstance(context, Mapping) else {}),
                                 "hitl": hitl}}


def _markdown_value(value: object, code: str | None) -> str:
    """An output's text, escaped for where it lands: in code (``code``) or not (None)."""
    if isinstance(value, TrustedMarkdown):
        return value
    return escaped_for(liquidjs_text(value), code)


_TRACKERS = "signoff_markdown_code"  # RenderContext.tag_namespace keys
_CODE_BLIND = "signoff_markdown_code_blind"


def _write_markdown(node: OutputNode, context: RenderContext, buffer: Any) -> int:
    value = node.expression.evaluate(context)
    if context.tag_namespace.get(_CODE_BLIND):
        return int(buffer.write(_markdown_value(value, None)))
    trackers: dict[Any, CodeTracker] = context.tag_namespace.setdefault(_TRACKERS, {})
    tracker = trackers.get(buffer)
    if tracker is None:
        tracker = trackers[buffer] = CodeTracker()
    return int(buffer.write(_markdown_value(value, tracker.context(buffer))))


def _code_closed(context: RenderContext) -> bool:
    """Whether every output written as inside code, in any buffer, was inside closed code."""
    trackers: dict[Any, CodeTracker] = context.tag_namespace.get(_TRACKERS, {})
    return all(tracker.all_closed(buffer) for buffer, tracker in trackers.items())


class _MarkdownOutputNode(OutputNode):
    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: Any) -> int:
        return _write_markdown(self, context, buffer)


class _MarkdownEchoNode(EchoNode):
    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: Any) -> int:
        return _write_markdown(self, context, buffer)


class _MarkdownCaptureNode(CaptureNode):
    __slots__ = ()

    # What a capture holds is Markdown already escaped: output again, it is not escaped twice.
    def _assign(self, context: RenderContext, buf: StringIO) -> None:
        context.assign(self.name, TrustedMarkdown(buf.getvalue()))


class _MarkdownCapture(CaptureTag):
    node_class = _MarkdownCaptureNode


class _MarkdownOutput(LiquidJSOutput):
    node_class = _MarkdownOutputNode


class _MarkdownEcho(LiquidJSEcho):
    node_class = _MarkdownEchoNode


def _markdown_filter(value: object) -> TrustedMarkdown:
    return TrustedMarkdown(liquidjs_text(value))


# Tags Kibana deletes from its LiquidJS engine (LIQUID_ALLOWED_TAGS keeps the rest).
_TAGS_KIBANA_REMOVES = ("tablerow", "ifchanged", "include", "render", "doc")


def _build_environment(*, markdown: bool = False) -> Environment:
    environment = _SignoffEnvironment(autoescape=False, strict_filters=True)
    for tag in _TAGS_KIBANA_REMOVES:
        environment.tags.pop(tag, None)
    environment.add_tag(_MarkdownOutput if markdown else LiquidJSOutput)
    environment.add_tag(_MarkdownEcho if markdown else LiquidJSEcho)
    environment.add_tag(LiquidJSAssign)
    if markdown:
        environment.add_tag(_MarkdownCapture)
        environment.add_filter("markdown", _markdown_filter)
    environment.add_filter("json", _json_filter)
    environment.add_filter("jsonify", _json_filter)
    environment.add_filter("inspect", _json_filter)
    for name, function in {**template_filters.FILTERS, **EXPRESSION_FILTERS}.items():
        environment.add_filter(name, function)
    return environment


_ENVIRONMENT = _build_environment()
_MARKDOWN_ENVIRONMENT = _build_environment(markdown=True)


@dataclass(frozen=True, slots=True)
class _Compiled:
    text: str
    template: BoundTemplate
    # Where the parsed source starts within `text` (a typed value drops its "$").
    offset: int
    # Set when `text` is exactly `${{ expr }}`: evaluate it instead of rendering.
    expression: Expression | None


def _error(message: object, text: str, index: int) -> TemplateError:
    index = min(max(index, 0), max(len(text) - 1, 0))
    line = text.count("\n", 0, index) + 1
    line_column = index - (text.rfind("\n", 0, index) + 1) + 1
    where = f"line {line}, column {line_column}" if "\n" in text else f"column {index + 1}"
    return TemplateError(f"{message} (at {where})", template=text, column=index + 1)


def _from_liquid(exc: LiquidError, text: str, offset: int) -> TemplateError:
    token = exc.token
    index = token.start_index if token is not None and token.start_index >= 0 else 0
    return _error(exc.message, text, offset + index)


def _parse(source: str, text: str, offset: int, markdown: bool = False) -> BoundTemplate:
    environment = _MARKDOWN_ENVIRONMENT if markdown else _ENVIRONMENT
    try:
        template = environment.from_string(source)
    except LiquidError as exc:
        raise _from_liquid(exc, text, offset) from exc
    with_javascript_operators(_expressions(template))
    # Liquid reports an unknown filter only when it is applied; find it now instead.
    for name, spans in template.analyze(include_partials=False).filters.items():
        if name not in environment.filters:
            hint = " (it applies only in a human step's message)" if name == "markdown" else ""
            raise _error(f"unknown filter {name!r}{hint}", text, offset + spans[0].index)
    return template


def _expressions(template: BoundTemplate) -> Iterable[Expression]:
    """Every expression of the template's nodes, nested blocks included."""
    context = RenderContext(template)
    pending = list(template.nodes)
    while pending:
        node = pending.pop()
        yield from node.expressions()
        pending.extend(node.children(context, include_partials=False))


def _compiled_for(text: str) -> _Compiled:
    if isinstance(text, MarkdownTemplate):
        return _compile(str(text), markdown=True)
    return _compile(text)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(text: str, markdown: bool = False) -> _Compiled:
    typed = _TYPED.fullmatch(text)
    if typed is not None:
        offset = typed.start("output")
        template = _parse(typed.group("output"), text, offset, markdown)
        nodes = template.nodes
        if len(nodes) == 1 and isinstance(nodes[0], OutputNode):
            return _Compiled(text, template, offset, nodes[0].expression)
    return _Compiled(text, _parse(text, text, 0, markdown), 0, None)


def _render(compiled: _Compiled, scope: Mapping[str, Any]) -> str:
    text, context = _render_once(compiled, scope, code_blind=False)
    if not _code_closed(context):
        # Code the template opens does not close, so no output may count on being code.
        text, _ = _render_once(compiled, scope, code_blind=True)
    return text


def _render_once(compiled: _Compiled, scope: Mapping[str, Any],
                 *, code_blind: bool) -> tuple[str, RenderContext]:
    # BoundTemplate.render() minus what we do not use (partials, template inheritance,
    # output limits): it halves the cost of a short template, the common case.
    context = RenderContext(compiled.template, globals=scope)
    if code_blind:
        context.tag_namespace[_CODE_BLIND] = True
    buffer = StringIO()
    for node in compiled.template.nodes:
        try:
            node.render(context, buffer)
        except LiquidInterrupt as exc:
            raise _error(
                f"unexpected '{exc}'", compiled.text, compiled.offset + node.token.start_index
            ) from exc
        except LiquidError as exc:
            if exc.token is None:
                exc.token = node.token
            raise _from_liquid(exc, compiled.text, compiled.offset) from exc
    return buffer.getvalue(), context


def _evaluate(compiled: _Compiled, scope: Mapping[str, Any], undefined: Any = None) -> Any:
    assert compiled.expression is not None
    try:
        result = compiled.expression.evaluate(RenderContext(compiled.template, globals=scope))
    except LiquidError as exc:
        raise _from_liquid(exc, compiled.text, compiled.offset) from exc
    if is_undefined(result):
        return undefined
    if isinstance(result, range):
        return list(result)
    return result


def has_template(text: str) -> bool:
    """Whether ``text`` holds a Liquid output statement or tag."""
    return "{{" in text or "{%" in text


def compile_template(text: str) -> None:
    """Parse ``text`` (cached), raising TemplateError for bad syntax or unknown filters.

    ``| markdown`` is a known filter only in a :class:`MarkdownTemplate`.
    """
    _compiled_for(text)


def check_value(value: Any, *, path: str = "") -> list[tuple[str, TemplateError]]:
    """Compile every template inside a nested value; ``(path, error)`` for each failure.

    Paths join mapping keys with "." and list positions as "[N]", under ``path``.
    """
    problems: list[tuple[str, TemplateError]] = []
    for where, text in _templated_strings(value, path):
        try:
            _compiled_for(text)
        except TemplateError as exc:
            problems.append((where, exc))
    return problems


def render_text(text: str, scope: Mapping[str, Any]) -> str:
    """Render ``text`` against ``scope``; undefined variables render as ""."""
    if not has_template(text):
        return text
    return _render(_compiled_for(text), scope)


def render_value(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render every string inside a nested value; ``${{ expr }}`` keeps its type.

    Mappings come back as dicts and lists or tuples as lists; keys are not rendered.
    """
    if isinstance(value, str):
        if not has_template(value):
            return value
        if isinstance(value, ChannelTemplate):
            scope = _with_hitl_links(scope)
        compiled = _compiled_for(value)
        if compiled.expression is not None:
            result = _evaluate(compiled, scope)
            # A message is text even when it is one `${{ }}`.
            return _markdown_value(result, None) if isinstance(value, MarkdownTemplate) else result
        return _render(compiled, scope)
    if isinstance(value, Mapping):
        return {key: render_value(item, scope) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, scope) for item in value]
    return value


def evaluate_expression(expr: str, scope: Mapping[str, Any], *, undefined: Any = None) -> Any:
    """The typed value of a Liquid expression, bare or wrapped in ``{{ }}``/``${{ }}``.

    An undefined value (a missing variable) gives ``undefined``, None unless told.
    """
    return _evaluate(_compile_expression(expr), scope, undefined)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_expression(expr: str) -> _Compiled:
    stripped = expr.strip()
    lead = len(expr) - len(expr.lstrip())
    if stripped.startswith("${{"):
        source, offset = stripped[1:], lead + 1
    elif stripped.startswith("{{"):
        source, offset = stripped, lead
    else:
        # Error positions are reported within `expr`, so discount the added "{{ ".
        source, offset = f"{{{{ {expr} }}}}", -3
    template = _parse(source, expr, offset)
    nodes = template.nodes
    if len(nodes) != 1 or not isinstance(nodes[0], OutputNode):
        raise TemplateError(f"expected one Liquid expression, got {expr!r}", template=expr)
    return _Compiled(expr, template, offset, nodes[0].expression)


def references(value: Any) -> set[str]:
    """Every variable path the templates inside ``value`` read from the scope.

    Paths are dotted: ``a[0]`` gives ``a.0`` and ``a["b-c"]`` gives ``a.b-c``. A path
    stops before an index computed from another variable, which is listed on its own.
    Names bound inside the template (``assign``, loop variables) are left out, and so
    are templates that do not compile (``check_value`` reports those).
    """
    found: set[str] = set()
    for _, text in _templated_strings(value, ""):
        try:
            compiled = _compiled_for(text)
        except TemplateError:
            continue
        for segments in compiled.template.global_variable_segments(include_partials=False):
            parts: list[str] = []
            for segment in segments:
                if isinstance(segment, list):
                    break
                parts.append(str(segment))
            found.add(".".join(parts))
    return found


def _templated_strings(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        if has_template(value):
            yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _templated_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _templated_strings(item, f"{path}[{index}]")
