package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// AccountsChannel is the broker channel the accounts live on. The chat
// hub hands its deliveries on "s:" channels to Accounts.HandlePublication.
const AccountsChannel = "s:accounts"

const (
	// DefaultMaxAccounts bounds the accounts the cluster keeps: at about
	// 250 bytes each in memory, some 25 MB on every node.
	DefaultMaxAccounts = 100_000
	// accountsPartSize is how many accounts one snapshot publication
	// carries (about 100 KB of JSON).
	accountsPartSize = 400
	// MaxDisplayBytes bounds a display name.
	MaxDisplayBytes = 64
)

// Kinds of account events.
const (
	kindRegister     = "r" // a claim on a name: the first in channel order wins
	kindPassword     = "p" // a new password hash; older sessions end
	kindBan          = "b" // Account.Banned says ban or unban
	kindLogoutAll    = "o" // sessions issued before Account.ValidAfter end
	kindAccountsSnap = "A"
)

// Account is one user as the cluster knows it. The short keys are the
// stored format.
type Account struct {
	Name    string `json:"u"`
	Display string `json:"d,omitempty"`
	// Hash is the argon2id PHC string of the password; empty for a
	// record that holds only a ban (or a user of --auth open or jwt).
	Hash    string `json:"h,omitempty"`
	Claim   string `json:"c,omitempty"` // the registration that created it
	Created int64  `json:"t,omitempty"` // Unix ms of that registration
	Banned  bool   `json:"b,omitempty"`
	// ValidAfter is the Unix ms before which the user's sessions were
	// issued in vain: a password change or "log out everywhere" moves it.
	ValidAfter int64 `json:"v,omitempty"`
}

// Registered reports whether the record is an account with a password.
func (a *Account) Registered() bool { return a.Hash != "" }

