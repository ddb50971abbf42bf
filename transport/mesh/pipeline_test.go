package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshchat/meshchat/transport"
	"github.com/meshchat/meshchat/transport/brokertest"
)

// TestFailoverUnderLoad kills a channel's owner while two nodes publish
// (retrying with idempotency keys, as the hub does): every survivor must
// deliver exactly the channel's history, with no gap and no duplicate.
func TestFailoverUnderLoad(t *testing.T) {
	c, bs := newTestCluster(t, 3, nil)
	recs, ch, _ := startOnChannel(t, bs, 1, 2)
	ctx := t.Context()
	const perNode = 40
	var wg sync.WaitGroup
	var published atomic.Int64
	killed := make(chan struct{})
	for _, i := range []int{1, 2} {
		wg.Go(func() {
			for j := range perNode {
				key := fmt.Sprintf("n%d-%d", i, j)
				for {
					_, err := bs[i].Publish(ctx, ch, []byte(key), transport.PublishOptions{IdempotencyKey: key})
					if err == nil {
						break
					}
					if !errors.Is(err, transport.ErrUnavailable) || ctx.Err() != nil {
						t.Errorf("publish %s: %v", key, err)
						return
					}
					<-killed // only the failover may make it unavailable
				}
				published.Add(1)
			}
		})
	}
	brokertest.Eventually(t, "some publications before the kill", func() bool { return published.Load() >= 20 })
	c.kill(t, "n0")
	c.remove("n0")
	close(killed)
	wg.Wait()

	res, err := bs[1].History(ctx, ch, transport.HistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	total := uint64(2 * perNode)
	if got := brokertest.Offsets(res.Publications); !slices.Equal(got, brokertest.Seq(1, total)) {
		t.Fatalf("history offsets %v, want 1..%d", got, total)
	}
	for _, i := range []int{1, 2} {
		got := recs[i].WaitN(t, ch, int(total))
		if !slices.EqualFunc(got, res.Publications, samePub) {
			t.Fatalf("n%d delivered %v, history has %v", i, brokertest.Offsets(got), brokertest.Offsets(res.Publications))
		}
	}
}

// TestPipelineOwnerKilledMidStream kills a channel's owner while many
// publishers on the other nodes keep several publications of the channel
// in flight at once. Every acknowledged publication must survive at the
// offset it was acknowledged with, and nothing a subscriber delivered may
// be missing from, or different in, the stream the new owner continues:
// a publication is visible only once the backup has it.
func TestPipelineOwnerKilledMidStream(t *testing.T) {
	c, bs := newTestCluster(t, 3, func(_ int, cfg *Config) {
		cfg.RequestTimeout = time.Second
		cfg.HistorySize = 1000 // the whole stream stays checkable
	})
	subs := []int{1, 2}
	recs, ch, _ := startOnChannel(t, bs, subs...)
	const (
		perNode   = 8 // concurrent publishers on each surviving node
		perWorker = 15
	)
	load := startPublishers(t, bs, ch, subs, perNode, perWorker, nil)
	brokertest.Eventually(t, "publications in flight before the kill", func() bool { return load.published.Load() >= 2*perNode*perWorker/3 })
	// What the subscribers saw before the owner died must stay the stream.
	seen := [][]transport.Publication{recs[1].Get(ch), recs[2].Get(ch)}
	c.kill(t, "n0")
	c.remove("n0")
	acked := load.wait(t)
	checkOneStream(t, bs[1:], recs[1:], []int{0, 1}, ch, acked)
	res, err := bs[1].History(t.Context(), ch, transport.HistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for k, before := range seen {
		if len(before) > len(res.Publications) || !slices.EqualFunc(before, res.Publications[:len(before)], samePub) {
			t.Fatalf("n%d delivered %v before the kill; the stream is %v", k+1, brokertest.Offsets(before), brokertest.Offsets(res.Publications))
		}
	}
}

// memLog is a Log in memory whose appends can be held back or
// made to fail, to exercise the owner's handling of in-flight and failed
// writes.
type memLog struct {
	mu     sync.Mutex
	states map[string]LogState
	// hook, when set, runs at the start of every Append; an error fails it.
	hook func(ctx context.Context, pub transport.Publication) error
}

func newMemLog() *memLog { return &memLog{states: make(map[string]LogState)} }

func (l *memLog) setHook(h func(context.Context, transport.Publication) error) {
	l.mu.Lock()
	l.hook = h
	l.mu.Unlock()
}

func (l *memLog) Append(ctx context.Context, ch string, pub transport.Publication, key string) error {
	l.mu.Lock()
	h := l.hook
	l.mu.Unlock()
	if h != nil {
		if err := h(ctx, pub); err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.states[ch]
	if st.Epoch != pub.Epoch {
		return fmt.Errorf("append to %s in epoch %q, stream is in %q", ch, pub.Epoch, st.Epoch)
	}
	st.Pubs = append(slices.DeleteFunc(st.Pubs, func(p transport.Publication) bool { return p.Offset >= pub.Offset }), pub)
	st.Offset, st.LastTime = max(st.Offset, pub.Offset), pub.Time
	if key != "" {
		st.Keys = append(st.Keys, LogKey{Key: key, Pub: pub})
	}
	l.states[ch] = st
	return nil
}

func (l *memLog) Reset(_ context.Context, ch string, st LogState) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	st.Pubs = slices.Clone(st.Pubs)
	st.Keys = slices.Clone(st.Keys)
	l.states[ch] = st
	return nil
}

func (l *memLog) Load(_ context.Context, ch string) (LogState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.states[ch], nil
}

func (l *memLog) Channels(context.Context) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for ch := range l.states {
		out = append(out, ch)
	}
	return out, nil
}

func (l *memLog) Close() error { return nil }

// TestPipelineDuplicateKeyInFlight publishes twice with one idempotency
// key while the first publication is still being written: the second
// waits for the first and returns it, and the channel stores it once.
func TestPipelineDuplicateKeyInFlight(t *testing.T) {
	logs := []*memLog{newMemLog(), newMemLog()}
	_, bs := newTestCluster(t, 2, func(i int, cfg *Config) { cfg.Log = logs[i] })
	recs, ch, _ := startOnChannel(t, bs, 1)
	ctx := t.Context()
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	logs[0].setHook(func(ctx context.Context, _ transport.Publication) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	type result struct {
		pub transport.Publication
		err error
	}
	first := make(chan result, 1)
	go func() {
		p, err := bs[1].Publish(ctx, ch, []byte("once"), transport.PublishOptions{IdempotencyKey: "k1"})
		first <- result{p, err}
	}()
	<-entered
	second := make(chan result, 1)
	go func() {
		p, err := bs[0].Publish(ctx, ch, []byte("twice"), transport.PublishOptions{IdempotencyKey: "k1"})
		second <- result{p, err}
	}()
	// The duplicate must not be acknowledged before the original.
	select {
	case r := <-second:
		t.Fatalf("duplicate returned %+v, %v while the original was in flight", r.pub, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	r1, r2 := <-first, <-second
	if r1.err != nil || r2.err != nil {
		t.Fatalf("publish: %v, %v", r1.err, r2.err)
	}
	if !samePub(r1.pub, r2.pub) || string(r1.pub.Data) != "once" {
		t.Fatalf("original %+v, duplicate %+v: want the original twice", r1.pub, r2.pub)
	}
	res, err := bs[1].History(ctx, ch, transport.HistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := brokertest.Offsets(res.Publications); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("history %v, want one publication", got)
	}
	if got := recs[1].WaitN(t, ch, 1); len(got) != 1 || !samePub(got[0], r1.pub) {
		t.Fatalf("delivered %v", brokertest.Offsets(got))
	}
}

// TestPipelineLogFailureAbandons fails the owner's log write for some of
// many concurrent publications. Those and every publication queued
// behind them fail (ErrUnavailable) and are never delivered; the others
// form one gapless stream, which the backup holds too: after the owner
// dies, the backup continues exactly the acknowledged stream.
func TestPipelineLogFailureAbandons(t *testing.T) {
	logs := []*memLog{newMemLog(), newMemLog(), newMemLog()}
	c, bs := newTestCluster(t, 3, func(i int, cfg *Config) { cfg.Log = logs[i] })
	subs := []int{1, 2}
	recs, ch, _ := startOnChannel(t, bs, subs...)
	ctx := t.Context()
	var calls atomic.Int64
	errDisk := errors.New("disk full")
	logs[0].setHook(func(context.Context, transport.Publication) error {
		if calls.Add(1)%7 == 0 {
			return errDisk
		}
		return nil
	})
	var (
		mu     sync.Mutex
		acked  = make(map[string]transport.Publication)
		failed int
		wg     sync.WaitGroup
	)
	for _, i := range subs {
		for w := range 6 {
			wg.Go(func() {
				for j := range 10 {
					key := fmt.Sprintf("n%d-%d-%d", i, w, j)
					p, err := bs[i].Publish(ctx, ch, []byte(key), transport.PublishOptions{IdempotencyKey: key})
					mu.Lock()
					switch {
					case err == nil:
						acked[key] = p
					case errors.Is(err, transport.ErrUnavailable):
						failed++
					default:
						t.Errorf("publish %s: %v", key, err)
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if failed == 0 {
		t.Fatal("no publication failed: the log hook did not bite")
	}
	logs[0].setHook(nil)
	// A last publication once the log works again makes the backup's copy
	// current (abandoned copies are replaced by a snapshot).
	p, err := bs[1].Publish(ctx, ch, []byte("last"), transport.PublishOptions{IdempotencyKey: "last"})
	if err != nil {
		t.Fatal(err)
	}
	acked["last"] = p
	checkOneStream(t, bs, recs, subs, ch, acked)
	c.kill(t, "n0")
	c.remove("n0")
	checkOneStream(t, bs[1:], recs[1:], []int{0, 1}, ch, acked)
}
