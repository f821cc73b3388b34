"""A local HTTP server that plays Stripe's API for tests, and records every request.

It speaks the wire format the official SDK uses (form-encoded bodies, bearer key, JSON answers,
Stripe error objects) and keeps Stripe's idempotency rule: the same ``Idempotency-Key`` with the
same parameters replays the first answer; with other parameters it is a 400
``idempotency_error``. Objects live in ``server.objects`` (by id); tests seed and inspect them.
Failures can be injected with ``fail_next``, slow answers with ``hold_next``. Only what the worker
calls is implemented:

    GET    /v1/{customers|subscriptions|invoices}/{id}, /v1/checkout/sessions/{id}
    POST   /v1/subscriptions/{id}          (items, quantity, proration_behavior, cancel_at_period_end, …)
    DELETE /v1/subscriptions/{id}          (cancel now)
    GET    /v1/invoices?customer=&status=&subscription=
    GET    /v1/subscriptions?customer=&status=   (status=all: any status, as Stripe)
    GET    /v1/events?created[gte]=&starting_after=&limit=&types[]=
    POST   /v1/invoices/create_preview (tests/support/stripe_billing.py: checked, priced from
           stripe_factory.PRICES)
    POST   /v1/checkout/sessions       (tests/support/stripe_billing.py: checked; kept in ``sessions``)

Updates are checked too (``proration_date``, ``billing_cycle_anchor``, ``payment_behavior``):
with ``payments_fail = True`` an update sent with ``payment_behavior=pending_if_incomplete`` is
not applied but kept in the subscription's ``pending_update``, as Stripe does when the invoice
of the update is not paid.

Thin events: a test registers each notification it posts (``expect_thin``). A fetch of its related
object must carry what the SDK sends — ``Stripe-Request-Trigger: event=<id>`` of a registered
notification, the path of its ``related_object.url`` and its ``context`` as ``Stripe-Context``
(none when it has none) — else it is answered 400 and noted in ``trigger_errors``. A
``Stripe-Context`` naming an account not in ``accounts`` is answered 403, as Stripe does for an
account the key cannot reach.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.support.services import free_port
from tests.support.stripe_billing import StripeRefusal, check_update, checkout_session, preview_invoice


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, Any]  # nested, as the SDK meant them
    flat: dict[str, str]  # as sent: "items[0][price]" -> "price_x"
    idempotency_key: str | None
    stripe_version: str | None
    authorization: str | None
    stripe_context: str | None = None
    request_trigger: str | None = None
    replayed: bool = False  # answered from the idempotency store, nothing applied
    applied: bool = False  # handled with a 2xx answer (not an injected failure or an error)


@dataclass
class _Failure:
    status: int
    error_type: str
    message: str
    path_pattern: str | None
    skip: int = 0  # matching requests to let through first


@dataclass
class _Hold:
    seconds: float
    path_pattern: str | None


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``a[b][0][c]=v`` pairs into nested dicts/lists, the inverse of Stripe's form encoding."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node: Any = root
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})  # numeric keys become lists in _lists()
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v) for k, v in node.items()}
    return node


class StripeServer:
    def __init__(self, api_key: str = "sk_test_local_stripe_server") -> None:
        self.api_key = api_key
        self.objects: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[Recorded] = []
        self._idempotent: dict[str, tuple[dict[str, str], int, dict[str, Any]]] = {}
        self._failures: list[_Failure] = []
        self._holds: list[_Hold] = []
        self.thin_events: dict[str, dict[str, Any]] = {}  # registered thin notifications, by id
        self.accounts: set[str] = set()  # connected accounts the key may act on (Stripe-Context)
        self.trigger_errors: list[str] = []  # fetches that did not carry what the SDK sends
        self._runner: web.AppRunner | None = None
        self.delay_seconds = 0.0  # hold every answer this much longer (a slow network)
        self.payments_fail = False  # the invoice of an update is not paid (pending_if_incomplete waits)
        self.sessions: dict[str, dict[str, Any]] = {}  # Checkout Sessions created
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> StripeServer:
        app = web.Application()
        app.router.add_route("*", "/v1/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> StripeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ test controls

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[obj["id"]] = copy.deepcopy(obj)
        return obj

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        error_type: str = "api_error",
        message: str = "injected failure",
        path: str | None = None,
        after: int = 0,
    ) -> None:
        """The next ``count`` requests (matching ``path`` regex, if given) fail with ``status``,
        once ``after`` matching requests have succeeded."""
        self._failures.extend(_Failure(status, error_type, message, path, after) for _ in range(count))

    def hold_next(self, count: int = 1, *, seconds: float, path: str | None = None) -> None:
        """The next ``count`` requests (matching ``path`` regex) are answered ``seconds`` late."""
        self._holds.extend(_Hold(seconds, path) for _ in range(count))

    def expect_thin(self, notification: dict[str, Any]) -> None:
        """Register a thin notification a test posts: its related-object fetch is then checked."""
        self.thin_events[notification["id"]] = notification
        if notification.get("context"):
            self.accounts.add(notification["context"])

    def applied(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """The calls that did something: not rejected, not replayed from the idempotency store."""
        return [r for r in self.calls(method, path) if not r.replayed and r.applied]

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or re.fullmatch(path, r.path))
        ]

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self, request: web.Request) -> web.Response:
        body = await request.text()
        flat_pairs = parse_qsl(body, keep_blank_values=True) + parse_qsl(
            request.query_string, keep_blank_values=True
        )
        record = Recorded(
            method=request.method,
            path=request.path,
            params=unflatten(flat_pairs),
            flat=dict(flat_pairs),
            idempotency_key=request.headers.get("Idempotency-Key"),
            stripe_version=request.headers.get("Stripe-Version"),
            authorization=request.headers.get("Authorization"),
            stripe_context=request.headers.get("Stripe-Context"),
            request_trigger=request.headers.get("Stripe-Request-Trigger"),
        )
        self.requests.append(record)
        hold = next(
            (h for h in self._holds if h.path_pattern is None or re.fullmatch(h.path_pattern, request.path)),
            None,
        )
        if hold is not None:
            self._holds.remove(hold)
            await asyncio.sleep(hold.seconds)  # the client may give up first: nothing is answered
        response = await self._answer(request, record)
        if self.delay_seconds:
            # After the work is done: a client that dies meanwhile leaves the update applied, as
            # when a worker is killed between Stripe's answer and its own commit.
            await asyncio.sleep(self.delay_seconds)
        return response

    async def _answer(self, request: web.Request, record: Recorded) -> web.Response:
        if record.authorization != f"Bearer {self.api_key}":
            return self._error(401, "invalid_request_error", "Invalid API Key provided")
        if record.stripe_context is not None and record.stripe_context not in self.accounts:
            return self._error(
                403,
                "invalid_request_error",
                f"The provided key does not have access to {record.stripe_context}",
            )
        if (problem := self._trigger_problem(request.path, record)) is not None:
            self.trigger_errors.append(problem)
            return self._error(400, "invalid_request_error", problem)
        matching = [
            f for f in self._failures if f.path_pattern is None or re.fullmatch(f.path_pattern, request.path)
        ]
        if matching and matching[0].skip > 0:
            for failure in matching:
                failure.skip -= 1
        elif matching:
            self._failures.remove(matching[0])
            return self._error(matching[0].status, matching[0].error_type, matching[0].message)
        key = record.idempotency_key if request.method == "POST" else None
        if key is not None and key in self._idempotent:
            params, status, answer = self._idempotent[key]
            if params != record.flat:
                return self._error(
                    400,
                    "idempotency_error",
                    f"Keys for idempotent requests can only be used with the same parameters they were first used with. Key: {key}",
                )
            record.replayed = True
            return web.json_response(answer, status=status, headers={"Idempotent-Replayed": "true"})
        try:
            status, answer = self._handle(request.method, request.path, record.params, record.idempotency_key)
        except StripeRefusal as refusal:
            status = refusal.status
            answer = self._error_body("invalid_request_error", refusal.message)
            if refusal.param:
                answer["error"]["param"] = refusal.param
        record.applied = status < 300
        if key is not None and status < 500:
            self._idempotent[key] = (record.flat, status, answer)
        return web.json_response(answer, status=status)

    def _trigger_problem(self, path: str, record: Recorded) -> str | None:
        """Why a related-object fetch does not carry what the SDK sends for its notification."""
        if record.request_trigger is None:
            return None
        event_id = record.request_trigger.removeprefix("event=")
        notification = self.thin_events.get(event_id)
        if not record.request_trigger.startswith("event=") or notification is None:
            return f"Stripe-Request-Trigger {record.request_trigger!r} names no notification sent"
        if path != notification["related_object"]["url"]:
            return f"{path} is not the related object of {event_id}"
        if record.stripe_context != (notification.get("context") or None):
            return f"Stripe-Context {record.stripe_context!r} is not the context of {event_id}"
        return None

    def _handle(
        self, method: str, path: str, params: dict[str, Any], key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        if method == "POST" and parts == ["invoices", "create_preview"]:
            return 200, preview_invoice(self.objects, params)
        if method == "POST" and parts == ["checkout", "sessions"]:
            session = checkout_session(params, key)
            self.sessions[session["id"]] = session
            return 200, copy.deepcopy(session)
        if parts[:2] == ["checkout", "sessions"] and len(parts) == 3 and method == "GET":
            session = self.objects.get(parts[2]) or self.sessions.get(parts[2])
            return (200, copy.deepcopy(session)) if session else self._missing("checkout_sessions", parts[2])
        if method == "GET" and len(parts) == 1:
            return self._list(parts[0], params)
        if len(parts) == 2:
            resource, obj_id = parts
            obj = self.objects.get(obj_id)
            if obj is None:
                return self._missing(resource, obj_id)
            if method == "GET":
                return 200, copy.deepcopy(obj)
            if method == "POST" and resource == "subscriptions":
                return 200, self._update_subscription(obj, params)
            if method == "DELETE" and resource == "subscriptions":
                obj.update(status="canceled", canceled_at=int(time.time()), ended_at=int(time.time()))
                return 200, copy.deepcopy(obj)
        return 404, self._error_body("invalid_request_error", f"Unrecognized request URL ({method}: {path})")

    def _update_subscription(self, sub: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        behavior = check_update(params, sub)
        if behavior == "pending_if_incomplete" and self.payments_fail:
            invoice_id = f"in_pending_{len(self.requests)}"
            sub["pending_update"] = {
                "billing_cycle_anchor": None,
                "expires_at": int(time.time()) + 23 * 3600,
                "subscription_items": copy.deepcopy(params.get("items", [])),
                "trial_end": None,
                "trial_from_plan": None,
            }
            sub["latest_invoice"] = invoice_id
            return copy.deepcopy(sub)
        for item in params.get("items", []):
            existing = next((i for i in sub["items"]["data"] if i["id"] == item.get("id")), None)
            if item.get("deleted") == "true" and existing is not None:
                sub["items"]["data"].remove(existing)
                continue
            if existing is None:
                existing = {"id": f"si_{len(self.requests)}", "object": "subscription_item", "quantity": 1}
                sub["items"]["data"].append(existing)
            if "price" in item:
                existing["price"] = {"id": item["price"], "object": "price"}
            if "quantity" in item:
                existing["quantity"] = int(item["quantity"])
        for flag in ("cancel_at_period_end",):
            if flag in params:
                sub[flag] = params[flag] == "true"
        if "metadata" in params:
            sub.setdefault("metadata", {}).update(params["metadata"])
        return copy.deepcopy(sub)

    def _list(self, resource: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        limit = int(params.get("limit", 10))
        if resource == "events":
            items = sorted(self.events, key=lambda e: (e["created"], e["id"]), reverse=True)
            created = params.get("created", {})
            if "gte" in created:
                items = [e for e in items if e["created"] >= int(created["gte"])]
            if "gt" in created:
                items = [e for e in items if e["created"] > int(created["gt"])]
            types = params.get("types") or ([params["type"]] if "type" in params else None)
            if types:
                items = [e for e in items if e["type"] in types]
        else:
            items = [o for o in self.objects.values() if o.get("object") == resource.rstrip("s")]
            for name in ("customer", "status", "subscription"):
                if name in params and not (name == "status" and params[name] == "all"):
                    items = [o for o in items if o.get(name) == params[name]]
            items.sort(key=lambda o: (o.get("created", 0), o["id"]), reverse=True)
        if "starting_after" in params:
            ids = [o["id"] for o in items]
            cut = ids.index(params["starting_after"]) + 1 if params["starting_after"] in ids else len(ids)
            items = items[cut:]
        page = items[:limit]
        return 200, {
            "object": "list",
            "data": copy.deepcopy(page),
            "has_more": len(items) > limit,
            "url": f"/v1/{resource}",
        }

    def _missing(self, resource: str, obj_id: str) -> tuple[int, dict[str, Any]]:
        noun = resource.rstrip("s")
        return 404, self._error_body(
            "invalid_request_error", f"No such {noun}: '{obj_id}'", code="resource_missing"
        )

    @staticmethod
    def _error_body(error_type: str, message: str, code: str | None = None) -> dict[str, Any]:
        return {"error": {"type": error_type, "message": message, **({"code": code} if code else {})}}

    def _error(self, status: int, error_type: str, message: str) -> web.Response:
        return web.Response(
            text=json.dumps(self._error_body(error_type, message)),
            status=status,
            content_type="application/json",
        )