// AccountsConfig configures Accounts. Zero values mean the documented
// defaults.
type AccountsConfig struct {
	// Node is this node's name, unique in the cluster. Required.
	Node string
	// Broker carries the accounts between nodes and retains them.
	// Required. It is started by its handler (the chat hub), before
	// Accounts.Start.
	Broker transport.Broker
	// HistoryMaxAge, SnapshotEvery and SnapshotInterval are as in
	// RevocationConfig.
	// HistorySize is the broker's per-channel retention (--history):
	// snapshots come at least every HistorySize/4 entries, so that a
	// small retention never drops what the last snapshot lacks. 0 means
	// unknown (SnapshotEvery alone decides).
	HistorySize      int
	HistoryMaxAge    time.Duration
	SnapshotEvery    int
	SnapshotInterval time.Duration
	// MaxAccounts bounds the records (accounts and bans) the cluster
	// keeps; registrations beyond it fail with ErrAccountsFull. Every
	// node must have the same value. Default DefaultMaxAccounts.
	MaxAccounts int
	// Password are the hashing costs of new passwords. Default
	// DefaultPasswordParams.
	Password PasswordParams
	// Logger receives the logs. Nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// Accounts is the cluster's table of user accounts and bans, as one node
// knows it: a table replicated through the broker channel AccountsChannel
// and compacted by snapshots (compactLog). A name is registered exactly
// once: every registration is a claim published on the channel, and the
// first claim in the channel's one order wins on every node.
//
// Create it with NewAccounts, start its broker (through the chat hub),
// then Start it.
type Accounts struct {
	table
	hasher *hasher
	max    int
	notify func(user string, banned bool) // set by Start

	// Guarded by log.mu.
	m        map[string]*Account
	fullWarn time.Time
}

var _ transport.Handler = (*Accounts)(nil)

// NewAccounts validates cfg and returns a table that is not started.
func NewAccounts(cfg AccountsConfig) (*Accounts, error) {
	if cfg.Node == "" {
		return nil, ErrAccountsNoNode
	}
	if cfg.Broker == nil {
		return nil, ErrAccountsNoBroker
	}
	if cfg.HistoryMaxAge < 0 || cfg.HistorySize < 0 || cfg.SnapshotEvery < 0 || cfg.SnapshotInterval < 0 || cfg.MaxAccounts < 0 {
		return nil, ErrAccountsNegative
	}
	a := &Accounts{
		hasher: newHasher(cfg.Password),
		max:    orDefault(cfg.MaxAccounts, DefaultMaxAccounts),
		m:      make(map[string]*Account),
	}
	a.table = table{newCompactLog(logConfig{
		name:     "accounts",
		channel:  AccountsChannel,
		snapKind: kindAccountsSnap,
		node:     cfg.Node,
		broker:   cfg.Broker,
		every:    cfg.SnapshotEvery,
		retained: cfg.HistorySize,
		interval: cfg.SnapshotInterval,
		maxAge:   cfg.HistoryMaxAge,
		log:      cfg.Logger,
		now:      cfg.Now,
	}, (*accountTable)(a))}
	return a, nil
}

// Start begins loading the table in the background, and keeping it. The
// broker must be started already. notify is called, without blocking,
// for every user whose sessions end because of a change the node learns
// of: banned (banned true) or logged out everywhere (a password change
// or LogoutAll).
func (a *Accounts) Start(ctx context.Context, notify func(user string, banned bool)) error {
	a.notify = notify
	return a.begin(ctx, ErrAccountsStarted)
}

// Len returns how many records (accounts and bans) the node holds.
func (a *Accounts) Len() int {
	a.log.mu.Lock()
	defer a.log.mu.Unlock()
	return len(a.m)
}

// Lookup returns a copy of name's record.
func (a *Accounts) Lookup(name string) (Account, bool) {
	a.log.mu.Lock()
	defer a.log.mu.Unlock()
	if acc := a.m[name]; acc != nil {
		return *acc, true
	}
	return Account{}, false
}

// Register creates the account name with password. Exactly one of
// several registrations of one name, on any nodes, succeeds; the others
// get ErrNameTaken. It fails with ErrWeakPassword or ErrPasswordTooLong
// for a password CheckPassword refuses, ErrAccountsFull when the table
// is full, and ErrAccountsLoading before the table is loaded.
func (a *Accounts) Register(ctx context.Context, name, password, display string) (Account, error) {
	if err := checkPassword(password); err != nil {
		return Account{}, err
	}
	if len(display) > MaxDisplayBytes {
		return Account{}, ErrDisplayTooLong
	}
	if !a.Loaded() {
		return Account{}, ErrAccountsLoading
	}
	if acc, ok := a.Lookup(name); ok && acc.Registered() {
		return Account{}, ErrNameTaken
	}
	hash, err := a.hasher.hash(ctx, password)
	if err != nil {
		return Account{}, err
	}
	claim := randomID()
	ev := logEvent{Kind: kindRegister, Account: &Account{
		Name: name, Display: display, Hash: hash, Claim: claim, Created: a.log.now().UnixMilli(),
	}}
	if err := a.change(ctx, &ev); err != nil {
		return Account{}, err
	}
	acc, ok := a.Lookup(name)
	switch {
	case ok && acc.Claim == claim:
		return acc, nil
	case ok && acc.Registered():
		return Account{}, ErrNameTaken
	default:
		return Account{}, ErrAccountsFull
	}
}

// Authenticate checks name's password. An unknown name, a record without
// a password and a wrong password all answer ErrBadCredentials, after
// the same work. A banned account authenticates: the caller decides what
// a ban means.
func (a *Accounts) Authenticate(ctx context.Context, name, password string) (Account, error) {
	if !a.Loaded() {
		return Account{}, ErrAccountsLoading
	}
	acc, _ := a.Lookup(name)
	ok, err := a.hasher.verify(ctx, acc.Hash, password)
	if err != nil {
		return Account{}, err
	}
	if !ok {
		return Account{}, ErrBadCredentials
	}
	return acc, nil
}

// ChangePassword replaces name's password after checking the old one.
// Every session of the user issued before the change ends, on every
// node; the caller issues a new one to whoever asked.
func (a *Accounts) ChangePassword(ctx context.Context, name, old, password string) (Account, error) {
	if err := checkPassword(password); err != nil {
		return Account{}, err
	}
	if _, err := a.Authenticate(ctx, name, old); err != nil {
		return Account{}, err
	}
	hash, err := a.hasher.hash(ctx, password)
	if err != nil {
		return Account{}, err
	}
	ev := logEvent{Kind: kindPassword, Account: &Account{Name: name, Hash: hash, ValidAfter: a.log.now().UnixMilli()}}
	if err := a.change(ctx, &ev); err != nil {
		return Account{}, err
	}
	acc, _ := a.Lookup(name)
	return acc, nil
}

// LogoutAll ends every session of name issued until now, on every node.
func (a *Accounts) LogoutAll(ctx context.Context, name string) error {
	if !a.Loaded() {
		return ErrAccountsLoading
	}
	ev := logEvent{Kind: kindLogoutAll, Account: &Account{Name: name, ValidAfter: a.log.now().UnixMilli()}}
	return a.change(ctx, &ev)
}

// SetBanned bans or unbans name, cluster-wide. A name nobody registered
// can be banned too: the ban then holds when it is registered.
func (a *Accounts) SetBanned(ctx context.Context, name string, banned bool) error {
	if !a.Loaded() {
		return ErrAccountsLoading
	}
	ev := logEvent{Kind: kindBan, Account: &Account{Name: name, Banned: banned}}
	return a.change(ctx, &ev)
}

// change publishes ev and waits until this node has applied it, so that
// the caller reads its own write.
func (a *Accounts) change(ctx context.Context, ev *logEvent) error {
	ctx, cancel := context.WithTimeout(ctx, tableTimeout)
	defer cancel()
	pub, err := a.log.publish(ctx, ev)
	if err != nil {
		return err
	}
	return a.log.waitApplied(ctx, pub)
}

func randomID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("store: random: " + err.Error()) // crypto/rand does not fail
	}
	return hex.EncodeToString(b[:])
}

