"""How a connector step finds its connection (StepContext.connection), and that a worker
hands its SIGNOFF_CONNECTORS to every action."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from engine.definition import step_types as registry
from engine.definition.loader import parse_workflow
from engine.definition.step_types import StepContext
from engine.errors import StepFailed
from engine.state.execution import ExecutionStatus


@dataclass(frozen=True)
class Conn:
    id: str
    type: str


def context(connections: dict[str, Conn], connector_id: str | None = None) -> StepContext:
    return StepContext(options={}, execution_id="x", step_name="open_case", step_path="open_case",
                       attempt=1, connector_id=connector_id, connections=connections)


def test_the_connector_id_names_the_connection():
    both = {"prod": Conn("prod", "kibana"), "kibana": Conn("kibana", "kibana")}
    assert context(both, "prod").connection("kibana", ("kibana",)).id == "prod"


def test_without_a_connector_id_the_familys_name_then_the_only_one_of_the_type():
    assert context({"kibana": Conn("kibana", "kibana"), "other": Conn("other", "kibana")}
                   ).connection("kibana", ("kibana",)).id == "kibana"
    assert context({"siem": Conn("siem", "kibana"), "es": Conn("es", "elasticsearch")}
                   ).connection("kibana", ("kibana",)).id == "siem"


@pytest.mark.parametrize(("connections", "connector_id", "message"), [
    ({}, "prod", "connector-id 'prod' of step 'open_case' is not configured"),
    ({"a": Conn("a", "kibana"), "b": Conn("b", "kibana")}, None, "2 are of type kibana"),
    ({}, None, "none is of type kibana"),
    ({"prod": Conn("prod", "openai")}, "prod", "connection 'prod' of step 'open_case' is of "
                                               "type 'openai', not kibana"),
])
def test_no_connection_or_one_of_another_type_fails_the_step_for_good(connections, connector_id,
                                                                      message):
    with pytest.raises(StepFailed, match=message) as failure:
        context(connections, connector_id).connection("kibana", ("kibana",))
    assert failure.value.retryable is False


def test_a_worker_hands_its_connections_to_each_action(runtime, work, monkeypatch):
    registry.registered_step_types()
    monkeypatch.setitem(registry._registry, "test.which", registry.StepType(
        name="test.which", kind=registry.StepKind.ACTION, options_schema={"type": "object"},
        run=lambda ctx: ctx.connection("kibana", ("kibana",)).id))
    monkeypatch.setattr(runtime.runner, "connections", {"siem": Conn("siem", "kibana")})
    execution_id = runtime.engine.run(parse_workflow(textwrap.dedent("""
        name: which
        steps:
          - {name: which, type: test.which}
        """)))
    work()
    state = runtime.engine.get(execution_id)
    assert state.status is ExecutionStatus.COMPLETED
    assert state.results["which"].output == "siem"
