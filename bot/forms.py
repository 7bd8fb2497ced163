"""JSON Schema to Slack modal, and a modal submission back to JSON.

One input block per schema property, in ``properties`` order. The block's
``block_id`` is the property name and every element's ``action_id`` is
``value``, so ``view.state.values[name]["value"]`` is that property's raw state.

======================================  =====================================
property schema                         element
======================================  =====================================
boolean, required / optional            radio_buttons Yes/No / a single checkbox
string                                  plain_text_input (multiline when
                                        ``maxLength`` > 150 or ``format: textarea``)
string, format email / uri              email_text_input / url_text_input
string, format date / time / date-time  datepicker / timepicker / datetimepicker
enum, ≤ 5 / ≤ 100 options               radio_buttons / static_select
array of enum, ≤ 10 / ≤ 100 options     checkboxes / multi_static_select
integer / number                        number_input
``x-slack-input: users_select``         users_select (multi_users_select for arrays)
``x-slack-input: conversations_select`` conversations_select (multi_… for arrays)
======================================  =====================================

Anything else is reported by :func:`unsupported_schema_reasons` and left out of
the modal. An unchecked optional checkbox answers ``false``; other empty
optional fields are omitted from the answer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from jsonschema.exceptions import ValidationError

from bot import texts
from bot.block_kit import plain_text, section_block
from bot.mrkdwn import escape_mrkdwn, markdown_to_plain, truncate_plain
from engine.definition.answer_schema import answer_errors
from engine.notify import ReviewRequest
from engine.state.execution import iso

ACTION_ID = "value"
MAX_FIELDS = 99  # a modal holds 100 blocks; the first is the decision line
MAX_RADIO_OPTIONS = 5
MAX_CHECKBOX_OPTIONS = 10
MAX_MENU_OPTIONS = 100
MAX_OPTION_VALUE = 150
MAX_TEXT_LENGTH = 3000
MAX_ERROR_LENGTH = 150

_FORMATS = {"email": "email", "uri": "url", "date": "date", "time": "time",
            "date-time": "date_time"}
_PICKERS = ("users_select", "conversations_select")
_UNSUPPORTED_KEYWORDS = ("oneOf", "anyOf", "allOf", "not", "if", "$ref")
_DATE = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])")
_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
_MISSING: Any = object()


@dataclass(frozen=True)
class ReviewRef:
    """Which review a button or a modal belongs to; travels as compact JSON."""

    execution_id: str
    step: str
    # One click decides (the decision field is the only required answer): the click's
    # listener can hand the decision to a worker without reading the review first.
    one_click: bool = False
    # When this instance of the review started waiting: inside a foreach the same step
    # waits again, and a form or button of an earlier instance must not decide the next.
    since: str | None = None
    # The level the review was at when a modal was opened (Escalate): escalating is a
    # compare-and-set from it, so a stale or replayed submission cannot skip a level.
    level: int | None = None

    @classmethod
    def of(cls, review: ReviewRequest, *, one_click: bool = False,
           with_level: bool = False) -> ReviewRef:
        return cls(review.execution_id, review.step, one_click=one_click,
                   since=iso(review.created_at), level=review.level if with_level else None)

    def refers_to(self, review: ReviewRequest) -> bool:
        """Whether ``review`` (what the execution waits on now) is the one referred to."""
        return review.step == self.step and self.since in (None, iso(review.created_at))

    def encode(self) -> str:
        data: dict[str, Any] = {"execution_id": self.execution_id, "step": self.step}
        if self.one_click:
            data["one"] = 1
        if self.since:
            data["since"] = self.since
        if self.level is not None:
            data["lv"] = self.level
        return orjson.dumps(data).decode()

    @classmethod
    def decode(cls, value: str) -> ReviewRef:
        try:
            data = json.loads(value)
            since, level = data.get("since"), data.get("lv")
            return cls(execution_id=str(data["execution_id"]), step=str(data["step"]),
                       one_click=bool(data.get("one")), since=str(since) if since else None,
                       level=int(level) if level is not None else None)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a Signoff review reference: {value[:100]!r}") from exc


@dataclass(frozen=True)
class _Field:
    name: str
    schema: Mapping[str, Any]
    kind: str
    required: bool


def decision_line(review: ReviewRequest) -> str:
    """The first line of the message as plain text: what the reviewer has to decide."""
    for line in review.message.splitlines():
        if line.strip():
            plain = markdown_to_plain(line)
            if plain:
                return plain
            break
    return f"Review {review.step} of {review.workflow}"


def humanize(name: str) -> str:
    """``analyst_notes`` / ``analystNotes`` -> ``Analyst notes``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    words = re.sub(r"[_\-.]+", " ", spaced).split()
    words = [w if w.isupper() and len(w) > 1 else w.lower() for w in words]
    text = " ".join(words)
    return text[:1].upper() + text[1:] if text else name


