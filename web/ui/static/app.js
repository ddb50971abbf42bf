// The meshchat web app: login, rooms, direct messages, members, typing.
// All protocol work (reconnects, resume, dedupe, acks) lives in
// meshchat.js; this file turns its events into DOM. User-supplied text only
// ever reaches the page through text nodes (textContent / append(string)),
// never through HTML parsing.

import { MeshchatClient, State } from "/meshchat.js";

const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
const TYPING_TTL = 3000; // how long "x is typing" lasts without a new typing frame
const MAX_ITEMS = 1000; // messages kept per conversation
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
// Session: everything that exists while a user is logged in.

class Session {
  constructor(user, token) {
    this.me = user;
    this.convs = new Map(); // "r:room" | "d:peer" -> conversation
    this.current = "";
    this.typingTimer = null;
    this.client = new MeshchatClient({
      token,
      onEvent: (ev) => this.onEvent(ev),
      onState: (state, info) => this.onState(state, info),
    });

    $("me-name").textContent = user;
    $("me-avatar").replaceChildren(avatar(user, "avatar avatar-sm"));
    $("me-node").textContent = "";
    // Until the DM inbox has come (dm_history), the DM list may be short.
    $("dm-list").setAttribute("aria-busy", "true");

    // Read everything first: creating conversations saves the lists.
    const cur = saved.get("current", "");
    const rooms = saved.get("rooms", ["general"]);
    const dms = saved.get("dms", []);
    const closed = saved.get("closedDms", {});
    for (const room of rooms) if (NAME_RE.test(room)) this.joinRoom(room, false);
    for (const peer of dms) if (NAME_RE.test(peer)) this.conv("d:" + peer);
    for (const [peer, upTo] of Object.entries(closed)) {
      if (!NAME_RE.test(peer) || this.convs.has("d:" + peer)) continue;
      const c = this.conv("d:" + peer);
      c.closed = true;
      c.closedUpTo = Number(upTo) || 0;
    }
    this.select(this.convs.has(cur) && !this.convs.get(cur).closed ? cur : this.firstOpen(), false);
    this.client.connect();
  }

  stop() {
    this.client.close();
    clearTimeout(this.typingTimer);
  }

  // ---- model ----

  conv(key) {
    let c = this.convs.get(key);
    if (!c) {
      const kind = key[0] === "r" ? "room" : "dm";
      c = {
        key,
        kind,
        name: key.slice(2),
        items: [],
        pending: new Map(), // ref -> item not yet acked
        unread: 0,
        members: new Map(), // user -> online
        typing: new Map(), // user -> expiry (ms)
        notice: "",
        closed: false, // a DM taken off the list; it keeps its messages
        closedUpTo: 0, // the newest ts it held when closed
      };
      if (kind === "dm") {
        c.members.set(this.me, true);
        c.members.set(c.name, this.seenOnline(c.name));
      }
      this.convs.set(key, c);
      this.persist();
      this.renderLists();
    }
    return c;
  }

  persist() {
    const rooms = [];
    const dms = [];
    const closedDms = {};
    for (const c of this.convs.values()) {
      if (c.closed) closedDms[c.name] = c.closedUpTo;
      else (c.kind === "room" ? rooms : dms).push(c.name);
    }
    saved.set("rooms", rooms);
    saved.set("dms", dms);
    saved.set("closedDms", closedDms);
    saved.set("current", this.current);
  }

  joinRoom(room, focus = true) {
    this.conv("r:" + room);
    this.client.join(room);
    if (focus) this.select("r:" + room);
  }

  leaveRoom(room) {
    this.client.leave(room);
    this.convs.delete("r:" + room);
    if (this.current === "r:" + room) this.current = "";
    this.select(this.firstOpen());
    this.persist();
  }

  openDm(peer) {
    const c = this.conv("d:" + peer);
    c.closed = false;
    this.select(c.key);
  }

  // closeDm takes a DM off the list. It keeps its messages: opening it
  // again, or a new DM from the peer, brings it back whole.
  closeDm(peer) {
    const c = this.convs.get("d:" + peer);
    if (!c) return;
    c.closed = true;
    // The server's time of its newest message; before any has come, now.
    c.closedUpTo = c.items.reduce((m, it) => (typeof it.ts === "number" && it.ts > m ? it.ts : m), 0) || Date.now();
    c.unread = 0;
    if (this.current === c.key) this.current = "";
    this.select(this.firstOpen());
  }

  // firstOpen is the key of the first conversation on the lists, or "".
  firstOpen() {
    for (const c of this.convs.values()) if (!c.closed) return c.key;
    return "";
  }

  // ---- protocol events ----

  onState(state, info) {
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
    badge.dataset.state = shown;
    badge.textContent = label;
    const live = state === State.CONNECTED;
    document.body.classList.toggle("disconnected", !live);
    if (state === State.LOGGED_OUT) endSession("Your session has ended. Please sign in again.");
  }

