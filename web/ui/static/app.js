// The meshchat web app's view: signing in (the form the node's auth mode
// asks for: accounts, open names, or an app's token), and the page that
// shows the conversations model.js keeps (rooms, direct messages, members,
// typing), with the account menu and, for admins, bans.
// It renders the model, redrawing what each change names, and turns the
// page's events into the model's actions; the state lives in the model and
// all protocol work in meshchat.js. User-supplied text only ever reaches
// the page through text nodes (textContent / append(string)), never
// through HTML parsing.

import { State } from "/meshchat.js";
import { Conversations, NAME_RE, authErrorText, newPasswordProblem, tokenFromHash } from "/model.js";
import { $, api, el, onUserForm } from "/page.js";

const GROUP_MS = 5 * 60 * 1000; // consecutive messages closer than this share a header
const OFFLINE_AFTER = 3; // failed reconnect attempts before the badge says offline
const CONFIRM_MS = 5000; // how long a "Ban" button waits for its confirming click

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
  // admin is true or false when known, undefined when /api/me is to say.
  constructor(user, token, admin) {
    this.me = user;
    this.typingTimer = null;
    this.admin = false;
    this.confirmBan = ""; // the member whose Ban button asks for a confirming click
    this.confirmTimer = null;

    $("me-name").textContent = user;
    $("menu-name").textContent = user;
    $("password-user").value = user;
    $("change-password-button").hidden = authMode !== "password";
    $("me-avatar").replaceChildren(avatar(user, "avatar avatar-sm"));
    $("me-node").textContent = "";
    // Until the DM inbox has come (dm_history), the DM list may be short.
    $("dm-list").setAttribute("aria-busy", "true");

    this.model = new Conversations({
      me: user,
      token,
      store: saved,
      hidden: document.hidden,
      admin: admin === true,
      onChange: (ch) => this.onChange(ch),
    });
    this.setAdmin(admin === true);
    this.renderLists();
    this.renderInvitations();
    $("room-note").hidden = true;
    this.renderConversation();
    closeDrawers();
    this.model.start();
    if (admin === undefined) this.askAdmin();
  }

  stop() {
    this.model.stop();
    clearTimeout(this.typingTimer);
    clearTimeout(this.confirmTimer);
  }

  // askAdmin learns from /api/me whether the user holds the admin role
  // (a login's answer does not say).
  async askAdmin() {
    const res = await api("GET", "/api/me");
    if (view === this && res.ok && res.data && res.data.user === this.me) this.setAdmin(res.data.admin === true);
  }

  setAdmin(admin) {
    this.admin = admin;
    // Who may delete which message follows (the model's "admin" change).
    this.model.setAdmin(admin);
    $("admin-box").hidden = !admin;
    $("menu-admin").hidden = !admin;
    $("admin-link").hidden = !admin;
    const c = this.model.open();
    if (c) this.renderMembers(c);
  }

  // ban bans (or unbans) user, and says how it went in the admin box and
  // a toast.
  async ban(user, ban = true) {
    const res = await api("POST", ban ? "/api/admin/ban" : "/api/admin/unban", { user });
    const text = res.ok ? `${user} is ${ban ? "banned" : "no longer banned"}.` : authErrorText(res, "admin");
    if (view !== this) return;
    $("admin-status").textContent = text;
    $("admin-status").classList.toggle("form-error", !res.ok);
    toast(text);
  }

  // banClicked asks for a second click before banning user: a ban closes
  // every connection they have at once.
  banClicked(user) {
    clearTimeout(this.confirmTimer);
    if (this.confirmBan === user) {
      this.confirmBan = "";
      this.ban(user);
    } else {
      this.confirmBan = user;
      this.confirmTimer = setTimeout(() => {
        this.confirmBan = "";
        const c = this.model.open();
        if (c) this.renderMembers(c);
      }, CONFIRM_MS);
    }
    const c = this.model.open();
    if (c) this.renderMembers(c);
    const again = document.querySelector(`#member-list li[data-user="${CSS.escape(user)}"] .ban-button`);
    if (again) again.focus();
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
      case "removed":
        if (shown) this.removeItemNode(ch.conv, ch.id);
        break;
      case "admin":
        this.renderConversation();
        break;
      case "failed": {
        const node = this.findPendingNode(ch.item.ref);
        if (node) node.replaceWith(this.itemNode(ch.item, null));
        const { err } = ch;
        if (err && !["closed", "logged_out", "banned"].includes(err.code)) toast(`Message not sent: ${ch.item.failed}`);
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
      case "invitations":
        this.renderInvitations();
        break;
      case "refused":
        $("room-note").textContent = ch.text;
        $("room-note").hidden = false;
        toast(ch.text);
        break;
      default:
        break;
    }
  }

  // ---- private rooms ----

  // renderInvitations lists the invitations not yet taken up: each joins
  // its room when clicked.
  renderInvitations() {
    const items = Array.from(this.model.invitations, ([room, by]) => el(
      "li",
      { "data-room": room },
      el("button", {
        type: "button",
        class: "invitation",
        "data-testid": "invitation",
        onclick: () => this.pick((m) => m.acceptInvitation(room)),
      }, by ? `${by} invited you to #${room}` : `You were invited to #${room}`),
      el("button", {
        type: "button",
        class: "ghost invitation-dismiss",
        "aria-label": `Dismiss the invitation to #${room}`,
        onclick: () => this.model.dismissInvitation(room),
      }, "×"),
    ));
    $("invitation-list").replaceChildren(...items);
  }

  // renderRoomTools shows what the open conversation offers beyond
  // messages: a private room's owner and, to its owner and admins, the
  // invite form.
  renderRoomTools(c) {
    const manage = this.model.canManage(c, this.admin);
    const box = $("invite-box");
    if (box.hidden === manage) $("invite-status").textContent = "";
    box.hidden = !manage;
    if (c && c.kind === "room") {
      $("conv-sub").textContent = c.private ? `private room${c.owner ? ` of ${c.owner}` : ""}` : "room";
    }
  }

  // memberAction invites or removes user in the open private room and
  // says how it went.
  async memberAction(invite, user) {
    const c = this.model.open();
    if (!c) return;
    const res = await (invite ? this.model.invite(c.name, user) : this.model.remove(c.name, user));
    if (view !== this) return;
    $("invite-status").textContent = res.text;
    $("invite-status").classList.toggle("form-error", !res.ok);
    toast(res.text);
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
    else if (state === State.BANNED) endSession("This account is banned.");
  }

  renderLists() {
    const rooms = [];
    const dms = [];
    for (const c of this.model.listed()) {
      const active = c.key === this.model.current;
      const label = c.kind === "room" ? el("span", { class: "conv-name" }, el("span", { class: "hash", "aria-hidden": "true" }, "#"), c.name,
        c.private ? el("span", { class: "lock", "data-testid": "lock", title: "Private room" }, el("span", { class: "sr-only" }, ", private")) : null)
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
      this.renderRoomTools(null);
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
    const key = this.model.current;
    const del = this.model.canDelete(this.model.open(), item)
      ? el("button", {
        type: "button",
        class: "msg-delete ghost",
        "data-testid": "message-delete",
        title: "Delete this message for everyone",
        "aria-label": `Delete the message from ${item.from}`,
        onclick: () => this.model.deleteMessage(key, item.id),
      }, "Delete")
      : null;
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
      del,
    );
  }

  // removeItemNode takes the deleted message id of c, the open
  // conversation, off the page.
  removeItemNode(c, id) {
    const list = $("messages");
    for (const li of list.querySelectorAll("li[data-id]")) {
      if (li.dataset.id !== id) continue;
      const next = li.nextElementSibling;
      li.remove();
      // The next message may have shared the removed one's header.
      const i = next && next.dataset.id ? c.items.findIndex((it) => it.id === next.dataset.id) : -1;
      if (i >= 0) next.replaceWith(this.itemNode(c.items[i], c.items[i - 1] || null));
      break;
    }
    this.renderEmpty(c);
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
      const confirming = this.confirmBan === user;
      const ban = this.admin && !self ? el("button", {
        type: "button",
        class: confirming ? "ban-button danger confirming" : "ban-button",
        "data-testid": "ban-button",
        "aria-label": confirming ? `Confirm: ban ${user}` : `Ban ${user}`,
        onclick: () => this.banClicked(user),
      }, confirming ? "Confirm" : "Ban") : null;
      const remove = this.model.canManage(c, this.admin) && !self && user !== c.owner ? el("button", {
        type: "button",
        class: "ban-button",
        "data-testid": "remove-button",
        "aria-label": `Remove ${user} from #${c.name}`,
        onclick: () => this.memberAction(false, user),
      }, "Remove") : null;
      return el("li", {
        "data-testid": "member",
        "data-user": user,
        "data-online": online ? "true" : "false",
        class: online ? "online" : "offline",
      }, content, remove, ban);
    });
    $("member-list").replaceChildren(...items);
    this.renderRoomTools(c);
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
// The page: signing in, the drawers and the account menu, and wiring the
// forms and buttons.

