package ws

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// continuationHeader is the header of a masked continuation frame that
// declares n payload bytes, without the payload.
func continuationHeader(fin bool, n int, key [4]byte) []byte {
	h := clientFrame(fin, opContinuation, make([]byte, n), key)
	return h[:len(h)-n]
}

// TestRefusedAtHeader sends frames that can only be refused and nothing of
// their payload: the server must refuse each from its header alone, so it
// never waits for (and buffers) the payload.
func TestRefusedAtHeader(t *testing.T) {
	const max = 4096
	key := [4]byte{3, 1, 4, 1}
	start := clientFrame(false, opText, make([]byte, max-1000), key)
	textHeader := clientFrame(true, opText, make([]byte, 2000), key)[:8]
	binHeader := clientFrame(true, opBinary, make([]byte, 2000), key)[:8]
	tests := []struct {
		name string
		send []byte
		code uint16
	}{
		{"continuation past the limit", append(bytes.Clone(start), continuationHeader(true, 2000, key)...), 1009},
		{"non-final continuation past the limit", append(bytes.Clone(start), continuationHeader(false, 2000, key)...), 1009},
		{"continuation past the limit in two steps", append(append(bytes.Clone(start), clientFrame(false, opContinuation, make([]byte, 900), key)...), continuationHeader(true, 101, key)...), 1009},
		{"text frame inside a message", append(bytes.Clone(start), textHeader...), 1002},
		{"binary frame", binHeader, 1003},
		{"continuation without a message", continuationHeader(true, 2000, key), 1002},
	}
	bothModes(t, func(t *testing.T, goroutines bool) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h := startHarness(t, Config{MaxMessageBytes: max}, false, goroutines)
				nc, br, c := h.rawDial(t, 0)
				if _, err := nc.Write(tt.send); err != nil {
					t.Fatal(err)
				}
				// No payload follows: only a refusal at the header closes.
				if code, _ := readUntilClose(t, nc, br); code != tt.code {
					t.Fatalf("close code after %d bytes = %d, want %d", len(tt.send), code, tt.code)
				}
				nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("after close: %v, want EOF", err)
				}
				waitClosed(t, c)
				if got := h.srv.stats.Violations.Load(); got != 1 {
					t.Fatalf("violations = %d, want 1", got)
				}
			})
		}
	})
}

