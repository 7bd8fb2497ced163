"""How Elastic's LiquidJS reads a template, taught to python-liquid.

Kibana renders workflow templates with LiquidJS. It reads an output (``{{ }}``,
``${{ }}``, ``{% echo %}``) and ``assign``'s value as an expression followed by
filters, so ``{{ a > 3 and b == 'x' }}`` renders ``true`` or ``false``; a property may
be named like a keyword (``inputs.limit``); and it has filters that evaluate an
expression per item (``where_exp``). python-liquid has none of these. What is changed
is its tokens and which of its own parsers reads them: a keyword after a dot becomes a
property name, and an output's head is parsed with the grammar of its ``if`` tag
(``==``, ``contains``, ``and``, ``or``, ``not``, parentheses) before the filters. The
expression trees are python-liquid's, so rendering costs what it did. Elastic's
ternary ``cond ? a : b`` is rewritten to Liquid's ``a if cond else b`` first.

LiquidJS runs in JavaScript, and that shows in a few more places, taught here too:
``<``, ``>``, ``<=``, ``>=`` and ``contains`` compare as JavaScript does (python-liquid
refuses a string against a number, and finds a key in an object); the argument ``[]``
is nothing (undefined); and a ``for`` tag ignores everything after a ``|``.

Used by engine/definition/templates.py, which builds the environments.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from liquid import Environment, RenderContext, Token, Undefined, is_undefined
from liquid.ast import Node
from liquid.builtin.expressions import (
    Filter,
    FilteredExpression,
    Nil,
    TernaryFilteredExpression,
    parse_identifier,
    tokenize,
)
from liquid.builtin.expressions.logical import (
    ContainsExpression,
    GeExpression,
    GtExpression,
    LeExpression,
    LtExpression,
    is_truthy,
    parse_boolean_primitive,
)
from liquid.builtin.expressions.primitive import Blank, Empty
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.assign_tag import AssignNode, AssignTag
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.builtin.tags.for_tag import TAG_FOR
from liquid.exceptions import FilterArgumentError, LiquidSyntaxError
from liquid.expression import Expression
from liquid.filter import with_context
from liquid.stream import TokenStream
from liquid.token import (
    TOKEN_ASSIGN,
    TOKEN_DOT,
    TOKEN_EOF,
    TOKEN_EXPRESSION,
    TOKEN_IF,
    TOKEN_LBRACKET,
    TOKEN_OUTPUT,
    TOKEN_PIPE,
    TOKEN_RBRACKET,
    TOKEN_STRING,
    TOKEN_TAG,
)

from engine.definition import jsvalue, template_filters
from engine.definition.kql_tree import field_segments

__all__ = [
    "EXPRESSION_FILTERS",
    "LiquidJSAssign",
    "LiquidJSEcho",
    "LiquidJSOutput",
    "LiquidJSTokenStream",
    "liquidjs_text",
    "with_javascript_operators",
]

# Liquid string literals have no escapes: a quote runs to the next quote of its kind.
_TERNARY_LEXEME = re.compile(r"""(?P<string>"[^"]*"|'[^']*')|[?:|]""")

# LiquidJS reads a filter argument `[]` (`| default: []`) as nothing: undefined. python-liquid
# cannot parse it, so the tokens carry this marker until the filter is built.
_EMPTY_LIST = "\x00signoff-empty-list\x00"


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"


def _unescape(text: str) -> str:
    """A string literal's text as LiquidJS reads it: ``\\n``, ``\\t``, ``\\uXXXX``, octal
    ``\\101`` and ``\\x`` for any other ``x`` (python-liquid keeps the backslashes)."""
    out: list[str] = []
    i, end = 0, len(text)
    while i < end:
        char = text[i]
        if char != "\\" or i + 1 == end:
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following in _ESCAPES:
            out.append(_ESCAPES[following])
            i += 2
        elif following == "u":
            j, value = i + 2, 0
            while j <= i + 5 and j < end and text[j] in _HEX:
                value, j = value * 16 + int(text[j], 16), j + 1
            out.append(chr(value))
            i = j
        elif following not in _OCTAL:
            out.append(following)
            i += 2
        else:
            j, value = i + 1, 0
            while j <= i + 3 and j < end and text[j] in _OCTAL:
                value, j = value * 8 + int(text[j]), j + 1
            out.append(chr(value))
            i = j
    return "".join(out)


