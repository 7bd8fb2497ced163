"""Connections: what a workflow's ``connector-id`` names, read from ``SIGNOFF_CONNECTORS``.

Elastic's workflow files name Kibana connectors by id (``with.channels.slack_api.
connector-id: secops-slack``). Signoff keeps its own list in one YAML file, the path in
``SIGNOFF_CONNECTORS``, mapping each connector id to ``{type, ...settings}``::

    team-webhook:
      type: slack-webhook
      url: ${TEAM_WEBHOOK_URL}
    secops-slack:
      type: slack
      allowed-channels: [C0SECOPS, C0OPS]
    edr-connector:
      type: http
      url: https://edr.example.com/api
      headers: {Authorization: "Bearer ${EDR_TOKEN}"}
      # connect-to: 10.0.4.12:8443   # optional: connect there, as curl's --connect-to

Each type is a :class:`ConnectorType` in a small registry: the JSON Schema its settings
must satisfy, which of them are secrets, and how to build its frozen record. A secret is
written only as a ``${ENV_VAR}`` reference and resolved when the file is loaded, so it is
never in the file, in Redis, in a log line, in an audit entry or in a repr. A bad file
raises :class:`engine.errors.ConnectorsInvalid` with one ``file:line:column`` problem per
fault. An id that is not in the file means the default connection of whatever asks
(Slack's: the workspace ``SLACK_BOT_TOKEN`` belongs to), so Elastic's files run unchanged.

This is the settings edge: the pure definition layer never reads it; ``signoff
validate`` checks workflows against it with :func:`check_workflow`, the bot looks
connections up in it when it delivers, and the worker's runtime hands them to the
``http`` step (:mod:`engine.steps.http`), which sends an ``http`` connection's headers
only under its base URL.
"""

from __future__ import annotations

import base64
import importlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from engine.definition.egress import is_credential_header, within_base
from engine.definition.yaml_positions import (
    PositionedDocument,
    YamlPath,
    YamlSyntaxError,
    load_with_positions,
)
from engine.errors import ConnectorsInvalid, Problem

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ID = {"type": "string", "minLength": 1, "maxLength": 512}  # Kibana's CONNECTOR_ID_MAX_LENGTH


class Connection:
    """A configured connection (one record type per connector type)."""

    id: str
    type: str


@dataclass(frozen=True)
class SlackWebhookConnection(Connection):
    """A Slack incoming webhook (``slack-webhook``): posts go to the channel it was made for."""

    id: str
    url: str = field(repr=False)  # the URL is the credential
    type: str = "slack-webhook"


@dataclass(frozen=True)
class SlackConnection(Connection):
    """Signoff's own Slack app (``slack``), as the workspace of ``SLACK_BOT_TOKEN`` has it.

    ``allowed_channels`` (empty: any) are the channel ids posts through it may go to,
    as Kibana's Slack API connector's ``allowedChannels``.
    """

    id: str
    allowed_channels: tuple[str, ...] = ()
    type: str = "slack"

    def allows(self, channel: str) -> bool:
        return not self.allowed_channels or channel in self.allowed_channels


@dataclass(frozen=True)
class HttpConnection(Connection):
    """An HTTP service (``http``): an ``http`` step with this ``connector-id`` calls a
    ``path`` under ``url`` and sends ``headers`` (the credentials, typically), as Kibana's
    HTTP connector does."""

    id: str
    url: str  # the base URL: scheme, host, optional port and path; no query, no user:password@
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # `connect-to: host:port`, as curl's --connect-to: connections to the URL's host and
    # port are made to this address instead; the URL, Host header, SNI and certificate
    # check stay the URL's, and the egress policy checks the address connected to.
    connect_to: str | None = None
    type: str = "http"


@dataclass(frozen=True)
class KibanaConnection(Connection):
    """A Kibana (``kibana``): ``cases.*`` and ``kibana.*`` steps call its APIs at ``url`` in
    ``space``, authenticated with ``api_key`` (``Authorization: ApiKey``) or, without one,
    ``username`` and ``password`` (basic)."""

    id: str
    url: str  # the base URL, as for an http connection
    api_key: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    space: str = "default"
    type: str = "kibana"