let view = null;
// authMode is how the node signs users in (GET /api/auth): "password"
// (accounts), "open" (any name) or "jwt" (the host app's tokens).
let authMode = "password";
// registering: in password mode, the form creates an account.
let registering = false;

const LOGIN_HELP = {
  password: "Sign in with your name and password.",
  register: "Names: 1–32 letters, digits, _, . or -. Passwords: at least 8 characters.",
  open: "Pick a name to chat with: 1–32 letters, digits, _, . or -.",
};

// renderLogin shapes the login view for authMode and the tab chosen.
function renderLogin() {
  const password = authMode === "password";
  const reg = password && registering;
  $("open-banner").hidden = authMode !== "open";
  $("auth-tabs").hidden = !password;
  $("login-form").hidden = authMode === "jwt";
  $("jwt-panel").hidden = authMode !== "jwt";
  for (const [tab, on] of [["tab-signin", !reg], ["tab-register", reg]]) {
    $(tab).setAttribute("aria-selected", String(on));
    $(tab).tabIndex = on ? 0 : -1;
  }
  const form = $("login-form");
  if (password) form.setAttribute("role", "tabpanel");
  else form.removeAttribute("role");
  $("login-title").textContent = reg ? "Create an account" : "Sign in";
  $("login-help").textContent = LOGIN_HELP[reg ? "register" : password ? "password" : "open"];
  $("password-field").hidden = !password;
  $("confirm-field").hidden = !reg;
  $("password-hint").hidden = !reg;
  $("login-password").setAttribute("autocomplete", reg ? "new-password" : "current-password");
  $("login-button").textContent = reg ? "Create account" : "Sign in";
}

