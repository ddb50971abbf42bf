// The admin view: the cluster's nodes as each reports itself
// (GET /api/admin/node on every node, docs/protocol.md), refreshed every
// few seconds, and the admins' actions on a user (disconnect, ban, unban).
// It runs for a user named in --admins (the session cookie, which every
// node of the cluster honours) or with the operator's API key, kept in the
// tab's sessionStorage only. User-supplied text reaches the page through
// text nodes only.

import { $, api, el, onUserForm } from "/page.js";

const REFRESH_MS = 4000; // how often the view asks every node again
const REQUEST_MS = 3000; // a node that takes longer counts as unreachable
const KEY_ITEM = "meshchat.apiKey";

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_ITEM) || "";
  } catch {
    return "";
  }
}

let apiKey = storedKey();
let timer = null;
let busy = false;

// call asks base (a node's URL, "" for this page's node) for path; the
// cookie goes along to the other nodes too (they answer CORS for the
// cluster's origins), and the API key when one was given.
function call(base, path, method = "GET", body) {
  return api(method, base + path, body, {
    headers: apiKey ? { Authorization: "Bearer " + apiKey } : {},
    credentials: base ? "include" : "same-origin",
    timeout: REQUEST_MS,
  });
}

function errorText(res) {
  const err = (res.data && res.data.error) || {};
  if (!res.status) return "no answer";
  return err.message ? `${err.message} (${res.status})` : `HTTP ${res.status}`;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// deny shows why the view is not available, with the API key form.
function deny(text) {
  clearInterval(timer);
  timer = null;
  $("admin-view").hidden = true;
  $("admin-denied").hidden = false;
  $("denied-text").textContent = text;
}

// refresh asks this page's node who is in the cluster and every node
// for its report, then redraws.
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const own = await call("", "/api/admin/node");
    if (own.status === 401 || own.status === 403) {
      const why = own.status === 403
        ? "You are signed in, but not as an admin of this cluster."
        : "Sign in to the chat as an admin, or use the cluster's API key.";
      deny(apiKey ? "That API key was not accepted. " + why : why);
      return;
    }
    $("admin-denied").hidden = true;
    $("admin-view").hidden = false;
    const cluster = own.ok ? own.data.cluster : [];
    const reports = await Promise.all(cluster.map((n) =>
      n.name === own.data.node ? Promise.resolve(own) : call(n.http, "/api/admin/node")));
    const cards = cluster.map((n, i) => nodeCard(n, reports[i]));
    if (!own.ok) cards.push(el("p", { class: "form-error" }, `This node did not answer: ${errorText(own)}`));
    $("node-cards").replaceChildren(...cards);
    $("admin-updated").textContent = `Updated ${clock(Date.now())}`;
  } finally {
    busy = false;
  }
}

function nodeCard(n, res) {
  const reachable = res.ok && res.data;
  const state = !reachable ? "offline" : n.state === "alive" ? "connected" : "reconnecting";
  const r = reachable ? res.data : null;
  const card = el("section", {
    class: "admin-card node-card",
    "data-testid": "node-card",
    "data-node": n.name,
    "data-reachable": reachable ? "true" : "false",
    "aria-label": `Node ${n.name}`,
  },
  el("div", { class: "node-head" },
    el("h2", {}, n.name),
    el("span", { class: "badge", "data-state": state }, reachable ? n.state : `${n.state}, unreachable`)),
  el("p", { class: "muted small node-url" }, n.http));
  if (!r) {
    card.append(el("p", { class: "form-error", "data-testid": "node-error" }, `Cannot reach this node: ${errorText(res)}`));
    return card;
  }
  card.append(el("dl", { class: "node-facts" },
    el("dt", {}, "Ready"), el("dd", {}, r.ready ? "yes" : `no: ${r.not_ready || "?"}`),
    el("dt", {}, "Connections"), el("dd", { "data-testid": "node-connections" }, String(r.connections)),
    el("dt", {}, "Broker"), el("dd", { "data-testid": "node-broker" }, brokerText(r)),
    el("dt", {}, "Slow consumers"), el("dd", {}, String(r.slow_consumers_total || 0))));
  if (r.broker_health && r.broker_health.links && r.broker_health.links.length) {
    card.append(el("ul", { class: "node-links" }, ...r.broker_health.links.map((l) =>
      el("li", { "data-state": l.state, title: l.error || "" }, `link to ${l.node}: ${l.state}`))));
  }
  card.append(el("h3", {}, "Rooms"));
  if (!r.rooms.length) card.append(el("p", { class: "muted small" }, "No room has a member on this node."));
  card.append(el("ul", { class: "node-rooms" }, ...r.rooms.map((room) => el("li", {
    "data-testid": "node-room",
    "data-room": room.room,
  },
  el("div", { class: "room-head" },
    el("strong", {}, `#${room.room}`),
    room.private ? el("span", { class: "muted small" }, ` private, owner ${room.owner}`) : null,
    room.owner_node ? el("span", { class: "muted small" }, ` · ordered by ${room.owner_node}`) : null,
    el("span", { class: "muted small" }, ` · ${room.local} here, ${room.members.length} online`)),
  el("div", { class: "room-members" }, ...room.members.map((u) => el("button", {
    type: "button",
    class: "chip",
    "data-testid": "node-member",
    title: `Act on ${u}`,
    onclick: () => {
      $("action-user").value = u;
      $("action-user").focus();
    },
  }, u)))))));
  card.append(el("h3", {}, "Recent slow consumers"));
  card.append(r.slow_consumers.length
    ? el("ul", { class: "node-slow" }, ...r.slow_consumers.map((s) => el("li", {}, `${s.user} at ${clock(s.at)}`)))
    : el("p", { class: "muted small" }, "None."));
  return card;
}

function brokerText(r) {
  const h = r.broker_health || {};
  if (r.broker === "redis") return h.ok ? "Redis reachable" : `Redis unreachable: ${h.error || "?"}`;
  return h.ok ? `${r.broker}, links up` : `${r.broker}: ${h.error || "a link is down"}`;
}

async function act(action, user) {
  const res = await call("", `/api/admin/${action}`, "POST", { user });
  const done = { disconnect: "disconnected everywhere", ban: "banned", unban: "no longer banned" }[action];
  const text = res.ok ? `${user} is ${done}.` : `Could not ${action} ${user}: ${errorText(res)}`;
  $("action-status").textContent = text;
  $("action-status").classList.toggle("form-error", !res.ok);
  refresh();
}

function start() {
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

function wire() {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    apiKey = $("api-key").value.trim();
    $("api-key").value = "";
    try {
      if (apiKey) sessionStorage.setItem(KEY_ITEM, apiKey);
      else sessionStorage.removeItem(KEY_ITEM);
    } catch {
      // storage off: the key lasts as long as the page
    }
    start();
  });
  onUserForm("action-form", "action-user", "action-status", (user, button) => act(button || "disconnect", user));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer) refresh();
  });
}

wire();
start();
