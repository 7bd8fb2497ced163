"""The agent and CI gate: a tool call checked against the policy, and reviewed when it escalates.

An agent or a script asks before it calls a tool (``POST /api/gate/check``). The policy
(:mod:`engine.definition.policy`) answers at once for ``allow`` and ``block``. For
``escalate``, the call becomes a durable execution like any other, started through
:meth:`Engine.run` with a workflow made from the deciding rule (:func:`review_workflow`):
one ``waitForInput`` step taking the rule's review options, answering ``{approved,
comment}``. So the audit trail, ``/approvals``, SLA escalation, the rules on who may
decide and the stats hold for agent calls as for workflows. The execution's id is the
request's id; its event holds the call (tool, arguments, their SHA-256, summary, context,
the rule and its reason).

An approval is bound to the call: it covers that tool with those exact arguments (by the
SHA-256 of their canonical JSON) for the requester who asked, once. The caller reports
running the call (:meth:`Gate.use`); the first report sets ``signoff:gate-use:{id}`` (SET
NX, so two racing reports cannot both succeed) and is audited as ``gate.used``; any other
use is refused with a reason (:class:`engine.errors.GateUseRefused`).

A request's state is read from its execution: ``pending`` while it runs or waits,
``approved`` / ``denied`` with who decided, when and their comment, ``timed_out`` when its
timeout passed undecided (unless ``on-timeout: approve``, which approves as
``system:timeout``), ``cancelled``, or ``failed`` should the run fail otherwise.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from engine.definition.loader import parse_workflow
from engine.definition.model import Workflow
from engine.definition.policy import Action, Decision, PolicySource, Rule
from engine.errors import ExecutionNotFound, GateUseRefused
from engine.notify import Actor
from engine.run.engine import Engine
from engine.state import audit, keys
from engine.state.execution import ExecutionState, ExecutionStatus, canonical, dumps, iso

REVIEW_STEP = "review"
DEFAULT_TIMEOUT = timedelta(hours=24)  # as a waitForApproval's; a rule's `timeout` overrides it
EDITABLE_TEXT = 2000  # characters of a string argument a reviewer may edit in the form
_EDITABLE_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
FOLD_AT = 300  # characters of one argument's JSON shown before it is folded
SHOWN_ARGUMENTS = 50  # top-level arguments listed before "… and N more"
USED = "gate.used"  # the audit event of a reported use
GATE_ANNOTATION = "gate"  # set on the executions that are gate requests

# What a review shows: the rule's message (or this one), then always the reason and the
# arguments, so no message can hide what will run. Values are escaped by the human step's
# Markdown rendering; in the code block, a value's backticks cannot close it.
_NAMES = ("{%- assign tool = event.tool -%}{%- assign args = event.args -%}"
          "{%- assign context = event.context -%}{%- assign summary = event.summary -%}"
          "{%- assign reason = event.reason -%}")
DEFAULT_MESSAGE = ("Agent call: **{{ tool }}**, requested by {{ event.requestedBy }}\n\n"
                   "{% if summary %}{{ summary }}{% endif %}")
_FOOTER = ("\n\n**Why it needs a review:** {{ reason }}\n\n"
           "**Arguments** (sha256 {{ event.argsSha256 | slice: 0, 12 }}):\n"
           "```\n{{ event.shownArgs }}\n```")
_ANSWER_FIELDS: dict[str, Any] = {
    "approved": {"type": "boolean", "title": "Approve"},
    "comment": {"type": "string", "title": "Comment", "maxLength": 2000},
}


class GateStatus(StrEnum):
    """A request's states, as the API names them."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class ToolCall:
    """What an agent or a script asks to run."""

    tool: str
    args: Mapping[str, Any]
    summary: str = ""
    context: Mapping[str, Any] | None = None

    @property
    def args_sha256(self) -> str:
        return args_digest(self.args)


@dataclass(frozen=True)
class CheckAnswer:
    """The policy's answer to a call; ``request_id`` when it escalated to a review."""

    decision: Decision
    request_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        body = self.decision.to_json()
        if self.request_id is not None:
            body["requestId"] = self.request_id
        return body


def args_digest(args: Mapping[str, Any]) -> str:
    """The SHA-256 of the arguments' canonical JSON: what an approval is bound to."""
    return hashlib.sha256(canonical(dict(args)).encode("utf-8")).hexdigest()


