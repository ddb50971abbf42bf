// The harness of the in-browser tests: a scripted fake WebSocket, waiting
// for a condition, comparing values, and the runner. A Go test opens a
// page whose script imports this, passes its tests to run, and reads
// window.__results once window.__done is set (see pageTests in
// browser_test.go).

export class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = false;
    FakeSocket.all.push(this);
  }
  send(data) {
    if (this.closed) throw new Error("send on closed socket");
    this.sent.push(JSON.parse(data));
  }
  close() {
    if (this.closed) return;
    this.closed = true;
    setTimeout(() => this.onclose && this.onclose({ code: 1005 }), 0);
  }
  // test side
  open() {
    this.onopen && this.onopen({});
  }
  recv(frame) {
    this.onmessage && this.onmessage({ data: JSON.stringify(frame) });
  }
  drop(code) {
    this.closed = true;
    this.onclose && this.onclose({ code });
  }
  last(type) {
    return this.sent.filter((f) => f.type === type).at(-1);
  }
}

// FakeEventSource is a scripted events stream (Server-Sent Events).
export class FakeEventSource {
  static all = [];
  constructor(url) {
    this.url = url;
    this.closed = false;
    FakeEventSource.all.push(this);
  }
  close() {
    this.closed = true;
  }
  // test side
  open() {
    this.onopen && this.onopen({});
  }
  recv(frame, id = "") {
    this.onmessage && this.onmessage({ data: JSON.stringify(frame), lastEventId: id });
  }
  error() {
    this.onerror && this.onerror({});
  }
  param(name) {
    return new URL(this.url).searchParams.getAll(name);
  }
}

// fakeFetch records requests; each waits for the test to answer it with
// answer(status, body).
export function fakeFetch() {
  const calls = [];
  const fetch = (url, init) =>
    new Promise((resolve) => {
      calls.push({
        url,
        init,
        body: init && init.body ? JSON.parse(init.body) : null,
        answer: (status, body) =>
          resolve({ ok: status >= 200 && status < 300, status, json: async () => body }),
      });
    });
  return { fetch, calls };
}

// ticketing wraps fetch (the browser's when none is given): a POST
// /api/ticket is answered at once with the ticket "tik.<bearer token>",
// and recorded in ticketing.calls; every other request goes to fetch.
export function ticketing(fetch) {
  const inner = fetch || globalThis.fetch.bind(globalThis);
  const wrapped = (url, init) => {
    if (!String(url).endsWith("/api/ticket")) return inner(url, init);
    const auth = (init && init.headers && init.headers.Authorization) || "";
    ticketing.calls.push({ url, init });
    const ticket = "tik." + auth.replace(/^Bearer /, "");
    return Promise.resolve({ ok: true, status: 200, json: async () => ({ ticket, expires_in: 30 }) });
  };
  return wrapped;
}
ticketing.calls = [];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(what, fn, ms = 3000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await sleep(5);
  }
}

export function eq(what, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

export const origin = location.origin;
export const other = "http://127.0.0.1:1"; // never dialled for real: sockets are fake

// connectWelcome opens the newest socket and welcomes alice on it.
export async function connectWelcome(nodes = [origin, other]) {
  const ws = await until("socket", () => FakeSocket.all.at(-1));
  ws.open();
  ws.recv({ type: "welcome", user: "alice", node: "n1", nodes });
  return ws;
}

// run runs the tests, an object of name -> async function, one after the
// other, and publishes the results.
export async function run(tests) {
  const results = [];
  for (const [name, fn] of Object.entries(tests)) {
    try {
      await fn();
      results.push({ name, ok: true });
    } catch (e) {
      results.push({ name, ok: false, error: String(e && e.stack ? e.stack : e) });
    }
  }
  window.__results = results;
  window.__done = true;
  document.getElementById("out").textContent = JSON.stringify(results, null, 2);
}
