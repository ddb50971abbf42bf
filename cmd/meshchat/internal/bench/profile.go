package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// profileSet collects one pprof profile from every spawned node, each on
// its own goroutine; wait returns once all are written.
type profileSet struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	paths []string
	errs  []error
}

// cpuProfiles starts a CPU profile of every node lasting d (whole
// seconds, at least one), written to dir as <prefix>-<node>.cpu.pprof.
func (c *cluster) cpuProfiles(ctx context.Context, dir, prefix string, d time.Duration) *profileSet {
	secs := max(1, int(math.Ceil(d.Seconds())))
	return c.profiles(ctx, dir, prefix, "cpu", fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), time.Duration(secs)*time.Second)
}

// heapProfiles writes every node's heap profile, after a collection, to
// dir as <prefix>-<node>.heap.pprof.
func (c *cluster) heapProfiles(ctx context.Context, dir, prefix string) *profileSet {
	return c.profiles(ctx, dir, prefix, "heap", "/debug/pprof/heap?gc=1", 0)
}

func (c *cluster) profiles(ctx context.Context, dir, prefix, kind, path string, lasts time.Duration) *profileSet {
	ps := &profileSet{}
	for _, n := range c.nodes {
		if n.debugAddr == "" {
			continue
		}
		file := filepath.Join(dir, fmt.Sprintf("%s-%s.%s.pprof", prefix, n.name, kind))
		url := "http://" + n.debugAddr + path
		ps.wg.Add(1)
		go func() {
			defer ps.wg.Done()
			err := fetchProfile(ctx, url, file, lasts+30*time.Second)
			ps.mu.Lock()
			defer ps.mu.Unlock()
			if err != nil {
				ps.errs = append(ps.errs, fmt.Errorf("bench: %s profile of %s: %w", kind, n.name, err))
				return
			}
			ps.paths = append(ps.paths, file)
		}()
	}
	return ps
}

// wait returns the files written and what failed.
func (ps *profileSet) wait() ([]string, error) {
	ps.wg.Wait()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	slices.Sort(ps.paths)
	return ps.paths, errors.Join(ps.errs...)
}

func fetchProfile(ctx context.Context, url, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("%s: %s: %s", url, res.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
