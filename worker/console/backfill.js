// The console's Backfill screen: the latest runs (GET /v1/backfill), one run's progress, refreshed
// every 2 s while it runs (GET /v1/backfill/{run_id}), Resume and Start, each confirmed first.
import { $, api, enc, fail, fill, inWords, link, notify, on, onEnter, onSubmit, query, rows, text, confirmAction } from "./common.js";

const RUNS = 25;
const REFRESH_MS = 2000;

let openRun = null;
let timer = null;

async function listBackfills() {
  $("bf-table").tBodies[0].replaceChildren();
  let answer;
  try {
    answer = await api("GET", "/v1/backfill" + query({ limit: RUNS }));
  } catch (e) {
    $("bf-message").textContent = "The backfill runs could not be listed: " + inWords(e);
    return;
  }
  rows(
    $("bf-table"),
    answer.runs,
    (r) => [
      link(String(r.run_id), () => openBackfill(r.run_id)),
      r.status, text(r.since), text(r.seen), text(r.inserted), text(r.updated_at), text(r.last_error),
    ],
    (r) => ({ "data-run": String(r.run_id) })
  );
  $("bf-message").textContent = answer.runs.length ? answer.runs.length + " most recent runs" : "No backfill runs yet.";
}

async function openBackfill(runId) {
  $("bf-run-id").value = runId;
  clearTimeout(timer);
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
  clearTimeout(timer);
  if (run.status === "running" && !$("screen-backfill").hidden) {
    timer = setTimeout(() => openBackfill(run.run_id), REFRESH_MS);
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

export function wireBackfill() {
  onEnter("backfill", listBackfills);
  onSubmit("bf-open-form", () => openBackfill($("bf-run-id").value.trim()));
  on("bf-refresh", "click", () => openBackfill(openRun));
  on("bf-resume", "click", () => startBackfill({ run_id: openRun }, "Resume backfill run " + openRun));
  onSubmit("bf-start-form", () => {
    const since = $("bf-since").value.trim();
    return startBackfill({ since: since }, "Start a backfill since " + since);
  });
}