def _properties(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    props = schema.get("properties")
    return props if isinstance(props, Mapping) else {}


def _required(schema: Mapping[str, Any]) -> list[str]:
    required = schema.get("required")
    return [str(n) for n in required] if isinstance(required, list) else []


def _enum_problem(values: Any) -> str | None:
    if not isinstance(values, list) or not values:
        return "has an empty enum"
    if len(values) > MAX_MENU_OPTIONS:
        return f"has {len(values)} options; a Slack menu holds at most {MAX_MENU_OPTIONS}"
    for value in values:
        if isinstance(value, dict | list):
            return "has object or list options"
        if len(_option_value(value)) > MAX_OPTION_VALUE:
            return f"has an option longer than {MAX_OPTION_VALUE} characters"
    return None


def _classify(prop: Any) -> tuple[str | None, str | None]:
    """(kind, None) for a property the modal can show, else (None, why not)."""
    if not isinstance(prop, Mapping):
        return None, "is not a schema object"
    for keyword in _UNSUPPORTED_KEYWORDS:
        if keyword in prop:
            return None, f"uses {keyword}, which a Slack form cannot show"
    kind = prop.get("type")
    if isinstance(kind, list):
        return None, "allows several types; a Slack form needs exactly one"
    picker = prop.get("x-slack-input")
    if picker is not None:
        base = str(picker).removeprefix("multi_")
        if base not in _PICKERS:
            return None, f"x-slack-input {picker!r} is not users_select or conversations_select"
        name = base.removesuffix("_select")
        if kind == "array":
            return f"multi_{name}", None
        if kind in (None, "string") and not str(picker).startswith("multi_"):
            return name, None
        return None, f"x-slack-input {picker!r} needs type string (one) or array (several)"
    if "enum" in prop:
        problem = _enum_problem(prop["enum"])
        return (None, problem) if problem else ("enum", None)
    if kind == "array":
        items = prop.get("items")
        if isinstance(items, Mapping) and "enum" in items:
            problem = _enum_problem(items["enum"])
            return (None, f"items {problem}") if problem else ("multi_enum", None)
        return None, "is a list of free values; a Slack form only offers lists of enum options"
    if kind in ("boolean", "integer", "number"):
        return kind, None
    if kind == "string":
        return _FORMATS.get(str(prop.get("format")), "text"), None
    if kind == "object":
        return None, "is a nested object"
    if kind is None:
        return None, "has no type"
    return None, f"has type {kind!r}"


def _fields(schema: Mapping[str, Any]) -> list[_Field]:
    required = set(_required(schema))
    fields = []
    for name, prop in _properties(schema).items():
        kind, _ = _classify(prop)
        if kind is not None and 0 < len(str(name)) <= 255:
            fields.append(_Field(str(name), prop, kind, name in required))
    return fields[:MAX_FIELDS]


def unsupported_schema_reasons(schema: Mapping[str, Any]) -> list[str]:
    """What a Slack modal cannot express in ``schema``; empty when it fits."""
    if not isinstance(schema, Mapping):
        return ["the schema is not a JSON object"]
    reasons = []
    if schema.get("type", "object") != "object":
        reasons.append("the answer must be an object (type: object)")
    for keyword in _UNSUPPORTED_KEYWORDS:
        if keyword in schema:
            reasons.append(f"the schema uses {keyword} at the top level, "
                           "which a Slack form cannot show")
    props = _properties(schema)
    if len(props) > MAX_FIELDS:
        reasons.append(f"the schema has {len(props)} fields; a Slack form holds at most "
                       f"{MAX_FIELDS}")
    for name, prop in props.items():
        label = truncate_plain(str(name), 60)
        if not name or len(str(name)) > 255:
            reasons.append(texts.unsupported(label, "names must be 1 to 255 characters long"))
        kind, why = _classify(prop)
        if why:
            reasons.append(texts.unsupported(label, why))
        elif kind == "text" and int(prop.get("minLength") or 0) > MAX_TEXT_LENGTH:
            reasons.append(texts.unsupported(
                label, f"minLength is over {MAX_TEXT_LENGTH}, the most a Slack text field takes"))
    for name in _required(schema):
        if name not in props:
            reasons.append(texts.unsupported(
                truncate_plain(name, 60), "is required but has no property to ask for it"))
    return reasons


def offers_decision(review: ReviewRequest) -> bool:
    """Whether Approve / Deny make sense: a boolean decision field, or no fields at all."""
    schema = review.schema
    props = _properties(schema)
    decision = props.get(review.decision_field)
    if decision is not None:
        return _classify(decision)[0] == "boolean"
    return not props and schema.get("additionalProperties", True) is not False


def only_decision_required(review: ReviewRequest) -> bool:
    """True when one click decides: nothing but the boolean decision field is required."""
    return offers_decision(review) and set(_required(review.schema)) <= {review.decision_field}


def asks_more_than_decision(review: ReviewRequest) -> bool:
    """Whether the modal has fields besides the decision (so "Respond…" is worth offering)."""
    return any(f.name != review.decision_field for f in _fields(review.schema))


# -- building the modal ----------------------------------------------------------------------


def modal_for(review: ReviewRequest, *, preset_decision: bool | None,
              callback_id: str = "signoff.submit") -> dict[str, Any]:
    """The modal asking for ``review.schema``, its decision field preset when given."""
    metadata = ReviewRef.of(review).encode()
    if len(metadata) > 3000:
        raise ValueError(f"execution id and step of {review.execution_id} are too long for Slack")
    blocks: list[dict[str, Any]] = [section_block(f"*{escape_mrkdwn(decision_line(review))}*")]
    for field in _fields(review.schema):
        initial = field.schema.get("default", _MISSING)
        if field.name == review.decision_field and preset_decision is not None:
            initial = preset_decision
        blocks.append(_input_block(field, initial))
    return {
        "type": "modal",
        "callback_id": callback_id,
        "title": plain_text(truncate_plain(f"{texts.MODAL_TITLE} {review.step}", 24)),
        "submit": plain_text(texts.MODAL_SUBMIT),
        "close": plain_text(texts.MODAL_CLOSE),
        "private_metadata": metadata,
        "blocks": blocks,
    }


def _input_block(field: _Field, initial: Any) -> dict[str, Any]:
    prop = field.schema
    label = str(prop.get("title") or "").strip() or humanize(field.name)
    block: dict[str, Any] = {
        "type": "input",
        "block_id": field.name,
        "label": plain_text(truncate_plain(label, 2000)),
        "element": _element(field, initial),
        "optional": not field.required,
    }
    description = str(prop.get("description") or "").strip()
    if description:
        block["hint"] = plain_text(truncate_plain(description, 2000))
    return block


def _option_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _option(text: str, value: str) -> dict[str, Any]:
    return {"text": plain_text(truncate_plain(text, 75)), "value": value}


def _enum_option(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        text = value.strip() or texts.EMPTY_OPTION
    else:
        text = texts.NULL_OPTION if value is None else _option_value(value)
    return _option(text, _option_value(value))


def _number_text(value: float) -> str:
    return str(value) if isinstance(value, int) else format(Decimal(repr(value)), "f")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _element(field: _Field, initial: Any) -> dict[str, Any]:
    prop, kind = field.schema, field.kind
    element: dict[str, Any] = {"action_id": ACTION_ID}
    if kind == "boolean":
        yes, no = _option(texts.YES, "true"), _option(texts.NO, "false")
        if field.required:
            element.update(type="radio_buttons", options=[yes, no])
            if isinstance(initial, bool):
                element["initial_option"] = yes if initial else no
        else:
            element.update(type="checkboxes", options=[yes])
            if initial is True:
                element["initial_options"] = [yes]
    elif kind in ("enum", "multi_enum"):
        values = prop["enum"] if kind == "enum" else prop["items"]["enum"]
        options = [_enum_option(v) for v in values]
        by_value = {o["value"]: o for o in options}
        if kind == "enum":
            small = len(options) <= MAX_RADIO_OPTIONS
            element.update(type="radio_buttons" if small else "static_select", options=options)
            if initial is not _MISSING and _option_value(initial) in by_value:
                element["initial_option"] = by_value[_option_value(initial)]
        else:
            small = len(options) <= MAX_CHECKBOX_OPTIONS
            element.update(type="checkboxes" if small else "multi_static_select", options=options)
            if not small and isinstance(prop.get("maxItems"), int) and prop["maxItems"] > 0:
                element["max_selected_items"] = prop["maxItems"]
            if isinstance(initial, list):
                chosen = [by_value[_option_value(v)] for v in initial
                          if _option_value(v) in by_value]
                if chosen:
                    element["initial_options"] = chosen
    elif kind in ("integer", "number"):
        element.update(type="number_input", is_decimal_allowed=kind == "number")
        low: Any = prop.get("minimum")
        high: Any = prop.get("maximum")
        if _is_number(low):
            element["min_value"] = _number_text(math.ceil(low) if kind == "integer" else low)
        if _is_number(high):
            element["max_value"] = _number_text(math.floor(high) if kind == "integer" else high)
        if _is_number(initial):
            element["initial_value"] = _number_text(initial)
    elif kind == "text":
        element["type"] = "plain_text_input"
        low, high = prop.get("minLength"), prop.get("maxLength")
        if prop.get("format") == "textarea" or (isinstance(high, int) and high > 150):
            element["multiline"] = True
        if isinstance(low, int) and low > 0:
            element["min_length"] = min(low, MAX_TEXT_LENGTH)
        if isinstance(high, int) and high > 0:
            element["max_length"] = min(high, MAX_TEXT_LENGTH)
        if isinstance(initial, str) and initial:
            element["initial_value"] = initial
    elif kind in ("email", "url"):
        element["type"] = "email_text_input" if kind == "email" else "url_text_input"
        if isinstance(initial, str) and initial:
            element["initial_value"] = initial
    elif kind == "date":
        element["type"] = "datepicker"
        if isinstance(initial, str) and _DATE.fullmatch(initial):
            element["initial_date"] = initial
    elif kind == "time":
        element["type"] = "timepicker"
        if isinstance(initial, str) and _TIME.fullmatch(initial[:5]):
            element["initial_time"] = initial[:5]
    elif kind == "date_time":
        element["type"] = "datetimepicker"
        epoch = _epoch(initial) if isinstance(initial, str) else None
        if epoch is not None:
            element["initial_date_time"] = epoch
    else:  # users, conversations and their multi_ forms
        element["type"] = f"{kind}_select"
        single = kind.removeprefix("multi_").removesuffix("s")  # user / conversation
        if kind.startswith("multi_"):
            if isinstance(prop.get("maxItems"), int) and prop["maxItems"] > 0:
                element["max_selected_items"] = prop["maxItems"]
            if isinstance(initial, list) and initial and all(isinstance(v, str) for v in initial):
                element[f"initial_{single}s"] = list(initial)
        elif isinstance(initial, str) and initial:
            element[f"initial_{single}"] = initial
    return element


def _epoch(text: str) -> int | None:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    epoch = int(at.timestamp())
    return epoch if 0 <= epoch <= 9_999_999_999 else None


# -- reading a submission back ---------------------------------------------------------------


def values_from_state(schema: Mapping[str, Any], state_values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON answer in a raw ``view.state.values``, typed as ``schema`` says."""
    answer: dict[str, Any] = {}
    for field in _fields(schema):
        raw = (state_values.get(field.name) or {}).get(ACTION_ID)
        if isinstance(raw, Mapping):
            value = _read(field, raw)
            if value is not _MISSING:
                answer[field.name] = value
    return answer


def _read(field: _Field, raw: Mapping[str, Any]) -> Any:
    kind = field.kind
    if kind in ("text", "email", "url"):
        return raw.get("value") or _MISSING
    if kind in ("integer", "number"):
        text = raw.get("value")
        return _parse_number(str(text), integer=kind == "integer") if text else _MISSING
    if kind == "date":
        return raw.get("selected_date") or _MISSING
    if kind == "time":
        return raw.get("selected_time") or _MISSING
    if kind == "date_time":
        epoch = raw.get("selected_date_time")
        if epoch is None:
            return _MISSING
        return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "boolean":
        if raw.get("type") == "checkboxes":
            return bool(raw.get("selected_options"))
        option = raw.get("selected_option")
        return option["value"] == "true" if option else _MISSING
    if kind == "enum":
        option = raw.get("selected_option")
        return _enum_value(field.schema["enum"], option["value"]) if option else _MISSING
    if kind == "multi_enum":
        values = field.schema["items"]["enum"]
        chosen = [_enum_value(values, o["value"]) for o in raw.get("selected_options") or []]
        return chosen or _MISSING
    single = {"users": "selected_user", "conversations": "selected_conversation"}
    if kind in single:
        return raw.get(single[kind]) or raw.get("selected_channel") or _MISSING
    several = raw.get(f"selected_{kind.removeprefix('multi_')}") or raw.get("selected_channels")
    return list(several) if several else _MISSING


def _enum_value(values: list[Any], option_value: str) -> Any:
    for value in values:
        if _option_value(value) == option_value:
            return value
    return option_value  # not offered: left for validation to reject


def _parse_number(text: str, *, integer: bool) -> Any:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return text  # left for validation to reject
    if not number.is_finite():
        return text
    if number == number.to_integral_value() and (
            integer or re.fullmatch(r"[+-]?\d+", text.strip())):
        return int(number)
    return float(number)


# -- inline errors ---------------------------------------------------------------------------


def validation_errors(schema: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, str]:
    """``{block_id: message}`` for ``response_action: errors``; empty when ``answer`` is valid."""
    shown = [f.name for f in _fields(schema)]
    errors: dict[str, str] = {}
    for error in answer_errors(schema, answer, formats=False):
        message = truncate_plain(_error_message(error), MAX_ERROR_LENGTH)
        for block_id in _error_blocks(error, answer, shown):
            errors.setdefault(block_id, message)
    return errors


def _error_blocks(error: ValidationError, answer: Mapping[str, Any],
                  shown: list[str]) -> list[str]:
    if error.path:
        names = [str(error.path[0])]
    elif error.validator == "required":
        required: Any = error.validator_value  # the stubs allow "unset"; errors always set it
        names = [str(n) for n in required if n not in answer]
    else:
        names = []
    # Errors that belong to no field of the form are shown on its first field.
    return [n for n in names if n in shown] or shown[:1]


_ERROR_MESSAGES: dict[str, Callable[[Any], str]] = {
    "required": lambda _: texts.ERROR_REQUIRED,
    "type": texts.error_type,
    "minLength": texts.error_min_length,
    "maxLength": texts.error_max_length,
    "minimum": texts.error_minimum,
    "maximum": texts.error_maximum,
    "exclusiveMinimum": texts.error_exclusive_minimum,
    "exclusiveMaximum": texts.error_exclusive_maximum,
    "multipleOf": texts.error_multiple_of,
    "pattern": lambda pattern: texts.error_pattern(str(pattern)),
    "enum": lambda _: texts.ERROR_ENUM,
    "const": lambda value: texts.error_const(_option_value(value)),
    "minItems": texts.error_min_items,
    "maxItems": texts.error_max_items,
    "uniqueItems": lambda _: texts.ERROR_UNIQUE,
    "format": lambda fmt: texts.error_format(str(fmt)),
}


def _error_message(error: ValidationError) -> str:
    message = _ERROR_MESSAGES.get(str(error.validator))
    if message is not None:
        return message(error.validator_value)
    return error.message or texts.ERROR_INVALID
