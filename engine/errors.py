"""Every error Signoff raises on purpose.

    SignoffError
    ├── WorkflowInvalid          a workflow file has problems (each with file:line:column)
    │   └── PolicyInvalid        a policy file (SIGNOFF_POLICY) has problems, located the same way
    ├── TemplateError            a Liquid template does not parse or render
    ├── ConditionError           a KQL condition does not parse
    ├── DurationError            "15x" is not a duration
    ├── StepFailed               a step ran and failed (maybe retryable)
    │   ├── WorkflowFailRequested  a workflow.fail step ends the run, whatever on-failure says
    │   └── EgressBlocked        an http step's address is refused by the egress policy
    ├── StepTypeInvalid          a step type registered twice, or with an unknown kind
    ├── WorkflowNotFound         no workflow by that name
    ├── WorkflowDisabled         the workflow says enabled: false
    ├── DefinitionMissing        a run's stored workflow definition is gone from Redis
    ├── PluginNotFound           no notifier (or other plug-in) by that name is installed
    ├── StoreUnavailable         Redis cannot be reached
    ├── TokenError               an API token cannot be created or revoked as asked
    │   ├── TokenExists          a token by that name exists already
    │   └── TokenNotFound        no token by that name
    ├── AccessDenied             an API caller's token does not allow what it asked
    │   ├── MissingScope         the token lacks the scope the route needs
    │   └── ActAsRequired        a header names someone else, and the token may not act as others
    ├── SettingsInvalid          a setting from the environment does not parse
    │   └── ConnectorsInvalid    the SIGNOFF_CONNECTORS file has problems (each with file:line:column)
    ├── WorkflowInputsInvalid    a run's `inputs` are undeclared, missing or of the wrong type
    ├── RequesterInvalid         a run's requester is no Slack id, e-mail address or principal
    └── ExecutionError           about one execution
        ├── ExecutionNotFound
        ├── NotWaiting           the execution is not waiting for input
        ├── AlreadyDecided       someone else decided first (who, when)
        ├── InputInvalid         resume input violates the step's schema (every violation)
        ├── ActorNotAllowed      this actor may not decide (escalate, reassign) this review: why
        ├── CannotEscalate       the review is at its last level
        │   └── EscalationTargetRequired  past its levels, with no SIGNOFF_ESCALATE_TO: name someone
        ├── AlreadyEscalated     someone moved the review past the level asked from (who, to which)
        ├── Contention           the execution kept changing under a write; try again
        ├── RunSkipped           settings.concurrency skipped a new run (dropped, queue full)
        └── GateUseRefused       an agent call's approval cannot cover this use (why: its code)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SignoffError(Exception):
    """Base of every error Signoff raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow file, located as precisely as we can."""

    source: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}: {self.message}"


class WorkflowInvalid(SignoffError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PolicyInvalid(WorkflowInvalid):
    """A policy file of agent and CI gate rules has problems (each with file:line:column)."""


class TemplateError(SignoffError):
    """A template that does not parse (at validation) or render (at run time)."""

    def __init__(self, message: str, *, template: str = "", column: int = 0) -> None:
        self.template = template
        self.column = column
        super().__init__(message)


class ConditionError(SignoffError):
    """A KQL condition that does not parse; ``column`` is 1-based within the condition."""

    def __init__(self, message: str, *, condition: str = "", column: int = 0) -> None:
        self.condition = condition
        self.column = column
        super().__init__(message)


class DurationError(SignoffError):
    pass


class StepFailed(SignoffError):
    """A step ran and failed. ``retryable`` says whether ``on-failure.retry`` may try again;
    ``retry_after`` (seconds) is how long the service asked to be left alone (a 429's
    ``Retry-After``): a retry waits at least that long."""

    def __init__(self, message: str, *, retryable: bool = True, details: Any = None,
                 retry_after: float | None = None) -> None:
        self.retryable = retryable
        self.details = details
        self.retry_after = retry_after
        super().__init__(message)


class WorkflowFailRequested(StepFailed):
    """Raised by ``workflow.fail``: the runner ends the run, ignoring ``on-failure``."""


class EgressBlocked(StepFailed):
    """An ``http`` step would connect to an address the egress policy refuses: nothing was
    sent, and retrying will not change the answer."""

    def __init__(self, host: str, address: str, reason: str, *, request: str = "") -> None:
        self.host = host
        self.address = address
        self.reason = reason
        self.request = request
        where = f"{request}: " if request else ""
        target = address if host == address else f"{host} resolves to {address}"
        super().__init__(f"egress_blocked: {where}{target}, refused: {reason}",
                         retryable=False,
                         details={"error": "egress_blocked", "host": host, "address": address,
                                  "reason": reason})


class StepTypeInvalid(SignoffError):
    """A step type that cannot be registered (a name taken, an unknown kind)."""


class WorkflowNotFound(SignoffError):
    pass


class DefinitionMissing(SignoffError):
    """A run's workflow definition (stored by digest) is gone from Redis."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        super().__init__(f"workflow definition {digest} is missing from Redis")


