"""The OpenAI emulator over real HTTP: OpenAI's request, answer and error shapes,
Structured Outputs, scripted answers (malformed ones too), 401/429/5xx, Azure's URLs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from openai_emulator import OpenAIEmulator

SCHEMA = {"type": "object", "properties": {
    "category": {"type": "string", "enum": ["benign", "malicious"]},
    "score": {"type": "number"},
    "tags": {"type": "array", "items": {"type": "string"}},
}, "required": ["category", "score", "tags"], "additionalProperties": False}


@pytest.fixture(scope="module")
def running() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(models=("gpt-4o-mini", "llama3")) as emulator:
        yield emulator


@pytest.fixture
def emulator(running: OpenAIEmulator) -> OpenAIEmulator:
    running.reset()
    return running


def chat(emulator: OpenAIEmulator, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return httpx.post(f"{emulator.base_url}/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key or emulator.api_key}"})


def ask(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "hello there"}], **extra}


def structured(schema: dict[str, Any] = SCHEMA, strict: bool = True) -> dict[str, Any]:
    return {"type": "json_schema",
            "json_schema": {"name": "verdict", "schema": schema, "strict": strict}}


def test_a_completion_has_openais_shape_with_the_scripted_answer(emulator):
    emulator.answer("Hi!", model="llama3")

    response = chat(emulator, ask("llama3"))

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "llama3"
    assert body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hi!", "refusal": None}
    assert choice["finish_reason"] == "stop" and choice["index"] == 0
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    [recorded] = emulator.completions
    assert recorded.body["messages"][1]["content"] == "hello there"
    assert recorded.headers["authorization"] == f"Bearer {emulator.api_key}"


def test_answers_are_queued_per_model_and_served_in_order(emulator):
    emulator.answer("first")
    emulator.answer("second")
    emulator.answer("llama's", model="llama3")

    texts = [chat(emulator, ask(m)).json()["choices"][0]["message"]["content"]
             for m in ("gpt-4o-mini", "llama3", "gpt-4o-mini", "gpt-4o-mini")]

    assert texts[:3] == ["first", "llama's", "second"]
    assert texts[3] == "This is the OpenAI emulator's answer."  # the queue is empty


def test_without_a_scripted_answer_a_structured_request_gets_one_its_schema_accepts(emulator):
    content = chat(emulator, ask(response_format=structured())).json()[
        "choices"][0]["message"]["content"]

    jsonschema.validate(json.loads(content), SCHEMA)


def test_a_scripted_malformed_answer_is_sent_as_it_is(emulator):
    emulator.answer('{"category": "benign", "sco')
    emulator.answer({"category": "neither"}, finish_reason="length")

    cut = chat(emulator, ask(response_format=structured())).json()["choices"][0]
    wrong = chat(emulator, ask(response_format=structured())).json()["choices"][0]

    assert cut["message"]["content"] == '{"category": "benign", "sco'
    assert json.loads(wrong["message"]["content"]) == {"category": "neither"}
    assert wrong["finish_reason"] == "length"


def test_a_refusal_has_no_content(emulator):
    emulator.answer(None, refusal="I can't help with that.")
    message = chat(emulator, ask()).json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": None, "refusal": "I can't help with that."}


@pytest.mark.parametrize(("schema", "fault"), [
    ({**SCHEMA, "additionalProperties": True}, "'additionalProperties' is required"),
    ({**SCHEMA, "required": ["category"]}, "Missing 'score'"),
    ({"type": "array", "items": {"type": "string"}}, "must be a JSON Schema of 'type: \"object\"'"),
])
def test_strict_mode_refuses_schemas_openai_refuses(emulator, schema, fault):
    response = chat(emulator, ask(response_format=structured(schema)))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json_schema"
    assert fault in error["message"]


def test_without_strict_an_open_schema_is_accepted(emulator):
    schema = {"type": "object", "properties": {"severity": {"type": "string"}}}
    assert chat(emulator, ask(response_format=structured(schema, strict=False))).status_code == 200


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "gpt-4o-mini", "messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "robot", "content": "x"}]},
     "messages[0].role"),
    (ask(temperature=3), "temperature"),
    (ask(response_format={"type": "yaml"}), "response_format.type"),
    (ask(stream=True), "stream"),
])
def test_a_malformed_request_is_a_400_naming_its_parameter(emulator, body, param):
    response = chat(emulator, body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_an_unknown_model_is_a_404_model_not_found(emulator):
    response = chat(emulator, ask("gpt-9"))
    assert response.status_code == 404
    assert response.json() == {"error": {
        "message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}


def test_a_wrong_or_missing_key_is_a_401_invalid_api_key(emulator):
    wrong = chat(emulator, ask(), key="sk-wrong-key-123456")
    missing = httpx.post(f"{emulator.base_url}/chat/completions", json=ask())

    for response in (wrong, missing):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert "sk-*****3456" in wrong.json()["error"]["message"]  # quoted masked, as OpenAI does
    assert httpx.get(f"{emulator.base_url}/models").status_code == 401


def test_told_to_it_answers_429_with_retry_after_then_5xx_then_serves_again(emulator):
    emulator.fail(429, retry_after=7)
    emulator.fail(503, times=2)
    emulator.answer("back")

    limited, *unavailable, served = [chat(emulator, ask()) for _ in range(4)]

    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert [r.status_code for r in unavailable] == [503, 503]
    assert unavailable[0].json()["error"]["type"] == "server_error"
    assert served.json()["choices"][0]["message"]["content"] == "back"  # kept for after


def test_models_lists_what_it_serves(emulator):
    response = httpx.get(f"{emulator.base_url}/models",
                         headers={"Authorization": f"Bearer {emulator.api_key}"})
    assert response.json()["object"] == "list"
    assert [m["id"] for m in response.json()["data"]] == ["gpt-4o-mini", "llama3"]


def test_azure_deployment_urls_take_the_api_key_header_and_an_api_version(emulator):
    emulator.answer("from azure", model="llama3")
    url = f"{emulator.root_url}/openai/deployments/llama3/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}

    served = httpx.post(url, params={"api-version": "2024-10-21"}, json=body,
                        headers={"api-key": emulator.api_key})
    no_version = httpx.post(url, json=body, headers={"api-key": emulator.api_key})
    bearer = httpx.post(url, params={"api-version": "2024-10-21"}, json=body,
                        headers={"Authorization": f"Bearer {emulator.api_key}"})

    assert served.status_code == 200
    assert served.json()["choices"][0]["message"]["content"] == "from azure"
    assert served.json()["model"] == "llama3"
    assert no_version.status_code == 404
    assert bearer.status_code == 401