@dataclass(frozen=True)
class ConnectorType:
    """One kind of connection: its settings' schema, its secret settings, how to build it."""

    name: str
    settings_schema: Mapping[str, Any]  # JSON Schema of the settings besides `type`
    build: Callable[[str, Mapping[str, Any]], Connection]
    secrets: tuple[str, ...] = ()  # settings written only as ${ENV_VAR}
    description: str = ""
    # A mapping setting of header names to values (`headers`): the values of credential
    # headers (Authorization, X-Api-Key, ...) must hold an ${ENV_VAR} reference, and no
    # value of it is ever echoed in a problem.
    header_setting: str | None = None


CONNECTOR_TYPES: dict[str, ConnectorType] = {}


def register_connector_type(spec: ConnectorType) -> ConnectorType:
    """Make ``spec`` a type a connections file may use; a name is registered once."""
    if spec.name in CONNECTOR_TYPES:
        raise ValueError(f"connector type {spec.name!r} is registered already")
    CONNECTOR_TYPES[spec.name] = spec
    return spec


register_connector_type(ConnectorType(
    name="slack-webhook",
    settings_schema={
        "type": "object",
        "properties": {"url": {"type": "string", "pattern": "^https?://"}},
        "required": ["url"],
        "additionalProperties": False,
    },
    secrets=("url",),
    build=lambda id_, s: SlackWebhookConnection(id=id_, url=str(s["url"])),
    description="a Slack incoming webhook: with.channels.slack posts a notification to it",
))

register_connector_type(ConnectorType(
    name="slack",
    settings_schema={
        "type": "object",
        "properties": {
            "allowed-channels": {"type": "array", "minItems": 1,
                                 "items": {"type": "string", "pattern": "^[CGD][A-Z0-9]+$"}},
        },
        "additionalProperties": False,
    },
    build=lambda id_, s: SlackConnection(
        id=id_, allowed_channels=tuple(str(c) for c in s.get("allowed-channels") or ())),
    description="Signoff's Slack app: with.channels.slack_api posts the review through it",
))

