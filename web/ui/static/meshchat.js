/**
 * meshchat.js: a dependency-free client for the meshchat WebSocket protocol
 * (v1). Drop it into any web page as an ES module:
 *
 *   import { MeshchatClient } from "/meshchat.js";
 *
 *   const client = new MeshchatClient({
 *     base: "https://chat.example.org",   // HTTP base URL of a node; default: the page origin
 *     token: sessionToken,                // optional: lets the client fail over to other hosts
 *     onEvent: (ev) => { ... },           // every server frame worth showing, see below
 *     onState: (state, info) => { ... },  // "connecting" | "connected" | "reconnecting" | "logged_out" | "banned" | "closed"
 *   });
 *   client.connect();
 *   client.join("general");
 *   client.join("plans", { private: true }); // creates a private room when new
 *   await client.send("general", "hello");   // resolves with the server's message frame (the ack)
 *   await client.dm("bob", "hi");            // resolves with the server's dm frame
 *   client.typing("general");                // throttled, safe to call on every keystroke
 *   await client.deleteMessage("general", id); // resolves with the server's deleted frame
 *
 * The session must exist before connecting: log in with POST /api/login
 * (the cookie covers the page's own node; the returned token, when there
 * is one, covers the others). Keep the token in memory or sessionStorage,
 * never in storage that outlives the tab.
 *
 * What the client does for you
 *
 *  - Right before each connection attempt it fetches a one-time ticket
 *    from the node it is about to connect to (POST <base>/api/ticket, with
 *    the page's cookie on its own origin and the token as
 *    "Authorization: Bearer" when it has one; across origins that is a
 *    CORS request the node allows for cluster members and --origins), then
 *    connects to ws(s)://<base>/ws?ticket=<ticket> and remembers the node
 *    list of every `welcome`. The token itself never goes into a URL. A
 *    node without tickets (404) is tried with the cookie alone; a ticket
 *    request that fails counts as a failed attempt.
 *  - On a lost connection it reconnects with exponential backoff and full
 *    jitter (first retry after 100-300 ms, then random delays up to 5 s),
 *    trying the node it was on, then the other nodes from the last welcome,
 *    then the page origin. A close with code 1012 (the node is restarting)
 *    tries the other nodes first; 4003 (the user is banned) stops with
 *    state "banned"; 4004 (the user was removed from a private room)
 *    reconnects like a lost connection, and that room's join is then
 *    refused (see below); every other close code reconnects, 4001 (session
 *    logged out) too, but only once the page's own node (GET /api/me)
 *    confirms that the browser still holds a session of the same user
 *    (its cookie was replaced, say by a password change on this page:
 *    see renewSession); otherwise it stops with state "logged_out". A connect
 *    attempt that hangs is abandoned after `connectTimeout`, and a
 *    connection that stays silent is probed with {"type":"ping"} and
 *    dropped when no answer comes (a server without ping turns this off
 *    by answering unknown_type).
 *  - When a handshake fails, it asks the page's own node (GET /api/me)
 *    whether the session still exists; a 401 ends reconnecting with state
 *    "logged_out" and rejects every pending send with code "logged_out"
 *    (a 403, a banned user, likewise with "banned").
 *  - After every welcome it re-joins each joined room with `after` set to
 *    the last message id it saw there, and asks for missed DMs with
 *    {"type":"dms","after":"<last dm id>"} (also on the first connection,
 *    without `after`, to load recent DMs). A join or a dms request
 *    answered by an error in `retryCodes` (the room's or the inbox's node
 *    just failed) is retried with backoff. A join refused for good
 *    (forbidden: a private room the user is not, or no longer, a member
 *    of; room_exists; ...) drops the room: its pending sends are rejected,
 *    it is not joined again, and an `error` event names the room.
 *  - It drops duplicate messages (per room, by id) and duplicate DMs (by
 *    id): each reaches onEvent exactly once.
 *  - send() and dm() tag the frame with a unique `ref` and keep it pending
 *    until the server echoes the message carrying that ref (the ack). An
 *    unacked frame is sent again, with the same ref, after reconnecting (room
 *    sends once the room is re-joined) and after `ackTimeout` without an
 *    answer; the server dedupes by ref and acks with the original id. An
 *    `error` frame carrying the ref rejects the promise with a
 *    MeshchatError, except for codes in `retryCodes` (default
 *    ["unavailable", "rate_limited"]: the server dropped the frame without
 *    acting on it), which are retried with backoff.
 *  - A node that keeps answering "unavailable" (`failoverAfter` answers in
 *    a row, default 2, to sends, joins or the DM inbox request, each after
 *    the server's own few seconds of retrying) cannot serve: it may be on
 *    the minority side of a network partition. The client then leaves it
 *    as it leaves a node that announced a restart (1012): it reconnects
 *    to the other nodes first, resumes its rooms and sends again what is
 *    pending, with the same refs.
 *
 *  - When WebSockets are blocked on the way (a proxy that refuses the
 *    upgrade: `sseAfter` attempts in a row fail before the socket opens),
 *    it switches by itself to Server-Sent Events: an EventSource on
 *    GET /api/events (the joined rooms as ?room=, resuming with
 *    ?lastEventId=) for what the server sends, and fetch POSTs to
 *    /api/send, /api/dm and /api/typing for what the client sends. The
 *    stream resumes every room and the DM inbox without gap or duplicate;
 *    a POST is acknowledged once the stream delivers the message it
 *    stored, as a WebSocket's echo is. Every `wsRetryInterval` it tries a
 *    WebSocket again and switches back when one opens. The stream uses
 *    the node the client started on (`base`: the page's origin, normally
 *    a load balancer). `transport` says which is in use, onState's info
 *    carries it too, and onEvent gets {type: "transport", transport} on
 *    every switch.
 *
 * Events passed to onEvent (plain objects, `type` first):
 *
 *   welcome   {user, node, nodes}
 *   joined    {room, members, recovered, rejoin, private, owner}  rejoin: true
 *             after a reconnect; recovered: false there means messages may
 *             be missing. private and owner: a private room and its owner.
 *             The history that came with it follows as `message` events.
 *   message   {room, id, from, text, ts, ref?, backlog?}  backlog: from history
 *   dm        {id, from, to, text, ts, ref?, backlog?}
 *   deleted   {room, id, by}                 the message id of room was deleted:
 *             live, or after `joined` for deletions the resume missed
 *   dm_history {recovered, count}        after the backlog DMs were delivered
 *   presence  {room, user, online}
 *   typing    {room, user}
 *   error     {code, message}            errors not tied to a pending send;
 *             a refused join also has {room, rejoin} (rejoin: the room had
 *             been joined before, e.g. the user was removed from it)
 *   invitation {room, by}                someone invited the user to a private room
 *   transport {transport}                "websocket" or "sse": the client switched
 *   ...and any other frame type the server adds, unchanged.
 *
 * Methods: connect(), close(), join(room, {private}?), leave(room),
 * send(room, text, {ref}?), dm(to, text, {ref}?), typing(room),
 * deleteMessage(room, id), invite(room, user), remove(room, user), newRef(),
 * setToken(token), renewSession(promise). deleteMessage is pending like a
 * send: acknowledged by the "deleted" frame carrying its ref, rejected with
 * code "forbidden" (not one's own message, and not an admin) or "not_found".
 * invite and remove (private rooms) resolve with the server's
 * invited/removed frame and reject with a MeshchatError.
 * Properties: state, transport ("websocket" | "sse"), user, node, nodes,
 * rooms (array of joined room names),
 * pendingCount. The promise returned by send()/dm() carries its `ref`.
 *
 * Options (all optional besides the callbacks): base, token, onEvent,
 * onState, connectTimeout (5000 ms), ackTimeout (10000 ms), backoffCap
 * (5000 ms), typingInterval (2000 ms between typing frames per room),
 * retryCodes, loadDms (true), pingInterval (25000 ms of silence before a
 * ping; 0 turns heartbeats off), pongTimeout (10000 ms), sseAfter (3 WebSocket
 * attempts failing before open; 0 never falls back), wsRetryInterval (30000 ms),
 * WebSocket, EventSource and fetch (to substitute implementations, e.g. in tests).
 */

