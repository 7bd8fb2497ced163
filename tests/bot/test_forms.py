"""JSON Schema to modal and back: elements per kind, raw state parsing, inline errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.models.views import View

from bot.forms import (
    ReviewRef,
    asks_more_than_decision,
    humanize,
    modal_for,
    offers_decision,
    only_decision_required,
    unsupported_schema_reasons,
    validation_errors,
    values_from_state,
)
from engine.notify import ReviewRequest
from engine.state.execution import iso
from engine.steps.human import APPROVAL_SCHEMA, DEFAULT_INPUT_SCHEMA


def review_for(schema: dict[str, Any], **overrides: Any) -> ReviewRequest:
    fields: dict[str, Any] = {
        "execution_id": "exe_01J9ZK", "workflow": "isolate-host-with-approval", "step": "review",
        "step_type": "waitForInput", "message": "## Isolate `web-01 <!channel>`?\n\nEvidence.",
        "message_sha256": "0" * 64, "schema": schema,
        "created_at": datetime(2026, 11, 22, 13, 2, tzinfo=UTC),
    }
    fields.update(overrides)
    return ReviewRequest(**fields)


def schema_of(**props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def assert_valid_view(view: dict[str, Any]) -> None:
    """Parses with slack_sdk, passes its validators, and loses nothing on the way."""
    parsed = View(**view)
    parsed.validate_json()
    assert parsed.to_dict() == view
    assert 1 <= len(view["title"]["text"]) <= 24
    assert len(view["private_metadata"]) <= 3000
    assert len(view["blocks"]) <= 100


def inputs(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


def element_for(prop: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    schema = {**schema_of(field=prop), "required": ["field"] if required else []}
    view = modal_for(review_for(schema), preset_decision=None)
    assert_valid_view(view)
    block = inputs(view)["field"]
    assert block["optional"] is not required
    assert block["element"]["action_id"] == "value"
    return block["element"]


# -- the modal -------------------------------------------------------------------------------


def test_elastic_modal_has_decision_line_then_one_input_per_property() -> None:
    schema = {"type": "object", "required": ["approved"], "properties": {
        "approved": {"type": "boolean", "title": "Isolate the host"},
        "notes": {"type": "string", "title": "Analyst notes", "description": "Why?"},
    }}
    review = review_for(schema)
    view = modal_for(review, preset_decision=True)
    assert_valid_view(view)
    assert view["callback_id"] == "signoff.submit"
    assert view["submit"]["text"] == "Submit" and view["close"]["text"] == "Cancel"
    # The instance too (when it started waiting): a form left open must not answer the next.
    assert ReviewRef.decode(view["private_metadata"]) == ReviewRef(
        "exe_01J9ZK", "review", since=iso(review.created_at))
    first = view["blocks"][0]
    assert first["type"] == "section"
    assert first["text"]["text"] == "*Isolate web-01 &lt;!channel&gt;?*"
    assert list(inputs(view)) == ["approved", "notes"]
    approved, notes = inputs(view).values()
    assert approved["label"]["text"] == "Isolate the host" and approved["optional"] is False
    assert approved["element"]["type"] == "radio_buttons"
    assert approved["element"]["initial_option"]["value"] == "true"
    assert notes["hint"]["text"] == "Why?" and notes["optional"] is True


@pytest.mark.parametrize("preset", [True, False])
def test_preset_decision_initializes_the_decision_field(preset: bool) -> None:
    schema = {**schema_of(ok={"type": "boolean", "default": not preset}), "required": ["ok"]}
    view = modal_for(review_for(schema, decision_field="ok"), preset_decision=preset)
    element = inputs(view)["ok"]["element"]
    assert element["initial_option"]["value"] == json.dumps(preset)


def test_title_fits_in_24_characters() -> None:
    view = modal_for(review_for(schema_of(a={"type": "string"}),
                                step="a-very-long-step-name-for-the-modal"),
                     preset_decision=None, callback_id="custom")
    assert_valid_view(view)
    assert view["title"]["text"] == "Review a-very-long-step…"
    assert view["callback_id"] == "custom"


def test_labels_fall_back_to_the_humanized_name() -> None:
    assert humanize("analyst_notes") == "Analyst notes"
    assert humanize("rollbackPlanURL") == "Rollback plan URL"
    view = modal_for(review_for(schema_of(change_ticket={"type": "string"})),
                     preset_decision=None)
    assert inputs(view)["change_ticket"]["label"]["text"] == "Change ticket"


@pytest.mark.parametrize(("prop", "required", "expected"), [
    ({"type": "boolean"}, True, {"type": "radio_buttons"}),
    ({"type": "boolean", "default": True}, False,
     {"type": "checkboxes", "initial_options": [{"text": {"type": "plain_text", "text": "Yes"},
                                                  "value": "true"}]}),
    ({"type": "string", "minLength": 3, "maxLength": 80, "default": "hi"}, False,
     {"type": "plain_text_input", "min_length": 3, "max_length": 80, "initial_value": "hi"}),
    ({"type": "string", "maxLength": 5000}, False,
     {"type": "plain_text_input", "multiline": True, "max_length": 3000}),
    ({"type": "string", "format": "textarea"}, False,
     {"type": "plain_text_input", "multiline": True}),
    ({"type": "string", "format": "email", "default": "a@example.com"}, False,
     {"type": "email_text_input", "initial_value": "a@example.com"}),
    ({"type": "string", "format": "uri"}, False, {"type": "url_text_input"}),
    ({"type": "string", "format": "date", "default": "2026-11-22"}, False,
     {"type": "datepicker", "initial_date": "2026-11-22"}),
    ({"type": "string", "format": "time", "default": "14:02"}, False,
     {"type": "timepicker", "initial_time": "14:02"}),
    ({"type": "string", "format": "date-time", "default": "2026-11-22T14:02:00Z"}, False,
     {"type": "datetimepicker", "initial_date_time": 1795356120}),
    ({"type": "integer", "minimum": 1, "maximum": 5, "default": 3}, True,
     {"type": "number_input", "is_decimal_allowed": False, "min_value": "1", "max_value": "5",
      "initial_value": "3"}),
    ({"type": "number", "minimum": 0.5, "default": 2.25}, False,
     {"type": "number_input", "is_decimal_allowed": True, "min_value": "0.5",
      "initial_value": "2.25"}),
    ({"type": "string", "x-slack-input": "users_select", "default": "U0OWNER"}, True,
     {"type": "users_select", "initial_user": "U0OWNER"}),
    ({"type": "array", "items": {"type": "string"}, "x-slack-input": "multi_users_select",
      "maxItems": 3}, False, {"type": "multi_users_select", "max_selected_items": 3}),
    ({"type": "string", "x-slack-input": "conversations_select"}, False,
     {"type": "conversations_select"}),
    ({"type": "array", "x-slack-input": "conversations_select", "default": ["C0ROOM"]}, False,
     {"type": "multi_conversations_select", "initial_conversations": ["C0ROOM"]}),
])
def test_each_schema_kind_gets_its_element(prop: dict[str, Any], required: bool,
                                           expected: dict[str, Any]) -> None:
    element = element_for(prop, required=required)
    assert element | expected == element, element


@pytest.mark.parametrize(("count", "kind"), [(2, "radio_buttons"), (5, "radio_buttons"),
                                             (6, "static_select"), (100, "static_select")])
def test_enum_size_picks_radio_or_menu(count: int, kind: str) -> None:
    element = element_for({"enum": [f"option {i}" for i in range(count)], "default": "option 1"})
    assert element["type"] == kind
    assert len(element["options"]) == count
    assert element["initial_option"]["value"] == '"option 1"'


@pytest.mark.parametrize(("count", "kind"), [(10, "checkboxes"), (11, "multi_static_select")])
def test_enum_list_size_picks_checkboxes_or_menu(count: int, kind: str) -> None:
    element = element_for({"type": "array", "items": {"enum": list(range(count))},
                           "default": [1, 3]})
    assert element["type"] == kind
    assert [o["value"] for o in element["initial_options"]] == ["1", "3"]


def test_option_labels_are_cut_and_never_empty() -> None:
    element = element_for({"enum": ["", "x" * 140, None, 7]})
    labels = [o["text"]["text"] for o in element["options"]]
    assert labels[0] == "(empty)" and len(labels[1]) == 75 and labels[2:] == ["(none)", "7"]


def test_many_fields_stay_within_modal_limits() -> None:
    props = {f"field_{i}": {"type": "string", "title": "t" * 3000, "description": "d" * 3000}
             for i in range(120)}
    view = modal_for(review_for(schema_of(**props), message="# " + "m" * 5000),
                     preset_decision=None)
    assert_valid_view(view)
    assert len(view["blocks"]) == 100


# -- what the modal cannot show --------------------------------------------------------------


def test_supported_schemas_have_no_reasons() -> None:
    assert unsupported_schema_reasons(APPROVAL_SCHEMA) == []
    assert unsupported_schema_reasons(DEFAULT_INPUT_SCHEMA) == []


@pytest.mark.parametrize(("schema", "fragment"), [
    (schema_of(address={"type": "object", "properties": {"city": {"type": "string"}}}),
     "nested object"),
    (schema_of(hosts={"type": "array", "items": {"type": "string"}}), "list of free values"),
    (schema_of(pick={"enum": list(range(101))}), "at most 100"),
    (schema_of(tags={"type": "array", "items": {"enum": list(range(150))}}), "at most 100"),
    (schema_of(choice={"oneOf": [{"const": 1}, {"const": 2}]}), "oneOf"),
    (schema_of(choice={"anyOf": [{"type": "string"}, {"type": "integer"}]}), "anyOf"),
    ({"type": "object", "oneOf": [{"required": ["a"]}, {"required": ["b"]}]}, "top level"),
    (schema_of(**{"n" * 300: {"type": "string"}}), "255"),
    (schema_of(v={"type": ["string", "null"]}), "several types"),
    (schema_of(v={}), "no type"),
    (schema_of(v={"enum": [{"a": 1}]}), "object or list options"),
    (schema_of(v={"enum": ["x" * 200]}), "longer than 150"),
    (schema_of(v={"type": "string", "x-slack-input": "files_select"}), "x-slack-input"),
    (schema_of(v={"type": "string", "x-slack-input": "multi_users_select"}), "array"),
    ({"type": "object", "required": ["ghost"]}, "no property"),
    ({"type": "array"}, "type: object"),
    (schema_of(**{f"f{i}": {"type": "string"} for i in range(100)}), "at most 99"),
])
def test_unsupported_schemas_say_why(schema: dict[str, Any], fragment: str) -> None:
    reasons = unsupported_schema_reasons(schema)
    assert any(fragment in reason for reason in reasons), reasons


# -- one click or a modal --------------------------------------------------------------------


@pytest.mark.parametrize(("schema", "one_click", "offers", "more"), [
    (APPROVAL_SCHEMA, True, True, False),
    (DEFAULT_INPUT_SCHEMA, True, True, False),
    ({**schema_of(approved={"type": "boolean"}, notes={"type": "string"}),
      "required": ["approved"]}, True, True, True),
    ({**schema_of(approved={"type": "boolean"}, notes={"type": "string"}),
      "required": ["approved", "notes"]}, False, True, True),
    ({**schema_of(ticket={"type": "string"}), "required": ["ticket"]}, False, False, True),
    (schema_of(approved={"type": "string"}), False, False, False),
    ({"type": "object", "additionalProperties": False}, False, False, False),
])
def test_one_click_only_when_nothing_but_the_decision_is_required(
        schema: dict[str, Any], one_click: bool, offers: bool, more: bool) -> None:
    review = review_for(schema)
    assert only_decision_required(review) is one_click
    assert offers_decision(review) is offers
    assert asks_more_than_decision(review) is more


# -- reading the raw state back --------------------------------------------------------------

STATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["approved"],
    "properties": {
        "approved": {"type": "boolean"},
        "notify": {"type": "boolean"},
        "notes": {"type": "string"},
        "contact": {"type": "string", "format": "email"},
        "runbook": {"type": "string", "format": "uri"},
        "day": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "time"},
        "when": {"type": "string", "format": "date-time"},
        "severity": {"enum": [1, 2, 3]},
        "region": {"enum": [f"r{i}" for i in range(8)]},
        "tags": {"type": "array", "items": {"enum": ["db", "web", 3]}},
        "replicas": {"type": "integer"},
        "ratio": {"type": "number"},
        "owner": {"type": "string", "x-slack-input": "users_select"},
        "watchers": {"type": "array", "x-slack-input": "multi_users_select"},
        "room": {"type": "string", "x-slack-input": "conversations_select"},
        "rooms": {"type": "array", "x-slack-input": "multi_conversations_select"},
    },
}


def option(value: str, text: str = "label") -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": text, "emoji": True}, "value": value}


def test_values_from_each_raw_state_shape() -> None:
    state = {
        "approved": {"value": {"type": "radio_buttons", "selected_option": option("false")}},
        "notify": {"value": {"type": "checkboxes", "selected_options": []}},
        "notes": {"value": {"type": "plain_text_input", "value": "Looks <!here> fine"}},
        "contact": {"value": {"type": "email_text_input", "value": "a@example.com"}},
        "runbook": {"value": {"type": "url_text_input", "value": "https://rb.example/x"}},
        "day": {"value": {"type": "datepicker", "selected_date": "2026-11-22"}},
        "at": {"value": {"type": "timepicker", "selected_time": "14:02", "timezone": "UTC"}},
        "when": {"value": {"type": "datetimepicker", "selected_date_time": 1795356120}},
        "severity": {"value": {"type": "radio_buttons", "selected_option": option("2")}},
        "region": {"value": {"type": "static_select", "selected_option": option('"r6"')}},
        "tags": {"value": {"type": "checkboxes",
                           "selected_options": [option('"web"'), option("3")]}},
        "replicas": {"value": {"type": "number_input", "value": "12"}},
        "ratio": {"value": {"type": "number_input", "value": "0.75"}},
        "owner": {"value": {"type": "users_select", "selected_user": "U0OWNER"}},
        "watchers": {"value": {"type": "multi_users_select", "selected_users": ["U1", "U2"]}},
        "room": {"value": {"type": "conversations_select", "selected_conversation": "C0ROOM"}},
        "rooms": {"value": {"type": "multi_conversations_select",
                            "selected_conversations": ["C1"]}},
    }
    assert values_from_state(STATE_SCHEMA, state) == {
        "approved": False, "notify": False, "notes": "Looks <!here> fine",
        "contact": "a@example.com", "runbook": "https://rb.example/x", "day": "2026-11-22",
        "at": "14:02", "when": "2026-11-22T14:02:00Z", "severity": 2, "region": "r6",
        "tags": ["web", 3], "replicas": 12, "ratio": 0.75, "owner": "U0OWNER",
        "watchers": ["U1", "U2"], "room": "C0ROOM", "rooms": ["C1"],
    }


def test_empty_optional_fields_are_omitted() -> None:
    state = {
        "approved": {"value": {"type": "radio_buttons", "selected_option": option("true")}},
        "notes": {"value": {"type": "plain_text_input", "value": None}},
        "contact": {"value": {"type": "email_text_input", "value": ""}},
        "day": {"value": {"type": "datepicker", "selected_date": None}},
        "at": {"value": {"type": "timepicker", "selected_time": None}},
        "when": {"value": {"type": "datetimepicker", "selected_date_time": None}},
        "severity": {"value": {"type": "radio_buttons", "selected_option": None}},
        "tags": {"value": {"type": "checkboxes", "selected_options": []}},
        "replicas": {"value": {"type": "number_input", "value": None}},
        "owner": {"value": {"type": "users_select", "selected_user": None}},
        "watchers": {"value": {"type": "multi_users_select", "selected_users": []}},
        "unknown": {"value": {"type": "plain_text_input", "value": "ignored"}},
    }
    assert values_from_state(STATE_SCHEMA, state) == {"approved": True}


def test_checked_optional_checkbox_is_true() -> None:
    state = {"notify": {"value": {"type": "checkboxes", "selected_options": [option("true")]}}}
    assert values_from_state(STATE_SCHEMA, state) == {"notify": True}


# -- inline errors ---------------------------------------------------------------------------


def test_errors_land_on_the_field_they_concern() -> None:
    schema = {
        "type": "object", "required": ["approved", "reason"],
        "properties": {
            "approved": {"type": "boolean"},
            "reason": {"type": "string", "minLength": 10},
            "ticket": {"type": "string", "pattern": "^CHG-[0-9]+$"},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 1},
        },
    }
    errors = validation_errors(schema, {"ticket": "nope", "replicas": 2.5, "tags": ["a", "b"]})
    assert errors == {
        "approved": "This field is required.",
        "reason": "This field is required.",
        "ticket": "Doesn't match the expected format (^CHG-[0-9]+$).",
        "replicas": "Enter a whole number.",
        "tags": "Choose at most 1.",
    }
    assert validation_errors(schema, {"approved": True, "reason": "short", "replicas": 11}) == {
        "reason": "Enter at least 10 characters.", "replicas": "Enter 10 or less."}
    assert validation_errors(schema, {"approved": True, "reason": "long enough now"}) == {}


def test_errors_without_a_field_go_to_the_first_one_and_stay_short() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}},
              "dependentRequired": {"a": ["b"]},
              "additionalProperties": False}
    errors = validation_errors(schema, {"a": "x" * 500, "zzz": 1})
    assert list(errors) == ["a"]
    assert len(errors["a"]) <= 150
    long_pattern = {"type": "object", "properties": {"a": {"type": "string",
                                                           "pattern": "^" + "x" * 400}}}
    assert len(validation_errors(long_pattern, {"a": "y"})["a"]) <= 150


# -- the round trip --------------------------------------------------------------------------

_SLACK_ID = st.from_regex(r"[A-Z0-9]{8,10}", fullmatch=True)
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=200)
_NUMBER = st.one_of(st.integers(-10**6, 10**6),
                    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
_ENUM_VALUES = st.one_of(
    st.lists(st.text(min_size=0, max_size=20), min_size=1, max_size=100, unique=True),
    st.lists(st.integers(-1000, 1000), min_size=1, max_size=100, unique=True),
    st.lists(st.one_of(st.integers(0, 50), st.text(max_size=5)), min_size=1, max_size=12,
             unique_by=lambda v: json.dumps(v)),
)


@st.composite
def fields(draw: st.DrawFn) -> tuple[dict[str, Any], st.SearchStrategy[Any]]:
    """A property schema the modal supports, and a strategy for its valid values."""
    kind = draw(st.sampled_from([
        "boolean", "text", "email", "url", "date", "time", "date_time", "integer", "number",
        "enum", "multi_enum", "users", "multi_users", "conversations", "multi_conversations"]))
    if kind == "boolean":
        return {"type": "boolean"}, st.booleans()
    if kind == "text":
        high = draw(st.integers(1, 3000))
        prop: dict[str, Any] = {"type": "string", "maxLength": high}
        return prop, _TEXT.filter(lambda s: len(s) <= high)
    if kind == "email":
        return {"type": "string", "format": "email"}, st.emails()
    if kind == "url":
        return ({"type": "string", "format": "uri"},
                st.from_regex(r"https://[a-z]{1,10}\.example/[a-z0-9]{0,10}", fullmatch=True))
    if kind == "date":
        return {"type": "string", "format": "date"}, st.dates().map(lambda d: d.isoformat())
    if kind == "time":
        return ({"type": "string", "format": "time"},
                st.times().map(lambda t: f"{t.hour:02}:{t.minute:02}"))
    if kind == "date_time":
        moments = st.datetimes(datetime(1970, 1, 1), datetime(2200, 1, 1))
        return ({"type": "string", "format": "date-time"},
                moments.map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")))
    if kind == "integer":
        return {"type": "integer", "minimum": -10**6, "maximum": 10**6}, st.integers(-10**6, 10**6)
    if kind == "number":
        return {"type": "number"}, _NUMBER
    if kind == "enum":
        values = draw(_ENUM_VALUES)
        return {"enum": values}, st.sampled_from(values)
    if kind == "multi_enum":
        values = draw(_ENUM_VALUES)
        prop = {"type": "array", "items": {"enum": values}, "uniqueItems": True}
        return prop, st.lists(st.sampled_from(values), min_size=1, unique_by=json.dumps)
    prefix = "U" if "users" in kind else "C"
    ids = _SLACK_ID.map(lambda s: prefix + s)
    if kind.startswith("multi_"):
        return ({"type": "array", "items": {"type": "string"}, "x-slack-input": f"{kind}_select"},
                st.lists(ids, min_size=1, max_size=5))
    return {"type": "string", "x-slack-input": f"{kind}_select"}, ids


@st.composite
def schemas_and_answers(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True),
                          min_size=1, max_size=8, unique=True))
    props, required, answer = {}, [], {}
    for name in names:
        prop, values = draw(fields())
        props[name] = prop
        is_required = draw(st.booleans())
        if is_required:
            required.append(name)
        # An unchecked optional checkbox answers false, so optional booleans are always there.
        if is_required or prop.get("type") == "boolean" or draw(st.booleans()):
            answer[name] = draw(values)
    return {"type": "object", "properties": props, "required": required}, answer


def simulate_state(element: dict[str, Any], value: Any, prop: dict[str, Any]) -> dict[str, Any]:
    """What Slack sends in view.state.values for an element the reviewer filled with ``value``."""
    kind = element["type"]
    state: dict[str, Any] = {"type": kind}
    if value is None:
        return state
    options = element.get("options", [])
    if kind in ("plain_text_input", "email_text_input", "url_text_input"):
        state["value"] = value
    elif kind == "number_input":
        state["value"] = str(value)
    elif kind == "datepicker":
        state["selected_date"] = value
    elif kind == "timepicker":
        state["selected_time"] = value
    elif kind == "datetimepicker":
        state["selected_date_time"] = int(datetime.fromisoformat(value).timestamp())
    elif prop.get("type") == "boolean":
        chosen = [o for o in options if o["text"]["text"] == ("Yes" if value else "No")]
        if kind == "checkboxes":
            state["selected_options"] = chosen
        else:
            state["selected_option"] = chosen[0]
    elif kind in ("radio_buttons", "static_select"):
        state["selected_option"] = options[prop["enum"].index(value)]
    elif kind in ("checkboxes", "multi_static_select"):
        enum = [json.dumps(v) for v in prop["items"]["enum"]]
        state["selected_options"] = [options[enum.index(json.dumps(v))] for v in value]
    else:
        key = {"users_select": "selected_user", "multi_users_select": "selected_users",
               "conversations_select": "selected_conversation",
               "multi_conversations_select": "selected_conversations"}[kind]
        state[key] = value
    return state


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas_and_answers())
def test_modal_state_round_trips_to_the_same_answer(
        case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    schema, answer = case
    assert unsupported_schema_reasons(schema) == []
    assert validation_errors(schema, answer) == {}
    view = modal_for(review_for(schema), preset_decision=None)
    assert_valid_view(view)
    blocks = inputs(view)
    assert list(blocks) == list(schema["properties"])
    state = {name: {"value": simulate_state(block["element"], answer.get(name),
                                            schema["properties"][name])}
             for name, block in blocks.items()}
    assert values_from_state(schema, state) == answer


@given(schemas_and_answers())
@settings(max_examples=100, deadline=None)
def test_defaults_become_valid_initial_values(
        case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    schema, answer = case
    for name, value in answer.items():
        schema["properties"][name]["default"] = value
    assert_valid_view(modal_for(review_for(schema), preset_decision=None))


def test_enum_of_ints_gives_ints_back() -> None:
    schema = schema_of(level={"enum": [1, 2, 3]}, mixed={"enum": ["1", 1]})
    state = {"level": {"value": {"type": "radio_buttons", "selected_option": option("3")}},
             "mixed": {"value": {"type": "radio_buttons", "selected_option": option('"1"')}}}
    assert values_from_state(schema, state) == {"level": 3, "mixed": "1"}
    assert values_from_state(schema, {}) == {}
