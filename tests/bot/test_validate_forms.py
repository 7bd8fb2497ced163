"""`signoff validate` rejects answer schemas a Slack modal cannot express (the bot's check)."""

from __future__ import annotations

import pytest

from engine.definition.loader import parse_workflow
from engine.errors import WorkflowInvalid

NESTED = """
name: nested
steps:
  - name: review
    type: waitForInput
    with:
      message: hi
      schema:
        type: object
        properties:
          approved: {type: boolean}
          target:
            type: object
            properties: {host: {type: string}}
"""


def test_a_nested_object_in_the_answer_schema_is_a_validation_error():
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(NESTED, "nested.yaml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (9, 9)  # where the schema starts
    assert "review form" in problem.message and "target" in problem.message


def test_a_schema_the_modal_can_show_is_accepted():
    parse_workflow(NESTED.replace("type: object\n            properties: {host: {type: string}}",
                                  "type: string"))
