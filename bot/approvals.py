"""``/approvals``: your pending reviews, every pending review, one execution, stats, help.

    /approvals               the reviews waiting for you, oldest first, ten at a time
    /approvals all           every review waiting that you may see, ten at a time
    /approvals ID            one execution's reviews, waiting or decided (who and when)

A review is shown only to whom :meth:`bot.overview.Overview.may_see` lets see it
(``/approvals all`` reads it from the index :mod:`bot.visibility` keeps); for an
execution nobody showed you, ``/approvals ID`` answers exactly as for an id that does not
exist, so the answer does not tell whether it does.
    /approvals stats [days]  per workflow step over the last 7 (or ``days``) days
    /approvals help          what the command does; also the answer to anything else

The answer travels in the command's ack, as an ephemeral message built from the
engine's indexes well within Slack's 3 seconds (``process_before_response``: Bolt
sends the ack as the HTTP answer). Over HTTP the web process answers the command
itself, on a short path that checks Slack's signature and calls
:meth:`ApprovalsCommand.ack_body` without Bolt's dispatch (:class:`bot.web.CommandPath`);
the answer is the same. *Show more* replaces it through the click's response_url.
:func:`register_approvals` wires the command, its buttons, batch review and the App
Home into the Bolt app.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_bolt import App

from bot import texts
from bot.batch import CALLBACK_BATCH, BatchReview
from bot.block_kit import context_block, section_block
from bot.delivery import closed_from_state, load_delivery, review_from_json
from bot.digest import ACTION_DIGEST
from bot.directory import Directory
from bot.forms import decision_line
from bot.home import ACTION_HOME_MORE, HomeTab
from bot.mrkdwn import (
    DATE_AT_TIME,
    DATE_TIME,
    escape_mrkdwn,
    is_user_id,
    mention_user,
    slack_date,
    truncate_mrkdwn,
    truncate_plain,
)
from bot.overview import (
    ACTION_BATCH,
    ACTION_MORE,
    Overview,
    PendingItem,
    Scope,
    item_blocks,
    parse_more,
    pending_blocks,
    stats_blocks,
)
from bot.policy_stats import policy_stats, policy_stats_blocks
from engine.errors import ExecutionNotFound
from engine.notify import ReviewClosed
from engine.run.engine import Engine
from engine.run.gate import Gate
from engine.state.execution import ExecutionState, ExecutionStatus, parse_iso, review_request

COMMAND = "/approvals"
DEFAULT_DAYS = 7
MAX_DAYS = 365
FALLBACK_LIMIT = 3000
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")

Ack = Callable[..., Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """What ``/approvals <text>`` asks for."""

    kind: str  # mine | all | one | stats | help
    argument: str = ""  # the execution id, for "one"
    days: int = DEFAULT_DAYS  # for "stats"


def parse_request(text: str) -> Request:
    """Read the command's text; anything not understood asks for the help."""
    words = text.split()
    if not words:
        return Request("mine")
    head = words[0].lower()
    if len(words) == 1 and head in ("all", "help"):
        return Request(head)
    if head == "stats":
        if len(words) == 1:
            return Request("stats")
        if len(words) == 2 and words[1].isdigit() and 1 <= int(words[1]) <= MAX_DAYS:
            return Request("stats", days=int(words[1]))
        return Request("help")
    if len(words) == 1 and _TOKEN.fullmatch(words[0]):
        return Request("one", argument=words[0])
    return Request("help")


