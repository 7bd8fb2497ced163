"""An in-memory Slack workspace: who is in it, what was said, which views are open.

Everything the Web API methods, the response URLs and the driver read or change
lives here, behind one lock, so the emulator's server thread, the app under test
and the test itself can all touch it at once. Read methods hand out deep copies.
Rule violations raise :class:`SlackApiFailure` with the code Slack would answer.
"""

from __future__ import annotations

import copy
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slack_emulator.blockkit import with_block_ids
from slack_emulator.directory import AppInstallation, Team, User, UserGroup
from slack_emulator.errors import SlackApiFailure
from slack_emulator.views import Views

DEFAULT_TRIGGER_TTL = 3.0
# The app-level token (Basic Information > App-Level Tokens, scope connections:write) that
# apps.connections.open wants for Socket Mode; shaped like Slack's xapp-1-<app>-<n>-<hex>.
DEFAULT_APP_TOKEN = "xapp-1-A0SIGNOFF-1000000000001-emulator0app0level0token"


@dataclass
class Conversation:
    id: str
    name: str
    members: set[str]
    is_im: bool = False
    dm_user: str | None = None
    is_archived: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)

    def find(self, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["ts"] == ts), None)


@dataclass(frozen=True)
class MessageRef:
    """Where a message lives: what the driver needs to click on it."""

    channel: str
    ts: str


@dataclass(frozen=True)
class ResponseHook:
    """A response_url handed to the app with an interaction or a slash command."""

    id: str
    kind: str  # "actions" | "commands"
    channel_id: str
    user_id: str
    message_ts: str | None = None
    is_ephemeral: bool = False


@dataclass
class _Trigger:
    user_id: str
    issued_at: float
    exchanged: bool = False


