"""Policy rules for the agent and CI gate: is this tool call allowed, blocked, or reviewed?

A policy file (``SIGNOFF_POLICY``: one YAML file, or a directory of them read in path
order) is the format of the reference article on policy rules, which loads unchanged::

    rules:
      - tool: "file.write"        # a glob over tool names: stripe.*, mcp__*, Bash
        action: escalate           # allow | escalate | block
        when: "args.amount > 50"   # optional KQL over args, context and tool
        reason: "File writes require review"
    default: escalate              # when no rule matches (escalate when absent)
    tests:                         # tool calls and the decision they must get
      - {tool: file.write, args: {path: /etc/passwd}, expect: escalate}

Every matching rule counts and the strictest wins (block > escalate > allow). A rule with
``shadow: true`` is evaluated and reported (what it would have decided) but never
enforced. An escalating rule takes a human step's review options (``approvers``,
``channel``, ``sla``, ``remind``, ``escalation``, ``approvals-required``,
``allow-self-approval``, ``timeout``, ``on-timeout``, and a ``message`` template over
``tool``, ``args``, ``context``, ``summary`` and ``reason``), checked by the human step's
own schema and checks (:func:`engine.definition.step_type_checks.check_human_options`), so a rule's
options mean what they mean on a workflow step.

Pure, like the rest of the definition layer: problems are reported at file:line:column
as a workflow's are, and :class:`PolicySource` rereads changed files for the web process.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from stat import S_ISDIR
from typing import Any

from jsonschema import Draft202012Validator

from engine.definition import templates
from engine.definition.checks import TemplateCondition
from engine.definition.conditions import Condition, is_template_condition, parse_condition
from engine.definition.durations import parse_duration
from engine.definition.loader import workflow_files
from engine.definition.model import Location
from engine.definition.problem_report import ProblemReport
from engine.definition.step_type_checks import check_human_options
from engine.definition.yaml_positions import (
    PositionedDocument,
    YamlPath,
    YamlSyntaxError,
    load_with_positions,
)
from engine.errors import ConditionError, DurationError, PolicyInvalid, Problem, TemplateError

__all__ = ["Action", "Decision", "Policy", "PolicySource", "PolicyTest", "Rule",
           "PolicyTestResult", "is_policy_file", "load_policy", "parse_policy", "policy_problems",
           "run_tests"]

REVIEW_STEP_TYPE = "waitForInput"  # an escalation's review: Approve / Deny and a comment
# The review options a rule may set: the human step's own, less those a rule has no use for.
_NOT_FOR_RULES = frozenset({"schema", "decision-field", "channels"})
_WHEN_NAMES = ("args", "context", "tool")  # what a rule's `when` reads
_MESSAGE_NAMES = ("tool", "args", "context", "summary", "reason")  # what its `message` reads
_ANSWER_NAMES = ("approved", "comment")  # the review's answer: not argument names to edit


class Action(StrEnum):
    """What a policy decides for a tool call, from the most lenient to the strictest."""

    ALLOW = "allow"
    ESCALATE = "escalate"
    BLOCK = "block"

    @property
    def strictness(self) -> int:
        return _STRICTNESS[self]


_STRICTNESS = {Action.ALLOW: 0, Action.ESCALATE: 1, Action.BLOCK: 2}


@dataclass(frozen=True)
class Rule:
    """One rule of a policy file."""

    tool: str  # a glob over tool names (fnmatch: *, ?, [abc]), case-sensitive
    action: Action
    location: Location
    index: int  # its position among all the policy's rules, from 0
    when: Condition | None = None
    reason: str = ""
    shadow: bool = False
    editable: tuple[str, ...] = ()
    review: Mapping[str, Any] = field(default_factory=dict)  # the human step's options
    timeout: timedelta | None = None
    # The glob's text before its first wildcard: a call whose name does not start with it
    # is passed over with one startswith, not a pattern match (1,000 rules: 0.05 ms a call).
    prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cut = min((i for i, c in enumerate(self.tool) if c in "*?["), default=len(self.tool))
        object.__setattr__(self, "prefix", self.tool[:cut])

    def matches(self, tool: str, scope: Mapping[str, Any]) -> bool:
        """Whether this rule applies to a call of ``tool`` (``scope``: args, context, tool)."""
        if not tool.startswith(self.prefix) or not fnmatch.fnmatchcase(tool, self.tool):
            return False
        return self.when is None or self.when.evaluate(scope)

    def to_json(self) -> dict[str, Any]:
        """The rule as the API and ``signoff policy check --json`` name it."""
        return {"index": self.index, "tool": self.tool, "action": self.action.value,
                "when": self.when.text if self.when else None, "reason": self.reason or None,
                "shadow": self.shadow, "source": str(self.location)}


@dataclass(frozen=True)
class PolicyTest:
    """One of a policy file's ``tests``: a tool call and the decision it must get."""

    tool: str
    args: Mapping[str, Any]
    context: Mapping[str, Any]
    expect: Action
    location: Location