register_connector_type(ConnectorType(
    name="http",
    settings_schema={
        "type": "object",
        "properties": {
            # A base URL to join a step's `path` to: no query or fragment, and no
            # user:password@ (a credential in a URL ends up in logs; use headers).
            "url": {"type": "string", "pattern": r"^https?://[^/?#@\s]+(/[^?#\s]*)?$"},
            "headers": {"type": "object",
                        "additionalProperties": {"type": "string", "pattern": "^[^\r\n]*$"}},
            "connect-to": {"type": "string",
                           "pattern": r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"},
        },
        "required": ["url"],
        "additionalProperties": False,
    },
    header_setting="headers",
    build=lambda id_, s: HttpConnection(
        id=id_, url=str(s["url"]),
        headers=tuple((str(k), str(v)) for k, v in (s.get("headers") or {}).items()),
        connect_to=str(s["connect-to"]) if s.get("connect-to") else None),
    description="an HTTP service: an http step with this connector-id calls a path under "
                "its url with its headers",
))

# An Elastic service's address and credentials (Kibana's and Elasticsearch's connections):
# an API key, or a username and password for basic authentication; all secrets.
_ELASTIC_CREDENTIALS: dict[str, Any] = {
    "url": {"type": "string", "pattern": r"^https?://[^/?#@\s]+(/[^?#\s]*)?$"},
    "api-key": {"type": "string", "minLength": 1},
    "username": {"type": "string", "minLength": 1},
    "password": {"type": "string", "minLength": 1},
}

register_connector_type(ConnectorType(
    name="kibana",
    settings_schema={
        "type": "object",
        "properties": {
            **_ELASTIC_CREDENTIALS,
            "space": {"type": "string", "pattern": "^[a-z0-9_-]+$"},  # Kibana's space ids
        },
        "required": ["url"],
        # Basic auth takes both; without it, an API key. (No oneOf: its message would
        # print the resolved secrets.)
        "dependentRequired": {"username": ["password"], "password": ["username"]},
        "if": {"not": {"required": ["username"]}}, "then": {"required": ["api-key"]},
        "additionalProperties": False,
    },
    secrets=("api-key", "username", "password"),
    build=lambda id_, s: KibanaConnection(
        id=id_, url=str(s["url"]), api_key=s.get("api-key"), username=s.get("username"),
        password=s.get("password"), space=str(s.get("space") or "default")),
    description="a Kibana: cases.* and kibana.* steps call its APIs in its space",
))

@dataclass(frozen=True)
class ElasticsearchConnection(Connection):
    """An Elasticsearch cluster (``elasticsearch``): ``elasticsearch.*`` steps call its REST
    API under ``url``, authenticated with ``api_key`` (``Authorization: ApiKey``) or
    ``username``/``password`` (basic), as Elasticsearch's clients do; the key wins when
    both are given."""

    id: str
    url: str
    api_key: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    type: str = "elasticsearch"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values that must never be shown (the key, the password, the basic header)."""
        return tuple(s for s in (self.api_key, self.password, self.username,
                                 self.authorization) if s)

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header's value."""
        if self.api_key:
            return f"ApiKey {self.api_key}"
        if self.username is not None and self.password is not None:
            pair = f"{self.username}:{self.password}".encode()
            return f"Basic {base64.b64encode(pair).decode()}"
        return None


register_connector_type(ConnectorType(
    name="elasticsearch",
    settings_schema={
        "type": "object",
        "properties": {
            **_ELASTIC_CREDENTIALS,
        },
        "required": ["url"],
        "dependentRequired": {"username": ["password"], "password": ["username"]},
        "additionalProperties": False,
    },
    secrets=("api-key", "username", "password"),
    build=lambda id_, s: ElasticsearchConnection(
        id=id_, url=str(s["url"]).rstrip("/"), api_key=s.get("api-key"),
        username=s.get("username"), password=s.get("password")),
    description="an Elasticsearch cluster: elasticsearch.* steps call its REST API with an "
                "api-key or a username and password",
))


@dataclass(frozen=True)
class OpenAIConnection(Connection):
    """An OpenAI-compatible chat-completions API (``openai``): OpenAI, Azure OpenAI, vLLM,
    Ollama, LiteLLM. ``ai.*`` steps post to ``{url}/chat/completions`` with ``model``.

    The key goes as ``Authorization: Bearer``; with ``api_version`` (Azure OpenAI's
    deployment URLs) it goes as Azure's ``api-key`` header and every call carries the
    ``api-version`` query. ``organization`` is sent as ``OpenAI-Organization``."""

    id: str
    url: str  # the base URL, e.g. https://api.openai.com/v1
    model: str
    api_key: str | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    organization: str | None = None
    api_version: str | None = None
    type: str = "openai"


register_connector_type(ConnectorType(
    name="openai",
    settings_schema={
        "type": "object",
        "properties": {
            "url": {"type": "string", "pattern": r"^https?://[^/?#@\s]+(/[^?#\s]*)?$"},
            "model": {"type": "string", "minLength": 1},
            "api-key": {"type": "string", "minLength": 1},
            "headers": {"type": "object",
                        "additionalProperties": {"type": "string", "pattern": "^[^\r\n]*$"}},
            "organization": {"type": "string", "minLength": 1},
            "api-version": {"type": "string", "pattern": "^[0-9A-Za-z.-]+$"},
        },
        "required": ["url", "model"],
        "additionalProperties": False,
    },
    secrets=("api-key",),
    header_setting="headers",
    build=lambda id_, s: OpenAIConnection(
        id=id_, url=str(s["url"]).rstrip("/"), model=str(s["model"]),
        api_key=str(s["api-key"]) if s.get("api-key") else None,
        headers=tuple((str(k), str(v)) for k, v in (s.get("headers") or {}).items()),
        organization=s.get("organization"), api_version=s.get("api-version")),
    description="an OpenAI-compatible chat-completions API (OpenAI, Azure OpenAI, vLLM, "
                "Ollama, LiteLLM): ai.prompt, ai.classify and ai.summarize call it",
))

# Which connector type each of Elastic 9.5's `with.channels` keys takes.
CHANNEL_TYPES = {"slack": "slack-webhook", "slack_api": "slack"}


@dataclass(frozen=True)
class Connectors:
    """The connections of one file, by id; an empty one when no file is configured."""

    connections: Mapping[str, Connection] = field(default_factory=dict)
    source: str | None = None

    def get(self, connector_id: str | None) -> Connection | None:
        return self.connections.get(connector_id) if connector_id else None

    def webhook(self, connector_id: str | None) -> SlackWebhookConnection | None:
        found = self.get(connector_id)
        return found if isinstance(found, SlackWebhookConnection) else None

    def slack(self, connector_id: str | None) -> SlackConnection | None:
        found = self.get(connector_id)
        return found if isinstance(found, SlackConnection) else None

    def http(self, connector_id: str | None) -> HttpConnection | None:
        found = self.get(connector_id)
        return found if isinstance(found, HttpConnection) else None

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k}: {c.type}" for k, c in self.connections.items())
        return f"Connectors({self.source!r}, {{{kinds}}})"