// TestMessageTimeout runs the shared ticker on a fake clock while a client
// sends at a steady pace, so the idle timeout never fires: a message that
// is still incomplete MessageTimeout after its first byte closes the
// connection with 1008, whether it trickles in as one frame or as
// fragments; messages that each complete in time never do, even when
// every write ends in the middle of one.
func TestMessageTimeout(t *testing.T) {
	const timeout, gap = 10 * time.Second, 2 * time.Second
	key := [4]byte{5, 6, 7, 8}
	repeat := func(first []byte, next []byte, n int) []byte {
		return append(bytes.Clone(first), bytes.Repeat(next, n)...)
	}
	msg := clientFrame(true, opText, []byte("0123456789"), key) // 16 bytes
	tests := []struct {
		name   string
		stream []byte // everything the client sends, one write per gap
		step   int    // bytes per write
		first  int    // bytes of the first write; 0: step
		want   uint16 // close code; 0: stays open
	}{
		{"one frame dripped", clientFrame(true, opText, make([]byte, 100), key), 1, 0, 1008},
		{"header dripped", clientFrame(true, opText, make([]byte, 60000), key)[:8], 1, 0, 1008},
		{"final fragment never comes", repeat(clientFrame(false, opText, []byte("a"), key), clientFrame(false, opContinuation, []byte("b"), key), 50), 7, 0, 1008},
		{"empty fragments", repeat(clientFrame(false, opText, nil, key), clientFrame(false, opContinuation, nil, key), 50), 6, 0, 1008},
		{"fragments with pings between", repeat(clientFrame(false, opText, []byte("a"), key), clientFrame(true, opPing, []byte("p"), key), 50), 7, 0, 1008},
		{"whole messages", bytes.Repeat(msg, 20), 16, 0, 0},
		{"every write ends inside a message", bytes.Repeat(msg, 20), 16, 8, 0},
		{"pings", bytes.Repeat(clientFrame(true, opPing, nil, key), 20), 6, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := New(Config{MessageTimeout: timeout, CloseTimeout: time.Second})
				c, clientSide, stop := runOnPipe(s)

				type closing struct {
					code uint16
					text string
					at   time.Time
				}
				closed := make(chan closing, 1)
				go func() {
					br := bufio.NewReader(clientSide)
					for {
						op, p, err := readFrame(br)
						if err != nil {
							return
						}
						if op == opClose && len(p) >= 2 {
							closed <- closing{binary.BigEndian.Uint16(p), string(p[2:]), time.Now()}
							return
						}
					}
				}()

				start := time.Now()
				var got *closing
				for off, i := 0, 0; off < len(tt.stream) && got == nil; i++ {
					n := tt.step
					if i == 0 && tt.first > 0 {
						n = tt.first
					}
					n = min(n, len(tt.stream)-off)
					clientSide.Write(tt.stream[off : off+n])
					off += n
					select {
					case cl := <-closed:
						got = &cl
					case <-time.After(gap):
					}
				}
				if got == nil { // the stream is complete: give a late close time to come
					select {
					case cl := <-closed:
						got = &cl
					case <-time.After(timeout + 2*s.tick):
					}
				}
				clientSide.Close()
				stop()

				switch {
				case tt.want == 0 && got != nil:
					t.Fatalf("closed with %d %q after %v; want no close", got.code, got.text, got.at.Sub(start))
				case tt.want == 0:
					if n := s.stats.SlowMessages.Load(); n != 0 {
						t.Fatalf("slow messages = %d, want 0", n)
					}
				case got == nil:
					t.Fatalf("not closed after the whole stream (%v); want close %d after %v", time.Since(start), tt.want, timeout)
				default:
					if got.code != tt.want || got.text != "message not completed within 10s" {
						t.Fatalf("close = %d %q, want %d %q", got.code, got.text, tt.want, "message not completed within 10s")
					}
					if d := got.at.Sub(start); d <= timeout || d > timeout+s.tick {
						t.Fatalf("closed %v after the message began, want within one tick (%v) after %v", d, s.tick, timeout)
					}
					if n := s.stats.SlowMessages.Load(); n != 1 {
						t.Fatalf("slow messages = %d, want 1", n)
					}
				}
				if n := s.stats.IdleCloses.Load() + s.stats.Violations.Load(); n != 0 {
					t.Fatalf("idle closes + violations = %d, want 0", n)
				}
				// HandleClose ran after the reader let go of its buffers.
				if c.rd.partial != nil || c.rd.msg != nil || c.msgStart.Load() != 0 {
					t.Fatalf("after close: partial %d bytes, msg %d bytes, msgStart %d; want nil, nil, 0", len(c.rd.partial), len(c.rd.msg), c.msgStart.Load())
				}
			})
		})
	}
}