/** Transports: a WebSocket, or Server-Sent Events with POSTs. */
export const Transport = Object.freeze({
  WEBSOCKET: "websocket",
  SSE: "sse",
});

/** Connection states reported through onState. */
export const State = Object.freeze({
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  LOGGED_OUT: "logged_out",
  BANNED: "banned",
  CLOSED: "closed",
});

/** The rejection reason of send() and dm(). */
export class MeshchatError extends Error {
  constructor(code, message, frame) {
    super(message || code);
    this.name = "MeshchatError";
    this.code = code;
    this.frame = frame;
  }
}

// Close codes with a meaning of their own; every other close reconnects.
const CLOSE_SERVICE_RESTART = 1012; // the node is going away: try the others first
const CLOSE_LOGGED_OUT = 4001; // the session was logged out: stop, unless the browser holds a new one
const CLOSE_BANNED = 4003; // the user is banned: stop for good

// The least gap between two typing frames that a server accepts (it drops
// more frequent ones silently).
const TYPING_MIN_GAP = 1100;

// How many ids per room (and DMs) are remembered for dedupe. The server
// never replays more than a room's retained history, so a window this size
// covers every replay that can overlap what was already shown.
const SEEN_LIMIT = 5000;

function noop() {}

function randomHex(bytes) {
  const a = new Uint8Array(bytes);
  // getRandomValues works in insecure contexts too (randomUUID does not).
  globalThis.crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function pageOrigin() {
  const loc = globalThis.location;
  if (loc && (loc.protocol === "http:" || loc.protocol === "https:")) return loc.origin;
  return "";
}

// normBase turns "host/", "http://h:1/" or a relative base into a canonical
// "http://h:1" (keeping a path prefix, without the trailing slash) so that
// node lists compare equal however the server spells them.
function normBase(base, origin) {
  try {
    const u = new URL(base, origin || undefined);
    return u.origin + u.pathname.replace(/\/+$/, "");
  } catch {
    return "";
  }
}

// sseURL is the events stream of base for rooms, resuming after resume,
// opened with a one-time ticket.
function sseURL(base, ticket, rooms, resume) {
  const u = new URL(base + "/api/events");
  for (const room of rooms) u.searchParams.append("room", room);
  if (resume) u.searchParams.set("lastEventId", resume);
  if (ticket) u.searchParams.set("ticket", ticket);
  return u.toString();
}

// The paths of the requests a client posts while on Server-Sent Events,
// and the fields of the frame each takes.
const POSTS = {
  send: ["/api/send", ["room", "text", "ref"]],
  dm: ["/api/dm", ["to", "text", "ref"]],
  typing: ["/api/typing", ["room"]],
};

function wsURL(base, ticket) {
  const u = new URL(base + "/ws");
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  if (ticket) u.searchParams.set("ticket", ticket);
  return u.toString();
}

/** Bounded insertion-ordered id set. */
class SeenSet {
  constructor(limit) {
    this.limit = limit;
    this.set = new Set();
  }
  has(id) {
    return this.set.has(id);
  }
  add(id) {
    this.set.add(id);
    if (this.set.size > this.limit) {
      this.set.delete(this.set.values().next().value);
    }
  }
}

export class MeshchatClient {
  constructor(opts = {}) {
    this._origin = pageOrigin();
    this._base = normBase(opts.base || this._origin, this._origin);
    if (!this._base) throw new Error("meshchat: no base URL and no page origin");
    this._token = opts.token || "";
    this._onEvent = opts.onEvent || noop;
    this._onState = opts.onState || noop;
    this._connectTimeout = opts.connectTimeout ?? 5000;
    this._ackTimeout = opts.ackTimeout ?? 10000;
    this._backoffCap = opts.backoffCap ?? 5000;
    this._typingInterval = opts.typingInterval ?? 2000;
    this._retryCodes = new Set(opts.retryCodes || ["unavailable", "rate_limited"]);
    this._failoverAfter = opts.failoverAfter ?? 2;
    this._unavailable = 0; // "unavailable" answers in a row on this connection
    this._loadDms = opts.loadDms ?? true;
    this._WebSocket = opts.WebSocket || globalThis.WebSocket;
    this._fetch = opts.fetch || (globalThis.fetch && globalThis.fetch.bind(globalThis));
    this._EventSource = opts.EventSource || globalThis.EventSource;
    this._sseAfter = opts.sseAfter ?? 3;
    this._wsRetryInterval = opts.wsRetryInterval ?? 30000;

    this.state = State.CLOSED;
    this.transport = Transport.WEBSOCKET;
    this.user = "";
    this.node = "";
    this.nodes = [];

    this._current = this._base; // node of the live (or last good) connection
    this._ws = null;
    this._connId = 0;
    this._welcomed = false;
    this._stopped = true;
    this._attempt = 0; // failed attempts since the last welcome
    this._cands = [];
    this._candIdx = 0;
    this._retryTimer = null;
    this._conn = null; // {id, base, ws, opened, ended, timer}
    this._ticker = null;
    this._lastRx = 0;
    this._pingRef = "";
    this._pingInterval = opts.pingInterval ?? 25000;
    this._wsFails = 0; // WebSocket attempts in a row that failed before opening
    this._eventId = ""; // the events stream's resume point
    this._ackIds = new Map(); // id of a posted message -> its ref, until the stream delivers it
    this._sseSince = 0; // when the client last tried a WebSocket while on SSE
    this._probe = null; // that WebSocket
    this._pongTimeout = opts.pongTimeout ?? 10000;

    this._rooms = new Map(); // room -> {lastId, seen, joined, everJoined}
    this._dmSeen = new SeenSet(SEEN_LIMIT);
    this._lastDm = "";
    this._pending = new Map(); // ref -> {frame, room, resolve, reject, sentAt, conn, tries, timer}
    this._control = new Set(); // refs of the client's own requests (dms)
    this._dms = { ref: "", tries: 0, timer: null }; // the DM inbox request in flight
    this._joinRefs = new Map(); // ref of a join in flight -> room
    this._requests = new Map(); // ref of an invite or remove in flight -> {resolve, reject}
    this._typingAt = new Map();
    this._renewal = null; // a session replacement in flight (renewSession)
    this._refPrefix = randomHex(6);
    this._refSeq = 0;

    this._onOnline = () => {
      if (this.state === State.RECONNECTING && !this._ws) {
        this._attempt = 0;
        this._retryNow();
      }
    };
  }

  /** Joined room names. */
  get rooms() {
    return Array.from(this._rooms.keys());
  }

  /** Sends not yet acknowledged. */
  get pendingCount() {
    return this._pending.size;
  }

  /** A fresh unique ref, for callers that want to know it before send(). */
  newRef() {
    this._refSeq += 1;
    return `${this._refPrefix}-${this._refSeq}`;
  }

  /** Sets the token that fetches the tickets of the next connections. */
  setToken(token) {
    this._token = token || "";
  }

  /**
   * Tells the client that the page is replacing its session (a password
   * change re-issues the cookie and ends the old session, whose socket
   * closes with 4001). promise resolves with the new session's token, or
   * with "" / null when no new session came. A logout close that comes
   * before it settles waits for it before asking whether the session is
   * still good, so the page reconnects under the new session instead of
   * logging out. A page that is logging out may pass the logout request
   * likewise, and close() the client once it is done, so that no check
   * runs at all.
   */
  renewSession(promise) {
    const p = Promise.resolve(promise).then(
      (token) => {
        if (token) this._token = token;
      },
      noop,
    );
    this._renewal = p;
    p.then(() => {
      if (this._renewal === p) this._renewal = null;
    });
    return p;
  }

  /** Opens the connection; reconnects until close(), logged_out or banned. */
  connect() {
    if (!this._stopped) return;
    this._stopped = false;
    this._attempt = 0;
    if (globalThis.addEventListener) globalThis.addEventListener("online", this._onOnline);
    this._ticker = setInterval(() => this._tick(), 1000);
    this._setState(State.CONNECTING, { node: this._current });
    this._open(this._current);
  }

  /** Closes the connection for good and rejects pending sends. */
  close() {
    this._stop(State.CLOSED, "closed");
  }

  /**
   * Joins room (again after each reconnect, resuming after the last message
   * seen). With {private: true} a room that is new is created private, with
   * the user as its owner.
   */
  join(room, opts = {}) {
    if (!this._rooms.has(room)) {
      this._rooms.set(room, { lastId: "", seen: new SeenSet(SEEN_LIMIT), joined: false, everJoined: false });
    }
    const r = this._rooms.get(room);
    if (opts.private) r.private = true;
    if (!r.joined) this._sendJoin(room, r);
  }

  /** Invites user into the private room. Resolves with the invited frame. */
  invite(room, user) {
    return this._request({ type: "invite", room, user });
  }

  /** Removes user from the private room. Resolves with the removed frame. */
  remove(room, user) {
    return this._request({ type: "remove", room, user });
  }

  /** Leaves room; its pending sends are rejected with code "left". */
  leave(room) {
    const r = this._rooms.get(room);
    if (!r) return;
    this._rooms.delete(room);
    clearTimeout(r.joinTimer);
    for (const [ref, p] of this._pending) {
      if (p.room === room) this._reject(ref, p, new MeshchatError("left", "left the room"));
    }
    this._raw({ type: "leave", room });
  }

  /** Sends text to a joined room. Resolves with the acked message frame. */
  send(room, text, opts = {}) {
    const ref = opts.ref || this.newRef();
    if (!this._rooms.has(room)) {
      const p = Promise.reject(new MeshchatError("not_joined", `not in room ${room}`));
      p.ref = ref;
      return p;
    }
    // A message ends the typing burst (receivers clear the indicator on
    // it), so the next keystroke may announce typing again soon: after
    // TYPING_MIN_GAP, which servers are known to enforce, rather than the
    // full typingInterval.
    const last = this._typingAt.get(room);
    if (last) this._typingAt.set(room, last - this._typingInterval + TYPING_MIN_GAP);
    return this._enqueue({ type: "send", room, text, ref }, room);
  }

  /** Sends a direct message. Resolves with the acked dm frame. */
  dm(to, text, opts = {}) {
    const ref = opts.ref || this.newRef();
    return this._enqueue({ type: "dm", to, text, ref }, null);
  }

  /** Deletes message id of a joined room for everyone. Resolves with the deleted frame. */
  deleteMessage(room, id) {
    const ref = this.newRef();
    if (!this._rooms.has(room)) {
      const p = Promise.reject(new MeshchatError("not_joined", `not in room ${room}`));
      p.ref = ref;
      return p;
    }
    return this._enqueue({ type: "delete", room, id, ref }, room);
  }

  /** Tells the room the user is typing; sends at most once per typingInterval. */
  typing(room) {
    const r = this._rooms.get(room);
    if (!r || !r.joined) return false;
    const now = Date.now();
    if (now - (this._typingAt.get(room) || 0) < this._typingInterval) return false;
    this._typingAt.set(room, now);
    return this._raw({ type: "typing", room });
  }

  // ---- connection ----

  _setState(state, info = {}) {
    if (this.state === state && state !== State.RECONNECTING) return;
    this.state = state;
    try {
      this._onState(state, { attempt: this._attempt, transport: this.transport, ...info });
    } catch (e) {
      console.error("meshchat: onState:", e);
    }
  }

  _emit(ev) {
    try {
      this._onEvent(ev);
    } catch (e) {
      console.error("meshchat: onEvent:", e);
    }
  }

  // _open starts a connection attempt on base: it fetches a ticket, then
  // opens a WebSocket or, on Server-Sent Events, the events stream of the
  // joined rooms, resuming where the client stands. The attempt is
  // abandoned unless it opens within connectTimeout, ticket included.
  _open(base) {
    const sse = this.transport === Transport.SSE;
    const conn = { id: ++this._connId, base, ws: null, es: null, sse, opened: false, ended: false, timer: null };
    if (sse) conn.rooms = Array.from(this._rooms.keys());
    this._conn = conn;
    this._ws = conn; // an attempt is under way; its socket comes with the ticket
    this._welcomed = false;
    this._lastRx = Date.now();
    this._pingRef = "";
    conn.timer = setTimeout(() => {
      if (!conn.opened) this._abandon(conn, 1006);
    }, this._connectTimeout);
    this._ticket(base).then(
      (ticket) => {
        if (conn !== this._conn || conn.ended) return;
        if (sse) this._openSSE(conn, ticket);
        else this._openWS(conn, ticket);
      },
      () => this._ended(conn, 1006),
    );
  }

  _openWS(conn, ticket) {
    try {
      conn.ws = new this._WebSocket(wsURL(conn.base, ticket));
    } catch {
      // A malformed node URL: count it as a failed attempt.
      queueMicrotask(() => this._ended(conn, 1006));
      return;
    }
    this._arm(conn, conn.ws);
    conn.ws.onmessage = (e) => {
      if (conn !== this._conn || conn.ended) return;
      this._lastRx = Date.now();
      let f;
      try {
        f = JSON.parse(e.data);
      } catch {
        return;
      }
      if (f && typeof f.type === "string") this._handle(f, conn.base);
    };
    conn.ws.onclose = (e) => this._ended(conn, e.code);
    conn.ws.onerror = noop; // onclose follows and carries what can be known
  }

  // _arm makes source (the attempt's WebSocket or EventSource) the live
  // one: nothing received on it yet.
  _arm(conn, source) {
    this._ws = source;
    this._lastRx = Date.now();
    source.onopen = () => {
      conn.opened = true;
      clearTimeout(conn.timer);
    };
  }

  // _ticket fetches a one-time ticket from base (POST /api/ticket): with
  // the cookie on the page's own origin, and the token when there is one.
  // It resolves with "" when there is no way to ask or the node has no
  // tickets (404), and rejects when the node cannot be reached or refuses.
  async _ticket(base) {
    if (!this._fetch) return "";
    const headers = {};
    if (this._token) headers.Authorization = `Bearer ${this._token}`;
    const own = normBase(base, this._origin) === normBase(this._origin, this._origin);
    const res = await this._fetch(base + "/api/ticket", {
      method: "POST",
      headers,
      // Across origins the cookie goes too where it is shared
      // (--cookie-domain); the node answers with CORS for its peers.
      credentials: own ? "same-origin" : "include",
      cache: "no-store",
    });
    if (res.status === 404) return "";
    if (!res.ok) throw new Error(`ticket: ${res.status}`);
    const data = await res.json();
    if (!data || typeof data.ticket !== "string" || !data.ticket) throw new Error("ticket: no ticket");
    return data.ticket;
  }

  // _openSSE opens the events stream of conn.rooms.
  _openSSE(conn, ticket) {
    try {
      conn.es = new this._EventSource(sseURL(conn.base, ticket, conn.rooms, this._resumePoint()));
    } catch {
      queueMicrotask(() => this._ended(conn, 1006));
      return;
    }
    this._arm(conn, conn.es);
    conn.es.onmessage = (e) => {
      if (conn !== this._conn || conn.ended) return;
      this._lastRx = Date.now();
      if (e.lastEventId) this._eventId = e.lastEventId;
      let f;
      try {
        f = JSON.parse(e.data);
      } catch {
        return;
      }
      if (!f || typeof f.type !== "string" || f.type === "keepalive") return;
      if (f.type === "close") {
        this._abandon(conn, f.code);
        return;
      }
      this._handle(f, conn.base);
    };
    // The browser would reconnect to the same URL by itself; the client
    // reconnects as it does a WebSocket, with backoff and a fresh resume
    // point (and rooms).
    conn.es.onerror = () => {
      if (conn === this._conn && !conn.ended) this._abandon(conn, 1006);
    };
  }

  // _resumePoint is where an events stream resumes: the last one's id, or,
  // after a WebSocket, one made of the ids the client saw (the format is
  // "<room>:<id>,...,@:<dm id>", see docs/protocol.md).
  _resumePoint() {
    if (this._eventId) return this._eventId;
    const parts = [];
    for (const [room, r] of this._rooms) if (r.lastId) parts.push(`${room}:${r.lastId}`);
    if (this._lastDm) parts.push(`@:${this._lastDm}`);
    return parts.join(",");
  }

  // _closeConn closes a connection's socket or stream.
  _closeConn(conn, code) {
    try {
      if (conn.es) conn.es.close();
      else if (conn.ws) conn.ws.close(code);
    } catch {
      // already closing
    }
  }

  // _abandon gives up on a connection without waiting for the browser to
  // finish the closing handshake, which a dead peer never answers.
  _abandon(conn, code) {
    this._closeConn(conn);
    this._ended(conn, code);
  }

  // _setTransport switches to transport t and tells the page.
  _setTransport(t) {
    if (this.transport === t) return;
    this.transport = t;
    this._sseSince = Date.now();
    this._eventId = "";
    this._emit({ type: "transport", transport: t });
  }

  // _switch drops the live connection and connects again over transport t.
  _switch(t) {
    const conn = this._conn;
    if (conn && !conn.ended) {
      conn.ended = true;
      clearTimeout(conn.timer);
      this._closeConn(conn, 1000);
    }
    this._conn = null;
    this._ws = null;
    this._welcomed = false;
    for (const r of this._rooms.values()) r.joined = false;
    this._setTransport(t);
    this._attempt = 0;
    this._wsFails = 0;
    clearTimeout(this._retryTimer);
    this._setState(State.CONNECTING, { node: this._base });
    this._open(this.transport === Transport.SSE ? this._base : this._current);
  }

  // _probeWS tries a WebSocket while on Server-Sent Events, and switches
  // back when one opens.
  async _probeWS() {
    this._sseSince = Date.now();
    let ws;
    try {
      const ticket = await this._ticket(this._base);
      if (this._stopped || this.transport !== Transport.SSE || this._probe) return;
      ws = new this._WebSocket(wsURL(this._base, ticket));
    } catch {
      return;
    }
    this._probe = ws;
    const done = () => {
      clearTimeout(timer);
      if (this._probe === ws) this._probe = null;
    };
    const timer = setTimeout(() => {
      done();
      try {
        ws.close();
      } catch {
        // already closing
      }
    }, this._connectTimeout);
    ws.onopen = () => {
      done();
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
      if (!this._stopped && this.transport === Transport.SSE) this._switch(Transport.WEBSOCKET);
    };
    ws.onclose = done;
    ws.onerror = noop;
  }

  _ended(conn, code) {
    if (conn.ended) return;
    conn.ended = true;
    clearTimeout(conn.timer);
    if (conn !== this._conn) return;
    const wasWelcomed = this._welcomed;
    this._ws = null;
    this._welcomed = false;
    for (const r of this._rooms.values()) r.joined = false;
    this._failRequests();
    if (this._stopped) return;
    if (code === CLOSE_BANNED) {
      this._stop(State.BANNED, "banned");
      return;
    }
    if (code === CLOSE_LOGGED_OUT) {
      this._setState(State.RECONNECTING, { code, node: conn.base });
      this._recheck();
      return;
    }

    if (!conn.sse) {
      this._wsFails = conn.opened ? 0 : this._wsFails + 1;
      if (this._sseAfter > 0 && this._wsFails >= this._sseAfter && this._EventSource && this._fetch) {
        // WebSockets do not get through: Server-Sent Events may.
        this._setTransport(Transport.SSE);
        this._attempt = 0;
      }
    }
    if (wasWelcomed) {
      // A connection that worked: start over with the node it was on (or,
      // when that node announced a restart, with the others). So does a
      // removal from a private room (4004): the rooms resume, and the one
      // the user was removed from refuses the join and is dropped.
      this._attempt = 0;
      this._cands = this._candidates(code === CLOSE_SERVICE_RESTART || conn.elsewhere);
      this._candIdx = 0;
    } else {
      this._candIdx += 1;
      if (!conn.opened) this._probeSession(conn.base);
    }
    this._setState(State.RECONNECTING, { code, node: conn.base });
    this._schedule();
  }

  // _unavailableAnswer counts an "unavailable" answer to a request of the
  // live connection, and reports whether it made the client leave the
  // node (then the new connection repeats what is pending). Any other
  // answer resets the count (_served).
  _unavailableAnswer(f) {
    if (f.code !== "unavailable") return false;
    this._unavailable += 1;
    const conn = this._conn;
    if (this._unavailable < this._failoverAfter || !conn || conn.ended || conn.sse) return false;
    conn.elsewhere = true;
    this._abandon(conn, CLOSE_SERVICE_RESTART);
    return true;
  }

  _served() {
    this._unavailable = 0;
  }

  // _candidates lists where to try next: the current node, the nodes of the
  // last welcome, the page origin; with elsewhere set the current node goes
  // last.
  _candidates(elsewhere) {
    const current = normBase(this._current, this._origin);
    const list = [];
    const add = (b) => {
      const n = normBase(b, this._origin);
      if (n && n !== current && !list.includes(n)) list.push(n);
    };
    for (const n of this.nodes) add(n);
    if (this._origin) add(this._origin);
    if (elsewhere) list.push(current);
    else list.unshift(current);
    return list;
  }

  _schedule() {
    clearTimeout(this._retryTimer);
    let delay;
    if (this._attempt === 0) {
      delay = 100 + Math.random() * 200;
    } else {
      delay = Math.random() * Math.min(this._backoffCap, 250 * 2 ** this._attempt);
    }
    this._attempt += 1;
    this._retryTimer = setTimeout(() => this._retry(), delay);
  }

  _retryNow() {
    clearTimeout(this._retryTimer);
    this._retry();
  }

  _retry() {
    if (this._stopped || this._ws) return;
    if (this.transport === Transport.SSE) {
      // The stream and its posts go where the page came from.
      this._open(this._base);
      return;
    }
    if (!this._cands.length) this._cands = this._candidates(false);
    const base = this._cands[this._candIdx % this._cands.length];
    this._open(base);
  }

  // _probeSession tells "node unreachable" from "session gone". A browser
  // hides the status of a refused WebSocket handshake, so ask the page's
  // own node; other origins cannot be asked without CORS.
  async _probeSession(base) {
    if (normBase(base, this._origin) !== this._origin) return;
    const verdict = await this._askSession();
    if (this._stopped || this._welcomed) return;
    if (verdict === "banned") this._stop(State.BANNED, "banned");
    else if (verdict === "logged_out") this._stop(State.LOGGED_OUT, "logged_out");
    // "ok" or "unknown": keep trying
  }

  // _recheck follows a logout close (4001): the session that connection
  // ran on is gone, but the browser may hold a newer one of the same user
  // (renewSession), with which it reconnects.
  async _recheck() {
    if (this._renewal) await this._renewal;
    if (this._stopped) return; // the page ended the session meanwhile
    const verdict = await this._askSession();
    if (this._stopped || this._ws) return;
    if (verdict === "ok") {
      this._attempt = 0;
      this._cands = this._candidates(false);
      this._candIdx = 0;
      this._schedule();
    } else if (verdict === "banned") {
      this._stop(State.BANNED, "banned");
    } else {
      this._stop(State.LOGGED_OUT, "logged_out");
    }
  }

  // _askSession asks the page's own node about the session its cookie
  // holds: "ok" (one of this client's user), "logged_out" (none, or
  // another user's), "banned", or "unknown" (no answer).
  async _askSession() {
    if (!this._fetch || !this._origin) return "unknown";
    try {
      const res = await this._fetch(this._origin + "/api/me", { credentials: "same-origin", cache: "no-store" });
      if (res.status === 401) return "logged_out";
      if (res.status === 403) return "banned";
      if (res.status !== 200) return "unknown";
      const me = await res.json();
      return me && me.user && (!this.user || me.user === this.user) ? "ok" : "logged_out";
    } catch {
      return "unknown";
    }
  }

  _stop(state, code) {
    this._stopped = true;
    this._failRequests();
    clearTimeout(this._retryTimer);
    clearTimeout(this._dms.timer);
    clearInterval(this._ticker);
    if (globalThis.removeEventListener) globalThis.removeEventListener("online", this._onOnline);
    const conn = this._conn;
    this._conn = null;
    this._ws = null;
    this._welcomed = false;
    if (conn && !conn.ended) {
      conn.ended = true;
      clearTimeout(conn.timer);
      this._closeConn(conn, 1000);
    }
    if (this._probe) {
      try {
        this._probe.close();
      } catch {
        // already closing
      }
      this._probe = null;
    }
    for (const r of this._rooms.values()) r.joined = false;
    for (const [ref, p] of this._pending) {
      const why = { logged_out: "session ended", banned: "this account is banned" }[code] || "connection closed";
      this._reject(ref, p, new MeshchatError(code, why));
    }
    this._setState(state);
  }

  // ---- frames ----

  _raw(frame) {
    if (!this._ws || !this._welcomed) return false;
    if (this._conn && this._conn.sse) return this._post(this._conn, frame);
    try {
      this._ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // _post does what frame asks while on Server-Sent Events: a send, dm or
  // typing is posted; a join or leave opens the stream again with the new
  // rooms; the stream asks for the DM inbox itself, and shows it is alive
  // without pings. It reports whether the frame was taken.
  _post(conn, frame) {
    if (frame.type === "join" || frame.type === "leave") {
      this._reopenSoon();
      return true;
    }
    const post = POSTS[frame.type];
    if (!post) return true;
    const [path, fields] = post;
    const body = {};
    for (const k of fields) if (frame[k] !== undefined) body[k] = frame[k];
    const headers = { "Content-Type": "application/json" };
    if (this._token) headers.Authorization = `Bearer ${this._token}`;
    this._fetch(conn.base + path, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    }).then(
      async (res) => {
        let data = null;
        try {
          data = await res.json();
        } catch {
          // no body
        }
        if (res.ok) {
          if (data && frame.ref) this._posted(frame.ref, data);
          return;
        }
        if (!frame.ref) return;
        const e = (data && data.error) || {};
        // Not this request's fault (the node is going, the session
        // cannot be checked yet): try again, the ref makes it safe.
        const code = res.status === 401 || res.status >= 500 ? "unavailable" : e.code || "error";
        this._error({ type: "error", code, message: e.message || "", ref: frame.ref });
      },
      () => {
        if (frame.ref) this._error({ type: "error", code: "unavailable", message: "request failed", ref: frame.ref });
      },
    );
    return true;
  }

  // _posted takes the answer to a posted send or dm: the message was
  // stored. It is acknowledged when the stream delivers it (the answer may
  // overtake earlier messages), or now if the stream already did.
  _posted(ref, f) {
    const p = this._pending.get(ref);
    if (!p || !f.id) return;
    p.sentAt = 0; // stored: nothing to resend
    const r = f.type === "message" ? this._rooms.get(f.room) : null;
    const seen = f.type === "dm" ? this._dmSeen.has(f.id) : r && r.seen.has(f.id);
    if (seen) {
      this._ack(f);
      return;
    }
    this._ackIds.set(f.id, ref);
  }

  // _withAck gives a delivered message the ref of the post that stored it.
  _withAck(f) {
    if (!f || f.ref || !f.id || !this._ackIds.has(f.id)) return f;
    const ref = this._ackIds.get(f.id);
    this._ackIds.delete(f.id);
    return { ...f, ref };
  }

  // _reopenSoon opens the events stream again, once for all the joins and
  // leaves of this turn.
  _reopenSoon() {
    if (this._reopening) return;
    this._reopening = true;
    queueMicrotask(() => {
      this._reopening = false;
      const conn = this._conn;
      if (this._stopped || !conn || !conn.sse || conn.ended) return;
      const rooms = Array.from(this._rooms.keys());
      if (rooms.length === conn.rooms.length && rooms.every((r) => conn.rooms.includes(r))) return;
      conn.ended = true;
      clearTimeout(conn.timer);
      this._closeConn(conn);
      this._ws = null;
      this._welcomed = false;
      for (const r of this._rooms.values()) r.joined = false;
      this._open(conn.base);
    });
  }

  // Joins carry a ref so that an error answering one can be told apart:
  // a transient one (the room's node just died, the broker is down) is
  // retried with backoff instead of leaving the room silently unjoined.
  _sendJoin(room, r) {
    clearTimeout(r.joinTimer);
    const conn = this._conn;
    if (conn && conn.sse && !conn.ended) {
      // The stream joins its rooms itself; a new room needs a new stream.
      if (!conn.rooms.includes(room)) this._reopenSoon();
      return;
    }
    const ref = this.newRef();
    this._joinRefs.set(ref, room);
    r.joinRef = ref;
    const f = { type: "join", room, ref };
    if (r.lastId) f.after = r.lastId;
    if (r.private && !r.everJoined) f.private = true;
    this._raw(f);
  }

  _joinFailed(room, f) {
    const r = this._rooms.get(room);
    if (!r || r.joined || r.joinRef !== f.ref) return;
    if (!this._retryCodes.has(f.code)) {
      // Refused for good: forget the room, so that no reconnect asks again.
      this._rooms.delete(room);
      clearTimeout(r.joinTimer);
      for (const [ref, p] of this._pending) {
        if (p.room === room) this._reject(ref, p, new MeshchatError(f.code, f.message, f));
      }
      this._emit({ ...f, room, rejoin: r.everJoined });
      return;
    }
    if (this._unavailableAnswer(f)) return;
    r.joinTries = (r.joinTries || 0) + 1;
    const delay = Math.random() * Math.min(this._backoffCap, 100 * 2 ** r.joinTries);
    clearTimeout(r.joinTimer);
    r.joinTimer = setTimeout(() => {
      if (this._rooms.get(room) === r && !r.joined && this._welcomed) this._sendJoin(room, r);
    }, delay);
  }

  _handle(f, base) {
    switch (f.type) {
      case "welcome":
        return this._welcome(f, base);
      case "joined":
        return this._joined(f);
      case "message":
        return this._message(f);
      case "dm":
        return this._dm(f, false);
      case "dm_history":
        return this._dmHistory(f);
      case "deleted":
        this._ack(f);
        return this._emit(f);
      case "error":
        return this._error(f);
      case "pong":
        if (f.ref) this._control.delete(f.ref);
        this._pingRef = "";
        return undefined;
      case "invited":
      case "removed":
        this._answered(f);
        return this._emit(f);
      default:
        return this._emit(f);
    }
  }

  _welcome(f, base) {
    this._welcomed = true;
    this._attempt = 0;
    this._served();
    this._current = base;
    this.user = f.user || "";
    this.node = f.node || "";
    if (Array.isArray(f.nodes)) {
      this.nodes = f.nodes.map((n) => normBase(n, this._origin)).filter(Boolean);
    }
    this._cands = this._candidates(false);
    this._candIdx = 0;
    this._setState(State.CONNECTED, { node: base, name: this.node });
    this._emit({ type: "welcome", user: this.user, node: this.node, nodes: this.nodes.slice() });

    const sse = this._conn && this._conn.sse;
    if (!sse) this._eventId = "";
    for (const [room, r] of this._rooms) this._sendJoin(room, r);
    this._dms.tries = 0;
    if (!sse && (this._lastDm || this._loadDms)) this._requestDms();
    // DMs need no join; room sends wait for their room's joined.
    for (const [ref, p] of this._pending) if (!p.room) this._transmit(ref, p);
  }

  _joined(f) {
    const r = this._rooms.get(f.room);
    if (!r) return; // left while the join was in flight
    const rejoin = r.everJoined;
    r.joined = true;
    r.joinTries = 0;
    this._served();
    clearTimeout(r.joinTimer);
    if (r.joinRef) this._joinRefs.delete(r.joinRef);
    r.everJoined = true;
    const fresh = [];
    for (const h of Array.isArray(f.history) ? f.history : []) {
      const m = this._withAck(h);
      if (m && m.ref) this._ack(m);
      if (!m || !m.id || r.seen.has(m.id)) continue;
      r.seen.add(m.id);
      r.lastId = m.id;
      fresh.push(m);
    }
    this._emit({
      type: "joined",
      room: f.room,
      members: Array.isArray(f.members) ? f.members.slice() : [],
      recovered: !!f.recovered,
      rejoin,
      private: !!f.private,
      owner: typeof f.owner === "string" ? f.owner : "",
    });
    for (const m of fresh) this._emit({ type: "message", ...m, room: f.room, backlog: true });
    for (const [ref, p] of this._pending) if (p.room === f.room) this._transmit(ref, p);
  }

  _message(frame) {
    const f = this._withAck(frame);
    this._ack(f);
    const r = this._rooms.get(f.room);
    if (!r || !f.id || r.seen.has(f.id)) return;
    r.seen.add(f.id);
    r.lastId = f.id;
    this._emit(f);
  }

  _dm(frame, backlog) {
    const f = this._withAck(frame);
    this._ack(f);
    if (!f.id || this._dmSeen.has(f.id)) return;
    this._dmSeen.add(f.id);
    this._lastDm = f.id;
    this._emit(backlog ? { ...f, type: "dm", backlog: true } : f);
  }

  // _requestDms asks for the DM inbox: what came after the last DM seen,
  // or the latest ones.
  _requestDms() {
    clearTimeout(this._dms.timer);
    const ref = this.newRef();
    this._control.add(ref);
    this._dms.ref = ref;
    const req = { type: "dms", ref };
    if (this._lastDm) req.after = this._lastDm;
    this._raw(req);
  }

  // _dmsDeclined retries a DM inbox request the server could not serve
  // right now (its inbox is moving to another node, say), with jittered
  // backoff, on the same connection; a new connection asks afresh anyway.
  _dmsDeclined(f) {
    this._dms.ref = "";
    if (!this._retryCodes.has(f.code)) {
      this._emit({ type: "error", code: f.code, message: f.message || "" });
      return;
    }
    if (this._unavailableAnswer(f)) return;
    this._dms.tries += 1;
    const conn = this._conn;
    const delay = Math.random() * Math.min(this._backoffCap, 250 * 2 ** this._dms.tries);
    clearTimeout(this._dms.timer);
    this._dms.timer = setTimeout(() => {
      if (this._conn === conn && this._welcomed && !this._dms.ref) this._requestDms();
    }, delay);
  }

  _dmHistory(f) {
    if (f.ref) this._control.delete(f.ref);
    if (f.ref && f.ref === this._dms.ref) {
      this._dms.ref = "";
      this._dms.tries = 0;
      this._served();
    }
    const list = Array.isArray(f.history) ? f.history : [];
    let count = 0;
    for (const d of list) {
      if (d && d.id && !this._dmSeen.has(d.id)) count += 1;
      if (d) this._dm(d, true);
    }
    this._emit({ type: "dm_history", recovered: !!f.recovered, count });
  }

  _error(f) {
    if (f.ref && this._requests.has(f.ref)) {
      const req = this._requests.get(f.ref);
      this._requests.delete(f.ref);
      req.reject(new MeshchatError(f.code || "error", f.message, f));
      return;
    }
    if (f.ref && this._joinRefs.has(f.ref)) {
      const room = this._joinRefs.get(f.ref);
      this._joinRefs.delete(f.ref);
      this._joinFailed(room, f);
      return;
    }
    if (f.ref && this._control.delete(f.ref)) {
      if (f.ref === this._dms.ref) {
        this._dmsDeclined(f);
        return;
      }
      // An optional request the server declined; a server without "ping"
      // gets no more of them.
      if (f.ref === this._pingRef) {
        this._pingRef = "";
        if (f.code === "unknown_type") this._pingInterval = 0;
      }
      return;
    }
    const p = f.ref ? this._pending.get(f.ref) : null;
    if (!p) {
      this._emit(f);
      return;
    }
    if (this._retryCodes.has(f.code)) {
      if (this._unavailableAnswer(f)) return;
      p.tries += 1;
      p.sentAt = 0;
      clearTimeout(p.timer);
      const delay = Math.random() * Math.min(this._backoffCap, 250 * 2 ** p.tries);
      p.timer = setTimeout(() => {
        if (this._pending.get(f.ref) === p) this._transmit(f.ref, p);
      }, delay);
      return;
    }
    this._reject(f.ref, p, new MeshchatError(f.code || "error", f.message, f));
  }

  // ---- requests: invite and remove ----

  // _request sends a frame whose answer (or error) carries its ref. It is
  // not resent: the page says it failed and the user may try again.
  _request(frame) {
    const ref = this.newRef();
    return new Promise((resolve, reject) => {
      if (!this._raw({ ...frame, ref })) {
        reject(new MeshchatError("offline", "not connected; try again in a moment"));
        return;
      }
      this._requests.set(ref, { resolve, reject });
    });
  }

  _answered(f) {
    const req = f.ref ? this._requests.get(f.ref) : null;
    if (!req) return;
    this._requests.delete(f.ref);
    req.resolve(f);
  }

  // _failRequests rejects the requests the lost connection took: their
  // answers cannot come any more.
  _failRequests() {
    for (const req of this._requests.values()) {
      req.reject(new MeshchatError("offline", "the connection was lost; try again"));
    }
    this._requests.clear();
  }

  // ---- pending sends ----

  _enqueue(frame, room) {
    let resolve, reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.ref = frame.ref;
    const p = { frame, room, resolve, reject, sentAt: 0, conn: 0, tries: 0, timer: null };
    this._pending.set(frame.ref, p);
    this._transmit(frame.ref, p);
    return promise;
  }

  _transmit(ref, p) {
    if (p.room) {
      const r = this._rooms.get(p.room);
      if (!r || !r.joined) return; // sent once the room is (re)joined
    }
    if (this._raw(p.frame)) {
      p.sentAt = Date.now();
      p.conn = this._conn.id;
    }
  }

  _ack(f) {
    if (!f.ref) return;
    const p = this._pending.get(f.ref);
    if (!p) return;
    clearTimeout(p.timer);
    this._pending.delete(f.ref);
    this._served();
    p.resolve(f);
  }

  _reject(ref, p, err) {
    clearTimeout(p.timer);
    this._pending.delete(ref);
    p.reject(err);
  }

  // _tick resends what the live connection took but never answered (the
  // same ref makes that safe) and checks that the connection is alive: a
  // peer that vanished without closing TCP is only noticed by silence.
  _tick() {
    if (this.transport === Transport.SSE && !this._probe && Date.now() - this._sseSince > this._wsRetryInterval) {
      this._probeWS();
    }
    const conn = this._conn;
    if (!this._welcomed || !conn) return;
    const now = Date.now();
    for (const [ref, p] of this._pending) {
      if (p.sentAt && p.conn === conn.id && now - p.sentAt > this._ackTimeout) {
        this._transmit(ref, p);
      }
    }
    if (!this._pingInterval) return;
    const quiet = now - this._lastRx;
    if (this._pingRef && quiet > this._pingInterval + this._pongTimeout) {
      this._abandon(conn, 4000);
    } else if (!this._pingRef && quiet > this._pingInterval) {
      this._pingRef = this.newRef();
      this._control.add(this._pingRef);
      this._raw({ type: "ping", ref: this._pingRef });
    }
  }
}
