"""The internal API's application: its middleware and the routes of every resource module.

Every route answers JSON; errors carry ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

from aiohttp import web

from worker.api import checkout, ops, plan_changes, plan_options, usage_credits, workspaces
from worker.api.openapi import DOCUMENTED_PATHS, openapi_json
from worker.http.auth import bearer_auth
from worker.http.hardening import guarded
from worker.services import SERVICES, Services


def create_internal_app(services: Services) -> web.Application:
    app = web.Application(client_max_size=64 * 1024, middlewares=[guarded, bearer_auth])
    app[SERVICES] = services
    modules = (workspaces, usage_credits, plan_changes, plan_options, checkout, ops)
    app[DOCUMENTED_PATHS] = tuple(getattr(m, "PATHS", {}) for m in modules)
    app.router.add_get("/openapi.json", openapi_json)
    for module in modules:
        module.add_routes(app)
    return app
