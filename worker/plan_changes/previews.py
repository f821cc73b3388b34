"""The Billing page's reads: the available actions (every plan option, decided) and the invoice
preview of one change. One workspace read each; nothing is written; only a preview of an existing
subscription calls Stripe (``invoices.create_preview``)."""

from __future__ import annotations

from typing import Any

from handlers.invoice_preview import catalog_preview, ending_preview, preview_params, summarize
from handlers.plan_options import OptionsRequest, PlanOptions, plan_options
from handlers.plan_policy import AT_PERIOD_END, IMMEDIATE, ChangeRequest, Decision, decide
from handlers.state import WorkspaceState, WorkspaceView
from handlers.view import derive_view
from worker.errors import NotFound, Unavailable
from worker.plan_changes.firing import item_ids
from worker.services import Services
from worker.storage import workspaces


async def load_view(services: Services, workspace_id: str) -> tuple[WorkspaceState, WorkspaceView]:
    """The workspace's state and its view now (one read, no lock)."""
    async with services.pool.acquire() as conn:
        loaded = await workspaces.load_workspace(conn, workspace_id)
    if loaded is None:
        raise NotFound("workspace_not_found", f"no billing state for workspace {workspace_id!r}")
    state, _stored = loaded
    return state, derive_view(state, services.catalog, services.clock())


async def options_for(services: Services, workspace_id: str, request: OptionsRequest) -> PlanOptions:
    _state, view = await load_view(services, workspace_id)
    return plan_options(view, request, services.clock(), services.catalog)


async def preview_change(
    services: Services, workspace_id: str, request: ChangeRequest
) -> tuple[Decision, dict[str, Any] | None]:
    """The decision and, when the change can be made, its invoice preview (None otherwise)."""
    now = services.clock()
    catalog = services.catalog
    state, view = await load_view(services, workspace_id)
    decision = decide(view, request, now, catalog)
    if decision.kind not in (IMMEDIATE, AT_PERIOD_END):
        return decision, None
    if decision.ends_subscription:
        return decision, ending_preview(catalog)
    params = preview_params(
        decision, view, request, catalog, state.customer_id, item_ids(state, catalog), now
    )
    if params is None:  # Free → paid: no subscription to preview, the catalog's price
        return decision, catalog_preview(request, catalog, now)
    if services.stripe is None:
        raise Unavailable("stripe_not_configured", "an invoice preview needs STRIPE_API_KEY")
    invoice = await services.stripe.preview_invoice(params)
    return decision, summarize(invoice, decision, params["subscription_details"].get("proration_date"))
