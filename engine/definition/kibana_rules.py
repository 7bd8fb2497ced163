"""What Kibana 9.5 would not take from a workflow file that Signoff accepts (``validate --elastic``).

A team that keeps one file for both Signoff and Elastic needs to know where the file
leaves Kibana's definition. The rules here are read from Kibana's own schema
(kbn-workflows ``spec/schema.ts``, ``spec/schema/triggers/``, ``common/hitl.ts``), not
from Signoff's: Kibana's durations are one number and one unit (``^\\d+(ms|[smhdw])$``,
so Signoff's ``1h30m`` and bare seconds are refused), a schedule is ``every`` (one
minute at least) or ``rrule`` (no ``cron``), ``version`` is the string ``'1'``,
``triggers`` and ``steps`` are not empty, retry and loop options have Kibana's bounds,
the human steps' texts have Kibana's lengths, and a static ``parallel`` has two uniquely
named branches or a ``foreach`` with ``steps``, never both.

Two kinds of problem are reported. A value Kibana's schema refuses (a wrong type or
form, a step type it does not have) makes Kibana refuse the whole file. A key Kibana's
schema does not declare (Signoff's ``approvers``, ``sla``, ``escalation``, ``cron``, ...)
is marked as an error by Kibana's YAML editor, whose JSON Schema closes every object,
and dropped by its parser, so the step would run in Kibana without it.

Connector steps (``elasticsearch.*``, ``kibana.*``, ``cases.*``, ``ai.*``, ``slack``, a
connector's ``family.action``) are Kibana's, with ``with`` keys that depend on the
connector: only their shape is checked. Everything here is pure: it reads the
positioned YAML and returns :class:`~engine.errors.Problem` records.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from engine.definition.step_types import get_step_type
from engine.definition.yaml_positions import PositionedDocument, YamlPath, YamlSyntaxError
from engine.definition.yaml_positions import load_with_positions as _load
from engine.errors import Problem

__all__ = ["KIBANA_STEP_TYPES", "kibana_problems", "knows_step_type"]

# spec/schema.ts: DurationSchema and ByteSizeSchema.
DURATION = re.compile(r"^\d+(ms|[smhdw])$")
BYTE_SIZE = re.compile(r"^\d+(\.\d+)?\s*(b|kb|mb|gb)$", re.IGNORECASE)
# spec/schema/triggers/scheduled_trigger_schema.ts: at least one minute.
SCHEDULED_INTERVAL = re.compile(r"^(([6-9]\d|\d{3,})s|\d+[mhd])$")

# common/hitl.ts and common/constants.ts
MAX_HITL_MESSAGE_LENGTH = 10_240
MAX_HITL_ACTION_LABEL_LENGTH = 256
MAX_HITL_SLACK_CHANNEL_ID_LENGTH = 256
CONNECTOR_ID_MAX_LENGTH = 512
# spec/schema.ts: parallel, concurrency
PARALLEL_MAX_CONCURRENCY = 20
PARALLEL_BRANCH_NAME_MAX_LENGTH = 256
PARALLEL_FOREACH_EXPRESSION_MAX_LENGTH = 2000
CONCURRENCY_KEY_MAX_LENGTH = 512
LIQUID_LIMITS = {"parseLimit": 600_000, "renderLimit": 2_000, "memoryLimit": 60_000_000}

_TOP_LEVEL = frozenset({"version", "name", "description", "settings", "enabled", "tags",
                        "outputs", "consts", "steps", "triggers",
                        "template-metadata"})  # read by Kibana's workflow library
_SETTINGS = frozenset({"on-failure", "timezone", "timeout", "concurrency", "max-step-size",
                       "liquid"})
_CONCURRENCY = frozenset({"key", "strategy", "max", "queue-size", "queue-ttl"})
_RETRY = frozenset({"max-attempts", "condition", "delay", "strategy", "multiplier", "max-delay",
                    "jitter"})
_ON_FAILURE = frozenset({"retry", "fallback", "continue"})
_LOOP = frozenset({"max-iterations", "iteration-timeout", "iteration-on-failure"})
_BASE = frozenset({"name", "type", "max-step-size"})
_CONNECTOR = _BASE | {"with", "if", "foreach", "timeout", "on-failure", "connector-id"} | _LOOP

# The keys each built-in step type's schema declares (spec/schema.ts, the `*StepSchema`s).
_STEP_KEYS: dict[str, frozenset[str]] = {
    "foreach": _BASE | {"foreach", "steps", "if", "timeout", "on-failure"} | _LOOP,
    "while": _BASE | {"condition", "steps", "if", "timeout", "on-failure"} | _LOOP,
    "if": _BASE | {"condition", "steps", "else"},
    "switch": _BASE | {"expression", "cases", "default", "if", "timeout"},
    "parallel": _BASE | {"foreach", "steps", "branches", "concurrency", "mode", "branch-timeout",
                         "timeout"},
    "merge": _BASE | {"sources", "steps"},
    "wait": _BASE | {"with"},
    "waitForInput": _BASE | {"with", "timeout"},
    "waitForApproval": _BASE | {"with", "timeout"},
    "data.set": _BASE | {"with"},
    "workflow.execute": _BASE | {"with"},
    "workflow.executeAsync": _BASE | {"with"},
    "workflow.output": _BASE | {"status", "with", "if"},
    "workflow.fail": _BASE | {"with", "if"},
    "loop.break": _BASE | {"if"},
    "loop.continue": _BASE | {"if"},
}
# Steps Kibana's workflows_extensions plugin registers; they take a connector step's keys.
_EXTENSION_STEP_TYPES = frozenset({
    "console", "http", "data.aggregate", "data.concat", "data.dedupe", "data.filter", "data.find",
    "data.map", "data.parseJson", "data.regexExtract", "data.regexReplace", "data.stringifyJson",
})
KIBANA_STEP_TYPES = frozenset(_STEP_KEYS) | _EXTENSION_STEP_TYPES

# Step type prefixes Kibana serves: its Elasticsearch and Kibana API steps, cases, the AI and
# data extension steps, and its connector types (a step is `<connector>` or
# `<connector>.<action>`, the connector's type id without its leading dot): the stack
# connectors (the workflows' sub-action map) and the specs under kbn-connector-specs.
_CONNECTOR_FAMILIES = frozenset({
    "elasticsearch", "kibana", "cases", "ai", "data", "search", "security", "streams",
    "onechat", "agent_builder", "remote_host", "javascript", "inference",
    "email", "index", "pagerduty", "server-log", "slack", "slack_api", "slack2", "teams",
    "microsoft-teams", "webhook", "cases-webhook", "jira", "jira-cloud",
    "jira-service-management", "resilient", "servicenow", "servicenow-sir", "servicenow-itom",
    "servicenow_search", "swimlane", "xmatters", "opsgenie", "tines", "torq", "d3security",
    "gen-ai", "bedrock", "gemini", "sentinelone", "crowdstrike", "microsoft_defender_endpoint",
    "thehive", "xsoar", "mcp", "abuseipdb", "virustotal", "greynoise", "shodan", "urlvoid",
    "alienvault-otx", "github", "gitlab", "confluence-cloud", "sharepoint-online",
    "sharepoint-server", "google_drive", "google_calendar", "google_cloud_storage", "amazon_s3",
    "zendesk", "zoom", "firecrawl", "brave-search", "tavily_mcp", "pagerduty_mcp", "notion",
    "salesforce", "okta", "microsoft_graph", "servicenow-itsm", "jina", "figma", "gmail",
    "azure_blob", "azure_aks", "azure_functions", "azure_monitor", "ansible_controller",
    "argocd", "aws_cloudwatch", "aws_ec2", "aws_lambda", "amazon_dynamodb", "anyrun_sandbox",
    "bitbucket", "github_mcp", "google_threat_intelligence", "hubspot", "jira-data-center",
    "misp", "one_drive", "outlook", "posthog", "prometheus", "rootly", "sentry",
    "opensearch_aws_opensearch_service", "microsoft_teams",
})

_SIGNOFF_HUMAN_KEYS = frozenset({"channel", "approvers", "approvals-required",
                                 "allow-self-approval", "earlier-levels-keep-rights", "sla",
                                 "remind", "escalation", "on-timeout", "decision-field"})
_HUMAN_WITH = {"waitForInput": frozenset({"message", "schema", "channels"}),
               "waitForApproval": frozenset({"message", "approveLabel", "rejectLabel",
                                             "channels"})}


def knows_step_type(type_: str) -> bool:
    """Whether Kibana 9.5 has this step type: built in, an extension step or a connector's."""
    family = type_.split(".", 1)[0]
    return (type_ in KIBANA_STEP_TYPES or family in _CONNECTOR_FAMILIES
            or family.replace("-", "_") in _CONNECTOR_FAMILIES
            or family.replace("_", "-") in _CONNECTOR_FAMILIES)


