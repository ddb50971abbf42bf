// Tests of the app's model of conversations (model.js), driven through the
// real meshchat.js client on a scripted fake WebSocket. The Go test
// TestModel opens model_test.html in Chromium and reads the results.

import {
  Conversations,
  MAX_ITEMS,
  authErrorText,
  memoryStore,
  newPasswordProblem,
  retryAfterSeconds,
  roomErrorText,
  tokenFromHash,
  waitText,
} from "/model.js";
import { FakeSocket, connectWelcome, eq, run, ticketing, until } from "./harness.js";

// setup makes alice's model on a store (pass the one of an earlier model
// for a reload) holding the given lists, and records its changes.
function setup({ store = memoryStore(), lists = {} } = {}) {
  FakeSocket.all = [];
  for (const [k, v] of Object.entries(lists)) store.set(k, v);
  const changes = [];
  const model = new Conversations({
    me: "alice",
    token: "tok",
    store,
    onChange: (ch) => changes.push(ch),
    client: { WebSocket: FakeSocket, pingInterval: 0, fetch: ticketing() },
  });
  model.start();
  return { model, store, changes };
}

function msg(id, extra = {}) {
  return { type: "message", room: "general", id, from: "bob", text: "t" + id, ts: 1, ...extra };
}

function dm(id, extra = {}) {
  return { type: "dm", id, from: "bob", to: "alice", text: "t" + id, ts: 1, ...extra };
}

const ids = (c) => c.items.map((it) => it.id);
const keys = (model) => model.listed().map((c) => c.key);

// reconnect drops ws and welcomes alice on the next socket.
async function reconnect(ws) {
  const n = FakeSocket.all.length;
  ws.drop(1006);
  await until("reconnect", () => FakeSocket.all.length > n);
  return connectWelcome();
}

function refused(code, extra = {}) {
  return { status: 400, data: { error: { code, message: "m" } }, ...extra };
}