def load_connectors(path: str | os.PathLike[str] | None,
                    env: Mapping[str, str] | None = None) -> Connectors:
    """The connections file at ``path`` (None: no connections), its ``${ENV_VAR}``
    references resolved from ``env``; raises ConnectorsInvalid listing every fault."""
    if path is None:
        return Connectors()
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConnectorsInvalid([Problem(source, 1, 1, f"cannot read: {exc}")]) from exc
    return parse_connectors(text, source, os.environ if env is None else env)


def parse_connectors(text: str, source: str, env: Mapping[str, str]) -> Connectors:
    """The connections in ``text`` (read from ``source``); see :func:`load_connectors`."""
    try:
        doc = load_with_positions(text)
    except YamlSyntaxError as exc:
        raise ConnectorsInvalid([Problem(source, exc.line, exc.column, str(exc))]) from exc
    problems = [Problem(source, d.position.line, d.position.column,
                        f"connector {d.path[-1]!r} is defined twice (first at line "
                        f"{d.first.line})") for d in doc.duplicates]
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConnectorsInvalid([Problem(source, 1, 1, "a connections file maps connector ids "
                                         "to {type, ...settings}")])
    connections: dict[str, Connection] = {}
    for connector_id, entry in data.items():
        found = _connection(str(connector_id), entry, doc, source, env)
        if isinstance(found, Connection):
            connections[str(connector_id)] = found
        else:
            problems.extend(found)
    if problems:
        raise ConnectorsInvalid(problems)
    return Connectors(connections, source)


def _connection(connector_id: str, entry: Any, doc: PositionedDocument, source: str,
                env: Mapping[str, str]) -> Connection | list[Problem]:
    def problem(path: YamlPath, message: str) -> Problem:
        at = doc.keys.get((connector_id, *path)) if path else None
        at = at or doc.locate((connector_id, *path))
        return Problem(source, at.line, at.column, f"connector {connector_id!r}: {message}")

    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        return [problem((), "needs a `type`: one of " + ", ".join(sorted(CONNECTOR_TYPES)))]
    spec = CONNECTOR_TYPES.get(entry["type"])
    if spec is None:
        return [problem(("type",), f"unknown type {entry['type']!r}; known types: "
                        + ", ".join(sorted(CONNECTOR_TYPES)))]
    settings = {k: v for k, v in entry.items() if k != "type"}
    problems = []
    for name in spec.secrets:
        value = settings.get(name)
        if isinstance(value, str) and not _ENV_REFERENCE.fullmatch(value.strip()):
            # Never echo the value: it may be the secret itself.
            problems.append(problem((name,), f"`{name}` is a secret: write it as a "
                                    "${ENV_VAR} reference, not in the file"))
    headers = settings.get(spec.header_setting) if spec.header_setting else None
    for header, value in (headers.items() if isinstance(headers, dict) else ()):
        if (is_credential_header(str(header)) and isinstance(value, str)
                and not _ENV_REFERENCE.search(value)):
            problems.append(problem((str(spec.header_setting), header), f"header {header!r} "
                                    "carries a credential: give its value as an ${ENV_VAR} "
                                    'reference (e.g. "Bearer ${EDR_TOKEN}"), not in the file'))
    resolved: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, dict) and name == spec.header_setting:
            missing = [m for v in value.values() if isinstance(v, str)
                       for m in _ENV_REFERENCE.findall(v) if m not in env]
            if missing:
                problems.append(problem((name,), "environment variable "
                                        + ", ".join(dict.fromkeys(missing)) + " is not set"))
                continue
            value = {k: _ENV_REFERENCE.sub(lambda m: env[m.group(1)], v) if isinstance(v, str)
                     else v for k, v in value.items()}
        if isinstance(value, str):
            missing = [m for m in _ENV_REFERENCE.findall(value) if m not in env]
            if missing:
                problems.append(problem((name,), "environment variable "
                                        + ", ".join(missing) + " is not set"))
                continue
            value = _ENV_REFERENCE.sub(lambda m: env[m.group(1)], value)
        resolved[name] = value
    if problems:
        return problems
    validator = jsonschema.Draft202012Validator(spec.settings_schema)
    for error in sorted(validator.iter_errors(resolved), key=lambda e: list(e.path)):
        where = tuple(error.path)
        if (error.validator == "additionalProperties" and isinstance(error.instance, dict)
                and isinstance(error.schema, Mapping)):
            known = error.schema.get("properties", {})
            where = (*where, *[k for k in error.instance if k not in known][:1])
        secret = bool(where) and (where[0] in spec.secrets or where[0] == spec.header_setting)
        # A resolved secret must not reach the message through jsonschema's wording.
        problems.append(problem(where, f"`{where[0]}` does not look right for a {spec.name}"
                                if secret else _schema_message(error)))
    if problems:
        return problems
    return spec.build(connector_id, resolved)


