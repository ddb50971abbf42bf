// The meshchat app's model of conversations: the rooms joined and the DMs,
// their messages, members and typing, unread counts, which conversation is
// open and which DMs were closed. It runs the protocol client (meshchat.js)
// and turns its events into this state; it never touches the page. What
// changed is told to one listener, onChange, so that a view can redraw just
// that: the changes are listed above Conversations.
//
// The lists (rooms, DMs, closed DMs, the open conversation) are kept in a
// store with get(key, default) and set(key, value), so that a reload comes
// back to them.
//
// It also holds the rules of signing in that do not need the page: what to
// say for each error the account endpoints answer, when to retry, the
// checks of a new password, and reading a sign-in token from the page URL;
// and those of private rooms: invitations, who may invite and remove, and
// what to say when a room refuses.

import { MeshchatClient } from "/meshchat.js";

export const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
export const MAX_ITEMS = 1000; // messages kept per conversation
export const MIN_PASSWORD = 8; // characters: the server refuses shorter ones (weak_password)
const TYPING_TTL = 3000; // how long "x is typing" lasts without a new typing frame

// memoryStore is a store that forgets on reload.
export function memoryStore() {
  const m = new Map();
  return {
    get: (key, def) => (m.has(key) ? structuredClone(m.get(key)) : def),
    set: (key, value) => m.set(key, structuredClone(value)),
  };
}

// ---- signing in ----

// retryAfterSeconds reads a Retry-After header, delay-seconds or an HTTP
// date, as whole seconds from now (at least 1); 0 when there is none.
export function retryAfterSeconds(header, now = Date.now()) {
  const v = String(header ?? "").trim();
  if (!v) return 0;
  if (/^\d+$/.test(v)) return Math.max(1, Number(v));
  const at = Date.parse(v);
  if (Number.isNaN(at)) return 0;
  return Math.max(1, Math.ceil((at - now) / 1000));
}

// waitText says how long a wait of seconds is, for "Try again …".
export function waitText(seconds) {
  if (seconds <= 1) return "in a second";
  if (seconds < 90) return `in ${seconds} seconds`;
  const min = Math.ceil(seconds / 60);
  if (min < 90) return `in ${min} minutes`;
  const h = Math.ceil(min / 60);
  return `in ${h} hours`;
}

// authErrorText says what went wrong with an answer of an account
// endpoint: res is {status, data, retryAfter} (data the JSON body,
// retryAfter the Retry-After header), action one of "signin", "register",
// "password" (a password change), "token" (an app's sign-in token) or
// "admin" (ban, unban).
export function authErrorText(res, action = "signin", now = Date.now()) {
  const err = (res && res.data && res.data.error) || {};
  const code = err.code || "";
  switch (code) {
    case "bad_credentials":
      if (action === "password") return "The current password is wrong.";
      if (action === "token") return "The app's sign-in was refused (expired or not valid). Open the chat from the app again.";
      return "Wrong name or password.";
    case "name_taken":
      return "That name is taken. Pick another one, or sign in if it is yours.";
    case "weak_password":
      return /at most/.test(err.message || "")
        ? "That password is too long."
        : `Use a password of at least ${MIN_PASSWORD} characters.`;
    case "bad_name":
      return "Names are 1–32 letters, digits, _, . or -.";
    case "banned":
      return "This account is banned.";
    case "too_many_attempts": {
      const secs = retryAfterSeconds(res.retryAfter, now);
      return secs ? `Too many attempts. Try again ${waitText(secs)}.` : "Too many attempts. Try again later.";
    }
    case "forbidden":
      if (action === "register") return "This server does not take new accounts.";
      if (action === "admin") return "Only admins may do that.";
      return err.message || "Not allowed.";
    case "accounts_full":
      return "This server takes no more accounts.";
    case "unauthorized":
      return "Your session has ended. Please sign in again.";
    case "unavailable":
      return "The server cannot do that right now. Try again in a moment.";
    default:
      if (err.message) return err.message;
      return res && res.status ? `Something went wrong (${res.status}). Try again.` : "Cannot reach the server. Try again.";
  }
}

// newPasswordProblem checks a new password and its confirmation before
// they are sent: "" when they may go, else what to fix.
export function newPasswordProblem(password, confirm) {
  if ([...password].length < MIN_PASSWORD) return `Use a password of at least ${MIN_PASSWORD} characters.`;
  if (password !== confirm) return "The two passwords differ.";
  return "";
}

