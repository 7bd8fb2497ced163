"""The sandbox: a browser page that shows the emulator's workspace as Slack's client would.

:func:`attach_sandbox` adds ``/sandbox`` to a running :class:`SlackEmulator`: a page
(plain HTML, CSS and JavaScript shipped in ``slack_emulator/sandbox/``, no build step)
that renders what the app posted, as one of the workspace's people sees it, and the
small JSON endpoints the page calls. Clicks, modal submissions, slash commands and App
Home visits go to the app through a :class:`SlackDriver`, so the app receives exactly
the signed payloads Slack would send.

====  ============================  ==============================================
GET   /sandbox                      the page
GET   /sandbox/static/{name}        its scripts and stylesheet
GET   /sandbox/api/state            ``?user=U…&since=VERSION``: what that user sees
POST  /sandbox/api/click            ``{user, channel, ts, action_id, block_id?, value?}``
POST  /sandbox/api/view/click       ``{user, view_id, action_id, block_id?, value?}``
POST  /sandbox/api/view/submit      ``{user, view_id, values: {block_id: value}}``
POST  /sandbox/api/view/close       ``{user, view_id}``
POST  /sandbox/api/command          ``{user, channel, command, text}``
POST  /sandbox/api/home             ``{user}``: open the App Home tab
====  ============================  ==============================================

Every POST answers ``{"status", "body", "text"}``: what the app answered Slack with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from slack_emulator.driver import AppResponse, SlackDriver
from slack_emulator.errors import DriverError, SlackApiFailure
from slack_emulator.server import SlackEmulator

PAGE = "index.html"
STATIC = {"sandbox.css": "text/css", "app.js": "text/javascript",
          "blocks.js": "text/javascript", "mrkdwn.js": "text/javascript"}
# The page builds every node with textContent; this policy is the second line of defence.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
MAX_TEXT = 2000
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_GROUP_MENTION = re.compile(r"<!subteam\^(S[A-Z0-9]+)")


@dataclass(frozen=True)
class Panel:
    """A side panel of lines the page shows next to the channel (the demo's run list, a log)."""

    title: str
    lines: Sequence[str]


PanelSource = Callable[[], Sequence[Panel]]


class Sandbox:
    """The sandbox's endpoints over one emulator; the app's Request URL may be set later."""

    def __init__(self, emulator: SlackEmulator, app_url: str | None = None, *,
                 panels: PanelSource | None = None) -> None:
        self.emulator = emulator
        self.panels = panels
        self._app_url = app_url
        self._driver: SlackDriver | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.emulator.base_url}/sandbox"

    @property
    def app_url(self) -> str | None:
        return self._app_url

    @app_url.setter
    def app_url(self, value: str | None) -> None:
        with self._lock:
            self._app_url = value
            if self._driver is not None:
                self._driver.close()
                self._driver = None

    def driver(self) -> SlackDriver:
        with self._lock:
            if self._app_url is None:
                raise DriverError("no app is connected to the sandbox yet (no Request URL)")
            if self._driver is None:
                self._driver = SlackDriver(self.emulator, self._app_url, timeout=15.0)
            return self._driver

    def close(self) -> None:
        self.app_url = None

    # -- what a user sees ------------------------------------------------------------------

    def state(self, user_id: str) -> dict[str, Any]:
        """Everything ``user_id`` sees, as JSON-ready data, with a ``version`` digest."""
        ws = self.emulator.workspace
        me = ws.user(user_id)
        snapshot = ws.snapshot()
        conversations = []
        for conversation_id, stored in snapshot["conversations"].items():
            if user_id not in ws.members(conversation_id):
                continue
            is_im = conversation_id.startswith("D")
            conversations.append({
                "id": conversation_id,
                "name": "Signoff" if is_im else stored["name"],
                "is_im": is_im,
                "messages": _threaded(stored["messages"]),
            })
        state: dict[str, Any] = {
            "team": {"id": ws.team.id, "name": ws.team.name, "domain": ws.team.domain},
            "me": _person(me),
            "users": [_person(u) for u in ws.users()],
            "groups": self._groups(json.dumps(snapshot)),
            "channels": {c["id"]: c["name"] for c in conversations if not c["is_im"]},
            "conversations": conversations,
            "ephemeral": ws.ephemeral_messages(user_id),
            "modals": ws.views.modals(user_id),
            "home": ws.views.home(user_id),
            "panels": [{"title": p.title, "lines": list(p.lines)} for p in self._panels()],
            "connected": self._app_url is not None,
        }
        digest = json.dumps(state, sort_keys=True, default=str).encode()
        state["version"] = hashlib.sha256(digest).hexdigest()[:16]
        return state

    def _groups(self, text: str) -> dict[str, str]:
        groups = {}
        for group_id in sorted(set(_GROUP_MENTION.findall(text))):
            try:
                groups[group_id] = self.emulator.workspace.usergroup(group_id).handle
            except SlackApiFailure:
                continue
        return groups

    def _panels(self) -> Sequence[Panel]:
        if self.panels is None:
            return []
        try:
            return self.panels()
        except Exception as exc:  # a panel is decoration: never let it break the page
            return [Panel("Panels", [f"could not be read: {exc}"])]

    # -- what a user does ------------------------------------------------------------------

    def click(self, body: dict[str, Any]) -> AppResponse:
        return self.driver().click(_text(body, "user"), (_text(body, "channel"), _text(body, "ts")),
                                   _text(body, "action_id"), body.get("value"),
                                   block_id=body.get("block_id") or None)

    def click_in_view(self, body: dict[str, Any]) -> AppResponse:
        return self.driver().click_in_view(_text(body, "user"), _text(body, "view_id"),
                                           _text(body, "action_id"), body.get("value"),
                                           block_id=body.get("block_id") or None)

    def submit_view(self, body: dict[str, Any]) -> AppResponse:
        values = body.get("values") or {}
        if not isinstance(values, dict):
            raise DriverError("values must be an object of block_id to value")
        return self.driver().submit_view(_text(body, "user"), _text(body, "view_id"), values)

    def close_view(self, body: dict[str, Any]) -> AppResponse | None:
        return self.driver().close_view(_text(body, "user"), _text(body, "view_id"))

    def command(self, body: dict[str, Any]) -> AppResponse:
        command = _text(body, "command")
        if not command.startswith("/"):
            raise DriverError("a slash command starts with /")
        return self.driver().slash_command(_text(body, "user"), command,
                                           str(body.get("text") or ""),
                                           _text(body, "channel"))

    def open_home(self, body: dict[str, Any]) -> AppResponse:
        return self.driver().open_app_home(_text(body, "user"))

    # -- HTTP ------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        actions: dict[str, Callable[[dict[str, Any]], AppResponse | None]] = {
            "click": self.click, "view/click": self.click_in_view,
            "view/submit": self.submit_view, "view/close": self.close_view,
            "command": self.command, "home": self.open_home,
        }
        found = [Route("/sandbox", _page, methods=["GET"]),
                 Route("/sandbox/", _page, methods=["GET"]),
                 Route("/sandbox/static/{name}", _static, methods=["GET"]),
                 Route("/sandbox/api/state", self._state_endpoint, methods=["GET"])]
        for path, action in actions.items():
            found.append(Route(f"/sandbox/api/{path}", _action_endpoint(action),
                               methods=["POST"]))
        return found

    async def _state_endpoint(self, request: Request) -> Response:
        refused = _refuse_foreign(request)
        if refused is not None:
            return refused
        user_id = request.query_params.get("user") or "U0ALICE"
        try:
            state = await run_in_threadpool(self.state, user_id)
        except SlackApiFailure as failure:
            return JSONResponse({"error": f"no user {user_id}: {failure.error}"}, status_code=404)
        if request.query_params.get("since") == state["version"]:
            return JSONResponse({"version": state["version"], "unchanged": True})
        return JSONResponse(state)


