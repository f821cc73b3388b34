// The console's Events and Dead letters screens: the event browser (GET /v1/events with filters,
// newest first, paged by cursor), one event with the transitions it caused (GET /v1/events/{id}),
// dead letters with their reason, and Retry (one, or all of a type), each confirmed first and
// followed until the worker has processed it.
import {
  $, api, changesList, confirmAction, el, enc, fail, fill, go, inWords, link, notify, on, onEnter, onSubmit, query, route,
  rows, show, text,
} from "./common.js";

const WATCH_SECONDS = 60;
const WAITING = new Set(["received", "failed", "unmatched"]); // inbox statuses the worker comes back to

let eventsCursor = null;
let eventsQuery = null;
let openEventId = null;
let openEventWorkspace = null;

// ------------------------------------------------------------------ the event browser

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

// The browser's status (`stale`: processed but changed nothing) and, when it differs, the inbox's.
function deskStatus(status, inboxStatus, outcome) {
  const inbox = inboxStatus && inboxStatus !== status ? " (inbox: " + inboxStatus + ")" : "";
  const why = outcome && outcome !== status && outcome !== inboxStatus ? ", " + outcome : "";
  return status + inbox + why;
}

async function searchEvents(first) {
  const body = $("ev-table").tBodies[0];
  if (first) {
    eventsQuery = eventFilters();
    eventsCursor = null;
    body.replaceChildren();
  }
  $("ev-more").hidden = true;
  let page;
  try {
    page = await api("GET", "/v1/events" + query(Object.assign({}, eventsQuery, { cursor: eventsCursor })));
  } catch (e) {
    $("ev-message").textContent = "The events could not be listed: " + inWords(e);
    return fail("Searching events", e);
  }
  rows(
    $("ev-table"),
    page.items,
    (ev) => [
      link(ev.event_id, () => openEvent(ev.event_id)),
      ev.type,
      deskStatus(ev.status, ev.inbox_status, ev.outcome),
      ev.workspace_id ? link(ev.workspace_id, () => go("workspace", ev.workspace_id)) : "—",
      text(ev.customer_id),
      text(ev.created),
      text(ev.attempts),
      text(ev.last_error),
    ],
    (ev) => ({ "data-id": ev.event_id })
  );
  eventsCursor = page.next_cursor || null;
  $("ev-more").hidden = !eventsCursor;
  const shown = body.rows.length;
  const more = eventsCursor ? " so far (“More” for the next page)" : "";
  $("ev-message").textContent = shown + (shown === 1 ? " event" : " events") + more;
}

function workspaceEvents(workspaceId) {
  show("events");
  for (const id of ["ev-type", "ev-status", "ev-since", "ev-until"]) $(id).value = "";
  $("ev-workspace").value = workspaceId;
  return searchEvents(true);
}

// ------------------------------------------------------------------ one event

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
  const status = ev.desk_status || ev.status;
  openEventWorkspace = ev.workspace_id || null;
  $("event-detail").hidden = false;
  fill($("event-fields"), [
    ["Event", ev.event_id],
    ["Type", ev.type],
    ["Status", deskStatus(status, ev.status, ev.outcome), status === "dead" || status === "failed" ? "warn" : ""],
    ["Workspace", ev.workspace_id],
    ["Customer", ev.customer_id],
    ["API version", ev.api_version],
    ["Created (Stripe)", ev.created],
    ["Received", ev.received_at],
    ["Processed", ev.processed_at],
    ["Tries", ev.attempts],
    ["Last error", ev.last_error],
  ]);
  const transitions = ev.transitions || [];
  const table = $("event-transitions");
  table.tBodies[0].replaceChildren();
  rows(
    table,
    transitions,
    (t) => [link(t.workspace_id, () => go("workspace", t.workspace_id)), "v" + t.version, text(t.effective_at), changesList(t.changes)],
    (t) => ({ "data-workspace": t.workspace_id, "data-version": String(t.version) })
  );
  table.hidden = !transitions.length;
  $("event-transitions-message").textContent = transitions.length
    ? "Transitions this event caused: " + transitions.length
    : "This event caused no transition" + (status === "processed" || status === "stale" ? " (it changed nothing)." : " (yet).");
  $("event-workspace").hidden = !openEventWorkspace;
  $("event-raw").textContent = JSON.stringify(ev, null, 2);
}

