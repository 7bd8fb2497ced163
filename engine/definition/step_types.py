"""The step-type registry: built-in types and the ones users add.

A step type is registered with :func:`step_type` (an action) or :func:`flow_step_type`
(a step that runs other steps: if, foreach, switch); packages of the user's own add
theirs through the ``signoff.steps`` entry-point group (the entry point names a
module to import, whose decorators register the types). Unknown types and options
that do not match a type's ``options_schema`` fail at ``signoff validate``, and so do the
step's own top-level keys a type declares in ``params_schema`` (Elastic's data steps take
their source there: ``items``, ``source``, ``arrays``). A plug-in
that fails to import is logged and remembered (:func:`plugin_failures`), not raised:
a worker goes on without its types, and ``signoff validate`` reports it.

The runner treats a step by its :class:`StepKind`, never by its name: an action's
function gets a :class:`StepContext`, a flow step's function a :class:`FlowContext`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from engine.definition.egress import DEFAULT_POLICY, EgressPolicy
from engine.errors import StepFailed, StepTypeInvalid

if TYPE_CHECKING:
    from engine.definition.conditions import Condition
    from engine.definition.model import FailurePolicy, Step

log = logging.getLogger(__name__)

BUILT_IN_STEPS = "engine.steps"  # the package whose modules register the built-in types
PLUGIN_GROUP = "signoff.steps"  # the entry-point group of step-type plug-ins


class StepKind(StrEnum):
    """How the runner treats a step type."""

    ACTION = "action"  # runs a function and produces an output
    HUMAN = "human"  # suspends the run until someone resumes it
    TIMER = "timer"  # suspends the run until a time
    FLOW = "flow"  # runs other steps (if / foreach / while / switch): a function walks them
    # starts child executions and waits for them (workflow.execute, parallel): the runner's
    # engine.run.children does it, by the step's type
    CHILDREN = "children"


@dataclass
class StepContext:
    """What a running step may see and do."""

    options: Mapping[str, Any]  # the step's `with`, templates rendered (but its raw_options)
    execution_id: str
    step_name: str
    step_path: str
    attempt: int
    connector_id: str | None = None
    timeout_seconds: float | None = None
    egress: EgressPolicy = DEFAULT_POLICY  # where an http step may connect (the worker's settings)
    params: Mapping[str, Any] = field(default_factory=dict)  # its declared top-level keys, rendered
    # Renders a value as `with` is rendered, in the step's scope plus the names given
    # (data.map renders its raw `fields` once per item, with `item` and `index`).
    render: Callable[[Any, Mapping[str, Any]], Any] = lambda value, names: value
    # The worker's connections (SIGNOFF_CONNECTORS) by connector id: each a frozen record
    # with at least `id` and `type` (engine.connectors); see :meth:`connection`.
    connections: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def connection(self, family: str, types: tuple[str, ...]) -> Any:
        """The connection a connector step of ``family`` (``kibana``, ``elasticsearch``,
        ``ai``) uses: the one its ``connector-id`` names, else the one whose id is the
        family's name, else the only one of ``types``. StepFailed (not retried) when
        there is none, or the one named is of another type."""
        if self.connector_id is not None:
            chosen = self.connections.get(self.connector_id)
            if chosen is None:
                raise StepFailed(f"connector-id {self.connector_id!r} of step "
                                 f"{self.step_name!r} is not configured in SIGNOFF_CONNECTORS",
                                 retryable=False)
        else:
            chosen = self.connections.get(family)
            if chosen is None:
                of_type = [c for c in self.connections.values() if c.type in types]
                if len(of_type) != 1:
                    found = "none is" if not of_type else f"{len(of_type)} are"
                    raise StepFailed(
                        f"step {self.step_name!r} names no connector-id, no connection is "
                        f"called {family!r}, and {found} of type {' or '.join(types)} in "
                        "SIGNOFF_CONNECTORS", retryable=False)
                chosen = of_type[0]
        if chosen.type not in types:
            raise StepFailed(f"connection {chosen.id!r} of step {self.step_name!r} is of type "
                             f"{chosen.type!r}, not {' or '.join(types)}", retryable=False)
        return chosen

    def log(self, message: str) -> None:
        """Write ``message`` to the worker's log, tagged with the execution and the step."""
        log.info("[%s %s] %s", self.execution_id, self.step_name, message)


StepFunction = Callable[[StepContext], Any]

