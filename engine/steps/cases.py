"""Kibana's ``cases.*`` steps: ``createCase``, ``getCase``, ``updateCase``, ``addComment``,
``addAlerts``, ``findCases`` and ``getCasesByAlertId``, with the options of Kibana's step
definitions (``case_id`` in snake case, ``updates`` for ``updateCase``) and their output
``{case: ...}``, the case as the Cases API answers it: ``steps.<name>.output.case.id`` is
the case's id (``findCases`` answers the Cases API's ``_find`` page, ``getCasesByAlertId``
``{cases: [...]}``).

They call the Cases API of the step's ``kibana`` connection through
:func:`engine.steps.kibana.kibana_call` (its timeout, retryable 429 and 5xx, space and
credentials). What Kibana fills in, they fill in the same way: ``createCase`` defaults
as Kibana's ``getInitialCaseValue`` (no tags or assignees, ``low`` severity, an empty
description, ``syncAlerts`` and ``extractObservables`` on, the ``none`` connector);
``updateCase`` reads the case's current ``version`` when none is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.definition.step_types import StepContext, step_type
from engine.errors import StepFailed
from engine.steps.kibana import kibana_call

DEFAULT_OWNER = "securitySolution"
SEVERITIES = ["low", "medium", "high", "critical"]
STATUSES = ["open", "in-progress", "closed"]
NONE_CONNECTOR = {"id": "none", "name": "none", "type": ".none", "fields": None}

_CONFIG = {"type": "object", "properties": {
    "connector-id": {"type": "string", "minLength": 1},
    "push-case": {"type": "boolean"},
}}
_CASE_ID = {"type": "string", "minLength": 1}
_FIELDS = {
    "title": {"type": "string", "minLength": 1, "maxLength": 160},
    "description": {"type": "string", "maxLength": 30000},
    "owner": {"type": "string", "minLength": 1},
    "severity": {"enum": SEVERITIES},
    "status": {"enum": STATUSES},
    "tags": {"type": "array", "items": {"type": "string"}},
    "assignees": {"type": "array", "items": {"type": "object",
                                             "properties": {"uid": {"type": "string"}},
                                             "required": ["uid"]}},
    "category": {"type": ["string", "null"]},
    "customFields": {"type": "array", "items": {"type": "object"}},
    "settings": {"type": "object"},
}


def _push_case(ctx: StepContext) -> None:
    if ctx.params.get("push-case") is True:
        raise StepFailed("push-case is not supported: Signoff's Kibana cases have no external "
                         "connector to push to", retryable=False)


def _case_id(ctx: StepContext) -> str:
    case_id = ctx.options.get("case_id")
    if not isinstance(case_id, str) or not case_id.strip():
        raise StepFailed("with.case_id is empty", retryable=False)
    return case_id.strip()


def _case_path(case_id: str, *rest: str) -> str:
    if "/" in case_id or case_id in (".", ".."):
        raise StepFailed(f"with.case_id {case_id!r} is not a case id", retryable=False)
    return "/".join(("/api/cases", case_id, *rest))


@step_type("cases.createCase", options_schema={
    "type": "object", "properties": _FIELDS, "required": ["title"],
    "additionalProperties": False,
}, params_schema=_CONFIG)
def create_case(ctx: StepContext) -> dict[str, Any]:
    """Open a case; the output is ``{case}``, the new case."""
    _push_case(ctx)
    options = ctx.options
    if "status" in options:
        raise StepFailed("with.status: a new case is open; set its status with "
                         "cases.updateCase", retryable=False)
    body = {"title": options["title"], "description": options.get("description", ""),
            "owner": options.get("owner") or DEFAULT_OWNER, "tags": options.get("tags") or [],
            "severity": options.get("severity") or "low",
            "assignees": options.get("assignees") or [],
            "customFields": options.get("customFields") or [],
            "settings": {"syncAlerts": True, "extractObservables": True,
                         **(options.get("settings") or {})},
            "connector": NONE_CONNECTOR}
    if options.get("category") is not None:
        body["category"] = options["category"]
    return {"case": kibana_call(ctx, "POST", "/api/cases", body=body)}


@step_type("cases.getCase", options_schema={
    "type": "object",
    "properties": {"case_id": _CASE_ID, "include_comments": {"type": "boolean"}},
    "required": ["case_id"], "additionalProperties": False,
}, params_schema=_CONFIG)
def get_case(ctx: StepContext) -> dict[str, Any]:
    """Read a case; the output is ``{case}`` (with its comments when ``include_comments``)."""
    case = kibana_call(ctx, "GET", _case_path(_case_id(ctx)))
    if isinstance(case, dict) and ctx.options.get("include_comments") is not True:
        case = {**case, "comments": []}
    return {"case": case}


@step_type("cases.updateCase", options_schema={
    "type": "object",
    "properties": {
        "case_id": _CASE_ID, "version": {"type": "string"},
        "updates": {"type": "object", "minProperties": 1,
                    "properties": {k: v for k, v in _FIELDS.items() if k != "owner"},
                    "additionalProperties": False},
    },
    "required": ["case_id", "updates"], "additionalProperties": False,
}, params_schema=_CONFIG)
def update_case(ctx: StepContext) -> dict[str, Any]:
    """Change a case's fields (``updates``); the output is ``{case}``, as updated."""
    _push_case(ctx)
    case_id = _case_id(ctx)
    updates = ctx.options.get("updates")
    if not isinstance(updates, Mapping) or not updates:
        raise StepFailed("with.updates must include at least one field", retryable=False)
    version = ctx.options.get("version")
    if not version:
        current = kibana_call(ctx, "GET", _case_path(case_id))
        version = current.get("version") if isinstance(current, dict) else None
    [case] = kibana_call(ctx, "PATCH", "/api/cases",
                         body={"cases": [{"id": case_id, "version": version, **updates}]})
    return {"case": case}