class ApprovalsCommand:
    """The ``/approvals`` listener and its Show more button."""

    def __init__(self, engine: Engine, overview: Overview, gate: Gate | None = None) -> None:
        self.engine = engine
        self.overview = overview
        self.gate = gate  # the agent and CI gate, whose policy the stats end with

    def command(self, ack: Ack, command: dict[str, Any]) -> None:
        ack(response_type="ephemeral",
            **self.answer(str(command.get("user_id") or ""), str(command.get("text") or "")))

    def ack_body(self, user_id: str, text: str) -> Message:
        """The command's whole answer, as Bolt's ``ack`` above sends it (for the web's
        short path, :class:`bot.web.CommandPath`)."""
        message = self.answer(user_id, text)
        body: Message = {"text": message["text"], "response_type": "ephemeral"}
        if message.get("blocks"):
            body["blocks"] = message["blocks"]
        return body

    def more(self, ack: Ack, body: dict[str, Any], respond: Callable[..., Any]) -> None:
        ack()
        scope, offset = parse_more(str((body.get("actions") or [{}])[0].get("value") or ""))
        user_id = str((body.get("user") or {}).get("id") or "")
        respond(replace_original=True, response_type="ephemeral",
                **self.listing(user_id, scope, offset))

    def answer(self, user_id: str, text: str) -> Message:
        request = parse_request(text)
        if request.kind == "mine":
            return self.listing(user_id, Scope.MINE)
        if request.kind == "all":
            return self.listing(user_id, Scope.ALL)
        if request.kind == "stats":
            return self.stats(request.days)
        if request.kind == "one":
            found = self.one(user_id, request.argument)
            if found is not None:
                return found
            if _UUID.fullmatch(request.argument):
                return _text_message(texts.no_execution(escape_mrkdwn(request.argument)))
        return help_message()

    def listing(self, user_id: str, scope: Scope, offset: int = 0) -> Message:
        now = datetime.now(UTC)
        page = self.overview.page(user_id, scope, offset)
        title = texts.MINE_TITLE if scope is Scope.MINE else texts.ALL_TITLE
        return {"text": f"{title}: {page.total:,}",
                "blocks": pending_blocks(page, now=now, where="command")}

    def stats(self, days: int) -> Message:
        stats = self.overview.stats(days)
        blocks = stats_blocks(stats, days)
        if self.gate is not None:
            blocks += policy_stats_blocks(policy_stats(self.gate))
        return {"text": texts.stats_title(days), "blocks": blocks}

    def one(self, user_id: str, execution_id: str) -> Message | None:
        """One execution's reviews; None when there is no such execution, or when ``user_id``
        may see none of its reviews."""
        try:
            state = self.engine.get(execution_id)
        except ExecutionNotFound:
            return None
        if not self._may_see(user_id, state):
            return None
        item = None
        if state.status is ExecutionStatus.WAITING_FOR_INPUT and state.waiting is not None:
            [item] = self.overview.items(user_id, [review_request(state, state.waiting)])
        closed = [(self._title(state, step), found) for step in _closed_steps(state)
                  if (found := closed_from_state(self.engine, state, step)) is not None]
        return execution_message(state, item, closed, now=datetime.now(UTC))

    def _may_see(self, user_id: str, state: ExecutionState) -> bool:
        """``user_id`` may see one of the run's reviews, waiting or closed (an admin, all)."""
        if self.overview.is_admin(user_id):
            return True
        if state.waiting is not None:
            waiting = review_request(state, state.waiting)
            if self.overview.may_see(user_id, waiting,
                                     load_delivery(self.engine, state.id, state.waiting.step)):
                return True
        for step in _closed_steps(state):
            delivery = load_delivery(self.engine, state.id, step)
            if delivery is not None and delivery.review and self.overview.may_see(
                    user_id, review_from_json(delivery.review), delivery):
                return True
        return False

    def _title(self, state: ExecutionState, step: str) -> str:
        delivery = load_delivery(self.engine, state.id, step)
        if delivery is not None and delivery.review:
            return decision_line(review_from_json(delivery.review))
        if state.waiting is not None and state.waiting.step == step:
            return decision_line(review_request(state, state.waiting))
        return texts.step_title(step)