// TestMessageTimeoutRealClock checks the same on real sockets, read by a
// poller and by a goroutine, with a short timeout: a frame dripped byte by
// byte is closed with 1008.
func TestMessageTimeoutRealClock(t *testing.T) {
	bothModes(t, func(t *testing.T, goroutines bool) {
		const timeout = 300 * time.Millisecond
		h := startHarness(t, Config{MessageTimeout: timeout, PingInterval: time.Second}, false, goroutines) // ticks every 100ms
		nc, br, c := h.rawDial(t, 0)
		frame := clientFrame(true, opText, make([]byte, 1000), [4]byte{1, 1, 2, 3})
		stop := make(chan struct{})
		defer close(stop)
		began := time.Now()
		go func() {
			for _, b := range frame {
				if _, err := nc.Write([]byte{b}); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		if code, _ := readUntilClose(t, nc, br); code != 1008 {
			t.Fatalf("close code = %d, want 1008", code)
		}
		if d := time.Since(began); d < timeout {
			t.Fatalf("closed %v after the first byte, before the %v timeout", d, timeout)
		}
		if n := h.srv.stats.SlowMessages.Load(); n != 1 {
			t.Fatalf("slow messages = %d, want 1", n)
		}
		nc.Close()
		waitClosed(t, c)
	})
}

// feed hands stream to c's parser the way a reader does: in reads of at
// most readBufSize bytes, each landing in the same buffer.
func feed(c *Conn, stream []byte, buf []byte, now int64) bool {
	for len(stream) > 0 {
		n := copy(buf, stream)
		stream = stream[n:]
		if !c.consume(buf[:n], now) {
			return false
		}
	}
	return true
}

// TestMessageMemoryBound holds an almost complete message of almost
// MaxMessageBytes on each of many connections, its last frame still
// arriving: what they hold together must stay close to the bytes pending,
// not to a multiple of them (a finished frame's buffer must not be kept
// for the next one).
func TestMessageMemoryBound(t *testing.T) {
	const conns, max = 200, DefaultMaxMessageBytes
	key := [4]byte{7, 7, 7, 7}
	stream := clientFrame(false, opText, make([]byte, max-1000), key)
	stream = append(stream, clientFrame(true, opContinuation, make([]byte, 1000), key)[:8+999]...) // all but the last byte
	s := New(Config{Writers: 1})
	cs := make([]*Conn, conns)
	for i := range cs {
		cs[i] = &Conn{srv: s, w: s.writers[0], encode: EncodeSeed, h: &recorder{closed: make(chan struct{})}}
	}
	buf := make([]byte, readBufSize)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, c := range cs {
		if !feed(c, stream, buf, 1) {
			t.Fatal("consume refused a message within the limit")
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	for i, c := range cs {
		if held := cap(c.rd.msg) + cap(c.rd.partial); held > max+max/4 {
			t.Fatalf("connection %d holds %d bytes (msg %d, partial %d) for %d pending; want at most %d", i, held, cap(c.rd.msg), cap(c.rd.partial), len(stream), max+max/4)
		}
	}
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if bound := int64(conns * max * 3 / 2); grew > bound {
		t.Fatalf("heap grew by %d bytes (%d per connection) holding %d pending bytes each, want at most %d", grew, grew/conns, len(stream), bound)
	}
	t.Logf("heap grew by %d bytes, %d per connection, for %d pending bytes each", grew, grew/conns, len(stream))
	runtime.KeepAlive(cs)
}

// TestPartialFrameMemoryFollowsReceived: a frame that declares the largest
// payload allowed but sends little holds memory for what it sent.
func TestPartialFrameMemoryFollowsReceived(t *testing.T) {
	const max = DefaultMaxMessageBytes
	key := [4]byte{2, 7, 1, 8}
	frame := clientFrame(true, opText, make([]byte, max), key)
	tests := []struct {
		name  string
		sent  int // bytes of the frame sent
		chunk int // bytes per read
	}{
		{"header only", 14, 14},
		{"100 bytes in one read", 114, 114},
		{"1000 bytes dripped", 1014, 1},
		{"half in full reads", 14 + max/2, readBufSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Config{Writers: 1})
			c := &Conn{srv: s, w: s.writers[0], encode: EncodeSeed, h: &recorder{closed: make(chan struct{})}}
			data := bytes.Clone(frame[:tt.sent])
			for len(data) > 0 {
				n := min(tt.chunk, len(data))
				if !c.consume(data[:n], 1) {
					t.Fatal("consume refused a frame within the limit")
				}
				data = data[n:]
			}
			if got, want := cap(c.rd.partial), 2*tt.sent+64; len(c.rd.partial) != tt.sent || got > want {
				t.Fatalf("consume(%d of %d bytes): partial len %d cap %d, want len %d cap at most %d", tt.sent, len(frame), len(c.rd.partial), got, tt.sent, want)
			}
			if c.msgStart.Load() != 1 {
				t.Fatalf("msgStart = %d, want 1 (the time of the first read)", c.msgStart.Load())
			}
		})
	}
}

// TestFrameRate: every frame spends a token, whatever its kind, so a flood
// of pings, pongs or empty fragments is closed with 4004 like a flood of
// messages, while a client within the limit is not.
func TestFrameRate(t *testing.T) {
	key := [4]byte{4, 4, 2, 2}
	times := func(n int, f []byte) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = f
		}
		return out
	}
	ping := clientFrame(true, opPing, nil, key)
	text := clientFrame(true, opText, []byte(`{"topics":["a"]}`), key)
	start := clientFrame(false, opText, []byte("a"), key)
	empty := clientFrame(false, opContinuation, nil, key)
	var mixed [][]byte // 15 pings and 5 messages
	for range 5 {
		mixed = append(mixed, ping, ping, ping, text)
	}
	tests := []struct {
		name   string
		frames [][]byte
		gap    time.Duration // between frames; 0: all in one write
		limit  bool          // closed with 4004
		msgs   int           // messages handled
	}{
		{"ping flood", times(100, ping), 0, true, 0},
		{"pong flood", times(100, clientFrame(true, opPong, nil, key)), 0, true, 0},
		{"empty fragment flood", append([][]byte{start}, times(100, empty)...), 0, true, 0},
		{"15 pings and 5 messages", mixed, 10 * time.Millisecond, false, 5},
		{"a message in 20 fragments", append(append([][]byte{start}, times(18, empty)...), clientFrame(true, opContinuation, nil, key)), 10 * time.Millisecond, false, 1},
		{"a message in 20 fragments at once", append(append([][]byte{start}, times(18, empty)...), clientFrame(true, opContinuation, nil, key)), 0, false, 1},
	}
	bothModes(t, func(t *testing.T, goroutines bool) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h := startHarness(t, Config{MessageRate: 10, MessageBurst: 20}, false, goroutines)
				nc, br, c := h.rawDial(t, 0)
				rec := c.h.(*recorder)
				if tt.gap == 0 {
					if _, err := nc.Write(bytes.Join(tt.frames, nil)); err != nil {
						t.Fatal(err)
					}
				} else {
					for _, f := range tt.frames {
						if _, err := nc.Write(f); err != nil {
							t.Fatal(err)
						}
						time.Sleep(tt.gap)
					}
				}
				if tt.limit {
					if code, _ := readUntilClose(t, nc, br); code != 4004 {
						t.Fatalf("close code after %d frames = %d, want 4004", len(tt.frames), code)
					}
					if n := h.srv.stats.RateLimited.Load(); n != 1 {
						t.Fatalf("rate limited = %d, want 1", n)
					}
					return
				}
				pings := 0
				for _, f := range tt.frames {
					if bytes.Equal(f, ping) {
						pings++
					}
				}
				for i := range pings {
					nc.SetReadDeadline(time.Now().Add(10 * time.Second))
					if op, _, err := readFrame(br); err != nil || op != opPong {
						t.Fatalf("reply %d = op %d, %v; want a pong", i, op, err)
					}
				}
				waitMessages(t, rec, tt.msgs)
				nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if op, p, err := readFrame(br); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("after %d frames within the limit the server sent op %d %q (%v); want nothing", len(tt.frames), op, p, err)
				}
				c.mu.Lock()
				st := c.state
				c.mu.Unlock()
				if st != stateOpen || h.srv.stats.RateLimited.Load() != 0 {
					t.Fatalf("state %d, rate limited %d; want open, 0", st, h.srv.stats.RateLimited.Load())
				}
			})
		}
	})
}