  onEvent(ev) {
    switch (ev.type) {
      case "welcome":
        $("me-node").textContent = ev.node ? `via ${ev.node}` : "";
        $("me-node").title = ev.nodes && ev.nodes.length ? `Cluster: ${ev.nodes.join(", ")}` : "";
        break;
      case "joined":
        this.onJoined(ev);
        break;
      case "dm_history":
        $("dm-list").removeAttribute("aria-busy");
        break;
      case "message":
        this.onMessage(this.convs.get("r:" + ev.room), ev);
        break;
      case "dm": {
        const peer = ev.from === this.me ? ev.to : ev.from;
        if (!NAME_RE.test(peer || "")) break;
        const c = this.conv("d:" + peer);
        // A closed DM comes back with a new message from the peer, not
        // with the backlog it already held when it was closed, nor with
        // the echo of one's own send.
        if (c.closed && ev.from !== this.me && (!ev.backlog || !(ev.ts <= c.closedUpTo))) {
          c.closed = false;
          this.persist();
          this.renderLists();
        }
        this.onMessage(c, ev);
        break;
      }
      case "presence":
        this.onPresence(ev);
        break;
      case "typing":
        this.onTyping(ev);
        break;
      case "error":
        toast(ev.message || ev.code || "Something went wrong");
        break;
      default:
        break;
    }
  }

  onJoined(ev) {
    const c = this.convs.get("r:" + ev.room);
    if (!c) return;
    for (const u of c.members.keys()) c.members.set(u, false);
    for (const u of ev.members) c.members.set(u, true);
    c.members.set(this.me, true);
    c.notice = ev.rejoin && !ev.recovered ? "You were away for a while: some earlier messages may be missing." : "";
    if (this.current === c.key) {
      this.renderNotice(c);
      this.renderMembers(c);
    }
    for (const u of c.members.keys()) this.refreshDmPeer(u);
  }

  onMessage(c, m) {
    if (!c) return;
    const item = { id: m.id, from: m.from, text: String(m.text ?? ""), ts: m.ts };
    if (m.ref && c.pending.has(m.ref)) {
      c.pending.delete(m.ref);
      this.removePendingNode(m.ref);
    }
    c.items.push(item);
    let dropped = 0;
    while (c.items.length > MAX_ITEMS) {
      c.items.shift();
      dropped += 1;
    }
    c.typing.delete(m.from);
    if (c.kind === "room" && !c.members.has(m.from)) c.members.set(m.from, false);
    const mine = m.from === this.me;
    const shown = this.current === c.key;
    if (shown) {
      this.appendItem(c, item, dropped);
      this.renderTyping(c);
      if (c.kind === "room" && !mine) this.renderMembers(c);
    }
    if (!mine && !m.backlog && (!shown || document.hidden)) {
      c.unread += 1;
      this.renderLists();
    }
  }

  // seenOnline tells whether user shows as online in any joined room:
  // presence is per room, and a DM peer's state is taken from there.
  seenOnline(user) {
    for (const c of this.convs.values()) {
      if (c.kind === "room" && c.members.get(user) === true) return true;
    }
    return false;
  }

  // refreshDmPeer updates the DM with user, if there is one, from the
  // rooms' presence.
  refreshDmPeer(user) {
    const d = this.convs.get("d:" + user);
    if (!d || user === this.me) return;
    d.members.set(user, this.seenOnline(user));
    if (this.current === d.key) this.renderMembers(d);
  }

  onPresence(ev) {
    const c = this.convs.get("r:" + ev.room);
    if (!c || !ev.user) return;
    c.members.set(ev.user, !!ev.online);
    if (!ev.online) c.typing.delete(ev.user);
    if (this.current === c.key) {
      this.renderMembers(c);
      this.renderTyping(c);
    }
    this.refreshDmPeer(ev.user);
  }

  onTyping(ev) {
    const c = this.convs.get("r:" + ev.room);
    if (!c || !ev.user || ev.user === this.me) return;
    c.typing.set(ev.user, Date.now() + TYPING_TTL);
    if (this.current === c.key) this.renderTyping(c);
  }

  // ---- user actions ----

  submitMessage(text) {
    const c = this.convs.get(this.current);
    if (!c || !text) return;
    const ref = this.client.newRef();
    const item = { ref, from: this.me, text, ts: Date.now(), pending: true };
    c.pending.set(ref, item);
    this.appendItem(c, item, 0);
    const p = c.kind === "room" ? this.client.send(c.name, text, { ref }) : this.client.dm(c.name, text, { ref });
    p.then(
      () => {
        // The ack normally replaced the placeholder already; it did not
        // when the message had arrived before (e.g. in resumed history).
        if (c.pending.delete(ref)) this.removePendingNode(ref);
      },
      (err) => {
        if (!c.pending.has(ref)) return;
        item.failed = err && err.message ? err.message : "not sent";
        c.pending.delete(ref);
        const node = this.findPendingNode(ref);
        if (node) node.replaceWith(this.itemNode(c, item, null));
        if (err && err.code !== "closed" && err.code !== "logged_out") toast(`Message not sent: ${item.failed}`);
      },
    );
  }

