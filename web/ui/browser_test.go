package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	cdpnetwork "github.com/chromedp/cdproto/network"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/web/ui"
)

// waitFor bounds every wait on the page; the steps normally take
// milliseconds, the margin is for a loaded 2-core machine under -race.
const waitFor = 15 * time.Second

// chromium finds the browser, or ends the test the way the team agreed:
// skip locally, fail in CI. Browser tests are skipped in -short mode.
func chromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	return clustertest.RequireBinary(t, "chromium", "chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
}

// newBrowser starts its own Chromium with a fresh profile, so two of them
// share no cookies or storage: two users on two machines.
func newBrowser(t *testing.T, execPath string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(execPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		// Both pages must keep running timers and sockets while the other
		// one is driven.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser now, so a failure shows up here and not mid-scenario.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// watchErrors collects what the page reports as errors: uncaught
// exceptions, console.error, and the browser's own error entries (a
// failed request among them). The result reads what came so far.
func watchErrors(t *testing.T, ctx context.Context) func() []string {
	t.Helper()
	return watch(t, ctx, func(ev any) (string, bool) {
		switch ev := ev.(type) {
		case *cdpruntime.EventExceptionThrown:
			msg := "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
			return msg, true
		case *cdpruntime.EventConsoleAPICalled:
			if ev.Type != cdpruntime.ConsoleAPICalledTypeError {
				return "", false
			}
			msg := "console.error"
			for _, a := range ev.Args {
				msg += " " + string(a.Value)
			}
			return msg, true
		case *cdplog.EventEntryAdded:
			return ev.Entry.Text + " " + ev.Entry.URL, ev.Entry.Level == cdplog.EntryLevelError
		}
		return "", false
	})
}

// watchURLs collects the URLs of every request the page makes and of
// every WebSocket it opens; the result reads what came so far.
func watchURLs(t *testing.T, ctx context.Context) func() []string {
	t.Helper()
	return watch(t, ctx, func(ev any) (string, bool) {
		switch ev := ev.(type) {
		case *cdpnetwork.EventWebSocketCreated:
			return ev.URL, true
		case *cdpnetwork.EventRequestWillBeSent:
			return ev.Request.URL, true
		}
		return "", false
	})
}

// watch collects what pick takes from the page's events; the result
// reads what came so far.
func watch(t *testing.T, ctx context.Context, pick func(ev any) (string, bool)) func() []string {
	t.Helper()
	var mu sync.Mutex
	var got []string
	err := chromedp.Listen(ctx, func(ev any) {
		if v, ok := pick(ev); ok {
			mu.Lock()
			got = append(got, v)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("watch the page: %v", err)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// noPageErrors fails the test for each error who's page reported so far
// (errs from watchErrors).
func noPageErrors(t *testing.T, who string, errs func() []string) {
	t.Helper()
	for _, e := range errs() {
		t.Errorf("%s's page logged an error: %s", who, e)
	}
}

// duplicateMessages counts the delivered messages the open conversation
// shows more than once (by id).
func duplicateMessages(t *testing.T, ctx context.Context) int {
	t.Helper()
	return eval[int](t, ctx, `(() => { const ids = [...document.querySelectorAll('#messages li[data-id]')].map(li => li.dataset.id);
		return ids.length - new Set(ids).size; })()`)
}

// startCluster starts count whole meshchat nodes (mesh broker, gossip,
// cookie sessions, the web server with this UI) on free ports of
// 127.0.0.1, joined into one cluster, so a session from one is valid on
// all.
func startCluster(t *testing.T, count int) []*node.Node {
	t.Helper()
	return nodetest.StartCluster(t, count, nodetest.Options{})
}

func startServer(t *testing.T) string {
	t.Helper()
	return startCluster(t, 1)[0].URL()
}

// poll waits until the JavaScript expression is truthy in the page.
func poll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(25*time.Millisecond),
		chromedp.WithPollingTimeout(waitFor)))
	if err != nil {
		page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, page)
	}
}

func do(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// js quotes a Go string as a JavaScript string literal.
func js(s string) string { return strconv.Quote(s) }

// hasMessage is true when the open conversation shows a delivered (acked,
// id-carrying) message with exactly this sender and text.
func hasMessage(from, text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages li[data-id]')].some(li =>
		li.dataset.from === %s && li.querySelector('[data-testid="message-text"]').textContent === %s)`, js(from), js(text))
}

// emptyShows is true when the message pane shows the text for an empty
// conversation, starting with prefix.
func emptyShows(prefix string) string {
	return fmt.Sprintf(`(() => { const e = document.querySelector('[data-testid="empty"]');
		return !e.hidden && e.textContent.startsWith(%s); })()`, js(prefix))
}

const connected = `document.querySelector('#conn-state').dataset.state === 'connected'`

func login(t *testing.T, ctx context.Context, base, name string) {
	t.Helper()
	do(t, ctx, "open the app", chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="login-name"]`)))
	do(t, ctx, "log in as "+name,
		chromedp.SendKeys(chromedp.CSS(`[data-testid="login-name"]`), name),
		chromedp.Click(chromedp.CSS(`[data-testid="login-button"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="chat-view"]`)))
	poll(t, ctx, name+" connected", connected)
}

