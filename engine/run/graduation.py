"""Graduation: escalating rules whose reviewers approve every time, and the rule to replace them.

A team starts with many calls escalated and relaxes as it learns (the reference article:
"if 99% of escalations are approved, you can likely convert some of those rules to
auto-allow"). :func:`suggestions` reads each escalating rule's recent requests (the
executions of its review workflow, newest first, by the workflow index) and, for a rule
whose last ``last`` decisions were all approvals, proposes an ``allow`` rule narrowed to the
arguments those approvals covered (:func:`narrowing`): a number at most the largest seen, a
text or a boolean among the few values seen. The proposal is only that: a person edits the
policy file, and its ``tests:`` and review in CI decide.

A rule set ``shadow: true`` is tried before it is enforced: the gate counts, per shadow
rule, the calls it matched and those whose decision it would have changed
(:meth:`engine.run.gate.Gate.record_shadow`); :func:`shadow_trials` reads them back for the
policy's shadow rules, so ``/approvals stats`` can say whether enforcing one would matter.

:func:`narrowing` and :func:`suggest` are pure; :func:`suggestions` and
:func:`shadow_trials` read the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.definition.conditions import parse_condition
from engine.definition.policy import Action, Policy, Rule
from engine.errors import ConditionError, ExecutionNotFound
from engine.run.gate import Gate, GateStatus, shadow_field
from engine.state import keys

DEFAULT_LAST = 10  # decisions in a row, all approvals, that make a rule a candidate
MAX_VALUES = 5  # a text argument is narrowed to the values seen when there are at most this many
SCANNED = 500  # requests read per rule, newest first


@dataclass(frozen=True)
class Suggestion:
    """An escalating rule its reviewers always approve, and the allow rule to replace it."""

    rule: Rule
    decisions: int  # how many decisions, all approvals
    deciders: tuple[str, ...]
    when: str | None  # the narrowed condition, None when no argument narrows it

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule.to_json(), "decisions": self.decisions,
                "deciders": list(self.deciders),
                "suggested": {"tool": self.rule.tool, "action": Action.ALLOW.value,
                              **({"when": self.when} if self.when else {})}}

    def yaml(self) -> str:
        """The suggested rule as a policy file's entry."""
        lines = [f"- tool: {json.dumps(self.rule.tool)}", "  action: allow"]
        if self.when:
            lines.append(f"  when: {json.dumps(self.when, ensure_ascii=False)}")
        lines.append(f"  reason: {json.dumps(f'graduated: {self.decisions} approvals in a row')}")
        return "\n".join(lines)


def suggest(rule: Rule, outcomes: Sequence[tuple[str, Mapping[str, Any], str | None]],
            last: int) -> Suggestion | None:
    """``outcomes``: the rule's decided requests, newest first, as (status, arguments asked,
    who decided). A suggestion when the newest ``last`` are all approvals."""
    recent = [o for o in outcomes if o[0] in (GateStatus.APPROVED, GateStatus.DENIED)][:last]
    if len(recent) < last or any(status != GateStatus.APPROVED for status, _, _ in recent):
        return None
    seen = [args for _, args, _ in recent]
    clauses = narrowing(seen)
    if rule.when is not None:
        clauses.insert(0, f"({rule.when.text})")
    deciders = tuple(sorted({who for _, _, who in recent if who}))
    return Suggestion(rule, len(recent), deciders, " and ".join(clauses) or None)


def narrowing(seen: Sequence[Mapping[str, Any]]) -> list[str]:
    """KQL clauses over ``args`` that every one of ``seen`` satisfies and that keep an
    allow rule to calls like them; arguments that vary too much are left out."""
    clauses = []
    names = sorted(set.intersection(*(set(args) for args in seen))) if seen else []
    for name in names:
        values = [args[name] for args in seen]
        field = f"args.{name}" if name.isidentifier() else f"args[{json.dumps(name)}]"
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            clause = f"{field} <= {max(values)}"
        elif all(isinstance(v, bool) for v in values) and len(set(values)) == 1:
            clause = f"{field} : {str(values[0]).lower()}"
        elif all(isinstance(v, str) for v in values) and len(set(values)) <= MAX_VALUES:
            quoted = " or ".join(_quoted(v) for v in sorted(set(values)))
            clause = f"{field} : ({quoted})"
        else:
            continue
        if _holds_for_all(clause, seen):
            clauses.append(clause)
    return clauses


def suggestions(gate: Gate, policy: Policy, last: int) -> list[Suggestion]:
    """The policy's escalating rules whose last ``last`` decisions were all approvals."""
    found = []
    for rule in policy.rules:
        if rule.action is not Action.ESCALATE or rule.shadow:
            continue
        summaries, _ = gate.engine.list_executions(workflow=f"gate: {rule.tool}", limit=SCANNED)
        outcomes = []
        for summary in summaries:
            try:
                request = gate.request(summary.id)
            except ExecutionNotFound:
                continue
            asked = request.get("rule") or {}
            if (asked.get("tool"), asked.get("when")) != (rule.tool, rule.when.text
                                                          if rule.when else None):
                continue  # another rule with the same glob
            outcomes.append((request["status"], request["requestedArgs"], request["decidedBy"]))
            if sum(o[0] in (GateStatus.APPROVED, GateStatus.DENIED) for o in outcomes) >= last:
                break  # the newest ``last`` decisions are all suggest() reads
        suggestion = suggest(rule, outcomes, last)
        if suggestion is not None:
            found.append(suggestion)
    return found


@dataclass(frozen=True)
class ShadowTrial:
    """A shadow rule, how many calls it matched, and how many of those it would have
    decided otherwise had it been enforced."""

    rule: Rule
    calls: int
    changed: int

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule.to_json(), "calls": self.calls, "changed": self.changed}


def shadow_trials(gate: Gate, policy: Policy) -> list[ShadowTrial]:
    """The policy's shadow rules with what the gate counted for them since they were added."""
    counts = gate.engine.store.counts(keys.GATE_SHADOW)
    return [ShadowTrial(rule, counts.get(shadow_field(rule, "calls"), 0),
                        counts.get(shadow_field(rule, "changed"), 0))
            for rule in policy.rules if rule.shadow]


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _holds_for_all(clause: str, seen: Sequence[Mapping[str, Any]]) -> bool:
    try:
        condition = parse_condition(clause)
    except ConditionError:
        return False
    return all(condition.evaluate({"args": dict(args)}) for args in seen)
