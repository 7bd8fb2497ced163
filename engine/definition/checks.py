"""Check one workflow document and freeze it: the passes behind :mod:`engine.definition.loader`.

The document is read with positions (:mod:`engine.definition.yaml_positions`), validated against
the JSON Schema shipped as ``engine/definition/workflow_schema.json``, then checked for what a
schema cannot say (step types and their options, unique names, references between
steps, conditions, templates, durations) while it is frozen into
:mod:`engine.definition.model` records. Every problem is kept, each at its line and column,
in a :class:`engine.definition.problem_report.ProblemReport`.

This module walks the document: step names and the references between steps, templates,
conditions and expressions, failure policies, the steps frozen. A step's type is checked by
:mod:`engine.definition.step_type_checks`; triggers, inputs, outputs and the workflows it
calls by :mod:`engine.definition.interface_checks`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from engine.definition import interface_checks, templates
from engine.definition.conditions import (
    Condition,
    Constant,
    evaluate_template_condition,
    is_template_condition,
    parse_condition,
)
from engine.definition.loops import (
    FOREACH_IGNORED,
    FOREACH_OWN,
    generated_loop_name,
    misplaced_loop_controls,
    step_loop,
)
from engine.definition.model import (
    Branch,
    FailurePolicy,
    IterationLimit,
    Location,
    RetryPolicy,
    Settings,
    Step,
    SwitchCase,
    Workflow,
)
from engine.definition.problem_report import ProblemReport, line_col, render, step_label, suggest
from engine.definition.step_type_checks import check_type, mark_markdown
from engine.definition.triggers import timezone_problem
from engine.definition.yaml_positions import (
    Position,
    PositionedDocument,
    YamlPath,
    YamlSyntaxError,
    load_with_positions,
)
from engine.errors import ConditionError, Problem, TemplateError

DEFAULT_RETRY_DELAY = timedelta(seconds=1)

_BYTE_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)\s*$", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


@dataclass(frozen=True)
class TemplateCondition(Condition):
    """An ``if``/``condition`` written as one ``${{ ... }}`` template, evaluated as Elastic
    does (:func:`engine.definition.conditions.evaluate_template_condition`): a boolean as
    it is, a string read as KQL, undefined false; another value, a string that is not KQL
    or a filter failing on the value raises, and the runner fails the step.
    """

    def __post_init__(self) -> None:
        templates.compile_template(self.text)
        object.__setattr__(self, "query", Constant(True))

    def evaluate(self, scope: Mapping[str, Any], *, now: datetime | None = None) -> bool:
        return evaluate_template_condition(self.text, scope, now=now)

    @property
    def references(self) -> frozenset[str]:
        return frozenset(templates.references(self.text))


@functools.cache
def _workflow_validator() -> Draft202012Validator:
    schema = resources.files("engine.definition").joinpath("workflow_schema.json").read_text("utf-8")
    return Draft202012Validator(json.loads(schema))


@dataclass(frozen=True)
class _Scope:
    """Who is asking, and whose output it may read."""

    name: str
    visible: frozenset[str]  # steps that ran before this one
    ancestors: tuple[str, ...]  # enclosing steps, outermost first


class Analysis:
    """One workflow document, checked and frozen by :meth:`run`."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.report = ProblemReport(source, text)
        self.step_names: dict[str, YamlPath] = {}  # first occurrence of each name
        self.declared_name: str | None = None
        self.name_position: Position | None = None

    @property
    def problems(self) -> list[Problem]:
        """Every problem found so far, in the order found."""
        return self.report.problems

    @property
    def doc(self) -> PositionedDocument:
        return self.report.doc

    @property
    def step_paths(self) -> dict[YamlPath, dict[str, Any]]:
        return self.report.step_paths

    def sorted_problems(self) -> list[Problem]:
        """Every problem found, once each, in file order."""
        return self.report.sorted()

    def called_workflows(self) -> list[tuple[str, Position]]:
        """The workflows this one calls by name, with where (see
        :func:`engine.definition.interface_checks.called_workflows`)."""
        return interface_checks.called_workflows(self.report)

    def run(self) -> Workflow | None:
        """Check the document: the frozen workflow, or None when there are problems."""
        try:
            self.report.doc = load_with_positions(self.text)
        except YamlSyntaxError as exc:
            self.problems.append(Problem(self.source, exc.line, exc.column,
                                         f"YAML syntax error: {exc}"))
            return None
        data = self.doc.data
        if data is None:
            self.report.problem((), "the file is empty; a workflow needs at least `name` and `steps`")
            return None
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            self.declared_name = data["name"]
            self.name_position = self.doc.locate(("name",))
        self._collect_steps(data)
        for duplicate in self.doc.duplicates:
            key = duplicate.path[-1]
            self.problems.append(Problem(
                self.source, duplicate.position.line, duplicate.position.column,
                f"duplicate key {key!r} {self.report.context(duplicate.path[:-1])} (first on line "
                f"{duplicate.first.line}); YAML keeps only the last one, so remove one of them"))
        for error in _workflow_validator().iter_errors(data):
            self.report.schema_problem(error, ())
        if not isinstance(data, dict):
            return None
        for path, type_ in misplaced_loop_controls(data):
            self.report.problem((*path, "type"), f"step {step_label(path, self.step_paths.get(path, {}))}"
                          f" of type {type_!r} is outside any loop: it is only valid inside the "
                          "steps of a foreach or while (an if or switch within them counts); "
                          "move it inside a loop or remove it")
        workflow = self._freeze(data)
        return None if self.problems else workflow

    # -- steps, names and references -------------------------------------------------

    def _collect_steps(self, data: Any) -> None:
        found: list[tuple[YamlPath, dict[str, Any]]] = []

        def walk(items: Any, path: YamlPath) -> None:
            if not isinstance(items, list):
                return
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    found.append(((*path, i), item))
                    for nested_path, nested in _nested_step_lists(item, (*path, i)):
                        walk(nested, nested_path)

        if isinstance(data, dict):
            walk(data.get("steps"), ("steps",))
            walk(_get(data, "settings", "on-failure", "fallback"),
                 ("settings", "on-failure", "fallback"))
        self.report.step_paths = dict(found)
        for path, step in sorted(found, key=lambda f: line_col(self.doc, f[0])):
            name = step.get("name")
            if not isinstance(name, str):
                continue
            first = self.step_names.setdefault(name, path)
            if first != path:
                self.report.problem((*path, "name"),
                              f"step name {name!r} is already used by the step on line "
                              f"{self.doc.locate(first).line}; names must be unique in the whole "
                              "workflow, nested steps included, since outputs are read as "
                              f"steps.{name}")
            loop = generated_loop_name(step)
            if loop is not None and self.step_names.setdefault(loop, path) != path:
                self.report.problem((*path, "foreach"),
                              f"step {name!r} with foreach runs as a loop named {loop!r}, as in "
                              "Elastic, but the step on line "
                              f"{self.doc.locate(self.step_names[loop]).line} has that name; "
                              "rename one of them", key=True)

    def _check_references(self, found: Iterable[str], path: YamlPath, scope: _Scope,
                          text: str = "") -> None:
        targets = sorted({ref.split(".")[1] for ref in found
                          if ref.startswith("steps.") and len(ref.split(".")) > 1})
        for target in targets:
            if target in scope.visible:
                continue
            me = repr(scope.name)
            if target == scope.name:
                message = f"step {me} reads its own output (steps.{target})"
            elif target not in self.step_names:
                hint = suggest(target, list(self.step_names))
                message = f"step {me} reads steps.{target}, but no step is named {target!r}{hint}"
                self.report.problem_in_scalar(path, text.find(f"steps.{target}"), message)
                continue
            elif target in scope.ancestors:
                message = (f"step {me} reads steps.{target}, which contains it and has not "
                           "finished when it runs")
            else:
                line = self.doc.locate(self.step_names[target]).line
                message = (f"step {me} reads steps.{target} (line {line}), which does not run "
                           "before it")
            self.report.problem_in_scalar(path, text.find(f"steps.{target}"),
                                    message + "; a step can only read the output of steps that "
                                    "ran before it: earlier steps in its list or before its "
                                    "enclosing if/foreach/switch")

    # -- freezing -------------------------------------------------------------------

    def _freeze(self, data: dict[str, Any]) -> Workflow | None:
        steps = self._steps(data.get("steps"), ("steps",), frozenset(), ())
        settings = Settings()
        raw_settings = data.get("settings")
        if isinstance(raw_settings, dict):
            everything = frozenset(self.step_names)  # a workflow fallback may follow any step
            timezone = raw_settings.get("timezone")
            if isinstance(timezone, str) and (problem := timezone_problem(timezone)):
                self.report.problem(("settings", "timezone"), f"settings.timezone: {problem}")
            settings = Settings(
                timeout=self.report.duration(raw_settings, "timeout", ("settings",)),
                on_failure=self._failure_policy(raw_settings.get("on-failure"),
                                                ("settings", "on-failure"),
                                                _Scope("", everything, ())),
                timezone=timezone if isinstance(timezone, str) else None,
                max_step_size=self._byte_size(raw_settings, "max-step-size", ("settings",)),
                concurrency=dict(raw_settings.get("concurrency") or {}),
                liquid=dict(raw_settings.get("liquid") or {}))
        triggers = tuple(interface_checks.trigger(self.report, t, ("triggers", i), settings.timezone or "UTC")
                         for i, t in enumerate(data.get("triggers") or []) if isinstance(t, dict))
        inputs, inputs_schema = interface_checks.declared_inputs(self.report, data)
        outputs, outputs_schema = interface_checks.declared_outputs(self.report, data)
        interface_checks.check_composition(self.report, data)
        if self.problems:
            return None
        version = data.get("version")
        return Workflow(
            name=data["name"], steps=steps, source=self.source, text=self.text,
            digest=hashlib.sha256(self.text.encode("utf-8")).hexdigest(),
            description=data.get("description") or "", enabled=data.get("enabled", True),
            triggers=triggers, settings=settings, consts=dict(data.get("consts") or {}),
            inputs=inputs, inputs_schema=inputs_schema,
            outputs=outputs, outputs_schema=outputs_schema,
            tags=tuple(data.get("tags") or ()),
            version=None if version is None else str(version))

    def _steps(self, items: Any, path: YamlPath, visible: frozenset[str],
               ancestors: tuple[str, ...]) -> tuple[Step, ...]:
        frozen: list[Step] = []
        if not isinstance(items, list):
            return ()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            step = self._step(item, (*path, i), visible, ancestors)
            if step is not None:
                frozen.append(step)
            visible = visible | _names_within(item)  # nested steps of earlier siblings may have run
        return tuple(frozen)

    def _step(self, data: dict[str, Any], path: YamlPath, visible: frozenset[str],
              ancestors: tuple[str, ...]) -> Step | None:
        name, type_ = data.get("name"), data.get("type")
        scope = _Scope(name if isinstance(name, str) else render(path), visible, ancestors)
        options = mark_markdown(type_, data.get("with", {}))
        params = {key: data[key] for key in self.report.param_keys(path) if key in data}
        if isinstance(type_, str):
            check_type(self.report, type_, data, path, options, params)
        self._check_templates(options, (*path, "with"), scope)
        self._check_templates(params, path, scope)
        if_ = self._condition(data, "if", path, scope)
        # A while's condition is checked after each iteration: it reads the steps of its body.
        condition = self._condition(data, "condition", path, scope if type_ != "while" else
                                    _Scope(scope.name, visible | (_names_within(data)
                                                                  - {scope.name}), ancestors))
        if "foreach" in data and type_ in FOREACH_IGNORED:
            self.report.problem((*path, "foreach"), f"key 'foreach' {self.report.context(path)} has no "
                          f"effect on a step of type {type_!r} (Elastic ignores it there); wrap "
                          "the step in a foreach step", key=True)
        foreach = self._foreach(data, path, scope)
        expression = self._expression(data, "expression", path, scope)
        on_failure = self._failure_policy(
            data.get("on-failure"), (*path, "on-failure"),
            _Scope(scope.name, visible | _names_within(data), ancestors))
        inner = (*ancestors, scope.name)
        cases = tuple(
            SwitchCase(case.get("match"),
                       self._steps(case.get("steps"), (*path, "cases", j, "steps"), visible, inner))
            for j, case in enumerate(data.get("cases") or []) if isinstance(case, dict))
        pos = self.doc.locate(path)
        step = Step(
            name=scope.name, type=str(type_), location=Location(self.source, pos.line, pos.column),
            with_=options if isinstance(options, dict) else {}, params=params, if_=if_,
            connector_id=data.get("connector-id"),
            timeout=self.report.duration(data, "timeout", path), on_failure=on_failure,
            condition=condition,
            steps=self._steps(data.get("steps"), (*path, "steps"), visible, inner),
            else_=self._steps(data.get("else"), (*path, "else"), visible, inner),
            foreach=foreach, expression=expression, cases=cases,
            default=self._steps(data.get("default"), (*path, "default"), visible, inner),
            branches=self._branches(data, path, visible, inner),
            max_iterations=_iteration_limit(data.get("max-iterations")),
            iteration_timeout=self.report.duration(data, "iteration-timeout", path),
            iteration_on_failure=self._failure_policy(
                data.get("iteration-on-failure"), (*path, "iteration-on-failure"),
                _Scope(scope.name, visible | _names_within(data), inner)),
            max_step_size=self._byte_size(data, "max-step-size", path))
        return step_loop(step) if step.foreach is not None and type_ not in FOREACH_OWN else step

    def _branches(self, data: dict[str, Any], path: YamlPath, visible: frozenset[str],
                  inner: tuple[str, ...]) -> tuple[Branch, ...]:
        """A ``parallel`` step's static branches; each branch's steps see what ran before."""
        given = data.get("branches")
        return tuple(
            Branch(str(branch.get("name")),
                   self._steps(branch.get("steps"), (*path, "branches", j, "steps"), visible,
                               inner))
            for j, branch in enumerate(given if isinstance(given, list) else [])
            if isinstance(branch, dict))

    def _foreach(self, data: dict[str, Any], path: YamlPath,
                 scope: _Scope) -> str | tuple[Any, ...] | None:
        """A loop's items: a list written in YAML or as a JSON string, else an expression."""
        given = data.get("foreach")
        if isinstance(given, list):
            self._check_templates(given, (*path, "foreach"), scope)
            return tuple(given)
        if isinstance(given, str) and given.lstrip().startswith("["):
            try:
                items = json.loads(given)
            except ValueError:
                items = None
            if isinstance(items, list):
                return tuple(items)
        return self._expression(data, "foreach", path, scope)

    def _byte_size(self, data: dict[str, Any], key: str, path: YamlPath) -> int | None:
        match = _BYTE_SIZE.match(data[key]) if isinstance(data.get(key), str) else None
        if match is None:
            return None  # absent, or the workflow schema reports it
        return int(float(match.group(1)) * _BYTES[match.group(2).lower()])

    def _check_templates(self, value: Any, path: YamlPath, scope: _Scope) -> None:
        for leaf, text in _strings(value, path):
            if not templates.has_template(text):
                continue
            try:
                templates.compile_template(text)
            except TemplateError as exc:
                self.report.problem_in_scalar(leaf, exc.column - 1,
                                        f"template error in {render(leaf)}: {exc}")
                continue
            self._check_references(templates.references(text), leaf, scope, text)

    def _condition(self, data: dict[str, Any], key: str, path: YamlPath,
                   scope: _Scope) -> Condition | None:
        text = data.get(key)
        if key not in data or not isinstance(text, str | bool):
            return None
        path = (*path, key)
        try:
            if isinstance(text, str) and is_template_condition(text):
                condition: Condition = TemplateCondition(text)
            else:
                condition = parse_condition(text)
        except (ConditionError, TemplateError) as exc:
            self.report.problem_in_scalar(path, exc.column - 1,
                                    f"invalid condition in {render(path)}: {exc}")
            return None
        self._check_references(condition.references, path, scope,
                               text if isinstance(text, str) else "")
        return condition

    def _expression(self, data: dict[str, Any], key: str, path: YamlPath,
                    scope: _Scope) -> str | None:
        text = data.get(key)
        if not isinstance(text, str):
            return None
        path = (*path, key)
        # A bare expression is evaluated as if written {{ expression }}.
        source, shift = (text, 0) if templates.has_template(text) else (f"{{{{ {text} }}}}", 3)
        try:
            templates.compile_template(source)
        except TemplateError as exc:
            self.report.problem_in_scalar(path, exc.column - 1 - shift,
                                    f"invalid expression in {render(path)}: {exc}")
            return text
        self._check_references(templates.references(source), path, scope, text)
        return text

    def _failure_policy(self, value: Any, path: YamlPath, scope: _Scope) -> FailurePolicy | None:
        if not isinstance(value, dict):
            return None
        retry, raw = None, value.get("retry")
        if isinstance(raw, dict) and isinstance(raw.get("max-attempts"), int):
            delay = self.report.duration(raw, "delay", (*path, "retry"))
            multiplier = raw.get("multiplier", 2)
            retry = RetryPolicy(raw["max-attempts"],
                                DEFAULT_RETRY_DELAY if delay is None else delay,
                                str(raw.get("strategy", "fixed")),
                                multiplier=float(multiplier)
                                if isinstance(multiplier, int | float) else 2.0,
                                max_delay=self.report.duration(raw, "max-delay", (*path, "retry")),
                                jitter=raw.get("jitter") is True,
                                condition=self._condition(raw, "condition", (*path, "retry"),
                                                          scope))
        fallback = self._steps(value.get("fallback"), (*path, "fallback"), scope.visible,
                               scope.ancestors)
        continue_, continue_if = value.get("continue"), None
        if isinstance(continue_, str) and continue_.strip().lower() in ("true", "false"):
            continue_ = continue_.strip().lower() == "true"
        elif isinstance(continue_, str):
            continue_if = self._condition(value, "continue", path, scope)
        return FailurePolicy(retry=retry, continue_=continue_ is True, continue_if=continue_if,
                             fallback=fallback)