@dataclass(frozen=True)
class Decision:
    """What a policy decides for one call, and why."""

    action: Action
    rules: tuple[Rule, ...]  # the enforced rules that matched, in file order
    deciding: Rule | None  # the first of them with the strictest action; None: the default
    shadow: tuple[Rule, ...] = ()  # shadow rules that matched (not enforced)
    would_be: Action | None = None  # the decision had the shadow rules been enforced

    @property
    def reason(self) -> str:
        if self.deciding is not None:
            return self.deciding.reason or f"rule {self.deciding.index + 1} " \
                f"({self.deciding.tool}) says {self.action.value}"
        return f"no rule matches; the policy's default is {self.action.value}"

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.action.value, "reason": self.reason,
                "rules": [rule.to_json() for rule in self.rules],
                "rule": self.deciding.to_json() if self.deciding else None,
                "shadow": None if not self.shadow else {
                    "decision": (self.would_be or self.action).value,
                    "rules": [rule.to_json() for rule in self.shadow]}}


@dataclass(frozen=True)
class Policy:
    """Rules, the default, and the tests, from one file or a directory of them."""

    rules: tuple[Rule, ...] = ()
    default: Action = Action.ESCALATE
    tests: tuple[PolicyTest, ...] = ()

    def decide(self, tool: str, args: Mapping[str, Any] | None = None,
               context: Mapping[str, Any] | None = None) -> Decision:
        """Every matching rule counts; the strictest enforced one wins, else the default."""
        scope = {"args": dict(args or {}), "context": dict(context or {}), "tool": tool}
        matched = [rule for rule in self._candidates(tool) if rule.matches(tool, scope)]
        enforced = tuple(rule for rule in matched if not rule.shadow)
        shadow = tuple(rule for rule in matched if rule.shadow)
        deciding = _strictest(enforced)
        action = deciding.action if deciding else self.default
        would = _strictest(matched)
        would_be = (would.action if would else self.default) if shadow else None
        return Decision(action, enforced, deciding, shadow, would_be)

    def _candidates(self, tool: str) -> list[Rule]:
        """The rules whose glob's literal start ``tool`` starts with, in the policy's order:
        one dict look-up per prefix of the name, not one test per rule (1,000 rules: from
        0.1 ms a call to 0.01)."""
        by_prefix = self._by_prefix
        found: list[Rule] = []
        for end in range(len(tool) + 1):
            found.extend(by_prefix.get(tool[:end], ()))
        return sorted(found, key=lambda rule: rule.index) if len(found) > 1 else found

    @functools.cached_property
    def _by_prefix(self) -> dict[str, list[Rule]]:
        index: dict[str, list[Rule]] = {}
        for rule in self.rules:
            index.setdefault(rule.prefix, []).append(rule)
        return index


def _strictest(rules: Iterable[Rule]) -> Rule | None:
    best: Rule | None = None
    for rule in rules:
        if best is None or rule.action.strictness > best.action.strictness:
            best = rule
    return best


