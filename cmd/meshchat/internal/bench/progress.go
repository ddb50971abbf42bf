package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress draws a one-line bar on stderr for long runs. A nil *progress
// is valid and draws nothing.
type progress struct {
	w      io.Writer
	prefix string

	mu    sync.Mutex
	label string
	start time.Time
	total time.Duration
	count func() int64

	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, stopc: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

// setPrefix names the run the bar belongs to ("fanout/mesh").
func (p *progress) setPrefix(s string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.prefix = s
	p.mu.Unlock()
}

// phase switches the bar to a new phase of length total (0: unknown); count
// is polled for a rate or, with total 0, a count.
func (p *progress) phase(label string, total time.Duration, count func() int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.label, p.start, p.total, p.count = label, time.Now(), total, count
	p.mu.Unlock()
}

func (p *progress) stop() {
	if p == nil {
		return
	}
	p.stopOnce.Do(func() { close(p.stopc) })
	<-p.done
}

func (p *progress) loop() {
	defer close(p.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var lastN int64
	var lastT time.Time
	lastLabel := ""
	for {
		select {
		case <-p.stopc:
			fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", 79))
			return
		case now := <-t.C:
			p.mu.Lock()
			label, start, total, count, prefix := p.label, p.start, p.total, p.count, p.prefix
			p.mu.Unlock()
			if label == "" {
				continue
			}
			var n int64
			if count != nil {
				n = count()
			}
			if label != lastLabel {
				lastLabel, lastN, lastT = label, n, now
			}
			el := now.Sub(start)
			line := fmt.Sprintf("%s %-8s", prefix, label)
			if total > 0 {
				const width = 24
				f := min(float64(el)/float64(total), 1)
				k := int(f * width)
				line += fmt.Sprintf(" [%s%s] %4.1fs/%.0fs", strings.Repeat("#", k), strings.Repeat(".", width-k), el.Seconds(), total.Seconds())
			} else {
				line += fmt.Sprintf(" %5.1fs", el.Seconds())
			}
			if count != nil {
				if total > 0 && now.After(lastT) {
					line += "  " + fmtRate(float64(n-lastN)/now.Sub(lastT).Seconds())
				} else {
					line += fmt.Sprintf("  %d", n)
				}
			}
			lastN, lastT = n, now
			if len(line) > 79 {
				line = line[:79]
			}
			fmt.Fprintf(p.w, "\r%-79s", line)
		}
	}
}
