package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
	"github.com/relayhq/relay/internal/ws"
)

// TestStalledSubscriberAmongMany connects 200 subscribers and one client
// that never reads (its socket buffers kept small), then publishes over
// HTTP. Every reading subscriber gets every message, in order; the stalled
// one is closed with 4002 once its queue is full, having received an
// unbroken prefix of the messages; and the queue limit bounds what the
// server held for it. Counts, not times.
func TestStalledSubscriberAmongMany(t *testing.T) {
	const readers, msgs, queue = 200, 400, 64 << 10
	in := relaytest.Start(t, server.Config{WS: ws.Config{SendQueueBytes: queue, SocketSendBuffer: 8 << 10, WriteTimeout: 30 * time.Second, CloseTimeout: 30 * time.Second}})
	ctx := ctxT(t)

	// The stalled client: a raw socket with a 4 KiB receive buffer.
	reg, err := in.Client.Register(ctx, 999)
	if err != nil {
		t.Fatal(err)
	}
	stalled, br := rawSocket(t, in.Addr, reg.ID)
	conns := make([]*client.Conn, readers)
	for i := range conns {
		_, conns[i] = connect(t, in, uint64(i))
		if err := conns[i].Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pad := strings.Repeat("p", 1000)
	var wg sync.WaitGroup
	got := make([]atomic.Int64, readers)
	for i, c := range conns {
		wg.Go(func() {
			for n := int64(0); n < msgs; n++ {
				m, err := c.Receive(ctx)
				if err != nil {
					t.Errorf("reader %d: %v after %d", i, err, n)
					return
				}
				if want := fmt.Sprintf("%d:", n); !strings.HasPrefix(m, want) {
					t.Errorf("reader %d got %.10q, want message %s", i, m, want)
					return
				}
				got[i].Store(n + 1)
			}
		})
	}
	for j := range msgs {
		// Readers may lag by 16 messages (16 KiB, a quarter of their
		// queue), however slow the machine: only the stalled client must
		// overflow.
		for i := range got {
			for got[i].Load() < int64(j-16) && !t.Failed() {
				time.Sleep(100 * time.Microsecond)
			}
		}
		res, err := in.Client.Publish(ctx, client.Publish{Topic: "cats", Message: fmt.Sprintf("%d:%s", j, pad)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Delivered < readers {
			t.Fatalf("publish %d reached %d connections, want at least the %d readers", j, res.Delivered, readers)
		}
	}
	wg.Wait()
	for i := range got {
		if n := got[i].Load(); n != msgs {
			t.Fatalf("reader %d received %d of %d messages", i, n, msgs)
		}
	}
	if n := in.Server.WS.Stats().SlowConsumers.Load(); n != 1 {
		t.Fatalf("slow-consumer closes = %d, want 1", n)
	}
	// Now the stalled client reads what it was sent: an unbroken prefix,
	// at most a queue's worth beyond what its socket buffers held, then
	// the 4002 close.
	stalled.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, code := 0, 0
	for code == 0 {
		op, p := readServerFrame(t, br)
		switch op {
		case 0x1:
			if want := fmt.Sprintf("%d:", n); !strings.HasPrefix(string(p), want) {
				t.Fatalf("stalled client's message %d starts %.10q: a message was skipped", n, p)
			}
			n++
		case 0x8:
			code = int(binary.BigEndian.Uint16(p))
		}
	}
	if code != 4002 || n == 0 || n >= msgs {
		t.Fatalf("stalled client read %d messages then close %d; want some, not all, then 4002", n, code)
	}
	t.Logf("stalled client received %d of %d messages before its 4002 close", n, msgs)
}

// rawSocket upgrades /ws/id by hand on a socket with small buffers and
// subscribes to nothing beyond the default "cats".
func rawSocket(t *testing.T, addr, id string) (net.Conn, *bufio.Reader) {
	t.Helper()
	small := func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}
	nc, err := (&net.Dialer{Control: small}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fmt.Fprintf(nc, "GET /ws/%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", id, addr)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return nc, br
}

// readServerFrame reads one unmasked server frame.
func readServerFrame(t *testing.T, br *bufio.Reader) (byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		io.ReadFull(br, b[:])
		n = int(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		io.ReadFull(br, b[:])
		n = int(binary.BigEndian.Uint64(b[:]))
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatalf("reading a payload: %v", err)
	}
	return h[0] & 0x0f, p
}
