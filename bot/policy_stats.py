"""What ``/approvals stats`` says of the agent and CI gate's policy, after the review stats.

- **Graduation**: each escalating rule whose last :data:`~engine.run.graduation.DEFAULT_LAST`
  decisions were all approvals, who approved, and the ``allow`` rule (narrowed by a ``when``
  to the arguments those approvals covered) that could replace it, as
  ``signoff policy suggest`` prints it: a proposal for a person to put in the policy file.
- **Shadow rules**: each ``shadow: true`` rule, how many calls it matched and how many of
  them it would have decided otherwise had it been enforced.

Read from the gate's requests and counters in Redis (:mod:`engine.run.graduation`); with no
policy (``SIGNOFF_POLICY`` unset) there is nothing to say and nothing is added.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bot import texts
from bot.block_kit import context_block, header_block, section_block
from bot.mrkdwn import escape_mrkdwn
from engine.definition.policy import Rule
from engine.errors import PolicyInvalid
from engine.run.gate import Gate
from engine.run.graduation import (
    DEFAULT_LAST,
    ShadowTrial,
    Suggestion,
    shadow_trials,
    suggestions,
)

log = logging.getLogger(__name__)

MAX_SHOWN = 10  # of each kind: Slack allows 50 blocks a message, the review stats take up to 22


@dataclass(frozen=True)
class PolicyStats:
    """The policy's graduation candidates and shadow trials; ``problem`` when it is broken."""

    suggestions: tuple[Suggestion, ...] = ()
    shadows: tuple[ShadowTrial, ...] = ()
    problem: str | None = None


def policy_stats(gate: Gate, last: int = DEFAULT_LAST) -> PolicyStats:
    """Read what the stats say of ``gate``'s policy."""
    try:
        policy = gate.policy.current()
    except PolicyInvalid as exc:
        return PolicyStats(problem=texts.policy_broken(len(exc.problems)))
    return PolicyStats(tuple(suggestions(gate, policy, last)),
                       tuple(shadow_trials(gate, policy)))


def policy_stats_blocks(stats: PolicyStats, last: int = DEFAULT_LAST) -> list[dict[str, Any]]:
    """The blocks after the review stats; none when the policy has nothing to report."""
    if stats.problem:
        return [header_block(texts.POLICY_STATS_TITLE), section_block(stats.problem)]
    if not stats.suggestions and not stats.shadows:
        return []
    blocks = [header_block(texts.POLICY_STATS_TITLE)]
    for suggestion in stats.suggestions[:MAX_SHOWN]:
        deciders = ", ".join(escape_mrkdwn(who) for who in suggestion.deciders)
        blocks.append(section_block(
            f"{texts.graduation_line(_rule(suggestion.rule), suggestion.decisions, deciders)}\n"
            f"```{escape_mrkdwn(suggestion.yaml())}```"))
    for trial in stats.shadows[:MAX_SHOWN]:
        blocks.append(section_block(texts.shadow_line(
            _rule(trial.rule), trial.rule.action.value, trial.calls, trial.changed)))
    hidden = max(0, len(stats.suggestions) - MAX_SHOWN) + max(0, len(stats.shadows) - MAX_SHOWN)
    if hidden:
        blocks.append(context_block(texts.more_rules(hidden)))
    if stats.suggestions:
        blocks.append(context_block(texts.graduation_hint(last)))
    return blocks


def _rule(rule: Rule) -> str:
    when = f" when `{escape_mrkdwn(rule.when.text)}`" if rule.when else ""
    return f"`{escape_mrkdwn(rule.tool)}`{when} ({escape_mrkdwn(str(rule.location))})"
