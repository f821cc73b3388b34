// The support console of billing-worker: plain JavaScript, no build step, no other origin.
// Every datum comes from the internal JSON API with the bearer token the operator typed; the token
// lives in this tab's sessionStorage only (never a URL, a cookie or local storage). Text from the
// API is only ever put into the page as text (textContent), never as HTML.
(function () {
  "use strict";

  const TOKEN_KEY = "billing-worker-console-token";
  const PAGE = 25;
  const WATCH_SECONDS = 60;
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let workspaceId = null;
  let timelineCursor = null;
  let eventsCursor = null;
  let eventsQuery = null;
  let openEventId = null;
  let openRun = null;
  let backfillTimer = null;

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    const init = { method: method, headers: headers, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "network_error", "the server could not be reached (" + e.message + ")");
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const err = data && data.error ? data.error : {};
      const error = new ApiError(
        response.status,
        err.code || "http_" + response.status,
        err.message || "the server answered " + response.status + " " + response.statusText
      );
      if (response.status === 401) {
        signOut();
        error.message = "the token was refused; sign in again with the internal API token";
      }
      throw error;
    }
    return data;
  }

  // A route this server does not have (yet): the router's own 404 or 405, not a resource's 404.
  function routeMissing(e) {
    return e instanceof ApiError && ((e.status === 404 && e.code === "not_found") || e.status === 405);
  }

  function inWords(e) {
    if (e instanceof ApiError) {
      const status = e.status ? e.status + " " : "";
      return e.message + " (" + status + e.code + ")";
    }
    return "the console failed: " + e.message;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== "") q.set(k, v);
    }
    const s = q.toString();
    return s ? "?" + s : "";
  }

  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ the page

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "onclick") node.addEventListener("click", v);
      else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function notify(text, kind) {
    const n = $("notice");
    n.textContent = text;
    n.className = kind || "ok";
    n.hidden = false;
  }

  function fail(what, e) {
    notify(what + ": " + inWords(e), "error");
  }

  function confirmAction(text) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  function text(v) {
    if (v === null || v === undefined || v === "") return "—";
    if (Array.isArray(v)) return v.length ? v.join(", ") : "—";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function bytes(n) {
    if (n === null || n === undefined) return "not reported";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = n;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (i ? v.toFixed(1) : String(v)) + " " + units[i];
  }

  function fill(dl, pairs) {
    dl.replaceChildren();
    for (const [label, value, cls] of pairs) {
      dl.append(el("dt", {}, label), el("dd", cls ? { class: cls } : {}, text(value)));
    }
  }

  function rows(table, items, cells) {
    const body = table.tBodies[0];
    for (const item of items) body.append(el("tr", {}, ...cells(item).map((c) => el("td", {}, c))));
  }

  function show(screen) {
    for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "screen-" + screen;
    for (const b of document.querySelectorAll("#nav [data-screen]")) {
      b.classList.toggle("current", b.dataset.screen === screen);
    }
    if (screen === "dead-letters") listDeadLetters();
    if (screen === "backfill") listBackfills();
  }

  // ------------------------------------------------------------------ sign in

  async function signIn(event) {
    event.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    try {
      await api("GET", "/openapi.json");
    } catch (e) {
      token = "";
      fail("Sign-in failed", e);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    enter();
    notify("Signed in. The token is kept for this tab only.", "ok");
  }

  function enter() {
    $("nav").hidden = false;
    show("workspace");
  }

  function signOut() {
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    $("nav").hidden = true;
    show("sign-in");
  }

  // ------------------------------------------------------------------ workspace

  async function find(event) {
    event.preventDefault();
    const q = $("find-q").value.trim();
    let id = q;
    try {
      id = (await api("GET", "/v1/lookup" + query({ q: q }))).workspace_id;
    } catch (e) {
      if (!routeMissing(e)) return fail("Finding " + q + " failed", e);
      if (/^(cus|sub)_/.test(q)) {
        return notify(
          "Finding a workspace by a customer or subscription id needs GET /v1/lookup, which this " +
            "server does not have yet; enter the workspace id instead.",
          "error"
        );
      }
    }
    await openWorkspace(id);
  }

  async function openWorkspace(id) {
    show("workspace");
    let ws;
    try {
      ws = await api("GET", "/v1/workspaces/" + enc(id));
    } catch (e) {
      return fail("Opening workspace " + id, e);
    }
    workspaceId = id;
    $("find-q").value = id;
    renderWorkspace(ws);
    notify("Workspace " + id + ": " + ws.plan + ", " + ws.status + (ws.blocked ? ", BLOCKED" : ""), "ok");
    await loadTimeline(true);
  }

  function renderWorkspace(ws) {
    $("ws-result").hidden = false;
    $("ws-title").textContent = ws.workspace_id;
    const block = ws.block;
    const pending = ws.pending_plan_change;
    const warnings = $("ws-warnings");
    warnings.replaceChildren();
    if (block) {
      warnings.append(
        el("p", { class: "warning" },
          "Blocked at dunning level " + block.level + " since " + text(block.since) + ": " +
          text(block.reasons) + " (invoices " + text(block.invoice_ids) + "); blocks " + text(block.blocks))
      );
    }
    if (ws.over_seat_limit) {
      warnings.append(el("p", { class: "warning" }, "Over the seat limit: " + ws.members + " members on " + ws.seats + " seats"));
    }
    if (ws.over_storage_quota) {
      warnings.append(el("p", { class: "warning" }, "Over the storage quota: " + bytes(ws.storage_used_bytes) + " used of " + bytes(ws.storage_quota_bytes)));
    }
    fill($("ws-state"), [
      ["Plan", ws.plan + (ws.interval ? ", " + ws.interval : "") + (ws.custom_contract ? " (custom contract)" : "")],
      ["Seats", ws.seats + " (members: " + (ws.members === null || ws.members === undefined ? "not reported" : ws.members) + ")", ws.over_seat_limit ? "warn" : ""],
      ["Status", ws.status + (ws.cancel_at_period_end ? ", cancels at period end" : "")],
      ["Trial ends", ws.trial_end],
      ["Period", ws.period_start || ws.period_end ? text(ws.period_start) + " → " + text(ws.period_end) : null],
      ["Block", block ? "blocked, dunning level " + block.level : "not blocked", block ? "warn" : ""],
      ["Dunning level", ws.dunning_level],
      ["Open invoices", (ws.open_invoices || []).map((i) => i.invoice_id + " " + i.status + " " + i.amount_remaining + " " + i.currency + " (tries " + i.attempt_count + ")")],
      ["Storage", bytes(ws.storage_used_bytes) + " used of " + bytes(ws.storage_quota_bytes) + " (add-on units " + ws.storage_addon_units + ")", ws.over_storage_quota ? "warn" : ""],
      ["AI credits", ws.ai_credit_balance],
      ["Pending plan change", pending ? pending.kind + " " + text(pending.from_plan) + "/" + text(pending.from_interval) + "/" + text(pending.from_seats) + " → " + text(pending.to_plan) + "/" + text(pending.to_interval) + "/" + text(pending.to_seats) + ", " + pending.status + (pending.effective_at ? ", effective " + pending.effective_at : "") + (pending.last_error ? ", last error: " + pending.last_error : "") : null],
      ["Customer", ws.customer_id],
      ["Subscription", ws.subscription_id],
      ["Unknown prices", ws.unknown_price_ids],
      ["Version", ws.version + ", updated " + text(ws.updated_at)],
    ]);
    $("ws-raw").textContent = JSON.stringify(ws, null, 2);
  }

  async function loadTimeline(first) {
    if (first) {
      timelineCursor = null;
      $("tl-table").tBodies[0].replaceChildren();
    }
    $("tl-more").hidden = true;
    let page;
    try {
      page = await api("GET", "/v1/workspaces/" + enc(workspaceId) + "/timeline" + query({ limit: $("tl-limit").value.trim() || PAGE, cursor: timelineCursor }));
    } catch (e) {
      $("tl-message").textContent = routeMissing(e)
        ? "The timeline is not available: this server has no GET /v1/workspaces/{id}/timeline yet."
        : "The timeline could not be read: " + inWords(e);
      if (!routeMissing(e)) fail("Reading the timeline", e);
      return;
    }
    rows($("tl-table"), page.items, (item) => [
      text(item.at),
      item.kind,
      text(item.summary),
      item.kind === "event" ? el("button", { type: "button", class: "link", onclick: () => openEvent(item.id) }, item.id) : text(item.id),
    ]);
    timelineCursor = page.next_cursor || null;
    $("tl-more").hidden = !timelineCursor;
    const shown = $("tl-table").tBodies[0].rows.length;
    $("tl-message").textContent = shown + " entries" + (timelineCursor ? " (older ones: “Older entries”)" : ", the whole history");
  }

  async function reconcile() {
    const id = workspaceId;
    notify("Reconciling " + id + " with Stripe…", "ok");
    let result;
    try {
      result = await api("POST", "/v1/workspaces/" + enc(id) + "/reconcile");
    } catch (e) {
      return fail("Reconcile of " + id + " failed", e);
    }
    notify("Reconciled " + id + ": " + summary(result), "ok");
    await openWorkspaceQuietly(id);
  }

  async function openWorkspaceQuietly(id) {
    try {
      renderWorkspace(await api("GET", "/v1/workspaces/" + enc(id)));
      await loadTimeline(true);
    } catch (e) {
      fail("Refreshing workspace " + id, e);
    }
  }

  function summary(obj) {
    if (obj === null || typeof obj !== "object") return text(obj);
    return Object.entries(obj)
      .map(([k, v]) => k + ": " + (v !== null && typeof v === "object" ? JSON.stringify(v) : text(v)))
      .join("; ");
  }

  // ------------------------------------------------------------------ events

  function eventFilters() {
    return {
      workspace_id: $("ev-workspace").value.trim(),
      type: $("ev-type").value.trim(),
      status: $("ev-status").value,
      since: $("ev-since").value.trim(),
      until: $("ev-until").value.trim(),
      limit: $("ev-limit").value.trim(),
    };
  }

  async function searchEvents(first) {
    if (first) {
      eventsQuery = eventFilters();
      eventsCursor = null;
      $("ev-table").tBodies[0].replaceChildren();
    }
    $("ev-more").hidden = true;
    let page;
    try {
      page = await api("GET", "/v1/events" + query(Object.assign({}, eventsQuery, { cursor: eventsCursor })));
    } catch (e) {
      $("ev-message").textContent = routeMissing(e)
        ? "The event browser is not available: this server has no GET /v1/events yet. Open one event by its id below."
        : "The events could not be listed: " + inWords(e);
      if (!routeMissing(e)) fail("Searching events", e);
      return;
    }
    rows($("ev-table"), page.items, (ev) => [
      el("button", { type: "button", class: "link", onclick: () => openEvent(ev.event_id) }, ev.event_id),
      ev.type,
      ev.status,
      ev.workspace_id ? el("button", { type: "button", class: "link", onclick: () => openWorkspace(ev.workspace_id) }, ev.workspace_id) : "—",
      text(ev.customer_id),
      text(ev.received_at),
      text(ev.attempts),
      text(ev.last_error),
    ]);
    eventsCursor = page.next_cursor || null;
    $("ev-more").hidden = !eventsCursor;
    const shown = $("ev-table").tBodies[0].rows.length;
    $("ev-message").textContent = shown + " events" + (eventsCursor ? " so far (“More” for the next page)" : "");
  }

  async function openEvent(id) {
    show("events");
    $("event-id").value = id;
    let ev;
    try {
      ev = await api("GET", "/v1/events/" + enc(id));
    } catch (e) {
      return fail("Opening event " + id, e);
    }
    openEventId = id;
    renderEvent(ev);
  }

  function renderEvent(ev) {
    $("event-detail").hidden = false;
    fill($("event-fields"), [
      ["Event", ev.event_id],
      ["Type", ev.type],
      ["Status", ev.status + (ev.outcome ? " (" + ev.outcome + ")" : ""), ev.status === "dead" || ev.status === "failed" ? "warn" : ""],
      ["Workspace", ev.workspace_id],
      ["Customer", ev.customer_id],
      ["API version", ev.api_version],
      ["Received", ev.received_at],
      ["Processed", ev.processed_at],
      ["Tries", ev.attempts],
      ["Last error", ev.last_error],
      ["Transitions caused", ev.transitions ? ev.transitions.length : null],
    ]);
    $("event-workspace").hidden = !ev.workspace_id;
    $("event-raw").textContent = JSON.stringify(ev, null, 2);
  }

  async function retryEvent(id, after) {
    if (!(await confirmAction("Retry event " + id + "? It is reset to received and processed again (a no-op if the state already reflects it)."))) {
      return notify("Retry of " + id + " canceled; nothing was changed.", "ok");
    }
    let result;
    try {
      result = await api("POST", "/v1/events/" + enc(id) + "/retry");
    } catch (e) {
      return fail("Retry of " + id + " failed", e);
    }
    notify("Retried " + id + ": it was " + result.previous_status + (result.enqueued ? ", now queued again" : ", a job for it was already queued") + ". Waiting for the worker…", "ok");
    await watch([id], after);
  }

  // Polls the events until none is waiting any more; then says how each ended.
  async function watch(ids, after) {
    const deadline = Date.now() + WATCH_SECONDS * 1000;
    let last = {};
    while (Date.now() < deadline) {
      last = {};
      try {
        for (const id of ids) last[id] = await api("GET", "/v1/events/" + enc(id));
      } catch (e) {
        return fail("Following the retried events", e);
      }
      if (Object.values(last).every((ev) => ev.status !== "received" && ev.status !== "failed")) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const words = Object.values(last).map((ev) => ev.event_id + " " + ev.status + (ev.outcome ? " (" + ev.outcome + ")" : "") + (ev.status === "dead" ? ": " + ev.last_error : ""));
    const waiting = Object.values(last).some((ev) => ev.status === "received" || ev.status === "failed");
    notify((waiting ? "Still waiting after " + WATCH_SECONDS + " s: " : "Done: ") + words.join("; "), waiting ? "error" : "ok");
    if (openEventId && last[openEventId]) renderEvent(last[openEventId]);
    if (after) await after();
  }

  // ------------------------------------------------------------------ dead letters

  async function listDeadLetters() {
    const type = $("dl-type").value.trim();
    let answer;
    try {
      answer = await api("GET", "/v1/dead-letters" + query({ type: type, limit: $("dl-limit").value.trim() }));
    } catch (e) {
      $("dl-summary").textContent = "";
      return fail("Listing dead letters", e);
    }
    const body = $("dl-table").tBodies[0];
    body.replaceChildren();
    rows($("dl-table"), answer.dead_letters, (d) => [
      el("button", { type: "button", class: "link", onclick: () => openEvent(d.event_id) }, d.event_id),
      d.type,
      text(d.last_error),
      text(d.attempts),
      text(d.received_at),
      text(d.workspace_id || d.customer_id),
      el("button", { type: "button", class: "retry", onclick: () => retryEvent(d.event_id, listDeadLetters) }, "Retry…"),
    ]);
    const types = [...new Set(answer.dead_letters.map((d) => d.type))].sort();
    $("dl-types").replaceChildren(...types.map((t) => el("option", { value: t })));
    $("dl-summary").textContent = answer.count
      ? answer.count + " dead letter" + (answer.count === 1 ? "" : "s") + (type ? " of type " + type : "") + ", oldest first"
      : "No dead letters" + (type ? " of type " + type : "") + ".";
  }

  async function retryType() {
    const type = $("dl-type").value.trim();
    if (!type) return notify("Enter the event type whose dead letters to retry (for example invoice.payment_failed).", "error");
    const listed = $("dl-table").tBodies[0].rows.length;
    if (!(await confirmAction("Retry every dead letter of type " + type + " (" + listed + " listed)? Each is reset to received and processed again."))) {
      return notify("Retry of the " + type + " dead letters canceled; nothing was changed.", "ok");
    }
    let result;
    try {
      result = await api("POST", "/v1/dead-letters/retry", { type: type });
    } catch (e) {
      return fail("Retry of the " + type + " dead letters failed", e);
    }
    notify("Retried " + result.retried + " dead letter" + (result.retried === 1 ? "" : "s") + " of type " + type + (result.retried ? ": " + result.event_ids.join(", ") + ". Waiting for the worker…" : "."), "ok");
    if (result.retried) await watch(result.event_ids, listDeadLetters);
    else await listDeadLetters();
  }

  // ------------------------------------------------------------------ backfill

  async function listBackfills() {
    const body = $("bf-table").tBodies[0];
    body.replaceChildren();
    let answer;
    try {
      answer = await api("GET", "/v1/backfill" + query({ limit: PAGE }));
    } catch (e) {
      $("bf-table").hidden = true;
      $("bf-message").textContent = routeMissing(e)
        ? "This server cannot list backfill runs (no GET /v1/backfill); show one by its run id."
        : "The backfill runs could not be listed: " + inWords(e);
      return;
    }
    const runs = answer.runs || answer.items || [];
    $("bf-table").hidden = false;
    rows($("bf-table"), runs, (r) => [
      el("button", { type: "button", class: "link", onclick: () => openBackfill(r.run_id) }, String(r.run_id)),
      r.status, text(r.since), text(r.seen), text(r.inserted), text(r.updated_at), text(r.last_error),
    ]);
    $("bf-message").textContent = runs.length ? runs.length + " most recent runs" : "No backfill runs yet.";
  }

  async function openBackfill(runId) {
    $("bf-run-id").value = runId;
    clearTimeout(backfillTimer);
    let run;
    try {
      run = await api("GET", "/v1/backfill/" + enc(runId));
    } catch (e) {
      return fail("Showing backfill run " + runId, e);
    }
    renderBackfill(run);
  }

  function renderBackfill(run) {
    openRun = run.run_id;
    $("bf-detail").hidden = false;
    fill($("bf-fields"), [
      ["Run", run.run_id],
      ["Status", run.status, run.status === "failed" ? "warn" : ""],
      ["Events since", run.since],
      ["Read so far", run.seen + " events, " + run.inserted + " new to the inbox"],
      ["Cursor", run.cursor],
      ["Started", run.started_at],
      ["Updated", run.updated_at],
      ["Finished", run.finished_at],
      ["Last error", run.last_error],
    ]);
    $("bf-resume").hidden = run.status === "done";
    clearTimeout(backfillTimer);
    if (run.status === "running" && !$("screen-backfill").hidden) {
      backfillTimer = setTimeout(() => openBackfill(run.run_id), 2000);
    }
  }

  async function startBackfill(body, what) {
    if (!(await confirmAction(what + "? Stripe's events API is read from there and the missing events are queued."))) {
      return notify(what + " canceled; nothing was started.", "ok");
    }
    let run;
    try {
      run = await api("POST", "/v1/backfill", body);
    } catch (e) {
      return fail(what + " failed", e);
    }
    notify(what + ": run " + run.run_id + " is " + run.status + " (" + run.seen + " events read so far).", "ok");
    renderBackfill(run);
    await listBackfills();
  }

  // ------------------------------------------------------------------ wiring

  function on(id, type, handler) {
    $(id).addEventListener(type, (event) => {
      Promise.resolve(handler(event)).catch((e) => fail("Unexpected", e));
    });
  }

  function wire() {
    on("sign-in-form", "submit", signIn);
    on("sign-out", "click", () => {
      signOut();
      notify("Signed out; the token is forgotten.", "ok");
    });
    for (const b of document.querySelectorAll("#nav [data-screen]")) {
      on(b.id, "click", () => show(b.dataset.screen));
    }
    on("find-form", "submit", find);
    on("ws-refresh", "click", () => openWorkspace(workspaceId));
    on("ws-reconcile", "click", reconcile);
    on("ws-events", "click", () => {
      show("events");
      $("ev-workspace").value = workspaceId;
      return searchEvents(true);
    });
    on("tl-more", "click", () => loadTimeline(false));
    on("tl-form", "submit", (e) => {
      e.preventDefault();
      return loadTimeline(true);
    });
    on("events-form", "submit", (e) => {
      e.preventDefault();
      return searchEvents(true);
    });
    on("ev-more", "click", () => searchEvents(false));
    on("event-open-form", "submit", (e) => {
      e.preventDefault();
      return openEvent($("event-id").value.trim());
    });
    on("event-retry", "click", () => retryEvent(openEventId));
    on("event-workspace", "click", () => {
      const ws = JSON.parse($("event-raw").textContent).workspace_id;
      return openWorkspace(ws);
    });
    on("dl-form", "submit", (e) => {
      e.preventDefault();
      return listDeadLetters();
    });
    on("dl-retry-type", "click", retryType);
    on("bf-open-form", "submit", (e) => {
      e.preventDefault();
      return openBackfill($("bf-run-id").value.trim());
    });
    on("bf-refresh", "click", () => openBackfill(openRun));
    on("bf-resume", "click", () => startBackfill({ run_id: openRun }, "Resume backfill run " + openRun));
    on("bf-start-form", "submit", (e) => {
      e.preventDefault();
      const since = $("bf-since").value.trim();
      return startBackfill({ since: since }, "Start a backfill since " + since);
    });
    if (token) enter();
    else show("sign-in");
  }

  wire();
})();
