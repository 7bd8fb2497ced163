"""How the engine announces reviews to the outside world, without knowing about Slack.

The runner calls a :class:`Notifier` after the state change it announces is safely
in Redis (a notifier whose work on a closed review is an inbox task,
:class:`CarriesClosing`, may have it made durable by the decision itself). The bot
implements one that posts to Slack; the engine ships
:class:`NullNotifier` (the audit trail still records everything). Implementations
are found through the ``signoff.notifiers`` entry-point group, so ``engine`` never
imports ``bot``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from engine.errors import PluginNotFound

if TYPE_CHECKING:  # the step types import this module, and must not import Redis
    from engine.state.inbox import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who did something: a Slack user, an API caller, the CLI, or the system itself."""

    id: str
    name: str = ""
    source: str = "api"  # api | cli | slack | system
    team: str | None = None
    token: str | None = None  # the API token that acted (its name): who vouched for ``id``

    @property
    def display(self) -> str:
        return self.name or self.id

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name or self.id, "source": self.source}
        if self.team:
            data["team"] = self.team
        if self.token:
            data["token"] = self.token
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Actor:
        return cls(id=str(data["id"]), name=str(data.get("name") or ""),
                   source=str(data.get("source") or "api"), team=data.get("team"),
                   token=data.get("token"))


SYSTEM_TIMEOUT = Actor(id="system:timeout", name="system:timeout", source="system")
SYSTEM_SLA = Actor(id="system:sla", name="system:sla", source="system")
# Sends a review nobody named can decide to SIGNOFF_ESCALATE_TO.
SYSTEM_ESCALATION = Actor(id="system:escalation", name="system:escalation", source="system")


@dataclass(frozen=True)
class ReviewRequest:
    """A human step that is waiting: everything a reviewer needs to see and decide."""

    execution_id: str
    workflow: str
    step: str  # the step's name
    step_type: str  # waitForInput | waitForApproval
    message: str  # rendered Markdown; its first line is the decision to make
    message_sha256: str
    schema: Mapping[str, Any]  # JSON Schema of the answer
    created_at: datetime
    decision_field: str = "approved"
    approvers: tuple[str, ...] = ()  # as written: U…, S… or e-mail addresses
    channel: str | None = None
    # Elastic 9.5's with.channels: slack_api's channel ids (posted to as well as `channel`),
    # and whether a `slack` (incoming webhook) channel was asked for.
    channels: tuple[str, ...] = ()
    webhook: bool = False
    requested_by: str | None = None
    due_at: datetime | None = None  # step timeout or settings.timeout, whichever is first
    approve_label: str = "Approve"  # waitForApproval's buttons: approveLabel, rejectLabel
    reject_label: str = "Decline"
    allow_self_approval: bool = False
    approvals_required: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)  # the step's rendered `with`
    level: int = 0  # escalations so far
    sla_due_at: datetime | None = None  # when the current level's SLA passes
    approvals: tuple[Mapping[str, Any], ...] = ()  # quorum: approvals recorded so far
    audience: tuple[str, ...] = ()  # resolved user ids who may decide
    handed: tuple[str, ...] = ()  # who handed their seat to someone else (reassigned)

    @property
    def next_deadline(self) -> datetime | None:
        moments = [m for m in (self.sla_due_at, self.due_at) if m is not None]
        return min(moments) if moments else None

    @property
    def levels(self) -> int:
        """How many approver levels the review has (1 + escalation entries)."""
        return 1 + len(self.options.get("escalation") or ())

    @property
    def title(self) -> str:
        """The decision line: the first non-empty line of the message, without Markdown heading marks."""
        for line in self.message.splitlines():
            stripped = line.strip().lstrip("#").strip()
            if stripped:
                return stripped
        return f"Review {self.step} of {self.workflow}"


@dataclass(frozen=True)
class ReviewClosed:
    """A review that no longer waits: decided, timed out or cancelled."""

    execution_id: str
    workflow: str
    step: str
    outcome: str  # approved | denied | submitted | cancelled | timed_out | failed
    actor: Actor
    at: datetime
    input: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class ReviewChange:
    """Something happened to a review that still waits.

    ``kind``: ``escalated`` (to ``level``; ``added`` approvers, ``channel`` if the level
    names one), ``reminder`` (its SLA comes soon), ``approval`` (a quorum approval was
    recorded by ``actor``), ``reassigned`` (``added`` may now decide).
    """

    review: ReviewRequest
    kind: str
    actor: Actor
    at: datetime
    reason: str = ""
    added: tuple[str, ...] = ()
    level: int = 0
    channel: str | None = None


class Notifier(Protocol):
    def review_waiting(self, review: ReviewRequest) -> None: ...

    def review_changed(self, change: ReviewChange) -> None: ...

    def review_closed(self, closed: ReviewClosed) -> None: ...


class CarriesClosing(Protocol):
    """A notifier whose work on a closed review is one inbox task (the bot's rewrite of the
    review's Slack messages). When the decision was made by an inbox task (a click handed
    to a worker) that came alone (the first task of its drain, the inbox empty), the
    commit that decides puts this task in the click's place on its drain's list
    (:attr:`engine.state.store.Change.carry`), and
    :meth:`Notifier.review_closed` is not called: the drain runs the task next, right
    after the run's next segment, and a worker that dies first leaves it to be put back
    in the inbox, as any task. Otherwise (a burst of clicks waiting, a decision made
    elsewhere) ``review_closed`` is called as for any notifier."""

    def closing_task(self, closed: ReviewClosed) -> Task | None: ...


class NullNotifier:
    """Announces nothing; reviews are still listed by the API, CLI and audit trail."""

    def review_waiting(self, review: ReviewRequest) -> None:
        log.info("review waiting: %s step %s: %s", review.execution_id, review.step, review.title)

    def review_changed(self, change: ReviewChange) -> None:
        log.info("review %s: %s step %s (%s)", change.kind, change.review.execution_id,
                 change.review.step, change.reason)

    def review_closed(self, closed: ReviewClosed) -> None:
        log.info("review closed: %s step %s: %s by %s", closed.execution_id, closed.step,
                 closed.outcome, closed.actor.display)


def load_notifier(name: str | None, **kwargs: Any) -> Notifier:
    """The notifier registered under ``name`` in ``signoff.notifiers``; NullNotifier for none."""
    if not name or name == "none":
        return NullNotifier()
    for ep in entry_points(group="signoff.notifiers"):
        if ep.name == name:
            factory = ep.load()
            notifier: Notifier = factory(**kwargs)
            return notifier
    raise PluginNotFound("signoff.notifiers", name)
