"""Signoff's workflow engine: Elastic-format workflows, durable runs on RQ and Redis,
human reviews with SLAs and escalation, a tamper-evident audit trail, the API and CLI.

The public surface is what :data:`__all__` names; every other module is internal and
may move. The packages are layers, each importing only those below it
(``tests/test_layout.py`` holds the code to that):

    api.py, cli.py   the edges: HTTP API and the ``signoff`` command
    worker/          RQ: job bodies, the scheduler behind timers, the worker, scheduled runs
    run/             advancing runs and deciding reviews: runner, reviews, authority, the Engine
    steps/           the built-in step types
    state/           Redis: execution records, audit chain, keys, Lua, store, inboxes
    definition/      pure: workflow model, loading and checks, templates, conditions
    errors.py, notify.py, settings.py   the error tree, the notifier seam, configuration

The engine never imports ``bot``, ``slack_bolt`` or ``slack_sdk``: it announces reviews
through :class:`Notifier`, which the bot implements. Names are loaded on first use, so
importing one layer (say ``engine.definition``) does not import Redis or RQ.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.errors import (
    AccessDenied,
    ActAsRequired,
    ActorNotAllowed,
    AlreadyDecided,
    AlreadyEscalated,
    CannotEscalate,
    ConditionError,
    ConnectorsInvalid,
    Contention,
    DefinitionMissing,
    DurationError,
    EgressBlocked,
    EscalationTargetRequired,
    ExecutionError,
    ExecutionNotFound,
    GateUseRefused,
    InputInvalid,
    MissingScope,
    NotWaiting,
    PluginNotFound,
    PolicyInvalid,
    Problem,
    RequesterInvalid,
    RunSkipped,
    SettingsInvalid,
    SignoffError,
    StepFailed,
    StepTypeInvalid,
    StoreUnavailable,
    TemplateError,
    TokenError,
    TokenExists,
    TokenNotFound,
    WorkflowDisabled,
    WorkflowFailRequested,
    WorkflowInputsInvalid,
    WorkflowInvalid,
    WorkflowNotFound,
)

if TYPE_CHECKING:
    from engine.definition.loader import load_workflow, parse_workflow
    from engine.definition.step_types import (
        FlowContext,
        StepContext,
        StepKind,
        flow_step_type,
        step_type,
    )
    from engine.notify import Actor, Notifier, ReviewChange, ReviewClosed, ReviewRequest
    from engine.run.engine import Engine
    from engine.settings import Settings
    from engine.worker.runtime import build_engine

_LAZY = {
    "Engine": "engine.run.engine",
    "build_engine": "engine.worker.runtime",
    "Settings": "engine.settings",
    "load_workflow": "engine.definition.loader",
    "parse_workflow": "engine.definition.loader",
    "step_type": "engine.definition.step_types",
    "StepContext": "engine.definition.step_types",
    "StepKind": "engine.definition.step_types",
    "flow_step_type": "engine.definition.step_types",
    "FlowContext": "engine.definition.step_types",
    "Actor": "engine.notify",
    "Notifier": "engine.notify",
    "ReviewRequest": "engine.notify",
    "ReviewChange": "engine.notify",
    "ReviewClosed": "engine.notify",
}

__all__ = [
    # assembling and driving the engine
    "Engine", "build_engine", "Settings", "load_workflow", "parse_workflow",
    # custom step types
    "step_type", "StepContext", "StepKind", "flow_step_type", "FlowContext",
    # the notifier seam
    "Notifier", "Actor", "ReviewRequest", "ReviewChange", "ReviewClosed",
    # the error tree
    "SignoffError", "Problem", "WorkflowInvalid", "TemplateError", "ConditionError",
    "DurationError", "StepFailed", "WorkflowFailRequested", "StepTypeInvalid",
    "WorkflowNotFound", "DefinitionMissing", "PluginNotFound", "StoreUnavailable",
    "ExecutionError", "ExecutionNotFound", "NotWaiting", "AlreadyDecided", "InputInvalid",
    "ActorNotAllowed", "CannotEscalate", "WorkflowDisabled", "Contention", "TokenError",
    "TokenExists", "TokenNotFound", "AccessDenied", "MissingScope", "ActAsRequired",
    "EgressBlocked", "SettingsInvalid", "WorkflowInputsInvalid", "AlreadyEscalated",
    "RequesterInvalid", "EscalationTargetRequired", "ConnectorsInvalid", "RunSkipped",
    "PolicyInvalid", "GateUseRefused",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, found directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
