"""The human steps: ``waitForInput`` (a form from a JSON Schema) and ``waitForApproval`` (yes/no).

They do not run a function: the runner suspends the execution in
``WAITING_FOR_INPUT`` and the reviewer's answer becomes the step's output. Their
Slack keys (channel, approvers, SLA, escalation) are validated here and acted on
by the bot and the timers.
"""

from __future__ import annotations

from typing import Any

from engine.definition.durations import DURATION_PATTERN
from engine.definition.step_types import StepKind, StepType, register_step_type

_approver_list = {
    "type": "array",
    "items": {"type": "string", "minLength": 1},
    "description": "Slack user ids (U…), user group ids (S…) or e-mail addresses",
}

_duration = {"type": "string", "pattern": DURATION_PATTERN}

_SLACK_KEYS: dict[str, Any] = {
    "channel": {"type": "string", "minLength": 1},
    "approvers": _approver_list,
    "approvals-required": {"type": "integer", "minimum": 1},
    "allow-self-approval": {"type": "boolean"},
    "earlier-levels-keep-rights": {"type": "boolean"},
    "sla": _duration,
    "remind": _duration,
    "escalation": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "approvers": _approver_list,
                "sla": _duration,
                "channel": {"type": "string", "minLength": 1},
            },
            "required": ["approvers"],
            "additionalProperties": False,
        },
    },
    "on-timeout": {"enum": ["deny", "approve", "cancel", "fail", "continue"]},
}

WAIT_FOR_INPUT_OPTIONS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "schema": {"type": "object"},
        "decision-field": {"type": "string", "minLength": 1},
        **_SLACK_KEYS,
    },
    "additionalProperties": False,
}

WAIT_FOR_APPROVAL_OPTIONS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "approveLabel": {"type": "string", "minLength": 1, "maxLength": 75},
        "rejectLabel": {"type": "string", "minLength": 1, "maxLength": 75},
        **_SLACK_KEYS,
    },
    "additionalProperties": False,
}

# Without a schema, any JSON object is accepted (the API), and Slack offers
# Approve / Deny answering {"approved": true|false}.
DEFAULT_INPUT_SCHEMA: dict[str, Any] = {"type": "object"}

APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"approved": {"type": "boolean", "title": "Approved"}},
    "required": ["approved"],
    "additionalProperties": False,
}

register_step_type(StepType(
    name="waitForInput", kind=StepKind.HUMAN, run=None, options_schema=WAIT_FOR_INPUT_OPTIONS,
    description="Pause until a reviewer answers a form built from `schema`.",
))
register_step_type(StepType(
    name="waitForApproval", kind=StepKind.HUMAN, run=None, options_schema=WAIT_FOR_APPROVAL_OPTIONS,
    description="Pause until a reviewer approves or rejects.",
))


def input_schema(step_type: str, options: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema the reviewer's answer must satisfy."""
    if step_type == "waitForApproval":
        return APPROVAL_SCHEMA
    schema = options.get("schema")
    return dict(schema) if isinstance(schema, dict) else DEFAULT_INPUT_SCHEMA
