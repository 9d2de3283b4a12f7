package connlimit

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/logthrottle"
)

// flakyListener fails its first fails accepts with EMFILE, calling
// onFail(n) before the n-th failure, then returns good once, then blocks
// until closed.
type flakyListener struct {
	fails  int
	onFail func(n int)
	good   net.Conn

	n         int
	closed    chan struct{}
	closeOnce sync.Once
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.n < f.fails {
		f.n++
		if f.onFail != nil {
			f.onFail(f.n)
		}
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	if c := f.good; c != nil {
		f.good = nil
		return c, nil
	}
	<-f.closed
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
}

func (f *flakyListener) Close() error {
	f.closeOnce.Do(func() { close(f.closed) })
	return nil
}

func (f *flakyListener) Addr() net.Addr { return tcpAddr("127.0.0.1") }

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSpace(s.b.String()), "\n")
}

// TestAcceptErrorsRateLimited: 300 EMFILEs, ten seconds apart halfway,
// make two log lines that count them, and Accept still returns the next
// good connection instead of an error.
func TestAcceptErrorsRateLimited(t *testing.T) {
	var out syncBuffer
	clk := &clock{}
	clk.t.Store(time.Now().UnixNano())
	l := New(Config{Logs: logthrottle.New(slog.New(slog.NewTextHandler(&out, nil)), logthrottle.Config{Now: clk.now})}, nil, nil)
	l.backoffMin, l.backoffMax = time.Microsecond, time.Microsecond
	good := &fakeConn{addr: tcpAddr("10.0.0.1")}
	inner := &flakyListener{fails: 300, good: good, closed: make(chan struct{})}
	inner.onFail = func(n int) {
		if n == 151 {
			clk.advance(logEvery)
		}
	}
	ln := l.Listener(inner)
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if c.RemoteAddr() != good.addr {
		t.Fatal("Accept returned another connection")
	}
	var lines []string
	for _, line := range out.lines() {
		if strings.Contains(line, "accept failing") {
			lines = append(lines, line)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines logged, want 2:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i, want := range []string{"errors=1", "errors=150"} {
		if !strings.Contains(lines[i], "too many open files") || !strings.Contains(lines[i], want) {
			t.Errorf("line %d = %q, want the error and %s", i, lines[i], want)
		}
	}
	if n := l.Stats().AcceptErrors.Load(); n != 300 {
		t.Errorf("AcceptErrors = %d", n)
	}
	checkCounts(t, l, 1, 1)

	// Closing the listener ends a blocked Accept with a permanent error.
	done := make(chan error, 1)
	go func() { _, err := ln.Accept(); done <- err }()
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}

// TestCloseCutsBackoff: Close ends an Accept that is waiting out a backoff.
func TestCloseCutsBackoff(t *testing.T) {
	l := New(Config{}, nil, nil)
	l.backoffMin, l.backoffMax = time.Hour, time.Hour
	inner := &flakyListener{fails: 1, closed: make(chan struct{})}
	ln := l.Listener(inner)
	done := make(chan error, 1)
	go func() { _, err := ln.Accept(); done <- err }()
	for deadline := time.Now().Add(10 * time.Second); l.Stats().AcceptErrors.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no accept error")
		}
	}
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept still backing off after Close")
	}
}

// serve runs an http.Server with l on 127.0.0.1 and returns its address.
func serve(t *testing.T, l *Limiter, h http.Handler) string {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Minute}
	l.Install(srv)
	go srv.Serve(l.Listener(inner))
	t.Cleanup(func() { srv.Close() })
	return inner.Addr().String()
}