def _closed_steps(state: ExecutionState) -> list[str]:
    """The human steps that were decided or closed, in the order they closed."""
    steps = [d.step for d in sorted(state.decisions.values(), key=lambda d: d.at)]
    if state.waiting is not None and state.status is not ExecutionStatus.WAITING_FOR_INPUT:
        steps.append(state.waiting.step)  # the run ended (cancelled, timed out) while it waited
    return list(dict.fromkeys(steps))


# -- Block Kit -------------------------------------------------------------------------------------

def execution_message(state: ExecutionState, item: PendingItem | None,
                      closed: Sequence[tuple[str, ReviewClosed]], *, now: datetime) -> Message:
    """One execution: its waiting review (with buttons), then each closed review."""
    blocks: list[dict[str, Any]] = []
    if item is not None:
        blocks.extend(item_blocks(item, now=now))
    for title, review in closed:
        lines = [f"*{escape_mrkdwn(title)}*", closed_text(review)]
        if review.reason:
            lines.append(texts.closed_reason(escape_mrkdwn(review.reason)))
        blocks.append(section_block("\n".join(lines)))
    if item is None and not closed:
        blocks.append(section_block(texts.NOTHING_DECIDED))
    started = parse_iso(state.started_at)
    facts = [f"*{escape_mrkdwn(state.workflow)}*", texts.run_status(state.status.value)]
    if started is not None:
        facts.append(texts.run_started(slack_date(started, DATE_AT_TIME)))
    facts.append(texts.execution_line(escape_mrkdwn(state.id)))
    blocks.append(context_block(" · ".join(facts)))
    headline = (item.title if item is not None else
                closed[-1][0] if closed else texts.execution_line(state.id))
    return {"text": truncate_mrkdwn(escape_mrkdwn(headline), FALLBACK_LIMIT), "blocks": blocks}


def closed_text(closed: ReviewClosed, decision_field: str = "approved") -> str:
    """``✅ Approved by @bob at <date>``: who closed a review, how and when."""
    outcome = closed.outcome
    decision = closed.input.get(decision_field)
    if outcome == "submitted" and isinstance(decision, bool):
        outcome = "approved" if decision else "denied"
    who = None
    if closed.actor.source != "system":
        who = (mention_user(closed.actor.id) if is_user_id(closed.actor.id)
               else escape_mrkdwn(closed.actor.display))
    return texts.closed_line(texts.outcome_label(outcome), who, slack_date(closed.at, DATE_TIME))


def help_message() -> Message:
    return {"text": truncate_plain(texts.APPROVALS_HELP, FALLBACK_LIMIT),
            "blocks": [section_block(texts.APPROVALS_HELP)]}


def _text_message(text: str) -> Message:
    return {"text": text, "blocks": [section_block(text)]}


# -- wiring ----------------------------------------------------------------------------------------

def register_approvals(app: App, engine: Engine, directory: Directory,
                       admins: tuple[str, ...] = (), gate: Gate | None = None) -> ApprovalsCommand:
    """Add ``/approvals``, its buttons, batch review and the App Home to ``app``; ``admins``
    (user and user-group ids, ``SIGNOFF_ADMINS``) see every pending review; ``gate``'s
    policy (graduation, shadow rules) ends ``/approvals stats``. Returns the command, which
    the web process also answers on a short path (:class:`bot.web.CommandPath`)."""
    overview = Overview(engine, app.client, directory, admins)
    command = ApprovalsCommand(engine, overview, gate)
    home = HomeTab(overview)
    batch = BatchReview(engine, directory, overview, republish=home.after_batch)
    app.command(COMMAND)(command.command)
    app.action(ACTION_MORE)(command.more)
    app.action(ACTION_HOME_MORE)(home.more)
    app.action(ACTION_BATCH)(batch.open)
    app.action(ACTION_DIGEST)(batch.open)  # a digest's Review them together (bot.digest)
    app.view_submission(CALLBACK_BATCH)(batch.submit)
    app.event("app_home_opened")(home.opened)
    return command
