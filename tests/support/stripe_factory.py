"""Build Stripe webhook events as Stripe would POST them, in any of three API-version shapes.

Test helper only. Every builder returns a plain ``dict``: the full event envelope (``id``,
``object``, ``api_version``, ``created``, ``data.object`` [+ ``data.previous_attributes``],
``livemode``, ``pending_webhooks``, ``request``, ``type``) around a full resource object whose
fields follow the stripe/openapi fixture snapshot of that era (see
``tests/fixtures/stripe/README.md``):

* ``2024-06-20`` (``PRE_BASIL``): top-level ``current_period_*``; ``invoice.subscription``,
  ``invoice.subscription_details``; line ``price``/``plan``/``proration``/``type``.
* ``2025-03-31.basil`` (``BASIL``): item-level ``current_period_*``; ``invoice.parent``; line
  ``parent`` and ``pricing``.
* ``2026-09-30.endive`` (``ENDIVE``): basil plus ``status_details``, ``billing_mode``,
  item ``billed_until``/``current_trial`` and other additive fields.

Defaults are deterministic: the same arguments give the same event, and the default event id
is a hash of the *logical* content (everything but ``api_version``), so one logical event built
in the three shapes carries the same id. Timestamps may be unix ints or aware datetimes.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PRE_BASIL = "2024-06-20"
BASIL = "2025-03-31.basil"
ENDIVE = "2026-09-30.endive"
API_VERSIONS = (PRE_BASIL, BASIL, ENDIVE)

Timestamp = int | datetime
DAY = 86_400

SUBSCRIPTION_KINDS = (
    "created",
    "updated",
    "deleted",
    "trial_will_end",
    "paused",
    "resumed",
    "pending_update_applied",
    "pending_update_expired",
)
INVOICE_KINDS = (
    "created",
    "updated",
    "finalized",
    "paid",
    "payment_succeeded",
    "payment_failed",
    "payment_action_required",
    "voided",
    "marked_uncollectible",
)


# --- prices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    id: str
    product: str
    unit_amount: int  # minor units
    interval: str | None = "month"  # None: one-time
    interval_count: int = 1
    nickname: str | None = None
    currency: str = "usd"


def _book(*prices: Price) -> dict[str, Price]:
    return {p.id: p for p in prices}


# The price ids of worker/catalog.example.toml, with plausible amounts (per seat for plans).
PRICES: dict[str, Price] = _book(
    Price("price_plus_monthly", "prod_plus", 1_000, "month", 1, "Plus monthly"),
    Price("price_plus_6m", "prod_plus", 5_400, "month", 6, "Plus 6-month"),
    Price("price_plus_annual", "prod_plus", 9_600, "year", 1, "Plus annual"),
    Price("price_business_monthly", "prod_business", 2_000, "month", 1, "Business monthly"),
    Price("price_business_6m", "prod_business", 10_800, "month", 6, "Business 6-month"),
    Price("price_business_annual", "prod_business", 19_200, "year", 1, "Business annual"),
    Price("price_enterprise_monthly", "prod_enterprise", 4_000, "month", 1, "Enterprise monthly"),
    Price("price_enterprise_annual", "prod_enterprise", 38_400, "year", 1, "Enterprise annual"),
    Price("price_storage_100gb", "prod_storage_100gb", 500, "month", 1, "Storage +100 GB"),
    Price("price_ai_pack_1000", "prod_ai_pack_1000", 1_000, None, 1, "1,000 AI credits"),
    Price("price_ai_pack_5000", "prod_ai_pack_5000", 4_500, None, 1, "5,000 AI credits"),
)
PRICE_CREATED = 1_704_067_200  # 2024-01-01T00:00:00Z: when the catalog prices were created


def price_info(price_id: str) -> Price:
    """The known price, or a monthly 10.00 price on a product derived from the id."""
    return PRICES.get(price_id) or Price(price_id, "prod_" + _hash(price_id, n=14), 1_000)


# --- small helpers --------------------------------------------------------------------------


def ts(value: Timestamp | None) -> int | None:
    """A unix timestamp from an int or an aware datetime (None stays None)."""
    if value is None or isinstance(value, int):
        return value
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: use an aware UTC datetime")
    return int(value.timestamp())


def _ts(value: Timestamp) -> int:
    out = ts(value)
    assert out is not None
    return out


def _hash(*parts: Any, n: int = 24) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).digest()
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    number = int.from_bytes(digest, "big")
    out = []
    while len(out) < n:
        number, rem = divmod(number, 62)
        out.append(alphabet[rem])
    return "".join(out)


def add_months(moment: Timestamp, months: int) -> int:
    """``moment`` plus calendar months, clamping the day (Jan 31 + 1 month = Feb 28/29)."""
    dt = datetime.fromtimestamp(_ts(moment), tz=UTC)
    month0 = dt.month - 1 + months
    year, month = dt.year + month0 // 12, month0 % 12 + 1
    day = dt.day
    while True:
        try:
            return int(dt.replace(year=year, month=month, day=day).timestamp())
        except ValueError:
            day -= 1


def period_end_for(price_id: str, start: Timestamp) -> int:
    price = price_info(price_id)
    months = price.interval_count * (12 if price.interval == "year" else 1)
    return add_months(start, months)


def item_id(sub_id: str, index: int) -> str:
    """The subscription item id of position ``index`` (stable across events of one sub)."""
    return "si_" + _hash("si", sub_id, index, n=14)


def _event_type(prefix: str, kind: str, kinds: Sequence[str]) -> str:
    if kind.startswith(prefix):
        kind = kind[len(prefix) :]
    if kind not in kinds:
        raise ValueError(f"unknown event kind {kind!r} (expected one of {', '.join(kinds)})")
    return prefix + kind


def _check_version(api_version: str) -> None:
    if api_version not in API_VERSIONS:
        raise ValueError(f"api_version must be one of {API_VERSIONS}, got {api_version!r}")


def _basil_or_later(api_version: str) -> bool:
    return api_version != PRE_BASIL


# --- envelope -------------------------------------------------------------------------------


def envelope(
    event_type: str,
    data_object: Mapping[str, Any],
    *,
    api_version: str,
    created: Timestamp,
    event_id: str | None = None,
    previous_attributes: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    request_idempotency_key: str | None = None,
    livemode: bool = False,
    pending_webhooks: int = 1,
    logical: Any = None,
) -> dict[str, Any]:
    """Wrap an object in a Stripe event. ``logical`` feeds the default event id."""
    _check_version(api_version)
    if event_id is None:
        basis = logical if logical is not None else data_object
        event_id = "evt_" + _hash("evt", event_type, _ts(created), basis)
    data: dict[str, Any] = {"object": dict(data_object)}
    if previous_attributes is not None:
        data["previous_attributes"] = dict(previous_attributes)
    return {
        "id": event_id,
        "object": "event",
        "api_version": api_version,
        "created": _ts(created),
        "data": data,
        "livemode": livemode,
        "pending_webhooks": pending_webhooks,
        "request": {"id": request_id, "idempotency_key": request_idempotency_key},
        "type": event_type,
    }


# --- prices and plans as Stripe renders them ------------------------------------------------


def price_object(price_id: str, api_version: str, *, livemode: bool = False) -> dict[str, Any]:
    p = price_info(price_id)
    recurring = None
    if p.interval is not None:
        recurring = {
            "interval": p.interval,
            "interval_count": p.interval_count,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }
        if not _basil_or_later(api_version):
            recurring = {"aggregate_usage": None, **recurring}
    return {
        "id": p.id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": PRICE_CREATED,
        "currency": p.currency,
        "custom_unit_amount": None,
        "livemode": livemode,
        "lookup_key": p.id.removeprefix("price_"),
        "metadata": {},
        "nickname": p.nickname,
        "product": p.product,
        "recurring": recurring,
        "tax_behavior": "exclusive",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if p.interval else "one_time",
        "unit_amount": p.unit_amount,
        "unit_amount_decimal": str(p.unit_amount),
    }


def plan_object(price_id: str, api_version: str, *, livemode: bool = False) -> dict[str, Any] | None:
    """The legacy ``plan`` view of a recurring price (None for one-time prices)."""
    p = price_info(price_id)
    if p.interval is None:
        return None
    plan: dict[str, Any] = {
        "id": p.id,
        "object": "plan",
        "active": True,
        "amount": p.unit_amount,
        "amount_decimal": str(p.unit_amount),
        "billing_scheme": "per_unit",
        "created": PRICE_CREATED,
        "currency": p.currency,
        "interval": p.interval,
        "interval_count": p.interval_count,
        "livemode": livemode,
        "metadata": {},
        "meter": None,
        "nickname": p.nickname,
        "product": p.product,
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }
    if not _basil_or_later(api_version):
        plan["aggregate_usage"] = None
    return plan


# --- subscriptions --------------------------------------------------------------------------


def subscription_object(
    *,
    api_version: str,
    sub_id: str,
    customer: str,
    workspace_id: str | None,
    status: str,
    items: Sequence[tuple[str, int]],
    period_start: Timestamp,
    period_end: Timestamp,
    start_date: Timestamp | None = None,
    trial_start: Timestamp | None = None,
    trial_end: Timestamp | None = None,
    cancel_at_period_end: bool = False,
    cancel_at: Timestamp | None = None,
    canceled_at: Timestamp | None = None,
    ended_at: Timestamp | None = None,
    cancellation_reason: str | None = None,
    custom_contract: bool = False,
    metadata: Mapping[str, str] | None = None,
    billing_cycle_anchor: Timestamp | None = None,
    latest_invoice: str | None = None,
    livemode: bool = False,
    pending_update: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Subscription object in the shape of ``api_version``; ``pending_update`` as made by
    :func:`pending_update_object`.

    ``cancellation_reason`` (``cancellation_details.reason``) defaults to
    ``cancellation_requested`` once a cancellation is requested or done.
    """
    _check_version(api_version)
    basil = _basil_or_later(api_version)
    start = _ts(start_date if start_date is not None else period_start)
    p_start, p_end = _ts(period_start), _ts(period_end)
    anchor = _ts(billing_cycle_anchor if billing_cycle_anchor is not None else p_start)
    meta: dict[str, str] = {}
    if workspace_id is not None:
        meta["workspace_id"] = workspace_id
    if custom_contract:
        meta["custom_contract"] = "true"
    meta.update(metadata or {})
    cancel_ts = ts(cancel_at)
    if cancel_at_period_end and cancel_ts is None:
        cancel_ts = p_end
    canceled_ts = ts(canceled_at)
    requested = cancel_at_period_end or canceled_ts is not None or status == "canceled"

    item_objects = []
    for index, (price_id, quantity) in enumerate(items):
        item: dict[str, Any] = {
            "id": item_id(sub_id, index),
            "object": "subscription_item",
            "created": start,
            "discounts": [],
            "metadata": {},
            "plan": plan_object(price_id, api_version, livemode=livemode),
            "price": price_object(price_id, api_version, livemode=livemode),
            "quantity": quantity,
            "subscription": sub_id,
            "tax_rates": [],
        }
        if basil:
            item["current_period_start"] = p_start
            item["current_period_end"] = p_end
        if api_version in (PRE_BASIL, ENDIVE):
            item["billing_thresholds"] = None
        if api_version == ENDIVE:
            item["billed_until"] = None
            item["current_trial"] = None
        item_objects.append(item)

    sub: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None}
        if basil
        else {"enabled": False, "liability": None},
        "billing_cycle_anchor": anchor,
        "billing_cycle_anchor_config": None,
        "cancel_at": cancel_ts,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_ts,
        "cancellation_details": {
            "comment": None,
            "feedback": None,
            "reason": cancellation_reason or ("cancellation_requested" if requested else None),
        },
        "collection_method": "charge_automatically",
        "created": start,
        "currency": "usd",
        "customer": customer,
        "days_until_due": None,
        "default_payment_method": "pm_" + _hash("pm", customer, n=24),
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": ts(ended_at),
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": item_objects,
            "has_more": False,
            "total_count": len(item_objects),
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": latest_invoice,
        "livemode": livemode,
        "metadata": meta,
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": dict(pending_update) if pending_update is not None else None,
        "schedule": None,
        "start_date": start,
        "status": status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": ts(trial_end),
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": ts(trial_start),
    }
    if not basil:
        sub["billing_thresholds"] = None
        sub["current_period_start"] = p_start
        sub["current_period_end"] = p_end
        sub["discount"] = None
    if api_version == ENDIVE:
        anchor_dt = datetime.fromtimestamp(anchor, tz=UTC)
        sub["billing_cycle_anchor_config"] = {
            "day_of_month": anchor_dt.day,
            "hour": anchor_dt.hour,
            "minute": anchor_dt.minute,
            "month": None,
            "second": anchor_dt.second,
        }
        sub["billing_mode"] = {
            "type": "flexible",
            "flexible": {"proration_discounts": "included"},
            "updated_at": start,
        }
        sub["billing_schedules"] = []
        sub["invoice_settings"] = {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": None,
            "footer": None,
            "issuer": {"type": "self"},
        }
        sub["billing_thresholds"] = None
        sub["customer_account"] = None
        sub["managed_payments"] = {"enabled": False}
        sub["presentment_details"] = None
        sub["status_details"] = (
            {
                "paused": {
                    "subscription": {"type": "trial_end_without_payment_method"},
                    "transitioned_at": p_start,
                    "type": "subscription",
                }
            }
            if status == "paused"
            else None
        )
    return sub


