// The meshchat web app's view: the login form, and the page that shows the
// conversations model.js keeps (rooms, direct messages, members, typing).
// It renders the model, redrawing what each change names, and turns the
// page's events into the model's actions; the state lives in the model and
// all protocol work in meshchat.js. User-supplied text only ever reaches
// the page through text nodes (textContent / append(string)), never
// through HTML parsing.

import { State } from "/meshchat.js";
import { Conversations, NAME_RE } from "/model.js";

const GROUP_MS = 5 * 60 * 1000; // consecutive messages closer than this share a header
const OFFLINE_AFTER = 3; // failed reconnect attempts before the badge says offline

const $ = (id) => document.getElementById(id);

// el builds an element; string children become text nodes, so user data
// passed here is never parsed as HTML.
function el(tag, attrs = {}, ...children) {
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

const saved = {
  get(key, def) {
    try {
      const v = sessionStorage.getItem("meshchat." + key);
      return v === null ? def : JSON.parse(v);
    } catch {
      return def;
    }
  },
  set(key, value) {
    try {
      sessionStorage.setItem("meshchat." + key, JSON.stringify(value));
    } catch {
      // storage full or disabled: the app still works, it forgets on reload
    }
  },
  clear() {
    try {
      for (const k of Object.keys(sessionStorage)) if (k.startsWith("meshchat.")) sessionStorage.removeItem(k);
    } catch {
      // nothing to clear
    }
  },
};

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: { Accept: "application/json" }, cache: "no-store" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  return { status: res.status, ok: res.ok, data };
}

function errorText(data, fallback) {
  return (data && data.error && (data.error.message || data.error.code)) || fallback;
}

function hue(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return h % 360;
}

function avatar(name, cls = "avatar") {
  const a = el("span", { class: cls, "aria-hidden": "true" }, (name[0] || "?").toUpperCase());
  a.style.setProperty("--hue", String(hue(name)));
  return a;
}