def _schema_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties" and isinstance(error.schema, Mapping):
        allowed = ", ".join(error.schema.get("properties", {})) or "nothing but `type`"
        return f"{error.message} (allowed: {allowed})"
    where = ".".join(str(p) for p in error.path)
    return f"{where}: {error.message}" if where else error.message


# -- checking workflows against the connections -----------------------------------------------

def check_workflow(text: str, source: str, connectors: Connectors) -> list[Problem]:
    """Problems with the ``with.channels`` of a workflow file's human steps against
    ``connectors``: a ``connector-id`` configured with another type than its channel key
    takes, a ``slack_api`` channel its connection does not allow. Unconfigured ids are
    fine (the default connection). Then its ``http`` steps' (:func:`_check_http_steps`).
    A file that does not load is left to the loader."""
    try:
        doc = load_with_positions(text)
    except YamlSyntaxError:
        return []
    problems = _check_http_steps(doc, source, connectors) + _check_family_steps(
        doc, source, connectors)
    problems += _check_ai_steps(doc, source, connectors)
    for path, key, channel in _channels(doc.data, ()):
        connector_id = channel.get("connector-id")
        found = connectors.get(connector_id) if isinstance(connector_id, str) else None
        if found is None:
            continue
        wanted = CHANNEL_TYPES[key]
        if found.type != wanted:
            at = doc.locate((*path, key, "connector-id"))
            problems.append(Problem(
                source, at.line, at.column,
                f"with.channels.{key}: connector {connector_id!r} is a {found.type} in "
                f"{connectors.source}, and `{key}` takes a {wanted}"))
            continue
        if isinstance(found, SlackConnection):
            for index, target in enumerate(channel.get("channels") or ()):
                if isinstance(target, str) and "{{" not in target and not found.allows(target):
                    at = doc.locate((*path, key, "channels", index))
                    problems.append(Problem(
                        source, at.line, at.column,
                        f"with.channels.slack_api: channel {target!r} is not among connector "
                        f"{connector_id!r}'s allowed-channels in {connectors.source}"))
    return problems


