package ui_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
	"github.com/meshchat/meshchat/web/webtest"
)

// startAccounts starts count nodes with accounts (--auth password) and
// admins.
func startAccounts(t *testing.T, count int, admins ...string) []*node.Node {
	t.Helper()
	return nodetest.StartCluster(t, count, nodetest.Options{Adjust: func(_ int, cfg *node.Config) {
		cfg.Auth = "password"
		cfg.Admins = admins
	}})
}

// loginShows is true when the login view is up and its error (the sign-in
// form's, or with jwt the panel's) reads text.
func loginShows(text string) string {
	return fmt.Sprintf(`!document.querySelector('[data-testid="login-view"]').hidden &&
		document.querySelector('[data-testid="chat-view"]').hidden &&
		[...document.querySelectorAll('[data-testid="login-error"], [data-testid="jwt-error"]')].some(e => e.textContent === %s)`, js(text))
}

// chatAs is true when the chat view is up, connected, for user.
func chatAs(user string) string {
	return connected + ` && !document.querySelector('[data-testid="chat-view"]').hidden` +
		fmt.Sprintf(` && document.querySelector('[data-testid="me-name"]').textContent === %s`, js(user))
}

// fill replaces the value of the input sel with text, as typed.
func fill(sel, text string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%s).value = ''`, js(sel))),
		chromedp.SendKeys(chromedp.CSS(sel), text))
}

// signIn signs name in with password on base's login form; register
// uses the "Create account" tab instead.
func signIn(t *testing.T, ctx context.Context, base, name, password string, register bool) {
	t.Helper()
	do(t, ctx, "open the app", chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="login-password"]`)))
	submitSignIn(t, ctx, name, password, register)
}

func submitSignIn(t *testing.T, ctx context.Context, name, password string, register bool) {
	t.Helper()
	tab := `[data-testid="tab-signin"]`
	if register {
		tab = `[data-testid="tab-register"]`
	}
	do(t, ctx, "sign in as "+name, chromedp.Click(chromedp.CSS(tab)),
		fill(`[data-testid="login-name"]`, name),
		fill(`[data-testid="login-password"]`, password))
	if register {
		do(t, ctx, "confirm the password", fill(`[data-testid="login-confirm"]`, password))
	}
	do(t, ctx, "submit", chromedp.Click(chromedp.CSS(`[data-testid="login-button"]`)))
}

// countSockets counts the WebSockets the page opens from now on.
func countSockets(t *testing.T, ctx context.Context) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	if err := chromedp.Listen(ctx, func(ev any) {
		if _, ok := ev.(*network.EventWebSocketCreated); ok {
			n.Add(1)
		}
	}); err != nil {
		t.Fatalf("watch the page: %v", err)
	}
	return &n
}

// TestBrowserAccounts: an account registered on one node signs in on
// another; wrong passwords and taken names are told; a password change
// keeps its page connected and signs the account's other browsers out;
// "log out everywhere" ends them all.
func TestBrowserAccounts(t *testing.T) {
	exe := chromium(t)
	nodes := startAccounts(t, 2)
	home := newBrowser(t, exe)  // alice's own browser, on n1
	other := newBrowser(t, exe) // another machine, on n2
	homeErrs := watchErrors(t, home)

	do(t, home, "open the app", chromedp.Navigate(nodes[0].URL()+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="login-password"]`)))
	if shown := eval[bool](t, home, `!document.querySelector('[data-testid="open-banner"]').hidden`); shown {
		t.Error("the open-mode banner shows with accounts")
	}
	submitSignIn(t, home, "alice", "correct horse", true)
	poll(t, home, "alice registered and chatting", chatAs("alice"))
	joinRoom(t, home, "general")

	// The other machine: the name is taken, a wrong password is refused,
	// the right one works on the other node.
	signIn(t, other, nodes[1].URL(), "alice", "another password", true)
	poll(t, other, "name taken", loginShows("That name is taken. Pick another one, or sign in if it is yours."))
	submitSignIn(t, other, "alice", "wrong horse", false)
	poll(t, other, "wrong password", loginShows("Wrong name or password."))
	submitSignIn(t, other, "alice", "correct horse", false)
	poll(t, other, "alice signed in on n2", chatAs("alice")+
		` && document.querySelector('[data-testid="node-name"]').textContent === 'via n2'`)

	// A password change on the home page: that page carries on under its
	// new session, the other machine is signed out.
	do(t, home, "change the password",
		chromedp.Click(chromedp.CSS(`[data-testid="account-button"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="change-password-button"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="old-password"]`)),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="old-password"]`), "correct horse"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="new-password"]`), "battery staple"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="new-confirm"]`), "battery staple"),
		chromedp.Click(chromedp.CSS(`[data-testid="password-submit"]`)))
	poll(t, home, "password changed", `!document.querySelector('[data-testid="password-dialog"]').open`)
	poll(t, other, "the other machine signed out", loginShows("Your session has ended. Please sign in again."))
	send(t, home, "still here")
	poll(t, home, "the home page still sends", chatAs("alice")+" && "+hasMessage("alice", "still here"))
	// Its own password change asked about its session only once the new
	// one had come: no 401 on the way.
	noPageErrors(t, "alice's home", homeErrs)

	submitSignIn(t, other, "alice", "correct horse", false)
	poll(t, other, "the old password is gone", loginShows("Wrong name or password."))
	submitSignIn(t, other, "alice", "battery staple", false)
	poll(t, other, "the new password works", chatAs("alice"))

	// Log out everywhere, from the other machine this time.
	do(t, other, "log out everywhere",
		chromedp.Click(chromedp.CSS(`[data-testid="account-button"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="logout-all-button"]`)))
	poll(t, other, "signed out here", loginShows("You were logged out on every device."))
	poll(t, home, "signed out at home", loginShows("Your session has ended. Please sign in again."))
}