class PluginNotFound(SignoffError):
    """No plug-in of that name is installed in the entry-point group."""

    def __init__(self, group: str, name: str) -> None:
        self.group = group
        self.name = name
        super().__init__(f"no plug-in named {name!r} is installed (entry-point group {group})")


class StoreUnavailable(SignoffError):
    pass


class TokenError(SignoffError):
    """An API token that cannot be created or revoked as asked (a bad name, an unknown scope)."""


class TokenExists(TokenError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a token named {name!r} exists already; revoke it first or pick "
                         "another name")


class TokenNotFound(TokenError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no token named {name!r}")


class AccessDenied(SignoffError):
    """An authenticated API caller asked for something its token does not allow."""


class MissingScope(AccessDenied):
    def __init__(self, token: str, scope: str, doing: str) -> None:
        self.token = token
        self.scope = scope
        super().__init__(f"token {token!r} lacks the {scope!r} scope, which {doing} needs")


class ActAsRequired(AccessDenied):
    """A header names someone other than the token's principal, and the token lacks
    ``act-as``: it is refused rather than silently replaced by the principal."""

    def __init__(self, token: str, principal: str, header: str, named: str) -> None:
        self.token = token
        self.principal = principal
        self.header = header
        self.named = named
        super().__init__(f"{header} names {named!r}, but token {token!r} acts only as "
                         f"{principal!r}; naming someone else needs the 'act-as' scope")


class SettingsInvalid(SignoffError):
    """A setting read from the environment that does not parse (which variable, which entry)."""


class ConnectorsInvalid(SettingsInvalid):
    """The connections file (``SIGNOFF_CONNECTORS``) has problems; never quotes a secret."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class WorkflowInputsInvalid(SignoffError):
    """A run's ``inputs`` do not match what the workflow declares; one problem per input."""

    def __init__(self, workflow: str, problems: list[dict[str, str]]) -> None:
        self.workflow = workflow
        self.problems = problems
        lines = "; ".join(f"{p['input']}: {p['message']}" for p in problems)
        super().__init__(f"the inputs of workflow {workflow!r} are invalid: {lines}")


class RequesterInvalid(SignoffError):
    """A run's requester that names nobody the rules can compare (see engine.run.identity)."""

    def __init__(self, requester: str, expected: str) -> None:
        self.requester = requester
        super().__init__(f"requester {requester!r} is not valid: {expected}")


class ExecutionError(SignoffError):
    def __init__(self, message: str, *, execution_id: str) -> None:
        self.execution_id = execution_id
        super().__init__(message)


class ExecutionNotFound(ExecutionError):
    def __init__(self, execution_id: str) -> None:
        super().__init__(f"no execution {execution_id!r}", execution_id=execution_id)


class NotWaiting(ExecutionError):
    def __init__(self, execution_id: str, status: str) -> None:
        self.status = status
        super().__init__(
            f"execution {execution_id} is {status}, not WAITING_FOR_INPUT",
            execution_id=execution_id,
        )


class AlreadyDecided(ExecutionError):
    def __init__(self, execution_id: str, *, step: str, by: str, at: str, outcome: str) -> None:
        self.step = step
        self.by = by
        self.at = at
        self.outcome = outcome
        super().__init__(
            f"step {step!r} of execution {execution_id} was already decided by {by} at {at}",
            execution_id=execution_id,
        )


class InputInvalid(ExecutionError):
    def __init__(self, execution_id: str, violations: list[dict[str, str]]) -> None:
        self.violations = violations
        lines = "; ".join(f"{v['path'] or '(input)'}: {v['message']}" for v in violations)
        super().__init__(f"input does not match the step's schema: {lines}",
                         execution_id=execution_id)


class ActorNotAllowed(ExecutionError):
    """The engine's rules refuse ``actor`` this action on the review: ``reason`` is the
    refusal's code (``not_an_approver``, ``self_approval``, ``already_voted``, ...)."""

    def __init__(self, execution_id: str, actor: str, reason: str, explanation: str = "") -> None:
        self.actor = actor
        self.reason = reason
        super().__init__(f"{actor} may not act on execution {execution_id}: "
                         f"{explanation or reason}", execution_id=execution_id)


class CannotEscalate(ExecutionError):
    """The review is at its last level (or has no escalation levels)."""


class EscalationTargetRequired(CannotEscalate):
    """The review has no further level and the workspace no default target
    (SIGNOFF_ESCALATE_TO): the one escalating must name whom to."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"review of {execution_id} has no further escalation level and "
                         "SIGNOFF_ESCALATE_TO is not set: name whom to escalate it to",
                         execution_id=execution_id)


class AlreadyEscalated(ExecutionError):
    """An escalation asked from a level the review has left: someone escalated it first."""

    def __init__(self, execution_id: str, *, level: int, by: str, at: str) -> None:
        self.level = level  # the level it is at now (0 is the first)
        self.by = by
        self.at = at
        super().__init__(f"the review of execution {execution_id} was already escalated to "
                         f"level {level + 1} by {by}", execution_id=execution_id)


class WorkflowDisabled(SignoffError):
    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        super().__init__(f"workflow {workflow!r} is disabled (enabled: false)")


class Contention(ExecutionError):
    """A guarded write lost its race too many times in a row: the execution kept changing."""

    def __init__(self, execution_id: str, doing: str) -> None:
        self.doing = doing
        super().__init__(f"could not {doing} {execution_id}: it kept changing under us; "
                         "try again", execution_id=execution_id)


class RunSkipped(ExecutionError):
    """``settings.concurrency`` skipped a new run: its group had no free slot and its
    strategy is ``drop`` (``because`` is ``dropped``), or its queue was full
    (``queue_full``). The run's record exists, SKIPPED, with ``reason``."""

    def __init__(self, execution_id: str, workflow: str, group: str, because: str,
                 reason: str) -> None:
        self.workflow = workflow
        self.group = group
        self.because = because
        self.reason = reason
        super().__init__(f"run {execution_id} of {workflow} skipped: {reason}",
                         execution_id=execution_id)


class GateUseRefused(ExecutionError):
    """A caller reported running a gated call that its approval does not cover: ``reason``
    is ``not_approved``, ``not_the_requester``, ``other_tool``, ``other_arguments`` or
    ``already_used`` (then ``used`` says who used it and when)."""

    def __init__(self, execution_id: str, reason: str, message: str,
                 used: dict[str, Any] | None = None) -> None:
        self.reason = reason
        self.used = used
        super().__init__(message, execution_id=execution_id)
