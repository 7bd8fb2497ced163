"""A stand-in for the EDR and case-management APIs the example workflows call.

It records every request, so the demo can show the approved action actually happening.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class Target:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/cases", self.create_case, methods=["POST"]),
            Route("/cases/{case_id}/comments", self.comment, methods=["POST"]),
            Route("/isolate", self.isolate, methods=["POST"]),
            Route("/log", self.log, methods=["GET"]),
        ])

    async def _record(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        entry = {"method": request.method, "path": request.url.path, "body": body}
        with self._lock:
            self.requests.append(entry)
        print(f"  [target] {request.method} {request.url.path} {json.dumps(body)}", flush=True)
        return entry

    async def create_case(self, request: Request) -> JSONResponse:
        await self._record(request)
        return JSONResponse({"id": f"CASE-{next(self._ids)}"}, status_code=201)

    async def comment(self, request: Request) -> JSONResponse:
        await self._record(request)
        return JSONResponse({"ok": True})

    async def isolate(self, request: Request) -> JSONResponse:
        entry = await self._record(request)
        host = (entry["body"] or {}).get("host")
        return JSONResponse({"isolated": host, "status": "contained"})

    async def log(self, request: Request) -> JSONResponse:
        with self._lock:
            return JSONResponse(list(self.requests))
