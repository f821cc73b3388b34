"""The support console in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright with ``executable_path``; no browser is downloaded) against the running service.

An operator signs in with the token, finds the workspace a signed ``invoice.payment_failed``
blocked and sees the block, reconciles it (Stripe is not configured: the error in words), retries
a dead letter and sees it processed, follows a backfill run; wrong input is shown as words with its code. ``./scripts/test``
installs ``chromium`` on a fresh machine; a missing browser fails this test, it never skips.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from playwright.async_api import Browser, Page, Request, async_playwright, expect

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
    assert any(e["type"] == "invoice.payment_failed" for e in events)
    assert (await service.workspace(ids["workspace_id"]))["blocked"] is True
    return {**ids, "invoice_id": invoice_id}


async def _dead_letter(service: RunningService) -> tuple[str, str]:
    """A failed payment whose customer maps to no workspace: dead after its retries. Then the
    subscription naming the workspace arrives, so a retry can apply it. (event id, workspace id)"""
    ids = history_ids("cdl")
    orphan, events = orphan_invoice(ids)
    assert (await service.post_event(orphan))[0] == 200
    await wait_for(lambda: service.event_status(orphan["id"]), lambda s: s == "dead", timeout=30, what="dead")
    await service.deliver(events[0])
    assert await service.event_status(orphan["id"]) == "dead"
    return orphan["id"], ids["workspace_id"]


async def _sign_in(page: Page, token: str) -> None:
    await page.fill("#token", token)
    await page.click("#sign-in")


async def test_support_desk_works_the_console_in_a_real_browser(service: RunningService, browser: Browser):
    blocked = await _blocked_workspace(service)
    dead_id, dead_workspace = await _dead_letter(service)
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

    # An unknown workspace: the message and its code.
    await page.fill("#find-q", "ws_nobody_there")
    await page.click("#find")
    await expect(notice).to_contain_text("workspace_not_found")

    # The workspace the failed payment blocked: its state, the block, the dunning level, the invoice.
    await page.fill("#find-q", blocked["workspace_id"])
    await page.click("#find")
    await expect(page.locator("#ws-title")).to_have_text(blocked["workspace_id"])
    await expect(page.locator("#ws-warnings")).to_contain_text("Blocked at dunning level")
    await expect(page.locator("#ws-warnings")).to_contain_text(blocked["invoice_id"])
    state = page.locator("#ws-state")
    await expect(state).to_contain_text("plus, monthly")
    await expect(state).to_contain_text("blocked, dunning level")
    await expect(state).to_contain_text(blocked["customer"])
    await expect(state).to_contain_text(blocked["invoice_id"] + " open")

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

    # Dead letters: the one parked, with its reason.
    await page.click("#nav-dead-letters")
    row = page.locator("#dl-table tbody tr", has_text=dead_id)
    await expect(row).to_contain_text("invoice.payment_failed")
    await expect(row).to_contain_text("unmatched after 3 tries")

    # Retrying all of a type asks first; canceling changes nothing.
    await page.fill("#dl-type", "invoice.payment_failed")
    await page.click("#dl-retry-type")
    await expect(page.locator("#confirm")).to_be_visible()
    await expect(page.locator("#confirm-text")).to_contain_text(
        "Retry every dead letter of type invoice.payment_failed"
    )
    await page.click("#confirm-cancel")
    await expect(notice).to_contain_text("canceled; nothing was changed")
    assert await service.event_status(dead_id) == "dead"

    # Retry the one dead letter: confirmed, then followed until the worker has processed it.
    await row.locator("button.retry").click()
    await expect(page.locator("#confirm-text")).to_contain_text(f"Retry event {dead_id}")
    await page.click("#confirm-ok")
    await expect(notice).to_contain_text(f"{dead_id} processed (applied)", timeout=SLOW)
    await expect(page.locator("#dl-table")).not_to_contain_text(dead_id)
    assert await service.event_status(dead_id) == "processed"
    assert (await service.workspace(dead_workspace))["blocked"] is True  # the failed payment applied

    # Backfill runs: listed newest first; one run's progress; a run that does not exist.
    await page.click("#nav-backfill")
    # The run's row by its id cell exactly (another test's run may be listed too).
    run_row = page.locator("#bf-table tbody tr").filter(
        has=page.locator("td:first-child", has_text=re.compile(rf"^{run_id}$"))
    )
    await expect(run_row).to_contain_text("running")
    await run_row.locator("button").click()
    await expect(page.locator("#bf-fields")).to_contain_text("7 events, 3 new to the inbox")
    await page.fill("#bf-run-id", "987654321")
    await page.click("#bf-open")
    await expect(notice).to_contain_text("no backfill run 987654321 (404 backfill_not_found)")

    # Signing out forgets the token.
    await page.click("#sign-out")
    await expect(page.locator("#screen-sign-in")).to_be_visible()
    assert await page.evaluate("() => sessionStorage.length") == 0

    assert problems == []
    assert all(r.url.startswith(service.api_url + "/") for r in requests), [r.url for r in requests]
    assert not any(TOKEN in r.url for r in requests)
    api_calls = [r for r in requests if "/v1/" in r.url]
    assert api_calls and all(r.headers.get("authorization", "").startswith("Bearer ") for r in api_calls)