class Workspace:
    """A Slack workspace held in memory; thread-safe."""

    def __init__(
        self,
        team: Team,
        app: AppInstallation,
        *,
        clock: Callable[[], float] = time.time,
        trigger_ttl: float = DEFAULT_TRIGGER_TTL,
        app_token: str = DEFAULT_APP_TOKEN,
    ) -> None:
        self.team = team
        self.app = app
        self.app_token = app_token  # the app-level token, for apps.connections.open
        self.clock = clock
        self.trigger_ttl = trigger_ttl
        self._lock = threading.RLock()
        self._users: dict[str, User] = {}
        self._groups: dict[str, UserGroup] = {}
        self._conversations: dict[str, Conversation] = {}
        self._ephemeral: list[dict[str, Any]] = []
        self._triggers: dict[str, _Trigger] = {}
        self._hooks: dict[str, ResponseHook] = {}
        self._last_micros = 0
        self._ids = itertools.count(1)
        self.views = Views(
            team_id=team.id, app_id=app.app_id, bot_id=app.bot_id, lock=self._lock, clock=clock
        )

    # -- directory -----------------------------------------------------------

    def add_user(self, user: User) -> User:
        with self._lock:
            self._users[user.id] = user
            return user

    def add_usergroup(self, group: UserGroup) -> UserGroup:
        with self._lock:
            self._groups[group.id] = group
            return group

    def add_channel(self, channel_id: str, name: str, members: Iterable[str]) -> str:
        with self._lock:
            self._conversations[channel_id] = Conversation(channel_id, name, set(members))
            return channel_id

    def user(self, user_id: str) -> User:
        with self._lock:
            if user_id not in self._users:
                raise SlackApiFailure("user_not_found")
            return self._users[user_id]

    def users(self) -> list[User]:
        with self._lock:
            return list(self._users.values())

    def user_by_email(self, email: str) -> User:
        with self._lock:
            wanted = email.strip().lower()
            for user in self._users.values():
                if user.email and user.email.lower() == wanted:
                    return user
            raise SlackApiFailure("users_not_found")

    def usergroup(self, group_id: str) -> UserGroup:
        with self._lock:
            if group_id not in self._groups:
                raise SlackApiFailure("no_such_subteam")
            return self._groups[group_id]

    # -- conversations -------------------------------------------------------

    def open_dm(self, user_id: str) -> str:
        """The DM channel id between the app and ``user_id``, opening it if needed."""
        with self._lock:
            self.user(user_id)
            dm_id = "D" + user_id[1:]
            if dm_id not in self._conversations:
                self._conversations[dm_id] = Conversation(
                    dm_id, user_id, {user_id, self.app.bot_user_id}, is_im=True, dm_user=user_id
                )
            return dm_id

    def dm_is_open(self, user_id: str) -> bool:
        with self._lock:
            return "D" + user_id[1:] in self._conversations

    def resolve_channel(self, channel: str) -> str:
        """A channel id from an id, a ``#name`` or (for DMs) a user id."""
        with self._lock:
            return self._conversation(channel).id

    def channel_name(self, channel_id: str) -> str:
        with self._lock:
            conversation = self._conversation(channel_id)
            return "directmessage" if conversation.is_im else conversation.name

    def archive_channel(self, channel_id: str) -> None:
        """Archive a channel: posts to it are refused (``is_archived``)."""
        with self._lock:
            self._conversation(channel_id).is_archived = True

    def is_archived(self, channel_id: str) -> bool:
        with self._lock:
            return self._conversation(channel_id).is_archived

    def add_member(self, channel_id: str, user_id: str) -> None:
        """``user_id`` joins the conversation (as an invitation in Slack would)."""
        with self._lock:
            self._conversation(channel_id).members.add(user_id)

    def members(self, channel_id: str) -> set[str]:
        with self._lock:
            return set(self._conversation(channel_id).members)

    def _conversation(self, channel: str) -> Conversation:
        if channel in self._conversations:
            return self._conversations[channel]
        if channel.startswith("U") and channel in self._users:
            return self._conversations[self.open_dm(channel)]
        name = channel.removeprefix("#")
        for conversation in self._conversations.values():
            if not conversation.is_im and conversation.name == name:
                return conversation
        raise SlackApiFailure("channel_not_found")

    # -- messages ------------------------------------------------------------

    def next_ts(self) -> str:
        """A message timestamp, strictly greater than every one issued before."""
        with self._lock:
            micros = max(int(self.clock() * 1_000_000), self._last_micros + 1)
            self._last_micros = micros
            return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def post_message(
        self, channel: str, content: Mapping[str, Any], *, thread_ts: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Store a message from the app's bot; returns (channel id, message)."""
        with self._lock:
            conversation = self._conversation(channel)
            if conversation.is_archived:
                raise SlackApiFailure("is_archived")
            parent = None
            if thread_ts:
                parent = conversation.find(thread_ts)
                if parent is None:
                    raise SlackApiFailure("thread_not_found")
                thread_ts = parent.get("thread_ts", parent["ts"])
                parent = conversation.find(thread_ts)
            message = self._bot_message(content)
            if parent is not None and thread_ts:
                message["thread_ts"] = thread_ts
                message["parent_user_id"] = parent.get("user", "")
                parent["thread_ts"] = thread_ts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["latest_reply"] = message["ts"]
            conversation.messages.append(message)
            return conversation.id, copy.deepcopy(message)

    def update_message(
        self, channel: str, ts: str, content: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        with self._lock:
            conversation = self._conversation(channel)
            message = conversation.find(ts)
            if message is None:
                raise SlackApiFailure("message_not_found")
            if message.get("bot_id") != self.app.bot_id:
                raise SlackApiFailure("cant_update_message")
            _apply_content(message, content)
            message["edited"] = {"user": self.app.bot_user_id, "ts": self.next_ts()}
            return conversation.id, copy.deepcopy(message)

    def delete_message(self, channel: str, ts: str) -> str:
        with self._lock:
            conversation = self._conversation(channel)
            message = conversation.find(ts)
            if message is None:
                raise SlackApiFailure("message_not_found")
            if message.get("bot_id") != self.app.bot_id:
                raise SlackApiFailure("cant_delete_message")
            conversation.messages.remove(message)
            return conversation.id

    def post_ephemeral(
        self,
        channel: str,
        user_id: str,
        content: Mapping[str, Any],
        *,
        thread_ts: str | None = None,
    ) -> str:
        """Store a message only ``user_id`` sees; returns its ``message_ts``."""
        with self._lock:
            conversation = self._conversation(channel)
            self.user(user_id)
            if user_id not in conversation.members:
                raise SlackApiFailure("user_not_in_channel")
            message = self._bot_message(content)
            if thread_ts:
                message["thread_ts"] = thread_ts
            self._ephemeral.append(
                {
                    "channel": conversation.id,
                    "user": user_id,
                    "ts": message["ts"],
                    "message": message,
                }
            )
            return str(message["ts"])

    def replace_ephemeral(self, ts: str, content: Mapping[str, Any]) -> None:
        with self._lock:
            record = self._ephemeral_record(ts)
            _apply_content(record["message"], content)

    def delete_ephemeral(self, ts: str) -> None:
        with self._lock:
            self._ephemeral.remove(self._ephemeral_record(ts))

    def _ephemeral_record(self, ts: str) -> dict[str, Any]:
        for record in self._ephemeral:
            if record["ts"] == ts:
                return record
        raise SlackApiFailure("message_not_found")

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Top-level messages of a conversation, oldest first (thread replies left out)."""
        with self._lock:
            conversation = self._conversation(channel)
            return copy.deepcopy(
                [m for m in conversation.messages if m.get("thread_ts", m["ts"]) == m["ts"]]
            )

    def replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Replies in a thread, oldest first, without the parent."""
        with self._lock:
            conversation = self._conversation(channel)
            return copy.deepcopy(
                [
                    m
                    for m in conversation.messages
                    if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts
                ]
            )

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        with self._lock:
            message = self._conversation(channel).find(ts)
            if message is None:
                raise SlackApiFailure("message_not_found")
            return copy.deepcopy(message)

    def last_message(self, channel: str) -> dict[str, Any] | None:
        """The newest message in a conversation, thread replies included."""
        with self._lock:
            messages = self._conversation(channel).messages
            return copy.deepcopy(messages[-1]) if messages else None

    def ephemeral_messages(self, user_id: str, channel: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages shown to a user: ``{"channel", "user", "ts", "message"}``."""
        with self._lock:
            channel_id = self._conversation(channel).id if channel else None
            return copy.deepcopy(
                [
                    r
                    for r in self._ephemeral
                    if r["user"] == user_id and channel_id in (None, r["channel"])
                ]
            )

    def locate(self, ts: str) -> tuple[str, dict[str, Any], str | None]:
        """(channel id, message, ephemeral owner or None) for a message timestamp."""
        with self._lock:
            for conversation in self._conversations.values():
                message = conversation.find(ts)
                if message is not None:
                    return conversation.id, copy.deepcopy(message), None
            for record in self._ephemeral:
                if record["ts"] == ts:
                    return record["channel"], copy.deepcopy(record["message"]), record["user"]
            raise SlackApiFailure("message_not_found")

    def permalink(self, channel: str, ts: str) -> str:
        with self._lock:
            conversation = self._conversation(channel)
            message = conversation.find(ts)
            if message is None:
                raise SlackApiFailure("message_not_found")
            link = (
                f"https://{self.team.domain}.slack.com/archives/"
                f"{conversation.id}/p{ts.replace('.', '')}"
            )
            thread_ts = message.get("thread_ts")
            if thread_ts and thread_ts != ts:
                link += f"?thread_ts={thread_ts}&cid={conversation.id}"
            return link

    def _bot_message(self, content: Mapping[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "text": "",
            "user": self.app.bot_user_id,
            "bot_id": self.app.bot_id,
            "app_id": self.app.app_id,
            "ts": self.next_ts(),
            "team": self.team.id,
        }
        _apply_content(message, content)
        return message

    # -- triggers and response URLs -----------------------------------------

    def issue_trigger(self, user_id: str) -> str:
        """A trigger_id for an interaction by ``user_id``, usable once within the TTL."""
        with self._lock:
            now = self.clock()
            trigger_id = f"{int(now)}.{next(self._ids)}.{secrets.token_hex(16)}"
            self._triggers[trigger_id] = _Trigger(user_id, now)
            return trigger_id

    def exchange_trigger(self, trigger_id: str) -> str:
        """The user behind a trigger_id, consuming it; Slack's trigger errors otherwise."""
        with self._lock:
            trigger = self._triggers.get(trigger_id)
            if trigger is None:
                raise SlackApiFailure("invalid_trigger_id")
            if trigger.exchanged:
                raise SlackApiFailure("exchanged_trigger_id")
            if self.clock() - trigger.issued_at > self.trigger_ttl:
                raise SlackApiFailure("expired_trigger_id")
            trigger.exchanged = True
            return trigger.user_id

    def register_hook(
        self,
        kind: str,
        channel_id: str,
        user_id: str,
        *,
        message_ts: str | None = None,
        is_ephemeral: bool = False,
    ) -> ResponseHook:
        with self._lock:
            hook = ResponseHook(
                id=f"{next(self._ids)}/{secrets.token_urlsafe(12)}",
                kind=kind,
                channel_id=channel_id,
                user_id=user_id,
                message_ts=message_ts,
                is_ephemeral=is_ephemeral,
            )
            self._hooks[hook.id] = hook
            return hook

    def hook(self, hook_id: str) -> ResponseHook | None:
        with self._lock:
            return self._hooks.get(hook_id)

    # -- inspection ----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything stored, as JSON-ready data (for debugging and the standalone demo)."""
        with self._lock:
            return copy.deepcopy(
                {
                    "team": {"id": self.team.id, "domain": self.team.domain},
                    "conversations": {
                        c.id: {"name": c.name, "messages": c.messages}
                        for c in self._conversations.values()
                    },
                    "ephemeral": self._ephemeral,
                    **self.views.snapshot(),
                }
            )


def _apply_content(message: dict[str, Any], content: Mapping[str, Any]) -> None:
    if "text" in content and content["text"] is not None:
        message["text"] = content["text"]
    if "blocks" in content and content["blocks"] is not None:
        if content["blocks"]:
            message["blocks"] = with_block_ids(list(content["blocks"]))
        else:
            message.pop("blocks", None)
    for key in ("attachments", "metadata"):
        if content.get(key) is not None:
            message[key] = copy.deepcopy(content[key])


TEAM = Team(id="T0SIGNOFF", domain="signoff-dev", name="Signoff Dev")
APP = AppInstallation(
    app_id="A0SIGNOFF",
    bot_user_id="U0SIGNOFFBOT",
    bot_id="B0SIGNOFF01",
    bot_token="xoxb-emulator-signoff-bot-token",
    signing_secret="emulator-signing-secret",
)
ALICE = User(
    id="U0ALICE",
    name="alice",
    real_name="Alice Martin",
    display_name="alice",
    email="alice@signoff.test",
    tz="Europe/Paris",
    title="Approver",
)
BOB = User(
    id="U0BOB",
    name="bob",
    real_name="Bob Chen",
    display_name="bob",
    email="bob@signoff.test",
    tz="America/New_York",
    title="SOC analyst",
)
CAROL = User(
    id="U0CAROL",
    name="carol",
    real_name="Carol Diaz",
    display_name="carol",
    email="carol@signoff.test",
    tz="Europe/London",
    title="Team lead",
)
DAVE = User(
    id="U0DAVE",
    name="dave",
    real_name="Dave Okafor",
    display_name="dave",
    email="dave@signoff.test",
    tz="Asia/Tokyo",
    title="On-call engineer",
)
BOT = User(
    id=APP.bot_user_id,
    name="signoff",
    real_name="Signoff",
    display_name="Signoff",
    is_bot=True,
    bot_id=APP.bot_id,
)
REVIEWS_CHANNEL = "C0REVIEWS"
SOC_L1 = UserGroup("S0SOCL1", "soc-l1", "SOC L1", ("U0ALICE", "U0BOB"))
ONCALL = UserGroup("S0ONCALL", "oncall", "On-call", ("U0DAVE",))


def default_workspace(
    *, clock: Callable[[], float] = time.time, trigger_ttl: float = DEFAULT_TRIGGER_TTL
) -> Workspace:
    """The seeded workspace the tests and the demo share: four people, two groups, #reviews."""
    workspace = Workspace(TEAM, APP, clock=clock, trigger_ttl=trigger_ttl)
    everyone = (ALICE, BOB, CAROL, DAVE, BOT)
    for user in everyone:
        workspace.add_user(user)
    workspace.add_usergroup(SOC_L1)
    workspace.add_usergroup(ONCALL)
    workspace.add_channel(REVIEWS_CHANNEL, "reviews", [u.id for u in everyone])
    return workspace
