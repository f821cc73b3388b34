// The console's Workspace screen: find a workspace by its id, a Stripe customer id or subscription
// id (GET /v1/lookup), its state (GET /v1/workspaces/{id}), Reconcile, and its timeline, newest
// first, paged with the API's opaque cursor (GET /v1/workspaces/{id}/timeline).
import {
  $, api, changesList, el, enc, fail, go, inWords, link, notify, onSubmit, on, query, route, rows, show, summary, text, fill,
} from "./common.js";

const PAGE = 25;
const MATCHED = { customer: "Stripe customer", subscription: "Stripe subscription" };

let workspaceId = null;
let timelineCursor = null;
let timelineLimit = PAGE; // the page size the current listing started with: "Older entries" keeps it

export async function find() {
  const q = $("find-q").value.trim();
  let found;
  try {
    found = await api("GET", "/v1/lookup" + query({ q: q }));
  } catch (e) {
    return fail("Finding " + q + " failed", e);
  }
  const how = MATCHED[found.matched] ? MATCHED[found.matched] + " " + q + " belongs to " : "";
  await openWorkspace(found.workspace_id, how);
}

export async function openWorkspace(id, how) {
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
  notify((how || "") + "Workspace " + id + ": " + ws.plan + ", " + ws.status + (ws.blocked ? ", BLOCKED" : ""), "ok");
  await loadTimeline(true);
}

