package ws

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/internal/relay"
)

// recorder is a Handler that records what it is given and can echo.
type recorder struct {
	echo   bool
	mu     sync.Mutex
	msgs   []string
	closes int
	closed chan struct{}
}

func (r *recorder) HandleText(c *Conn, msg []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, string(msg))
	r.mu.Unlock()
	if r.echo {
		c.SendText(msg)
	}
}

func (r *recorder) HandleClose(c *Conn) {
	r.mu.Lock()
	r.closes++
	r.mu.Unlock()
	close(r.closed)
}

// harness is a ws.Server behind a real HTTP server.
type harness struct {
	srv   *Server
	url   string // ws://...
	addr  string
	conns chan *Conn
	recs  chan *recorder
}

// bothModes runs a test with connections read by a poller and by a
// goroutine each (the fallback for TLS and platforms without epoll).
func bothModes(t *testing.T, f func(t *testing.T, goroutines bool)) {
	t.Run("poller", func(t *testing.T) { f(t, false) })
	t.Run("goroutine", func(t *testing.T) { f(t, true) })
}

func startHarness(t *testing.T, cfg Config, echo, goroutines bool) *harness {
	t.Helper()
	h := &harness{srv: New(cfg), conns: make(chan *Conn, 100), recs: make(chan *recorder, 100)}
	h.srv.noPoller = goroutines
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := h.srv.Upgrade(w, r)
		if err != nil {
			return
		}
		rec := &recorder{echo: echo, closed: make(chan struct{})}
		c.Start(rec)
		h.conns <- c
		h.recs <- rec
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		h.srv.Run(ctx, 5*time.Second)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		hs.Close()
	})
	h.addr = hs.Listener.Addr().String()
	h.url = "ws://" + h.addr + "/"
	return h
}

func (h *harness) dial(t *testing.T) (*websocket.Conn, *Conn, *recorder) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(h.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws, <-h.conns, <-h.recs
}

// rawDial completes a handshake by hand so the test can send any bytes.
func (h *harness) rawDial(t *testing.T, rcvbuf int) (net.Conn, *bufio.Reader, *Conn) {
	t.Helper()
	d := net.Dialer{}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var err error
			rc.Control(func(fd uintptr) {
				err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			return err
		}
	}
	nc, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", h.addr)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	<-h.recs
	return nc, br, <-h.conns
}

