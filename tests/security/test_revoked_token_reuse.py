"""Attack: keep using a token after it was revoked (a leaked CI secret, a departed
front-end), or after a token of the same name was made again."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from engine.state import tokens
from tests.support.services import ROOT


def signoff(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "REDIS_URL": redis_url})


def test_a_revoked_token_is_refused_from_a_tenth_of_a_second_after_on(make_token, client_for,
                                                                       redis_url):
    leaked = client_for(make_token("ci", "read"))
    assert leaked.get("/api/workflowExecutions").status_code == 200  # the web process keeps it

    revoked = signoff(redis_url, "token", "revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(tokens.RECENT_SECONDS)  # the documented bound (engine.state.tokens)

    answer = leaked.get("/api/workflowExecutions")
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_made_again_under_the_same_name_does_not_revive_the_old_secret(
        make_token, client_for, runtime):
    old = client_for(make_token("ci", "read"))
    runtime.store.revoke_token("ci")
    new = client_for(make_token("ci", "read"))

    assert new.get("/api/workflowExecutions").status_code == 200
    assert old.get("/api/workflowExecutions").status_code == 401


def test_revoked_and_made_up_tokens_get_the_same_answer(make_token, client_for, runtime):
    revoked = client_for(make_token("ci", "read"))
    runtime.store.revoke_token("ci")
    made_up = client_for("signoff_" + "A" * 43)

    first = revoked.get("/api/workflowExecutions")
    second = made_up.get("/api/workflowExecutions")
    assert first.status_code == second.status_code == 401
    assert first.json() == second.json()  # nothing tells a revoked token from a guess
