"""YAML loaded safely, with the line and column of every value kept beside the data.

pyyaml's ``safe_load`` forgets where things were and silently keeps the last of two
equal mapping keys. Here the node graph is composed first, indexed by path (the
tuple of keys and indexes from the root, as in a JSON pointer), checked for
duplicate keys, and only then constructed with the same safe constructor, less
YAML 1.1's timestamps: an unquoted date stays a string, as Kibana's YAML 1.2 parser
keeps it (``dtstart: 2025-01-01T09:00:00Z``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import yaml

YamlPath = tuple[Any, ...]


@dataclass(frozen=True)
class Position:
    """Where a node starts (1-based) and how a scalar was written."""

    line: int
    column: int
    style: str | None = None  # scalars: None (plain), "'", '"', "|" or ">"
    end_line: int = 0


@dataclass(frozen=True)
class DuplicateKey:
    path: YamlPath  # the path of the entry whose key is repeated
    position: Position  # the second occurrence
    first: Position  # the first occurrence


class YamlSyntaxError(Exception):
    """The text is not YAML; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        self.line = line
        self.column = column
        super().__init__(message)


@dataclass
class PositionedDocument:
    """The data of one YAML document, and where each of its values and keys starts."""

    data: Any
    text: str
    values: dict[YamlPath, Position] = field(default_factory=dict)
    keys: dict[YamlPath, Position] = field(default_factory=dict)
    duplicates: list[DuplicateKey] = field(default_factory=list)

    def locate(self, path: YamlPath) -> Position:
        """Position of ``path``, or of its deepest ancestor that exists."""
        for end in range(len(path), -1, -1):
            found = self.values.get(tuple(path[:end]))
            if found is not None:
                return found
        return Position(1, 1)

    def locate_key(self, path: YamlPath) -> Position:
        """Position of the key naming ``path`` (a mapping entry), else of its value."""
        return self.keys.get(tuple(path)) or self.locate(path)

    def locate_in_scalar(self, path: YamlPath, offset: int) -> tuple[int, int]:
        """Line and column of character ``offset`` (0-based) of the string at ``path``.

        Exact for plain and quoted scalars on one line and for block scalars; for
        anything else, the start of the scalar.
        """
        start = self.locate(path)
        if tuple(path) not in self.values:
            return start.line, start.column
        if start.style in (None, "'", '"') and start.end_line == start.line:
            quote = 0 if start.style is None else 1
            return start.line, start.column + quote + offset
        if start.style in ("|", ">"):
            value = self._value_at(path)
            if isinstance(value, str):
                content_lines = value.split("\n")
                before = value[:offset].split("\n")
                index, column = len(before) - 1, len(before[-1])
                file_lines = self.text.splitlines()
                line_no = start.line + 1 + index  # block content starts below the indicator
                if start.style == "|" and line_no - 1 < len(file_lines):
                    content = content_lines[index]
                    file_line = file_lines[line_no - 1]
                    if file_line.endswith(content):
                        return line_no, len(file_line) - len(content) + column + 1
                return start.line + 1, 1
        return start.line, start.column

    def _value_at(self, path: YamlPath) -> Any:
        value = self.data
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value


class _Loader(yaml.SafeLoader):
    """The safe loader without YAML 1.1's implicit timestamps."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_with_positions(text: str) -> PositionedDocument:
    """Load one YAML document as ``yaml.safe_load`` would, remembering positions.

    Raises :class:`YamlSyntaxError` when the text is not one well-formed document.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        document = PositionedDocument(data=None, text=text)
        if node is None:
            return document
        _Indexer(document).index(node, ())
        document.data = loader.construct_document(node)
        return document
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = exc.context or ""
        if context and exc.context_mark is not None and mark is not exc.context_mark:
            # e.g. an unclosed quote is found at the end of the file, but began here
            context += f" at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
        message = ": ".join(part for part in (context, exc.problem) if part)
        if mark is None:
            raise YamlSyntaxError(message or str(exc), 1, 1) from exc
        raise YamlSyntaxError(message, mark.line + 1, mark.column + 1) from exc
    except yaml.YAMLError as exc:  # e.g. a reader error on a control character
        raise YamlSyntaxError(str(exc), 1, 1) from exc
    finally:
        loader.dispose()


def _position(node: yaml.Node) -> Position:
    style = node.style if isinstance(node, yaml.ScalarNode) else None
    return Position(
        line=node.start_mark.line + 1,
        column=node.start_mark.column + 1,
        style=style,
        end_line=node.end_mark.line + 1,
    )


class _Indexer:
    def __init__(self, document: PositionedDocument) -> None:
        self.document = document
        self.key_constructor = yaml.SafeLoader("")
        # An alias repeats a node; index it once, at its anchor, so that
        # "billion laughs" documents and recursive ones stay cheap.
        self.seen: set[int] = set()

    def index(self, node: yaml.Node, path: YamlPath) -> None:
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        self.document.values[path] = _position(node)
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.index(item, (*path, i))
        elif isinstance(node, yaml.MappingNode):
            first_seen: dict[Hashable, yaml.Node] = {}
            for key_node, value_node in node.value:
                key = self._key(key_node)
                if key is _UNKNOWN:
                    continue
                if key in first_seen and key != "<<":
                    self.document.duplicates.append(DuplicateKey(
                        path=(*path, key),
                        position=_position(key_node),
                        first=_position(first_seen[key]),
                    ))
                else:
                    first_seen[key] = key_node
                # pyyaml keeps the last value, so the last occurrence is the one indexed
                self.document.keys[(*path, key)] = _position(key_node)
                self.index(value_node, (*path, key))

    def _key(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return _UNKNOWN
        try:
            key = self.key_constructor.construct_object(node, deep=True)
        except yaml.YAMLError:
            return _UNKNOWN
        return key if isinstance(key, Hashable) else _UNKNOWN


_UNKNOWN = object()