const tests = {
  async "sign-in errors say what happened, by code and action"() {
    const now = Date.parse("2030-01-01T00:00:00Z");
    eq("wrong password", authErrorText(refused("bad_credentials")), "Wrong name or password.");
    eq("wrong old password", authErrorText(refused("bad_credentials"), "password"), "The current password is wrong.");
    eq("refused token", authErrorText(refused("bad_credentials"), "token").startsWith("The app's sign-in was refused"), true);
    eq("taken", authErrorText(refused("name_taken"), "register").startsWith("That name is taken"), true);
    eq("weak", authErrorText(refused("weak_password"), "register"), "Use a password of at least 8 characters.");
    eq("too long", authErrorText({ data: { error: { code: "weak_password", message: "a password may have at most 1024 bytes" } } }),
      "That password is too long.");
    eq("banned", authErrorText(refused("banned")), "This account is banned.");
    eq("registration off", authErrorText(refused("forbidden"), "register"), "This server does not take new accounts.");
    eq("retry in seconds", authErrorText(refused("too_many_attempts", { retryAfter: "42" }), "signin", now),
      "Too many attempts. Try again in 42 seconds.");
    eq("retry at a date", authErrorText(refused("too_many_attempts", { retryAfter: "Tue, 01 Jan 2030 00:05:00 GMT" }), "signin", now),
      "Too many attempts. Try again in 5 minutes.");
    eq("retry unknown", authErrorText(refused("too_many_attempts")), "Too many attempts. Try again later.");
    eq("unknown code keeps the server's words", authErrorText(refused("something_new")), "m");
    eq("no answer", authErrorText(null), "Cannot reach the server. Try again.");
    eq("no body", authErrorText({ status: 502, data: null }), "Something went wrong (502). Try again.");
  },

  async "Retry-After and waits"() {
    const now = Date.parse("2030-01-01T00:00:00Z");
    eq("seconds", retryAfterSeconds("7", now), 7);
    eq("zero means soon", retryAfterSeconds("0", now), 1);
    eq("date", retryAfterSeconds("Tue, 01 Jan 2030 00:00:30 GMT", now), 30);
    eq("past date", retryAfterSeconds("Mon, 31 Dec 2029 00:00:00 GMT", now), 1);
    eq("none", retryAfterSeconds(null, now), 0);
    eq("junk", retryAfterSeconds("soon", now), 0);
    eq("waits", [1, 5, 89, 90, 3600, 7200].map(waitText),
      ["in a second", "in 5 seconds", "in 89 seconds", "in 2 minutes", "in 60 minutes", "in 2 hours"]);
  },

  async "a new password is checked before it is sent"() {
    eq("short", newPasswordProblem("1234567", "1234567"), "Use a password of at least 8 characters.");
    eq("counts characters, not bytes", newPasswordProblem("ééééééé", "ééééééé") !== "", true);
    eq("differs", newPasswordProblem("12345678", "12345679"), "The two passwords differ.");
    eq("good", newPasswordProblem("correct horse", "correct horse"), "");
  },

  async "a sign-in token is taken out of the URL fragment"() {
    eq("alone", tokenFromHash("#token=a.b.c"), { token: "a.b.c", hash: "" });
    eq("with others", tokenFromHash("#room=general&token=x.y.z"), { token: "x.y.z", hash: "#room=general" });
    eq("none", tokenFromHash("#room=general"), { token: "", hash: "#room=general" });
    eq("empty", tokenFromHash(""), { token: "", hash: "" });
    eq("empty token", tokenFromHash("#token="), { token: "", hash: "" });
  },

  async "history merges with live messages, each once, and a gap is noticed"() {
    const t = setup({ lists: { rooms: ["general"] } });
    const ws = await connectWelcome();
    ws.recv({ type: "joined", room: "general", members: ["alice", "bob"], history: [msg("1"), msg("2")], recovered: false });
    ws.recv(msg("2"));
    ws.recv(msg("3"));
    const c = t.model.get("r:general");
    eq("first join", ids(c), ["1", "2", "3"]);
    eq("no notice on the first join", c.notice, "");

    const ws2 = await reconnect(ws);
    eq("resumes after the last", ws2.last("join").after, "3");
    // The server lost track: it sends its latest, which overlaps.
    ws2.recv({ type: "joined", room: "general", members: ["alice"], history: [msg("2"), msg("3"), msg("4")], recovered: false });
    ws2.recv(msg("5"));
    eq("merged", ids(c), ["1", "2", "3", "4", "5"]);
    if (!c.notice) throw new Error("a rejoin that was not recovered says nothing");
    eq("bob offline", c.members.get("bob"), false);
    t.model.stop();
  },

  async "a message that comes live and again in history is kept once"() {
    const t = setup({ lists: { rooms: ["general"] } });
    t.model.handle(msg("7"));
    t.model.handle(msg("7", { backlog: true }));
    t.model.handle(dm("8-u"));
    t.model.handle(dm("8-u", { backlog: true }));
    eq("room", ids(t.model.get("r:general")), ["7"]);
    eq("dm", ids(t.model.get("d:bob")), ["8-u"]);
    eq("items added", t.changes.filter((ch) => ch.type === "item").map((ch) => ch.item.id), ["7", "8-u"]);
    t.model.stop();
  },

  async "a conversation keeps its last messages and forgets the ids of the dropped"() {
    const t = setup({ lists: { rooms: ["general"] } });
    for (let i = 0; i <= MAX_ITEMS; i++) t.model.handle(msg(String(i)));
    const c = t.model.get("r:general");
    eq("kept", c.items.length, MAX_ITEMS);
    eq("oldest kept", c.items[0].id, "1");
    eq("dropped", t.changes.filter((ch) => ch.type === "item").at(-1).dropped, 1);
    eq("ids", c.ids.size, MAX_ITEMS);
    t.model.stop();
  },

  async "an own message is pending until delivered, also when history brings it first"() {
    const t = setup({ lists: { rooms: ["general"], current: "r:general" } });
    const ws = await connectWelcome();
    ws.recv({ type: "joined", room: "general", members: ["alice"], history: [], recovered: true });
    const c = t.model.get("r:general");

    t.model.send("one");
    const one = ws.last("send");
    eq("pending", [...c.pending.values()].map((it) => it.text), ["one"]);
    ws.recv(msg("1", { from: "alice", text: "one", ref: one.ref }));
    // The ack itself replaces the placeholder, before the send resolves.
    eq("acked at once", c.pending.size, 0);
    eq("delivered", ids(c), ["1"]);

    t.model.send("two");
    const two = ws.last("send");
    const ws2 = await reconnect(ws);
    ws2.recv({ type: "joined", room: "general", members: ["alice"], history: [msg("2", { from: "alice", text: "two" })], recovered: true });
    eq("resent", ws2.last("send").ref, two.ref);
    eq("history shows it", ids(c), ["1", "2"]);
    ws2.recv(msg("2", { from: "alice", text: "two", ref: two.ref }));
    await until("placeholder gone", () => c.pending.size === 0);
    eq("shown once", ids(c), ["1", "2"]);
    eq("acked", t.changes.filter((ch) => ch.type === "acked").map((ch) => ch.ref), [one.ref, two.ref]);
    eq("own messages are not unread", c.unread, 0);
    t.model.stop();
  },

  async "a message not sent is marked failed"() {
    const t = setup({ lists: { rooms: ["general"], current: "r:general" } });
    const ws = await connectWelcome();
    ws.recv({ type: "joined", room: "general", members: ["alice"], history: [], recovered: true });
    t.model.send("x");
    ws.recv({ type: "error", code: "bad_text", message: "nope", ref: ws.last("send").ref });
    const ch = await until("failed", () => t.changes.find((ch) => ch.type === "failed"));
    eq("reason", ch.item.failed, "nope");
    eq("code", ch.err.code, "bad_text");
    eq("no longer pending", t.model.get("r:general").pending.size, 0);
    t.model.stop();
  },

  async "unread counts what came out of view"() {
    const t = setup({ lists: { rooms: ["general", "dev"], current: "r:general" } });
    const ws = await connectWelcome();
    ws.recv({ type: "joined", room: "general", members: [], history: [], recovered: true });
    ws.recv({ type: "joined", room: "dev", members: [], history: [msg("d1", { room: "dev" })], recovered: true });
    const general = t.model.get("r:general");
    const dev = t.model.get("r:dev");
    eq("history is not unread", dev.unread, 0);
    ws.recv(msg("d2", { room: "dev" }));
    ws.recv(msg("d3", { room: "dev", from: "alice" }));
    ws.recv(msg("g1"));
    eq("other room", dev.unread, 1);
    eq("own message", dev.unread, 1);
    eq("open room", general.unread, 0);

    t.model.setHidden(true);
    ws.recv(msg("g2"));
    eq("open room while hidden", general.unread, 1);
    eq("total", t.model.unreadTotal(), 2);
    t.model.setHidden(false);
    eq("seen again", general.unread, 0);
    t.model.select("r:dev");
    eq("opened", dev.unread, 0);
    eq("total after", t.model.unreadTotal(), 0);
    t.model.stop();
  },

  async "a closed DM stays closed until the peer writes, also over a reload"() {
    const t = setup({ lists: { rooms: ["general"] } });
    const ws = await connectWelcome();
    ws.recv({ type: "dm_history", history: [dm("1-u", { ts: 10 })], recovered: false, ref: ws.last("dms").ref });
    eq("the inbox lists bob", keys(t.model), ["r:general", "d:bob"]);
    eq("inbox backlog is not unread", t.model.get("d:bob").unread, 0);
    t.model.openDm("bob");
    eq("open", t.model.current, "d:bob");
    t.model.closeDm("bob");
    eq("off the list", keys(t.model), ["r:general"]);
    eq("the first on the list opens", t.model.current, "r:general");
    eq("saved closed", t.store.get("closedDms", {}), { bob: 10 });
    t.model.stop();

    // A reload: the inbox comes again, with what bob sent before closing.
    const r = setup({ store: t.store });
    eq("still closed", keys(r.model), ["r:general"]);
    const ws2 = await connectWelcome();
    ws2.recv({ type: "dm_history", history: [dm("1-u", { ts: 10 })], recovered: false, ref: ws2.last("dms").ref });
    eq("closed after the backlog", keys(r.model), ["r:general"]);
    ws2.recv({ type: "dm", id: "2-u", from: "alice", to: "bob", text: "from another tab", ts: 11 });
    eq("closed after an own message", keys(r.model), ["r:general"]);
    ws2.recv(dm("3-u", { ts: 12 }));
    eq("back with bob's message", keys(r.model), ["r:general", "d:bob"]);
    const d = r.model.get("d:bob");
    eq("whole", ids(d), ["1-u", "2-u", "3-u"]);
    eq("unread", d.unread, 1);
    eq("saved open", [r.store.get("dms", []), r.store.get("closedDms", {})], [["bob"], {}]);

    r.model.closeDm("bob");
    r.model.openDm("bob");
    eq("opened by name", [keys(r.model), r.model.current, ids(d)], [["r:general", "d:bob"], "d:bob", ["1-u", "2-u", "3-u"]]);
    r.model.stop();
  },

  async "a DM shows its peer online while a joined room does"() {
    const t = setup({ lists: { rooms: ["general"], dms: ["bob"] } });
    const ws = await connectWelcome();
    const d = t.model.get("d:bob");
    eq("offline before any room", d.members.get("bob"), false);
    ws.recv({ type: "joined", room: "general", members: ["alice", "bob"], history: [], recovered: true });
    eq("online in general", d.members.get("bob"), true);
    ws.recv({ type: "presence", room: "general", user: "bob", online: false });
    eq("gone from general", d.members.get("bob"), false);
    t.model.stop();
  },

  async "leaving the open room opens the first left on the list"() {
    const t = setup({ lists: { rooms: ["general", "dev"], current: "r:dev" } });
    const ws = await connectWelcome();
    t.model.leaveRoom("dev");
    eq("leave sent", ws.last("leave"), { type: "leave", room: "dev" });
    eq("lists", keys(t.model), ["r:general"]);
    eq("open", t.model.current, "r:general");
    eq("saved", [t.store.get("rooms", []), t.store.get("current", "")], [["general"], "r:general"]);
    t.model.stop();
  },

  async "typing shows until it expires or the typist's message comes"() {
    const t = setup({ lists: { rooms: ["general"] } });
    const ws = await connectWelcome();
    ws.recv({ type: "joined", room: "general", members: ["alice", "bob"], history: [], recovered: true });
    const c = t.model.get("r:general");
    ws.recv({ type: "typing", room: "general", user: "bob" });
    ws.recv({ type: "typing", room: "general", user: "alice" });
    const now = Date.now();
    eq("bob types", t.model.typers(c, now).users, ["bob"]);
    eq("expired", t.model.typers(c, now + 60000).users, []);
    ws.recv({ type: "typing", room: "general", user: "bob" });
    ws.recv(msg("1"));
    eq("his message ends it", t.model.typers(c).users, []);
    t.model.stop();
  },

  async "a deleted message leaves its room, live and when a resume tells of it"() {
    const t = setup({ lists: { rooms: ["general"] } });
    const ws = await connectWelcome();
    ws.recv({ type: "joined", room: "general", members: ["alice", "bob"], history: [msg("1"), msg("2"), msg("3")], recovered: false });
    const c = t.model.get("r:general");
    ws.recv({ type: "deleted", room: "general", id: "2", by: "bob" });
    eq("live", ids(c), ["1", "3"]);
    eq("told", t.changes.filter((ch) => ch.type === "removed").map((ch) => [ch.conv.key, ch.id]), [["r:general", "2"]]);
    ws.recv({ type: "deleted", room: "general", id: "2", by: "bob" });
    ws.recv({ type: "deleted", room: "general", id: "9", by: "bob" });
    eq("an unknown or repeated deletion changes nothing", t.changes.filter((ch) => ch.type === "removed").length, 1);

    const ws2 = await reconnect(ws);
    eq("resumes after the last", ws2.last("join").after, "3");
    ws2.recv({ type: "joined", room: "general", members: ["alice", "bob"], history: [], recovered: true });
    ws2.recv({ type: "deleted", room: "general", id: "3", by: "root" });
    eq("after a resume", ids(c), ["1"]);
    t.model.stop();
  },

  async "own messages may be deleted, and any by an admin"() {
    const t = setup({ lists: { rooms: ["general"], dms: ["bob"] } });
    const ws = await connectWelcome();
    ws.recv({ type: "joined", room: "general", members: ["alice", "bob"], history: [msg("1"), msg("2", { from: "alice" })], recovered: true });
    const c = t.model.get("r:general");
    const [bobs, mine] = c.items;
    eq("not an admin", [t.model.canDelete(c, bobs), t.model.canDelete(c, mine)], [false, true]);
    t.model.handle(dm("5-u", { from: "alice", to: "bob" }));
    const d = t.model.get("d:bob");
    eq("not a DM", t.model.canDelete(d, d.items[0]), false);
    t.model.setAdmin(true);
    eq("admin told", t.changes.at(-1).type, "admin");
    eq("an admin", [t.model.canDelete(c, bobs), t.model.canDelete(c, mine)], [true, true]);

    t.model.deleteMessage("r:general", "1");
    const sent = ws.last("delete");
    eq("frame", [sent.room, sent.id, typeof sent.ref], ["general", "1", "string"]);
    ws.recv({ type: "deleted", room: "general", id: "1", by: "alice", ref: sent.ref });
    eq("deleted", ids(c), ["2"]);

    t.model.deleteMessage("r:general", "2");
    ws.recv({ type: "error", code: "forbidden", message: "no", ref: ws.last("delete").ref });
    await until("the refusal", () => t.changes.some((ch) => ch.type === "error" && ch.code === "forbidden"));
    eq("kept", ids(c), ["2"]);
    t.model.stop();
  },

  async "a private room is created, marked and managed by its owner or an admin"() {
    const t = setup({ lists: { rooms: [] } });
    const ws = await connectWelcome();
    t.model.joinRoom("plans", { private: true });
    eq("created private", noRefJoin(ws.last("join")), { type: "join", room: "plans", private: true });
    ws.recv({ type: "joined", room: "plans", members: ["alice"], history: [], recovered: true, private: true, owner: "alice" });
    const c = t.model.get("r:plans");
    eq("marked", [c.private, c.owner], [true, "alice"]);
    eq("the owner manages it", t.model.canManage(c), true);
    t.model.joinRoom("general");
    ws.recv({ type: "joined", room: "general", members: ["alice"], history: [], recovered: true });
    eq("plain join", noRefJoin(ws.last("join")), { type: "join", room: "general" });
    eq("a public room is managed by nobody", t.model.canManage(t.model.get("r:general"), true), false);

    const invited = t.model.invite("plans", "bob");
    const inv = ws.last("invite");
    ws.recv({ type: "invited", room: "plans", user: "bob", ref: inv.ref });
    eq("invite told", await invited, { ok: true, text: "bob was invited to #plans." });
    const removed = t.model.remove("plans", "bob");
    ws.recv({ type: "error", code: "forbidden", message: "no", ref: ws.last("remove").ref });
    eq("refused remove told", await removed, { ok: false, text: "Only the owner of #plans or an admin can do that." });
    t.model.stop();

    // Carol's room, seen by alice: not hers, unless she is an admin.
    const b = setup({ lists: { rooms: ["plans"] } });
    const ws2 = await connectWelcome();
    ws2.recv({ type: "joined", room: "plans", members: ["alice", "carol"], history: [], recovered: true, private: true, owner: "carol" });
    const bc = b.model.get("r:plans");
    eq("a member does not manage", b.model.canManage(bc), false);
    eq("an admin does", b.model.canManage(bc, true), true);
    b.model.stop();
  },

  async "an invitation is listed until it is taken up"() {
    const t = setup({ lists: { rooms: ["general"], current: "r:general" } });
    const ws = await connectWelcome();
    ws.recv({ type: "invitation", room: "plans", by: "bob" });
    ws.recv({ type: "invitation", room: "general", by: "bob" });
    eq("listed, not for a room already joined", [...t.model.invitations], [["plans", "bob"]]);
    t.model.acceptInvitation("plans");
    eq("taken up", t.model.invitations.size, 0);
    eq("joins", noRefJoin(ws.last("join")), { type: "join", room: "plans" });
    eq("opens it", t.model.current, "r:plans");
    ws.recv({ type: "invitation", room: "side", by: "carol" });
    t.model.dismissInvitation("side");
    eq("dismissed", t.model.invitations.size, 0);
    eq("changes told", t.changes.filter((ch) => ch.type === "invitations").length, 4);
    t.model.stop();
  },

  async "a room that refuses is dropped with a note"() {
    const t = setup({ lists: { rooms: ["general", "plans"], current: "r:plans" } });
    const ws = await connectWelcome();
    ws.recv({ type: "joined", room: "general", members: ["alice"], history: [], recovered: true });
    ws.recv({ type: "error", code: "forbidden", message: "private", ref: ws.sent.find((f) => f.type === "join" && f.room === "plans").ref });
    eq("off the list", keys(t.model), ["r:general"]);
    eq("another opens", t.model.current, "r:general");
    eq("saved", t.store.get("rooms", []), ["general"]);
    const note = t.changes.find((ch) => ch.type === "refused");
    eq("note", [note.room, note.code, note.text], ["plans", "forbidden", "#plans is private: ask its owner for an invitation."]);
    eq("no generic error", t.changes.filter((ch) => ch.type === "error").length, 0);

    // Removed from a room it was in: the socket closes with 4004, and
    // the rejoin is refused.
    t.model.joinRoom("secret");
    ws.recv({ type: "joined", room: "secret", members: ["alice"], history: [], recovered: true, private: true, owner: "bob" });
    const n = FakeSocket.all.length;
    ws.drop(4004);
    await until("reconnect", () => FakeSocket.all.length > n);
    const ws2 = await connectWelcome();
    const rejoin = ws2.sent.find((f) => f.type === "join" && f.room === "secret");
    ws2.recv({ type: "error", code: "forbidden", message: "private", ref: rejoin.ref });
    eq("removed note", t.changes.filter((ch) => ch.type === "refused").at(-1).text, "You were removed from #secret.");
    eq("gone", keys(t.model), ["r:general"]);
    t.model.stop();
  },

  async "room errors say what happened"() {
    eq("exists", roomErrorText("room_exists", "plans"), "#plans is a public room already: pick another name for a private room.");
    eq("not private", roomErrorText("not_found", "plans", "invite"), "#plans is not a private room.");
    eq("bad name", roomErrorText("bad_name", "plans", "invite"), "Names are 1–32 letters, digits, _, . or -.");
    eq("unknown keeps the server's words", roomErrorText("new_code", "plans", "join", { message: "m" }), "m");
  },
};

// noRefJoin drops the ref of a join frame.
function noRefJoin(f) {
  if (!f) return f;
  const { ref, ...rest } = f;
  return rest;
}

run(tests);