func joinRoom(t *testing.T, ctx context.Context, room string) {
	t.Helper()
	do(t, ctx, "join "+room,
		chromedp.SendKeys(chromedp.CSS(`[data-testid="room-input"]`), room),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)))
	poll(t, ctx, "room "+room+" open", fmt.Sprintf(
		`document.querySelector('[data-testid="room-item"][data-room=%s] [aria-current="page"]') !== null`, js(room)))
}

func send(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	do(t, ctx, "send "+text,
		chromedp.SendKeys(chromedp.CSS(`[data-testid="message-input"]`), text),
		chromedp.Click(chromedp.CSS(`[data-testid="send-button"]`)))
}

func TestBrowserChat(t *testing.T) {
	exe := chromium(t)
	base := startServer(t)
	alice := newBrowser(t, exe)
	bob := newBrowser(t, exe)
	aliceErrs, bobErrs := watchErrors(t, alice), watchErrors(t, bob)

	// Open mode says so, and asks for a name only.
	do(t, alice, "open the app", chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="open-banner"]`)))
	if banner := eval[string](t, alice, `document.querySelector('[data-testid="open-banner"]').textContent`); !strings.Contains(banner, "anyone can sign in as any name") {
		t.Errorf("open-mode banner = %q", banner)
	}
	if asked := eval[bool](t, alice, `!document.querySelector('[data-testid="login-password"]').closest('[hidden]') ||
		!document.querySelector('[data-testid="auth-tabs"], #auth-tabs').hidden`); asked {
		t.Error("open mode asks for a password or offers accounts")
	}
	login(t, alice, base, "alice")
	login(t, bob, base, "bob")
	joinRoom(t, alice, "general")
	// A room with nothing in it says so.
	poll(t, alice, "empty room explained", emptyShows("No messages in #general yet"))
	joinRoom(t, bob, "general")

	// Presence: each sees the other online in the room.
	poll(t, alice, "bob online for alice",
		`document.querySelector('[data-testid="member"][data-user="bob"][data-online="true"]') !== null`)
	poll(t, bob, "alice online for bob",
		`document.querySelector('[data-testid="member"][data-user="alice"][data-online="true"]') !== null`)

	send(t, alice, "hello bob")
	poll(t, bob, "bob sees alice's message", hasMessage("alice", "hello bob"))
	poll(t, alice, "the first message replaces the empty-room text", hasMessage("alice", "hello bob")+
		` && document.querySelector('[data-testid="empty"]').hidden`)
	poll(t, alice, "alice's message acked", hasMessage("alice", "hello bob")+
		` && document.querySelector('#messages li.pending') === null`)

	send(t, bob, "hi alice")
	poll(t, alice, "alice sees bob's message", hasMessage("bob", "hi alice"))

	// User text is text: markup arrives literally and builds no element.
	const markup = `<b>x</b><img src=x onerror="document.body.dataset.pwned=1">`
	send(t, alice, markup)
	poll(t, bob, "bob sees the markup as text", hasMessage("alice", markup))
	if n := eval[int](t, bob, `document.querySelectorAll('#messages b, #messages img').length`); n != 0 {
		t.Errorf("markup became %d elements", n)
	}
	if pwned := eval[bool](t, bob, `document.body.dataset.pwned === '1'`); pwned {
		t.Error("message text ran script")
	}

	// Typing indicator. Typing notices are rate limited on both ends, so
	// bob keeps typing, as a person would, until alice sees it.
	bobTyping := `document.querySelector('[data-testid="typing"]').textContent.includes('bob is typing')`
	for deadline := time.Now().Add(waitFor); ; {
		do(t, bob, "bob types", chromedp.SendKeys(chromedp.CSS(`[data-testid="message-input"]`), "t"))
		_, err := chromedp.Run(alice, chromedp.Poll[chromedp.Void](bobTyping,
			chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(250*time.Millisecond)))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice never saw bob typing: %v", err)
		}
	}

	// A DM: alice opens a conversation with bob from the member list.
	do(t, alice, "open DM with bob",
		chromedp.Click(chromedp.CSS(`[data-testid="member"][data-user="bob"] button`)))
	poll(t, alice, "DM open", `document.querySelector('[data-testid="dm-item"][data-peer="bob"] [aria-current="page"]') !== null`)
	// The DM's member panel shows bob online: he is, in the room they share.
	poll(t, alice, "DM peer online",
		`document.querySelector('[data-testid="member"][data-user="bob"][data-online="true"]') !== null`)
	send(t, alice, "psst, bob")
	poll(t, bob, "bob's DM list shows alice", `document.querySelector('[data-testid="dm-list"] [data-peer="alice"]') !== null`)
	do(t, bob, "bob opens the DM", chromedp.Click(chromedp.CSS(`[data-testid="dm-item"][data-peer="alice"] button`)))
	poll(t, bob, "bob reads the DM", hasMessage("alice", "psst, bob"))
	do(t, bob, "clear the draft", chromedp.Evaluate[chromedp.Void](`document.querySelector('[data-testid="message-input"]').value = ''`))
	send(t, bob, "got it")
	poll(t, alice, "alice gets the reply", hasMessage("bob", "got it"))

	// Bob reloads: still logged in, history and DMs are back, nothing twice.
	do(t, bob, "reload", chromedp.Reload())
	poll(t, bob, "bob connected after reload", connected+
		` && !document.querySelector('[data-testid="chat-view"]').hidden`)
	if me := eval[string](t, bob, `document.querySelector('[data-testid="me-name"]').textContent`); me != "bob" {
		t.Fatalf("after reload logged in as %q, want bob", me)
	}
	poll(t, bob, "DM history after reload", hasMessage("alice", "psst, bob")+" && "+hasMessage("bob", "got it"))
	do(t, bob, "open general", chromedp.Click(chromedp.CSS(`[data-testid="room-item"][data-room="general"] button`)))
	poll(t, bob, "room history after reload",
		hasMessage("alice", "hello bob")+" && "+hasMessage("bob", "hi alice")+" && "+hasMessage("alice", markup))
	dups := duplicateMessages(t, bob)
	if dups != 0 {
		t.Errorf("%d duplicate messages after reload", dups)
	}

	// Live traffic still flows to the reloaded page.
	do(t, alice, "alice opens general", chromedp.Click(chromedp.CSS(`[data-testid="room-item"][data-room="general"] button`)))
	send(t, alice, "after reload")
	poll(t, bob, "bob sees live message after reload", hasMessage("alice", "after reload"))

	// alice deletes her message; bob, no admin, may delete none of hers.
	if n := eval[int](t, bob, `document.querySelectorAll('[data-from="alice"] [data-testid="message-delete"]').length`); n != 0 {
		t.Errorf("bob is offered to delete %d of alice's messages", n)
	}
	do(t, alice, "alice deletes her message", chromedp.Evaluate[chromedp.Void](`[...document.querySelectorAll('[data-testid="message"]')]
		.find((li) => li.querySelector('[data-testid="message-text"]').textContent === 'after reload')
		.querySelector('[data-testid="message-delete"]').click()`))
	poll(t, bob, "the message leaves bob's page", "!("+hasMessage("alice", "after reload")+")")
	poll(t, alice, "and alice's", "!("+hasMessage("alice", "after reload")+")")

	// Closing a DM takes it off the list; the next DM brings it back
	// with its history.
	do(t, bob, "bob opens the DM again", chromedp.Click(chromedp.CSS(`[data-testid="dm-item"][data-peer="alice"] button`)))
	poll(t, bob, "the DM offers Close", `document.querySelector('[data-testid="leave-button"]').textContent === 'Close'`)
	do(t, bob, "bob closes the DM", chromedp.Click(chromedp.CSS(`[data-testid="leave-button"]`)))
	poll(t, bob, "DM gone from the list", `document.querySelector('[data-testid="dm-item"][data-peer="alice"]') === null`)
	do(t, alice, "alice opens the DM", chromedp.Click(chromedp.CSS(`[data-testid="dm-item"][data-peer="bob"] button`)))
	send(t, alice, "still there?")
	poll(t, bob, "the DM is back", `document.querySelector('[data-testid="dm-item"][data-peer="alice"]') !== null`)
	do(t, bob, "bob opens the returned DM", chromedp.Click(chromedp.CSS(`[data-testid="dm-item"][data-peer="alice"] button`)))
	poll(t, bob, "the returned DM has its history", hasMessage("alice", "psst, bob")+" && "+hasMessage("alice", "still there?"))
	// Closed stays closed over a reload, though the DMs come again from
	// the inbox; opening it by name brings it back whole.
	do(t, bob, "bob closes the DM again", chromedp.Click(chromedp.CSS(`[data-testid="leave-button"]`)))
	poll(t, bob, "DM gone again", `document.querySelector('[data-testid="dm-item"][data-peer="alice"]') === null`)
	do(t, bob, "reload with the DM closed", chromedp.Reload())
	poll(t, bob, "reconnected with the DM closed", connected+` && document.querySelector('[data-testid="room-item"][data-room="general"]') !== null`)
	poll(t, bob, "DM inbox loaded", `!document.querySelector('[data-testid="dm-list"]').hasAttribute('aria-busy')`)
	if open := eval[bool](t, bob, `document.querySelector('[data-testid="dm-item"][data-peer="alice"]') !== null`); open {
		t.Error("a closed DM came back on reload without a new message")
	}
	do(t, bob, "bob opens the DM by name",
		chromedp.SendKeys(chromedp.CSS(`[data-testid="dm-input"]`), "alice"),
		chromedp.Click(chromedp.CSS(`[data-testid="dm-button"]`)))
	poll(t, bob, "the reopened DM has its history", hasMessage("alice", "psst, bob")+" && "+hasMessage("alice", "still there?"))

	// Logout ends the session: a reload shows the login form.
	do(t, alice, "log out", chromedp.Click(chromedp.CSS(`[data-testid="logout-button"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="login-name"]`)))
	do(t, alice, "reload after logout", chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="login-name"]`)))

	// Nothing on the way logged an error: not the first visit's check
	// for a login, not a reload, not a closed conversation.
	noPageErrors(t, "alice", aliceErrs)
	noPageErrors(t, "bob", bobErrs)
}