class Gate:
    """Check calls against the policy; start, read, wait on, cancel and use their reviews."""

    def __init__(self, engine: Engine, policy: PolicySource) -> None:
        self.engine = engine
        self.policy = policy

    def check(self, call: ToolCall, *, requester: str, actor: Actor,
              principal: str | None = None) -> CheckAnswer:
        """Decide ``call``; on escalate, start its review and return the request's id.
        PolicyInvalid while the policy has problems (nothing is decided then)."""
        decision = self.decide(call)
        if decision.shadow:
            self.record_shadow(decision)
        if decision.action is not Action.ESCALATE:
            return CheckAnswer(decision)
        return CheckAnswer(decision, self.start(call, decision, requester=requester,
                                                actor=actor, principal=principal))

    def decide(self, call: ToolCall) -> Decision:
        """What the policy says of ``call``, touching no store (PolicyInvalid while the
        policy has problems)."""
        return self.policy.current().decide(call.tool, call.args, call.context)

    def record_shadow(self, decision: Decision) -> None:
        """Count what ``decision``'s shadow rules would have done: for each, one more call
        matched, and one more changed when enforcing them would have decided otherwise."""
        changed = decision.would_be is not None and decision.would_be is not decision.action
        fields = [shadow_field(rule, "calls") for rule in decision.shadow]
        if changed:
            fields += [shadow_field(rule, "changed") for rule in decision.shadow]
        self.engine.store.add_counts(keys.GATE_SHADOW, fields)

    def start(self, call: ToolCall, decision: Decision, *, requester: str, actor: Actor,
              principal: str | None = None) -> str:
        """Start the review of a call ``decision`` escalates; returns the request's id."""
        requested_by = self.engine.requester(requester, (principal,) if principal else ())
        event: dict[str, Any] = {
            "tool": call.tool, "args": dict(call.args), "argsSha256": call.args_sha256,
            "summary": call.summary, "context": dict(call.context or {}),
            "reason": decision.reason, "requestedBy": requested_by,
            "rule": decision.deciding.to_json() if decision.deciding else None,
            "shownArgs": shown_arguments(call.args),
        }
        review = review_workflow(decision.deciding, call.args)
        event["editable"] = sorted(_editable_in(review))
        request_id = self.engine.run(review, event,
                                     requested_by=requested_by, actor=actor,
                                     principal=principal)
        # What makes an execution a gate request: no API caller can set an annotation, so
        # a workflow of someone's own, however named and whatever its event, is not one.
        self.engine.annotate(request_id, GATE_ANNOTATION, {"argsSha256": call.args_sha256})
        return request_id

    def is_requester(self, request_id: str, who: str) -> bool:
        """Whether ``who`` (a requester as the API names one) asked for the request."""
        state = self._state(request_id)
        return self.engine.requester(who, (who,)) == state.requested_by

    def request(self, request_id: str) -> dict[str, Any]:
        """A request's state (ExecutionNotFound for an id that is no gate request)."""
        return self._view(self._state(request_id))

    def wait(self, request_id: str, timeout: float) -> dict[str, Any]:
        """The request's state once decided, or after ``timeout`` seconds if still pending."""
        self._state(request_id)
        self.engine.store.wait_for_status(request_id, lambda status: status.is_terminal,
                                          timeout)
        return self.request(request_id)

    def cancel(self, request_id: str, actor: Actor, reason: str = "") -> dict[str, Any]:
        """Withdraw a pending request (NotWaiting once it has been decided)."""
        self._state(request_id)
        self.engine.cancel(request_id, actor, reason or f"withdrawn by {actor.display}")
        return self.request(request_id)

    def use(self, request_id: str, tool: str, args: Mapping[str, Any], requester: str,
            actor: Actor) -> dict[str, Any]:
        """Record that the approved call runs now: only that tool, with those arguments,
        by its requester, once; GateUseRefused (with the reason) otherwise."""
        state = self._state(request_id)
        view = self._view(state)
        if view["status"] != GateStatus.APPROVED:
            raise GateUseRefused(request_id, "not_approved",
                                 f"request {request_id} is {view['status']}, not approved")
        if not self.is_requester(request_id, requester):
            raise GateUseRefused(request_id, "not_the_requester",
                                 f"request {request_id} was asked by {state.requested_by}; "
                                 "only they may use its approval")
        if tool != view["tool"]:
            raise GateUseRefused(request_id, "other_tool",
                                 f"request {request_id} approved {view['tool']!r}, "
                                 f"not {tool!r}")
        if args_digest(args) != view["argsSha256"]:
            raise GateUseRefused(request_id, "other_arguments",
                                 f"request {request_id} approved other arguments (sha256 "
                                 f"{view['argsSha256']}); ask again for these")
        now = iso(self.engine.clock()) or ""
        used = {"at": now, "by": actor.id}
        if not self.engine.store.compare_and_set(keys.gate_use(request_id), None, dumps(used)):
            raise GateUseRefused(request_id, "already_used",
                                 f"the approval of request {request_id} was used already; "
                                 "an approval covers one call", used=_used(self, request_id))
        self.engine.store.append_audit(state, [audit.event(
            USED, now, actor=actor.to_json(), tool=tool, argsSha256=view["argsSha256"])])
        return self.request(request_id)

    # -- reading ------------------------------------------------------------------------------

    def _state(self, request_id: str) -> ExecutionState:
        state = self.engine.get(request_id)
        marker = self.engine.annotation(request_id, GATE_ANNOTATION)
        if not isinstance(marker, dict) or not isinstance(state.event, dict) \
                or marker.get("argsSha256") != state.event.get("argsSha256"):
            raise ExecutionNotFound(request_id)
        return state

    def _view(self, state: ExecutionState) -> dict[str, Any]:
        event = state.event
        status, decided_by, decided_at, comment = self._outcome(state)
        edits = self._edits(state) if status == GateStatus.APPROVED else {}
        to_run = with_edits(event["args"], edits)
        return {
            "requestId": state.id, "status": status, "tool": event["tool"],
            "args": to_run, "argsSha256": args_digest(to_run) if edits else event["argsSha256"],
            "requestedArgs": event["args"],
            "edited": sorted(k for k, v in edits.items()
                             if argument_at(event["args"], k) != v),
            "summary": event.get("summary") or "", "context": event.get("context") or {},
            "reason": event.get("reason"), "rule": event.get("rule"),
            "requestedBy": state.requested_by, "requestedAt": state.started_at,
            "decidedBy": decided_by, "decidedAt": decided_at, "comment": comment,
            "used": _used(self, state.id),
            "execution": f"/api/workflowExecutions/{state.id}",
        }

    def _outcome(self, state: ExecutionState) -> tuple[str, str | None, str | None, str | None]:
        """The request's status, who decided it, when, and their comment."""
        result = state.results.get(REVIEW_STEP)
        output = result.output if result is not None and isinstance(result.output, dict) else {}
        by = (result.resumed_by or {}) if result is not None else {}
        who = by.get("id") if isinstance(by, Mapping) else None
        comment = output.get("comment") if isinstance(output.get("comment"), str) else None
        if state.status is ExecutionStatus.COMPLETED and not output.get("timedOut"):
            approved = output.get("approved") is True
            if not approved and who == "system:timeout":
                return GateStatus.TIMED_OUT, who, result.resumed_at if result else None, None
            status = GateStatus.APPROVED if approved else GateStatus.DENIED
            return status, who, result.resumed_at if result else None, comment
        if not state.status.is_terminal:
            return GateStatus.PENDING, None, None, None
        if state.status is ExecutionStatus.CANCELLED:
            return GateStatus.CANCELLED, self._ended_by(state.id), state.finished_at, state.error
        if state.status is ExecutionStatus.TIMED_OUT or output.get("timedOut"):
            return GateStatus.TIMED_OUT, "system:timeout", state.finished_at, None
        return GateStatus.FAILED, None, state.finished_at, state.error

    @staticmethod
    def _edits(state: ExecutionState) -> dict[str, Any]:
        """The editable arguments as the reviewer's answer has them."""
        result = state.results.get(REVIEW_STEP)
        answer = result.output if result is not None and isinstance(result.output, dict) else {}
        return {name: answer[name] for name in state.event.get("editable") or ()
                if name in answer}

    def _ended_by(self, request_id: str) -> str | None:
        for entry in reversed(self.engine.audit_entries(request_id)):
            if entry.event.get("type") == audit.CANCELLED:
                actor = entry.event.get("actor")
                return actor.get("id") if isinstance(actor, dict) else None
        return None