  // ---- rendering ----

  select(key, focus = true) {
    this.current = key;
    const c = this.convs.get(key);
    if (c) c.unread = 0;
    this.persist();
    this.renderLists();
    this.renderConversation();
    closeDrawers();
    if (focus && c) $("message-input").focus();
  }

  renderLists() {
    const rooms = [];
    const dms = [];
    let unread = 0;
    for (const c of this.convs.values()) {
      if (c.closed) continue;
      unread += c.unread;
      const active = c.key === this.current;
      const label = c.kind === "room" ? el("span", { class: "conv-name" }, el("span", { class: "hash", "aria-hidden": "true" }, "#"), c.name)
        : el("span", { class: "conv-name" }, avatar(c.name, "avatar avatar-xs"), c.name);
      const btn = el(
        "button",
        {
          type: "button",
          class: "conv-button",
          "aria-current": active ? "page" : false,
          onclick: () => this.select(c.key),
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
    document.title = unread ? `(${unread}) meshchat` : "meshchat";
    // On a phone the lists hide behind the menu button: flag it there.
    $("toggle-rooms").classList.toggle("has-unread", unread > 0);
  }

  renderConversation() {
    const c = this.convs.get(this.current);
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
    for (const item of c.items) {
      nodes.push(this.itemNode(c, item, prev));
      prev = item;
    }
    for (const item of c.pending.values()) {
      nodes.push(this.itemNode(c, item, prev));
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

  itemNode(c, item, prev) {
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

  appendItem(c, item, dropped) {
    if (this.current !== c.key) return;
    const list = $("messages");
    for (let i = 0; i < dropped && list.firstElementChild; i++) list.firstElementChild.remove();
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
    const firstPending = list.querySelector("li.pending");
    const before = item.pending ? null : firstPending;
    const prevNode = before ? before.previousElementSibling : list.lastElementChild;
    const prev = prevNode && !prevNode.classList.contains("failed")
      ? { from: prevNode.dataset.from, ts: Number(prevNode.dataset.ts) }
      : null;
    const node = this.itemNode(c, item, prev);
    list.insertBefore(node, before);
    this.renderEmpty(c);
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
    this.renderEmpty(this.convs.get(this.current));
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
        onclick: () => this.openDm(user),
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
    const who = [];
    let next = Infinity;
    for (const [u, exp] of c.typing) {
      if (exp <= now) {
        c.typing.delete(u);
        continue;
      }
      who.push(u);
      next = Math.min(next, exp);
    }
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
// Views.

let session = null;

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
  session = new Session(user, saved.get("token", ""));
}

function endSession(message) {
  if (session) {
    const s = session;
    session = null;
    s.stop();
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

  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("room-input");
    const room = input.value.trim().replace(/^#/, "");
    if (!NAME_RE.test(room)) {
      $("sidebar-error").textContent = "Room names: 1–32 letters, digits, _, . or -.";
      return;
    }
    $("sidebar-error").textContent = "";
    input.value = "";
    session?.joinRoom(room);
  });

  $("dm-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("dm-input");
    const peer = input.value.trim().replace(/^@/, "");
    if (!NAME_RE.test(peer)) {
      $("sidebar-error").textContent = "Names: 1–32 letters, digits, _, . or -.";
      return;
    }
    $("sidebar-error").textContent = "";
    input.value = "";
    session?.openDm(peer);
    $("message-input").focus();
  });

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("message-input");
    const text = input.value.trim();
    if (!text || !session) return;
    input.value = "";
    session.submitMessage(text);
    input.focus();
  });

  $("message-input").addEventListener("input", (e) => {
    if (!session || !e.target.value) return;
    const c = session.convs.get(session.current);
    if (c && c.kind === "room") session.client.typing(c.name);
  });

  $("leave-button").addEventListener("click", () => {
    const c = session && session.convs.get(session.current);
    if (!c) return;
    if (c.kind === "room") session.leaveRoom(c.name);
    else session.closeDm(c.name);
  });

  $("toggle-rooms").addEventListener("click", (e) => toggleDrawer("show-sidebar", e.currentTarget));
  $("toggle-members").addEventListener("click", (e) => toggleDrawer("show-members", e.currentTarget));
  $("scrim").addEventListener("click", closeDrawers);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeDrawers();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && session) {
      const c = session.convs.get(session.current);
      if (c && c.unread) {
        c.unread = 0;
        session.renderLists();
      }
    }
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
