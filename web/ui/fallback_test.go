package ui_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cmd/meshchat/node"
	"github.com/meshchat/meshchat/cmd/meshchat/node/nodetest"
)

// blockUpgrades makes the shipped nginx.conf refuse WebSocket upgrades,
// as some corporate proxies do.
func blockUpgrades(conf string) string {
	const loc = "location / {"
	if !strings.Contains(conf, loc) {
		panic("docs/nginx.conf: no " + loc)
	}
	return strings.Replace(conf, loc, loc+"\n        if ($http_upgrade) { return 403; }", 1)
}

// countMessage is how many delivered messages with this sender and text
// the open conversation shows.
func countMessage(from, text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages li[data-id]')].filter(li =>
		li.dataset.from === %s && li.querySelector('[data-testid="message-text"]').textContent === %s).length`, js(from), js(text))
}

const onFallback = `document.querySelector('#conn-state').dataset.transport === 'sse'`

// TestBrowserFallbackThroughProxy: behind a proxy that refuses WebSocket
// upgrades the page chats over Server-Sent Events and POSTs by itself.
// When the node its stream is on dies, the page carries on through the
// proxy, and every message it sent shows once on both pages.
func TestBrowserFallbackThroughProxy(t *testing.T) {
	exe := chromium(t)
	nodes := startCluster(t, 3)
	var upstreams []string
	byName := map[string]*node.Node{}
	for _, n := range nodes {
		upstreams = append(upstreams, n.HTTPAddr())
		byName[n.Name()] = n
	}
	lb := nodetest.StartNginx(t, upstreams, blockUpgrades)
	alice := newBrowser(t, exe)
	bob := newBrowser(t, exe)

	login(t, alice, lb, "alice")
	login(t, bob, lb, "bob")
	poll(t, alice, "alice on the fallback", onFallback)
	poll(t, bob, "bob on the fallback", onFallback)
	if label := eval[string](t, alice, `document.querySelector('#conn-state').textContent`); !strings.Contains(label, "fallback") {
		t.Errorf("status line %q does not say the fallback is in use", label)
	}
	joinRoom(t, alice, "general")
	joinRoom(t, bob, "general")
	poll(t, alice, "bob online for alice",
		`document.querySelector('[data-testid="member"][data-user="bob"][data-online="true"]') !== null`)

	send(t, alice, "before")
	poll(t, bob, "bob sees before", hasMessage("alice", "before"))
	send(t, bob, "hi alice")
	poll(t, alice, "alice sees bob", hasMessage("bob", "hi alice"))

	// Kill the node alice's stream is on, then send while the page finds
	// another one through the proxy.
	via := eval[string](t, alice, `document.querySelector('[data-testid="node-name"]').textContent`)
	victim := byName[strings.TrimPrefix(via, "via ")]
	if victim == nil {
		t.Fatalf("alice's page shows %q, no node of that name", via)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := victim.Kill(ctx); err != nil {
		t.Fatalf("kill %s: %v", victim.Name(), err)
	}
	texts := []string{"during 1", "during 2", "during 3"}
	for _, text := range texts {
		send(t, alice, text)
	}
	poll(t, alice, "alice back on another node", connected+
		fmt.Sprintf(` && document.querySelector('[data-testid="node-name"]').textContent !== %s`, js(via)))
	poll(t, alice, "every message of alice acked", `document.querySelector('#messages li.pending, #messages li.failed') === null`)
	send(t, alice, "after")
	texts = append([]string{"before"}, append(texts, "after")...)
	for _, text := range texts {
		poll(t, bob, "bob sees "+text, hasMessage("alice", text))
	}
	poll(t, alice, "alice sees every one", hasMessage("alice", "after")+` && document.querySelector('#messages li.pending') === null`)
	for who, ctx := range map[string]context.Context{"alice": alice, "bob": bob} {
		for _, text := range texts {
			if n := eval[int](t, ctx, countMessage("alice", text)); n != 1 {
				t.Errorf("%s's page shows %q %d times", who, text, n)
			}
		}
		if n := eval[int](t, ctx, countMessage("bob", "hi alice")); n != 1 {
			t.Errorf("%s's page shows bob's message %d times", who, n)
		}
		if dups := duplicateMessages(t, ctx); dups != 0 {
			t.Errorf("%s: %d duplicate messages", who, dups)
		}
		if sse := eval[bool](t, ctx, onFallback); !sse {
			t.Errorf("%s's page left the fallback though WebSockets are still blocked", who)
		}
	}
}