@dataclass(frozen=True)
class PolicyTestResult:
    """A policy test and the decision the policy gives it."""

    test: PolicyTest
    decision: Decision

    @property
    def passed(self) -> bool:
        return self.decision.action is self.test.expect


def run_tests(policy: Policy) -> list[PolicyTestResult]:
    """Each of the policy's ``tests``, decided."""
    return [PolicyTestResult(test, policy.decide(test.tool, test.args, test.context))
            for test in policy.tests]


# -- loading -------------------------------------------------------------------------------


def parse_policy(text: str, source: str = "<string>") -> Policy:
    """Parse and check one policy file; PolicyInvalid lists every problem by line."""
    return _combine([_PolicyFile(text, source)])


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """The policy in a file, or in every *.yml/*.yaml file under a directory (path order)."""
    files = _files(path)
    return _combine([_PolicyFile.read(file) for file in files])


def policy_problems(paths: Iterable[str | os.PathLike[str]]) -> list[Problem]:
    """Every problem in the given policy files, read together as one policy."""
    try:
        _combine([_PolicyFile.read(Path(path)) for path in paths])
    except PolicyInvalid as exc:
        return exc.problems
    return []


def is_policy_file(path: str | os.PathLike[str]) -> bool:
    """Whether a YAML file is a policy rather than a workflow: a mapping with ``rules`` and
    no ``steps`` (a file that does not parse is left to the workflow checks)."""
    try:
        data = load_with_positions(Path(path).read_text(encoding="utf-8")).data
    except (OSError, UnicodeDecodeError, YamlSyntaxError):
        return False
    return isinstance(data, dict) and "rules" in data and "steps" not in data


def _files(path: str | os.PathLike[str]) -> list[Path]:
    if not Path(path).exists():
        raise PolicyInvalid([Problem(os.fspath(path), 1, 1, "no such file or directory "
                                     "(SIGNOFF_POLICY names a policy file or a directory)")])
    return workflow_files([path])


def _combine(files: list[_PolicyFile]) -> Policy:
    rules: list[Rule] = []
    tests: list[PolicyTest] = []
    default: tuple[Action, str] | None = None
    problems: list[Problem] = []
    for file in files:
        file.check(first_index=len(rules))
        problems.extend(file.problems)
        rules.extend(file.rules)
        tests.extend(file.tests)
        if file.default is not None:
            if default is not None and default[0] is not file.default[0]:
                line, column = file.default[1]
                problems.append(Problem(file.source, line, column,
                                        f"default is {file.default[0].value} here but "
                                        f"{default[0].value} in {default[1]}; a policy has "
                                        "one default, so set it in one file"))
            elif default is None:
                default = (file.default[0], f"{file.source}:{file.default[1][0]}")
    if problems:
        raise PolicyInvalid(sorted(set(problems), key=lambda p: (p.source, p.line, p.column)))
    return Policy(tuple(rules), default[0] if default else Action.ESCALATE, tuple(tests))