# What a schema cannot say about a step: given its `with` and its top-level params (as
# written, templates unrendered), each problem as (path within the step, message), e.g.
# (("with", "pattern"), "..."). Called by `signoff validate`; a templated value is known
# only at run time, so a check leaves it alone.
StepCheck = Callable[[Mapping[str, Any], Mapping[str, Any]],
                     Iterable[tuple[tuple[str | int, ...], str]]]
# What a schema cannot say about a step's whole shape (a parallel step's branches and what
# their bodies may hold): given the step as written, each problem as (path within the
# step, message, whether it points at the key rather than its value).
StepShapeCheck = Callable[[Mapping[str, Any]], Iterable[tuple[tuple[str | int, ...], str, bool]]]


class FlowContext(Protocol):
    """What a flow step's function may see and do; the runner implements it.

    A run is replayed from the top, so a flow step's function runs again on every
    segment: what it decides (a branch, the items of a loop) is recorded once by
    :meth:`choose` and read back afterwards, so its children keep their paths.
    The runner records the step as completed when the function returns; a function
    that cannot go on raises :class:`engine.errors.StepFailed` and the run fails.
    """

    @property
    def step(self) -> Step:
        """The flow step's definition: its condition, expression and child steps."""
        ...

    @property
    def path(self) -> str:
        """The step instance's path (``loop[2].check`` inside a foreach)."""
        ...

    def choose(self, decide: Callable[[], Mapping[str, Any]]) -> Mapping[str, Any]:
        """The choice recorded on an earlier pass, or ``decide()`` recorded now as the
        step's output."""
        ...

    def evaluate(self, expression: str) -> Any:
        """The value of a template or bare expression, in the step's scope."""
        ...

    def holds(self, condition: Condition, scope: Mapping[str, Any] | None = None) -> bool:
        """Whether ``condition`` holds in the step's scope, plus ``scope`` when given."""
        ...

    def progress(self, update: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
        """The step's recorded output, after merging ``update`` into it (recorded with the
        next write) when the step has not completed; call :meth:`choose` first."""
        ...

    def run_iteration(self, steps: tuple[Step, ...], *, index: int, prefix: str,
                      scope: Mapping[str, Any]) -> bool:
        """Run one iteration of a loop (``foreach``, ``while``): its ``steps`` under
        ``prefix``, with ``scope`` added. With an ``iteration-timeout`` the iteration's
        start is recorded (its deadline runs from it, on every pass); a ``loop.continue``
        inside ends it, and its failure is handled by the loop's ``iteration-on-failure``
        (whose ``retry`` runs it again, under ``<prefix>#2.`` and so on, after its delay).
        True when a ``loop.break`` inside ended the loop."""
        ...

    def exit_loop(self, how: str) -> None:
        """End the current iteration (``how="continue"``) or the innermost loop (``"break"``);
        the step is recorded first, so a replay leaves the loop the same way."""
        ...

    def run_steps(self, steps: tuple[Step, ...], *, prefix: str | None = None,
                  scope: Mapping[str, Any] | None = None,
                  on_failure: FailurePolicy | None = None) -> None:
        """Run child steps in order, their paths under ``prefix`` (the flow step's own by
        default), with ``scope`` added to what their templates see (``foreach``). When one
        fails the run, ``on_failure`` (a loop's ``iteration-on-failure``) may run its
        ``fallback`` steps or ``continue`` instead; ``workflow.fail`` is never caught."""
        ...


FlowFunction = Callable[[FlowContext], None]


@dataclass(frozen=True)
class StepType:
    name: str
    kind: StepKind
    run: StepFunction | None  # ACTION: the function that runs it
    options_schema: Mapping[str, Any]
    description: str = ""
    # A pure step has no side effects outside the run (console, data.set): the runner
    # records its start and end in one write instead of two.
    pure: bool = False
    sets_variables: bool = False  # its output, a mapping, is merged into `variables`
    flow: FlowFunction | None = None  # FLOW: the function that walks its child steps
    step_keys: tuple[str, ...] = ()  # FLOW: the step keys it reads (condition, steps, ...)
    # The top-level keys of the step it takes besides the common ones, as the JSON Schema
    # of an object (its `properties` name them); the loader keeps them as `Step.params`.
    params_schema: Mapping[str, Any] | None = None
    raw_options: tuple[str, ...] = ()  # keys of `with` passed unrendered (see StepContext.render)
    check: StepCheck | None = None
    check_shape: StepShapeCheck | None = None

    @property
    def param_keys(self) -> frozenset[str]:
        """The top-level keys ``params_schema`` declares."""
        return frozenset((self.params_schema or {}).get("properties", {}))

    @property
    def built_in(self) -> bool:
        """One of Signoff's own types (registered by :data:`BUILT_IN_STEPS`), not a plug-in's."""
        function = self.run or self.flow
        return function is None or function.__module__.startswith(BUILT_IN_STEPS)


@dataclass(frozen=True)
class PluginFailure:
    """A ``signoff.steps`` entry point that could not be imported."""

    name: str
    value: str  # the module it names
    error: str  # the exception, e.g. "ModuleNotFoundError: No module named 'acme_sdk'"


_registry: dict[str, StepType] = {}
_entry_points_loaded = False
_plugin_failures: list[PluginFailure] = []

_ANY_OPTIONS: Mapping[str, Any] = {"type": "object"}


def step_type(
    name: str,
    *,
    kind: StepKind = StepKind.ACTION,
    options_schema: Mapping[str, Any] | None = None,
    description: str = "",
    pure: bool = False,
    sets_variables: bool = False,
    params_schema: Mapping[str, Any] | None = None,
    raw_options: tuple[str, ...] = (),
    check: StepCheck | None = None,
) -> Callable[[StepFunction], StepFunction]:
    """Register a step type; the decorated function runs it (``ACTION`` kind)."""

    def register(func: StepFunction) -> StepFunction:
        register_step_type(
            StepType(
                name=name,
                kind=kind,
                run=func,
                options_schema=options_schema or _ANY_OPTIONS,
                description=description or _first_line(func.__doc__),
                pure=pure,
                sets_variables=sets_variables,
                params_schema=params_schema,
                raw_options=raw_options,
                check=check,
            )
        )
        return func

    return register


def flow_step_type(name: str, *, step_keys: tuple[str, ...],
                   description: str = "") -> Callable[[FlowFunction], FlowFunction]:
    """Register a ``FLOW`` step type; the decorated function walks its child steps.

    ``step_keys`` are the keys of the step it reads besides the common ones (``name``,
    ``type``, ``if``, ...): ``signoff validate`` reports them on steps of other types.
    """

    def register(func: FlowFunction) -> FlowFunction:
        register_step_type(StepType(name=name, kind=StepKind.FLOW, run=None, flow=func,
                                    options_schema=_ANY_OPTIONS, step_keys=step_keys,
                                    description=description or _first_line(func.__doc__)))
        return func

    return register


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0]


