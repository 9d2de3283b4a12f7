package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The hand-made handshake and frames, read by gorilla's server side: a
// fragmented message (its continuation written a piece at a time, as the
// partial probe drips it), a ping, and frames with 16- and 64-bit lengths;
// and gorilla's pong and close frame read back by readServerFrame.
func TestRawFramesAgainstGorilla(t *testing.T) {
	big := strings.Repeat("b", 70000)
	got := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for range 3 {
			_, msg, err := c.ReadMessage()
			if err != nil {
				t.Error(err)
				return
			}
			got <- string(msg)
		}
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseMessageTooBig, "too big"), time.Now().Add(time.Second))
	}))
	defer srv.Close()

	s, err := rawDial(context.Background(), &srcPool{}, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/x", "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	k := s.key
	var b []byte
	b = appendFrame(b, true, opPing, []byte("hi"), k)
	b = appendFrame(b, false, opText, []byte("hel"), k)
	tail := []byte("lo, " + strings.Repeat("a", 200)) // a 16-bit length
	b = appendHeader(b, true, opContinuation, len(tail), k)
	for i := range tail { // dripped
		b = appendMasked(b, tail[i:i+1], k, i)
	}
	b = appendFrame(b, true, opText, []byte(big), k) // a 64-bit length
	b = appendFrame(b, true, opText, []byte("last"), k)
	if _, err := s.conn.Write(b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hello, " + strings.Repeat("a", 200), big, "last"} {
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("gorilla read %d bytes %.20q..., want %d bytes %.20q...", len(m), m, len(want), want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("gorilla read nothing")
		}
	}
	s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := readServerFrame(s.br, 1024)
	if err != nil || f.op != opPong || !bytes.Equal(f.payload, []byte("hi")) {
		t.Fatalf("first server frame = %+v, %v; want a pong with hi", f, err)
	}
	f, err = readServerFrame(s.br, 1024)
	if err != nil || f.op != opClose {
		t.Fatalf("second server frame = %+v, %v; want a close", f, err)
	}
	if code, reason := closeCode(f.payload); code != 1009 || reason != "too big" {
		t.Fatalf("close = %d %q, want 1009 too big", code, reason)
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := summarize(ds)
	if s.N != 100 || s.P50 != 50 || s.P99 != 99 || s.Max != 100 {
		t.Fatalf("summarize(1..100 ms) = %+v", s)
	}
}