function timeEl(ts) {
  const d = new Date(typeof ts === "number" ? ts : Date.now());
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const text = sameDay ? hm : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${hm}`;
  return el("time", { datetime: d.toISOString(), title: d.toLocaleString() }, text);
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => {
    t.hidden = true;
  }, 4000);
}

// ---------------------------------------------------------------------------
// ChatView: the page while a user is logged in.

class ChatView {
  constructor(user, token) {
    this.me = user;
    this.typingTimer = null;

    $("me-name").textContent = user;
    $("me-avatar").replaceChildren(avatar(user, "avatar avatar-sm"));
    $("me-node").textContent = "";
    // Until the DM inbox has come (dm_history), the DM list may be short.
    $("dm-list").setAttribute("aria-busy", "true");

    this.model = new Conversations({
      me: user,
      token,
      store: saved,
      hidden: document.hidden,
      onChange: (ch) => this.onChange(ch),
    });
    this.renderLists();
    this.renderConversation();
    closeDrawers();
    this.model.start();
  }

  stop() {
    this.model.stop();
    clearTimeout(this.typingTimer);
  }

  // ---- user actions ----

  // pick runs a user's action on the model and, when a conversation is
  // open after it, puts the cursor in the message box.
  pick(action) {
    action(this.model);
    if (this.model.open()) $("message-input").focus();
  }

  leave() {
    const c = this.model.open();
    if (!c) return;
    this.pick((m) => (c.kind === "room" ? m.leaveRoom(c.name) : m.closeDm(c.name)));
  }

  // ---- model changes ----

  onChange(ch) {
    const shown = ch.conv !== undefined && ch.conv.key === this.model.current;
    switch (ch.type) {
      case "lists":
        this.renderLists();
        break;
      case "selected":
        this.renderLists();
        this.renderConversation();
        closeDrawers();
        break;
      case "item":
        if (shown) this.appendItem(ch.item, ch.dropped);
        break;
      case "acked":
        this.removePendingNode(ch.ref);
        break;
      case "failed": {
        const node = this.findPendingNode(ch.item.ref);
        if (node) node.replaceWith(this.itemNode(ch.item, null));
        const { err } = ch;
        if (err && err.code !== "closed" && err.code !== "logged_out") toast(`Message not sent: ${ch.item.failed}`);
        break;
      }
      case "members":
        if (shown) this.renderMembers(ch.conv);
        break;
      case "notice":
        if (shown) this.renderNotice(ch.conv);
        break;
      case "typing":
        if (shown) this.renderTyping(ch.conv);
        break;
      case "inbox":
        $("dm-list").removeAttribute("aria-busy");
        break;
      case "welcome":
        $("me-node").textContent = ch.node ? `via ${ch.node}` : "";
        $("me-node").title = ch.nodes && ch.nodes.length ? `Cluster: ${ch.nodes.join(", ")}` : "";
        break;
      case "error":
        toast(ch.message || ch.code || "Something went wrong");
        break;
      case "state":
        this.renderState(ch.state, ch.info);
        break;
      default:
        break;
    }
  }

  // ---- rendering ----

  renderState(state, info) {
    const badge = $("conn-state");
    let label = state;
    let shown = state;
    if (state === State.CONNECTED) label = "connected";
    else if (state === State.CONNECTING) label = "connecting…";
    else if (state === State.RECONNECTING) {
      const offline = info.attempt >= OFFLINE_AFTER || navigator.onLine === false;
      shown = offline ? "offline" : "reconnecting";
      label = offline ? "offline, retrying…" : "reconnecting…";
    } else if (state === State.CLOSED) {
      shown = "offline";
      label = "offline";
    }
    // Which transport carries the chat: a WebSocket, or the fallback for
    // networks that block them (Server-Sent Events and POSTs).
    const sse = info && info.transport === "sse";
    if (state === State.CONNECTED && sse) label = "connected (fallback)";
    badge.dataset.state = shown;
    badge.dataset.transport = sse ? "sse" : "websocket";
    badge.title = sse ? "WebSockets are blocked on the way here: using Server-Sent Events" : "";
    badge.textContent = label;
    const live = state === State.CONNECTED;
    document.body.classList.toggle("disconnected", !live);
    if (state === State.LOGGED_OUT) endSession("Your session has ended. Please sign in again.");
  }

  renderLists() {
    const rooms = [];
    const dms = [];
    for (const c of this.model.listed()) {
      const active = c.key === this.model.current;
      const label = c.kind === "room" ? el("span", { class: "conv-name" }, el("span", { class: "hash", "aria-hidden": "true" }, "#"), c.name)
        : el("span", { class: "conv-name" }, avatar(c.name, "avatar avatar-xs"), c.name);
      const btn = el(
        "button",
        {
          type: "button",
          class: "conv-button",
          "aria-current": active ? "page" : false,
          onclick: () => this.pick((m) => m.select(c.key)),
        },
        label,
        c.unread ? el("span", { class: "unread", "aria-label": `${c.unread} unread` }, String(c.unread)) : null,
      );
      const li = el("li", c.kind === "room"
        ? { "data-testid": "room-item", "data-room": c.name }
        : { "data-testid": "dm-item", "data-peer": c.name }, btn);
      (c.kind === "room" ? rooms : dms).push(li);
    }
    $("room-list").replaceChildren(...rooms);
    $("dm-list").replaceChildren(...dms);
    const unread = this.model.unreadTotal();
    document.title = unread ? `(${unread}) meshchat` : "meshchat";
    // On a phone the lists hide behind the menu button: flag it there.
    $("toggle-rooms").classList.toggle("has-unread", unread > 0);
  }

  renderConversation() {
    const c = this.model.open();
    const list = $("messages");
    list.setAttribute("aria-busy", "true");
    list.replaceChildren();
    const leave = $("leave-button");
    leave.hidden = !c;
    if (c) {
      leave.textContent = c.kind === "room" ? "Leave" : "Close";
      leave.title = c.kind === "room" ? `Leave #${c.name}` : `Close the conversation with ${c.name}`;
    }
    $("message-input").disabled = !c;
    $("send-button").disabled = !c;
    if (!c) {
      $("conv-title").textContent = "No conversation";
      $("conv-sub").textContent = "";
      $("member-list").replaceChildren();
      $("typing").textContent = "";
      this.renderNotice(null);
      this.renderEmpty(null);
      list.removeAttribute("aria-busy");
      return;
    }
    $("conv-title").textContent = c.kind === "room" ? `# ${c.name}` : `@ ${c.name}`;
    $("conv-sub").textContent = c.kind === "room" ? "room" : "direct message";
    $("message-input").placeholder = c.kind === "room" ? `Message #${c.name}` : `Message ${c.name}`;
    let prev = null;
    const nodes = [];
    for (const item of [...c.items, ...c.pending.values()]) {
      nodes.push(this.itemNode(item, prev));
      prev = item;
    }
    list.append(...nodes);
    this.renderEmpty(c);
    list.removeAttribute("aria-busy");
    list.scrollTop = list.scrollHeight;
    this.renderNotice(c);
    this.renderMembers(c);
    this.renderTyping(c);
  }

  itemNode(item, prev) {
    const cont = prev && !prev.failed && prev.from === item.from && typeof item.ts === "number" &&
      typeof prev.ts === "number" && item.ts - prev.ts < GROUP_MS;
    const status = item.failed
      ? el("span", { class: "status failed" }, `not sent: ${item.failed}`)
      : item.pending ? el("span", { class: "status" }, "sending…") : null;
    const attrs = {
      class: ["msg", cont ? "cont" : "", item.from === this.me ? "mine" : "", item.pending ? "pending" : "", item.failed ? "failed" : ""]
        .filter(Boolean).join(" "),
      "data-testid": "message",
      "data-from": item.from,
      "data-ts": typeof item.ts === "number" ? String(item.ts) : false,
    };
    if (item.id) attrs["data-id"] = item.id;
    else attrs["data-ref"] = item.ref;
    return el(
      "li",
      attrs,
      avatar(item.from),
      el(
        "div",
        { class: "msg-body" },
        el("div", { class: "meta" }, el("span", { class: "from", "data-testid": "message-from" }, item.from), timeEl(item.ts), status),
        el("p", { class: "text", "data-testid": "message-text" }, item.text),
      ),
    );
  }

  // appendItem shows item, just added to the open conversation, at the end
  // of the delivered ones (or, when pending, of all), after dropping the
  // `dropped` oldest.
  appendItem(item, dropped) {
    const list = $("messages");
    for (let i = 0; i < dropped && list.firstElementChild; i++) list.firstElementChild.remove();
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
    const firstPending = list.querySelector("li.pending");
    const before = item.pending ? null : firstPending;
    const prevNode = before ? before.previousElementSibling : list.lastElementChild;
    const prev = prevNode && !prevNode.classList.contains("failed")
      ? { from: prevNode.dataset.from, ts: Number(prevNode.dataset.ts) }
      : null;
    const node = this.itemNode(item, prev);
    list.insertBefore(node, before);
    this.renderEmpty(this.model.open());
    if (nearBottom || item.from === this.me) list.scrollTop = list.scrollHeight;
  }

  // renderEmpty says what the message pane would show when it has nothing
  // to show.
  renderEmpty(c) {
    const e = $("empty");
    const list = $("messages");
    const blank = !c || !list.firstElementChild;
    // The list gives way while empty, so the text sits in the middle.
    list.hidden = blank;
    e.hidden = !blank;
    if (!blank) return;
    e.textContent = !c ? "Join a room or open a direct message to start."
      : c.kind === "room" ? `No messages in #${c.name} yet. Say hello!`
        : `No messages with ${c.name} yet.`;
  }

  findPendingNode(ref) {
    for (const li of $("messages").querySelectorAll("li[data-ref]")) if (li.dataset.ref === ref) return li;
    return null;
  }

  removePendingNode(ref) {
    const n = this.findPendingNode(ref);
    if (n) n.remove();
    this.renderEmpty(this.model.open());
  }

  renderNotice(c) {
    const n = $("notice");
    n.textContent = c ? c.notice : "";
    n.hidden = !(c && c.notice);
  }

  renderMembers(c) {
    const entries = Array.from(c.members.entries()).sort((a, b) => (b[1] - a[1]) || a[0].localeCompare(b[0]));
    const items = entries.map(([user, online]) => {
      const self = user === this.me;
      const label = el(
        "span",
        { class: "member-name" },
        el("span", { class: "avatar-wrap" }, avatar(user, "avatar avatar-sm"), el("span", { class: "dot", "aria-hidden": "true" })),
        user,
        self ? el("span", { class: "muted" }, " (you)") : null,
        el("span", { class: "sr-only" }, online ? ", online" : ", offline"),
      );
      const content = self ? label : el("button", {
        type: "button",
        class: "member-button",
        title: `Message ${user}`,
        onclick: () => this.pick((m) => m.openDm(user)),
      }, label);
      return el("li", {
        "data-testid": "member",
        "data-user": user,
        "data-online": online ? "true" : "false",
        class: online ? "online" : "offline",
      }, content);
    });
    $("member-list").replaceChildren(...items);
  }

  renderTyping(c) {
    clearTimeout(this.typingTimer);
    const now = Date.now();
    const { users: who, next } = this.model.typers(c, now);
    let text = "";
    if (who.length === 1) text = `${who[0]} is typing…`;
    else if (who.length === 2) text = `${who[0]} and ${who[1]} are typing…`;
    else if (who.length > 2) text = "Several people are typing…";
    const t = $("typing");
    if (t.textContent !== text) t.textContent = text;
    t.dataset.users = who.join(",");
    if (next !== Infinity) this.typingTimer = setTimeout(() => this.renderTyping(c), next - now + 20);
  }
}

