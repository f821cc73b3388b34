// The support console of billing-worker: plain ES modules, no build step, no other origin. This
// entry signs in and out and wires the screens (workspace.js, events.js, backfill.js); common.js
// holds the API client, the token (this tab's sessionStorage only) and the page helpers.
import { $, fail, notify, on, onSubmit, show, signedIn, signOut, trySignIn } from "./common.js";
import { wireBackfill } from "./backfill.js";
import { wireEvents } from "./events.js";
import { wireWorkspace } from "./workspace.js";

function enter() {
  $("nav").hidden = false;
  show("workspace");
}

async function signIn() {
  const candidate = $("token").value.trim();
  $("token").value = "";
  try {
    await trySignIn(candidate);
  } catch (e) {
    return fail("Sign-in failed", e);
  }
  enter();
  notify("Signed in. The token is kept for this tab only.", "ok");
}

function wire() {
  onSubmit("sign-in-form", signIn);
  on("sign-out", "click", () => {
    signOut();
    notify("Signed out; the token is forgotten.", "ok");
  });
  for (const b of document.querySelectorAll("#nav [data-screen]")) on(b.id, "click", () => show(b.dataset.screen));
  wireWorkspace();
  wireEvents();
  wireBackfill();
  if (signedIn()) enter();
  else show("sign-in");
}

wire();
