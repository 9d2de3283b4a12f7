package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// conn is one subscriber.
type conn struct {
	ws       *websocket.Conn
	topic    int
	ready    atomic.Bool
	received atomic.Int64
}

// errRetry marks a refusal worth retrying later (429, 503).
type errRetry struct {
	stage string
	code  int
	after time.Duration
}

func (e *errRetry) Error() string { return fmt.Sprintf("%s: status %d", e.stage, e.code) }

// stageError names the step of a connection setup that failed.
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + shortError(e.err) }
func (e *stageError) Unwrap() error { return e.err }

// shortError drops what differs between otherwise equal errors (local
// ports, request URLs) so that errors can be counted by kind.
func shortError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Op + ": " + oe.Err.Error()
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("closed by the server with %d %s", ce.Code, ce.Text)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

// dialer dials WebSockets, from the source addresses when the target is
// an IPv4 loopback address.
type dialer struct {
	src  []netip.Addr
	next atomic.Uint64
	net  net.Dialer
}

func (d *dialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if len(d.src) > 0 {
		if host, port, err := net.SplitHostPort(addr); err == nil && host == "localhost" {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is4() && ap.Addr().IsLoopback() {
			nd := d.net
			src := d.src[d.next.Add(1)%uint64(len(d.src))]
			nd.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
			return nd.DialContext(ctx, network, addr)
		}
	}
	return d.net.DialContext(ctx, network, addr)
}

func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        conns * 2,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     60 * time.Second,
			DisableCompression:  true,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSHandshakeTimeout: 10 * time.Second,
		},
	}
}

// post sends a JSON body and returns the status and up to 4 KiB of the
// answer.
func (r *run) post(ctx context.Context, c *http.Client, u string, body []byte) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+r.cfg.APIKey)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, b, resp.Header, err
}

func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return min(time.Duration(s)*time.Second, 5*time.Second)
	}
	return 0
}