// TestBrowserFailover stops the node a page came from and checks that the
// page carries on through another node (a ticket fetched across origins
// with the token, cross-origin /ws), catches up on what it missed, and
// sends again; no long-lived token ever goes into a URL or into storage
// that outlives the tab.
func TestBrowserFailover(t *testing.T) {
	exe := chromium(t)
	nodes := startCluster(t, 2)
	alice := newBrowser(t, exe)
	bob := newBrowser(t, exe)
	urls := watchURLs(t, alice)
	login(t, alice, nodes[0].URL(), "alice")
	login(t, bob, nodes[1].URL(), "bob")
	joinRoom(t, alice, "general")
	joinRoom(t, bob, "general")
	send(t, alice, "before")
	poll(t, bob, "bob sees before", hasMessage("alice", "before"))
	poll(t, alice, "alice on n1", `document.querySelector('[data-testid="node-name"]').textContent === 'via n1'`)

	nodetest.Stop(t, nodes[0]) // clients are told to go elsewhere (1012)
	send(t, bob, "during")
	poll(t, alice, "alice moved to n2", connected+
		` && document.querySelector('[data-testid="node-name"]').textContent === 'via n2'`)
	poll(t, alice, "alice caught up", hasMessage("bob", "during"))
	send(t, alice, "after")
	poll(t, bob, "bob sees after", hasMessage("alice", "after"))
	for _, id := range []string{"alice", "bob"} {
		ctx := map[string]context.Context{"alice": alice, "bob": bob}[id]
		dups := duplicateMessages(t, ctx)
		if dups != 0 {
			t.Errorf("%s: %d duplicate messages", id, dups)
		}
	}

	token := eval[string](t, alice, `JSON.parse(sessionStorage.getItem("meshchat.token") || '""')`)
	if token == "" {
		t.Fatal("the page holds no token to fail over with")
	}
	if leaked := eval[bool](t, alice, `Object.values(localStorage).some(v => v.includes(`+js(token)+`))`); leaked {
		t.Error("the token is in localStorage")
	}
	wsOn := map[string]bool{}
	for _, u := range urls() {
		if strings.Contains(u, token) || strings.Contains(u, "token=") {
			t.Errorf("a long-lived token in a URL: %s", u)
		}
		if strings.Contains(u, "/ws") {
			if !strings.Contains(u, "/ws?ticket=") {
				t.Errorf("a WebSocket without a ticket: %s", u)
			}
			for i, n := range nodes {
				if strings.HasPrefix(u, "ws"+strings.TrimPrefix(n.URL(), "http")+"/ws") {
					wsOn[fmt.Sprint("n", i+1)] = true
				}
			}
		}
	}
	if !wsOn["n1"] || !wsOn["n2"] {
		t.Errorf("WebSockets with tickets on %v, want n1 and n2 (urls %q)", wsOn, urls())
	}
}

