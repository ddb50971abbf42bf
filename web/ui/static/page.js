// What the app's pages (app.js, admin.js) share: finding and building
// elements, where user data only ever becomes text nodes, never HTML,
// forms that take a user's name, and calling a node's HTTP API.

import { NAME_RE } from "/model.js";

export const $ = (id) => document.getElementById(id);

// el builds an element; string children become text nodes, so user data
// passed here is never parsed as HTML.
export function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "text") n.textContent = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) n.append(c);
  return n;
}

// api calls a node's HTTP API: method on url (a path of the page's own
// node, or another node's URL), with body as JSON when given. Options:
// headers to add, credentials ("same-origin" by default; "include" sends
// the cookie to the other nodes), timeout in ms (0: none). It never
// throws: an unreachable node is an answer without a status.
export async function api(method, url, body, { headers = {}, credentials = "same-origin", timeout = 0 } = {}) {
  const opts = { method, credentials, headers: { Accept: "application/json", ...headers }, cache: "no-store" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const ctl = timeout ? new AbortController() : null;
  const timer = ctl ? setTimeout(() => ctl.abort(), timeout) : null;
  if (ctl) opts.signal = ctl.signal;
  try {
    const res = await fetch(url, opts);
    let data = null;
    if (res.status !== 204) {
      try {
        data = await res.json();
      } catch {
        data = null;
      }
    }
    return { status: res.status, ok: res.ok, data, retryAfter: res.headers.get("Retry-After") };
  } catch {
    return { status: 0, ok: false, data: null, retryAfter: null };
  } finally {
    clearTimeout(timer);
  }
}

// onUserForm handles a form that acts on a user named in its input (with
// or without "@"): act gets the name and the value of the button that
// submitted the form, once the name is valid, and the input is cleared;
// an invalid name shows the rule in the status element instead.
export function onUserForm(form, input, status, act) {
  $(form).addEventListener("submit", (e) => {
    e.preventDefault();
    const user = $(input).value.trim().replace(/^@/, "");
    if (!NAME_RE.test(user)) {
      $(status).textContent = "Names: 1–32 letters, digits, _, . or -.";
      $(status).classList.add("form-error");
      return;
    }
    $(input).value = "";
    act(user, e.submitter ? e.submitter.value : "");
  });
}
