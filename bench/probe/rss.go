package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// serverResult is what /proc says about the server over the run. RSS is
// what the issue measures: the Go heap's growth shows there, and so does
// memory the runtime keeps after the attack is gone.
type serverResult struct {
	RSSBefore int64   `json:"rss_before"`
	RSSPeak   int64   `json:"rss_peak"`
	RSSAfter  int64   `json:"rss_after"`
	SettleS   float64 `json:"settle_s"`
	FDsBefore int     `json:"fds_before"`
	FDsPeak   int     `json:"fds_peak"`
	FDsAfter  int     `json:"fds_after"`
	Nofile    int64   `json:"nofile_limit"`
	CPUS      float64 `json:"cpu_s"`
	Alive     bool    `json:"alive"`
}

// serverSampler reads the server's VmRSS (and, less often, its descriptor
// count) until stopped, keeping the peaks.
type serverSampler struct {
	pid   int
	stopc chan struct{}
	done  chan struct{}
	cpu0  time.Duration
	mu    sync.Mutex
	res   serverResult
}

func startSampler(pid int, every time.Duration) *serverSampler {
	s := &serverSampler{pid: pid, stopc: make(chan struct{}), done: make(chan struct{})}
	s.res.RSSBefore = rssBytes(pid)
	s.res.RSSPeak = s.res.RSSBefore
	s.res.FDsBefore = fdCount(pid)
	s.res.FDsPeak = s.res.FDsBefore
	s.res.Nofile = nofileOf(pid)
	s.cpu0 = cpuTime(pid)
	go s.loop(every)
	return s
}

func (s *serverSampler) loop(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-s.stopc:
			return
		case <-t.C:
		}
		rss := rssBytes(s.pid)
		fds := -1
		if i%5 == 0 { // listing /proc/PID/fd costs more with thousands open
			fds = fdCount(s.pid)
		}
		s.mu.Lock()
		s.res.RSSPeak = max(s.res.RSSPeak, rss)
		s.res.FDsPeak = max(s.res.FDsPeak, fds)
		s.mu.Unlock()
	}
}

// peak is the highest RSS so far.
func (s *serverSampler) peak() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res.RSSPeak
}

// stop takes the last readings: RSS now is "after".
func (s *serverSampler) stop() serverResult {
	close(s.stopc)
	<-s.done
	s.res.RSSAfter = rssBytes(s.pid)
	s.res.RSSPeak = max(s.res.RSSPeak, s.res.RSSAfter)
	s.res.FDsAfter = fdCount(s.pid)
	s.res.FDsPeak = max(s.res.FDsPeak, s.res.FDsAfter)
	if cpu := cpuTime(s.pid); cpu >= 0 && s.cpu0 >= 0 {
		s.res.CPUS = round((cpu - s.cpu0).Seconds(), 2)
	}
	s.res.Alive = syscall.Kill(s.pid, 0) == nil && s.res.RSSAfter >= 0
	return s.res
}

// raiseNofile lifts RLIMIT_NOFILE's soft limit to the hard one (slowloris
// and partial hold thousands of sockets) and returns the soft limit.
func raiseNofile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	rl.Cur = rl.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return rl.Cur
}

// rssBytes is VmRSS from /proc/PID/status, -1 if the process is gone.
func rssBytes(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fs := strings.Fields(v)
			if len(fs) > 0 {
				kb, _ := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10
			}
		}
	}
	return -1
}

// cpuTime is utime+stime of a process from /proc/PID/stat, -1 if gone.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The fields after the ")" closing the command name; utime and stime
	// are fields 14 and 15 of the line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 13 {
		return -1
	}
	ut, _ := strconv.ParseInt(fs[11], 10, 64)
	st, _ := strconv.ParseInt(fs[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

func fdCount(pid int) int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(es)
}

// nofileOf is the soft "Max open files" of a process.
func nofileOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Max open files"); ok {
			if fs := strings.Fields(v); len(fs) > 0 {
				n, _ := strconv.ParseInt(fs[0], 10, 64)
				return n
			}
		}
	}
	return -1
}

// health is GET /health on a connection of its own from 127.0.0.1, with a
// 2 s timeout: what a load balancer's check would see.
func (p *prober) health(ctx context.Context) error {
	_, err := p.healthOnce(ctx, 2*time.Second)
	return err
}

func (p *prober) healthOnce(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.base+"/health", nil)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return time.Since(t0), err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return time.Since(t0), fmt.Errorf("status %d", resp.StatusCode)
	}
	return time.Since(t0), nil
}

// metrics reads the named series from GET /metrics (those the server
// has; older builds lack some). Label sets are kept in the name.
func (p *prober) metrics(ctx context.Context, names ...string) map[string]float64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.base+"/metrics", nil)
	if err != nil {
		return nil
	}
	p.authorize(req)
	resp, err := p.http.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		base, _, _ := strings.Cut(name, "{")
		for _, n := range names {
			if n == base {
				if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
					out[name] = v
				}
			}
		}
	}
	return out
}
