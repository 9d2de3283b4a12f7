package ws

import (
	"bytes"
	"net"
	"testing"

	"github.com/relayhq/relay/internal/relay"
)

// TestQueueBound fills a connection whose writer is not running: the queue
// takes frames up to exactly its byte bound, and the next frame closes the
// connection as a slow consumer, dropping the queue for the close frame.
func TestQueueBound(t *testing.T) {
	s := New(Config{SendQueueBytes: 1000, Writers: 1})
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &Conn{srv: s, nc: a, w: s.writers[0], encode: EncodeSeed}
	frame := make([]byte, 100)
	for i := range 10 {
		if !c.enqueue(frame) {
			t.Fatalf("frame %d refused below the bound", i)
		}
	}
	if c.queued != 1000 || !c.scheduled || len(s.writers[0].ready) != 1 {
		t.Fatalf("queued %d bytes, scheduled %v, ready %d; want 1000, true, 1", c.queued, c.scheduled, len(s.writers[0].ready))
	}
	if c.enqueue(frame) {
		t.Fatal("frame past the bound accepted")
	}
	if got := s.stats.SlowConsumers.Load(); got != 1 {
		t.Fatalf("slow consumers = %d, want 1", got)
	}
	if c.state != stateClosing || len(c.queue) != 1 || !bytes.Equal(c.queue[0], closeFrame(4002, closeCodes[relay.CloseSlowConsumer].text)) {
		t.Fatalf("state %d, queue %x; want closing with only the 4002 close frame", c.state, c.queue)
	}
	if c.enqueue(frame) || s.stats.SlowConsumers.Load() != 1 {
		t.Fatal("a closing connection accepted a frame or was counted twice")
	}
}

// dropPollers makes s read every connection with a goroutine.
func (s *Server) dropPollers() {
	for _, p := range s.pollers {
		done := make(chan struct{})
		close(done)
		p.close(done)
	}
	s.pollers = nil
}