// readFrame reads one server frame.
func readFrame(br *bufio.Reader) (op byte, payload []byte, err error) {
	var hdr [2]byte
	if _, err = io.ReadFull(br, hdr[:]); err != nil {
		return 0, nil, err
	}
	if hdr[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("server frame is masked")
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, err = io.ReadFull(br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, err = io.ReadFull(br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	if err != nil {
		return 0, nil, err
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(br, payload)
	return hdr[0] & 0x0f, payload, err
}

// readUntilClose reads frames until a close frame and returns its code and
// the text messages before it.
func readUntilClose(t *testing.T, nc net.Conn, br *bufio.Reader) (uint16, []string) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var texts []string
	for {
		op, p, err := readFrame(br)
		if err != nil {
			t.Fatalf("reading until close: %v (after %d messages)", err, len(texts))
		}
		switch op {
		case opText:
			texts = append(texts, string(p))
		case opClose:
			if len(p) < 2 {
				return 0, texts
			}
			return binary.BigEndian.Uint16(p), texts
		}
	}
}

func TestEchoAndFragmentedMessage(t *testing.T) {
	bothModes(t, func(t *testing.T, goroutines bool) {
		h := startHarness(t, Config{}, true, goroutines)
		ws, _, rec := h.dial(t)
		if err := ws.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		// A message written through a small buffer arrives in fragments.
		d := websocket.Dialer{WriteBufferSize: 256}
		ws2, _, err := d.Dial(h.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws2.Close()
		<-h.conns
		<-h.recs
		big := strings.Repeat("abcdefghij", 300)
		if err := ws2.WriteMessage(websocket.TextMessage, []byte(big)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			ws   *websocket.Conn
			want string
		}{{ws, "hello"}, {ws2, big}} {
			c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			typ, got, err := c.ws.ReadMessage()
			if err != nil || typ != websocket.TextMessage || string(got) != c.want {
				t.Fatalf("echo = %d %q %v; want text of %d bytes", typ, got[:min(len(got), 20)], err, len(c.want))
			}
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.msgs) != 1 || rec.msgs[0] != "hello" {
			t.Fatalf("handler got %q", rec.msgs)
		}
	})
}

func TestPingGetsPong(t *testing.T) {
	bothModes(t, func(t *testing.T, goroutines bool) {
		h := startHarness(t, Config{}, false, goroutines)
		ws, _, _ := h.dial(t)
		got := make(chan string, 1)
		ws.SetPongHandler(func(s string) error { got <- s; return nil })
		if err := ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		go ws.ReadMessage()
		select {
		case s := <-got:
			if s != "are you there" {
				t.Fatalf("pong payload %q", s)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no pong")
		}
	})
}

func TestViolationsCloseWithDocumentedCodes(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	tests := []struct {
		name string
		send []byte
		code uint16
	}{
		{"binary", clientFrame(true, opBinary, []byte{1, 2, 3}, key), 1003},
		{"unmasked", []byte{0x81, 0x02, 'h', 'i'}, 1002},
		{"reserved bits", append([]byte{0xC1}, clientFrame(true, opText, []byte("x"), key)[1:]...), 1002},
		{"unknown opcode", clientFrame(true, 0x3, nil, key), 1002},
		{"too large", clientFrame(true, opText, make([]byte, 2000), key), 1009},
		{"too large in fragments", append(clientFrame(false, opText, make([]byte, 600), key), clientFrame(true, opContinuation, make([]byte, 600), key)...), 1009},
		{"invalid UTF-8", clientFrame(true, opText, []byte{0xff, 0xfe}, key), 1007},
		{"continuation first", clientFrame(true, opContinuation, []byte("x"), key), 1002},
		{"new message mid-fragments", append(clientFrame(false, opText, []byte("a"), key), clientFrame(true, opText, []byte("b"), key)...), 1002},
		{"bad close code", clientFrame(true, opClose, []byte{0x03, 0xed}, key), 1002}, // 1005 may not be sent
		{"close with one byte", clientFrame(true, opClose, []byte{0x03}, key), 1002},
		{"normal close is echoed", clientFrame(true, opClose, []byte{0x03, 0xe8, 'b', 'y', 'e'}, key), 1000},
		{"app close code is echoed", clientFrame(true, opClose, []byte{0x0f, 0xa0}, key), 4000},
	}
	bothModes(t, func(t *testing.T, goroutines bool) {
		h := startHarness(t, Config{MaxMessageBytes: 1024}, false, goroutines)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				nc, br, c := h.rawDial(t, 0)
				if _, err := nc.Write(tt.send); err != nil {
					t.Fatal(err)
				}
				code, _ := readUntilClose(t, nc, br)
				if code != tt.code {
					t.Fatalf("close code = %d, want %d", code, tt.code)
				}
				// After the close frame the server ends the TCP connection.
				nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("after close: %v, want EOF", err)
				}
				waitClosed(t, c)
			})
		}
	})
}

func waitClosed(t *testing.T, c *Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		st := c.state
		c.mu.Unlock()
		if st == stateClosed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection state %d, want closed", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServerCloseHandshake(t *testing.T) {
	bothModes(t, func(t *testing.T, goroutines bool) {
		h := startHarness(t, Config{}, false, goroutines)
		ws, c, rec := h.dial(t)
		c.SendText([]byte("before"))
		c.CloseWith(relay.ClosePolicy, "no thanks")
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil || string(m) != "before" {
			t.Fatalf("first read = %q, %v; want the queued message before the close", m, err)
		}
		_, _, err = ws.ReadMessage()
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != 1008 || ce.Text != "no thanks" {
			t.Fatalf("close = %v, want 1008 \"no thanks\"", err)
		}
		// gorilla answers the close frame; the server then closes the socket.
		<-rec.closed
		waitClosed(t, c)
		if c.SendText([]byte("after")) {
			t.Fatal("SendText accepted a message after close")
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.closes != 1 {
			t.Fatalf("HandleClose called %d times, want 1", rec.closes)
		}
	})
}

// TestSlowConsumerClosedWith4002 stalls a client until its queue overflows.
// The client then reads everything: an unbroken run of messages from the
// first, followed by the 4002 close. Nothing is skipped silently.
func TestSlowConsumerClosedWith4002(t *testing.T) {
	bothModes(t, func(t *testing.T, goroutines bool) {
		h := startHarness(t, Config{SendQueueBytes: 64 << 10, WriteTimeout: 20 * time.Second, CloseTimeout: 20 * time.Second}, false, goroutines)
		nc, br, c := h.rawDial(t, 4096)
		shrinkSendBuffer(t, c)
		payload := strings.Repeat("x", 1000)
		sent := 0
		for ; sent < 100000; sent++ {
			if !c.SendText(fmt.Appendf(nil, "%06d%s", sent, payload)) {
				break
			}
			if sent%64 == 0 {
				time.Sleep(time.Millisecond) // let the writer fill the socket
			}
		}
		if got := h.srv.stats.SlowConsumers.Load(); got != 1 {
			t.Fatalf("slow consumers = %d after %d sends, want 1", got, sent)
		}
		code, texts := readUntilClose(t, nc, br)
		if code != 4002 {
			t.Fatalf("close code = %d, want 4002", code)
		}
		for i, m := range texts {
			if want := fmt.Sprintf("%06d", i); !strings.HasPrefix(m, want) {
				t.Fatalf("message %d starts %q, want %q: a message was skipped", i, m[:6], want)
			}
		}
		if len(texts) == 0 || len(texts) >= sent+1 {
			t.Fatalf("received %d messages of %d sent before the overflow", len(texts), sent)
		}
		t.Logf("sent %d, delivered %d before the 4002 close", sent, len(texts))
	})
}

// TestStalledReaderDoesNotBlockOthers keeps one client from reading while
// others receive every message.
func TestStalledReaderDoesNotBlockOthers(t *testing.T) {
	bothModes(t, func(t *testing.T, goroutines bool) {
		h := startHarness(t, Config{SendQueueBytes: 256 << 10}, false, goroutines)
		_, _, stalled := h.rawDial(t, 4096)
		shrinkSendBuffer(t, stalled)
		const readers, msgs = 10, 2000
		var conns []*Conn
		var clients []*websocket.Conn
		for range readers {
			ws, c, _ := h.dial(t)
			conns = append(conns, c)
			clients = append(clients, ws)
		}
		var wg sync.WaitGroup
		counts := make([]atomic.Int64, readers)
		for i, ws := range clients {
			wg.Go(func() {
				ws.SetReadDeadline(time.Now().Add(20 * time.Second))
				for n := int64(0); n < msgs; n++ {
					_, m, err := ws.ReadMessage()
					if err != nil {
						t.Errorf("reader %d: %v after %d", i, err, n)
						return
					}
					if want := fmt.Sprint(n); !strings.HasPrefix(string(m), want+":") {
						t.Errorf("reader %d got %q, want message %s", i, m[:10], want)
						return
					}
					counts[i].Store(n + 1)
				}
			})
		}
		// The readers may lag by at most 200 messages (100 KB, well inside
		// their queues), however slow the machine; the stalled client lags
		// without bound and must be cut off.
		pad := strings.Repeat("y", 500)
		for j := range msgs {
			for i := range counts {
				for counts[i].Load() < int64(j-200) && !t.Failed() {
					time.Sleep(100 * time.Microsecond)
				}
			}
			f := EncodeText(fmt.Appendf(nil, "%d:%s", j, pad))
			stalled.enqueue(f)
			for _, c := range conns {
				if !c.enqueue(f) {
					t.Fatalf("enqueue to a reading client failed at %d", j)
				}
			}
		}
		wg.Wait()
		for i := range counts {
			if n := counts[i].Load(); n != msgs {
				t.Fatalf("reader %d received %d of %d", i, n, msgs)
			}
		}
		if got := h.srv.stats.SlowConsumers.Load(); got != 1 {
			t.Fatalf("slow consumers = %d, want 1 (the stalled client)", got)
		}
	})
}

// shrinkSendBuffer makes the server side of c push back early, so a test
// needs megabytes less to fill it.
func shrinkSendBuffer(t *testing.T, c *Conn) {
	t.Helper()
	var err error
	c.raw.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
	})
	if err != nil {
		t.Fatal(err)
	}
}