def kibana_problems(text: str, source: str) -> list[Problem]:
    """What Kibana 9.5 would refuse or drop in the workflow ``text`` (a file that is not
    YAML gives none: Signoff's own checks report it)."""
    try:
        doc = _load(text)
    except YamlSyntaxError:
        return []
    if not isinstance(doc.data, dict):
        return []
    return sorted(set(_Rules(doc, source).check()), key=lambda p: (p.line, p.column, p.message))


class _Rules:
    def __init__(self, doc: PositionedDocument, source: str) -> None:
        self.doc = doc
        self.source = source
        self.found: list[Problem] = []

    def check(self) -> list[Problem]:
        data: dict[str, Any] = self.doc.data
        self._unknown_keys({k: v for k, v in data.items() if k != "inputs"}, (), _TOP_LEVEL,
                           "at the top level")
        if "inputs" in data:
            self._unknown_keys({"inputs": None}, (), frozenset(), "at the top level",
                               "Kibana 9.5 reads a run's inputs under the manual trigger "
                               "(`triggers[].inputs`); top-level `inputs` is the form of "
                               "earlier versions")
        if "version" in data and data["version"] != "1":
            self._refused(("version",), f"`version` must be the string '1', not {data['version']!r}"
                                        " (quote it)")
        if not isinstance(data.get("name"), str) or not data.get("name"):
            self._refused(("name",) if "name" in data else (),
                          "a workflow needs a `name` of at least one character")
        triggers = data.get("triggers")
        if not isinstance(triggers, list) or not triggers:
            self._refused(("triggers",) if "triggers" in data else (),
                          "a workflow needs at least one trigger under `triggers`")
        else:
            for index, trigger in enumerate(triggers):
                self._trigger(trigger, ("triggers", index))
        self._settings(data.get("settings"), ("settings",))
        self._steps(data.get("steps"), ("steps",), required=True)
        return self.found

    # -- reporting --------------------------------------------------------------------------

    def _refused(self, path: YamlPath, why: str) -> None:
        where = self.doc.locate(path)
        self.found.append(Problem(self.source, where.line, where.column,
                                  f"Kibana 9.5 would refuse this file: {why}"))

    def _unknown_keys(self, value: Mapping[str, Any], path: YamlPath, allowed: frozenset[str],
                      where: str, why: str = "") -> None:
        for key in value:
            if key not in allowed:
                at = self.doc.locate_key((*path, key))
                reason = why or "Kibana's workflow schema has no such key"
                self.found.append(Problem(
                    self.source, at.line, at.column,
                    f"Kibana 9.5 would not accept key {key!r} {where}: {reason}; its editor "
                    "marks it as an error and its parser drops it"))

    def _duration(self, value: Any, path: YamlPath, what: str) -> None:
        if value is None:
            return
        if not isinstance(value, str) or not DURATION.match(value):
            self._refused(path, f"{what} {value!r} is not a Kibana duration: Kibana takes one "
                                "number and one unit (ms, s, m, h, d or w), e.g. 90m, not a "
                                "combination such as 1h30m or a bare number")

    def _byte_size(self, value: Any, path: YamlPath) -> None:
        if value is not None and (not isinstance(value, str) or not BYTE_SIZE.match(value)):
            self._refused(path, f"max-step-size {value!r} is not a Kibana byte size such as "
                                "512kb, 10mb or 1gb")

    def _max_length(self, value: Any, path: YamlPath, limit: int, what: str) -> None:
        if isinstance(value, str) and len(value) > limit:
            self._refused(path, f"{what} is {len(value):,} characters long; Kibana allows "
                                f"{limit:,} at most")

    def _integer(self, value: Any, path: YamlPath, what: str, low: int,
                 high: int | None = None) -> None:
        if value is None:
            return
        fits = (isinstance(value, int) and not isinstance(value, bool) and value >= low
                and (high is None or value <= high))
        if not fits:
            bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
            self._refused(path, f"{what} must be a whole number {bound}, not {value!r}")

    # -- workflow parts ---------------------------------------------------------------------

    def _trigger(self, trigger: Any, path: YamlPath) -> None:
        if not isinstance(trigger, dict):
            return
        type_ = trigger.get("type")
        if type_ not in ("alert", "scheduled", "manual"):
            self._refused((*path, "type"), f"trigger type {type_!r} is not one of Kibana 9.5's "
                                           "triggers (alert, manual, scheduled)")
            return
        if type_ == "alert":
            self._unknown_keys(trigger, path, frozenset({"type"}), "in an alert trigger",
                               "Kibana's alert trigger takes no key but `type`")
        elif type_ == "manual":
            self._unknown_keys(trigger, path, frozenset({"type", "inputs"}),
                               "in a manual trigger")
            inputs = trigger.get("inputs")
            if isinstance(inputs, list):
                for index, spec in enumerate(inputs):
                    self._legacy_input(spec, (*path, "inputs", index))
        elif type_ == "scheduled":
            self._unknown_keys(trigger, path, frozenset({"type", "with"}),
                               "in a scheduled trigger")
            self._schedule(trigger.get("with"), (*path, "with"))

    def _legacy_input(self, spec: Any, path: YamlPath) -> None:
        if not isinstance(spec, dict):
            return
        kind = spec.get("type")
        if kind not in ("string", "number", "boolean", "choice", "array"):
            self._refused((*path, "type"), f"input type {kind!r} is not one of Kibana's legacy "
                                           "input types (string, number, boolean, choice, "
                                           "array); describe it with a JSON Schema instead")
        elif kind == "choice" and not isinstance(spec.get("options"), list):
            self._refused(path, "a `choice` input needs its `options` list")

    def _schedule(self, with_: Any, path: YamlPath) -> None:
        if not isinstance(with_, dict):
            return
        if "cron" in with_:
            at = self.doc.locate_key((*path, "cron"))
            self.found.append(Problem(
                self.source, at.line, at.column,
                "Kibana 9.5 would refuse this file: a scheduled trigger takes `every` or `rrule`;"
                " `cron` is Signoff's own (write the schedule as an rrule)"))
        self._unknown_keys(with_, path, frozenset({"every", "rrule", "cron"}),
                           "in a scheduled trigger's `with`",
                           "Kibana schedules only with `every` or `rrule` (give the time zone "
                           "as `rrule.tzid`)")
        every = with_.get("every")
        if every is not None and (not isinstance(every, str) or not SCHEDULED_INTERVAL.match(every)):
            self._refused((*path, "every"), f"`every: {every}` is not a Kibana interval: one "
                                            "number and one unit (s, m, h or d), one minute at "
                                            "least, e.g. 90s, 5m, 2h")
        if "every" in with_ and "rrule" in with_:
            self._refused(path, "a scheduled trigger takes `every` or `rrule`, not both")

    def _settings(self, settings: Any, path: YamlPath) -> None:
        if not isinstance(settings, dict):
            return
        self._unknown_keys(settings, path, _SETTINGS, "in `settings`")
        self._duration(settings.get("timeout"), (*path, "timeout"), "settings.timeout")
        self._byte_size(settings.get("max-step-size"), (*path, "max-step-size"))
        self._on_failure(settings.get("on-failure"), (*path, "on-failure"))
        concurrency = settings.get("concurrency")
        if isinstance(concurrency, dict):
            where = (*path, "concurrency")
            self._unknown_keys(concurrency, where, _CONCURRENCY, "in `settings.concurrency`")
            self._max_length(concurrency.get("key"), (*where, "key"), CONCURRENCY_KEY_MAX_LENGTH,
                             "settings.concurrency.key")
            self._duration(concurrency.get("queue-ttl"), (*where, "queue-ttl"),
                           "settings.concurrency.queue-ttl")
        liquid = settings.get("liquid")
        if isinstance(liquid, dict):
            for key, limit in LIQUID_LIMITS.items():
                self._integer(liquid.get(key), (*path, "liquid", key), f"settings.liquid.{key}",
                              1, limit)

    def _on_failure(self, policy: Any, path: YamlPath) -> None:
        if not isinstance(policy, dict):
            return
        self._unknown_keys(policy, path, _ON_FAILURE, "in `on-failure`")
        retry = policy.get("retry")
        if isinstance(retry, dict):
            where = (*path, "retry")
            self._unknown_keys(retry, where, _RETRY, "in `retry`")
            attempts = retry.get("max-attempts")
            if not isinstance(attempts, (int, float)) or isinstance(attempts, bool) or attempts < 1:
                self._refused((*where, "max-attempts") if "max-attempts" in retry else where,
                              "a retry needs `max-attempts`, a number of at least 1")
            if "condition" in retry and not isinstance(retry["condition"], str):
                self._refused((*where, "condition"), "a retry's `condition` must be a string "
                                                     "(quote it)")
            self._duration(retry.get("delay"), (*where, "delay"), "retry.delay")
            self._duration(retry.get("max-delay"), (*where, "max-delay"), "retry.max-delay")
        fallback = policy.get("fallback")
        if fallback is not None:
            self._steps(fallback, (*path, "fallback"), required=True)

    # -- steps ------------------------------------------------------------------------------

    def _steps(self, items: Any, path: YamlPath, *, required: bool) -> None:
        if not isinstance(items, list) or (required and not items):
            if required:
                self._refused(path if self._exists(path) else path[:-1],
                              f"`{path[-1]}` needs at least one step")
            return
        for index, step in enumerate(items):
            if isinstance(step, dict):
                self._step(step, (*path, index))

    def _exists(self, path: YamlPath) -> bool:
        return tuple(path) in self.doc.values

    def _step(self, step: dict[str, Any], path: YamlPath) -> None:
        type_ = step.get("type")
        if not isinstance(type_, str):
            return
        label = f"in step {step.get('name')!r}"
        if not isinstance(step.get("name"), str) or not step.get("name"):
            self._refused(path, "every step needs a `name` of at least one character")
        if not knows_step_type(type_):
            if get_step_type(type_) is not None:  # else Signoff's own check reports it
                self._refused((*path, "type"), f"Kibana has no step type {type_!r}: it is "
                                               "Signoff's or a plug-in's; Kibana knows its "
                                               "built-in steps and the steps of its connectors")
            return
        allowed = _STEP_KEYS.get(type_, _CONNECTOR)
        if type_ in _EXTENSION_STEP_TYPES:
            # an extension step's own keys (data.map's `items`, data.parseJson's `source`),
            # which Signoff's step of the same name declares alike
            spec = get_step_type(type_)
            allowed = allowed | (spec.param_keys if spec else frozenset())
        if type_ in _STEP_KEYS or type_ in _EXTENSION_STEP_TYPES:
            self._unknown_keys(step, path, allowed, label,
                               f"Kibana's `{type_}` step has no such key")
        for key in ("if", "condition"):
            if key in step and key in allowed and not isinstance(step[key], str):
                self._refused((*path, key), f"`{key}` must be a string in Kibana, not "
                                            f"{step[key]!r} (quote it)")
        self._duration(step.get("timeout"), (*path, "timeout"), "timeout")
        self._duration(step.get("iteration-timeout"), (*path, "iteration-timeout"),
                       "iteration-timeout")
        self._byte_size(step.get("max-step-size"), (*path, "max-step-size"))
        self._max_iterations(step.get("max-iterations"), (*path, "max-iterations"))
        self._on_failure(step.get("on-failure"), (*path, "on-failure"))
        self._on_failure(step.get("iteration-on-failure"), (*path, "iteration-on-failure"))
        with_ = step.get("with")
        if type_ in _HUMAN_WITH and isinstance(with_, dict):
            self._human(type_, with_, (*path, "with"))
        elif type_ == "wait":
            duration = with_.get("duration") if isinstance(with_, dict) else None
            self._duration(duration, (*path, "with", "duration"), "with.duration")
        elif type_ in ("workflow.execute", "workflow.executeAsync"):
            target = with_.get("workflow-id") if isinstance(with_, dict) else None
            if not isinstance(target, str) or not target:
                self._refused((*path, "with"), f"a `{type_}` step needs `with.workflow-id`")
        elif type_ == "parallel":
            self._parallel(step, path)
        self._nested(type_, step, path)

    def _nested(self, type_: str, step: dict[str, Any], path: YamlPath) -> None:
        if type_ in ("foreach", "while", "if"):
            self._steps(step.get("steps"), (*path, "steps"), required=True)
        elif type_ in ("merge", "parallel") and "steps" in step:
            self._steps(step.get("steps"), (*path, "steps"), required=type_ == "parallel")
        if type_ == "if" and "else" in step:
            self._steps(step.get("else"), (*path, "else"), required=False)
        if type_ == "switch":
            cases = step.get("cases")
            if not isinstance(cases, list) or not cases:
                self._refused((*path, "cases") if "cases" in step else path,
                              "a `switch` step needs at least one case")
            else:
                for index, case in enumerate(cases):
                    if isinstance(case, dict):
                        self._steps(case.get("steps"), (*path, "cases", index, "steps"),
                                    required=True)
            if "default" in step:
                self._steps(step.get("default"), (*path, "default"), required=False)

    def _max_iterations(self, value: Any, path: YamlPath) -> None:
        if value is None:
            return
        limit = value.get("limit") if isinstance(value, dict) else value
        self._integer(limit, path, "max-iterations", 1)
        if isinstance(value, dict) and value.get("on-limit") not in ("continue", "fail"):
            self._refused(path, "max-iterations needs `on-limit: continue` or `on-limit: fail`")

    def _human(self, type_: str, with_: dict[str, Any], path: YamlPath) -> None:
        for key in with_:
            if key in _SIGNOFF_HUMAN_KEYS:
                at = self.doc.locate_key((*path, key))
                self.found.append(Problem(
                    self.source, at.line, at.column,
                    f"Kibana 9.5 would not accept key {key!r} in `with` of a {type_} step: it is"
                    " Signoff's own (Slack routing, approvers and timers); Kibana's editor marks"
                    " it as an error and its parser drops it, so Kibana would wait without it"))
        self._unknown_keys({k: v for k, v in with_.items() if k not in _SIGNOFF_HUMAN_KEYS},
                           path, _HUMAN_WITH[type_], f"in `with` of a {type_} step")
        self._max_length(with_.get("message"), (*path, "message"), MAX_HITL_MESSAGE_LENGTH,
                         "with.message")
        for label in ("approveLabel", "rejectLabel"):
            self._max_length(with_.get(label), (*path, label), MAX_HITL_ACTION_LABEL_LENGTH,
                             f"with.{label}")
        channels = with_.get("channels")
        if isinstance(channels, dict):
            for key, channel in channels.items():
                if not isinstance(channel, dict):
                    continue
                where = (*path, "channels", key)
                self._max_length(channel.get("connector-id"), (*where, "connector-id"),
                                 CONNECTOR_ID_MAX_LENGTH, "connector-id")
                self._max_length(channel.get("message"), (*where, "message"),
                                 MAX_HITL_MESSAGE_LENGTH, "the channel message")
                for index, name in enumerate(channel.get("channels") or []):
                    self._max_length(name, (*where, "channels", index),
                                     MAX_HITL_SLACK_CHANNEL_ID_LENGTH, "a Slack channel id")

    def _parallel(self, step: dict[str, Any], path: YamlPath) -> None:
        has_foreach, branches = "foreach" in step, step.get("branches")
        if has_foreach == (branches is not None):
            self._refused(path, "a `parallel` step takes either `foreach` with `steps` or "
                                "`branches`, one of the two")
        elif branches is not None and "steps" in step:
            self._refused((*path, "steps"), "a `parallel` step with `branches` takes no `steps`"
                                            " of its own")
        foreach = step.get("foreach")
        self._max_length(foreach, (*path, "foreach"), PARALLEL_FOREACH_EXPRESSION_MAX_LENGTH,
                         "the parallel `foreach` expression")
        if isinstance(branches, list):
            if len(branches) < 2:
                self._refused((*path, "branches"), "a static `parallel` step needs at least two "
                                                   "branches")
            seen: set[str] = set()
            for index, branch in enumerate(branches):
                if not isinstance(branch, dict):
                    continue
                where = (*path, "branches", index)
                name = branch.get("name")
                self._max_length(name, (*where, "name"), PARALLEL_BRANCH_NAME_MAX_LENGTH,
                                 "a branch name")
                if isinstance(name, str) and name in seen:
                    self._refused((*where, "name"), f"branch name {name!r} is used twice in this "
                                                    "parallel step; each must be unique")
                seen.add(name if isinstance(name, str) else "")
                self._steps(branch.get("steps"), (*where, "steps"), required=True)
        concurrency = step.get("concurrency")
        limit = concurrency.get("max") if isinstance(concurrency, dict) else concurrency
        self._integer(limit, (*path, "concurrency"), "parallel concurrency", 1,
                      PARALLEL_MAX_CONCURRENCY)
        if "mode" in step and step["mode"] not in ("fail-fast", "settled"):
            self._refused((*path, "mode"), f"parallel mode {step['mode']!r} is not fail-fast or "
                                           "settled")
        self._duration(step.get("branch-timeout"), (*path, "branch-timeout"), "branch-timeout")


def walk_steps(data: Any) -> Iterator[dict[str, Any]]:
    """Every step of a loaded workflow, nested ones included (for measurements)."""
    stack = [data.get("steps")] if isinstance(data, dict) else []
    while stack:
        items = stack.pop()
        for step in items if isinstance(items, list) else []:
            if not isinstance(step, dict):
                continue
            yield step
            stack.extend(step.get(key) for key in ("steps", "else", "default"))
            stack.extend(case.get("steps") for case in step.get("cases") or []
                         if isinstance(case, dict))
            stack.extend(branch.get("steps") for branch in step.get("branches") or []
                         if isinstance(branch, dict))
            failure = step.get("on-failure")
            if isinstance(failure, dict):
                stack.append(failure.get("fallback"))