async function retryEvent(id, after) {
  const question = "Retry event " + id + "? It is reset to received and processed again (a no-op if the state already reflects it).";
  if (!(await confirmAction(question))) return notify("Retry of " + id + " canceled; nothing was changed.", "ok");
  let result;
  try {
    result = await api("POST", "/v1/events/" + enc(id) + "/retry");
  } catch (e) {
    return fail("Retry of " + id + " failed", e);
  }
  const queued = result.enqueued ? ", now queued again" : ", a job for it was already queued";
  notify("Retried " + id + ": it was " + result.previous_status + queued + ". Waiting for the worker…", "ok");
  await watch([id], after);
}

// Polls the events until none is waiting any more; then says how each ended (the inbox's status).
async function watch(ids, after) {
  const deadline = Date.now() + WATCH_SECONDS * 1000;
  let last = {};
  for (;;) {
    last = {};
    try {
      for (const id of ids) last[id] = await api("GET", "/v1/events/" + enc(id));
    } catch (e) {
      return fail("Following the retried events", e);
    }
    if (!Object.values(last).some((ev) => WAITING.has(ev.status)) || Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const words = Object.values(last).map(
    (ev) => ev.event_id + " " + ev.status + (ev.outcome ? " (" + ev.outcome + ")" : "") + (ev.status === "dead" ? ": " + ev.last_error : "")
  );
  const waiting = Object.values(last).some((ev) => WAITING.has(ev.status));
  notify((waiting ? "Still waiting after " + WATCH_SECONDS + " s: " : "Done: ") + words.join("; "), waiting ? "error" : "ok");
  if (openEventId && last[openEventId] && !$("event-detail").hidden) renderEvent(last[openEventId]);
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
  $("dl-table").tBodies[0].replaceChildren();
  rows(
    $("dl-table"),
    answer.dead_letters,
    (d) => [
      link(d.event_id, () => openEvent(d.event_id)),
      d.type,
      text(d.last_error),
      text(d.attempts),
      text(d.received_at),
      text(d.workspace_id || d.customer_id),
      el("button", { type: "button", class: "retry", onclick: () => retryEvent(d.event_id, listDeadLetters) }, "Retry…"),
    ],
    (d) => ({ "data-id": d.event_id })
  );
  const types = [...new Set(answer.dead_letters.map((d) => d.type))].sort();
  $("dl-types").replaceChildren(...types.map((t) => el("option", { value: t })));
  const ofType = type ? " of type " + type : "";
  $("dl-summary").textContent = answer.count
    ? answer.count + " dead letter" + (answer.count === 1 ? "" : "s") + ofType + ", oldest first"
    : "No dead letters" + ofType + ".";
}

async function retryType() {
  const type = $("dl-type").value.trim();
  if (!type) return notify("Enter the event type whose dead letters to retry (for example invoice.payment_failed).", "error");
  const listed = $("dl-table").tBodies[0].rows.length;
  const question = "Retry every dead letter of type " + type + " (" + listed + " listed)? Each is reset to received and processed again.";
  if (!(await confirmAction(question))) return notify("Retry of the " + type + " dead letters canceled; nothing was changed.", "ok");
  let result;
  try {
    result = await api("POST", "/v1/dead-letters/retry", { type: type });
  } catch (e) {
    return fail("Retry of the " + type + " dead letters failed", e);
  }
  const n = result.retried;
  const ids = n ? ": " + result.event_ids.join(", ") + ". Waiting for the worker…" : ".";
  notify("Retried " + n + " dead letter" + (n === 1 ? "" : "s") + " of type " + type + ids, "ok");
  if (n) await watch(result.event_ids, listDeadLetters);
  else await listDeadLetters();
}

export function wireEvents() {
  route("event", openEvent);
  route("workspace-events", workspaceEvents);
  onEnter("dead-letters", listDeadLetters);
  onSubmit("events-form", () => searchEvents(true));
  on("ev-more", "click", () => searchEvents(false));
  onSubmit("event-open-form", () => openEvent($("event-id").value.trim()));
  on("event-retry", "click", () => retryEvent(openEventId));
  on("event-workspace", "click", () => go("workspace", openEventWorkspace));
  onSubmit("dl-form", listDeadLetters);
  on("dl-retry-type", "click", retryType);
}
