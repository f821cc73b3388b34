// What every screen of the support console shares: the JSON API client (the bearer token lives in
// this tab's sessionStorage only: never a URL, a cookie or local storage), errors in words, the
// page helpers (text from the API goes into the page as text only, never as HTML), switching
// screens, and going from one screen to another without the screens importing each other.

const TOKEN_KEY = "billing-worker-console-token";

export const $ = (id) => document.getElementById(id);
export const enc = encodeURIComponent;

let token = sessionStorage.getItem(TOKEN_KEY) || "";

// ------------------------------------------------------------------ the token

export function signedIn() {
  return token !== "";
}

// Tries a token against the API; keeps it for this tab only if the server takes it.
export async function trySignIn(candidate) {
  token = candidate;
  try {
    await api("GET", "/openapi.json");
  } catch (e) {
    token = "";
    throw e;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function signOut() {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  $("nav").hidden = true;
  show("sign-in");
}

// ------------------------------------------------------------------ the API

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
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
  const raw = await response.text();
  let data = null;
  try {
    data = raw ? JSON.parse(raw) : null;
  } catch (e) {
    data = null;
  }
  if (response.ok) return data;
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

// An error as the operator reads it: the server's message, then its status and code.
export function inWords(e) {
  if (e instanceof ApiError) return e.message + " (" + (e.status ? e.status + " " : "") + e.code + ")";
  return "the console failed: " + e.message;
}

// A query string of the parameters that have a value (an empty field is no filter).
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

// ------------------------------------------------------------------ the page

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function link(label, action) {
  return el("button", { type: "button", class: "link", onclick: action }, label);
}

export function notify(message, kind) {
  const n = $("notice");
  n.textContent = message;
  n.className = kind || "ok";
  n.hidden = false;
}

export function fail(what, e) {
  notify(what + ": " + inWords(e), "error");
}

export function confirmAction(question) {
  const dialog = $("confirm");
  $("confirm-text").textContent = question;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

export function text(v) {
  if (v === null || v === undefined || v === "") return "—";
  if (Array.isArray(v)) return v.length ? v.join(", ") : "—";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function summary(obj) {
  if (obj === null || typeof obj !== "object") return text(obj);
  return Object.entries(obj)
    .map(([k, v]) => k + ": " + (v !== null && typeof v === "object" ? JSON.stringify(v) : text(v)))
    .join("; ");
}

// `{field: [before, after]}` (a transition's changes) as "field: before → after" lines.
export function changesList(changes) {
  const entries = Object.entries(changes || {});
  if (!entries.length) return el("span", { class: "muted" }, "no field changed");
  return el(
    "ul",
    { class: "changes" },
    ...entries.map(([field, v]) =>
      el("li", {}, field + ": " + (Array.isArray(v) && v.length === 2 ? text(v[0]) + " → " + text(v[1]) : text(v)))
    )
  );
}

export function fill(dl, pairs) {
  dl.replaceChildren();
  for (const [label, value, cls] of pairs) {
    dl.append(el("dt", {}, label), el("dd", cls ? { class: cls } : {}, text(value)));
  }
}

// Appends one row per item; `attrs(item)` names the row (data-* attributes) so it can be found.
export function rows(table, items, cells, attrs) {
  const body = table.tBodies[0];
  for (const item of items) {
    body.append(el("tr", attrs ? attrs(item) : {}, ...cells(item).map((c) => el("td", {}, c))));
  }
}

// ------------------------------------------------------------------ screens

const entered = {}; // screen → what to do when it is shown
const routes = {}; // name → how another screen opens something ("workspace", "event")

export function onEnter(screen, action) {
  entered[screen] = action;
}

export function show(screen) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "screen-" + screen;
  for (const b of document.querySelectorAll("#nav [data-screen]")) {
    b.classList.toggle("current", b.dataset.screen === screen);
  }
  if (entered[screen]) return entered[screen]();
}

export function route(name, action) {
  routes[name] = action;
}

export function go(name, ...args) {
  return routes[name](...args);
}

// Wires an element's event; an unexpected exception still ends in words in the notice bar.
export function on(id, type, handler) {
  $(id).addEventListener(type, (event) => {
    Promise.resolve(handler(event)).catch((e) => fail("Unexpected", e));
  });
}

// A form's submit, without the page reloading.
export function onSubmit(id, handler) {
  on(id, "submit", (event) => {
    event.preventDefault();
    return handler(event);
  });
}