@step_type("cases.addComment", options_schema={
    "type": "object",
    "properties": {"case_id": _CASE_ID,
                   "comment": {"type": "string", "minLength": 1, "maxLength": 30000}},
    "required": ["case_id", "comment"], "additionalProperties": False,
}, params_schema=_CONFIG)
def add_comment(ctx: StepContext) -> dict[str, Any]:
    """Add a Markdown comment to a case; the output is ``{case}``, with it."""
    _push_case(ctx)
    case_id = _case_id(ctx)
    comment = ctx.options.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise StepFailed("with.comment is empty", retryable=False)
    return {"case": kibana_call(ctx, "POST", _case_path(case_id, "comments"),
                                body={"type": "user", "comment": comment,
                                      "owner": _owner(ctx, case_id)})}


@step_type("cases.addAlerts", options_schema={
    "type": "object",
    "properties": {
        "case_id": _CASE_ID,
        "alerts": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {
            "type": "object",
            "properties": {"alertId": {"type": "string", "minLength": 1},
                           "index": {"type": "string", "minLength": 1},
                           "rule": {"type": "object",
                                    "properties": {"id": {"type": ["string", "null"]},
                                                   "name": {"type": ["string", "null"]}}}},
            "required": ["alertId", "index"], "additionalProperties": False}},
    },
    "required": ["case_id", "alerts"], "additionalProperties": False,
}, params_schema=_CONFIG)
def add_alerts(ctx: StepContext) -> dict[str, Any]:
    """Attach detection alerts to a case (comments of type ``alert``); the output is
    ``{case}``, with them."""
    _push_case(ctx)
    case_id = _case_id(ctx)
    alerts = ctx.options.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise StepFailed("with.alerts must list at least one {alertId, index}", retryable=False)
    owner = _owner(ctx, case_id)
    case: Any = None
    for alert in alerts:
        rule = alert.get("rule") or {}
        case = kibana_call(ctx, "POST", _case_path(case_id, "comments"), body={
            "type": "alert", "alertId": alert["alertId"], "index": alert["index"],
            "rule": {"id": rule.get("id"), "name": rule.get("name")}, "owner": owner})
    return {"case": case}


