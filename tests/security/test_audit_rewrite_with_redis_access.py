"""Someone who can write to Redis, but does not hold SIGNOFF_AUDIT_KEY, rewrites who approved
a payout and makes the trail consistent again: every later link recomputed, the head too.

With the key set, `signoff audit ID --verify` (a real process) and the API both call the
trail broken and name the rewritten event. Without a key the very same rewrite verifies:
a bare sha256 chain cannot tell a careful rewrite from the original, which is exactly what
the key adds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from engine.api import build_api
from engine.definition.loader import WorkflowCatalog
from engine.notify import NullNotifier
from engine.state import audit, keys
from engine.worker.runtime import build_runtime, install_runtime
from engine.worker.worker import SignoffWorker
from tests.security.conftest import PAYOUT, REQUESTER
from tests.support.services import ROOT

KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0-audit"


@pytest.fixture
def deployment(settings, redis_client, served, workflow_file):
    """Start a deployment (keyed or not) with the API served over HTTP; returns a function
    that runs a payout through Alice's approval and gives (execution id, API client)."""
    workflow_file(PAYOUT, "payout.yaml")
    clients = []

    def start(key: str | None):
        rt = build_runtime(replace(settings, audit_key=key), redis_client,
                           notifier=NullNotifier())
        install_runtime(rt)
        api = served(build_api(rt.engine, WorkflowCatalog(settings.workflows_dir),
                               api_token=settings.api_token, workers_seen=lambda: 0))
        client = api.client(headers={"Authorization": f"Bearer {settings.api_token}"})
        clients.append(client)

        def work() -> None:
            SignoffWorker([settings.queue], connection=redis_client).work(
                burst=True, logging_level="WARNING")

        started = client.post("/api/workflows/payout/run", json={"amount": 9000,
                                                                 "iban": "DE00 1234"},
                              headers={"X-Signoff-Requested-By": REQUESTER})
        assert started.status_code == 201, started.text
        execution_id = started.json()["executionId"]
        work()
        decided = client.post(f"/api/workflowExecutions/{execution_id}/resume",
                              json={"approved": True}, headers={"X-Signoff-Actor": "U0ALICE"})
        assert decided.status_code == 200, decided.text
        work()
        return execution_id, client

    yield start
    for client in clients:
        client.close()


def rewrite_approver(redis_client, execution_id: str, *, keep_prefix: bool) -> int:
    """As the attacker: make U0MALLORY the approver, recompute every later link with sha256
    (the key is not in Redis) and set the head. Returns the rewritten entry's number."""
    key = keys.audit(execution_id)
    raws = redis_client.lrange(key, 0, -1)
    index = next(i for i, raw in enumerate(raws) if '"step.decided"' in audit.split(raw)[1])
    previous = audit.split(raws[index - 1])[0]
    for i in range(index, len(raws)):
        body = audit.split(raws[i])[1]
        if i == index:
            event = json.loads(body)
            event["actor"]["id"] = "U0MALLORY"
            body = json.dumps(event, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False)
        digest = audit.link(previous, body)
        if keep_prefix and audit.split(raws[i])[0].startswith(audit.KEYED):
            digest = audit.KEYED + digest  # looks keyed; is not the HMAC
        redis_client.lset(key, i, audit.stored(digest, body))
        previous = digest
    redis_client.hset(keys.execution(execution_id), "ah", previous)
    return index + 1


def verify_with_the_cli(settings, execution_id: str, key: str | None):
    env = {**os.environ, "REDIS_URL": settings.redis_url, "SIGNOFF_AUDIT_KEY": key or ""}
    return subprocess.run([sys.executable, "-m", "engine.cli", "audit", execution_id,
                           "--verify"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("keep_prefix", [False, True], ids=["bare-sha256", "hmac-prefixed"])
def test_with_the_key_a_consistent_rewrite_is_reported_broken_at_the_rewritten_event(
        deployment, redis_client, settings, keep_prefix):
    execution_id, api = deployment(KEY)
    assert api.get(f"/api/workflowExecutions/{execution_id}/audit").json()["verified"] is True

    number = rewrite_approver(redis_client, execution_id, keep_prefix=keep_prefix)

    cli = verify_with_the_cli(settings, execution_id, KEY)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "BROKEN" in cli.stderr and f"event {number} ({number})" in cli.stderr
    answer = api.get(f"/api/workflowExecutions/{execution_id}/audit").json()
    assert answer["verified"] is False and f"event {number} ({number})" in answer["problem"]
    assert any(e["type"] == "step.decided" and e["actor"]["id"] == "U0MALLORY"
               for e in answer["events"])  # the rewrite is there, and called out

    without_key = verify_with_the_cli(settings, execution_id, None)
    assert without_key.returncode == 2 and "set SIGNOFF_AUDIT_KEY" in without_key.stderr


def test_without_a_key_the_same_rewrite_verifies(deployment, redis_client, settings):
    execution_id, api = deployment(None)
    rewrite_approver(redis_client, execution_id, keep_prefix=False)

    cli = verify_with_the_cli(settings, execution_id, None)
    assert cli.returncode == 0 and "chain intact" in cli.stdout
    answer = api.get(f"/api/workflowExecutions/{execution_id}/audit").json()
    assert answer["verified"] is True
    assert any(e["type"] == "step.decided" and e["actor"]["id"] == "U0MALLORY"
               for e in answer["events"])