def pending_update_object(
    *,
    api_version: str,
    sub_id: str,
    items: Sequence[tuple[str, int]] | None,
    expires_at: Timestamp,
    trial_end: Timestamp | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    """``subscription.pending_update`` (a ``payment_behavior=pending_if_incomplete`` update whose
    invoice is not paid yet): ``items`` become its ``subscription_items`` (None: unchanged)."""
    _check_version(api_version)
    subscription_items = None
    if items is not None:
        subscription_items = [
            {
                "id": item_id(sub_id, index),
                "object": "subscription_item",
                "metadata": {},
                "plan": plan_object(price_id, api_version, livemode=livemode),
                "price": price_object(price_id, api_version, livemode=livemode),
                "quantity": quantity,
                "subscription": sub_id,
                "tax_rates": [],
            }
            for index, (price_id, quantity) in enumerate(items)
        ]
    update: dict[str, Any] = {
        "billing_cycle_anchor": None,
        "expires_at": _ts(expires_at),
        "subscription_items": subscription_items,
        "trial_end": ts(trial_end),
        "trial_from_plan": None,
    }
    if _basil_or_later(api_version):
        update["discounts"] = None
    if api_version == ENDIVE:
        update["metadata"] = None
    return update


def subscription_event(
    kind: str,
    *,
    api_version: str,
    created: Timestamp,
    livemode: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """A ``customer.subscription.<kind>`` event (kind: created, updated, deleted, …); ``fields``
    are the keyword arguments of :func:`subscription_object` and :func:`envelope`."""
    if "items" in fields:
        fields["items"] = [tuple(i) for i in fields["items"]]
    return _object_event(
        _event_type("customer.subscription.", kind, SUBSCRIPTION_KINDS),
        subscription_object,
        fields,
        api_version=api_version,
        created=created,
        livemode=livemode,
    )


# --- invoices -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One invoice line. ``proration`` lines come from invoice items, others from sub items."""

    price: str | None
    quantity: int
    amount: int
    proration: bool = False
    period_start: Timestamp | None = None
    period_end: Timestamp | None = None
    description: str | None = None


LineSpec = Line | tuple[str | None, int, int] | tuple[str | None, int, int, bool]


def _line(spec: LineSpec) -> Line:
    return spec if isinstance(spec, Line) else Line(*spec)


def invoice_object(
    *,
    api_version: str,
    invoice_id: str,
    customer: str,
    sub_id: str | None,
    workspace_id: str | None,
    status: str,
    amount_due: int,
    amount_paid: int = 0,
    amount_remaining: int | None = None,
    attempt_count: int = 0,
    next_payment_attempt: Timestamp | None = None,
    billing_reason: str | None = "subscription_cycle",
    currency: str = "usd",
    invoice_created: Timestamp,
    status_changed_at: Timestamp | None = None,
    due_date: Timestamp | None = None,
    period_start: Timestamp | None = None,
    period_end: Timestamp | None = None,
    lines: Sequence[LineSpec] = (),
    subscription_metadata: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    uncollectible_reason: str | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    """An Invoice object in the shape of ``api_version``.

    ``status_changed_at`` stamps ``status_transitions`` for the current status (defaults to the
    invoice's ``created`` for finalization, otherwise to ``invoice_created``).
    """
    _check_version(api_version)
    basil = _basil_or_later(api_version)
    created = _ts(invoice_created)
    changed = _ts(status_changed_at if status_changed_at is not None else created)
    remaining = amount_remaining if amount_remaining is not None else max(amount_due - amount_paid, 0)
    sub_meta: dict[str, str] = {}
    if workspace_id is not None:
        sub_meta["workspace_id"] = workspace_id
    sub_meta.update(subscription_metadata or {})
    finalized = status != "draft"
    line_specs = [_line(s) for s in lines]
    subtotal = sum(s.amount for s in line_specs)
    number = "WS" + _hash("number", customer, n=6).upper() + "-" + _hash("n", invoice_id, n=4).upper()
    p_start = _ts(period_start if period_start is not None else created)
    p_end = _ts(period_end if period_end is not None else created)
    pi = "pi_" + _hash("pi", invoice_id, n=24)

    line_objects = [
        _line_object(api_version, invoice_id, sub_id, index, spec, p_start, p_end, currency, livemode)
        for index, spec in enumerate(line_specs)
    ]
    inv: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Example Workspace Inc.",
        "account_tax_ids": None,
        "amount_due": amount_due,
        "amount_paid": amount_paid,
        "amount_remaining": remaining,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": attempt_count,
        "attempted": attempt_count > 0,
        "auto_advance": status in ("draft", "open"),
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "status": None}
        if basil
        else {"enabled": False, "liability": None, "status": None},
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "custom_fields": None,
        "customer": customer,
        "customer_address": None,
        "customer_email": "billing@example.com",
        "customer_name": "Example Workspace",
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": ts(due_date),
        "effective_at": created if finalized else None,
        "ending_balance": 0 if finalized else None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_test/{_hash('h', invoice_id)}"
        if finalized
        else None,
        "invoice_pdf": f"https://pay.stripe.com/invoice/acct_test/{_hash('h', invoice_id)}/pdf"
        if finalized
        else None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": line_objects,
            "has_more": False,
            "total_count": len(line_objects),
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": livemode,
        "metadata": dict(metadata or {}),
        "next_payment_attempt": ts(next_payment_attempt),
        "number": number if finalized else None,
        "on_behalf_of": None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": p_end,
        "period_start": p_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": status,
        "status_transitions": {
            "finalized_at": created if finalized else None,
            "marked_uncollectible_at": changed if status == "uncollectible" else None,
            "paid_at": changed if status == "paid" else None,
            "voided_at": changed if status == "void" else None,
        },
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "test_clock": None,
        "total": subtotal,
        "total_discount_amounts": [],
        "total_excluding_tax": subtotal,
        "webhooks_delivered_at": created,
    }
    if basil:
        inv["amount_overpaid"] = 0
        inv["automatically_finalizes_at"] = None if finalized else created + 3600
        inv["parent"] = (
            {
                "quote_details": None,
                "subscription_details": {
                    "metadata": sub_meta,
                    "subscription": sub_id,
                },
                "type": "subscription_details",
            }
            if sub_id is not None
            else None
        )
        inv["total_pretax_credit_amounts"] = []
        inv["total_taxes"] = []
    else:
        inv["application_fee_amount"] = None
        inv["charge"] = ("ch_" + _hash("ch", invoice_id, n=24)) if status == "paid" else None
        inv["discount"] = None
        inv["paid"] = status == "paid"
        inv["paid_out_of_band"] = False
        inv["payment_intent"] = pi if finalized and amount_due > 0 else None
        inv["quote"] = None
        inv["subscription"] = sub_id
        inv["subscription_details"] = {"metadata": sub_meta if sub_id is not None else None}
        inv["tax"] = None
        inv["total_tax_amounts"] = []
        inv["transfer_data"] = None
    if api_version == ENDIVE:
        inv["automatic_tax"]["provider"] = None
        inv["customer_account"] = None
        inv["status_details"] = (
            {"uncollectible": {"reason": uncollectible_reason or "max_payment_attempts"}}
            if status == "uncollectible"
            else None
        )
    return inv


def _line_object(
    api_version: str,
    invoice_id: str,
    sub_id: str | None,
    index: int,
    spec: Line,
    default_start: int,
    default_end: int,
    currency: str,
    livemode: bool,
) -> dict[str, Any]:
    start = ts(spec.period_start) if spec.period_start is not None else default_start
    end = ts(spec.period_end) if spec.period_end is not None else default_end
    info = price_info(spec.price) if spec.price else None
    if spec.description is not None:
        description = spec.description
    elif info is None:
        description = "Adjustment"
    elif spec.proration:
        verb = "Unused time on" if spec.amount < 0 else "Remaining time on"
        description = f"{verb} {spec.quantity} x {info.nickname or info.id}"
    else:
        description = f"{spec.quantity} x {info.nickname or info.id}"
    from_item = spec.proration or sub_id is None  # prorations are pending invoice items
    invoice_item = "ii_" + _hash("ii", invoice_id, index, n=24) if from_item else None
    sub_item = item_id(sub_id, 0 if spec.proration else index) if sub_id else None
    line: dict[str, Any] = {
        "id": "il_" + _hash("il", invoice_id, index, n=24),
        "object": "line_item",
        "amount": spec.amount,
        "currency": currency,
        "description": description,
        "discount_amounts": [],
        "discountable": not spec.proration,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": livemode,
        "metadata": {},
        "period": {"end": end, "start": start},
        "quantity": spec.quantity,
        "subscription": sub_id,
    }
    if _basil_or_later(api_version):
        if from_item:
            parent: dict[str, Any] = {
                "invoice_item_details": {
                    "invoice_item": invoice_item,
                    "proration": spec.proration,
                    "proration_details": {"credited_items": None},
                    "subscription": sub_id,
                },
                "subscription_item_details": None,
                "type": "invoice_item_details",
            }
        else:
            parent = {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": sub_id,
                    "subscription_item": sub_item,
                },
                "type": "subscription_item_details",
            }
        line["parent"] = parent
        line["pretax_credit_amounts"] = []
        line["pricing"] = {
            "price_details": {"price": info.id, "product": info.product} if info else None,
            "type": "price_details",
            "unit_amount_decimal": str(info.unit_amount) if info else None,
        }
        line["taxes"] = []
        if api_version == ENDIVE:
            line["quantity_decimal"] = str(spec.quantity)
            line["subtotal"] = spec.amount
    else:
        line["amount_excluding_tax"] = spec.amount
        line["invoice_item"] = invoice_item
        line["plan"] = plan_object(spec.price, api_version, livemode=livemode) if spec.price else None
        line["price"] = price_object(spec.price, api_version, livemode=livemode) if spec.price else None
        line["proration"] = spec.proration
        line["proration_details"] = {"credited_items": None}
        line["subscription_item"] = None if from_item else sub_item
        line["tax_amounts"] = []
        line["tax_rates"] = []
        line["type"] = "invoiceitem" if from_item else "subscription"
        line["unit_amount_excluding_tax"] = str(info.unit_amount) if info else None
    return line


