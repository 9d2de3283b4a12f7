package ws

import (
	"bytes"
	"net"
	"slices"
	"testing"
	"unicode/utf8"
)

// parseAll feeds data to a fresh connection's frame parser in chunks of
// the given sizes (cycled) and returns the messages it handed over and the
// frames it queued in reply (pongs, close).
func parseAll(data []byte, chunks []int) (msgs []string, queued [][]byte) {
	s := New(Config{MaxMessageBytes: 1024, Writers: 1})
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &Conn{srv: s, nc: a, w: s.writers[0], encode: EncodeSeed}
	rec := &recorder{closed: make(chan struct{})}
	c.h = rec
	data = bytes.Clone(data) // the parser unmasks in place
	for i := 0; len(data) > 0; i++ {
		n := len(data)
		if len(chunks) > 0 {
			n = min(n, max(1, chunks[i%len(chunks)]))
		}
		if !c.consume(data[:n], int64(i+1)) {
			break
		}
		data = data[n:]
	}
	return rec.msgs, c.queue
}

// FuzzReadFrames checks the incremental frame parser: whatever the bytes,
// it never panics, only hands over valid UTF-8 within the size limit, and
// gives the same result however the bytes are split across reads.
func FuzzReadFrames(f *testing.F) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f.Add(clientFrame(true, opText, []byte(`{"topics":["cats"]}`), key), uint8(3))
	f.Add(append(clientFrame(false, opText, []byte("frag"), key), clientFrame(true, opContinuation, []byte("ment"), key)...), uint8(1))
	f.Add(append(clientFrame(true, opPing, []byte("p"), key), clientFrame(true, opClose, []byte{3, 232}, key)...), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		whole, wq := parseAll(data, nil)
		sizes := []int{int(split%7) + 1, int(split/7%5) + 1, 3}
		parts, pq := parseAll(data, sizes)
		if !slices.Equal(whole, parts) {
			t.Fatalf("messages differ with chunks %v:\nwhole %q\nparts %q", sizes, whole, parts)
		}
		if !slices.EqualFunc(wq, pq, bytes.Equal) {
			t.Fatalf("replies differ with chunks %v:\nwhole %x\nparts %x", sizes, wq, pq)
		}
		for _, m := range whole {
			if !utf8.ValidString(m) || len(m) > 1024 {
				t.Fatalf("handed over %d bytes, valid UTF-8 %v", len(m), utf8.ValidString(m))
			}
		}
	})
}
