"""Kibana's Agent Builder converse API, for :class:`elastic_emulator.kibana.KibanaEmulator`.

``POST /api/agent_builder/converse`` (in any space the emulator has) takes the converse
API's body (``agent_id``, ``input``, ``conversation_id``, ``attachments``,
``configuration_overrides``, ...) and answers ``{conversation_id, round_id, steps,
response: {message}}``. Agents are ids (``elastic-ai-agent`` is always there, as in
Kibana); their answers are scripted with :meth:`AgentBuilder.script` (a string is the
message as it is, anything else is sent as its JSON text); an agent with nothing scripted
echoes the input. A conversation keeps its rounds, readable with
:meth:`AgentBuilder.rounds`.

Errors as Kibana gives them: a key the route's schema does not define answers 400
(``[request body.<key>]: definition for this key is missing``, as ``@kbn/config-schema``
words it), an unknown agent or conversation 404, a body without ``input`` 400, a
conversation continued with another agent 400.

Not modelled: the agent's tools, reasoning steps and model (``steps`` is empty), streaming
(``/converse/async``), the agents and conversations CRUD APIs, and token usage.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

DEFAULT_AGENT = "elastic-ai-agent"
BODY_KEYS = frozenset({"agent_id", "connector_id", "inference_id", "conversation_id", "input",
                       "prompts", "attachments", "capabilities", "browser_api_tools",
                       "configuration_overrides", "action", "_execution_mode", "agent_mode",
                       "access_control"})


class ConverseError(Exception):
    """An answer of the converse API in Kibana's error shape (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Conversation:
    """One conversation: its agent and its rounds, oldest first."""

    agent_id: str
    rounds: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AgentBuilder:
    """The agents of one Kibana space, their scripted answers and their conversations."""

    agents: set[str] = field(default_factory=lambda: {DEFAULT_AGENT})
    scripted: dict[str, list[Any]] = field(default_factory=dict)
    conversations: dict[str, Conversation] = field(default_factory=dict)

    def script(self, agent_id: str, *answers: Any) -> None:
        """Add ``agent_id`` (if new) and queue its next answers."""
        self.agents.add(agent_id)
        self.scripted.setdefault(agent_id, []).extend(answers)

    def rounds(self, conversation_id: str) -> list[dict[str, Any]]:
        conversation = self.conversations.get(conversation_id)
        return list(conversation.rounds) if conversation else []

    def converse(self, body: dict[str, Any]) -> dict[str, Any]:
        """One round: the agent's answer, in the converse API's shape."""
        unknown = sorted(set(body) - BODY_KEYS)
        if unknown:
            raise ConverseError(400, f"[request body.{unknown[0]}]: definition for this key "
                                     "is missing")
        text = body.get("input")
        if not isinstance(text, str):
            raise ConverseError(400, "[request body.input]: expected value of type [string] "
                                     f"but got [{type(text).__name__ if text is not None else 'undefined'}]")
        agent_id = str(body.get("agent_id") or DEFAULT_AGENT)
        if agent_id not in self.agents:
            raise ConverseError(404, f"Agent {agent_id} not found")
        conversation_id = body.get("conversation_id")
        if conversation_id:
            conversation = self.conversations.get(str(conversation_id))
            if conversation is None:
                raise ConverseError(404, f"Conversation {conversation_id} not found")
            if conversation.agent_id != agent_id:
                raise ConverseError(400, f"Conversation {conversation_id} belongs to agent "
                                         f"{conversation.agent_id}, not {agent_id}")
        else:
            conversation_id = str(uuid.uuid4())
            conversation = self.conversations[conversation_id] = Conversation(agent_id)
        queue = self.scripted.get(agent_id) or []
        answer: Any = queue.pop(0) if queue else f"{agent_id} received: {text}"
        response = {"message": answer if isinstance(answer, str) else json.dumps(answer)}
        round_id = str(uuid.uuid4())
        conversation.rounds.append({"id": round_id, "input": {"message": text},
                                    "request": body, "response": response})
        return {"conversation_id": conversation_id, "round_id": round_id, "steps": [],
                "response": response}