@functools.cache
def _schema() -> dict[str, Any]:
    text = resources.files("engine.definition").joinpath("policy_schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


class _PolicyFile:
    """One policy document, checked and frozen by :meth:`check`."""

    def __init__(self, text: str | None, source: str, problem: str | None = None) -> None:
        self.text = text
        self.source = source
        self.problems: list[Problem] = ([Problem(source, 1, 1, problem)] if problem else [])
        self.rules: list[Rule] = []
        self.tests: list[PolicyTest] = []
        self.default: tuple[Action, tuple[int, int]] | None = None
        self.doc = PositionedDocument(data=None, text=text or "")

    @classmethod
    def read(cls, path: Path) -> _PolicyFile:
        try:
            return cls(path.read_text(encoding="utf-8"), os.fspath(path))
        except UnicodeDecodeError as exc:
            return cls(None, os.fspath(path), f"cannot read: not UTF-8 text ({exc.reason})")
        except OSError as exc:
            return cls(None, os.fspath(path), f"cannot read: {exc.strerror or exc}")

    def check(self, first_index: int) -> None:
        if self.text is None:
            return
        try:
            self.doc = load_with_positions(self.text)
        except YamlSyntaxError as exc:
            self.problems.append(Problem(self.source, exc.line, exc.column,
                                         f"YAML syntax error: {exc}"))
            return
        data = self.doc.data
        for duplicate in self.doc.duplicates:
            self.problems.append(Problem(
                self.source, duplicate.position.line, duplicate.position.column,
                f"duplicate key {duplicate.path[-1]!r} (first on line {duplicate.first.line}); "
                "YAML keeps only the last one, so remove one of them"))
        report = self._report()
        for error in Draft202012Validator(_schema()).iter_errors(data):
            report.schema_problem(error, ())
        self.problems.extend(report.problems)
        if not isinstance(data, dict):
            return
        if isinstance(data.get("default"), str) and data["default"] in Action.__members__.values():
            where = self.doc.locate(("default",))
            self.default = (Action(data["default"]), (where.line, where.column))
        for i, raw in enumerate(data.get("rules") or []):
            if isinstance(raw, dict):
                rule = self._rule(raw, ("rules", i), first_index + len(self.rules))
                if rule is not None:
                    self.rules.append(rule)
        for i, raw in enumerate(data.get("tests") or []):
            if isinstance(raw, dict) and isinstance(raw.get("tool"), str) and raw.get("expect") \
                    in Action.__members__.values():
                self.tests.append(PolicyTest(
                    raw["tool"], dict(raw.get("args") or {}), dict(raw.get("context") or {}),
                    Action(raw["expect"]), self._location(("tests", i))))

    def _rule(self, raw: dict[str, Any], path: YamlPath, index: int) -> Rule | None:
        tool, action = raw.get("tool"), raw.get("action")
        review = {key: value for key, value in raw.items() if key in _review_keys()}
        timeout = self._timeout(raw, path)
        if action != Action.ESCALATE.value:
            for key in [*review, *(["timeout"] if "timeout" in raw else [])]:
                self._problem((*path, key), f"{_render((*path, key))}: only an escalating rule "
                              f"takes review options, and this rule's action is {action}",
                              key=True)
        else:
            report = self._report()
            check_human_options(report, REVIEW_STEP_TYPE, review, path)
            self.problems.extend(report.problems)
            self._check_message(review.get("message"), (*path, "message"))
            self._check_names(review.get("message"), (*path, "message"), _MESSAGE_NAMES,
                              templates.references if isinstance(review.get("message"), str)
                              else None)
        for i, name in enumerate(raw.get("editable") or []):
            if action != Action.ESCALATE.value:
                self._problem((*path, "editable"), f"{_render((*path, 'editable'))}: only an "
                              "escalating rule's arguments can be edited by a reviewer",
                              key=True)
                break
            if name in _ANSWER_NAMES:
                self._problem((*path, "editable", i), f"{_render((*path, 'editable', i))}: "
                              f"{name!r} is the review's own answer field; it cannot also be "
                              "an argument the reviewer edits")
        when = self._when(raw, path)
        if not isinstance(tool, str) or not isinstance(action, str) \
                or action not in Action.__members__.values():
            return None
        editable = raw.get("editable")
        return Rule(tool=tool, action=Action(action), location=self._location(path), index=index,
                    when=when, reason=str(raw.get("reason") or ""), shadow=raw.get("shadow") is True,
                    editable=tuple(editable) if isinstance(editable, list) else (),
                    review=review, timeout=timeout)

    def _when(self, raw: dict[str, Any], path: YamlPath) -> Condition | None:
        text = raw.get("when")
        if not isinstance(text, str | bool):
            return None
        at = (*path, "when")
        try:
            if isinstance(text, str) and is_template_condition(text):
                condition: Condition = TemplateCondition(text)
            else:
                condition = parse_condition(text if isinstance(text, str)
                                            else "true" if text else "false")
        except (ConditionError, TemplateError) as exc:
            line, column = self.doc.locate_in_scalar(at, max(exc.column - 1, 0))
            self.problems.append(Problem(self.source, line, column,
                                         f"invalid condition in {_render(at)}: {exc}"))
            return None
        self._check_names(text, at, _WHEN_NAMES, lambda _: set(condition.references))
        return condition

    def _check_names(self, text: Any, path: YamlPath, names: tuple[str, ...],
                     read: Any) -> None:
        if not isinstance(text, str) or read is None:
            return
        try:
            found = read(text)
        except TemplateError:
            return  # reported by the template checks
        for ref in sorted(found):
            root = ref.split(".")[0].split("[")[0]
            if root not in names:
                line, column = self.doc.locate_in_scalar(path, max(text.find(root), 0))
                self.problems.append(Problem(
                    self.source, line, column,
                    f"{_render(path)} reads {ref!r}, which a policy rule does not have; it "
                    f"reads {', '.join(names)}"))

    def _timeout(self, raw: dict[str, Any], path: YamlPath) -> timedelta | None:
        value = raw.get("timeout")
        if value is None:
            return None
        try:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise DurationError(f"{value!r} is not a duration (e.g. 30m, 2h, 1d)")
            return parse_duration(value)
        except DurationError as exc:
            self._problem((*path, "timeout"), f"{_render((*path, 'timeout'))}: {exc}")
            return None

    def _report(self) -> ProblemReport:
        report = ProblemReport(self.source, self.doc.text)
        report.doc = self.doc
        return report

    def _check_message(self, message: Any, path: YamlPath) -> None:
        if not isinstance(message, str) or not templates.has_template(message):
            return
        try:
            templates.compile_template(message)
        except TemplateError as exc:
            line, column = self.doc.locate_in_scalar(path, max(exc.column - 1, 0))
            self.problems.append(Problem(self.source, line, column,
                                         f"template error in {_render(path)}: {exc}"))

    def _problem(self, path: YamlPath, message: str, *, key: bool = False) -> None:
        where = self.doc.locate_key(path) if key else self.doc.locate(path)
        self.problems.append(Problem(self.source, where.line, where.column, message))

    def _location(self, path: YamlPath) -> Location:
        where = self.doc.locate(path)
        return Location(self.source, where.line, where.column)


@functools.cache
def _review_keys() -> frozenset[str]:
    from engine.definition.step_types import get_step_type

    spec = get_step_type(REVIEW_STEP_TYPE)
    assert spec is not None  # a built-in type
    return frozenset(spec.options_schema.get("properties", {})) - _NOT_FOR_RULES


def _render(path: YamlPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# -- the web process's policy --------------------------------------------------------------


class PolicySource:
    """The policy at ``SIGNOFF_POLICY``, read again when one of its files changes; with
    no path, the empty policy (every call escalates). :meth:`current` raises
    PolicyInvalid while the files have problems, so a broken policy decides nothing."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self._stamp: tuple[Any, ...] | None = None
        self._policy: Policy | None = None
        self._error: PolicyInvalid | None = None
        self._lock = threading.Lock()

    def current(self) -> Policy:
        if self.path is None:
            return Policy()
        with self._lock:
            stamp = self._files_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._policy, self._error = load_policy(self.path), None
                except PolicyInvalid as exc:
                    self._policy, self._error = None, exc
            if self._error is not None:
                raise self._error
            assert self._policy is not None
            return self._policy

    def _files_stamp(self) -> tuple[Any, ...]:
        assert self.path is not None
        try:  # one file, the usual case: one stat, not a walk (each check reads the stamp)
            stat = self.path.stat()
        except OSError:
            return ("missing",)
        if not S_ISDIR(stat.st_mode):
            return ((os.fspath(self.path), stat.st_mtime_ns, stat.st_size),)
        stamps = []
        for file in workflow_files([self.path]):
            try:
                stat = file.stat()
            except OSError:
                continue
            stamps.append((os.fspath(file), stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)