function warnings(ws) {
  const out = [];
  const block = ws.block;
  if (block) {
    out.push(
      "Blocked at dunning level " + block.level + " since " + text(block.since) + ": " + text(block.reasons) +
        " (invoices " + text(block.invoice_ids) + "); blocks " + text(block.blocks)
    );
  }
  if (ws.over_seat_limit) out.push("Over the seat limit: " + ws.members + " members on " + ws.seats + " seats");
  if (ws.over_storage_quota) {
    out.push("Over the storage quota: " + bytes(ws.storage_used_bytes) + " used of " + bytes(ws.storage_quota_bytes));
  }
  return out.map((w) => el("p", { class: "warning" }, w));
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

function planChange(p) {
  if (!p) return null;
  const from = text(p.from_plan) + "/" + text(p.from_interval) + "/" + text(p.from_seats);
  const to = text(p.to_plan) + "/" + text(p.to_interval) + "/" + text(p.to_seats);
  return (
    p.kind + " " + from + " → " + to + ", " + p.status + (p.effective_at ? ", effective " + p.effective_at : "") +
    (p.last_error ? ", last error: " + p.last_error : "")
  );
}

function renderWorkspace(ws) {
  const block = ws.block;
  $("ws-result").hidden = false;
  $("ws-title").textContent = ws.workspace_id;
  $("ws-warnings").replaceChildren(...warnings(ws));
  const members = ws.members === null || ws.members === undefined ? "not reported" : ws.members;
  const invoices = (ws.open_invoices || []).map(
    (i) => i.invoice_id + " " + i.status + " " + i.amount_remaining + " " + i.currency + " (tries " + i.attempt_count + ")"
  );
  fill($("ws-state"), [
    ["Plan", ws.plan + (ws.interval ? ", " + ws.interval : "") + (ws.custom_contract ? " (custom contract)" : "")],
    ["Seats", ws.seats + " (members: " + members + ")", ws.over_seat_limit ? "warn" : ""],
    ["Status", ws.status + (ws.cancel_at_period_end ? ", cancels at period end" : "")],
    ["Trial ends", ws.trial_end],
    ["Period", ws.period_start || ws.period_end ? text(ws.period_start) + " → " + text(ws.period_end) : null],
    ["Block", block ? "blocked, dunning level " + block.level : "not blocked", block ? "warn" : ""],
    ["Dunning level", ws.dunning_level],
    ["Open invoices", invoices],
    [
      "Storage",
      bytes(ws.storage_used_bytes) + " used of " + bytes(ws.storage_quota_bytes) + " (add-on units " + ws.storage_addon_units + ")",
      ws.over_storage_quota ? "warn" : "",
    ],
    ["AI credits", ws.ai_credit_balance],
    ["Pending plan change", planChange(ws.pending_plan_change)],
    ["Customer", ws.customer_id],
    ["Subscription", ws.subscription_id],
    ["Unknown prices", ws.unknown_price_ids],
    ["Version", ws.version + ", updated " + text(ws.updated_at)],
  ]);
  $("ws-raw").textContent = JSON.stringify(ws, null, 2);
}

// ------------------------------------------------------------------ the timeline

// What one timeline item says, by its kind (docs/support-api.md has the fields of each).
function what(item) {
  if (item.kind === "transition") {
    const cause = item.cause || {};
    const by =
      cause.kind === "event"
        ? el("span", {}, "by event " + text(cause.event_type) + " ", link(cause.id, () => go("event", cause.id)))
        : el("span", {}, "by " + text(cause.kind) + " " + text(cause.id));
    return el("div", {}, el("div", {}, "version " + item.version + " ", by), changesList(item.changes));
  }
  if (item.kind === "event") {
    const outcome = item.outcome && item.outcome !== item.status ? " (" + item.outcome + ")" : "";
    return el(
      "div",
      {},
      item.type + ": ",
      el("span", { class: "status status-" + item.status }, item.status),
      outcome + ", " + text(item.attempts) + " tries" + (item.last_error ? "; last error: " + item.last_error : "")
    );
  }
  if (item.kind === "plan_change") {
    const life = (item.history || []).map((h) => h.status).join(" → ") || item.status;
    const confirmed = item.confirmed_event_id ? "; confirmed by " + item.confirmed_event_id : "";
    return el(
      "div",
      {},
      el("div", {}, item.change_kind + ": " + item.summary),
      el("div", { class: "muted" }, life + confirmed + "; idempotency key " + text(item.idempotency_key) + (item.last_error ? "; last error: " + item.last_error : ""))
    );
  }
  if (item.kind === "credit") {
    const why = [item.reason, item.reference].filter((x) => x).join(", ");
    return el("div", {}, item.summary + (why ? " — " + why : ""));
  }
  return text(item.summary);
}

function itemId(item) {
  if (item.kind === "event") return link(item.id, () => go("event", item.id));
  if (item.kind === "transition") return "v" + item.id;
  return text(item.id);
}

async function loadTimeline(first) {
  const body = $("tl-table").tBodies[0];
  if (first) {
    timelineCursor = null;
    timelineLimit = $("tl-limit").value.trim() || PAGE;
    body.replaceChildren();
  }
  $("tl-more").hidden = true;
  const path = "/v1/workspaces/" + enc(workspaceId) + "/timeline" + query({ limit: timelineLimit, cursor: timelineCursor });
  let page;
  try {
    page = await api("GET", path);
  } catch (e) {
    $("tl-message").textContent = "The timeline could not be read: " + inWords(e);
    return fail("Reading the timeline", e);
  }
  rows($("tl-table"), page.items, (item) => [text(item.at), item.kind, what(item), itemId(item)], (item) => ({
    "data-kind": item.kind,
    "data-id": item.id,
  }));
  timelineCursor = page.next_cursor || null;
  $("tl-more").hidden = !timelineCursor;
  const shown = body.rows.length;
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
  try {
    renderWorkspace(await api("GET", "/v1/workspaces/" + enc(id)));
  } catch (e) {
    return fail("Refreshing workspace " + id, e);
  }
  await loadTimeline(true);
}

export function wireWorkspace() {
  route("workspace", (id) => openWorkspace(id));
  onSubmit("find-form", find);
  on("ws-refresh", "click", () => openWorkspace(workspaceId));
  on("ws-reconcile", "click", reconcile);
  on("ws-events", "click", () => go("workspace-events", workspaceId));
  on("tl-more", "click", () => loadTimeline(false));
  onSubmit("tl-form", () => loadTimeline(true));
}
