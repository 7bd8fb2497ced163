"""Attacks on Signoff, each performed the way an attacker would and expected to fail.

One file per attack, named after it. The API is served by uvicorn over loopback HTTP,
on a real Redis; tokens are made as ``signoff token create`` makes them, and runs are
started by the operator and advanced by a real RQ worker (in this process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from engine.state import tokens
from tests.bot.conftest import (  # noqa: F401 - the Slack side's fixtures, for attacks through Slack
    bot_settings,
    running_slack,
    signoff,
    slack,
    start_signoff,
)
from tests.engine.test_gate_api import (  # noqa: F401 - the gate's fixtures, for its attacks
    agent,
    alice,
    gate_server,
)
from tests.engine.test_http_connector import (  # noqa: F401 - for the connector-path attacks
    connected,
    elsewhere,
    service,
)
from tests.support.services import ServedApp

# A payout that Alice or Dave may approve; Bob asks for it.
PAYOUT = """
name: payout
steps:
  - name: review
    type: waitForApproval
    with:
      message: "Pay {{ event.amount }} EUR to {{ event.iban }}?"
      approvers: ["U0ALICE", "U0DAVE"]
  - name: pay
    type: console
    if: "steps.review.output.approved : true"
    with: {message: "paid {{ event.amount }}"}
"""
REQUESTER = "U0BOB"


@pytest.fixture
def api_server(runtime, served, workflow_file, settings) -> ServedApp:
    workflow_file(PAYOUT, "payout.yaml")
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token=settings.api_token, workers_seen=lambda: 0)
    return served(app)


@pytest.fixture
def client_for(api_server) -> Iterator[Callable[[str], httpx.Client]]:
    """An HTTP client that shows the given token."""
    clients: list[httpx.Client] = []

    def make(secret: str) -> httpx.Client:
        client = api_server.client(headers={"Authorization": f"Bearer {secret}"})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def operator(client_for, settings) -> httpx.Client:
    """The operator: SIGNOFF_API_TOKEN, every scope."""
    return client_for(settings.api_token)


@pytest.fixture
def make_token(runtime) -> Callable[..., str]:
    """Make a token as ``signoff token create`` does; returns its secret."""

    def create(name: str, scopes: str, principal: str | None = None) -> str:
        secret, record = tokens.issue(name, tokens.parse_scopes(scopes), principal,
                                      "2025-01-01T00:00:00.000Z")
        runtime.store.add_token(record, tokens.digest(secret))
        return secret

    return create


@pytest.fixture
def waiting_payout(operator, work) -> Callable[[], str]:
    """Start a payout as the operator on Bob's behalf and run it to its review."""

    def start() -> str:
        response = operator.post("/api/workflows/payout/run",
                                 json={"amount": 9000, "iban": "DE00 1234"},
                                 headers={"X-Signoff-Requested-By": REQUESTER})
        assert response.status_code == 201, response.text
        execution_id: str = response.json()["executionId"]
        work()
        assert status(operator, execution_id) == "WAITING_FOR_INPUT"
        return execution_id

    return start


def status(client: httpx.Client, execution_id: str) -> str:
    answer = client.get(f"/api/workflowExecutions/{execution_id}")
    assert answer.status_code == 200, answer.text
    result: str = answer.json()["status"]
    return result


def decisions(client: httpx.Client, execution_id: str) -> list[dict]:
    events = client.get(f"/api/workflowExecutions/{execution_id}/audit").json()["events"]
    return [e for e in events if e["type"] == "step.decided"]