// ---------------------------------------------------------------------------
// The page: login, the drawers, and wiring the forms and buttons.

let view = null;

function showLogin(message = "") {
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  const input = $("login-name");
  input.value = input.value || "";
  input.focus();
}

// maybeSignedIn tells whether the browser holds a session cookie: the
// node sets a readable hint cookie (meshchat_in) with it, with the same
// scope and lifetime, and clears both on logout. Without it the page
// shows the login form at once instead of asking /api/me, whose 401 the
// browser would log as an error.
function maybeSignedIn() {
  return document.cookie.split(";").some((c) => c.trim() === "meshchat_in=1");
}

function startSession(user, token) {
  if (saved.get("user", "") !== user) {
    saved.clear();
    saved.set("user", user);
  }
  if (token) saved.set("token", token);
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  view = new ChatView(user, saved.get("token", ""));
}

function endSession(message) {
  if (view) {
    const v = view;
    view = null;
    v.stop();
  }
  saved.clear();
  showLogin(message);
}

function closeDrawers() {
  const app = $("chat-view");
  app.classList.remove("show-sidebar", "show-members");
  $("toggle-rooms").setAttribute("aria-expanded", "false");
  $("toggle-members").setAttribute("aria-expanded", "false");
  $("scrim").hidden = true;
}

