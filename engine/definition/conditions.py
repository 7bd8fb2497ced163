"""KQL conditions for step ``if:`` guards and ``if`` steps, parsed once and evaluated on a scope.

The subset workflows use: ``field : value`` (quoted, unquoted, ``*``/``?`` wildcards),
``field : *``, ``field < 5`` (also ``<=``, ``>``, ``>=``), value groups ``field : (a or b)``,
``and``/``or``/``not`` with parentheses, and a bare ``true``/``false``. Evaluation never
raises: a missing field or a comparison between incompatible types is simply false.

Event data is untrusted, so evaluation costs time linear in what it reads, and it reads at
most the first 64 KiB (65,536 characters, ``READ_LIMIT``) of a string: a wildcard matches
that prefix (``*login`` does not see the end of a longer value), and a longer string is
never read as a number. Equality and comparisons with text need no more of a value than
the condition's own text. A wildcard is never a regex over the whole value: its pieces
between the stars (literal characters and ``?``, which stands for one) are found left to
right, the first anchored at the start and the last at the end, as KQL requires; a
backtracking regex took 7 s for ``*failed*login*`` over 128 KB. Nested lists are read
without recursion, so no event is too deep to evaluate.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from engine.errors import ConditionError

# A keyword is only a keyword when no word character follows it: `android`, `not-approved`.
_GRAMMAR = r"""
start: query
?query: conj (_OR conj)*
?conj: neg (_AND neg)*
?neg: sub | _NOT neg -> not_
?sub: "(" query ")"
    | WORD ":" values -> match
    | WORD RANGE_OP scalar -> range
    | BOOL -> constant
?values: scalar | "(" vquery ")"
?vquery: vconj (_OR vconj)*
?vconj: vneg (_AND vneg)*
?vneg: scalar | "(" vquery ")" | _NOT vneg -> not_
scalar: WORD | QUOTED | BOOL

