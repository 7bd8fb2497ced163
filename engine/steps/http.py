"""``http``: call an HTTP endpoint with httpx; a non-2xx answer or network error is a step error."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from engine.definition.durations import parse_duration
from engine.definition.step_types import StepContext, step_type
from engine.errors import DurationError, StepFailed

DEFAULT_TIMEOUT = 30.0

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def shared_client() -> httpx.Client:
    """One pooled client per worker process, made on first use."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(follow_redirects=False, timeout=DEFAULT_TIMEOUT,
                                   headers={"User-Agent": "signoff-workflows"})
        return _client


@step_type("http", options_schema={
    "type": "object",
    "properties": {
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
                            "get", "post", "put", "patch", "delete", "head", "options"]},
        "url": {"type": "string", "minLength": 1},
        "headers": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
        "query": {"type": "object"},
        "body": {},
        "timeout": {"type": ["string", "number"]},
    },
    "required": ["url"],
    "additionalProperties": False,
})
def http(ctx: StepContext) -> dict[str, Any]:
    """Send a request; the output is ``{status, headers, body}`` (body parsed when JSON)."""
    options = ctx.options
    method = str(options.get("method") or "GET").upper()
    url = str(options["url"])
    headers = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
    body = options.get("body")
    content: bytes | None = None
    if isinstance(body, dict | list):
        content = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif body is not None:
        content = str(body).encode()
    timeout = ctx.timeout_seconds or DEFAULT_TIMEOUT
    if options.get("timeout") is not None:
        try:
            timeout = parse_duration(options["timeout"]).total_seconds()
        except DurationError as exc:
            raise StepFailed(f"with.timeout: {exc}", retryable=False) from exc
    try:
        response = shared_client().request(method, url, headers=headers, content=content,
                                           params=options.get("query"), timeout=timeout)
    except httpx.HTTPError as exc:
        raise StepFailed(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
    parsed: Any = response.text
    if "json" in response.headers.get("content-type", ""):
        try:
            parsed = response.json()
        except ValueError:
            parsed = response.text
    output = {"status": response.status_code, "headers": dict(response.headers), "body": parsed}
    if not response.is_success:
        # 4xx other than 408/429 will not get better by retrying.
        retryable = response.status_code >= 500 or response.status_code in (408, 429)
        raise StepFailed(f"{method} {url} answered {response.status_code}",
                         retryable=retryable, details=output)
    ctx.log(f"{method} {url} -> {response.status_code}")
    return output
