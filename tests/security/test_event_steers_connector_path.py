"""Attack: event data steers an http step's connector-bound call elsewhere: a `path` that
climbs out of the connection's base URL (scheme-relative, absolute, `..`, percent-encoded,
backslashes), or a `url` outside it, so the connection's credentials would go to the
attacker's host. Each is refused before anything is sent, and not retried."""

from __future__ import annotations

import pytest

from engine.definition.loader import parse_workflow
from engine.state.execution import ExecutionStatus
from tests.engine.test_http_connector import drain, run, step


@pytest.mark.parametrize("path", ["//evil.example/x", "https://evil.example/x", "../admin",
                                  "%2e%2e/admin", "x/../../admin", "\\\\evil.example\\x"])
def test_a_path_that_would_leave_the_base_is_refused_before_anything_is_sent(
        connected, service, path):
    rt = connected()
    # From the event, as an attacker who can start a run would supply it.
    steps = step('path: "{{ event.where }}"')
    workflow = parse_workflow(f"name: call\nsteps:\n{steps}")
    execution_id = rt.engine.run(workflow, {"where": path})
    drain(rt)

    state = rt.engine.get(execution_id)
    assert state.status is ExecutionStatus.FAILED
    result = state.results["call"]
    assert result.attempts == 1  # not retried: it will not get better
    assert (result.error or "").startswith("with.path: path ")
    assert service.seen == []


def test_a_url_outside_the_connections_base_is_refused(connected, service, elsewhere):
    rt = connected()
    _, state = run(rt, step(f"url: {elsewhere.url}/api/steal"))
    assert state.status is ExecutionStatus.FAILED
    assert "is outside connector 'edr'" in (state.results["call"].error or "")
    assert elsewhere.seen == [] and service.seen == []