// TestFloodWhileClosing: a client that floods after the server has sent
// its close frame is cut off when its tokens run out, without waiting for
// the close timeout, and is not counted as rate limited on top of the
// reason it was closed for.
func TestFloodWhileClosing(t *testing.T) {
	key := [4]byte{6, 6, 6, 6}
	bothModes(t, func(t *testing.T, goroutines bool) {
		h := startHarness(t, Config{MessageRate: 10, MessageBurst: 20, CloseTimeout: time.Minute}, false, goroutines)
		nc, br, c := h.rawDial(t, 0)
		c.CloseWith(relay.ClosePolicy, "go away")
		if code, _ := readUntilClose(t, nc, br); code != 1008 {
			t.Fatalf("close code = %d, want 1008", code)
		}
		if _, err := nc.Write(bytes.Repeat(clientFrame(true, opPing, nil, key), 100)); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c)
		if n := h.srv.stats.RateLimited.Load(); n != 0 {
			t.Fatalf("rate limited = %d, want 0 (the connection was closing)", n)
		}
	})
}

// TestSingleFrameMessageCostsOneToken: with a burst of 20 and next to no
// refill, exactly 20 single-frame messages pass and the 21st closes.
func TestSingleFrameMessageCostsOneToken(t *testing.T) {
	const burst = 20
	key := [4]byte{9, 9, 9, 1}
	bothModes(t, func(t *testing.T, goroutines bool) {
		h := startHarness(t, Config{MessageRate: 0.001, MessageBurst: burst}, false, goroutines)
		nc, br, c := h.rawDial(t, 0)
		rec := c.h.(*recorder)
		send := bytes.Repeat(clientFrame(true, opText, []byte("hi"), key), burst+1)
		if _, err := nc.Write(send); err != nil {
			t.Fatal(err)
		}
		if code, _ := readUntilClose(t, nc, br); code != 4004 {
			t.Fatalf("close code after %d messages = %d, want 4004", burst+1, code)
		}
		<-rec.closed
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.msgs) != burst {
			t.Fatalf("handled %d of %d messages, want %d (one token each)", len(rec.msgs), burst+1, burst)
		}
	})
}

// waitMessages waits until rec has handled n messages.
func waitMessages(t *testing.T, rec *recorder, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec.mu.Lock()
		got := len(rec.msgs)
		rec.mu.Unlock()
		if got == n {
			return
		}
		if got > n || time.Now().After(deadline) {
			t.Fatalf("handled %d messages, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