def invoice_event(
    kind: str,
    *,
    api_version: str,
    created: Timestamp,
    livemode: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """An ``invoice.<kind>`` event; ``fields`` are the keyword arguments of :func:`invoice_object`
    and :func:`envelope`. ``invoice_created`` and ``status_changed_at`` default to ``created``."""
    if fields.get("invoice_created") is None:
        fields["invoice_created"] = created
    fields.setdefault("status_changed_at", created)
    fields["lines"] = list(fields.get("lines", ()))
    return _object_event(
        _event_type("invoice.", kind, INVOICE_KINDS),
        invoice_object,
        fields,
        api_version=api_version,
        created=created,
        livemode=livemode,
    )


# --- checkout -------------------------------------------------------------------------------


def checkout_session_object(
    *,
    api_version: str,
    session_id: str,
    customer: str | None,
    workspace_id: str | None,
    price_quantities: Sequence[tuple[str, int]],
    created: Timestamp,
    mode: str = "payment",
    payment_status: str = "paid",
    status: str = "complete",
    client_reference_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    metadata_price: bool = True,
    expand_line_items: bool = False,
    livemode: bool = False,
) -> dict[str, Any]:
    """A Checkout Session. Webhooks never include ``line_items``: the purchased price goes in
    ``metadata`` (``price_id``, ``quantity``) unless ``metadata_price`` is False; pass
    ``expand_line_items`` for the shape of a retrieve with ``expand[]=line_items``."""
    _check_version(api_version)
    basil = _basil_or_later(api_version)
    created_ts = _ts(created)
    total = sum(price_info(p).unit_amount * q for p, q in price_quantities)
    meta: dict[str, str] = {}
    if workspace_id is not None:
        meta["workspace_id"] = workspace_id
    if metadata_price and len(price_quantities) == 1:
        meta["price_id"] = price_quantities[0][0]
        meta["quantity"] = str(price_quantities[0][1])
    meta.update(metadata or {})
    session: dict[str, Any] = {
        "id": session_id,
        "object": "checkout.session",
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": total,
        "amount_total": total,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": "https://app.example.com/billing?checkout=cancel",
        "client_reference_id": client_reference_id,
        "client_secret": None,
        "consent": None,
        "consent_collection": None,
        "created": created_ts,
        "currency": "usd",
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer,
        "customer_creation": None if customer else "if_required",
        "customer_details": {
            "address": {
                "city": None,
                "country": "US",
                "line1": None,
                "line2": None,
                "postal_code": "94107",
                "state": None,
            },
            "email": "billing@example.com",
            "name": "Example Workspace",
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "expires_at": created_ts + DAY,
        "invoice": None,
        "invoice_creation": {
            "enabled": False,
            "invoice_data": {
                "account_tax_ids": None,
                "custom_fields": None,
                "description": None,
                "footer": None,
                "issuer": None,
                "metadata": {},
                "rendering_options": None,
            },
        },
        "livemode": livemode,
        "locale": None,
        "metadata": meta,
        "mode": mode,
        "payment_intent": ("pi_" + _hash("pi", session_id, n=24)) if mode == "payment" else None,
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": status,
        "submit_type": None,
        "subscription": None,
        "success_url": "https://app.example.com/billing?checkout=success",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": None if status == "complete" else f"https://checkout.stripe.com/c/pay/{session_id}",
    }
    if basil:
        session["adaptive_pricing"] = {"enabled": False}
        session["collected_information"] = {"shipping_details": None}
        session["discounts"] = []
        session["permissions"] = None
    else:
        session["shipping_details"] = None
    if api_version == ENDIVE:
        session["automatic_tax"] = {"enabled": False, "liability": None, "provider": None, "status": None}
        session["customer_details"]["business_name"] = None
        session["customer_details"]["individual_name"] = None
        session["collected_information"] = {
            "business_name": None,
            "individual_name": None,
            "shipping_details": None,
        }
        session["customer_account"] = None
        session["integration_identifier"] = None
        session["managed_payments"] = {"enabled": False}
        session["origin_context"] = None
        session["wallet_options"] = None
    if expand_line_items:
        data = []
        for index, (price_id, quantity) in enumerate(price_quantities):
            info = price_info(price_id)
            amount = info.unit_amount * quantity
            item: dict[str, Any] = {
                "id": "li_" + _hash("li", session_id, index, n=24),
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": info.currency,
                "description": info.nickname or info.id,
                "price": price_object(price_id, api_version, livemode=livemode),
                "quantity": quantity,
            }
            if api_version == ENDIVE:
                item["adjustable_quantity"] = None
                item["metadata"] = {}
            data.append(item)
        session["line_items"] = {
            "object": "list",
            "data": data,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{session_id}/line_items",
        }
    return session


def checkout_completed_event(
    *,
    api_version: str,
    created: Timestamp,
    livemode: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """A ``checkout.session.completed`` event (AI credit packs are one-time Checkout buys);
    ``fields`` are the keyword arguments of :func:`checkout_session_object` and :func:`envelope`."""
    fields["price_quantities"] = [
        tuple(pq) for pq in fields.get("price_quantities", (("price_ai_pack_1000", 1),))
    ]
    return _object_event(
        "checkout.session.completed",
        checkout_session_object,
        {**fields, "created": created},
        api_version=api_version,
        created=created,
        livemode=livemode,
        not_logical=() if "status" in fields else ("status",),
    )


def _object_event(
    event_type: str,
    make_object: Callable[..., dict[str, Any]],
    fields: Mapping[str, Any],
    *,
    api_version: str,
    created: Timestamp,
    livemode: bool,
    not_logical: Sequence[str] = (),
) -> dict[str, Any]:
    """The event of ``make_object(api_version=api_version, livemode=livemode, **fields)``; the
    fields named in ``ENVELOPE_FIELDS`` go to :func:`envelope` instead. Its default id hashes
    every keyword of ``make_object`` (defaults filled in, ``not_logical`` left out), so the same
    logical event gets the same id in every API version."""
    object_fields = {k: v for k, v in fields.items() if k not in ENVELOPE_FIELDS}
    bound = inspect.signature(make_object).bind(api_version=api_version, livemode=livemode, **object_fields)
    bound.apply_defaults()
    logical = {k: v for k, v in bound.arguments.items() if k != "api_version" and k not in not_logical}
    return envelope(
        event_type,
        make_object(**bound.arguments),
        api_version=api_version,
        created=created,
        livemode=livemode,
        logical=_logical(logical),
        **{k: v for k, v in fields.items() if k in ENVELOPE_FIELDS},
    )


ENVELOPE_FIELDS = ("event_id", "previous_attributes", "request_id", "request_idempotency_key")


def _logical(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The version-independent content of an event, for its default id."""
    return {k: ts(v) if isinstance(v, datetime) else v for k, v in fields.items()}


# --- histories ------------------------------------------------------------------------------

T0 = 1_791_277_200  # 2026-10-06T09:00:00Z


def history_lifecycle(
    *,
    api_version: str = ENDIVE,
    workspace_id: str = "ws_lifecycle",
    customer: str = "cus_Lifecycle0001",
    sub_id: str = "sub_Lifecycle0001",
    start: Timestamp = T0,
    price: str = "price_plus_monthly",
    upgrade_price: str = "price_business_monthly",
    seats: int = 3,
    upgraded_seats: int = 5,
    trial_days: int = 14,
    storage_units: int = 0,
    id_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """One subscription's life, in true order.

    created (trialing) → trial_will_end (3 days before) → updated (active, first paid period)
    → updated (plan change to ``upgrade_price`` with ``upgraded_seats``) → updated
    (``cancel_at_period_end``) → deleted (canceled at the period end). Final state: free plan,
    status ``canceled``. Event ids are ``{id_prefix}_{n:02d}_{label}``; the default prefix is
    derived from the workspace, subscription and start, so histories of different workspaces
    never share an event id (the inbox dedupes on it) while one history rendered in several
    API versions keeps its ids, as Stripe does.
    """
    s = _ts(start)
    if id_prefix is None:
        id_prefix = "evt_" + _hash("lifecycle", workspace_id, sub_id, s, n=12)
    trial_end = s + trial_days * DAY
    period1_end = period_end_for(price, trial_end)
    change_at = trial_end + 10 * DAY
    cancel_req_at = change_at + 5 * DAY

    def items(plan_price: str, qty: int) -> list[tuple[str, int]]:
        out = [(plan_price, qty)]
        if storage_units:
            out.append(("price_storage_100gb", storage_units))
        return out

    common = dict(
        api_version=api_version,
        sub_id=sub_id,
        customer=customer,
        workspace_id=workspace_id,
        start_date=s,
        trial_start=s,
        trial_end=trial_end,
        billing_cycle_anchor=trial_end,
    )
    # previous_attributes of the plan change: the whole prior ``items`` list (Stripe's rule).
    prior_items = subscription_object(
        status="active",
        items=items(price, seats),
        period_start=trial_end,
        period_end=period1_end,
        **common,  # type: ignore[arg-type]
    )["items"]
    events = [
        subscription_event(
            "created",
            created=s,
            status="trialing",
            items=items(price, seats),
            period_start=s,
            period_end=trial_end,
            event_id=f"{id_prefix}_01_created",
            **common,  # type: ignore[arg-type]
        ),
        subscription_event(
            "trial_will_end",
            created=trial_end - 3 * DAY,
            status="trialing",
            items=items(price, seats),
            period_start=s,
            period_end=trial_end,
            event_id=f"{id_prefix}_02_trial_will_end",
            **common,  # type: ignore[arg-type]
        ),
        subscription_event(
            "updated",
            created=trial_end,
            status="active",
            items=items(price, seats),
            period_start=trial_end,
            period_end=period1_end,
            previous_attributes={"status": "trialing"},
            event_id=f"{id_prefix}_03_active",
            **common,  # type: ignore[arg-type]
        ),
        subscription_event(
            "updated",
            created=change_at,
            status="active",
            items=items(upgrade_price, upgraded_seats),
            period_start=trial_end,
            period_end=period1_end,
            previous_attributes={"items": prior_items},
            event_id=f"{id_prefix}_04_plan_change",
            request_id="req_" + _hash("req", sub_id, change_at, n=14),
            request_idempotency_key=f"plan-change-{sub_id}-1",
            **common,  # type: ignore[arg-type]
        ),
        subscription_event(
            "updated",
            created=cancel_req_at,
            status="active",
            items=items(upgrade_price, upgraded_seats),
            period_start=trial_end,
            period_end=period1_end,
            cancel_at_period_end=True,
            canceled_at=cancel_req_at,
            previous_attributes={"cancel_at_period_end": False, "cancel_at": None, "canceled_at": None},
            event_id=f"{id_prefix}_05_cancel_requested",
            **common,  # type: ignore[arg-type]
        ),
        subscription_event(
            "deleted",
            created=period1_end,
            status="canceled",
            items=items(upgrade_price, upgraded_seats),
            period_start=trial_end,
            period_end=period1_end,
            cancel_at_period_end=True,
            canceled_at=cancel_req_at,
            ended_at=period1_end,
            event_id=f"{id_prefix}_06_deleted",
            **common,  # type: ignore[arg-type]
        ),
    ]
    return events


def history_payment_failure(
    *,
    api_version: str = ENDIVE,
    workspace_id: str = "ws_dunning",
    customer: str = "cus_Dunning00001",
    sub_id: str = "sub_Dunning00001",
    invoice_id: str = "in_Dunning00001",
    start: Timestamp = T0,
    price: str = "price_plus_monthly",
    seats: int = 4,
    failures: int = 1,
    retry_days: int = 3,
    outcome: str | None = "paid",
    include_subscription: bool = True,
    id_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """A renewal invoice that fails and then (per ``outcome``) recovers, in true order.

    [sub created (active)] → invoice.created (draft) → invoice.finalized (open) →
    ``failures`` x invoice.payment_failed (open, attempt n, next attempt in ``retry_days``)
    [+ sub updated → past_due after the first failure] → then by ``outcome``:
    ``"paid"``: invoice.paid + invoice.payment_succeeded [+ sub updated → active];
    ``"voided"``: invoice.voided; ``"uncollectible"``: invoice.marked_uncollectible
    [+ sub updated → unpaid]; ``None``: nothing more (still unpaid). Event ids as in
    ``history_lifecycle`` (default prefix derived from workspace, invoice and start).
    """
    if outcome not in ("paid", "voided", "uncollectible", None):
        raise ValueError(f"unknown outcome {outcome!r}")
    s = _ts(start)
    if id_prefix is None:
        id_prefix = "evt_" + _hash("dunning", workspace_id, invoice_id, s, n=12)
    renewal = period_end_for(price, s)
    next_end = period_end_for(price, renewal)
    amount = price_info(price).unit_amount * seats
    lines = [Line(price, seats, amount, period_start=renewal, period_end=next_end)]
    sub_common = dict(
        api_version=api_version,
        sub_id=sub_id,
        customer=customer,
        workspace_id=workspace_id,
        items=[(price, seats)],
        start_date=s,
    )
    inv_common = dict(
        api_version=api_version,
        invoice_id=invoice_id,
        customer=customer,
        sub_id=sub_id,
        workspace_id=workspace_id,
        amount_due=amount,
        billing_reason="subscription_cycle",
        lines=lines,
        invoice_created=renewal,
        period_start=s,
        period_end=renewal,
    )
    n = 0

    def eid(label: str) -> str:
        nonlocal n
        n += 1
        return f"{id_prefix}_{n:02d}_{label}"

    events: list[dict[str, Any]] = []
    if include_subscription:
        events.append(
            subscription_event(
                "created",
                created=s,
                status="active",
                period_start=s,
                period_end=renewal,
                event_id=eid("sub_created"),
                **sub_common,  # type: ignore[arg-type]
            )
        )
    events.append(
        invoice_event(
            "created",
            created=renewal,
            status="draft",
            event_id=eid("invoice_created"),
            **inv_common,  # type: ignore[arg-type]
        )
    )
    finalized_at = renewal + 3600
    events.append(
        invoice_event(
            "finalized",
            created=finalized_at,
            status="open",
            event_id=eid("invoice_finalized"),
            **inv_common,  # type: ignore[arg-type]
        )
    )
    attempt_at = finalized_at
    for attempt in range(1, failures + 1):
        events.append(
            invoice_event(
                "payment_failed",
                created=attempt_at,
                status="open",
                attempt_count=attempt,
                next_payment_attempt=attempt_at + retry_days * DAY,
                event_id=eid(f"payment_failed_{attempt}"),
                **inv_common,  # type: ignore[arg-type]
            )
        )
        if attempt == 1 and include_subscription:
            events.append(
                subscription_event(
                    "updated",
                    created=attempt_at,
                    status="past_due",
                    period_start=renewal,
                    period_end=next_end,
                    latest_invoice=invoice_id,
                    previous_attributes={"status": "active"},
                    event_id=eid("sub_past_due"),
                    **sub_common,  # type: ignore[arg-type]
                )
            )
        attempt_at += retry_days * DAY
    if outcome == "paid":
        for kind in ("paid", "payment_succeeded"):
            events.append(
                invoice_event(
                    kind,
                    created=attempt_at,
                    status="paid",
                    amount_paid=amount,
                    attempt_count=failures + 1,
                    event_id=eid(f"invoice_{kind}"),
                    **inv_common,  # type: ignore[arg-type]
                )
            )
        if include_subscription:
            events.append(
                subscription_event(
                    "updated",
                    created=attempt_at,
                    status="active",
                    period_start=renewal,
                    period_end=next_end,
                    latest_invoice=invoice_id,
                    previous_attributes={"status": "past_due"},
                    event_id=eid("sub_active"),
                    **sub_common,  # type: ignore[arg-type]
                )
            )
    elif outcome == "voided":
        events.append(
            invoice_event(
                "voided",
                created=attempt_at,
                status="void",
                attempt_count=failures,
                event_id=eid("invoice_voided"),
                **inv_common,  # type: ignore[arg-type]
            )
        )
    elif outcome == "uncollectible":
        events.append(
            invoice_event(
                "marked_uncollectible",
                created=attempt_at,
                status="uncollectible",
                attempt_count=failures,
                event_id=eid("invoice_uncollectible"),
                **inv_common,  # type: ignore[arg-type]
            )
        )
        if include_subscription:
            events.append(
                subscription_event(
                    "updated",
                    created=attempt_at,
                    status="unpaid",
                    period_start=renewal,
                    period_end=next_end,
                    latest_invoice=invoice_id,
                    previous_attributes={"status": "past_due"},
                    event_id=eid("sub_unpaid"),
                    **sub_common,  # type: ignore[arg-type]
                )
            )
    return events


def at(value: Timestamp) -> datetime:
    """A unix timestamp as an aware UTC datetime (for assertions)."""
    return datetime.fromtimestamp(_ts(value), tz=UTC)


__all__ = [
    "API_VERSIONS",
    "BASIL",
    "DAY",
    "ENDIVE",
    "PRE_BASIL",
    "PRICES",
    "T0",
    "Line",
    "Price",
    "add_months",
    "at",
    "checkout_completed_event",
    "checkout_session_object",
    "envelope",
    "history_lifecycle",
    "history_payment_failure",
    "invoice_event",
    "invoice_object",
    "item_id",
    "pending_update_object",
    "period_end_for",
    "price_info",
    "price_object",
    "subscription_event",
    "subscription_object",
    "ts",
]
