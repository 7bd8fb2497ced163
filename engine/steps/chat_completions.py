"""One call to an OpenAI-compatible chat-completions API, for the ``ai.*`` steps.

:func:`complete` posts ``{model, messages, response_format, temperature}`` to
``{url}/chat/completions`` of an ``openai`` connection (:class:`engine.connectors.
OpenAIConnection`) through the ``http`` step's checked client (:func:`engine.steps.http.
shared_client`), so the worker's egress policy applies to every connection it makes.
With a JSON Schema it asks for Structured Outputs (``response_format: {type:
json_schema, json_schema: {name, schema, strict}}``) and validates the answer with
jsonschema whatever the server claims: a model behind vLLM, Ollama or an older API may
ignore the format.

Failures are :class:`engine.errors.StepFailed`, retryable or not as ``on-failure.retry``
should treat them::

    StepFailed
    ├── retryable: 429 (its Retry-After in the message and details), 5xx, a timeout or a
    │   connection that failed, an answer that is not JSON, or does not match the schema,
    │   or was cut off (finish_reason "length")
    └── not retryable: other 4xx (401 invalid_api_key, 404 model_not_found, 400), a
        refusal, an egress refusal (EgressBlocked)

The API key is sent only as a header to the connection's base URL; it is never part of
an error, a log line or the output: messages are scrubbed of it, and a 401's own message
(OpenAI's quotes part of the key) is not repeated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import jsonschema

from engine.definition.egress import EgressPolicy
from engine.errors import EgressBlocked, StepFailed
from engine.steps.http import shared_client

DEFAULT_TIMEOUT = 120.0  # seconds; a step's own `timeout` shortens it


class OpenAIConnectionLike(Protocol):
    """An ``openai`` connection as this module reads it."""

    id: str
    url: str
    model: str
    api_key: str | None
    headers: tuple[tuple[str, str], ...]
    organization: str | None
    api_version: str | None


@dataclass(frozen=True)
class Completion:
    """What the model answered: its text, or the value parsed from it (with a schema)."""

    content: Any
    metadata: Mapping[str, Any]  # model, finish_reason, usage: never a header or the key


def complete(connection: OpenAIConnectionLike, policy: EgressPolicy,
             messages: Sequence[Mapping[str, str]], *, schema: Mapping[str, Any] | None = None,
             schema_name: str = "output", strict: bool = True,
             temperature: float | None = None, timeout: float = DEFAULT_TIMEOUT) -> Completion:
    """Ask ``connection``'s model; with ``schema``, the answer parsed and validated."""
    body: dict[str, Any] = {"model": connection.model, "messages": list(messages)}
    if temperature is not None:
        body["temperature"] = temperature
    if schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": schema_name, "schema": dict(schema), "strict": strict}}
    data = _post(connection, policy, "chat/completions", body, timeout)
    try:
        choice = data["choices"][0]
        message = choice["message"]
        finish_reason = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError):
        raise StepFailed(f"{connection.id}: the answer is not a chat completion (no "
                         "choices[0].message)") from None
    metadata = {"model": data.get("model", connection.model), "finish_reason": finish_reason,
                "usage": data.get("usage") or {}}
    if message.get("refusal"):
        raise StepFailed(f"{connection.id}: the model refused: {message['refusal']}",
                         retryable=False, details={"metadata": metadata})
    text = message.get("content")
    if not isinstance(text, str):
        raise StepFailed(f"{connection.id}: the answer has no text content "
                         f"(finish_reason {finish_reason!r})", details={"metadata": metadata})
    if schema is None:
        return Completion(text, metadata)
    return Completion(_validated(connection, text, schema, finish_reason, metadata), metadata)


def _validated(connection: OpenAIConnectionLike, text: str, schema: Mapping[str, Any],
               finish_reason: Any, metadata: Mapping[str, Any]) -> Any:
    cut = " (cut off: finish_reason 'length')" if finish_reason == "length" else ""
    try:
        value = json.loads(text)
    except ValueError:
        raise StepFailed(f"{connection.id}: the model's answer is not JSON{cut}: "
                         f"{text[:200]!r}", details={"metadata": metadata}) from None
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(answer)"
        raise StepFailed(f"{connection.id}: the model's answer does not match the schema at "
                         f"{where}: {error.message[:300]}{cut}",
                         details={"metadata": metadata, "answer": value})
    return value