def _tokenize(source: str, parent: Token, *, in_output: bool = False) -> list[Token]:
    """python-liquid's expression tokens, with LiquidJS's reading of keywords after a dot.

    ``inputs.limit``: python-liquid makes ``limit`` (``offset``, ``reversed``, ``cols``,
    ``with``, ``for``, ...) a keyword wherever it stands; after a dot it is a property.
    In an output, ``[]`` becomes the empty-list marker.
    """
    tokens: list[Token] = []
    for token in tokenize(source, parent):
        kind = token.kind
        if tokens and tokens[-1].kind == TOKEN_DOT and kind == token.value and kind.isalpha():
            token = token._replace(kind="word")
        elif in_output and kind == TOKEN_RBRACKET and tokens and tokens[-1].kind == TOKEN_LBRACKET:
            token = tokens.pop()._replace(kind=TOKEN_STRING, value=_EMPTY_LIST)
        elif kind == TOKEN_STRING and "\\" in token.value:
            token = token._replace(value=_unescape(token.value))
        tokens.append(token)
    return tokens


class LiquidJSTokenStream(TokenStream):
    """The template's token stream; each tag's expression is tokenized by ``_tokenize``.

    In a ``for`` tag, LiquidJS reads the collection and the loop's options up to a ``|``
    and ignores the rest: ``{% for x in obj | entries %}`` loops over ``obj``.
    """

    def into_inner(self, *, tag: Token | None = None, eat: bool = True) -> TokenStream:
        token = self.current
        if token.kind != TOKEN_EXPRESSION:
            raise LiquidSyntaxError("missing expression", token=tag or token)
        if eat:
            next(self)
        tokens = _tokenize(token.value, token)
        if tag is not None and tag.value == TAG_FOR:
            pipe = next((i for i, t in enumerate(tokens) if t.kind == TOKEN_PIPE), None)
            if pipe is not None:
                tokens = [*tokens[:pipe], tokens[-1]._replace(kind=TOKEN_EOF, value="")]
        return TokenStream(iter(tokens))


class _EmptyList(Expression):
    __slots__ = ()

    def evaluate(self, context: RenderContext) -> Undefined:
        return Undefined("[]", token=self.token)

    async def evaluate_async(self, context: RenderContext) -> Undefined:
        return Undefined("[]", token=self.token)

    def children(self) -> list[Expression]:
        return []


def _with_empty_lists(filters: list[Filter] | None) -> None:
    for filter_ in filters or ():
        for argument in filter_.args:
            value = argument.value
            if getattr(value, "value", None) == _EMPTY_LIST:
                argument.value = _EmptyList(value.token)


def _parse_output(environment: Environment, expression: Token) -> Expression:
    """An output's expression as LiquidJS reads it: a logical expression, then filters."""
    source = expression.value
    if "?" in source:
        source = _rewrite_ternary(source) or source
    return _parse_value(environment, TokenStream(iter(_tokenize(source, expression,
                                                                in_output=True))))


def _parse_value(environment: Environment, tokens: TokenStream) -> Expression:
    left = parse_boolean_primitive(environment, tokens)
    filters = Filter.parse(environment, tokens, delim=(TOKEN_PIPE,))
    _with_empty_lists(filters)
    if tokens.current.kind == TOKEN_IF:
        ternary = TernaryFilteredExpression.parse(
            environment, FilteredExpression(left.token, left, filters), tokens
        )
        _with_empty_lists(ternary.filters)
        _with_empty_lists(ternary.tail_filters)
        return ternary
    tokens.eat(TOKEN_EOF)
    return FilteredExpression(left.token, left, filters)


