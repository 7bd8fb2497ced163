"""Check a reviewer's answer against its JSON Schema, with patterns matched in linear time.

Answers come from people and from API callers, so the schema's regular expressions (a
``pattern``, the keys of ``patternProperties``, ``format: regex``) run in RE2 (google-re2),
whose time is linear in the text: Python's ``re`` took 1.9 s for ``^(a+)+$`` over 25
characters, and a Slack text input takes 3,000. RE2 has no backreferences or lookaround:
``signoff validate`` refuses a pattern RE2 cannot compile (:func:`pattern_problems`), and
one that only exists at run time (rendered from a template) makes the answer invalid; it
never falls back to ``re``.

jsonschema's ``unevaluatedProperties`` matches ``patternProperties`` with ``re`` inside
jsonschema itself, so a schema that uses both is refused, at validate and at run time.

:func:`answer_errors` is the one validator for answers: the engine's
``schema_violations`` and the bot's modal errors both call it (Draft 2020-12; the bot
leaves ``format`` to the engine, as it always has).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import re2
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError

LINEAR_TIME = ("Signoff matches patterns in linear time (RE2), which has no backreferences "
               "or lookaround")
UNEVALUATED_WITH_PATTERNS = ("unevaluatedProperties cannot be checked together with "
                             "patternProperties; use additionalProperties instead")

# Keywords whose value is a schema, a list of schemas, or a mapping of names to schemas.
_ONE_SCHEMA = ("additionalProperties", "unevaluatedProperties", "propertyNames", "items",
               "contains", "additionalItems", "unevaluatedItems", "not", "if", "then", "else")
_SCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf")
_SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")
_SUBSCHEMA_KEYWORDS = frozenset((*_ONE_SCHEMA, *_SCHEMA_LISTS, *_SCHEMA_MAPS))

SchemaPath = tuple[str | int, ...]


def answer_errors(schema: Mapping[str, Any], answer: Any, *,
                  formats: bool = True) -> Iterator[ValidationError]:
    """Every way ``answer`` breaks ``schema`` (Draft 2020-12; ``format`` checked unless
    ``formats`` is false)."""
    try:  # one validator per schema text: building one costs more than most checks
        validator = _validator(json.dumps(schema), formats)
    except TypeError:  # not JSON (a YAML date in a default): built for this check alone
        validator = _build(schema, formats)
    if validator is None:
        yield ValidationError(UNEVALUATED_WITH_PATTERNS, validator="unevaluatedProperties")
        return
    yield from validator.iter_errors(answer)


@functools.lru_cache(maxsize=256)
def _validator(text: str, formats: bool) -> Any:
    """The validator for the schema ``text`` (its own copy, which no caller can change)."""
    return _build(json.loads(text), formats)


def _build(schema: Mapping[str, Any], formats: bool) -> Any:
    """None for a schema refused outright (:data:`UNEVALUATED_WITH_PATTERNS`)."""
    if _uses_unevaluated_with_patterns(schema):
        return None
    return _AnswerValidator(schema, format_checker=_format_checker() if formats else None)


def pattern_problems(schema: Mapping[str, Any]) -> Iterator[tuple[SchemaPath, str, str]]:
    """``(path, pattern, why)`` for each regex in ``schema`` RE2 cannot run; a path that
    ends in ``patternProperties`` and the pattern is a key. Also the unevaluatedProperties
    and patternProperties pair, as ``(path to the former, "", why)``."""
    for path, node in _schemas(schema, ()):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and (why := pattern_problem(pattern)):
            yield (*path, "pattern"), pattern, why
        keys = node.get("patternProperties")
        for key in keys if isinstance(keys, Mapping) else ():
            if why := pattern_problem(str(key)):
                yield (*path, "patternProperties"), str(key), why
    if _uses_unevaluated_with_patterns(schema):
        where = next(path for path, node in _schemas(schema, ()) if "unevaluatedProperties" in node)
        yield (*where, "unevaluatedProperties"), "", UNEVALUATED_WITH_PATTERNS


def pattern_problem(pattern: str) -> str | None:
    """Why RE2 cannot compile ``pattern`` (RE2's own words), or None when it can."""
    try:
        _compiled(pattern)
    except re2.error as exc:
        return _reason(exc)
    return None


# -- the validator: jsonschema's Draft 2020-12 with RE2 wherever a schema holds a regex ---------


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        found = _compiled(pattern).search(instance) is not None
    except re2.error as exc:
        yield ValidationError(f"{pattern!r} cannot be checked: {_reason(exc)}; {LINEAR_TIME}")
        return
    if not found:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Mapping[str, Any], instance: Any,
                        schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        try:
            regex = _compiled(pattern)
        except re2.error as exc:
            yield ValidationError(f"{pattern!r} cannot be checked: {_reason(exc)}; {LINEAR_TIME}")
            continue
        for key, value in instance.items():
            if regex.search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any,
                           schema: Any) -> Iterator[ValidationError]:
    if "patternProperties" not in schema:  # no regex involved: jsonschema's own
        yield from _DRAFT_ADDITIONAL(validator, additional, instance, schema)
        return
    if not validator.is_type(instance, "object"):
        return
    regexes = []
    for pattern in schema["patternProperties"]:
        try:
            regexes.append(_compiled(pattern))
        except re2.error:
            continue  # reported by patternProperties
    properties = schema.get("properties", {})
    extras = sorted(key for key in instance if key not in properties
                    and not any(regex.search(key) is not None for regex in regexes))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:  # jsonschema's wording
        verb = "does" if len(extras) == 1 else "do"
        joined = ", ".join(repr(each) for each in extras)
        patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
        yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")


_DRAFT_ADDITIONAL = Draft202012Validator.VALIDATORS["additionalProperties"]
_AnswerValidator = validators.extend(Draft202012Validator, {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
})


@functools.cache
def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    # `format: regex` asks whether the answer is a pattern: one Signoff could run.
    checker.checks("regex", raises=re2.error)(lambda text: not isinstance(text, str)
                                              or _compiled(text) is not None)
    return checker


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _options())


@functools.cache
def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print each refused pattern to stderr
    options.never_capture = True  # a search only needs to know whether it matched
    return options


def _reason(exc: re2.error) -> str:
    detail = exc.args[0] if exc.args else ""
    return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)


def _uses_unevaluated_with_patterns(schema: Mapping[str, Any]) -> bool:
    nodes = [node for _, node in _schemas(schema, ())]
    return (any("unevaluatedProperties" in node for node in nodes)
            and any("patternProperties" in node for node in nodes))


def _schemas(schema: Any, path: SchemaPath) -> Iterator[tuple[SchemaPath, dict[str, Any]]]:
    """Each (sub)schema in ``schema`` with its path (schemas are JSON: dicts and lists)."""
    pending = [(path, schema)]
    while pending:  # a stack: a schema may nest deeper than Python's recursion limit
        path, node = pending.pop()
        if not isinstance(node, dict):  # not Mapping: an ABC check costs more than the walk
            continue
        yield path, node
        for keyword in node.keys() & _SUBSCHEMA_KEYWORDS:
            value = node[keyword]
            if keyword in _SCHEMA_LISTS and isinstance(value, list):
                pending.extend(((*path, keyword, i), item) for i, item in enumerate(value))
            elif keyword in _SCHEMA_MAPS and isinstance(value, dict):
                pending.extend(((*path, keyword, name), item) for name, item in value.items())
            elif keyword in _ONE_SCHEMA:
                pending.append(((*path, keyword), value))
