"""The support console in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright with ``executable_path``; no browser is downloaded) against the running service.

An operator signs in with the token, finds the workspace a signed ``invoice.payment_failed``
blocked by its Stripe customer and subscription ids, sees the block and the event in its timeline,
pages the whole timeline, reconciles (Stripe is not configured: the error in words), browses the
events with filters, finds the dead letter, retries it and sees it processed in its workspace's
timeline with the transitions it caused, follows a backfill run; wrong input is shown as words
with its code. Rows are matched by exact ids (other tests' rows share the database).
``./scripts/test`` installs ``chromium`` on a fresh machine; a missing browser fails this test, it
never skips.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Browser, Locator, Page, Request, async_playwright, expect

from tests.support import stripe_factory as sf
from tests.support.helpers import TOKEN, RunningService, history_ids, running_service, wait_for
from tests.support.scenarios import orphan_invoice
from worker.config import Settings
from worker.ops import backfill

SLOW = 30_000  # ms: what the worker needs to process a retried event, at most


def chromium_path() -> str:
    path = os.environ.get("BW_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Chromium at {path}: run ./scripts/test as root (it installs Debian's chromium), "
            "or apt-get install chromium, or set BW_TEST_CHROMIUM"
        )
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def service(fast_settings: Settings) -> AsyncIterator[RunningService]:
    """Receiver, internal API and worker; unmatched events are dead-lettered within seconds."""
    async with running_service(fast_settings) as svc:
        yield svc


async def _blocked_workspace(service: RunningService) -> dict[str, str]:
    ids = history_ids("cons")
    invoice_id = f"in_{ids['sub_id']}"
    events = sf.history_payment_failure(**ids, invoice_id=invoice_id, outcome=None)
    for event in events:  # one at a time, in Stripe's order, each signed through the receiver
        await service.deliver(event)
    failed = [e["id"] for e in events if e["type"] == "invoice.payment_failed"]
    assert len(failed) == 1
    assert (await service.workspace(ids["workspace_id"]))["blocked"] is True
    return {**ids, "invoice_id": invoice_id, "failed_event_id": failed[0]}


async def _dead_letter(service: RunningService) -> dict[str, Any]:
    """A failed payment whose customer maps to no workspace: dead after its retries. Then the
    subscription naming the workspace arrives, so a retry can apply it."""
    ids = history_ids("cdl")
    orphan, events = orphan_invoice(ids)
    assert (await service.post_event(orphan))[0] == 200
    await wait_for(lambda: service.event_status(orphan["id"]), lambda s: s == "dead", timeout=30, what="dead")
    await service.deliver(events[0])
    assert await service.event_status(orphan["id"]) == "dead"
    return {"event_id": orphan["id"], "workspace_id": ids["workspace_id"], "created": orphan["created"]}


async def _history(service: RunningService, workspace_id: str) -> list[tuple[str, str]]:
    """The workspace's whole timeline through the API, one page: (kind, id) newest first."""
    status, body = await service.api("GET", f"/v1/workspaces/{workspace_id}/timeline?limit=200")
    assert status == 200 and body["next_cursor"] is None, body
    return [(item["kind"], item["id"]) for item in body["items"]]


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(page: Page, table: str, **data: str) -> Locator:
    """The row of ``table`` whose data-* attributes are exactly these (ids, never loose text)."""
    selector = "".join(f'[data-{k}="{v}"]' for k, v in data.items())
    return page.locator(f"#{table} tbody tr{selector}")


async def _sign_in(page: Page, token: str) -> None:
    await page.fill("#token", token)
    await page.click("#sign-in")


async def _find(page: Page, q: str) -> None:
    await page.click("#nav-workspace")
    await page.fill("#find-q", q)
    await page.click("#find")


async def _find_the_blocked_workspace(page: Page, blocked: dict[str, str]) -> None:
    """By its Stripe customer id, then by its subscription id (GET /v1/lookup); its state and block;
    the failed payment and the transitions in its timeline."""
    notice = page.locator("#notice")
    await page.fill("#find-q", "ws_nobody_there")  # an unknown workspace: the message and its code
    await page.click("#find")
    await expect(notice).to_contain_text("(404 workspace_not_found)")
    for q, matched in ((blocked["customer"], "customer"), (blocked["sub_id"], "subscription")):
        await _find(page, q)
        await expect(page.locator("#ws-title")).to_have_text(blocked["workspace_id"])
        await expect(notice).to_contain_text(
            f"Stripe {matched} {q} belongs to Workspace {blocked['workspace_id']}"
        )
    await expect(page.locator("#ws-warnings")).to_contain_text("Blocked at dunning level")
    await expect(page.locator("#ws-warnings")).to_contain_text(blocked["invoice_id"])
    state = page.locator("#ws-state")
    await expect(state).to_contain_text("plus, monthly")
    await expect(state).to_contain_text("blocked, dunning level")
    await expect(state).to_contain_text(blocked["customer"])
    await expect(state).to_contain_text(blocked["invoice_id"] + " open")
    failed = _row(page, "tl-table", kind="event", id=blocked["failed_event_id"])
    await expect(failed).to_contain_text("invoice.payment_failed: processed")
    await expect(_row(page, "tl-table", kind="transition").first).to_be_visible()