def list_models(connection: OpenAIConnectionLike, policy: EgressPolicy,
                timeout: float = 10.0) -> list[str]:
    """The ids of the models ``connection`` serves (``GET {url}/models``; Azure's
    deployment URLs: the resource's ``/openai/models``): the cheapest authenticated read."""
    path = "models"
    if connection.api_version and "/openai/deployments/" in connection.url:
        path = connection.url.split("/openai/deployments/", 1)[0] + "/openai/models"
    data = _request(connection, policy, "GET", path, None, timeout)
    found = data.get("data") if isinstance(data, dict) else None
    if not isinstance(found, list):
        raise StepFailed(f"{connection.id}: GET models did not answer a list of models",
                         retryable=False)
    return [str(m.get("id")) for m in found if isinstance(m, dict)]


def check_openai(connection: OpenAIConnectionLike, policy: EgressPolicy) -> str:
    """What ``signoff connectors check`` says of an ``openai`` connection: that it answers
    and authenticates, and whether it serves the configured model; StepFailed if not."""
    models = list_models(connection, policy)
    if connection.api_version:  # Azure lists the resource's base models, not its deployments
        return "answers and authenticates (Azure: deployments are not listed, so the " \
               f"deployment of {connection.url.rsplit('/', 1)[-1]!r} is not checked)"
    if connection.model in models:
        return f"answers and authenticates; serves {connection.model}"
    listed = ", ".join(models[:10]) + (" ..." if len(models) > 10 else "")
    return (f"answers and authenticates, but does not list model {connection.model!r} "
            f"(it lists: {listed or 'none'})")


def _post(connection: OpenAIConnectionLike, policy: EgressPolicy, path: str,
          body: Mapping[str, Any], timeout: float) -> Any:
    return _request(connection, policy, "POST", path, body, timeout)


def _request(connection: OpenAIConnectionLike, policy: EgressPolicy, method: str, path: str,
             body: Mapping[str, Any] | None, timeout: float) -> Any:
    """One call; its parsed JSON body, or StepFailed as the module docstring says."""
    url = path if urlsplit(path).scheme else f"{connection.url}/{path}"
    headers = {"Accept": "application/json", **dict(connection.headers)}
    if connection.api_key:
        if connection.api_version:
            headers["api-key"] = connection.api_key
        else:
            headers["Authorization"] = f"Bearer {connection.api_key}"
    if connection.organization:
        headers["OpenAI-Organization"] = connection.organization
    params = {"api-version": connection.api_version} if connection.api_version else None
    secrets = [connection.api_key or "", *(value for _, value in connection.headers)]
    where = f"{method} {url}"
    try:
        response = shared_client(policy).request(method, url, headers=headers, json=body,
                                                 params=params, timeout=timeout)
    except EgressBlocked as exc:
        raise EgressBlocked(exc.host, exc.address, exc.reason, request=where) from None
    except httpx.TimeoutException:
        raise StepFailed(f"{where} timed out after {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise StepFailed(_scrub(f"{where} failed: {type(exc).__name__}: {exc}", secrets),
                         retryable=not isinstance(exc, httpx.UnsupportedProtocol)) from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success:
        return data
    raise _api_failure(where, response, data, secrets)


def _api_failure(where: str, response: httpx.Response, data: Any,
                 secrets: list[str]) -> StepFailed:
    """A non-2xx answer as a step error: OpenAI's ``error.type``/``code`` and, but for a
    401, its message; 429 and 5xx retryable."""
    status = response.status_code
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    code, kind = error.get("code"), error.get("type")
    message = error.get("message") if status != 401 else None
    if status == 401:
        message = "the API key was refused (check the connection's api-key)"
    label = " ".join(str(x) for x in (kind, code) if x)
    text = f"{where} answered [{status}]" + (f" {label}" if label else "") \
        + (f": {message}" if message else "")
    details: dict[str, Any] = {"status": status, "type": kind, "code": code}
    retry_after = response.headers.get("Retry-After")
    if status == 429 and retry_after:
        text += f" (Retry-After: {retry_after}s)"
        details["retry_after"] = retry_after
    return StepFailed(_scrub(text, secrets), retryable=status == 429 or status >= 500,
                      details=details)


def _scrub(message: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "***")
    return message