// tokenFromHash takes a sign-in token out of a URL fragment
// ("#token=…", possibly with other parameters): token is "" when there is
// none, and hash is the fragment left without it ("" when nothing is).
export function tokenFromHash(hash) {
  const raw = String(hash || "").replace(/^#/, "");
  if (!raw) return { token: "", hash: "" };
  const params = new URLSearchParams(raw);
  const token = params.get("token") || "";
  if (!params.has("token")) return { token: "", hash: "#" + raw };
  params.delete("token");
  const rest = params.toString();
  return { token, hash: rest ? "#" + rest : "" };
}

// ---- private rooms ----

// roomErrorText says what went wrong with a private room: code is the
// error frame's, action "join" (rejoin: the room had been joined before),
// "invite" or "remove".
export function roomErrorText(code, room, action = "join", { rejoin = false, message = "" } = {}) {
  switch (code) {
    case "forbidden":
      if (action !== "join") return `Only the owner of #${room} or an admin can do that.`;
      return rejoin ? `You were removed from #${room}.` : `#${room} is private: ask its owner for an invitation.`;
    case "room_exists":
      return `#${room} is a public room already: pick another name for a private room.`;
    case "not_found":
      return `#${room} is not a private room.`;
    case "bad_name":
      return "Names are 1–32 letters, digits, _, . or -.";
    case "bad_room":
      return "Room names are 1–32 letters, digits, _, . or -.";
    case "too_many_rooms":
      return "You are in too many rooms: leave one first.";
    default:
      return message || `Cannot ${action} #${room} right now (${code || "error"}).`;
  }
}

// A conversation, as the view reads it (it changes none of it):
//
//   key        "r:<room>" or "d:<peer>"
//   kind       "room" or "dm"
//   name       the room or the peer
//   items      delivered messages {id, from, text, ts}, oldest first, at
//              most MAX_ITEMS, each id once
//   ids        the ids of items
//   pending    ref -> own message not yet acknowledged {ref, from, text,
//              ts, pending: true}
//   unread     messages from others that came while it was not in view
//   members    user -> online; a DM's peer is online when some joined
//              room shows them online
//   typing     user -> expiry (ms); read it through typers()
//   notice     what to say above the messages, or ""
//   private    a room only its members see; owner is its owner
//   closed     a DM taken off the list; it keeps its messages
//   closedUpTo the newest ts it held when closed
//
// Changes passed to onChange, all with a `type`:
//
//   lists     the lists, their unread counts or the title count changed
//   selected  another conversation is open (current; "" for none)
//   item      {conv, item, dropped}: item (delivered or pending) was added
//             at the end of conv.items or conv.pending, and the `dropped`
//             oldest items fell off
//   acked     {conv, ref}: the pending message ref is gone (delivered)
//   removed   {conv, id}: the message id was deleted and left conv.items
//   failed    {conv, item, err}: the pending item was not sent; it now
//             carries `failed`, the reason, and err is the client's error
//   members   {conv}
//   notice    {conv}
//   typing    {conv}
//   inbox     the DM inbox has come: the DM list is complete
//   welcome   {node, nodes}
//   admin     the user's admin role became known (this.admin): who may
//             delete what (canDelete) changed
//   error     {code, message}: an error not tied to a message
//   state     {state, info}: the connection's state (see meshchat.js)
//   invitations  the invitations (model.invitations) changed
//   refused   {room, code, text}: the room refused the join and is gone
//             from the lists; text says why
export class Conversations {
  // me is the user, token the session token for the client, hidden whether
  // the page starts out of sight, admin whether the user is an admin (see
  // setAdmin); client holds extra MeshchatClient options. The lists come
  // back from the store without a change told: a view draws everything
  // once, then calls start.
  constructor({ me, token = "", store = memoryStore(), onChange = () => {}, hidden = false, admin = false, client = {} }) {
    this.me = me;
    this.admin = admin;
    this.current = "";
    this.hidden = hidden;
    this._convs = new Map(); // key -> conversation, in list order
    this.invitations = new Map(); // room -> who invited the user, not yet acted on
    this._store = store;
    this._onChange = onChange;
    this.client = new MeshchatClient({
      token,
      ...client,
      onEvent: (ev) => this.handle(ev),
      onState: (state, info) => this._emit({ type: "state", state, info }),
    });

    const cur = store.get("current", "");
    const rooms = store.get("rooms", ["general"]);
    const dms = store.get("dms", []);
    const closed = store.get("closedDms", {});
    for (const room of rooms) {
      if (!NAME_RE.test(room)) continue;
      this._conv("r:" + room);
      this.client.join(room);
    }
    for (const peer of dms) if (NAME_RE.test(peer)) this._conv("d:" + peer);
    for (const [peer, upTo] of Object.entries(closed)) {
      if (!NAME_RE.test(peer) || this._convs.has("d:" + peer)) continue;
      const c = this._conv("d:" + peer);
      c.closed = true;
      c.closedUpTo = Number(upTo) || 0;
    }
    const c = this._convs.get(cur);
    this.current = c && !c.closed ? cur : this.firstOpen();
    this._persist();
  }

  // start connects; stop closes for good.
  start() {
    this.client.connect();
  }

  stop() {
    this.client.close();
  }

  // ---- reading ----

  get(key) {
    return this._convs.get(key);
  }

  // open is the conversation in view, or undefined.
  open() {
    return this._convs.get(this.current);
  }

  // listed is the conversations on the lists (not closed), in order.
  listed() {
    return Array.from(this._convs.values()).filter((c) => !c.closed);
  }

  unreadTotal() {
    return this.listed().reduce((n, c) => n + c.unread, 0);
  }

  // firstOpen is the key of the first conversation on the lists, or "".
  firstOpen() {
    for (const c of this._convs.values()) if (!c.closed) return c.key;
    return "";
  }

  // typers lists who is typing in c at now and when that next changes
  // (Infinity: not until a new frame), forgetting the expired.
  typers(c, now = Date.now()) {
    const users = [];
    let next = Infinity;
    for (const [u, exp] of c.typing) {
      if (exp <= now) {
        c.typing.delete(u);
        continue;
      }
      users.push(u);
      next = Math.min(next, exp);
    }
    return { users, next };
  }

  // canDelete tells whether the user may delete item of c: a delivered
  // room message of their own, or any one for an admin.
  canDelete(c, item) {
    return !!(c && c.kind === "room" && item && item.id && (item.from === this.me || this.admin));
  }

  // ---- actions ----

  // setAdmin records whether the user is an admin (GET /api/me "admin").
  setAdmin(admin) {
    if (this.admin === !!admin) return;
    this.admin = !!admin;
    this._emit({ type: "admin" });
  }

  // deleteMessage deletes the message id of the room conversation key for
  // everyone. It leaves the view when the server's "deleted" comes; a
  // refusal is told as an error.
  deleteMessage(key, id) {
    const c = this._convs.get(key);
    if (!c || c.kind !== "room") return;
    this.client.deleteMessage(c.name, id).catch((err) => {
      if (err && err.code !== "closed" && err.code !== "logged_out" && err.code !== "left") {
        this._emit({ type: "error", code: err.code, message: err.message || "not deleted" });
      }
    });
  }

  select(key) {
    this.current = key;
    const c = this._convs.get(key);
    if (c) c.unread = 0;
    this._persist();
    this._emit({ type: "selected" });
  }

  // joinRoom joins room; with {private: true} a new room is created
  // private.
  joinRoom(room, opts = {}) {
    this._conv("r:" + room);
    this.client.join(room, opts);
    this.select("r:" + room);
  }

  // canManage tells whether the user may invite into and remove from c:
  // its owner, or an admin (admin: the page knows from /api/me).
  canManage(c, admin = false) {
    return !!c && c.kind === "room" && c.private && (admin || c.owner === this.me);
  }

  // acceptInvitation joins the room of an invitation.
  acceptInvitation(room) {
    this.invitations.delete(room);
    this._emit({ type: "invitations" });
    this.joinRoom(room);
  }

  dismissInvitation(room) {
    if (this.invitations.delete(room)) this._emit({ type: "invitations" });
  }

  // invite and remove change the members of the private room; each
  // resolves with {ok, text}: what to tell the user.
  invite(room, user) {
    return this._member(this.client.invite(room, user), room, "invite", `${user} was invited to #${room}.`);
  }

  remove(room, user) {
    return this._member(this.client.remove(room, user), room, "remove", `${user} was removed from #${room}.`);
  }

  _member(request, room, action, done) {
    return request.then(
      () => ({ ok: true, text: done }),
      (err) => ({ ok: false, text: roomErrorText(err && err.code, room, action, { message: err && err.message }) }),
    );
  }

  // leaveRoom forgets the room and its messages.
  leaveRoom(room) {
    const key = "r:" + room;
    this.client.leave(room);
    this._convs.delete(key);
    this._away(key);
  }

  openDm(peer) {
    const c = this._conv("d:" + peer);
    c.closed = false;
    this.select(c.key);
  }

  // closeDm takes a DM off the list. It keeps its messages: opening it
  // again, or a new DM from the peer, brings it back whole.
  closeDm(peer) {
    const c = this._convs.get("d:" + peer);
    if (!c) return;
    c.closed = true;
    // The server's time of its newest message; before any has come, now.
    c.closedUpTo = c.items.reduce((m, it) => (typeof it.ts === "number" && it.ts > m ? it.ts : m), 0) || Date.now();
    c.unread = 0;
    this._away(c.key);
  }

  // send sends text to the open conversation. It shows at once as pending
  // and is replaced by the delivered message when that comes.
  send(text) {
    const c = this.open();
    if (!c || !text) return;
    const ref = this.client.newRef();
    const item = { ref, from: this.me, text, ts: Date.now(), pending: true };
    c.pending.set(ref, item);
    this._emit({ type: "item", conv: c, item, dropped: 0 });
    const p = c.kind === "room" ? this.client.send(c.name, text, { ref }) : this.client.dm(c.name, text, { ref });
    p.then(
      () => {
        // The ack normally replaced the placeholder already; it did not
        // when the message had arrived before (e.g. in resumed history).
        if (c.pending.delete(ref)) this._emit({ type: "acked", conv: c, ref });
      },
      (err) => {
        if (!c.pending.delete(ref)) return;
        item.failed = err && err.message ? err.message : "not sent";
        this._emit({ type: "failed", conv: c, item, err });
      },
    );
  }

  // typing tells the open room that the user is typing.
  typing() {
    const c = this.open();
    if (c && c.kind === "room") this.client.typing(c.name);
  }

  // setHidden says whether the page is out of sight: messages that come
  // meanwhile count as unread even in the open conversation.
  setHidden(hidden) {
    this.hidden = hidden;
    const c = this.open();
    if (!hidden && c && c.unread) {
      c.unread = 0;
      this._emit({ type: "lists" });
    }
  }

  // ---- state ----

  _emit(change) {
    this._onChange(change);
  }

  _conv(key) {
    let c = this._convs.get(key);
    if (!c) {
      const kind = key[0] === "r" ? "room" : "dm";
      c = {
        key,
        kind,
        name: key.slice(2),
        items: [],
        ids: new Set(),
        pending: new Map(),
        unread: 0,
        members: new Map(),
        typing: new Map(),
        notice: "",
        private: false,
        owner: "",
        closed: false,
        closedUpTo: 0,
      };
      if (kind === "dm") {
        c.members.set(this.me, true);
        c.members.set(c.name, this._seenOnline(c.name));
      }
      this._convs.set(key, c);
    }
    return c;
  }

  // _away moves the view off key, which has left the lists.
  _away(key) {
    if (this.current === key) {
      this.current = "";
      this.select(this.firstOpen());
      return;
    }
    this._persist();
    this._emit({ type: "lists" });
  }

  _persist() {
    const rooms = [];
    const dms = [];
    const closedDms = {};
    for (const c of this._convs.values()) {
      if (c.closed) closedDms[c.name] = c.closedUpTo;
      else (c.kind === "room" ? rooms : dms).push(c.name);
    }
    this._store.set("rooms", rooms);
    this._store.set("dms", dms);
    this._store.set("closedDms", closedDms);
    this._store.set("current", this.current);
  }

  // _seenOnline tells whether user shows as online in any joined room:
  // presence is per room, and a DM peer's state is taken from there.
  _seenOnline(user) {
    for (const c of this._convs.values()) {
      if (c.kind === "room" && c.members.get(user) === true) return true;
    }
    return false;
  }

  // _refreshDmPeer updates the DM with user, if there is one, from the
  // rooms' presence.
  _refreshDmPeer(user) {
    const d = this._convs.get("d:" + user);
    if (!d || user === this.me) return;
    d.members.set(user, this._seenOnline(user));
    this._emit({ type: "members", conv: d });
  }

  // ---- protocol events ----

  // handle takes one event of the client (see meshchat.js): the client
  // passes each as it comes, and nothing else needs to.
  handle(ev) {
    switch (ev.type) {
      case "welcome":
        this._emit({ type: "welcome", node: ev.node, nodes: ev.nodes });
        break;
      case "joined":
        this._joined(ev);
        break;
      case "dm_history":
        this._emit({ type: "inbox" });
        break;
      case "message":
        this._message(this._convs.get("r:" + ev.room), ev);
        break;
      case "dm":
        this._dm(ev);
        break;
      case "deleted":
        this._deleted(this._convs.get("r:" + ev.room), ev.id);
        break;
      case "presence":
        this._presence(ev);
        break;
      case "typing":
        this._typing(ev);
        break;
      case "error":
        if (ev.room) this._refused(ev);
        else this._emit({ type: "error", code: ev.code, message: ev.message });
        break;
      case "invitation":
        if (NAME_RE.test(ev.room || "") && !this._convs.has("r:" + ev.room)) {
          this.invitations.set(ev.room, String(ev.by || ""));
          this._emit({ type: "invitations" });
        }
        break;
      default:
        break;
    }
  }

  // _refused drops a room whose join was refused for good (the client
  // already forgot it) and says why.
  _refused(ev) {
    const key = "r:" + ev.room;
    const text = roomErrorText(ev.code, ev.room, "join", { rejoin: ev.rejoin, message: ev.message });
    if (this._convs.delete(key)) this._away(key);
    this._emit({ type: "refused", room: ev.room, code: ev.code, text });
  }

  _joined(ev) {
    const c = this._convs.get("r:" + ev.room);
    if (!c) return;
    const wasPrivate = c.private;
    c.private = !!ev.private;
    c.owner = ev.owner || "";
    if (c.private !== wasPrivate) this._emit({ type: "lists" });
    if (this.invitations.delete(ev.room)) this._emit({ type: "invitations" });
    for (const u of c.members.keys()) c.members.set(u, false);
    for (const u of ev.members) c.members.set(u, true);
    c.members.set(this.me, true);
    c.notice = ev.rejoin && !ev.recovered ? "You were away for a while: some earlier messages may be missing." : "";
    this._emit({ type: "notice", conv: c });
    this._emit({ type: "members", conv: c });
    for (const u of c.members.keys()) this._refreshDmPeer(u);
  }

  _dm(ev) {
    const peer = ev.from === this.me ? ev.to : ev.from;
    if (!NAME_RE.test(peer || "")) return;
    let listed = !this._convs.has("d:" + peer);
    const c = this._conv("d:" + peer);
    // A closed DM comes back with a new message from the peer, not with
    // the backlog it already held when it was closed, nor with the echo
    // of one's own send.
    if (c.closed && ev.from !== this.me && (!ev.backlog || !(ev.ts <= c.closedUpTo))) {
      c.closed = false;
      listed = true;
    }
    if (listed) {
      this._persist();
      this._emit({ type: "lists" });
    }
    this._message(c, ev);
  }

  // _message adds a delivered message, live or from history, to c. One
  // that is there already (by id) is not added again.
  _message(c, m) {
    if (!c) return;
    if (m.ref && c.pending.delete(m.ref)) this._emit({ type: "acked", conv: c, ref: m.ref });
    if (m.id) {
      if (c.ids.has(m.id)) return;
      c.ids.add(m.id);
    }
    const item = { id: m.id, from: m.from, text: String(m.text ?? ""), ts: m.ts };
    c.items.push(item);
    let dropped = 0;
    while (c.items.length > MAX_ITEMS) {
      c.ids.delete(c.items.shift().id);
      dropped += 1;
    }
    c.typing.delete(m.from);
    const mine = m.from === this.me;
    if (c.kind === "room" && !c.members.has(m.from)) c.members.set(m.from, false);
    this._emit({ type: "item", conv: c, item, dropped });
    this._emit({ type: "typing", conv: c });
    if (c.kind === "room" && !mine) this._emit({ type: "members", conv: c });
    if (!mine && !m.backlog && (this.current !== c.key || this.hidden)) {
      c.unread += 1;
      this._emit({ type: "lists" });
    }
  }

  // _deleted takes the message id out of c.
  _deleted(c, id) {
    if (!c || !c.ids.has(id)) return;
    c.ids.delete(id);
    c.items = c.items.filter((it) => it.id !== id);
    this._emit({ type: "removed", conv: c, id });
  }

  _presence(ev) {
    const c = this._convs.get("r:" + ev.room);
    if (!c || !ev.user) return;
    c.members.set(ev.user, !!ev.online);
    if (!ev.online) c.typing.delete(ev.user);
    this._emit({ type: "members", conv: c });
    this._emit({ type: "typing", conv: c });
    this._refreshDmPeer(ev.user);
  }

  _typing(ev) {
    const c = this._convs.get("r:" + ev.room);
    if (!c || !ev.user || ev.user === this.me) return;
    c.typing.set(ev.user, Date.now() + TYPING_TTL);
    this._emit({ type: "typing", conv: c });
  }
}