// TestBrowserBan: an admin bans a member from the member list; the banned
// user's open page says so and stops (no reconnecting), and their logins
// are refused until the admin unbans them by name.
func TestBrowserBan(t *testing.T) {
	exe := chromium(t)
	nodes := startAccounts(t, 2, "root")
	admin := newBrowser(t, exe)
	user := newBrowser(t, exe)
	signIn(t, admin, nodes[0].URL(), "root", "admin password", true)
	poll(t, admin, "root chatting", chatAs("root"))
	signIn(t, user, nodes[1].URL(), "mallory", "mallory's password", true)
	poll(t, user, "mallory chatting", chatAs("mallory"))
	if shown := eval[bool](t, user, `!document.querySelector('[data-testid="admin-box"]').hidden ||
		document.querySelector('[data-testid="ban-button"]') !== null`); shown {
		t.Error("a user who is no admin is offered bans")
	}
	joinRoom(t, admin, "general")
	joinRoom(t, user, "general")
	poll(t, admin, "admin tools", `!document.querySelector('[data-testid="admin-box"]').hidden`)
	mallory := `[data-testid="member"][data-user="mallory"] [data-testid="ban-button"]`
	poll(t, admin, "mallory listed with a Ban button", fmt.Sprintf(`document.querySelector(%s) !== null`, js(mallory)))
	if own := eval[bool](t, admin, `document.querySelector('[data-testid="member"][data-user="root"] [data-testid="ban-button"]') !== null`); own {
		t.Error("the admin is offered to ban themselves")
	}

	sockets := countSockets(t, user)
	do(t, admin, "ban mallory", chromedp.Click(chromedp.CSS(mallory)))
	poll(t, admin, "the ban asks to confirm", fmt.Sprintf(`document.querySelector(%s).textContent === 'Confirm'`, js(mallory)))
	do(t, admin, "confirm", chromedp.Click(chromedp.CSS(mallory)))
	poll(t, admin, "the admin is told", `document.querySelector('[data-testid="admin-status"]').textContent === 'mallory is banned.'`)
	poll(t, user, "mallory's page says banned", loginShows("This account is banned."))

	// Signing in again, or reloading, says banned too.
	submitSignIn(t, user, "mallory", "mallory's password", false)
	poll(t, user, "login refused", loginShows("This account is banned.")+
		` && !document.querySelector('[data-testid="login-button"]').disabled`)
	do(t, user, "reload", chromedp.Reload())
	poll(t, user, "banned after a reload", loginShows("This account is banned."))
	// The connection the ban closed was the last one: not one attempt
	// to reconnect.
	if n := sockets.Load(); n != 0 {
		t.Errorf("the banned page opened %d WebSockets after the ban", n)
	}

	do(t, admin, "unban by name",
		chromedp.SendKeys(chromedp.CSS(`[data-testid="admin-user"]`), "mallory"),
		chromedp.Click(chromedp.CSS(`[data-testid="admin-unban"]`)))
	poll(t, admin, "unbanned", `document.querySelector('[data-testid="admin-status"]').textContent === 'mallory is no longer banned.'`)
	submitSignIn(t, user, "mallory", "mallory's password", false)
	poll(t, user, "mallory is back", chatAs("mallory"))
}

// TestBrowserJWTLogin: under --auth jwt the page explains that signing in
// happens in the host app, and a token handed over in the URL fragment
// signs in and leaves the URL.
func TestBrowserJWTLogin(t *testing.T) {
	exe := chromium(t)
	key := "the app's signing key"
	base := nodetest.StartCluster(t, 1, nodetest.Options{Adjust: func(_ int, cfg *node.Config) {
		cfg.Auth = "jwt"
		cfg.JWTKey = key
	}})[0].URL()
	ctx := newBrowser(t, exe)

	do(t, ctx, "open the app", chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="jwt-panel"]`)))
	if shown := eval[bool](t, ctx, `!document.querySelector('[data-testid="login-form"]').hidden`); shown {
		t.Error("a sign-in form shows under --auth jwt")
	}

	expired := webtest.SignHS256([]byte(key), map[string]any{"sub": "carol", "exp": time.Now().Add(-time.Hour).Unix()})
	do(t, ctx, "open with an expired token", chromedp.Navigate(base+"/?try=1#token="+expired))
	poll(t, ctx, "token refused", loginShows(
		"The app's sign-in was refused (expired or not valid). Open the chat from the app again."))

	good := webtest.SignHS256([]byte(key), map[string]any{"sub": "carol", "exp": time.Now().Add(time.Hour).Unix()})
	do(t, ctx, "open with the app's token", chromedp.Navigate(base+"/?from=app#token="+good))
	poll(t, ctx, "carol signed in", chatAs("carol"))
	if u := eval[string](t, ctx, `location.href`); u != base+"/?from=app" {
		t.Errorf("URL after sign-in = %q, want the token gone", u)
	}
	if stored := eval[bool](t, ctx, `JSON.stringify({...sessionStorage, ...localStorage}).includes(`+js(good)+`)`); stored {
		t.Error("the app's token was stored")
	}
}
