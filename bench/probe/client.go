package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// srcPool rotates the source address of attacking connections over a
// range of loopback addresses: the server's per-address limits (connect
// rate, HTTP connections per address) then see many clients, as they
// would from a botnet, and each address has its own ephemeral ports.
type srcPool struct {
	ips  []net.IP
	next atomic.Uint64
}

func (p *srcPool) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if len(p.ips) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: p.ips[(p.next.Add(1)-1)%uint64(len(p.ips))]}
	}
	return d.DialContext(ctx, network, addr)
}

// parseSrcRange parses "127.0.0.2-127.0.0.250", one address, or "".
func parseSrcRange(s string) ([]net.IP, error) {
	if s == "" {
		return nil, nil
	}
	lo, hi, found := strings.Cut(s, "-")
	a := net.ParseIP(lo).To4()
	b := a
	if found {
		b = net.ParseIP(hi).To4()
	}
	if a == nil || b == nil || a[0] != 127 || b[0] != 127 {
		return nil, fmt.Errorf("source range %q must be IPv4 loopback addresses", s)
	}
	ua, ub := ipUint(a), ipUint(b)
	if ub < ua {
		return nil, fmt.Errorf("empty source range %q", s)
	}
	var ips []net.IP
	for u := ua; u <= ub; u++ {
		ips = append(ips, net.IPv4(byte(u>>24), byte(u>>16), byte(u>>8), byte(u)).To4())
	}
	return ips, nil
}

func ipUint(ip net.IP) uint32 {
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

// newHTTPClient is a keep-alive client from the kernel's default source
// address (127.0.0.1), as the application's backend would be.
func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

func (p *prober) authorize(req *http.Request) {
	if p.cfg.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+p.cfg.apiKey)
	}
}

// post sends a JSON body and returns the status and the (whole) answer.
func (p *prober) post(ctx context.Context, c *http.Client, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	p.authorize(req)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

// register registers user and returns the socket URL it was given.
func (p *prober) register(ctx context.Context, c *http.Client, user uint64) (string, error) {
	status, body, err := p.post(ctx, c, "/register", fmt.Appendf(nil, `{"user_id":%d}`, user))
	if err != nil {
		return "", fmt.Errorf("register: %w", err)
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("register: status %d %s", status, bytes.TrimSpace(body))
	}
	var r struct{ URL string }
	if err := json.Unmarshal(body, &r); err != nil || r.URL == "" {
		return "", fmt.Errorf("register: answer %q", body)
	}
	if err := checkLoopback(r.URL); err != nil {
		return "", err
	}
	return r.URL, nil
}

// counts counts events by name, safely from many goroutines. Distinct
// names are capped so that a stream of unique error texts cannot grow it.
type counts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counts) add(k string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	if _, ok := c.m[k]; !ok && len(c.m) >= 30 {
		k = "(other)"
	}
	c.m[k] += n
}

func (c *counts) addErr(err error) { c.add(shortErr(err), 1) }

// snapshot returns a copy, nil when empty (omitted from the JSON).
func (c *counts) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) == 0 {
		return nil
	}
	out := make(map[string]int, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// String lists the counts by name: "1009×2990, 4004×10".
func (c *counts) String() string { return countsText(c.snapshot()) }

func countsText(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s×%d", k, m[k])
	}
	return b.String()
}

// shortErr names an error by its last part ("connection reset by peer",
// "timeout"), so that errors can be counted by kind.
func shortErr(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if errors.Is(err, io.EOF) {
		return "EOF"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	ds []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.ds = append(l.ds, d)
	l.mu.Unlock()
}

func (l *latencies) summary() summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	return summarize(l.ds)
}

// summary is a latency distribution in milliseconds.
type summary struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
}

func summarize(ds []time.Duration) summary {
	if len(ds) == 0 {
		return summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return round(float64(d)/1e6, 3) }
	q := func(f float64) float64 { return ms(s[min(len(s)-1, int(math.Ceil(f*float64(len(s))))-1)]) }
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return summary{N: len(s), Mean: ms(sum / time.Duration(len(s))), P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: ms(s[len(s)-1])}
}

func (s summary) String() string {
	if s.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.2f ms (n=%d)", s.P50, s.P99, s.Max, s.N)
}

// pace calls f every interval until ctx ends or until is reached; when f
// runs late it is not called again to catch up (a steady attacker, not a
// burst). It returns how many times f ran.
func pace(ctx context.Context, interval time.Duration, until time.Time, f func(i int) bool) int {
	t := time.NewTicker(interval)
	defer t.Stop()
	n := 0
	for time.Now().Before(until) {
		if !f(n) {
			return n + 1
		}
		n++
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
	}
	return n
}