def _rewrite_ternary(expression: str) -> str | None:
    """``cond ? a : b`` as ``a if cond else b``; None when there is no ternary.

    Only ``?``, ``:`` and ``|`` outside string literals count. After a ``|`` in the
    middle branch, a ``:`` glued to the word before it is a filter's argument colon
    (``a ? b | default: "x" : c``), not the ternary's.
    """
    question = -1
    piped = False
    for match in _TERNARY_LEXEME.finditer(expression):
        if match.group("string") is not None:
            continue
        symbol, at = match.group(), match.start()
        if question < 0:
            if symbol == "?":
                question = at
        elif symbol == "|":
            piped = True
        elif symbol == ":" and not (piped and not expression[at - 1].isspace()):
            condition = expression[:question].strip()
            then = expression[question + 1 : at].strip()
            otherwise = expression[at + 1 :].strip()
            return f"{then} if {condition} else {otherwise}"
    return None


def liquidjs_text(value: object) -> str:
    """What LiquidJS prints for a value: nil and undefined print nothing, a list its items
    one after another, a number as JavaScript writes it (``2.0`` is ``2``), an object
    ``[object Object]``."""
    kind = type(value)
    if kind is int or kind is float or kind is bool:
        return jsvalue.text(value)
    if isinstance(value, str):
        return value
    if value is None or is_undefined(value) or isinstance(value, Empty | Blank):
        return ""
    if isinstance(value, list | tuple | range):
        return "".join(liquidjs_text(item) for item in value)
    if isinstance(value, bool | int | float | Mapping):
        return jsvalue.text(value)
    return str(value)


def _print_as_liquidjs(node: OutputNode, context: RenderContext, buffer: TextIO) -> int:
    value = node.expression.evaluate(context)
    return buffer.write(value if type(value) is str else liquidjs_text(value))


class LiquidJSOutputNode(OutputNode):
    """An output that prints its value as LiquidJS does."""

    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return _print_as_liquidjs(self, context, buffer)

    async def render_to_output_async(self, context: RenderContext, buffer: TextIO) -> int:
        return _print_as_liquidjs(self, context, buffer)


class LiquidJSEchoNode(EchoNode):
    """``{% echo %}``, printing as LiquidJS does."""

    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return _print_as_liquidjs(self, context, buffer)

    async def render_to_output_async(self, context: RenderContext, buffer: TextIO) -> int:
        return _print_as_liquidjs(self, context, buffer)


class LiquidJSOutput(Output):
    """The output statement as LiquidJS reads it, and ``cond ? a : b``."""

    node_class: type[OutputNode] = LiquidJSOutputNode

    def parse(self, stream: TokenStream) -> OutputNode:
        token = stream.eat(TOKEN_OUTPUT)
        expression = stream.expect(TOKEN_EXPRESSION)
        return self.node_class(token, _parse_output(self.env, expression))


class LiquidJSEcho(EchoTag):
    """``{% echo %}``, read as an output is."""

    node_class: type[EchoNode] = LiquidJSEchoNode

    def parse(self, stream: TokenStream) -> Node:
        token = stream.eat(TOKEN_TAG)
        if stream.current.kind != TOKEN_EXPRESSION:
            return self.node_class(token, Nil(stream.current))
        return self.node_class(token, _parse_output(self.env, stream.current))


class LiquidJSAssign(AssignTag):
    """``{% assign name = value %}``, the value read as an output is (LiquidJS)."""

    def parse(self, stream: TokenStream) -> AssignNode:
        token = stream.eat(TOKEN_TAG)
        expression = stream.expect(TOKEN_EXPRESSION)
        tokens = TokenStream(iter(_tokenize(expression.value, expression, in_output=True)))
        name = parse_identifier(self.env, tokens, allow_trailing_question_mark=False)
        tokens.eat(TOKEN_ASSIGN)
        return self.node_class(token, name=name, expression=_parse_value(self.env, tokens))



def _is_drop(expression: Expression, value: Any) -> bool:
    # `nil`, `empty` and `blank` written in the template are LiquidJS drops, which are
    # neither less nor greater than anything; a null value from the data is JavaScript's null.
    return isinstance(expression, Nil | Empty | Blank) or isinstance(value, Empty | Blank)