def _channels(node: Any, path: YamlPath) -> Iterator[tuple[YamlPath, str, Mapping[str, Any]]]:
    """Every ``with.channels.<key>`` mapping in a loaded workflow, wherever its step is."""
    if isinstance(node, dict):
        with_ = node.get("with")
        if isinstance(node.get("type"), str) and isinstance(with_, dict):
            channels = with_.get("channels")
            if isinstance(channels, dict):
                for key, channel in channels.items():
                    if key in CHANNEL_TYPES and isinstance(channel, dict):
                        yield (*path, "with", "channels"), key, channel
        for key, value in node.items():
            yield from _channels(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _channels(value, (*path, index))


def _check_http_steps(doc: PositionedDocument, source: str,
                      connectors: Connectors) -> list[Problem]:
    """Problems with the ``connector-id`` of ``http`` steps: configured with another type,
    or not configured (with no ``url`` of its own for its ``path``, or with one); and a
    literal ``with.url`` outside its connection's base URL (whose headers go only there)."""
    problems = []
    for path, step in _http_steps(doc.data, ()):
        connector_id = step.get("connector-id")
        if not isinstance(connector_id, str) or "{{" in connector_id:
            continue
        with_ = step.get("with")
        url = with_.get("url") if isinstance(with_, dict) else None
        at = doc.locate((*path, "connector-id"))
        found = connectors.get(connector_id)
        if found is None:
            # Kibana fails a step whose connector does not exist; Signoff's run calls a full
            # url without the connection's headers, so validate says what is missing.
            problems.append(Problem(
                source, at.line, at.column,
                f"connector {connector_id!r} is not in {connectors.source}: an http step "
                + ("without a url of its own needs an http connection for its base URL"
                   if url is None else "with this connector-id is sent without the "
                   "connection's headers (Kibana fails it)")))
            continue
        if not isinstance(found, HttpConnection):
            problems.append(Problem(
                source, at.line, at.column,
                f"connector {connector_id!r} is a {found.type} in {connectors.source}, and an "
                "http step takes an http connection"))
            continue
        if isinstance(url, str) and "{{" not in url and "{%" not in url \
                and not within_base(url, found.url):
            where = doc.locate((*path, "with", "url"))
            problems.append(Problem(
                source, where.line, where.column,
                f"with.url {url!r} is outside connector {connector_id!r}'s base URL "
                f"{found.url} (its headers are sent only under it); give a path instead"))
    return problems


# The connection a connector step family uses without a connector-id (the one of that
# name, else the only one of its types), as StepContext.connection picks it at run time.
FAMILY_CONNECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cases": ("kibana", ("kibana",)),
    "kibana": ("kibana", ("kibana",)),
    "elasticsearch": ("elasticsearch", ("elasticsearch",)),
}
# Step types whose connection is not their family's: ai.agent calls Kibana's Agent Builder.
STEP_CONNECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ai.agent": ("kibana", ("kibana",)),
}


def _check_family_steps(doc: PositionedDocument, source: str,
                        connectors: Connectors) -> list[Problem]:
    """Problems with the connection of each connector family's step (``cases.*``, ...):
    its ``connector-id`` not configured or of another type, or, without one, no connection
    it would use."""
    problems = []
    for path, step in _typed_steps(doc.data, ()):
        family = STEP_CONNECTIONS.get(str(step["type"])) or FAMILY_CONNECTIONS.get(
            str(step["type"]).split(".", 1)[0])
        if family is None or "." not in step["type"]:
            continue
        name, types = family
        connector_id = step.get("connector-id")
        wanted = " or ".join(types)
        if isinstance(connector_id, str) and "{{" not in connector_id:
            found = connectors.get(connector_id)
            at = doc.locate((*path, "connector-id"))
            if found is None or found.type not in types:
                what = "is not in" if found is None else f"is a {found.type} in"
                problems.append(Problem(source, at.line, at.column, (
                    f"connector {connector_id!r} {what} {connectors.source}, and a "
                    f"{step['type']} step takes a connection of type {wanted}")))
        elif connector_id is None:
            named = connectors.get(name)
            at = doc.locate((*path, "type"))
            if named is not None and named.type not in types:
                problems.append(Problem(source, at.line, at.column, (
                    f"step {step.get('name')!r} ({step['type']}) names no connector-id, so it "
                    f"uses connector {name!r}, a {named.type} in {connectors.source}, not a "
                    f"connection of type {wanted}")))
            elif named is None and len(
                    [c for c in connectors.connections.values() if c.type in types]) != 1:
                problems.append(Problem(source, at.line, at.column, (
                    f"step {step.get('name')!r} ({step['type']}) names no connector-id, and "
                    f"{connectors.source} has no connection called {name!r} nor exactly one "
                    f"of type {wanted}")))
    return problems