def attach_sandbox(emulator: SlackEmulator, app_url: str | None = None, *,
                   panels: PanelSource | None = None) -> Sandbox:
    """Serve the sandbox page at ``{emulator.base_url}/sandbox`` (before or after it starts)."""
    sandbox = Sandbox(emulator, app_url, panels=panels)
    # Starlette's router reads its route list on every request, so routes can join late.
    emulator.app.router.routes.extend(sandbox.routes())
    return sandbox


def _action_endpoint(action: Callable[[dict[str, Any]], AppResponse | None]) -> Any:
    async def endpoint(request: Request) -> Response:
        refused = _refuse_foreign(request)
        if refused is not None:
            return refused
        if not request.headers.get("content-type", "").startswith("application/json"):
            # A page elsewhere can send a form or text/plain without asking; JSON needs CORS.
            return JSONResponse({"error": "send JSON (Content-Type: application/json)"},
                                status_code=415)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        try:
            # In a thread: the app calls the emulator back (views.open) before it answers.
            answer = await run_in_threadpool(action, body)
        except (DriverError, SlackApiFailure) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"the app did not answer: {exc}"}, status_code=502)
        if answer is None:
            return JSONResponse({"status": None, "body": None, "text": ""})
        return JSONResponse({"status": answer.status, "body": answer.body,
                             "text": answer.text[:MAX_TEXT]})

    return endpoint


async def _page(request: Request) -> Response:
    return HTMLResponse(_asset(PAGE), headers=_headers())


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(_asset(name), media_type=STATIC[name], headers=_headers())


def _asset(name: str) -> str:
    return resources.files("slack_emulator").joinpath("sandbox", name).read_text("utf-8")


def _refuse_foreign(request: Request) -> Response | None:
    """403 unless the request names a loopback host (no DNS rebinding onto the sandbox)."""
    host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
    if host in LOOPBACK_HOSTS:
        return None
    return JSONResponse({"error": f"the sandbox answers loopback hosts only, not {host!r}"},
                        status_code=403)


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store"}


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise DriverError(f"{name} is required")
    return value


def _person(user: Any) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "real_name": user.real_name,
            "display_name": user.display_name or user.name, "title": user.title,
            "tz": user.tz, "is_bot": user.is_bot}


def _threaded(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Top-level messages, oldest first, each with its thread ``replies`` (oldest first)."""
    top = [dict(m) for m in messages if m.get("thread_ts", m["ts"]) == m["ts"]]
    by_ts = {m["ts"]: m for m in top}
    for message in top:
        message["replies"] = []
    for message in messages:
        parent = by_ts.get(message.get("thread_ts", ""))
        if parent is not None and message["ts"] != parent["ts"]:
            parent["replies"].append(message)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m slack_emulator.sandbox --app-url URL``: the emulator and its sandbox page."""
    parser = argparse.ArgumentParser(prog="python -m slack_emulator.sandbox")
    parser.add_argument("--port", type=int, default=3900)
    parser.add_argument("--app-url", required=True,
                        help="the app's Request URL, e.g. http://127.0.0.1:8000/slack/events")
    args = parser.parse_args(argv)
    emulator = SlackEmulator(port=args.port)
    sandbox = attach_sandbox(emulator, args.app_url)
    emulator.start()
    print(f"Slack API {emulator.api_url}  (SLACK_API_URL; token and signing secret: the dev "
          f"ones in slack_emulator/workspace.py)\nsandbox   {sandbox.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.close()
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
