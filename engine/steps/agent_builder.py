"""``ai.agent``: one round with an agent of Kibana's Agent Builder.

Kibana runs the step in-process; Signoff calls the same service over Kibana's public
converse API, ``POST /api/agent_builder/converse`` on the step's ``kibana`` connection
(:func:`engine.steps.kibana.kibana_call`: its credentials, space, ``kbn-xsrf``, timeout,
and retryable 429 and 5xx). The request body is the converse API's: ``agent_id`` (the
step's ``agent-id``; Kibana's default agent ``elastic-ai-agent`` without one), ``input``
(``with.message``), ``conversation_id``, ``attachments``, ``configuration_overrides``
(the step's ``instructions`` and ``tools``).

The public converse API takes no output schema (Kibana's step passes one to the agent
in-process), so with ``with.schema`` the message ends with an instruction to answer with
JSON only, matching that schema (given in full); the answer is parsed (a Markdown code
fence around it is allowed) and validated against the schema. An answer that is not JSON
or does not match is a retryable step error, as for the other ``ai.*`` steps.

The output is Kibana's step output: ``message`` (the agent's answer; with a schema, the
structured answer as JSON text), ``structured_output`` (with a schema) and
``conversation_id`` (when the step continues a conversation or ``create-conversation`` is
true).

Left out: Kibana's model routing for the agent (its ``connector-id`` names a GenAI
connector and ``inference-id`` an inference endpoint; Signoff's ``connector-id`` names the
``kibana`` connection to call, and the agent uses the model Kibana gives it), and
``hidden`` (a flag of Kibana's own conversation list); ``signoff validate`` refuses
``inference-id`` and ``hidden``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from engine.definition.answer_schema import answer_errors
from engine.definition.step_types import StepContext, step_type
from engine.errors import StepFailed
from engine.steps.kibana import kibana_call

CONVERSE_PATH = "/api/agent_builder/converse"
DEFAULT_AGENT = "elastic-ai-agent"
SCHEMA_INSTRUCTION = ("\n\nAnswer with JSON only, no other text, matching this JSON Schema: ")
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*)\n\s*```\s*$", re.DOTALL)

# The public converse API needs an attachment's data: Kibana's step also takes ``origin``
# (a saved object resolved in-process), which that API refuses.
_ATTACHMENT = {"type": "object", "properties": {
    "id": {"type": "string"}, "type": {"type": "string"}, "data": {"type": "object"},
    "hidden": {"type": "boolean"}},
    "required": ["type", "data"], "additionalProperties": False}


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
        body["input"] = message + SCHEMA_INSTRUCTION + json.dumps(schema)
    # Kibana reports the conversation only when the step asked for one or continues one.
    keep = params.get("create-conversation") is True or bool(conversation_id)
    answer = kibana_call(ctx, "POST", CONVERSE_PATH, body=body)
    if not isinstance(answer, Mapping) or not isinstance(answer.get("response"), Mapping):
        raise StepFailed(f"POST {CONVERSE_PATH} answered without a response: "
                         f"{json.dumps(answer)[:200]}")
    response = answer["response"]
    output: dict[str, Any] = {"message": str(response.get("message") or "")}
    if isinstance(schema, Mapping):
        structured = _json_answer(body["agent_id"], output["message"])
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


def _json_answer(agent_id: str, message: str) -> Any:
    fenced = _FENCE.match(message)
    text = fenced.group(1) if fenced else message
    try:
        return json.loads(text)
    except ValueError:
        raise StepFailed(f"agent {agent_id!r}: its answer is not JSON: {message[:200]!r}"
                         ) from None