def _used(gate: Gate, request_id: str) -> dict[str, Any] | None:
    raw = gate.engine.store.get_value(keys.gate_use(request_id))
    return json.loads(raw) if raw is not None else None


# -- the review's workflow -------------------------------------------------------------------


def shadow_field(rule: Rule, counter: str) -> str:
    """A shadow rule's counter in ``signoff:gate-shadow``: by its glob and condition, so
    the count survives edits elsewhere in the policy (``counter``: calls or changed)."""
    return json.dumps([rule.tool, rule.when.text if rule.when else None, counter],
                      separators=(",", ":"))


def review_workflow(rule: Rule | None, args: Mapping[str, Any] | None = None) -> Workflow:
    """The workflow an escalated call runs: one review step with the rule's options. Its
    text depends on the rule alone (the call is the event), so every call one rule
    escalates shares one stored definition; except where the rule makes arguments
    ``editable``: the review's form then offers those of ``args`` with their values."""
    return _parsed_review(_review_text(rule, editable_fields(rule, args or {})),
                          f"<gate {_where(rule)}>")


def editable_fields(rule: Rule | None, args: Mapping[str, Any]) -> dict[str, Any]:
    """The form fields a reviewer may change: each argument the rule names ``editable``
    whose value is a string (at most :data:`EDITABLE_TEXT` characters), a number or a
    boolean, as a JSON Schema property holding the value asked for as its default. A name
    may be a dotted path into objects (``beneficiary.name``), see :func:`argument_at`."""
    fields: dict[str, Any] = {}
    for name in rule.editable if rule is not None else ():
        value = argument_at(args, name)
        kind = _EDITABLE_TYPES.get(type(value))
        if kind is None or (isinstance(value, str) and len(value) > EDITABLE_TEXT):
            continue
        fields[name] = {"type": kind, "title": f"{name} (edit to change what runs)",
                        "default": value}
    return fields


