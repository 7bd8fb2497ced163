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

LiquidJS reads two more things its own way, taught here too: the argument ``[]`` is
nothing (undefined), and a ``for`` tag ignores everything after a ``|``. What it prints
is in liquidjs_printing.py, how it compares (JavaScript's ``<`` and ``contains``) in
liquidjs_comparisons.py, and the filters that read an expression per item in
liquidjs_filters.py.

Used by engine/definition/templates.py, which builds the environments.
"""

from __future__ import annotations

import re

from liquid import Environment, RenderContext, Token, Undefined
from liquid.ast import Node
from liquid.builtin.expressions import (
    Filter,
    FilteredExpression,
    Nil,
    TernaryFilteredExpression,
    parse_identifier,
    tokenize,
)
from liquid.builtin.expressions.logical import parse_boolean_primitive
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.assign_tag import AssignNode, AssignTag
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.builtin.tags.for_tag import TAG_FOR
from liquid.exceptions import LiquidSyntaxError
from liquid.expression import Expression
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

from engine.definition.liquidjs_printing import LiquidJSEchoNode, LiquidJSOutputNode

__all__ = [
    "LiquidJSAssign",
    "LiquidJSEcho",
    "LiquidJSOutput",
    "LiquidJSTokenStream",
    "parse_expression",
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


class _ThenAnything(TokenStream):
    """A condition's tokens as LiquidJS reads them: one whole expression, then whatever
    follows is ignored (``{% if wd ends with '/' %}`` tests ``wd``), where python-liquid
    wants the end."""

    def eat(self, typ: str) -> Token:
        if typ == TOKEN_EOF:
            self.pos = len(self.tokens)
            return self.eof
        return super().eat(typ)


# The tags whose condition LiquidJS reads as one expression and ignores the rest after.
_CONDITION_TAGS = frozenset(("if", "elsif", "unless"))


class LiquidJSTokenStream(TokenStream):
    """The template's token stream; each tag's expression is tokenized by ``_tokenize``.

    In a ``for`` tag, LiquidJS reads the collection and the loop's options up to a ``|``
    and ignores the rest: ``{% for x in obj | entries %}`` loops over ``obj``. In ``if``,
    ``elsif`` and ``unless`` it reads one whole expression and ignores what follows.
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
        if tag is not None and tag.value in _CONDITION_TAGS:
            return _ThenAnything(iter(tokens))
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
    # LiquidJS reads one whole expression and passes over words after it, up to the
    # filters: `{{ a b | plus: 1 }}` is `a | plus: 1`.
    while tokens.current.kind not in (TOKEN_PIPE, TOKEN_IF, TOKEN_EOF):
        next(tokens)
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


def parse_expression(environment: Environment, source: str) -> Expression:
    """An expression as an ``if`` tag reads it (``i.size > 3``), with LiquidJS's tokens."""
    token = Token(TOKEN_EXPRESSION, source, 0, source)
    tokens = TokenStream(iter(_tokenize(source, token)))
    expression = parse_boolean_primitive(environment, tokens)
    tokens.eat(TOKEN_EOF)
    return expression
