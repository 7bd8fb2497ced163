"""``ai.agent``: one round with an agent of Kibana's Agent Builder.

Kibana runs the step in-process; Signoff calls the same service over Kibana's public
converse API, ``POST /api/agent_builder/converse`` on the step's ``kibana`` connection
(:func:`engine.steps.kibana.kibana_call`: its credentials, space, ``kbn-xsrf``, timeout,
and retryable 429 and 5xx). The request body is the converse API's: ``agent_id`` (the
step's ``agent-id``; Kibana's default agent ``elastic-ai-agent`` without one), ``input``
(``with.message``), ``conversation_id``, ``attachments``, ``configuration_overrides``
(the step's ``instructions`` and ``tools``), and, with ``with.schema``,
``structured_output: true`` with the schema as ``output_schema``.

The output is Kibana's step output: ``message`` (the agent's answer; with a schema, the
structured answer as JSON text), ``structured_output`` (with a schema, validated against
it here as well: a malformed answer is a retryable step error, as for the other ``ai.*``
steps) and ``conversation_id`` (when the step continues a conversation or
``create-conversation`` is true).

Left out: Kibana's model routing for the agent (its ``connector-id`` names a GenAI
connector and ``inference-id`` an inference endpoint; Signoff's ``connector-id`` names the
``kibana`` connection to call, and the agent uses the model Kibana gives it), and
``hidden`` (a flag of Kibana's own conversation list); ``signoff validate`` refuses
``inference-id`` and ``hidden``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.definition.answer_schema import answer_errors
from engine.definition.step_types import StepContext, step_type
from engine.errors import StepFailed
from engine.steps.kibana import kibana_call

CONVERSE_PATH = "/api/agent_builder/converse"
DEFAULT_AGENT = "elastic-ai-agent"

_ATTACHMENT = {"type": "object", "properties": {
    "id": {"type": "string"}, "type": {"type": "string"}, "data": {"type": "object"},
    "origin": {"type": "string"}, "hidden": {"type": "boolean"}},
    "required": ["type"], "anyOf": [{"required": ["data"]}, {"required": ["origin"]}]}


@step_type("ai.agent", options_schema={
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "schema": {"type": "object"},
        "attachments": {"type": "array", "items": _ATTACHMENT},
        "conversation_id": {"type": "string"},
    },
    "required": ["message"],
    "additionalProperties": False,
}, params_schema={"type": "object", "properties": {
    "agent-id": {"type": "string", "minLength": 1},
    "create-conversation": {"type": "boolean"},
    "instructions": {"type": "string"},
    "tools": {"type": "array", "items": {
        "type": "object", "properties": {"tool_ids": {"type": "array",
                                                      "items": {"type": "string"}}},
        "required": ["tool_ids"], "additionalProperties": False}},
}})
def run_agent(ctx: StepContext) -> dict[str, Any]:
    """Send ``with.message`` to an Agent Builder agent; ``{message, structured_output?,
    conversation_id?}``, as Kibana's step answers."""
    options, params = ctx.options, ctx.params
    message = options.get("message")
    if not isinstance(message, str) or not message.strip():
        raise StepFailed("with.message is empty", retryable=False)
    body: dict[str, Any] = {"agent_id": str(params.get("agent-id") or DEFAULT_AGENT),
                            "input": message}
    conversation_id = options.get("conversation_id")
    if conversation_id:
        body["conversation_id"] = str(conversation_id)
    if options.get("attachments"):
        body["attachments"] = options["attachments"]
    overrides = {k: params[k] for k in ("instructions", "tools") if params.get(k)}
    if overrides:
        body["configuration_overrides"] = overrides
    schema = options.get("schema")
    if isinstance(schema, Mapping):
        body["structured_output"] = True
        body["output_schema"] = dict(schema)
    # Kibana reports the conversation only when the step asked for one or continues one.
    keep = params.get("create-conversation") is True or bool(conversation_id)
    answer = kibana_call(ctx, "POST", CONVERSE_PATH, body=body)
    if not isinstance(answer, Mapping) or not isinstance(answer.get("response"), Mapping):
        raise StepFailed(f"POST {CONVERSE_PATH} answered without a response: "
                         f"{json.dumps(answer)[:200]}")
    response = answer["response"]
    output: dict[str, Any] = {"message": str(response.get("message") or "")}
    if isinstance(schema, Mapping):
        structured = response.get("structured_output")
        if structured is None:
            raise StepFailed(f"agent {body['agent_id']!r} gave no structured output")
        errors = sorted(answer_errors(schema, structured), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(answer)"
            raise StepFailed(f"agent {body['agent_id']!r}: its answer does not match the "
                             f"schema at {where}: {errors[0].message[:300]}",
                             details={"answer": structured})
        output["structured_output"] = structured
        output["message"] = json.dumps(structured)
    if keep and answer.get("conversation_id"):
        output["conversation_id"] = str(answer["conversation_id"])
    return output