_ABSENT = object()


def argument_at(args: Mapping[str, Any], name: str) -> Any:
    """The argument ``name`` names: a top-level key of that very name first, else a dotted
    path through objects (``beneficiary.name`` is ``args["beneficiary"]["name"]``); None
    when there is none (lists are not walked into)."""
    if name in args:
        return args[name]
    value: Any = args
    for key in name.split("."):
        value = value.get(key, _ABSENT) if isinstance(value, Mapping) else _ABSENT
        if value is _ABSENT:
            return None
    return value


def with_edits(args: Mapping[str, Any], edits: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` with each edited argument replaced where :func:`argument_at` finds it (a
    copy: the arguments asked for stay as they were)."""
    result = copy.deepcopy(dict(args))
    for name, value in edits.items():
        if name in result or "." not in name:
            result[name] = value
            continue
        *path, last = name.split(".")
        parent = result
        for key in path:
            parent = parent[key]  # there: the form offers only paths it found
        parent[last] = value
    return result


@functools.lru_cache(maxsize=256)
def _parsed_review(text: str, source: str) -> Workflow:
    return parse_workflow(text, source)


def _editable_in(review: Workflow) -> set[str]:
    schema = review.steps[0].with_.get("schema") or {}
    return set(schema.get("properties", {})) - set(_ANSWER_FIELDS)


def _where(rule: Rule | None) -> str:
    return f"rule {rule.index + 1} ({rule.location})" if rule is not None else "the default"


def _review_text(rule: Rule | None, fields: Mapping[str, Any]) -> str:
    review = dict(rule.review) if rule is not None else {}
    message = review.pop("message", None) or DEFAULT_MESSAGE
    timeout = rule.timeout if rule is not None and rule.timeout else DEFAULT_TIMEOUT
    step: dict[str, Any] = {
        "name": REVIEW_STEP, "type": "waitForInput",
        "timeout": _duration(timeout),
        "with": {"message": _NAMES + str(message) + _FOOTER,
                 "schema": {"type": "object", "properties": {**_ANSWER_FIELDS, **fields},
                            "required": ["approved"]},
                 **review},
    }
    document = {
        "name": f"gate: {rule.tool if rule is not None else '(default)'}",
        "description": f"An agent's or a script's tool call, escalated by {_where(rule)} of the "
                       "policy",
        "triggers": [{"type": "manual"}],
        "steps": [step],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)  # JSON is YAML, and needs no yaml


def _duration(value: timedelta) -> str:
    ms = round(value.total_seconds() * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def shown_arguments(args: Mapping[str, Any]) -> str:
    """The arguments as the review lists them: one per line, ``name: JSON``, a value whose
    JSON is longer than :data:`FOLD_AT` folded (its start and how much more there is; the
    whole call is on the request, and its SHA-256 in the review)."""
    lines = []
    for index, (name, value) in enumerate(args.items()):
        if index == SHOWN_ARGUMENTS:
            lines.append(f"… and {len(args) - SHOWN_ARGUMENTS} more arguments")
            break
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        if len(text) > FOLD_AT:
            text = f"{text[:FOLD_AT]}… ({len(text) - FOLD_AT:,} more characters)"
        lines.append(f"{name}: {text}")
    return "\n".join(lines) if lines else "(none)"
