"""The problems found in one workflow document, each at its line and column, and in words.

Every check of :mod:`engine.definition.checks` reports through a :class:`ProblemReport`:
it knows where a YAML path was written (:mod:`engine.definition.yaml_positions`), which
step a path is in, and how to say a JSON Schema error so a person can act on it (the
step it is in, the keys allowed there, a "did you mean").
"""

from __future__ import annotations

import difflib
import re
from datetime import timedelta
from typing import Any

from jsonschema import ValidationError
from jsonschema.exceptions import best_match

from engine.definition import templates
from engine.definition.durations import DURATION_PATTERN, parse_duration
from engine.definition.step_types import get_step_type
from engine.definition.yaml_positions import PositionedDocument, YamlPath
from engine.errors import DurationError, Problem

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_JSON_TYPES = {"string": "a string", "object": "a mapping", "array": "a list", "null": "null",
               "integer": "an integer", "number": "a number", "boolean": "true or false"}


class ProblemReport:
    """The problems of one document, as the checks find them."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.doc = PositionedDocument(data=None, text=text)
        self.step_paths: dict[YamlPath, dict[str, Any]] = {}  # every step, by where it is

    def sorted(self) -> list[Problem]:
        """Every problem found, once each, in file order."""
        return sorted(set(self.problems), key=lambda p: (p.line, p.column, p.message))

    def problem(self, path: YamlPath, message: str, *, key: bool = False) -> None:
        """A problem at the value at ``path`` (at its key, with ``key``)."""
        where = self.doc.locate_key(path) if key else self.doc.locate(path)
        self.problems.append(Problem(self.source, where.line, where.column, message))

    def problem_in_scalar(self, path: YamlPath, offset: int, message: str) -> None:
        """A problem at character ``offset`` of the text at ``path``."""
        line, column = self.doc.locate_in_scalar(path, max(offset, 0))
        self.problems.append(Problem(self.source, line, column, message))

    def context(self, path: YamlPath) -> str:
        """Where ``path`` is, in words: in which step, or which part of the document."""
        if path in self.step_paths:
            return f"in step {step_label(path, self.step_paths[path])}"
        if path and path[-1] == "with" and path[:-1] in self.step_paths:
            step = self.step_paths[path[:-1]]
            return f"in `with` of step {step_label(path[:-1], step)} (type {step.get('type')!r})"
        return f"in {render(path)}" if path else "at the top level"

    def duration(self, data: dict[str, Any], key: str, path: YamlPath) -> timedelta | None:
        """``data[key]`` as a duration; a problem at ``path.key`` when it is not one."""
        value = data.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
            return None
        try:
            return parse_duration(value)
        except DurationError as exc:
            self.problem((*path, key), f"{render((*path, key))}: {exc}")
            return None

    def param_keys(self, path: YamlPath) -> list[str]:
        """The top-level keys the type of the step at ``path`` declares (none if not a step)."""
        step = self.step_paths.get(path)
        spec = get_step_type(step["type"]) if step and isinstance(step.get("type"), str) else None
        return sorted(spec.param_keys) if spec else []

    def schema_problem(self, error: ValidationError, base: YamlPath) -> None:
        """A JSON Schema ``error`` about the value under ``base``, said as a problem."""
        path = (*base, *error.absolute_path)
        where, value, kind = render(path) or "the workflow", error.instance, error.validator
        expected_value: Any = error.validator_value  # the stubs allow "unset"; errors always set it
        schema: Any = error.schema
        if base and isinstance(value, str) and templates.has_template(value):
            return  # a templated option is only known at run time
        owner = self._step_at(path)
        owner_name = owner[1].get("name") if owner else None
        in_step = f" (step {owner_name!r})" if isinstance(owner_name, str) else ""
        if kind == "required" and isinstance(value, dict):
            missing = [p for p in expected_value
                       if p not in value and repr(p) in error.message]
            for prop in missing[:1]:
                self.problem(path, f"{render((*path, prop))} is required{in_step}")
        elif kind == "additionalProperties" and isinstance(value, dict):
            if path in self.step_paths and _custom_type(value.get("type")):
                return  # a plug-in's step: keys Signoff does not read are that type's business
            allowed = [*schema.get("properties", {}), *self.param_keys(path)]
            patterns = list(schema.get("patternProperties", {}))
            for key in value:
                if key in allowed or any(re.search(p, str(key)) for p in patterns):
                    continue
                hint = suggest(str(key), allowed) or f"; allowed keys: {', '.join(allowed)}"
                self.problem((*path, key), f"unknown key {key!r} {self.context(path)}{hint}",
                             key=True)
        elif kind == "type":
            expected = expected_value
            names = [_JSON_TYPES.get(str(t), str(t))
                     for t in (expected if isinstance(expected, list) else [expected])]
            self.problem(path,
                         f"{where} must be {' or '.join(names)}, not {_kind(value)}{in_step}")
        elif kind == "enum":
            choices = ", ".join(repr(c) for c in expected_value)
            hint = suggest(str(value), [str(c) for c in expected_value])
            self.problem(path, f"{where} must be one of {choices}, not {value!r}{hint}{in_step}")
        elif kind in ("oneOf", "anyOf") and error.context:
            # Say what is wrong in the branch of the value's own type (a mapping where a
            # number or a mapping may go is judged as a mapping).
            fitting = [e for e in error.context if e.validator != "type" or e.relative_path]
            self.schema_problem(best_match(fitting or error.context), base)
        elif kind == "pattern" and path[-1:] == ("max-step-size",):
            self.problem(path, f"{where}: {value!r} is not a byte size; write a number and a "
                               f"unit: b, kb, mb or gb (e.g. 512kb, 10mb){in_step}")
        elif kind == "pattern" and error.validator_value == DURATION_PATTERN:
            self.problem(path, f"{where}: {_duration_message(value)}{in_step}")
        elif kind == "pattern" and path[-1:] == ("name",):
            self.problem(path, f"{where} {value!r} is not a valid name: start with a letter or "
                               "'_' and use only letters, digits, '_' and '-'")
        elif kind in ("minItems", "minLength", "minProperties") and error.validator_value == 1:
            self.problem(path, f"{where} must not be empty{in_step}")
        elif kind == "minimum":
            self.problem(path, f"{where} must be at least {error.validator_value}, "
                               f"not {value!r}{in_step}")
        else:
            self.problem(path, f"{where}: {error.message}{in_step}")

    def _step_at(self, path: YamlPath) -> tuple[YamlPath, dict[str, Any]] | None:
        for end in range(len(path), 0, -1):
            step = self.step_paths.get(path[:end])
            if step is not None:
                return path[:end], step
        return None


def render(path: YamlPath) -> str:
    """``("steps", 2, "with", "url")`` as ``steps[2].with.url``."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{str(part)!r}]"
    return text


def step_label(path: YamlPath, step: dict[str, Any]) -> str:
    """How a problem names a step: its name, or where it is when it has none."""
    name = step.get("name")
    return repr(name) if isinstance(name, str) else render(path)


def suggest(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` when one of ``choices`` is close to ``word``, else ""."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _custom_type(type_: Any) -> bool:
    """Whether ``type_`` names a registered step type that is not one of Signoff's own."""
    spec = get_step_type(type_) if isinstance(type_, str) else None
    return spec is not None and not spec.built_in


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 40 else "a string"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    return type(value).__name__


def _duration_message(value: Any) -> str:
    try:
        parse_duration(value)
    except DurationError as exc:
        return str(exc)
    return f"{value!r} is not a duration"


def line_col(doc: PositionedDocument, path: YamlPath) -> tuple[int, int]:
    """Where ``path`` is written, to sort by."""
    where = doc.locate(path)
    return where.line, where.column
