package ws

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

func BenchmarkEncodeText(b *testing.B) {
	for _, n := range []int{100, 1000, 70000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			payload := make([]byte, n)
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				EncodeText(payload)
			}
		})
	}
}

// BenchmarkDeliver measures what a publish costs per subscriber on the
// publishing goroutine: the shared frame is encoded once, then each
// connection only queues a reference.
func BenchmarkDeliver(b *testing.B) {
	s := New(Config{Writers: 1})
	conns := make([]*Conn, 1000)
	for i := range conns {
		a, z := net.Pipe()
		defer a.Close()
		defer z.Close()
		conns[i] = &Conn{srv: s, nc: a, w: s.writers[0], encode: EncodeSeed}
	}
	m := &relay.Message{Topic: "t", Data: make([]byte, 100)}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		d := &relay.Delivery{Msg: m}
		for _, c := range conns {
			c.Deliver(d)
		}
		n += len(conns)
		if n%(64*len(conns)) == 0 { // keep the queues from growing without bound
			for _, c := range conns {
				c.queue, c.queued, c.scheduled = c.queue[:0], 0, false
			}
			s.writers[0].ready = s.writers[0].ready[:0]
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/delivery")
}

// BenchmarkFlush measures a writer flushing a connection over loopback TCP
// with a reader draining the other end: frames per flush 1 (no
// coalescing) versus 32 (a burst of publishes), so the cost of the write
// syscall per delivery shows.
func BenchmarkFlush(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprintf("frames=%d", batch), func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err == nil {
					io.Copy(io.Discard, c)
				}
			}()
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			s := New(Config{Writers: 1})
			s.dropPollers()
			c := s.adopt(nc, relay.FormatSeed, "", nil)
			w := s.writers[0]
			frame := EncodeText(make([]byte, 100))
			b.ReportAllocs()
			for b.Loop() {
				for range batch {
					c.enqueue(frame)
				}
				w.ready = w.ready[:0]
				c.flush(w)
				for { // if the socket pushed back, wait for the blocking writer
					c.mu.Lock()
					busy := c.scheduled
					c.mu.Unlock()
					if !busy {
						break
					}
					runtime.Gosched()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/delivery")
		})
	}
}

func BenchmarkConsume(b *testing.B) {
	s := New(Config{Writers: 1})
	a, z := net.Pipe()
	defer a.Close()
	defer z.Close()
	c := &Conn{srv: s, nc: a, w: s.writers[0], encode: EncodeSeed}
	c.h = &recorder{closed: make(chan struct{})}
	frame := clientFrame(true, opText, []byte(`{"topics":["cats","dogs"]}`), [4]byte{1, 2, 3, 4})
	buf := make([]byte, len(frame))
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		copy(buf, frame)
		c.consume(buf, 1)
		c.h.(*recorder).msgs = c.h.(*recorder).msgs[:0]
	}
}

// BenchmarkConsumeRateLimited is BenchmarkConsume with a frame-rate limit
// that is never reached, so every frame pays for its token: 8 frames per
// read, the read's time refilling the bucket.
func BenchmarkConsumeRateLimited(b *testing.B) {
	s := New(Config{Writers: 1, MessageRate: 1e9, MessageBurst: 1 << 30})
	a, z := net.Pipe()
	defer a.Close()
	defer z.Close()
	c := &Conn{srv: s, nc: a, w: s.writers[0], encode: EncodeSeed}
	c.h = &recorder{closed: make(chan struct{})}
	frame := clientFrame(true, opText, []byte(`{"topics":["cats","dogs"]}`), [4]byte{1, 2, 3, 4})
	frames := bytes.Repeat(frame, 8)
	buf := make([]byte, len(frames))
	b.ReportAllocs()
	b.SetBytes(int64(len(frames)))
	now := int64(0)
	for b.Loop() {
		now += int64(time.Microsecond)
		copy(buf, frames)
		if !c.consume(buf, now) {
			b.Fatal("rate limited")
		}
		c.h.(*recorder).msgs = c.h.(*recorder).msgs[:0]
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(8*b.N), "ns/frame")
}
