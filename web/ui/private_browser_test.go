package ui_test

import (
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"
)

// roomListed is true when the room list shows room.
func roomListed(room string) string {
	return fmt.Sprintf(`document.querySelector('[data-testid="room-item"][data-room=%s]') !== null`, js(room))
}

// noteShows is true when the sidebar's room note reads text.
func noteShows(text string) string {
	return fmt.Sprintf(`(() => { const n = document.querySelector('[data-testid="room-note"]');
		return !n.hidden && n.textContent === %s; })()`, js(text))
}

// TestBrowserPrivateRoom: alice creates a private room on one node and
// posts; carol, on the other node, cannot get in (the page says why and
// shows none of it); alice invites bob, who sees the invitation, takes it
// up and reads the history; removed, bob's page drops the room.
func TestBrowserPrivateRoom(t *testing.T) {
	exe := chromium(t)
	nodes := startCluster(t, 2)
	alice, bob, carol := newBrowser(t, exe), newBrowser(t, exe), newBrowser(t, exe)
	errs := watchErrors(t, alice)
	login(t, alice, nodes[0].URL(), "alice")
	login(t, bob, nodes[1].URL(), "bob")
	login(t, carol, nodes[1].URL(), "carol")

	do(t, alice, "create a private room",
		chromedp.SendKeys(chromedp.CSS(`[data-testid="room-input"]`), "plans"),
		chromedp.Click(chromedp.CSS(`[data-testid="room-private"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)))
	poll(t, alice, "plans marked private", `document.querySelector('[data-testid="room-item"][data-room="plans"] [data-testid="lock"]') !== null`+
		` && document.querySelector('#conv-sub').textContent === 'private room of alice'`+
		` && !document.querySelector('[data-testid="invite-box"]').hidden`)
	send(t, alice, "the secret plan")
	poll(t, alice, "posted", hasMessage("alice", "the secret plan"))

	// Carol asks for the room by name: refused, and nothing of it shows.
	joinRoom(t, carol, "general")
	do(t, carol, "join plans",
		chromedp.SendKeys(chromedp.CSS(`[data-testid="room-input"]`), "plans"),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)))
	poll(t, carol, "refused", noteShows("#plans is private: ask its owner for an invitation.")+` && !(`+roomListed("plans")+`)`)
	if shown := eval[bool](t, carol, `document.body.innerText.includes('the secret plan')`); shown {
		t.Error("carol's page shows the private room's message")
	}

	// A public room cannot be taken private.
	do(t, carol, "make general private",
		chromedp.SendKeys(chromedp.CSS(`[data-testid="room-input"]`), "lobby"),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)))
	poll(t, carol, "lobby open", roomListed("lobby"))
	send(t, carol, "hi lobby")
	poll(t, carol, "lobby has a message", hasMessage("carol", "hi lobby"))
	do(t, bob, "bob asks for lobby private",
		chromedp.SendKeys(chromedp.CSS(`[data-testid="room-input"]`), "lobby"),
		chromedp.Click(chromedp.CSS(`[data-testid="room-private"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="join-button"]`)))
	poll(t, bob, "room_exists told", noteShows("#lobby is a public room already: pick another name for a private room.")+
		` && !(`+roomListed("lobby")+`)`)

	// Invited, bob gets in with the history.
	do(t, alice, "invite bob",
		chromedp.SendKeys(chromedp.CSS(`[data-testid="invite-user"]`), "bob"),
		chromedp.Click(chromedp.CSS(`[data-testid="invite-button"]`)))
	poll(t, alice, "invite confirmed", `document.querySelector('[data-testid="invite-status"]').textContent === 'bob was invited to #plans.'`)
	poll(t, bob, "the invitation", `[...document.querySelectorAll('[data-testid="invitation"]')].some(b => b.textContent === 'alice invited you to #plans')`)
	do(t, bob, "take it up", chromedp.Click(chromedp.CSS(`[data-testid="invitation"]`)))
	poll(t, bob, "bob reads the history", hasMessage("alice", "the secret plan")+
		` && document.querySelector('[data-testid="room-item"][data-room="plans"] [data-testid="lock"]') !== null`+
		` && document.querySelector('[data-testid="invitation"]') === null`)
	if shown := eval[bool](t, bob, `!document.querySelector('[data-testid="invite-box"]').hidden ||
		document.querySelector('[data-testid="remove-button"]') !== null`); shown {
		t.Error("a member who is not the owner is offered to invite or remove")
	}

	// Removed, bob's page drops the room and says so.
	poll(t, alice, "bob listed", `document.querySelector('[data-testid="member"][data-user="bob"][data-online="true"] [data-testid="remove-button"]') !== null`)
	do(t, alice, "remove bob", chromedp.Click(chromedp.CSS(`[data-testid="member"][data-user="bob"] [data-testid="remove-button"]`)))
	poll(t, bob, "bob removed", noteShows("You were removed from #plans.")+` && !(`+roomListed("plans")+`) && `+connected)
	noPageErrors(t, "alice", errs)
}
