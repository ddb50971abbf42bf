package mesh

import (
	"slices"
	"testing"
	"time"

	"github.com/meshchat/meshchat/cluster/clustertest"
	"github.com/meshchat/meshchat/transport"
)

// TestLinks: a peer this node never talked to is idle, one it publishes
// through is up, and a peer that died is down until the view drops it.
func TestLinks(t *testing.T) {
	c, bs := newTestCluster(t, 3, nil)
	_, ch, _ := startOnChannel(t, bs)
	if got := bs[1].OwnerOf(ch); got != "n0" {
		t.Fatalf("owner of %s = %q, want n0", ch, got)
	}
	states := func(b *Broker) map[string]string {
		m := map[string]string{}
		for _, l := range b.Links() {
			m[l.Peer] = l.State
		}
		return m
	}
	linksSay := func(who string, b *Broker, want map[string]string) {
		t.Helper()
		clustertest.WaitFor(t, 10*time.Second, who+"'s links", func() bool {
			got := states(b)
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
			return len(got) == len(want)
		})
	}
	if _, err := bs[1].Publish(t.Context(), ch, []byte("m"), transport.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	linksSay("n1", bs[1], map[string]string{"n0": LinkUp, "n2": states(bs[1])["n2"]})
	if st := states(bs[1])["n0"]; st != LinkUp {
		t.Fatalf("n1's link to the owner it published through is %s", st)
	}

	c.kill(t, "n0")
	linksSay("n1", bs[1], map[string]string{"n0": LinkDown, "n2": states(bs[1])["n2"]})
	i := slices.IndexFunc(bs[1].Links(), func(l LinkState) bool { return l.Peer == "n0" })
	if bs[1].Links()[i].Err == "" {
		t.Error("a down link gives no reason")
	}
	c.remove("n0")
	clustertest.WaitFor(t, 10*time.Second, "n0 to leave n1's links", func() bool {
		_, listed := states(bs[1])["n0"]
		return !listed
	})
}
