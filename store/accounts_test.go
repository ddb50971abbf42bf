package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/store/redistest"
	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
	"github.com/meshchat/meshchat/transport/inproc"
	"github.com/meshchat/meshchat/transport/redis"
)

// accNode is one node's account table on its own broker, with the
// notifications it was given.
type accNode struct {
	*Accounts
	mu        sync.Mutex
	banned    map[string]int
	loggedOut map[string]int
}

func (n *accNode) notified(user string, banned bool) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if banned {
		return n.banned[user]
	}
	return n.loggedOut[user]
}

func startAccounts(t *testing.T, b transport.Broker, node string, mod func(*AccountsConfig)) *accNode {
	t.Helper()
	cfg := AccountsConfig{Node: node, Broker: b, Password: TestPasswordParams}
	if mod != nil {
		mod(&cfg)
	}
	a, err := NewAccounts(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &accNode{Accounts: a, banned: map[string]int{}, loggedOut: map[string]int{}}
	ctx := context.Background()
	if err := b.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	err = a.Start(ctx, func(user string, banned bool) {
		n.mu.Lock()
		defer n.mu.Unlock()
		if banned {
			n.banned[user]++
		} else {
			n.loggedOut[user]++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := b.Close(ctx); err != nil {
			t.Errorf("broker close: %v", err)
		}
	})
	brokertest.Eventually(t, node+" loaded", a.Loaded)
	return n
}

func TestRegisterAndAuthenticate(t *testing.T) {
	net := inproc.NewNetwork()
	n1 := startAccounts(t, smallBroker(t, net, "n1", 0), "n1", nil)
	n2 := startAccounts(t, smallBroker(t, net, "n2", 0), "n2", nil)
	ctx := context.Background()

	if _, err := n1.Register(ctx, "alice", "short", ""); !errors.Is(err, ErrWeakPassword) {
		t.Fatalf("short password: %v, want ErrWeakPassword", err)
	}
	if _, err := n1.Register(ctx, "alice", strings.Repeat("x", MaxPasswordBytes+1), ""); !errors.Is(err, ErrPasswordTooLong) {
		t.Fatalf("long password: %v, want ErrPasswordTooLong", err)
	}
	acc, err := n1.Register(ctx, "alice", "correct horse", "Alice Ünal")
	if err != nil {
		t.Fatal(err)
	}
	if acc.Name != "alice" || acc.Display != "Alice Ünal" || strings.Contains(acc.Hash, "correct") {
		t.Fatalf("account %+v", acc)
	}
	// Another node knows it, and checks the password.
	brokertest.Eventually(t, "account on n2", func() bool { _, ok := n2.Lookup("alice"); return ok })
	if _, err := n2.Authenticate(ctx, "alice", "correct horse"); err != nil {
		t.Fatalf("right password on n2: %v", err)
	}
	for _, c := range []struct{ name, pw string }{{"alice", "wrong horse"}, {"bob", "correct horse"}, {"alice", ""}} {
		if _, err := n2.Authenticate(ctx, c.name, c.pw); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("Authenticate(%q, %q) = %v, want ErrBadCredentials", c.name, c.pw, err)
		}
	}
	if _, err := n2.Register(ctx, "alice", "another password", ""); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("second registration: %v, want ErrNameTaken", err)
	}
}

// Many nodes registering one name at the same moment: exactly one wins,
// every round, and every node agrees on which.
func TestRegisterRaceExactlyOneWins(t *testing.T) {
	net := inproc.NewNetwork()
	var nodes []*accNode
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		nodes = append(nodes, startAccounts(t, smallBroker(t, net, name, 0), name, nil))
	}
	for round := range 30 {
		user := fmt.Sprintf("u%d", round)
		var wins, taken atomic.Int32
		var winner atomic.Value
		var wg sync.WaitGroup
		for i, n := range nodes {
			for k := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					pw := fmt.Sprintf("password-%d-%d", i, k)
					_, err := n.Register(context.Background(), user, pw, "")
					switch {
					case err == nil:
						wins.Add(1)
						winner.Store(pw)
					case errors.Is(err, ErrNameTaken):
						taken.Add(1)
					default:
						t.Errorf("register: %v", err)
					}
				}()
			}
		}
		wg.Wait()
		if wins.Load() != 1 || taken.Load() != 5 {
			t.Fatalf("round %d: %d wins, %d taken; want 1 and 5", round, wins.Load(), taken.Load())
		}
		for _, n := range nodes {
			brokertest.Eventually(t, "winner everywhere", func() bool {
				_, err := n.Authenticate(context.Background(), user, winner.Load().(string))
				return err == nil
			})
		}
	}
}

