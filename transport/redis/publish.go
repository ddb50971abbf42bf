package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshchat/meshchat/transport"
)

// Key layout (see docs/redis.md). The channel name sits in a hash tag so
// that a channel's keys share one slot.
func (b *Broker) base(ch string) string    { return b.cfg.KeyPrefix + "{" + ch + "}" }
func (b *Broker) metaKey(ch string) string { return b.base(ch) + ":meta" }
func (b *Broker) histKey(ch string) string { return b.base(ch) + ":history" }
func (b *Broker) pubName(ch string) string { return b.base(ch) + ":pub" }
func (b *Broker) idemKey(ch, key string) string {
	return b.base(ch) + ":idem:" + key
}

// Publish stores and publishes with one script run, or, for ephemeral
// publications, with a plain PUBLISH.
func (b *Broker) Publish(ctx context.Context, ch string, data []byte, opts transport.PublishOptions) (transport.Publication, error) {
	if b.isClosed() {
		return transport.Publication{}, transport.ErrClosed
	}
	if opts.Ephemeral {
		now := time.Now().UnixMilli()
		msg := make([]byte, 0, len(data)+24)
		msg = append(msg, "0::"...)
		msg = strconv.AppendInt(msg, now, 10)
		msg = append(msg, ':')
		msg = append(msg, data...)
		if err := b.client.Publish(ctx, b.pubName(ch), msg).Err(); err != nil {
			return transport.Publication{}, unavailable("publish", err)
		}
		return transport.Publication{Time: now, Data: data}, nil
	}

	keys := []string{b.metaKey(ch), b.histKey(ch)}
	if opts.IdempotencyKey != "" {
		keys = append(keys, b.idemKey(ch, opts.IdempotencyKey))
	}
	reply, err := publishScript.Run(ctx, b.client, keys,
		data,
		randomHex(8),
		b.cfg.HistorySize,
		b.cfg.HistoryMaxAge.Milliseconds(),
		b.cfg.DedupeWindow.Milliseconds(),
		b.pubName(ch),
	).Text()
	if err != nil {
		return transport.Publication{}, unavailable("publish", err)
	}
	pub, rest, err := decodeHead(reply + ":")
	if err != nil || rest != "" {
		return transport.Publication{}, fmt.Errorf("%w: publish returned %q", errBadReply, reply)
	}
	pub.Data = slices.Clone(data)
	return pub, nil
}

// decodeHead parses "offset:epoch:time:" and returns what follows.
func decodeHead(s string) (transport.Publication, string, error) {
	var fields [3]string
	for i := range fields {
		j := strings.IndexByte(s, ':')
		if j < 0 {
			return transport.Publication{}, "", errors.New("short header")
		}
		fields[i], s = s[:j], s[j+1:]
	}
	off, err := strconv.ParseUint(fields[0], 10, 64)
	if err != nil {
		return transport.Publication{}, "", err
	}
	ts, err := strconv.ParseInt(fields[2], 10, 64)
	if err != nil {
		return transport.Publication{}, "", err
	}
	return transport.Publication{Offset: off, Epoch: fields[1], Time: ts}, s, nil
}

// decodeMessage parses a pub/sub payload: "offset:epoch:time:data", with
// offset 0 and an empty epoch for ephemeral publications.
func decodeMessage(payload string) (transport.Publication, error) {
	pub, data, err := decodeHead(payload)
	if err != nil {
		return pub, err
	}
	pub.Data = []byte(data)
	return pub, nil
}

// History reads the slice of history req asks for with one script run,
// so the decision whether Since is recoverable and the publications
// returned come from one consistent view.
func (b *Broker) History(ctx context.Context, ch string, req transport.HistoryRequest) (transport.HistoryResult, error) {
	if b.isClosed() {
		return transport.HistoryResult{}, transport.ErrClosed
	}
	if req.Limit < 0 {
		return transport.HistoryResult{}, errors.New("redis broker: negative history limit")
	}
	since, sinceEpoch := "-1", ""
	if req.Since != nil {
		since, sinceEpoch = strconv.FormatUint(req.Since.Offset, 10), req.Since.Epoch
	}
	reply, err := historyScript.Run(ctx, b.client, []string{b.metaKey(ch), b.histKey(ch)},
		since, sinceEpoch, req.Limit, b.cfg.HistoryMaxAge.Milliseconds(),
	).Slice()
	if err != nil {
		return transport.HistoryResult{}, unavailable("history", err)
	}
	return parseHistory(reply)
}

func parseHistory(reply []any) (transport.HistoryResult, error) {
	var res transport.HistoryResult
	if len(reply) < 3 || (len(reply)-3)%3 != 0 {
		return res, fmt.Errorf("%w: history reply of %d items", errBadReply, len(reply))
	}
	epoch, ok1 := reply[0].(string)
	latest, ok2 := reply[1].(int64)
	recovered, ok3 := reply[2].(int64)
	if !ok1 || !ok2 || !ok3 {
		return res, fmt.Errorf("%w: history header %v", errBadReply, reply[:3])
	}
	res.Latest = transport.StreamPosition{Offset: uint64(latest), Epoch: epoch}
	res.Recovered = recovered == 1
	if n := (len(reply) - 3) / 3; n > 0 {
		res.Publications = make([]transport.Publication, 0, n)
	}
	for i := 3; i < len(reply); i += 3 {
		id, ok1 := reply[i].(string)
		ts, ok2 := reply[i+1].(string)
		data, ok3 := reply[i+2].(string)
		if !ok1 || !ok2 || !ok3 {
			return res, fmt.Errorf("%w: history entry %v", errBadReply, reply[i:i+3])
		}
		offStr, _, _ := strings.Cut(id, "-")
		off, err1 := strconv.ParseUint(offStr, 10, 64)
		t, err2 := strconv.ParseInt(ts, 10, 64)
		if err1 != nil || err2 != nil {
			return res, fmt.Errorf("%w: history entry id %q time %q", errBadReply, id, ts)
		}
		res.Publications = append(res.Publications, transport.Publication{
			Offset: off, Epoch: epoch, Time: t, Data: []byte(data),
		})
	}
	return res, nil
}