function toggleDrawer(cls, button) {
  const app = $("chat-view");
  const open = !app.classList.contains(cls);
  closeDrawers();
  if (open) {
    app.classList.add(cls);
    button.setAttribute("aria-expanded", "true");
    $("scrim").hidden = false;
    const first = (cls === "show-sidebar" ? $("sidebar") : $("members")).querySelector("button, input");
    if (first) first.focus();
  }
}

// onSidebarName handles a sidebar form that takes a room or user name,
// with or without its sigil: act gets the name once it is valid, and the
// input is cleared; an invalid one shows rule instead.
function onSidebarName(form, input, sigil, rule, act) {
  $(form).addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $(input).value.trim().replace(sigil, "");
    if (!NAME_RE.test(name)) {
      $("sidebar-error").textContent = rule;
      return;
    }
    $("sidebar-error").textContent = "";
    $(input).value = "";
    act(name);
  });
}

function wire() {
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("login-name").value.trim();
    if (!NAME_RE.test(name)) {
      $("login-error").textContent = "Use 1–32 letters, digits, _, . or -.";
      return;
    }
    const button = $("login-button");
    button.disabled = true;
    $("login-error").textContent = "";
    try {
      const res = await api("POST", "/api/login", { name });
      if (!res.ok) {
        $("login-error").textContent = errorText(res.data, `Sign-in failed (${res.status}).`);
        return;
      }
      startSession((res.data && res.data.user) || name, res.data && res.data.token);
    } catch {
      $("login-error").textContent = "Cannot reach the server. Try again.";
    } finally {
      button.disabled = false;
    }
  });

  $("logout-button").addEventListener("click", async () => {
    try {
      await api("POST", "/api/logout");
    } catch {
      // the session is dropped locally either way
    }
    endSession("");
  });

  onSidebarName("join-form", "room-input", /^#/, "Room names: 1–32 letters, digits, _, . or -.", (room) => {
    view?.pick((m) => m.joinRoom(room));
  });
  onSidebarName("dm-form", "dm-input", /^@/, "Names: 1–32 letters, digits, _, . or -.", (peer) => {
    view?.pick((m) => m.openDm(peer));
    $("message-input").focus();
  });

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("message-input");
    const text = input.value.trim();
    if (!text || !view) return;
    input.value = "";
    view.model.send(text);
    input.focus();
  });

  $("message-input").addEventListener("input", (e) => {
    if (view && e.target.value) view.model.typing();
  });

  $("leave-button").addEventListener("click", () => {
    view?.leave();
  });

  $("toggle-rooms").addEventListener("click", (e) => toggleDrawer("show-sidebar", e.currentTarget));
  $("toggle-members").addEventListener("click", (e) => toggleDrawer("show-members", e.currentTarget));
  $("scrim").addEventListener("click", closeDrawers);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeDrawers();
  });
  document.addEventListener("visibilitychange", () => {
    view?.model.setHidden(document.hidden);
  });
}

async function boot() {
  wire();
  if (!maybeSignedIn()) {
    showLogin("");
    return;
  }
  try {
    const res = await api("GET", "/api/me");
    if (res.ok && res.data && res.data.user) {
      startSession(res.data.user, res.data.token);
      return;
    }
    showLogin(res.status === 401 ? "" : errorText(res.data, "The server cannot check your login right now. Try again."));
  } catch {
    showLogin("Cannot reach the server. Try again.");
  }
}

boot();

