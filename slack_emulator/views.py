"""Modals and App Home tabs: the views a workspace's users have in front of them.

Each user has a stack of modals (the root view plus up to two pushed ones, as in
Slack) and at most one Home tab. :class:`Views` shares its workspace's lock.
"""

from __future__ import annotations

import copy
import itertools
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import Any

from slack_emulator.blockkit import with_block_ids
from slack_emulator.errors import SlackApiFailure

MAX_VIEW_STACK = 3

# What the app controls in a view; everything else in a stored view is Slack's.
_APP_FIELDS = (
    "type",
    "title",
    "submit",
    "close",
    "private_metadata",
    "callback_id",
    "clear_on_close",
    "notify_on_close",
    "external_id",
    "submit_disabled",
)


class Views:
    """Every view in a workspace, by id, with each user's modal stack and Home tab."""

    def __init__(
        self,
        *,
        team_id: str,
        app_id: str,
        bot_id: str,
        lock: threading.RLock,
        clock: Callable[[], float],
    ) -> None:
        self._team_id = team_id
        self._app_id = app_id
        self._bot_id = bot_id
        self._lock = lock
        self._clock = clock
        self._views: dict[str, dict[str, Any]] = {}
        self._owner: dict[str, str] = {}
        self._stacks: dict[str, list[str]] = {}
        self._homes: dict[str, str] = {}
        self._ids = itertools.count(1)

    def open(self, user_id: str, view: Mapping[str, Any]) -> dict[str, Any]:
        """Open a modal as the root of a new stack for ``user_id``."""
        with self._lock:
            stored = self._store(user_id, view, previous_view_id=None, root_view_id=None)
            self._stacks[user_id] = [stored["id"]]
            return copy.deepcopy(stored)

    def push(self, user_id: str, view: Mapping[str, Any]) -> dict[str, Any]:
        """Push a modal onto the user's stack (``views.push``, ``response_action: push``)."""
        with self._lock:
            stack = self._stacks.get(user_id)
            if not stack:
                raise SlackApiFailure("not_found")
            if len(stack) >= MAX_VIEW_STACK:
                raise SlackApiFailure("push_limit_reached")
            stored = self._store(user_id, view, previous_view_id=stack[-1], root_view_id=stack[0])
            stack.append(stored["id"])
            return copy.deepcopy(stored)

    def update(
        self,
        view: Mapping[str, Any],
        *,
        view_id: str | None = None,
        external_id: str | None = None,
        hash: str | None = None,
    ) -> dict[str, Any]:
        """Replace a view's content in place, keeping its id; a stale ``hash`` is refused."""
        with self._lock:
            current = self._find(view_id, external_id)
            if hash and hash != current["hash"]:
                raise SlackApiFailure("hash_conflict")
            self._check_external_id(view.get("external_id"), current["id"])
            replaced = self._record(
                view,
                current["id"],
                previous_view_id=current["previous_view_id"],
                root_view_id=current["root_view_id"],
            )
            self._views[current["id"]] = replaced
            return copy.deepcopy(replaced)

    def publish_home(
        self, user_id: str, view: Mapping[str, Any], *, hash: str | None = None
    ) -> dict[str, Any]:
        with self._lock:
            current_id = self._homes.get(user_id)
            if current_id is None:
                stored = self._store(user_id, view, previous_view_id=None, root_view_id=None)
                self._homes[user_id] = stored["id"]
                return copy.deepcopy(stored)
            return self.update(view, view_id=current_id, hash=hash)

    def get(self, view_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._find(view_id, None))

    def owner(self, view_id: str) -> str:
        with self._lock:
            self._find(view_id, None)
            return self._owner[view_id]

    def modals(self, user_id: str) -> list[dict[str, Any]]:
        """The user's modal stack, root first; empty when no modal is open."""
        with self._lock:
            return [copy.deepcopy(self._views[v]) for v in self._stacks.get(user_id, [])]

    def home(self, user_id: str) -> dict[str, Any] | None:
        """The user's App Home view, if the app published one."""
        with self._lock:
            view_id = self._homes.get(user_id)
            return copy.deepcopy(self._views[view_id]) if view_id else None

    def set_state(self, view_id: str, values: Mapping[str, Any]) -> None:
        with self._lock:
            self._find(view_id, None)["state"] = {"values": copy.deepcopy(dict(values))}

    def close(self, view_id: str) -> None:
        """Close a modal and whatever was pushed above it."""
        with self._lock:
            stack = self._stacks.get(self._owner.get(view_id, ""), [])
            if view_id in stack:
                del stack[stack.index(view_id) :]

    def clear_modals(self, user_id: str) -> None:
        with self._lock:
            self._stacks.pop(user_id, None)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(
                {"views": self._views, "modal_stacks": self._stacks, "home_views": self._homes}
            )

    def _store(
        self,
        user_id: str,
        view: Mapping[str, Any],
        *,
        previous_view_id: str | None,
        root_view_id: str | None,
    ) -> dict[str, Any]:
        self._check_external_id(view.get("external_id"), None)
        view_id = f"V0EMU{next(self._ids):06d}"
        stored = self._record(
            view, view_id, previous_view_id=previous_view_id, root_view_id=root_view_id or view_id
        )
        self._views[view_id] = stored
        self._owner[view_id] = user_id
        return stored

    def _record(
        self,
        view: Mapping[str, Any],
        view_id: str,
        *,
        previous_view_id: str | None,
        root_view_id: str,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": view_id,
            "team_id": self._team_id,
            "type": view.get("type", "modal"),
            "blocks": with_block_ids(list(view.get("blocks", []))),
            "private_metadata": "",
            "callback_id": "",
            "state": {"values": {}},
            "hash": f"{int(self._clock())}.{secrets.token_urlsafe(6)}",
            "title": None,
            "clear_on_close": False,
            "notify_on_close": False,
            "close": None,
            "submit": None,
            "previous_view_id": previous_view_id,
            "root_view_id": root_view_id,
            "app_id": self._app_id,
            "external_id": "",
            "app_installed_team_id": self._team_id,
            "bot_id": self._bot_id,
        }
        record.update({k: copy.deepcopy(view[k]) for k in _APP_FIELDS if k in view})
        return record

    def _find(self, view_id: str | None, external_id: str | None) -> dict[str, Any]:
        if view_id and view_id in self._views:
            return self._views[view_id]
        if external_id:
            for stored in self._views.values():
                if stored.get("external_id") == external_id:
                    return stored
        raise SlackApiFailure("not_found")

    def _check_external_id(self, external_id: Any, own_view_id: str | None) -> None:
        if not external_id:
            return
        for stored in self._views.values():
            if stored.get("external_id") == external_id and stored["id"] != own_view_id:
                raise SlackApiFailure("duplicate_external_id")
