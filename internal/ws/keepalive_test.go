package ws

import (
	"bufio"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// runOnPipe runs s, which reads with goroutines (a poller parks in I/O,
// which a synctest bubble cannot wait out), with one connection over a
// net.Pipe, and returns it and the client's end. stop waits for the
// connection to be closed (by either side), then stops s and waits for
// Run to return.
func runOnPipe(s *Server) (c *Conn, clientSide net.Conn, stop func()) {
	return runOnPipeAs(s, nil)
}

// runOnPipeAs is runOnPipe for a connection of profile p.
func runOnPipeAs(s *Server, p *Profile) (c *Conn, clientSide net.Conn, stop func()) {
	s.dropPollers()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Run(ctx, time.Second)
		close(done)
	}()
	serverSide, clientSide := net.Pipe()
	rec := &recorder{closed: make(chan struct{})}
	c = s.adopt(serverSide, relay.FormatSeed, "", p)
	c.Start(rec)
	return c, clientSide, func() {
		<-rec.closed
		cancel()
		<-done
	}
}

// TestKeepalive runs the shared ticker on a fake clock: the client is
// pinged every PingInterval, answering keeps it alive, and once it stops
// answering it is closed with 4003 one IdleTimeout after it was last heard.
func TestKeepalive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ping, idle = 10 * time.Second, 30 * time.Second
		s := New(Config{PingInterval: ping, IdleTimeout: idle, CloseTimeout: 2 * time.Second})
		_, clientSide, stop := runOnPipe(s)

		start := time.Now()
		answerUntil := start.Add(45 * time.Second)
		var pings []time.Duration
		var lastPong time.Time
		var code uint16
		var closedAt time.Duration
		br := bufio.NewReader(clientSide)
		for {
			op, p, err := readFrame(br)
			if err != nil {
				break // the server closed the pipe after the close frame
			}
			switch op {
			case opPing:
				pings = append(pings, time.Since(start))
				if time.Now().Before(answerUntil) {
					clientSide.Write(clientFrame(true, opPong, p, [4]byte{1, 2, 3, 4}))
					lastPong = time.Now()
				}
			case opClose:
				code = binary.BigEndian.Uint16(p)
				closedAt = time.Since(start)
			}
		}
		stop()

		if code != 4003 {
			t.Fatalf("close code = %d, want 4003 (idle)", code)
		}
		for i := 1; i < len(pings); i++ {
			if d := pings[i] - pings[i-1]; d != ping {
				t.Fatalf("pings at %v: gap %v, want %v", pings, d, ping)
			}
		}
		if pings[0] > ping {
			t.Fatalf("first ping at %v, want within %v", pings[0], ping)
		}
		silent := lastPong.Sub(start)
		if closedAt <= silent+idle || closedAt > silent+idle+s.tick {
			t.Fatalf("closed at %v; last heard at %v, want the close within one tick after %v", closedAt, silent, silent+idle)
		}
		if got := s.stats.IdleCloses.Load(); got != 1 {
			t.Fatalf("idle closes = %d, want 1", got)
		}
	})
}

// TestProfileKeepalive: a connection of a Profile is pinged with the
// profile's own frame (a text message here, as Pusher's pusher:ping), an
// answer in text keeps it alive, and when it goes quiet it is closed with
// the profile's code for an idle connection, not Relay's 4003.
func TestProfileKeepalive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ping, idle = 10 * time.Second, 30 * time.Second
		p := &Profile{
			Format:     relay.FormatSeed,
			Ping:       EncodeText([]byte(`{"event":"pusher:ping","data":"{}"}`)),
			CloseCodes: map[relay.CloseReason]CloseCode{relay.CloseIdle: {4201, "Pong reply not received"}},
		}
		s := New(Config{PingInterval: ping, IdleTimeout: idle, CloseTimeout: 2 * time.Second})
		_, clientSide, stop := runOnPipeAs(s, p)
		start := time.Now()
		pings, controlPings := 0, 0
		var code uint16
		var reason string
		br := bufio.NewReader(clientSide)
		for {
			op, payload, err := readFrame(br)
			if err != nil {
				break
			}
			switch op {
			case opText:
				if string(payload) != `{"event":"pusher:ping","data":"{}"}` {
					t.Fatalf("text %q, want the profile's ping", payload)
				}
				pings++
				if time.Since(start) < 25*time.Second {
					clientSide.Write(clientFrame(true, opText, []byte(`{"event":"pusher:pong","data":"{}"}`), [4]byte{1, 2, 3, 4}))
				}
			case opPing:
				controlPings++
			case opClose:
				code, reason = binary.BigEndian.Uint16(payload), string(payload[2:])
			}
		}
		stop()
		if code != 4201 || reason != "Pong reply not received" {
			t.Fatalf("close %d %q, want 4201 Pong reply not received", code, reason)
		}
		if pings < 3 || controlPings != 0 {
			t.Fatalf("%d profile pings and %d WebSocket pings, want >= 3 and 0", pings, controlPings)
		}
	})
}
