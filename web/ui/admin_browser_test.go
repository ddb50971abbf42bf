package ui_test

import (
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
)

// nodeCard is true when the admin view shows node's card, reachable or
// not as said, and more (a further condition on the card c, or "true").
func nodeCard(node string, reachable bool, more string) string {
	return fmt.Sprintf(`(() => { const c = document.querySelector('[data-testid="node-card"][data-node=%s]');
		return c !== null && c.dataset.reachable === %s && (%s); })()`, js(node), js(fmt.Sprint(reachable)), more)
}

// TestBrowserAdminView: an admin opens the admin view from the account
// menu and sees both nodes of the cluster, each with its own rooms and
// members, kept up to date without a reload, and a node that stopped as
// unreachable; a user who is no admin gets neither the link nor the view.
func TestBrowserAdminView(t *testing.T) {
	exe := chromium(t)
	nodes := nodetest.StartCluster(t, 2, nodetest.Options{Adjust: func(_ int, cfg *node.Config) {
		cfg.Admins = []string{"root"}
	}})
	admin, user := newBrowser(t, exe), newBrowser(t, exe)
	errs := watchErrors(t, admin)
	login(t, user, nodes[1].URL(), "mallory")
	joinRoom(t, user, "general")

	login(t, admin, nodes[0].URL(), "root")
	do(t, admin, "open the admin view",
		chromedp.Click(chromedp.CSS(`[data-testid="account-button"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="admin-link"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="node-cards"]`)))
	poll(t, admin, "both nodes", nodeCard("n1", true, "true")+" && "+
		nodeCard("n2", true, `[...c.querySelectorAll('[data-testid="node-room"][data-room="general"] [data-testid="node-member"]')].some(b => b.textContent === 'mallory')`+
			` && c.querySelector('[data-testid="node-connections"]').textContent === '1'`+
			` && c.querySelector('[data-testid="node-broker"]').textContent === 'mesh, links up'`))
	if n := eval[int](t, admin, `document.querySelectorAll('[data-testid="node-card"]').length`); n != 2 {
		t.Errorf("%d node cards, want 2", n)
	}

	// On a phone the cards stack and nothing runs off the screen.
	do(t, admin, "phone viewport", chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile))
	poll(t, admin, "fits a phone", `document.documentElement.scrollWidth <= window.innerWidth &&
		[...document.querySelectorAll('[data-testid="node-card"]')].every(c => c.getBoundingClientRect().right <= window.innerWidth)`)

	// Live: a room joined now shows up without a reload.
	joinRoom(t, user, "later")
	poll(t, admin, "the new room", nodeCard("n2", true, `c.querySelector('[data-testid="node-room"][data-room="later"]') !== null`))

	// An action: disconnect mallory everywhere.
	do(t, admin, "disconnect mallory",
		chromedp.Click(chromedp.CSS(`[data-testid="node-member"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="action-disconnect"]`)))
	poll(t, admin, "told", `document.querySelector('[data-testid="action-status"]').textContent === 'mallory is disconnected everywhere.'`)
	noPageErrors(t, "the admin", errs)

	// mallory: no link, and the page refuses.
	do(t, user, "open the account menu", chromedp.Click(chromedp.CSS(`[data-testid="account-button"]`)))
	if shown := eval[bool](t, user, `!document.querySelector('[data-testid="admin-link"]').hidden`); shown {
		t.Error("a user who is no admin is offered the admin view")
	}
	do(t, user, "open the admin view by URL", chromedp.Navigate(nodes[1].URL()+"/admin.html"))
	poll(t, user, "refused", `!document.querySelector('[data-testid="admin-denied"]').hidden &&
		document.querySelector('[data-testid="denied-text"]').textContent.includes('not as an admin') &&
		document.querySelector('[data-testid="admin-view"]').hidden &&
		document.querySelector('[data-testid="node-card"]') === null`)

	// A node that goes away is shown as unreachable.
	nodetest.Stop(t, nodes[1])
	poll(t, admin, "n2 unreachable", nodeCard("n2", false, "true")+" && "+nodeCard("n1", true, "true"))
}
