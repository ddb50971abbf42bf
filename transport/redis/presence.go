package redis

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// Presence lives in one hash per channel, field user+"\x00"+node, value
// the writing broker's incarnation, plus an index per node (a set of
// channel+"\x00"+user) so a node can find its own entries without
// scanning every channel.
func (b *Broker) presenceKey(ch string) string { return b.base(ch) + ":presence" }
func (b *Broker) nodeIndexKey() string         { return b.cfg.KeyPrefix + "node:{" + b.cfg.Node + "}:presence" }
func (b *Broker) presenceField(user string) string {
	return user + "\x00" + b.cfg.Node
}

// AddPresence records user as present in ch on this node.
func (b *Broker) AddPresence(ctx context.Context, ch, user string) error {
	if b.isClosed() {
		return transport.ErrClosed
	}
	pipe := b.client.TxPipeline()
	pipe.HSet(ctx, b.presenceKey(ch), b.presenceField(user), b.incarnation)
	pipe.SAdd(ctx, b.nodeIndexKey(), ch+"\x00"+user)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("add presence", err)
	}
	return nil
}

// RemovePresence removes user's presence in ch on this node.
func (b *Broker) RemovePresence(ctx context.Context, ch, user string) error {
	if b.isClosed() {
		return transport.ErrClosed
	}
	pipe := b.client.TxPipeline()
	pipe.HDel(ctx, b.presenceKey(ch), b.presenceField(user))
	pipe.SRem(ctx, b.nodeIndexKey(), ch+"\x00"+user)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("remove presence", err)
	}
	return nil
}

// Presence returns the users present in ch, each with its nodes, leaving
// out nodes that Config.Alive does not list.
func (b *Broker) Presence(ctx context.Context, ch string) (map[string][]string, error) {
	if b.isClosed() {
		return nil, transport.ErrClosed
	}
	fields, err := b.client.HKeys(ctx, b.presenceKey(ch)).Result()
	if err != nil {
		return nil, unavailable("presence", err)
	}
	var alive map[string]bool
	if b.cfg.Alive != nil {
		names := b.cfg.Alive()
		alive = make(map[string]bool, len(names))
		for _, n := range names {
			alive[n] = true
		}
	}
	out := make(map[string][]string)
	for _, f := range fields {
		user, node, ok := strings.Cut(f, "\x00")
		if !ok || (alive != nil && !alive[node]) {
			continue
		}
		out[user] = append(out[user], node)
	}
	for _, nodes := range out {
		slices.Sort(nodes)
	}
	return out, nil
}

// cleanPresence deletes this node's entries: mode "stale" those written
// by earlier runs (at Start), mode "own" this run's (at Close). Each entry
// is checked and deleted atomically, so an AddPresence racing the cleanup
// is never lost.
func (b *Broker) cleanPresence(ctx context.Context, mode string) error {
	index := b.nodeIndexKey()
	members, err := b.client.SMembers(ctx, index).Result()
	if err != nil {
		return unavailable("presence cleanup", err)
	}
	for _, m := range members {
		ch, user, ok := strings.Cut(m, "\x00")
		if !ok {
			continue
		}
		keys := []string{b.presenceKey(ch), index}
		if err := presenceCleanScript.Run(ctx, b.client, keys, b.presenceField(user), m, b.incarnation, mode).Err(); err != nil {
			return unavailable("presence cleanup", err)
		}
	}
	return nil
}

// cleanStaleLoop retries the Start-time cleanup until it succeeds or the
// broker closes.
func (b *Broker) cleanStaleLoop() {
	backoff := 100 * time.Millisecond
	for b.sleep(backoff) {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		err := b.cleanPresence(ctx, "stale")
		cancel()
		if err == nil {
			b.log.Info("stale presence cleared")
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