def _owner(ctx: StepContext, case_id: str) -> str:
    """The case's owner, which an attachment must name (the Cases API checks it)."""
    case = kibana_call(ctx, "GET", _case_path(case_id), query={"includeComments": "false"})
    owner = case.get("owner") if isinstance(case, dict) else None
    return str(owner or DEFAULT_OWNER)


_ONE_OR_MANY = {"type": ["string", "array"], "items": {"type": "string"}}
_FIND_QUERY = ("assignees", "category", "defaultSearchOperator", "from", "owner", "page",
               "perPage", "reporters", "search", "searchFields", "severity", "sortField",
               "sortOrder", "status", "tags", "to")


@step_type("cases.findCases", options_schema={
    "type": "object",
    "properties": {
        "assignees": _ONE_OR_MANY, "category": _ONE_OR_MANY, "owner": _ONE_OR_MANY,
        "reporters": _ONE_OR_MANY, "tags": _ONE_OR_MANY,
        "defaultSearchOperator": {"enum": ["AND", "OR"]},
        "from": {"type": "string", "maxLength": 500}, "to": {"type": "string", "maxLength": 500},
        "page": {"type": ["integer", "string"]}, "perPage": {"type": ["integer", "string"]},
        "search": {"type": "string", "maxLength": 500},
        "searchFields": {"type": ["string", "array"], "items": {
            "enum": ["title", "description", "incremental_id.text"]}},
        "severity": {"type": ["string", "array"], "items": {"enum": SEVERITIES}},
        "status": {"type": ["string", "array"], "items": {"enum": STATUSES}},
        "sortField": {"enum": ["title", "category", "createdAt", "updatedAt", "closedAt",
                               "status", "severity"]},
        "sortOrder": {"enum": ["asc", "desc"]},
    },
    "additionalProperties": False,
}, params_schema=_CONFIG)
def find_cases(ctx: StepContext) -> Any:
    """Search cases (``GET /api/cases/_find``); the output is the Cases API's answer:
    ``{cases, page, per_page, total, count_open_cases, count_in_progress_cases,
    count_closed_cases}``."""
    query: dict[str, Any] = {"page": "1", "perPage": "20"}
    for name in _FIND_QUERY:
        value = ctx.options.get(name)
        if value is None or value == "" or value == []:
            continue
        query[name] = [str(v) for v in value] if isinstance(value, list) else str(value)
    return kibana_call(ctx, "GET", "/api/cases/_find", query=query)


@step_type("cases.getCasesByAlertId", options_schema={
    "type": "object",
    "properties": {"alert_id": {"type": "string", "minLength": 1}, "owner": _ONE_OR_MANY},
    "required": ["alert_id"], "additionalProperties": False,
}, params_schema=_CONFIG)
def get_cases_by_alert_id(ctx: StepContext) -> dict[str, Any]:
    """The cases an alert is attached to (``GET /api/cases/alerts/{alert_id}``); the output
    is ``{cases: [{id, title, description, status, createdAt, totals}]}``."""
    alert_id = ctx.options.get("alert_id")
    if not isinstance(alert_id, str) or not alert_id.strip():
        raise StepFailed("with.alert_id is empty", retryable=False)
    if "/" in alert_id or alert_id.strip() in (".", ".."):
        raise StepFailed(f"with.alert_id {alert_id!r} is not an alert id", retryable=False)
    owner = ctx.options.get("owner")
    query = {"owner": owner} if owner else None
    cases = kibana_call(ctx, "GET", f"/api/cases/alerts/{alert_id.strip()}", query=query)
    return {"cases": cases if isinstance(cases, list) else []}