// setup registers subscriber i on its server, connects its socket and
// subscribes it to topic.
func (r *run) setup(ctx context.Context, i int, topic string) (*websocket.Conn, error) {
	base := r.cfg.Servers[i%len(r.cfg.Servers)]
	code, body, hdr, err := r.post(ctx, r.regHTTP, base+"/register", []byte(`{"user_id":`+strconv.Itoa(i+1)+`}`))
	if err != nil {
		return nil, &stageError{"register", err}
	}
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		return nil, &errRetry{"register", code, retryAfter(hdr)}
	}
	if code != http.StatusOK {
		return nil, &stageError{"register", fmt.Errorf("status %d %s", code, bytes.TrimSpace(body))}
	}
	var reg struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(body, &reg); err != nil || reg.URL == "" {
		return nil, &stageError{"register", fmt.Errorf("no url in the answer %q", body)}
	}
	ws, resp, err := r.ws.DialContext(ctx, reg.URL, nil)
	if err != nil {
		if resp != nil {
			if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
				return nil, &errRetry{"upgrade", resp.StatusCode, retryAfter(resp.Header)}
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil, &stageError{"upgrade", err}
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"topics":[`+strconv.Quote(topic)+`]}`)); err != nil {
		ws.Close()
		return nil, &stageError{"subscribe", err}
	}
	return ws, nil
}

// connect opens subscribers first..first+n-1 with DialConcurrency setups
// in flight, retrying refusals for lack of capacity (429, 503) a few
// times with backoff.
func (r *run) connect(ctx context.Context, n int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(r.cfg.DialConcurrency, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				topic := i % r.cfg.Topics
				t0 := time.Now()
				var ws *websocket.Conn
				var err error
				for attempt := 0; ; attempt++ {
					actx, cancel := context.WithTimeout(ctx, 10*time.Second)
					ws, err = r.setup(actx, i, r.topicNames[topic])
					cancel()
					var re *errRetry
					if !errors.As(err, &re) || attempt == 5 || ctx.Err() != nil {
						break
					}
					r.retries.Add(1)
					wait := re.after
					if wait == 0 {
						wait = time.Duration(100<<attempt) * time.Millisecond
					}
					select {
					case <-time.After(wait):
					case <-ctx.Done():
					}
				}
				if err != nil {
					r.connFailed.Add(1)
					r.errs.add(err)
					continue
				}
				r.setupLat.Record(time.Since(t0).Microseconds())
				c := &conn{ws: ws, topic: topic}
				r.mu.Lock()
				r.conns = append(r.conns, c)
				r.mu.Unlock()
				r.topicSubs[topic].Add(1)
				r.connected.Add(1)
				r.readers.Go(func() { r.read(c) })
			}
		})
	}
	wg.Wait()
}

// read receives a subscriber's frames until its socket closes. It reads
// only the start of each frame (the sequence number and the time stamp);
// gorilla skips the rest.
func (r *run) read(c *conn) {
	var buf [64]byte
	for {
		typ, rd, err := c.ws.NextReader()
		if err != nil {
			if !r.closing.Load() {
				r.dropped.Add(1)
				r.errs.add(&stageError{"receive", err})
			}
			return
		}
		if typ != websocket.TextMessage {
			r.unexpected.Add(1)
			continue
		}
		n := 0
		for n < len(buf) {
			m, err := rd.Read(buf[n:])
			n += m
			if err != nil {
				break
			}
		}
		r.receive(c, buf[:n])
	}
}

// receive accounts one frame.
func (r *run) receive(c *conn, p []byte) {
	now := time.Now().UnixNano()
	seq, rest, ok := parseInt(p)
	if ok {
		var ts int64
		ts, _, ok = parseInt(rest)
		if ok {
			r.deliver(c, seq, ts, now)
			return
		}
	}
	r.unexpected.Add(1)
}

func (r *run) deliver(c *conn, seq, ts, now int64) {
	if !c.ready.Load() && c.ready.CompareAndSwap(false, true) {
		r.topicReady[c.topic].Add(1)
	}
	if seq < 0 { // a readiness probe
		return
	}
	m := r.msgs.get(seq)
	if m == nil {
		r.unexpected.Add(1)
		return
	}
	us := (now - ts) / 1000
	r.lat.Record(us)
	m.recv.Add(1)
	for {
		old := m.maxLat.Load()
		if us <= old || m.maxLat.CompareAndSwap(old, us) {
			break
		}
	}
	c.received.Add(1)
	if r.lastRecv.Load() < now {
		r.lastRecv.Store(now) // a racing older store only loses a few µs
	}
}

// parseInt reads "[-]digits:" and returns the number and what follows
// the colon.
func parseInt(p []byte) (int64, []byte, bool) {
	neg := len(p) > 0 && p[0] == '-'
	i := 0
	if neg {
		i = 1
	}
	var v int64
	start := i
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9' && i-start < 19; i++ {
		v = v*10 + int64(p[i]-'0')
	}
	if i == start || i >= len(p) || p[i] != ':' {
		return 0, nil, false
	}
	if neg {
		v = -v
	}
	return v, p[i+1:], true
}

// errCounter counts errors by kind; errors are rare, a mutex is fine.
type errCounter struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *errCounter) add(err error) {
	s := shortError(err)
	var se *stageError
	if errors.As(err, &se) {
		s = se.Error()
	}
	e.addString(s)
}

func (e *errCounter) addString(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]int64{}
	}
	if _, ok := e.m[s]; !ok && len(e.m) >= 30 {
		s = "other errors"
	}
	e.m[s]++
}

func (e *errCounter) snapshot() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.m) == 0 {
		return nil
	}
	m := make(map[string]int64, len(e.m))
	for k, v := range e.m {
		m[k] = v
	}
	return m
}

var net10s = net.Dialer{Timeout: 10 * time.Second}