// accountTable is the Accounts' map as its compactLog sees it.
type accountTable Accounts

func (t *accountTable) applyLocked(ev *logEvent, now time.Time) (entry bool, after func()) {
	if ev.Kind == kindAccountsSnap {
		for i := range ev.Accounts {
			s := &ev.Accounts[i]
			if t.m[s.Name] == nil && !t.roomLocked(now) {
				continue
			}
			acc := *s
			t.m[s.Name] = &acc
		}
		return false, nil
	}
	ch := ev.Account
	if ch == nil || ch.Name == "" {
		return false, nil
	}
	acc := t.m[ch.Name]
	if acc == nil {
		switch ev.Kind {
		case kindRegister, kindBan, kindLogoutAll:
		case kindPassword:
			return true, nil // nothing to change
		default:
			return false, nil
		}
		// A ban or a logout-all of a name without an account holds
		// for the users of --auth open and jwt, and for a later
		// registration.
		if !t.roomLocked(now) {
			return true, nil
		}
		acc = &Account{Name: ch.Name}
		t.m[ch.Name] = acc
	}
	switch ev.Kind {
	case kindRegister:
		if acc.Registered() {
			return true, nil // an earlier claim won
		}
		acc.Hash, acc.Display, acc.Claim, acc.Created = ch.Hash, ch.Display, ch.Claim, ch.Created
	case kindPassword:
		if !acc.Registered() {
			return true, nil
		}
		acc.Hash = ch.Hash
		acc.ValidAfter = max(acc.ValidAfter, ch.ValidAfter)
		after = t.notifyFunc(acc.Name, false)
	case kindLogoutAll:
		acc.ValidAfter = max(acc.ValidAfter, ch.ValidAfter)
		after = t.notifyFunc(acc.Name, false)
	case kindBan:
		if acc.Banned == ch.Banned {
			return true, nil
		}
		acc.Banned = ch.Banned
		if acc.Banned {
			after = t.notifyFunc(acc.Name, true)
		}
	default:
		return false, nil
	}
	return true, after
}

// roomLocked reports whether one more record fits.
func (t *accountTable) roomLocked(now time.Time) bool {
	if len(t.m) < t.max {
		return true
	}
	if now.Sub(t.fullWarn) >= time.Minute {
		t.fullWarn = now
		t.log.log.Warn("account table full: refusing new accounts", "max", t.max)
	}
	return false
}

func (t *accountTable) notifyFunc(user string, banned bool) func() {
	return func() {
		if t.notify != nil {
			t.notify(user, banned)
		}
	}
}

func (t *accountTable) snapshotLocked(time.Time) []logEvent {
	var parts []logEvent
	cur := make([]Account, 0, min(len(t.m), accountsPartSize))
	for _, acc := range t.m {
		if len(cur) == accountsPartSize {
			parts = append(parts, logEvent{Accounts: cur})
			cur = make([]Account, 0, accountsPartSize)
		}
		cur = append(cur, *acc)
	}
	return append(parts, logEvent{Accounts: cur})
}

func (t *accountTable) pruneLocked(time.Time) {}

func (t *accountTable) aliveLocked() bool { return len(t.m) > 0 }