def _relational(expression: Any, op: str, left: Any, right: Any) -> bool:
    left = jsvalue.UNDEFINED if is_undefined(left) else left
    right = jsvalue.UNDEFINED if is_undefined(right) else right
    if _is_drop(expression.left, left) or _is_drop(expression.right, right):
        return False
    return jsvalue.compare(_listed(left), op, _listed(right))


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, range) else value


_SAFE = 2**53


class _JSRelational:
    """``<``, ``>``, ``<=``, ``>=`` as JavaScript compares. Two numbers, or two ASCII
    strings, Python compares the same way, so they skip the conversions (an int past
    2**53 is rounded to a double in JavaScript first, so it takes the long way)."""

    __slots__ = ()
    left: Expression
    right: Expression
    _op: str
    _python: Callable[..., Any]

    def evaluate(self, context: RenderContext) -> object:
        left: Any = self.left.evaluate(context)
        right: Any = self.right.evaluate(context)
        left_type, right_type = type(left), type(right)
        if left_type is str and right_type is str:
            if left.isascii() and right.isascii():
                return self._python(left, right)
        elif ((left_type is int or left_type is float)
              and (right_type is int or right_type is float)
              and -_SAFE <= left <= _SAFE and -_SAFE <= right <= _SAFE):
            return self._python(left, right)
        return _relational(self, self._op, left, right)

    async def evaluate_async(self, context: RenderContext) -> object:
        return self.evaluate(context)


class _JSLt(_JSRelational, LtExpression):
    __slots__ = ()
    _op, _python = "<", operator.lt


class _JSGt(_JSRelational, GtExpression):
    __slots__ = ()
    _op, _python = ">", operator.gt


class _JSLe(_JSRelational, LeExpression):
    __slots__ = ()
    _op, _python = "<=", operator.le


class _JSGe(_JSRelational, GeExpression):
    __slots__ = ()
    _op, _python = ">=", operator.ge


def _strictly_equal(left: Any, right: Any) -> bool:
    """LiquidJS's ``equals`` as ``contains`` uses it: lists item by item, else ``===``."""
    if isinstance(left, list | tuple):
        return (isinstance(right, list | tuple) and len(left) == len(right)
                and all(_strictly_equal(a, b) for a, b in zip(left, right, strict=True)))
    if jsvalue.is_number(left) and jsvalue.is_number(right):
        return jsvalue.to_number(left) == jsvalue.to_number(right)
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    if isinstance(left, bool) and isinstance(right, bool):
        return left == right
    return left is right  # null, undefined, and an object only to itself


def _contains(expression: Any, context: RenderContext) -> bool:
    left = expression.left.evaluate(context)
    right = expression.right.evaluate(context)
    if type(right) is str and (type(left) is list or type(left) is str):
        return right in left  # a string equals only a string, in both languages
    left = _listed(jsvalue.UNDEFINED if is_undefined(left) else left)
    right = _listed(jsvalue.UNDEFINED if is_undefined(right) else right)
    if _is_drop(expression.left, left) and not isinstance(expression.left, Nil):
        left = ""  # `empty` and `blank` are the empty string to JavaScript
    if isinstance(left, list | tuple):
        return any(_strictly_equal(item, right) for item in left)
    if isinstance(left, str):
        return jsvalue.text(right) in left  # String.prototype.indexOf converts its argument
    return False  # an object, a number, nil: LiquidJS finds nothing in them


class _JSContains(ContainsExpression):
    __slots__ = ()

    def evaluate(self, context: RenderContext) -> object:
        return _contains(self, context)

    async def evaluate_async(self, context: RenderContext) -> object:
        return _contains(self, context)


_JAVASCRIPT_OPERATORS: dict[type[Expression], type[Expression]] = {
    LtExpression: _JSLt, GtExpression: _JSGt, LeExpression: _JSLe, GeExpression: _JSGe,
    ContainsExpression: _JSContains,
}