async def _page_the_timeline(page: Page, history: list[tuple[str, str]]) -> None:
    """Three entries a page, "Older entries" until the end: the API's whole history, in its order,
    each entry once. A page size the API refuses: its code in words."""
    message = page.locator("#tl-message")
    await page.fill("#tl-limit", "3")
    await page.click("#tl-reload")
    total = len(history)
    assert total > 3  # more than one page
    for shown in range(3, total, 3):
        await expect(message).to_have_text(re.compile(rf"^{shown} entries \(older ones"))
        await page.click("#tl-more")
    await expect(message).to_have_text(f"{total} entries, the whole history")
    await expect(page.locator("#tl-more")).to_be_hidden()
    listed = await page.eval_on_selector_all(
        "#tl-table tbody tr", "rows => rows.map(r => [r.dataset.kind, r.dataset.id])"
    )
    assert [tuple(r) for r in listed] == history and len(set(history)) == total
    await page.fill("#tl-limit", "0")
    await page.click("#tl-reload")
    await expect(message).to_contain_text("`limit` must be a whole number from 1 to 200 (400 invalid_limit)")
    await expect(page.locator("#notice")).to_contain_text("Reading the timeline: `limit` must be")
    await page.fill("#tl-limit", "25")


async def _browse_events(page: Page, blocked: dict[str, str], dead: dict[str, Any]) -> None:
    """Filters (workspace, type, status) find the failed payment; ``dead`` (with since/until around
    its ``created``) lists the dead letter; a malformed ``since`` is refused in words."""
    await page.click("#nav-events")
    table = page.locator("#ev-table tbody tr")
    await page.fill("#ev-workspace", blocked["workspace_id"])
    await page.fill("#ev-type", "invoice.payment_failed")
    await page.select_option("#ev-status", "processed")
    await page.click("#ev-search")
    await expect(page.locator("#ev-message")).to_have_text("1 event")
    await expect(_row(page, "ev-table", id=blocked["failed_event_id"])).to_contain_text(blocked["customer"])
    await page.fill("#ev-workspace", "")
    await page.select_option("#ev-status", "dead")
    await page.fill("#ev-since", _iso(dead["created"]))
    await page.fill("#ev-until", _iso(dead["created"] + 1))
    await page.fill("#ev-limit", "200")
    await page.click("#ev-search")
    dead_row = _row(page, "ev-table", id=dead["event_id"])
    await expect(dead_row).to_contain_text("unmatched after 3 tries")
    await expect(dead_row.locator("td").nth(2)).to_have_text("dead, unmatched")
    assert await table.count() >= 1
    await page.fill("#ev-since", "yesterday")
    await page.click("#ev-search")
    words = "`since` must be an ISO-8601 time with a zone (400 invalid_since)"
    await expect(page.locator("#ev-message")).to_have_text("The events could not be listed: " + words)
    await expect(page.locator("#notice")).to_contain_text("Searching events: " + words)
    await expect(table).to_have_count(0)


async def _retry_the_dead_letter(page: Page, service: RunningService, dead_id: str) -> None:
    """Listed with its reason; retry-all asks first (canceled: nothing changes); one retry,
    confirmed, followed until the worker has processed it."""
    notice = page.locator("#notice")
    await page.click("#nav-dead-letters")
    await page.fill("#dl-type", "invoice.payment_failed")
    await page.fill("#dl-limit", "1000")  # oldest first: other tests' dead letters come before
    await page.click("#dl-list")
    row = _row(page, "dl-table", id=dead_id)
    await expect(row).to_contain_text("invoice.payment_failed")
    await expect(row).to_contain_text("unmatched after 3 tries")
    await page.click("#dl-retry-type")
    await expect(page.locator("#confirm")).to_be_visible()
    await expect(page.locator("#confirm-text")).to_contain_text(
        "Retry every dead letter of type invoice.payment_failed"
    )
    await page.click("#confirm-cancel")
    await expect(notice).to_contain_text("canceled; nothing was changed")
    assert await service.event_status(dead_id) == "dead"
    await row.locator("button.retry").click()
    await expect(page.locator("#confirm-text")).to_contain_text(f"Retry event {dead_id}")
    await page.click("#confirm-ok")
    await expect(notice).to_contain_text(f"{dead_id} processed (applied)", timeout=SLOW)
    await expect(row).to_have_count(0)
    assert await service.event_status(dead_id) == "processed"