func TestPasswordChangeBanAndLogoutAll(t *testing.T) {
	net := inproc.NewNetwork()
	n1 := startAccounts(t, smallBroker(t, net, "n1", 0), "n1", nil)
	n2 := startAccounts(t, smallBroker(t, net, "n2", 0), "n2", nil)
	ctx := context.Background()
	if _, err := n1.Register(ctx, "bob", "first password", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := n2.ChangePassword(ctx, "bob", "wrong password", "second password"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("change with a wrong password: %v", err)
	}
	before := time.Now().UnixMilli()
	acc, err := n2.ChangePassword(ctx, "bob", "first password", "second password")
	if err != nil {
		t.Fatal(err)
	}
	if acc.ValidAfter < before {
		t.Fatalf("ValidAfter %d, want at least %d: older sessions must end", acc.ValidAfter, before)
	}
	brokertest.Eventually(t, "n1 notified of the change", func() bool { return n1.notified("bob", false) == 1 })
	if _, err := n1.Authenticate(ctx, "bob", "first password"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("old password: %v", err)
	}
	if _, err := n1.Authenticate(ctx, "bob", "second password"); err != nil {
		t.Fatalf("new password: %v", err)
	}

	if err := n1.SetBanned(ctx, "bob", true); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, "ban on n2", func() bool { a, _ := n2.Lookup("bob"); return a.Banned })
	if n2.notified("bob", true) != 1 {
		t.Fatalf("n2 told of the ban %d times", n2.notified("bob", true))
	}
	if err := n2.SetBanned(ctx, "bob", false); err != nil {
		t.Fatal(err)
	}
	if a, _ := n2.Lookup("bob"); a.Banned {
		t.Fatal("unban not applied on the node that made it")
	}

	// A name nobody registered can be banned; registering it keeps the
	// ban.
	if err := n1.SetBanned(ctx, "mallory", true); err != nil {
		t.Fatal(err)
	}
	if _, err := n2.Register(ctx, "mallory", "mallory's password", ""); err != nil {
		t.Fatal(err)
	}
	if a, _ := n2.Lookup("mallory"); !a.Banned || !a.Registered() {
		t.Fatalf("mallory %+v, want registered and banned", a)
	}

	if err := n2.LogoutAll(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, "n1 told of the logout", func() bool { return n1.notified("bob", false) == 2 })
}

// Accounts outlive the channel's retention: a node started after far
// more changes than the channel keeps still knows every account, with
// its latest password, also when a change landed between a snapshot
// being taken and published.
func TestAccountsOutliveRetention(t *testing.T) {
	const retained, every = 40, 8
	net := inproc.NewNetwork()
	snap := func(c *AccountsConfig) { c.SnapshotEvery = every }
	n1 := startAccounts(t, smallBroker(t, net, "n1", retained), "n1", snap)
	ctx := context.Background()
	const users = 60
	for i := range users {
		if _, err := n1.Register(ctx, fmt.Sprintf("user%d", i), "first password", ""); err != nil {
			t.Fatal(err)
		}
	}
	for i := range users {
		if i%3 == 0 {
			if _, err := n1.ChangePassword(ctx, fmt.Sprintf("user%d", i), "first password", "second password"); err != nil {
				t.Fatal(err)
			}
		}
	}
	n2 := startAccounts(t, smallBroker(t, net, "n2", retained), "n2", snap)
	if n2.Len() != users {
		t.Fatalf("late node knows %d accounts, want %d", n2.Len(), users)
	}
	for i := range users {
		pw := "first password"
		if i%3 == 0 {
			pw = "second password"
		}
		if _, err := n2.Authenticate(ctx, fmt.Sprintf("user%d", i), pw); err != nil {
			t.Fatalf("user%d on the late node: %v", i, err)
		}
	}
}

func TestAccountTableBounded(t *testing.T) {
	net := inproc.NewNetwork()
	n := startAccounts(t, smallBroker(t, net, "n1", 0), "n1", func(c *AccountsConfig) { c.MaxAccounts = 2 })
	ctx := context.Background()
	for _, u := range []string{"a", "b"} {
		if _, err := n.Register(ctx, u, "long enough", ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Register(ctx, "c", "long enough", ""); !errors.Is(err, ErrAccountsFull) {
		t.Fatalf("third account: %v, want ErrAccountsFull", err)
	}
}

func TestAccountsWithRedisBroker(t *testing.T) {
	srv := redistest.Start(t)
	node := func(name string) *accNode {
		b, err := redis.New(redis.Config{URL: srv.URL(), Node: name, Alive: func() []string { return []string{"n1", "n2"} }})
		if err != nil {
			t.Fatal(err)
		}
		return startAccounts(t, b, name, nil)
	}
	n1, n2 := node("n1"), node("n2")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, n := range []*accNode{n1, n2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = n.Register(context.Background(), "carol", fmt.Sprintf("password %d", i), "")
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("two registrations at once: %v and %v; want exactly one to win", errs[0], errs[1])
	}
}

func TestPasswordHashFormat(t *testing.T) {
	h := newHasher(TestPasswordParams)
	ctx := context.Background()
	enc, err := h.hash(ctx, "hunter2hunter2")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q", enc)
	}
	enc2, _ := h.hash(ctx, "hunter2hunter2")
	if enc == enc2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for _, c := range []struct {
		enc, pw string
		want    bool
	}{
		{enc, "hunter2hunter2", true},
		{enc, "hunter2hunter3", false},
		{"", "", false},
		{"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5", "x", false}, // absurd cost refused
		{"garbage", "garbage", false},
	} {
		if ok, err := h.verify(ctx, c.enc, c.pw); err != nil || ok != c.want {
			t.Errorf("verify(%q, %q) = %v, %v; want %v", c.enc, c.pw, ok, err, c.want)
		}
	}
}

// Under --auth jwt and open users have no account; logging them out
// everywhere must still hold.
func TestLogoutAllWithoutAccount(t *testing.T) {
	net := inproc.NewNetwork()
	n1 := startAccounts(t, smallBroker(t, net, "n1", 0), "n1", nil)
	n2 := startAccounts(t, smallBroker(t, net, "n2", 0), "n2", nil)
	before := time.Now().UnixMilli()
	if err := n1.LogoutAll(context.Background(), "appuser"); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, "logout on n2", func() bool {
		a, ok := n2.Lookup("appuser")
		return ok && a.ValidAfter >= before && !a.Registered()
	})
}
