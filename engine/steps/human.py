"""The human steps: ``waitForInput`` (a form from a JSON Schema) and ``waitForApproval`` (yes/no).

They do not run a function: the runner suspends the execution in
``WAITING_FOR_INPUT`` and the reviewer's answer becomes the step's output, shaped as
Elastic 9.4 and 9.5 both read it (:func:`answer_output`). Their Slack keys (channel,
Elastic 9.5's ``channels``, approvers, SLA, escalation) are validated here and acted on by
the bot and the timers; their default timeouts (:data:`DEFAULT_TIMEOUTS`) are Kibana's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
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

# Elastic 9.5's `with.channels`, as Kibana's kbn-workflows spec/schema.ts declares it
# (WaitForApprovalChannelsSchema, shared by both human steps): `slack` is a Slack
# incoming-webhook connector, `slack_api` a Slack API connector with the channel ids to post
# to; each takes an optional notification `message` (at most MAX_HITL_MESSAGE_LENGTH). A
# `connector-id` names a connection in SIGNOFF_CONNECTORS (engine/connectors.py), and one
# not configured there means the workspace's own Slack connection (see README).
_CONNECTOR_ID = {"type": "string", "minLength": 1, "maxLength": 512}
_CHANNEL_MESSAGE = {"type": "string", "maxLength": 10_240}
_CHANNELS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "slack": {
            "type": "object",
            "properties": {"connector-id": _CONNECTOR_ID, "message": _CHANNEL_MESSAGE},
            "required": ["connector-id"],
            "additionalProperties": False,
        },
        "slack_api": {
            "type": "object",
            "properties": {
                "connector-id": _CONNECTOR_ID,
                "channels": {"type": "array", "minItems": 1,
                             "items": {"type": "string", "minLength": 1, "maxLength": 256}},
                "message": _CHANNEL_MESSAGE,
            },
            "required": ["connector-id", "channels"],
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

WAIT_FOR_INPUT_OPTIONS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "schema": {"type": "object"},
        "decision-field": {"type": "string", "minLength": 1},
        "channels": _CHANNELS,
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
        "channels": _CHANNELS,
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


# When a human step sets no `timeout`, it waits as long as Kibana's would: the defaults are
# @kbn/workflows' DEFAULT_WAIT_FOR_APPROVAL_TIMEOUT ('24h') and DEFAULT_WAIT_FOR_INPUT_TIMEOUT
# ('72h', src/platform/packages/shared/kbn-workflows/common/hitl.ts), applied by the
# execution engine's wait_for_approval_step.ts and
# wait_for_input_step.ts (src/platform/plugins/shared/workflows_execution_engine/server/step/),
# where the step fails when the wait passes. Elastic's docs say waitForInput has no default;
# the code wins. Signoff's `on-timeout` still chooses the outcome (default: fail).
DEFAULT_TIMEOUTS: dict[str, timedelta] = {
    "waitForApproval": timedelta(hours=24),
    "waitForInput": timedelta(hours=72),
}

# The keys Elastic 9.5 puts on a human step's output, besides the answer's own fields.
ANSWER_KEYS = ("response", "respondedBy", "respondedAt", "channel")


def answer_output(step_type: str, answer: Mapping[str, Any], actor: Mapping[str, Any],
                  at: str) -> dict[str, Any]:
    """A decided human step's output, readable as Elastic 9.4 and 9.5 both have it.

    9.4 put the answer itself in ``output`` (``output.approved``). 9.5 wraps it: Kibana's
    execution engine (``server/step/wait_for_input_step/wait_for_input_step.ts``,
    ``server/step/wait_for_approval_step/wait_for_approval_step.ts`` and their shared
    ``wait_for_input_step/hitl_wait_helpers.ts``) finishes the step with
    ``{response, respondedBy}`` plus ``channel`` and ``respondedAt`` from the response's
    audit stamp; ``response`` is the answer for ``waitForInput`` and just
    ``{approved: <boolean>}`` for ``waitForApproval``. Signoff writes both: the answer's
    fields, then the 9.5 keys (which win should the answer have a field of that name).
    """
    response = ({"approved": answer.get("approved") is True} if step_type == "waitForApproval"
                else dict(answer))
    return {**answer, "response": response, **responder(actor, at)}


def responder(actor: Mapping[str, Any], at: str) -> dict[str, Any]:
    """9.5's ``respondedBy`` / ``respondedAt`` / ``channel`` for an answer from ``actor``.

    Kibana stamps ``respondedBy: 'system'`` and ``channel: 'timeout'`` when the wait
    passes; a person is named by their name (a Slack user's, an API token's caller) and the
    channel is where the answer came from: ``slack``, ``api`` or ``cli`` (Kibana's own
    values name its surfaces, e.g. ``inbox``, ``kibana_execution_view``).
    """
    if actor.get("source") == "system":
        return {"respondedBy": "system", "respondedAt": at,
                "channel": "timeout" if actor.get("id") == "system:timeout" else "system"}
    return {"respondedBy": str(actor.get("name") or actor.get("id") or "unknown"),
            "respondedAt": at, "channel": str(actor.get("source") or "api")}