async def _processed_in_its_timeline(page: Page, service: RunningService, dead: dict[str, Any]) -> None:
    """The retried event is processed in its workspace's timeline; its page lists the transitions
    it caused (the same as the API's)."""
    workspace_id, event_id = dead["workspace_id"], dead["event_id"]
    assert (await service.workspace(workspace_id))["blocked"] is True  # the failed payment applied
    status, event = await service.api("GET", f"/v1/events/{event_id}")
    assert status == 200 and event["workspace_id"] == workspace_id and event["desk_status"] == "processed"
    versions = [str(t["version"]) for t in event["transitions"]]
    assert versions
    await _find(page, workspace_id)
    await expect(page.locator("#ws-title")).to_have_text(workspace_id)
    row = _row(page, "tl-table", kind="event", id=event_id)
    await expect(row).to_contain_text("invoice.payment_failed: processed")
    await row.get_by_role("button", name=event_id, exact=True).click()
    await expect(page.locator("#event-fields")).to_contain_text(event_id)
    await expect(page.locator("#event-transitions-message")).to_have_text(
        f"Transitions this event caused: {len(versions)}"
    )
    for version in versions:
        transition = _row(page, "event-transitions", workspace=workspace_id, version=version)
        await expect(transition).to_contain_text(f"v{version}")
    await expect(page.locator("#event-transitions tbody")).to_contain_text("→")
    await expect(page.locator("#event-transitions tbody tr")).to_have_count(len(versions))


async def _follow_a_backfill(page: Page, run_id: int) -> None:
    """Runs listed newest first; one run's progress; a run that does not exist."""
    await page.click("#nav-backfill")
    run_row = _row(page, "bf-table", run=str(run_id))
    await expect(run_row).to_contain_text("running")
    await run_row.locator("button").click()
    await expect(page.locator("#bf-fields")).to_contain_text("7 events, 3 new to the inbox")
    await page.fill("#bf-run-id", "987654321")
    await page.click("#bf-open")
    await expect(page.locator("#notice")).to_contain_text(
        "no backfill run 987654321 (404 backfill_not_found)"
    )


async def test_support_desk_works_the_console_in_a_real_browser(service: RunningService, browser: Browser):
    blocked = await _blocked_workspace(service)
    history = await _history(service, blocked["workspace_id"])
    dead = await _dead_letter(service)
    now, pool = service.services.clock(), service.services.pool
    run_id = await backfill.start_run(pool, now - timedelta(days=1), now)
    await pool.execute("UPDATE backfill_runs SET seen = 7, inserted = 3 WHERE run_id = $1", run_id)

    page = await browser.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r))
    notice = page.locator("#notice")

    answer = await page.goto(f"{service.api_url}/console/")
    assert answer is not None and answer.ok
    assert "script-src 'self'" in answer.headers["content-security-policy"]

    # A wrong token is refused in words; the right one signs in and stays in this tab only.
    await _sign_in(page, "not-the-token")
    await expect(notice).to_contain_text("the token was refused")
    await expect(notice).to_contain_text("401 unauthorized")
    await expect(page.locator("#nav")).to_be_hidden()
    await _sign_in(page, TOKEN)
    await expect(notice).to_contain_text("Signed in")
    await expect(page.locator("#nav")).to_be_visible()
    stored = await page.evaluate("() => [sessionStorage.length, localStorage.length, document.cookie]")
    assert stored == [1, 0, ""]

    await _find_the_blocked_workspace(page, blocked)
    await _page_the_timeline(page, history)

    # Reconcile without STRIPE_API_KEY: the error in words, not a stack trace.
    await page.click("#ws-reconcile")
    await expect(notice).to_contain_text("Reconcile of " + blocked["workspace_id"] + " failed")
    await expect(notice).to_contain_text("STRIPE_API_KEY is not set")
    await expect(notice).to_contain_text("(503 stripe_not_configured)")

    # Bad input on the events screen: words and the code.
    await page.click("#nav-events")
    await page.fill("#event-id", "not-an-event")
    await page.click("#event-open")
    await expect(notice).to_contain_text("event ids look like evt_")
    await expect(notice).to_contain_text("400 invalid_event_id")

    await _browse_events(page, blocked, dead)
    await _retry_the_dead_letter(page, service, dead["event_id"])
    await _processed_in_its_timeline(page, service, dead)
    await _follow_a_backfill(page, run_id)

    # Signing out forgets the token.
    await page.click("#sign-out")
    await expect(page.locator("#screen-sign-in")).to_be_visible()
    assert await page.evaluate("() => sessionStorage.length") == 0

    assert problems == []
    assert all(r.url.startswith(service.api_url + "/") for r in requests), [r.url for r in requests]
    assert not any(TOKEN in r.url for r in requests)
    api_calls = [r for r in requests if "/v1/" in r.url]
    assert api_calls and all(r.headers.get("authorization", "").startswith("Bearer ") for r in api_calls)
    assert {"/v1/lookup", f"/v1/workspaces/{blocked['workspace_id']}/timeline", "/v1/events"} <= {
        r.url.removeprefix(service.api_url).split("?")[0] for r in api_calls
    }