// TestBrowserLoginCarriesToOtherNode: a page opened on another node of
// the cluster, where the browser sends the same cookie (here the same
// host on another port; in production a shared --cookie-domain), starts
// logged in, and a page that never logged in asks nothing.
func TestBrowserLoginCarriesToOtherNode(t *testing.T) {
	exe := chromium(t)
	nodes := startCluster(t, 2)
	alice := newBrowser(t, exe)
	errs := watchErrors(t, alice)
	login(t, alice, nodes[0].URL(), "alice")
	do(t, alice, "open the other node", chromedp.Navigate(nodes[1].URL()+"/"))
	poll(t, alice, "logged in on the other node", connected+
		` && !document.querySelector('[data-testid="chat-view"]').hidden`+
		` && document.querySelector('[data-testid="me-name"]').textContent === 'alice'`+
		` && document.querySelector('[data-testid="node-name"]').textContent === 'via n2'`)
	do(t, alice, "log out", chromedp.Click(chromedp.CSS(`[data-testid="logout-button"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="login-name"]`)))
	do(t, alice, "back to the first node", chromedp.Navigate(nodes[0].URL()+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="login-name"]`)))
	noPageErrors(t, "alice", errs)
}

// TestClientProtocol runs the protocol tests of meshchat.js
// (testdata/client_test.js: resume, dedupe, ref resend, failover order,
// logout) in Chromium against a scripted fake WebSocket.
func TestClientProtocol(t *testing.T) {
	pageTests(t, "client_test.html")
}

// TestModel runs the tests of the app's model of conversations
// (testdata/model_test.js: history merging, dedupe, pending sends, unread
// counts, closed DMs) in Chromium, through meshchat.js on a scripted fake
// WebSocket.
func TestModel(t *testing.T) {
	pageTests(t, "model_test.html")
}

// pageTests opens testdata/page, whose script runs its tests with
// testdata/harness.js, and reports each as a subtest. The page is served
// under /test/, next to the app's files.
func pageTests(t *testing.T, page string) {
	t.Helper()
	exe := chromium(t)
	mux := http.NewServeMux()
	mux.Handle("/test/", http.StripPrefix("/test/", http.FileServer(http.Dir("testdata"))))
	mux.Handle("/", ui.Handler())
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	ctx := newBrowser(t, exe)
	do(t, ctx, "open test page", chromedp.Navigate(ts.URL+"/test/"+page))
	poll(t, ctx, "tests done", `window.__done === true`)
	type result struct {
		Name  string `json:"name"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	results := eval[[]result](t, ctx, `window.__results`)
	if len(results) == 0 {
		t.Fatal("no results")
	}
	for _, r := range results {
		t.Run(r.Name, func(t *testing.T) {
			if !r.OK {
				t.Error(r.Error)
			}
		})
	}
}

// TestBrowserPhoneLayout checks that at phone width the side panels get
// out of the way and can be opened.
func TestBrowserPhoneLayout(t *testing.T) {
	exe := chromium(t)
	base := startServer(t)
	ctx := newBrowser(t, exe)
	do(t, ctx, "phone viewport", chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile))
	login(t, ctx, base, "carol")
	joinRoom(t, ctx, "general")
	poll(t, ctx, "sidebar off screen", `document.querySelector('#sidebar').getBoundingClientRect().right <= 0`)
	poll(t, ctx, "composer fits", `document.querySelector('#send-button').getBoundingClientRect().right <= window.innerWidth`)
	do(t, ctx, "open rooms", chromedp.Click(chromedp.CSS(`#toggle-rooms`)))
	poll(t, ctx, "sidebar on screen", `document.querySelector('#sidebar').getBoundingClientRect().left >= 0`)
	do(t, ctx, "pick room", chromedp.Click(chromedp.CSS(`[data-testid="room-item"][data-room="general"] button`)))
	poll(t, ctx, "sidebar closed again", `document.querySelector('#sidebar').getBoundingClientRect().right <= 0`)
	send(t, ctx, "from a phone")
	poll(t, ctx, "message shown", hasMessage("carol", "from a phone"))
}