def _nested_step_lists(step: dict[str, Any],
                       path: YamlPath) -> Iterator[tuple[YamlPath, list[Any]]]:
    for key in ("steps", "else", "default"):
        if isinstance(step.get(key), list):
            yield (*path, key), step[key]
    cases = step.get("cases")
    for j, case in enumerate(cases if isinstance(cases, list) else []):
        if isinstance(case, dict) and isinstance(case.get("steps"), list):
            yield (*path, "cases", j, "steps"), case["steps"]
    branches = step.get("branches")
    for j, branch in enumerate(branches if isinstance(branches, list) else []):
        if isinstance(branch, dict) and isinstance(branch.get("steps"), list):
            yield (*path, "branches", j, "steps"), branch["steps"]
    for policy in ("on-failure", "iteration-on-failure"):
        fallback = _get(step, policy, "fallback")
        if isinstance(fallback, list):
            yield (*path, policy, "fallback"), fallback


def _iteration_limit(value: Any) -> IterationLimit | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return IterationLimit(value)
    if isinstance(value, dict) and isinstance(value.get("limit"), int):
        return IterationLimit(value["limit"], str(value.get("on-limit", "continue")))
    return None


def _names_within(step: dict[str, Any]) -> frozenset[str]:
    names = {step["name"]} if isinstance(step.get("name"), str) else set()
    loop = generated_loop_name(step)
    if loop is not None:
        names.add(loop)
    for _, items in _nested_step_lists(step, ()):
        for item in items:
            if isinstance(item, dict):
                names |= _names_within(item)
    return frozenset(names)


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _strings(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))
