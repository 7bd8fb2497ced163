"""Chat completions as OpenAI's API answers them: request checks, response bodies, errors.

Pure functions over plain JSON values; :mod:`openai_emulator.server` does the HTTP. The
shapes follow OpenAI's API reference (``POST /v1/chat/completions``): a request is
``{model, messages, response_format?, temperature?, ...}``; an answer is
``{id, object: "chat.completion", created, model, choices: [{index, message: {role,
content, refusal}, logprobs, finish_reason}], usage: {prompt_tokens, completion_tokens,
total_tokens}}``; an error is ``{error: {message, type, param, code}}``.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # json_schema.name, as OpenAI restricts it
_ROLES = {"system", "developer", "user", "assistant", "tool"}
_ids = itertools.count(1)


@dataclass(frozen=True)
class CannedAnswer:
    """One answer a test scripts for a model: ``content`` is sent as the message's text
    (a mapping or list as its JSON), verbatim, so a malformed answer reaches the client."""

    content: Any
    finish_reason: str = "stop"
    refusal: str | None = None

    def text(self) -> str | None:
        if self.refusal is not None:
            return None
        if isinstance(self.content, str):
            return self.content
        return json.dumps(self.content)


class ApiError(Exception):
    """An answer in OpenAI's error shape, with its HTTP status."""

    def __init__(self, status: int, message: str, type_: str, code: str | None = None,
                 param: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param,
                               "code": code}}
        self.headers = dict(headers or {})


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def check_request(body: Any) -> dict[str, Any]:
    """The request's ``response_format`` (``{"type": "text"}`` when absent), after the checks
    OpenAI makes before answering; ApiError (400) names the first fault."""
    if not isinstance(body, dict):
        raise invalid("We could not parse the JSON body of your request.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("Invalid 'messages': empty array. Expected an array with minimum "
                      "length 1.", "messages", "empty_array")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise invalid(f"Invalid value for 'messages[{index}].role'.",
                          f"messages[{index}].role", "invalid_value")
        if not isinstance(message.get("content"), str | list):
            raise invalid(f"Invalid type for 'messages[{index}].content'.",
                          f"messages[{index}].content", "invalid_type")
    temperature = body.get("temperature")
    if temperature is not None and (isinstance(temperature, bool)
                                    or not isinstance(temperature, int | float)
                                    or not 0 <= temperature <= 2):
        raise invalid("Invalid 'temperature': expected a number from 0 to 2.", "temperature")
    fmt = body.get("response_format") or {"type": "text"}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid("Invalid value for 'response_format.type'.", "response_format.type",
                      "invalid_value")
    if kind == "json_schema":
        _check_json_schema(fmt.get("json_schema"))
    return dict(fmt)


def _check_json_schema(spec: Any) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) \
            or not _NAME.match(spec["name"]):
        raise invalid("Invalid 'response_format.json_schema.name': a string of letters, "
                      "digits, '_' and '-', at most 64.", "response_format.json_schema.name")
    schema = spec.get("schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise invalid(f"Invalid schema for response_format '{spec['name']}': schema must be a "
                      "JSON Schema of 'type: \"object\"'.", "response_format",
                      "invalid_json_schema")
    if spec.get("strict") is True:
        fault = _strict_fault(schema, ())
        if fault:
            raise invalid(f"Invalid schema for response_format '{spec['name']}': {fault}",
                          "response_format", "invalid_json_schema")


def _strict_fault(schema: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    """Structured Outputs' strict-mode rules: every object closes with
    ``additionalProperties: false`` and requires every property it lists."""
    where = "/".join(("#", *path))
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"In context={where}, 'additionalProperties' is required to be supplied " \
                   "and to be false."
        properties = schema.get("properties") or {}
        missing = [k for k in properties if k not in (schema.get("required") or [])]
        if missing:
            return f"In context={where}, 'required' is required to be supplied and to be an " \
                   f"array including every key in properties. Missing '{missing[0]}'."
        for key, sub in properties.items():
            if isinstance(sub, Mapping):
                fault = _strict_fault(sub, (*path, "properties", key))
                if fault:
                    return fault
    items = schema.get("items")
    if isinstance(items, Mapping):
        return _strict_fault(items, (*path, "items"))
    return None


def instance_of(schema: Mapping[str, Any]) -> Any:
    """A small value that satisfies ``schema``: what the emulator answers a structured
    request no test scripted an answer for."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return instance_of(schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        wanted = schema.get("required") or list(properties)
        return {key: instance_of(properties.get(key) or {}) for key in wanted}
    if kind == "array":
        return [instance_of(schema.get("items") or {})
                for _ in range(int(schema.get("minItems") or 0))]
    if kind in ("number", "integer"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "emulated answer"[: int(schema.get("maxLength") or 64)]


def default_answer(response_format: Mapping[str, Any]) -> CannedAnswer:
    """The answer when none is queued: one satisfying the requested schema, a JSON object
    for ``json_object``, a sentence for text."""
    if response_format.get("type") == "json_schema":
        return CannedAnswer(instance_of(response_format["json_schema"]["schema"]))
    if response_format.get("type") == "json_object":
        return CannedAnswer({})
    return CannedAnswer("This is the OpenAI emulator's answer.")


def completion(body: Mapping[str, Any], answer: CannedAnswer) -> dict[str, Any]:
    """The ``chat.completion`` object answering ``body`` with ``answer``."""
    text = answer.text()
    prompt_tokens = sum(_tokens(m.get("content")) for m in body["messages"])
    completion_tokens = _tokens(text if text is not None else answer.refusal)
    return {
        "id": f"chatcmpl-emu{next(_ids):06d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": answer.refusal},
            "logprobs": None,
            "finish_reason": answer.finish_reason,
        }],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "system_fingerprint": "fp_emulator",
    }


def _tokens(content: Any) -> int:
    """A rough token count (about four characters a token), as usage reports one."""
    text = content if isinstance(content, str) else json.dumps(content) if content else ""
    return max(1, len(text) // 4) if text else 0
