"""Attack: reach a plug-in's /api route that forgot to name a scope with a token made
for something else. An /api route that names no scope is closed: it needs admin."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.api import WebExtension, build_api, needs_scope
from engine.definition.loader import WorkflowCatalog
from engine.state.tokens import Scope as TokenScope


def export_everything(request: Request) -> Response:
    return JSONResponse({"secrets": "all of them"})


def count_runs(request: Request) -> Response:
    return JSONResponse({"runs": 0})


def test_a_plug_in_route_that_names_no_scope_needs_admin(runtime, served, settings,
                                                         make_token):
    app = build_api(runtime.engine, WorkflowCatalog(settings.workflows_dir),
                    api_token=settings.api_token, extensions=[WebExtension(routes=[
                        Route("/api/plugin/export", export_everything),
                        Route("/api/plugin/count", needs_scope(TokenScope.READ)(count_runs)),
                    ])])
    server = served(app)
    reader = make_token("dashboard", "read,run,decide")
    admin = make_token("ops", "admin")

    with server.client(headers={"Authorization": f"Bearer {reader}"}) as client:
        refused = client.get("/api/plugin/export")
        counted = client.get("/api/plugin/count")
    with server.client(headers={"Authorization": f"Bearer {admin}"}) as client:
        exported = client.get("/api/plugin/export")

    assert refused.status_code == 403
    assert refused.json()["error"] == "missing_scope" and refused.json()["scope"] == "admin"
    assert "secrets" not in refused.text
    assert counted.status_code == 200 and counted.json() == {"runs": 0}
    assert exported.status_code == 200
