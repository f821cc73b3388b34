"""The internal API's application: its middleware and the routes of every resource module.

Every route answers JSON (but the support console's static files, ``console``); errors carry
``{"error": {"code", "message"}}``. Each module in ``MODULES`` has ``add_routes(app)`` and
``PATHS`` (its OpenAPI path items, or a function of the services returning them), which
``openapi.py`` merges into ``/openapi.json``.
"""

from __future__ import annotations

from aiohttp import web

from worker.api import (
    checkout,
    console,
    events,
    openapi,
    ops,
    plan_changes,
    plan_options,
    timeline,
    usage_credits,
    workspaces,
)
from worker.api.openapi import DOCUMENTED_PATHS
from worker.http.auth import bearer_auth
from worker.http.hardening import guarded
from worker.http.probes import attach_health
from worker.ops.health import Health
from worker.services import SERVICES, Services

MODULES = (
    openapi,
    workspaces,
    timeline,
    events,
    usage_credits,
    plan_changes,
    plan_options,
    checkout,
    ops,
    console,
)


def create_internal_app(services: Services, health: Health | None = None) -> web.Application:
    """``health``: the process's (its roles decide /readyz); the API's own when None."""
    app = web.Application(client_max_size=64 * 1024, middlewares=[guarded, bearer_auth])
    app[SERVICES] = services
    attach_health(app, services, health, "api")
    app[DOCUMENTED_PATHS] = tuple(getattr(m, "PATHS", {}) for m in MODULES)
    for module in MODULES:
        module.add_routes(app)
    return app