// eventually polls cond every millisecond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// states counts the pending connections by state.
func (l *Limiter) states() map[state]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[state]int{}
	for c := l.head; c != nil; c = c.next {
		m[c.state]++
	}
	return m
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends a GET on c and reads the response; keep leaves the
// connection open.
func get(c net.Conn, path string, keep bool) (*http.Response, error) {
	hdr := "Connection: keep-alive"
	if !keep {
		hdr = "Connection: close"
	}
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n"+hdr+"\r\n\r\n"); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// closedByServer reports whether the server closed c (a read sees EOF or
// a reset rather than timing out).
func closedByServer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestHTTPServerStates drives a real http.Server: its idle keep-alive
// connection is shed first, then a connection still sending its request
// headers; one whose handler runs and a hijacked one never are, and a
// newcomer with nothing to shed is closed unanswered.
func TestHTTPServerStates(t *testing.T) {
	l := New(Config{MaxPending: 3, MaxPerAddress: -1}, nil, nil)
	release := make(chan struct{})
	var hijacked []net.Conn
	var hmu sync.Mutex
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) { <-release })
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		c, _, _ := w.(http.Hijacker).Hijack()
		hmu.Lock()
		hijacked = append(hijacked, c)
		hmu.Unlock()
	})
	addr := serve(t, l, mux)
	defer close(release)

	ws := dial(t, addr)
	if _, err := io.WriteString(ws, "GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "hijack", func() bool { return l.Stats().Open.Load() == 1 && l.Stats().Pending.Load() == 0 })
	keep := dial(t, addr)
	if resp, err := get(keep, "/ok", true); err != nil || resp.StatusCode != 200 {
		t.Fatalf("keep-alive GET: %v", err)
	}
	busy := dial(t, addr)
	io.WriteString(busy, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
	slow := dial(t, addr)
	io.WriteString(slow, "GET /ok HTTP/1.1\r\nHost: x\r\n")
	eventually(t, "idle, busy and reading", func() bool {
		s := l.states()
		return s[idle] == 1 && s[active] == 1 && s[reading] == 1
	})

	if resp, err := get(dial(t, addr), "/ok", false); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first newcomer: %v", err)
	}
	if !closedByServer(keep) {
		t.Fatal("idle connection not shed")
	}
	// The newcomer was served and has gone: fill its slot with a second
	// busy connection, and the next newcomer sheds the slow one.
	eventually(t, "first newcomer gone", func() bool { return l.Stats().Pending.Load() == 2 })
	b2 := dial(t, addr)
	io.WriteString(b2, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
	eventually(t, "two busy", func() bool { return l.states()[active] == 2 })
	if resp, err := get(dial(t, addr), "/ok", false); err != nil || resp.StatusCode != 200 {
		t.Fatalf("second newcomer: %v", err)
	}
	if !closedByServer(slow) {
		t.Fatal("slow connection not shed")
	}
	// With all three slots busy, a newcomer has no victim.
	eventually(t, "second newcomer gone", func() bool { return l.Stats().Pending.Load() == 2 })
	b3 := dial(t, addr)
	io.WriteString(b3, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
	eventually(t, "three busy", func() bool { return l.states()[active] == 3 })
	if _, err := get(dial(t, addr), "/ok", false); err == nil {
		t.Fatal("newcomer served with every slot busy")
	}
	s := l.Stats()
	if s.ShedIdle.Load() != 1 || s.ShedReading.Load() != 1 || s.Refused.Load() != 1 {
		t.Fatalf("shed idle %d reading %d refused %d, want 1 1 1", s.ShedIdle.Load(), s.ShedReading.Load(), s.Refused.Load())
	}
	if s.PeakPending.Load() > 3 {
		t.Fatalf("pending peaked at %d, cap 3", s.PeakPending.Load())
	}
	if hmu.Lock(); len(hijacked) != 1 {
		t.Fatal("hijacked connection lost")
	}
	hijacked[0].Close()
	hmu.Unlock()
	eventually(t, "hijacked connection released", func() bool { return l.Stats().Open.Load() == 3 })
}

// TestHTTP2: an HTTP/2 connection with a request in flight is never shed,
// and one without is shed as idle (its server reports StateActive and
// StateIdle as streams come and go).
func TestHTTP2(t *testing.T) {
	l := New(Config{MaxPending: 1, MaxPerAddress: -1}, nil, nil)
	started, release := make(chan struct{}, 1), make(chan struct{})
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			started <- struct{}{}
			<-release
		}
	}))
	ts.EnableHTTP2 = true
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.Listener = l.Listener(ts.Listener)
	l.Install(ts.Config)
	ts.StartTLS()
	defer ts.Close()
	client := ts.Client()

	errc := make(chan error, 1)
	go func() {
		resp, err := client.Get(ts.URL + "/block")
		if err == nil {
			if resp.ProtoMajor != 2 {
				err = errors.New("not HTTP/2: " + resp.Proto)
			}
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	// The HTTP/2 connection has a handler running: a newcomer is refused.
	other := dial(t, strings.TrimPrefix(ts.URL, "https://"))
	if !closedByServer(other) {
		t.Fatal("newcomer kept while the only slot is busy")
	}
	if l.Stats().Refused.Load() != 1 || l.Stats().ShedIdle.Load() != 0 {
		t.Fatal("busy HTTP/2 connection was not protected")
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	eventually(t, "HTTP/2 connection idle", func() bool { return l.states()[idle] == 1 })
	dial(t, strings.TrimPrefix(ts.URL, "https://"))
	eventually(t, "idle HTTP/2 connection shed", func() bool { return l.Stats().ShedIdle.Load() == 1 })
}

// TestConnInterfaces: an accepted connection offers what the WebSocket
// layer and net/http look for on a *net.TCPConn, working on the real
// socket beneath.
func TestConnInterfaces(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(Config{}, nil, nil)
	ln := l.Listener(inner)
	defer ln.Close()
	client := dial(t, inner.Addr().String())
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sc, ok := nc.(syscall.Conn)
	if !ok {
		t.Fatal("no SyscallConn")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	raw.Control(func(f uintptr) { fd = int(f) })
	if fd < 0 {
		t.Fatal("no descriptor")
	}
	if _, ok := nc.(io.ReaderFrom); !ok {
		t.Fatal("no ReadFrom")
	}
	if n, err := nc.(io.ReaderFrom).ReadFrom(strings.NewReader("hi")); n != 2 || err != nil {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("no CloseWrite")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(client); string(b) != "hi" || err != nil {
		t.Fatalf("client read %q, %v; want hi then EOF", b, err)
	}
	checkCounts(t, l, 1, 1)
}

// TestShedBeforeActiveAbortsRequest: a connection whose request has been
// read but whose StateActive hook has not run yet still looks like one
// reading, and may be shed. Its handler must then not run: a publish
// applied on a connection the client sees closed could not be retried
// safely.
func TestShedBeforeActiveAbortsRequest(t *testing.T) {
	l := New(Config{MaxPending: 1, MaxPerAddress: -1}, nil, nil)
	var ran atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran.Add(1) })}
	l.Install(srv)
	installed := srv.ConnState
	arrived, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv.ConnState = func(nc net.Conn, st http.ConnState) {
		if st == http.StateActive {
			once.Do(func() { close(arrived); <-gate }) // hold the first request between its headers and the hook
		}
		installed(nc, st)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l.Listener(inner))
	t.Cleanup(func() { srv.Close() })
	addr := inner.Addr().String()

	a := dial(t, addr)
	io.WriteString(a, "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	<-arrived
	b := dial(t, addr) // MaxPending 1: a, still looking like a reader, is shed
	eventually(t, "a shed", func() bool { return l.Stats().ShedReading.Load() == 1 })
	close(gate)
	if !closedByServer(a) {
		t.Fatal("the shed connection was not closed")
	}
	eventually(t, "a's request aborted", func() bool { return l.Stats().Aborted.Load() == 1 })
	if resp, err := get(b, "/health", false); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the newcomer's request: %v, %v", resp, err)
	}
	if n := ran.Load(); n != 1 {
		t.Fatalf("the handler ran %d times, want once (the newcomer's only)", n)
	}
}