_AND.2: /and(?![^\s():<>"{}])/i
_OR.2: /or(?![^\s():<>"{}])/i
_NOT.2: /not(?![^\s():<>"{}])/i
BOOL.2: /(?:true|false)(?![^\s():<>"{}])/i
RANGE_OP: /[<>]=?/
QUOTED: /"(?:[^"\\]|\\.)*"/
WORD: /(?:[^\s\\():<>"{}]|\\.)+/
%ignore /\s+/
"""
_FIELD = re.compile(r"[^.\[\]*?\\]+(?:\.[^.\[\]*?\\]+|\[[0-9]+\])*")
_INDEX = re.compile(r"\[([0-9]+)\]")
# No quantifier follows another over the same digits, so a long non-number fails in linear
# time (`[0-9]+\.?[0-9]*` took 11 s on 16,384 digits and an "x").
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TEMPLATE = re.compile(r"\$?\{\{(?:(?!\}\}).)*\}\}", re.DOTALL)
READ_LIMIT = 65_536  # characters of a string value a condition reads
_RANGE_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_END = object()


@dataclass(frozen=True)
class Wildcard:
    """An unquoted value with ``*`` or ``?``, as the pieces between its stars.

    Each piece is a fixed-length pattern (literal characters, ``.`` for ``?``) with its
    length; it is found at the leftmost place it fits, which is where every later piece has
    the most room, so a match never backtracks across a star.
    """

    pieces: tuple[tuple[re.Pattern[str], int], ...]

    def matches(self, text: str) -> bool:
        """Whether the whole of ``text`` matches, in time linear in ``len(text)``."""
        (head, head_length), *middle = self.pieces
        if not middle:  # no star: `?` only
            return len(text) == head_length and head.match(text) is not None
        *middle, (tail, tail_length) = middle
        tail_start = len(text) - tail_length
        if tail_start < head_length or head.match(text) is None:
            return False
        position = head_length
        for piece, length in middle:
            if length:
                found = piece.search(text, position, tail_start)
                if found is None:
                    return False
                position = found.end()
        return tail.match(text, tail_start) is not None


@dataclass(frozen=True)
class Value:
    """A value as written (unescaped); ``wildcard`` is set when an unquoted value has one."""

    text: str
    quoted: bool = False
    wildcard: Wildcard | None = None


# The query tree. A value group `f : (a or not b)` is built as `f : a or not f : b`, as KQL does.
@dataclass(frozen=True)
class Match:
    path: str
    value: Value


@dataclass(frozen=True)
class Exists:
    path: str


@dataclass(frozen=True)
class Range:
    path: str
    op: str
    value: Value


@dataclass(frozen=True)
class Or:
    items: tuple[Query, ...]


@dataclass(frozen=True)
class And:
    items: tuple[Query, ...]


@dataclass(frozen=True)
class Not:
    item: Query


@dataclass(frozen=True)
class Constant:
    value: bool


Query = Match | Exists | Range | Or | And | Not | Constant


@dataclass(frozen=True)
class Condition:
    """A parsed KQL condition; build it with :func:`parse_condition`."""

    text: str
    query: Query = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", _parse(self.text))

    def evaluate(self, scope: Mapping[str, Any]) -> bool:
        """Whether ``scope`` satisfies the condition; never raises."""
        return _evaluate(self.query, scope)

    @property
    def references(self) -> frozenset[str]:
        """Field paths the condition reads, dotted, with ``[N]`` written as ``.N``."""
        return frozenset(_paths(self.query))


def parse_condition(text: str) -> Condition:
    """Parse a KQL condition (cached by text); raise ConditionError with a column if invalid."""
    if isinstance(text, bool):  # YAML turns `if: true` into a bool
        text = "true" if text else "false"
    if not isinstance(text, str):
        raise ConditionError(f"a condition must be a string, not {type(text).__name__}",
                             condition=str(text), column=1)
    return _parse_cached(text)


def is_template_condition(text: str) -> bool:
    """Whether the text is one whole ``{{ ... }}`` or ``${{ ... }}`` template, not KQL."""
    return isinstance(text, str) and _TEMPLATE.fullmatch(text.strip()) is not None


def resolve_path(scope: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """Look up ``a.b[0].c`` (or ``a.b.0.c``) in nested mappings and lists: ``(found, value)``."""
    return _walk(scope, _segments(path))


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Condition:
    return Condition(text)


@functools.cache
def _parser() -> Lark:
    return Lark(_GRAMMAR, parser="lalr", lexer="basic")


@functools.lru_cache(maxsize=4096)
def _segments(path: str) -> tuple[str, ...]:
    return tuple(_INDEX.sub(r".\1", path).split("."))


def _walk(node: Any, segments: tuple[str, ...]) -> tuple[bool, Any]:
    if not segments:
        return True, node
    if isinstance(node, Mapping):
        # Elastic documents also use flattened keys ("kibana.alert.rule.name"): try those too.
        for size in range(1, len(segments) + 1):
            key = ".".join(segments[:size])
            if key in node:
                found, value = _walk(node[key], segments[size:])
                if found:
                    return True, value
        return False, None
    head = segments[0]
    if _is_list(node) and head.isascii() and head.isdigit() and int(head) < len(node):
        return _walk(node[int(head)], segments[1:])
    return False, None


def _parse(text: str) -> Query:
    if is_template_condition(text):
        raise ConditionError("this is a template, not KQL; the template engine evaluates it",
                             condition=text, column=1)
    if not text.strip():
        raise ConditionError("the condition is empty", condition=text, column=1)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    return _build(tree.children[0], text, None)


def _build(node: Tree[Token] | Token, text: str, path: str | None) -> Query:
    # `path` is the field a value group belongs to, None outside one.
    if isinstance(node, Token) or node.data == "scalar":
        assert path is not None
        value = _value(node)
        if value.text == "*" and value.wildcard is not None:
            return Exists(path)
        return Match(path, value)
    children = node.children
    if node.data in ("query", "vquery"):
        return Or(tuple(_build(child, text, path) for child in children))
    if node.data in ("conj", "vconj"):
        return And(tuple(_build(child, text, path) for child in children))
    if node.data == "not_":
        return Not(_build(children[0], text, path))
    if node.data == "constant":
        return Constant(str(children[0]).lower() == "true")
    field = children[0]
    assert isinstance(field, Token)
    if not _FIELD.fullmatch(field):
        column = (field.start_pos or 0) + 1
        raise ConditionError(
            f"{str(field)!r} at column {column} is not a field path "
            "(write e.g. steps.review.output.approved or event.alerts[0].host.name)",
            condition=text, column=column)
    field_path = _INDEX.sub(r".\1", field)
    if node.data == "range":
        return Range(field_path, str(children[1]), _value(children[2]))
    return _build(children[1], text, field_path)


def _value(node: Tree[Token] | Token) -> Value:
    token = node.children[0] if isinstance(node, Tree) else node
    assert isinstance(token, Token)
    if token.type == "QUOTED":
        return Value(re.sub(r"\\(.)", r"\1", token[1:-1], flags=re.DOTALL), quoted=True)
    chars: list[str] = []
    pieces: list[list[str]] = [[]]  # each a list of regex atoms, one per character
    wild = False
    for escaped, char in re.findall(r"\\(.)|(.)", token, re.DOTALL):
        if char == "*":  # an escaped \* is a literal star
            pieces.append([])
        else:
            pieces[-1].append("." if char == "?" else re.escape(escaped or char))
        wild = wild or char in ("*", "?")
        chars.append(escaped or char)
    if not wild:
        return Value("".join(chars))
    compiled = tuple((re.compile("".join(atoms), re.DOTALL), len(atoms)) for atoms in pieces)
    return Value("".join(chars), wildcard=Wildcard(compiled))


def _syntax_error(text: str, exc: UnexpectedInput) -> ConditionError:
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        if text[pos] == '"':
            message = f"unterminated string starting at column {pos + 1}"
        elif text.startswith("{{", pos):
            message = (f"template '{{{{' inside a condition at column {pos + 1}; "
                       "render it before evaluating, or compare a field instead")
        else:
            message = f"unexpected character '{text[pos]}' at column {pos + 1}"
        return ConditionError(message, condition=text, column=pos + 1)
    if not isinstance(exc, UnexpectedToken):
        return ConditionError("invalid condition", condition=text, column=exc.column or 1)
    at_end = exc.token.type == "$END"
    pos = len(text.rstrip()) if at_end else exc.token.start_pos or 0
    try:
        before = list(_parser().lex(text[:pos]))
    except UnexpectedInput:  # the text before the bad token does not even lex
        return ConditionError(f"invalid condition near column {pos + 1}", condition=text,
                              column=pos + 1)
    opened: list[int] = []
    for token in before:
        if token.type == "LPAR":
            opened.append((token.start_pos or 0) + 1)
        elif token.type == "RPAR" and opened:
            opened.pop()
    expected = set(exc.expected)
    if at_end and opened and "RPAR" in expected:
        return ConditionError(f"unclosed '(' at column {opened[-1]}", condition=text,
                              column=opened[-1])
    if exc.token.type == "RPAR" and not opened and not expected & {"WORD", "COLON"}:
        return ConditionError(f"unmatched ')' at column {pos + 1}", condition=text,
                              column=pos + 1)
    # LALR merges states, so ')' and the end can both be offered where only one is valid.
    expected.discard("$END" if opened else "RPAR")
    after = f" after '{before[-1]}'" if before else ""
    found = "" if at_end else f", found '{exc.token}'"
    return ConditionError(f"expected {_describe(expected)}{after} at column {pos + 1}{found}",
                          condition=text, column=pos + 1)


def _describe(expected: set[str]) -> str:
    if "COLON" in expected:
        return "':' or a comparison (<, <=, >, >=)"
    if "QUOTED" in expected:
        return "a value"
    if "WORD" in expected:
        return "a condition"
    labels = {"_AND": "'and'", "_OR": "'or'", "RPAR": "')'", "$END": "the end of the condition"}
    names = [label for name, label in labels.items() if name in expected] or ["something else"]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _evaluate(query: Query, scope: Mapping[str, Any]) -> bool:
    match query:
        case Constant(constant):
            return constant
        case Not(item):
            return not _evaluate(item, scope)
        case And(items):
            return all(_evaluate(item, scope) for item in items)
        case Or(items):
            return any(_evaluate(item, scope) for item in items)
        case Exists(path):
            return _holds_at(scope, path, lambda element: element is not None)
        case Range(path, op, value):
            return _holds_at(scope, path, lambda element: _in_range(element, op, value))
        case Match(path, value):
            return _holds_at(scope, path, lambda element: _equals(element, value))
    return False


def _holds_at(scope: Mapping[str, Any], path: str, test: Callable[[Any], bool]) -> bool:
    found, actual = resolve_path(scope, path)
    return found and _some(actual, test)


def _some(actual: Any, test: Callable[[Any], bool]) -> bool:
    # On a list, a comparison holds when it holds for any element, as in Elasticsearch.
    # A stack, not recursion: an event's lists may nest deeper than Python's recursion limit.
    pending: list[Iterator[Any]] = [iter((actual,))]
    while pending:
        element: Any = next(pending[-1], _END)
        if element is _END:
            pending.pop()
        elif _is_list(element):
            pending.append(iter(element))
        elif test(element):
            return True
    return False


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _equals(actual: Any, value: Value) -> bool:
    if value.wildcard is not None:
        return isinstance(actual, str) and value.wildcard.matches(actual[:READ_LIMIT])
    if isinstance(actual, str):
        return actual == value.text
    if isinstance(actual, bool):
        return value.text.lower() == ("true" if actual else "false")
    if actual is None:
        return not value.quoted and value.text == "null"
    if isinstance(actual, int | float):
        number = _number(value.text)
        return number is not None and number == actual
    return False


def _in_range(actual: Any, op: str, value: Value) -> bool:
    compare = _RANGE_OPS[op]
    number = _number(value.text)
    if isinstance(actual, bool) or actual is None:
        return False
    if isinstance(actual, int | float):
        return number is not None and compare(actual, number)
    if isinstance(actual, str):
        if number is None:  # e.g. ISO dates, which compare correctly as text
            return compare(actual, value.text)
        actual_number = _number(actual) if len(actual) <= READ_LIMIT else None
        return actual_number is not None and compare(actual_number, number)
    return False


def _number(text: str) -> int | float | None:
    if not _NUMBER.fullmatch(text):
        return None
    if any(c in text for c in ".eE") or len(text) > 4000:  # int() refuses over 4,300 digits
        return float(text)
    return int(text)


def _paths(query: Query) -> list[str]:
    match query:
        case Match(path) | Exists(path) | Range(path):
            return [path]
        case And(items) | Or(items):
            return [path for item in items for path in _paths(item)]
        case Not(item):
            return _paths(item)
    return []
