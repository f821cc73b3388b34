"""The internal API's application: its middleware and the routes of every resource module.

Every route answers JSON (but the support console's static files, ``console``); errors carry
``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

from aiohttp import web

from worker.api import checkout, console, ops, plan_changes, plan_options, usage_credits, workspaces
from worker.api.openapi import DOCUMENTED_PATHS, openapi_json
from worker.http.auth import bearer_auth
from worker.http.hardening import guarded
from worker.http.probes import attach_health
from worker.ops.health import Health
from worker.services import SERVICES, Services


def create_internal_app(services: Services, health: Health | None = None) -> web.Application:
    """``health``: the process's (its roles decide /readyz); the API's own when None."""
    app = web.Application(client_max_size=64 * 1024, middlewares=[guarded, bearer_auth])
    app[SERVICES] = services
    attach_health(app, services, health, "api")
    modules = (workspaces, usage_credits, plan_changes, plan_options, checkout, ops, console)
    app[DOCUMENTED_PATHS] = tuple(getattr(m, "PATHS", {}) for m in modules)
    app.router.add_get("/openapi.json", openapi_json)
    for module in modules:
        module.add_routes(app)
    return app