def with_javascript_operators(expressions: Iterable[Expression]) -> None:
    """Make ``<``, ``>``, ``<=``, ``>=`` and ``contains`` in these expressions (and those
    inside them) compare as LiquidJS does, in JavaScript: ``"10" > 9`` converts the
    string to a number, ``"10" > "9"`` compares text by UTF-16 code units, and an object
    contains nothing. The nodes are python-liquid's, retyped in place once, when parsed.
    """
    pending = list(expressions)
    while pending:
        expression = pending.pop()
        javascript = _JAVASCRIPT_OPERATORS.get(type(expression))
        if javascript is not None:
            expression.__class__ = javascript
        pending.extend(expression.children())


@functools.lru_cache(maxsize=4096)
def _item_expression(environment: Environment, source: str) -> Expression:
    """The expression of a ``where_exp``/``find_exp``/``group_by_exp`` (``"i.size > 3"``)."""
    token = Token(TOKEN_EXPRESSION, source, 0, source)
    tokens = TokenStream(iter(_tokenize(source, token)))
    expression = parse_boolean_primitive(environment, tokens)
    tokens.eat(TOKEN_EOF)
    with_javascript_operators([expression])
    return expression


def _per_item(value: object, name: object, source: object,
              context: RenderContext) -> tuple[list[Any], list[Any]]:
    """The items of ``value`` and, for each, ``source`` evaluated with the item as ``name``."""
    items = template_filters.as_list(value)
    try:
        expression = _item_expression(context.env, str(source))
    except LiquidSyntaxError as exc:
        raise FilterArgumentError(f"bad expression {str(source)!r}: {exc.message}",
                                  token=None) from exc
    results = []
    for item in items:
        with context.extend({str(name): item}):
            results.append(expression.evaluate(context))
    return items, results


@with_context
def _where_exp(value: object, name: object, source: object, *,
               context: RenderContext) -> list[Any]:
    items, results = _per_item(value, name, source, context)
    return [item for item, result in zip(items, results, strict=True) if is_truthy(result)]


@with_context
def _find_exp(value: object, name: object, source: object, *, context: RenderContext) -> Any:
    items, results = _per_item(value, name, source, context)
    return next((item for item, result in zip(items, results, strict=True)
                 if is_truthy(result)), None)


@with_context
def _group_by_exp(value: object, name: object, source: object, *,
                  context: RenderContext) -> list[dict[str, Any]]:
    items, results = _per_item(value, name, source, context)
    return template_filters.grouped(items, [None if is_undefined(r) else r for r in results])


_UNSET = object()


def _liquidjs_array(value: object) -> list[Any]:
    # LiquidJS's toArray: a list as it is, an object as its [key, value] pairs, nil as none.
    if isinstance(value, Mapping):
        return [[key, item] for key, item in value.items()]
    return template_filters.as_list(value)


def _property(value: Any, segments: tuple[str, ...]) -> Any:
    for segment in segments:
        if isinstance(value, Mapping):
            value = value.get(segment, jsvalue.UNDEFINED)
        elif isinstance(value, list | tuple):
            if (segment.lstrip("-").isdigit() and len(segment) < 18
                    and -len(value) <= int(segment) < len(value)):
                value = value[int(segment)]
            elif segment in ("size", "first", "last"):
                value = (len(value) if segment == "size" else
                         (value[0] if segment == "first" else value[-1]) if value else None)
            else:
                value = jsvalue.UNDEFINED
        elif isinstance(value, str) and segment == "size":
            value = len(value)
        else:
            return jsvalue.UNDEFINED
    return value


def _where(value: object, prop: object, expected: object = _UNSET) -> list[Any]:
    """LiquidJS's ``where``: the items whose property (a path: ``host.name``) equals
    ``expected`` strictly, or is truthy when none is given; items without it are left out."""
    segments = field_segments(jsvalue.text(prop) if not is_undefined(prop) else "")
    kept = []
    for item in _liquidjs_array(value):
        found = _property(item, segments)
        if expected is _UNSET or is_undefined(expected):
            keep = found is not None and found is not False and found is not jsvalue.UNDEFINED
        else:
            keep = _strictly_equal(found, expected)
        if keep:
            kept.append(item)
    return kept


EXPRESSION_FILTERS = {
    "where": _where,
    "where_exp": _where_exp,
    "find_exp": _find_exp,
    "group_by_exp": _group_by_exp,
}
