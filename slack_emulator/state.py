"""What interactive elements report: Block Kit state values and action payloads.

Slack reports a user's input by element type: ``value`` for text inputs,
``selected_option(s)`` for selects, radios and checkboxes, ``selected_date`` and
friends for pickers, ``selected_user(s)`` and ``selected_conversation(s)``... This
module turns a friendly Python value into that shape, the way Slack's client would.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from datetime import time as clock_time
from typing import Any

from slack_emulator.errors import DriverError

# Element type -> (state key, initial-value key) for elements whose state is a scalar or list.
_SCALAR_STATE = {
    "plain_text_input": ("value", "initial_value"),
    "email_text_input": ("value", "initial_value"),
    "url_text_input": ("value", "initial_value"),
    "number_input": ("value", "initial_value"),
    "datepicker": ("selected_date", "initial_date"),
    "timepicker": ("selected_time", "initial_time"),
    "datetimepicker": ("selected_date_time", "initial_date_time"),
    "users_select": ("selected_user", "initial_user"),
    "multi_users_select": ("selected_users", "initial_users"),
    "conversations_select": ("selected_conversation", "initial_conversation"),
    "multi_conversations_select": ("selected_conversations", "initial_conversations"),
    "channels_select": ("selected_channel", "initial_channel"),
    "multi_channels_select": ("selected_channels", "initial_channels"),
}
_LIST_STATE_KEYS = {"selected_users", "selected_conversations", "selected_channels"}
_ONE_OPTION = {"static_select", "external_select", "radio_buttons", "overflow"}
_MANY_OPTIONS = {"multi_static_select", "multi_external_select", "checkboxes"}
_STATEFUL = set(_SCALAR_STATE) | _ONE_OPTION | _MANY_OPTIONS | {"rich_text_input"}


def interactive_elements(blocks: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(block_id, element) for every element of actions, section accessories and inputs."""
    for block in blocks:
        block_id = block.get("block_id", "")
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                yield block_id, element
        elif block.get("type") == "section" and "accessory" in block:
            yield block_id, block["accessory"]
        elif block.get("type") == "input" and "element" in block:
            yield block_id, block["element"]


def find_element(
    blocks: list[dict[str, Any]], action_id: str, block_id: str | None, value: Any
) -> tuple[str, dict[str, Any]]:
    """The one element a user means by ``action_id`` (and ``block_id``, button ``value``)."""
    candidates = [
        (bid, element)
        for bid, element in interactive_elements(blocks)
        if element.get("action_id") == action_id and block_id in (None, bid)
    ]
    if value is not None:
        # A value names which button was pressed; for other elements it is the choice made.
        candidates = [
            c for c in candidates if c[1].get("type") != "button" or c[1].get("value") == value
        ]
    if not candidates:
        raise DriverError(f"no element with action_id {action_id!r} (value {value!r}) to use")
    if len(candidates) > 1:
        raise DriverError(
            f"{len(candidates)} elements share action_id {action_id!r}; give block_id"
        )
    return candidates[0]


def view_state(blocks: list[dict[str, Any]], values: dict[str, Any]) -> dict[str, Any]:
    """A view's ``state.values`` after the user typed ``values`` ({block_id: python value})."""
    state: dict[str, Any] = {}
    missing: list[str] = []
    required = {
        b.get("block_id") for b in blocks if b.get("type") == "input" and not b.get("optional")
    }
    for block_id, element in interactive_elements(blocks):
        if element.get("type") not in _STATEFUL:
            continue
        given = block_id in values
        reported = element_state(element, values.pop(block_id, None), given=given)
        state.setdefault(block_id, {})[element.get("action_id", "")] = reported
        if block_id in required and _empty(reported):
            missing.append(block_id)
    if values:
        raise DriverError(f"the view has no input for {sorted(values)}")
    if missing:
        raise DriverError(
            f"input {', '.join(map(repr, missing))} is required; Slack would not submit it empty"
        )
    return state


def _empty(reported: dict[str, Any]) -> bool:
    values = [v for k, v in reported.items() if k != "type"]
    return all(v in (None, "", [], {}) for v in values)


def element_state(element: dict[str, Any], value: Any, *, given: bool) -> dict[str, Any]:
    """Slack's state entry for an element the user set to ``value`` (or left as it was)."""
    kind = element["type"]
    state: dict[str, Any] = {"type": kind}
    if kind in _SCALAR_STATE:
        key, initial = _SCALAR_STATE[kind]
        raw = value if given else element.get(initial)
        state[key] = _scalar(key, raw)
    elif kind in _ONE_OPTION:
        raw = value if given else (element.get("initial_option") or {}).get("value")
        state["selected_option"] = None if raw is None else _option(element, raw)
    elif kind in _MANY_OPTIONS:
        if given:
            chosen = [value] if isinstance(value, str) else list(value or [])
        else:
            chosen = [o["value"] for o in element.get("initial_options", [])]
        state["selected_options"] = [_option(element, v) for v in chosen]
    elif kind == "rich_text_input":
        text = value if given else None
        state["rich_text_value"] = _rich_text(text) if text else element.get("initial_value")
    return state


def _scalar(key: str, raw: Any) -> Any:
    if raw is None:
        return [] if key in _LIST_STATE_KEYS else None
    if isinstance(raw, datetime):
        return int(raw.timestamp())
    if isinstance(raw, date):
        return raw.isoformat()
    if isinstance(raw, clock_time):
        return raw.strftime("%H:%M")
    if key == "selected_date_time":
        return int(raw)
    if isinstance(raw, list | tuple | set):
        return [str(v) for v in raw]
    return str(raw)


def _option(element: dict[str, Any], value: Any) -> dict[str, Any]:
    options = list(element.get("options", []))
    for group in element.get("option_groups", []):
        options.extend(group.get("options", []))
    if element["type"] in ("external_select", "multi_external_select"):
        return {"text": {"type": "plain_text", "text": str(value)}, "value": str(value)}
    for option in options:
        if option.get("value") == str(value):
            return dict(option)
    raise DriverError(f"{element.get('action_id')!r} offers no option with value {value!r}")


def _rich_text(text: str) -> dict[str, Any]:
    return {
        "type": "rich_text",
        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
    }