def register_step_type(spec: StepType) -> None:
    """Add ``spec`` to the registry; StepTypeInvalid when its kind is unknown, it has
    nothing to run, or its name is taken."""
    spec = replace(spec, kind=_kind_of(spec))
    if spec.kind is StepKind.ACTION and spec.run is None:
        raise StepTypeInvalid(f"step type {spec.name!r} is an action but has no function to run")
    if spec.kind is StepKind.FLOW and spec.flow is None:
        raise StepTypeInvalid(f"step type {spec.name!r} is a flow step but has no function to "
                              "walk its steps")
    existing = _registry.get(spec.name)
    if existing is not None and (existing.run is not spec.run or existing.flow is not spec.flow):
        raise StepTypeInvalid(f"step type {spec.name!r} is already registered")
    _registry[spec.name] = spec


def _kind_of(spec: StepType) -> StepKind:
    try:
        return StepKind(spec.kind)
    except ValueError:
        kinds = ", ".join(kind.value for kind in StepKind)
        raise StepTypeInvalid(f"step type {spec.name!r} has kind {spec.kind!r}, which is not a "
                              f"step kind (one of {kinds})") from None


def load_entry_points() -> None:
    """Import every module named in the ``signoff.steps`` entry-point group, once."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not take the engine down
            log.exception("could not load step types from entry point %s", ep.value)
            _plugin_failures.append(PluginFailure(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))


def plugin_failures() -> tuple[PluginFailure, ...]:
    """The ``signoff.steps`` plug-ins this process could not import."""
    _ensure_loaded()
    return tuple(_plugin_failures)


def get_step_type(name: str) -> StepType | None:
    _ensure_loaded()
    return _registry.get(name)


def registered_step_types() -> Mapping[str, StepType]:
    _ensure_loaded()
    return dict(_registry)


def _ensure_loaded() -> None:
    # Built-ins register when engine.steps is imported, plug-ins through entry points:
    # both are found at run time, so this layer does not import the steps it lists.
    importlib.import_module(BUILT_IN_STEPS)

    load_entry_points()