// pickTab switches the login form between signing in and creating an
// account.
function pickTab(register) {
  registering = register;
  $("login-error").textContent = "";
  renderLogin();
  $(register ? "tab-register" : "tab-signin").focus();
}

function showLogin(message = "") {
  toggleAccountMenu(false);
  if ($("password-dialog").open) $("password-dialog").close();
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  renderLogin();
  $("login-password").value = "";
  $("login-confirm").value = "";
  $("login-error").textContent = authMode === "jwt" ? "" : message;
  $("jwt-error").textContent = authMode === "jwt" ? message : "";
  if (authMode !== "jwt") $("login-name").focus();
}

// maybeSignedIn tells whether the browser holds a session cookie: the
// node sets a readable hint cookie (meshchat_in) with it, with the same
// scope and lifetime, and clears both on logout. Without it the page
// shows the login form at once instead of asking /api/me, whose 401 the
// browser would log as an error.
function maybeSignedIn() {
  return document.cookie.split(";").some((c) => c.trim() === "meshchat_in=1");
}

// startSession shows the chat for user; admin as ChatView takes it.
function startSession(user, token, admin) {
  if (saved.get("user", "") !== user) {
    saved.clear();
    saved.set("user", user);
  }
  if (token) saved.set("token", token);
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  view = new ChatView(user, saved.get("token", ""), admin);
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

// signInWithToken logs in with a token of the host app (--auth jwt).
async function signInWithToken(token) {
  const res = await api("POST", "/api/login", { token });
  if (res.ok && res.data && res.data.user) startSession(res.data.user, res.data.token);
  else showLogin(authErrorText(res, "token"));
}

// toggleAccountMenu opens or closes the account menu (open undefined:
// the other way round).
function toggleAccountMenu(open) {
  const menu = $("account-menu");
  const show = open ?? menu.hidden;
  if (show === !menu.hidden) return;
  menu.hidden = !show;
  $("account-button").setAttribute("aria-expanded", String(show));
  if (show) menu.querySelector("button:not([hidden])")?.focus();
}

function openPasswordDialog() {
  toggleAccountMenu(false);
  for (const id of ["old-password", "new-password", "new-confirm"]) $(id).value = "";
  $("password-error").textContent = "";
  $("password-dialog").showModal();
  $("old-password").focus();
}

// changePassword posts the password form. The node ends the session this
// page runs on and hands it a new one; the client is told, so that it
// reconnects under the new one instead of signing out.
async function changePassword() {
  const old = $("old-password").value;
  const next = $("new-password").value;
  const problem = old ? newPasswordProblem(next, $("new-confirm").value) : "Enter your current password.";
  const error = $("password-error");
  if (problem) {
    error.textContent = problem;
    $(old ? "new-password" : "old-password").focus();
    return;
  }
  const v = view;
  const submit = $("password-submit");
  submit.disabled = true;
  error.textContent = "";
  const req = api("POST", "/api/password", { old, new: next });
  v?.model.client.renewSession(req.then((res) => (res.ok && res.data && res.data.token) || ""));
  const res = await req;
  submit.disabled = false;
  if (view !== v) return;
  if (!res.ok || !res.data) {
    error.textContent = authErrorText(res, "password");
    $("old-password").focus();
    return;
  }
  if (res.data.token) saved.set("token", res.data.token);
  $("password-dialog").close();
  toast("Password changed. Your other devices and tabs were signed out.");
}

// logOut ends this session (everywhere: every session of the user) and
// shows the login form with message. Until the node answers, the client
// holds off asking about the session its socket loses on the way.
async function logOut(path, message) {
  toggleAccountMenu(false);
  const req = api("POST", path);
  view?.model.client.renewSession(req.then(() => ""));
  const res = await req;
  if (!res.ok && res.status !== 401 && path === "/api/logout-all") {
    toast(authErrorText(res));
    return;
  }
  endSession(message);
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
    const error = $("login-error");
    const name = $("login-name").value.trim();
    if (!NAME_RE.test(name)) {
      error.textContent = "Use 1–32 letters, digits, _, . or -.";
      $("login-name").focus();
      return;
    }
    const body = { name };
    const action = authMode === "password" && registering ? "register" : "signin";
    if (authMode === "password") {
      body.password = $("login-password").value;
      const problem = action === "register" ? newPasswordProblem(body.password, $("login-confirm").value)
        : body.password ? "" : "Enter your password.";
      if (problem) {
        error.textContent = problem;
        $("login-password").focus();
        return;
      }
    }
    const button = $("login-button");
    button.disabled = true;
    error.textContent = "";
    const res = await api("POST", action === "register" ? "/api/register" : "/api/login", body);
    button.disabled = false;
    if (!res.ok || !res.data) {
      error.textContent = authErrorText(res, action);
      return;
    }
    startSession(res.data.user || name, res.data.token);
  });

  $("tab-signin").addEventListener("click", () => pickTab(false));
  $("tab-register").addEventListener("click", () => pickTab(true));
  $("auth-tabs").addEventListener("keydown", (e) => {
    if (["ArrowLeft", "ArrowRight", "Home", "End"].includes(e.key)) {
      e.preventDefault();
      pickTab(e.key === "End" || (e.key !== "Home" && !registering));
    }
  });

  $("account-button").addEventListener("click", () => toggleAccountMenu());
  $("change-password-button").addEventListener("click", openPasswordDialog);
  $("logout-all-button").addEventListener("click", () => logOut("/api/logout-all", "You were logged out on every device."));
  $("password-form").addEventListener("submit", (e) => {
    e.preventDefault();
    changePassword();
  });
  $("password-cancel").addEventListener("click", () => $("password-dialog").close());
  $("password-dialog").addEventListener("close", () => {
    if (view) $("account-button").focus();
  });
  onUserForm("admin-form", "admin-user", "admin-status", (user, button) => view?.ban(user, button !== "unban"));
  document.addEventListener("click", (e) => {
    if (!$("account-menu").hidden && !e.target.closest(".account")) toggleAccountMenu(false);
  });

  // A failed logout still drops the session locally.
  $("logout-button").addEventListener("click", () => logOut("/api/logout", ""));

  onSidebarName("join-form", "room-input", /^#/, "Room names: 1–32 letters, digits, _, . or -.", (room) => {
    const opts = { private: $("room-private").checked };
    $("room-private").checked = false;
    $("room-note").hidden = true;
    view?.pick((m) => m.joinRoom(room, opts));
  });
  onUserForm("invite-form", "invite-user", "invite-status", (user) => view?.memberAction(true, user));
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
    if (e.key !== "Escape") return;
    closeDrawers();
    if (!$("account-menu").hidden) {
      toggleAccountMenu(false);
      $("account-button").focus();
    }
  });
  document.addEventListener("visibilitychange", () => {
    view?.model.setHidden(document.hidden);
  });
}

async function boot() {
  wire();
  // A sign-in token handed over in the URL fragment leaves the URL, and
  // with it the history, before anything else happens.
  const { token, hash } = tokenFromHash(location.hash);
  if (token) history.replaceState(history.state, "", location.pathname + location.search + hash);
  const auth = await api("GET", "/api/auth");
  if (auth.ok && auth.data && ["password", "open", "jwt"].includes(auth.data.mode)) authMode = auth.data.mode;
  else if (auth.status === 404) authMode = "open"; // a node from before accounts
  if (!auth.status) {
    showLogin("Cannot reach the server. Try again.");
    return;
  }
  if (token && authMode === "jwt") {
    await signInWithToken(token);
    return;
  }
  if (!maybeSignedIn()) {
    showLogin("");
    return;
  }
  const res = await api("GET", "/api/me");
  if (res.ok && res.data && res.data.user) {
    startSession(res.data.user, res.data.token, res.data.admin === true);
    return;
  }
  showLogin(res.status === 401 ? "" : authErrorText(res));
}

boot();