def _typed_steps(node: Any, path: YamlPath) -> Iterator[tuple[YamlPath, Mapping[str, Any]]]:
    """Every step (a mapping with a ``name`` and a ``type``) in a loaded workflow."""
    if isinstance(node, dict):
        if isinstance(node.get("type"), str) and isinstance(node.get("name"), str):
            yield path, node
        for key, value in node.items():
            yield from _typed_steps(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _typed_steps(value, (*path, index))


def _http_steps(node: Any, path: YamlPath) -> Iterator[tuple[YamlPath, Mapping[str, Any]]]:
    """Every step of type ``http`` in a loaded workflow, wherever it is."""
    if isinstance(node, dict):
        if node.get("type") == "http" and isinstance(node.get("name"), str):
            yield path, node
        for key, value in node.items():
            yield from _http_steps(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _http_steps(value, (*path, index))



# -- checking connections (`signoff connectors check`) -----------------------------------------

# Each type's cheapest authenticated read, as "module:function", imported when a check
# runs (the step module that calls the type's service holds it; the steps layer does not
# import this one). Called with the connection and the worker's egress policy, it returns
# a line saying what answered, or raises engine.errors.StepFailed saying why not.
CONNECTION_CHECKS: dict[str, str] = {
    "kibana": "engine.steps.kibana:check_kibana",
    "elasticsearch": "engine.steps.elasticsearch:check_elasticsearch_connection",
    "openai": "engine.steps.chat_completions:check_openai",
}


def connection_check(type_name: str) -> Callable[[Connection, Any], str] | None:
    """The check ``signoff connectors check`` calls for a connection of ``type_name``."""
    target = CONNECTION_CHECKS.get(type_name)
    if target is None:
        return None
    module, _, name = target.partition(":")
    check: Callable[[Connection, Any], str] = getattr(importlib.import_module(module), name)
    return check


AI_STEP_TYPES = ("ai.prompt", "ai.classify", "ai.summarize")


def _check_ai_steps(doc: PositionedDocument, source: str,
                    connectors: Connectors) -> list[Problem]:
    """Problems with the connection of ``ai.*`` steps, found as the step will find it
    (:meth:`engine.definition.step_types.StepContext.connection`): a ``connector-id`` not
    configured or not an ``openai`` connection; without one, no connection called ``ai``
    and not exactly one ``openai`` connection."""
    problems = []
    openai = [c.id for c in connectors.connections.values() if c.type == "openai"]
    for path, step in _steps_of_types(doc.data, (), AI_STEP_TYPES):
        connector_id, where = step.get("connector-id"), (*path, "connector-id")
        with_ = step.get("with")
        if connector_id is None and isinstance(with_, dict) and with_.get("connectorId"):
            connector_id, where = with_["connectorId"], (*path, "with", "connectorId")
        if connector_id is None:
            where = (*path, "type")
        elif not isinstance(connector_id, str) or "{{" in connector_id:
            continue
        at = doc.locate(where)
        found = connectors.get(connector_id if isinstance(connector_id, str) else "ai")
        if connector_id is not None and found is None:
            message = f"connector {connector_id!r} is not in {connectors.source}"
        elif found is not None and found.type != "openai":
            message = (f"connector {found.id!r} is a {found.type} in {connectors.source}, and "
                       f"{step['type']} takes an openai connection")
        elif found is None and len(openai) != 1:
            message = (f"{step['type']} names no connector-id, no connection is called 'ai', "
                       f"and {len(openai) or 'none'} of {connectors.source}'s connections "
                       "are of type openai: give the step a connector-id")
        else:
            continue
        problems.append(Problem(source, at.line, at.column, message))
    return problems


def _steps_of_types(node: Any, path: YamlPath,
                    types: tuple[str, ...]) -> Iterator[tuple[YamlPath, Mapping[str, Any]]]:
    """Every step of one of ``types`` in a loaded workflow, wherever it is."""
    if isinstance(node, dict):
        if node.get("type") in types and isinstance(node.get("name"), str):
            yield path, node
        for key, value in node.items():
            yield from _steps_of_types(value, (*path, key), types)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _steps_of_types(value, (*path, index), types)
