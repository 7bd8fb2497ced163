"""A stand-in for the systems the example workflows act on: EDR, cases, mail, IAM, deploys, payments.

It records every request and answers each with something plausible, so the demo can show
the approved action actually happening (printed, and listed on the sandbox page).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_LINE = 160


class Target:
    def __init__(self, *, echo: Callable[[str], None] | None = print) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""  # where it is served, once it is
        self._echo = echo
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/log", self.log, methods=["GET"]),
            Route("/{path:path}", self.act, methods=["POST", "PUT", "PATCH", "DELETE"]),
        ])

    def lines(self) -> list[str]:
        """One line per request received, oldest first: ``POST /isolate {"host": …}``."""
        with self._lock:
            return [_line(entry) for entry in self.requests]

    async def act(self, request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        entry = {"method": request.method, "path": request.url.path, "body": body}
        with self._lock:
            self.requests.append(entry)
            number = next(self._ids)
        if self._echo is not None:
            self._echo(f"  [target] {_line(entry)}")
        status, answer = _answer(request.url.path, body if isinstance(body, dict) else {}, number)
        return JSONResponse(answer, status_code=status)

    async def log(self, request: Request) -> JSONResponse:
        with self._lock:
            return JSONResponse(list(self.requests))


def _answer(path: str, body: dict[str, Any], number: int) -> tuple[int, dict[str, Any]]:
    if path == "/cases":
        return 201, {"id": f"CASE-{number}"}
    if path == "/isolate":
        return 200, {"isolated": body.get("host"), "status": "contained"}
    if path == "/mail/search":
        return 200, {"message_id": body.get("message_id"), "recipients": 37}
    if path == "/grants":
        return 201, {"grant": f"GR-{number}", "expires_in": body.get("expires_in")}
    if path == "/deployments":
        return 201, {"deployment": f"DEP-{number}", "status": "scheduled"}
    if path == "/payouts":
        return 201, {"payout": f"PO-{number}", "status": "paid"}
    return 200, {"ok": True}


def _line(entry: dict[str, Any]) -> str:
    body = "" if entry["body"] is None else " " + json.dumps(entry["body"], ensure_ascii=False)
    line = f"{entry['method']} {entry['path']}{body}"
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"
