// Command stall connects clients that subscribe to a topic and never read,
// to measure what a stalled consumer costs everyone else (bench/run.sh).
// At the end it reads what each one was sent and reports how it ended.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	base := flag.String("http", "http://127.0.0.1:8000", "server base URL")
	topic := flag.String("topic", "bench", "topic to subscribe to")
	n := flag.Int("n", 1, "stalled clients")
	hold := flag.Duration("hold", 20*time.Second, "how long to stay stalled")
	flag.Parse()
	dialer := websocket.Dialer{NetDialContext: (&net.Dialer{Control: smallRcvbuf}).DialContext}
	var conns []*websocket.Conn
	for i := range *n {
		resp, err := http.Post(*base+"/register", "application/json", bytes.NewReader(fmt.Appendf(nil, `{"user_id":%d}`, 1_000_000+i)))
		if err != nil {
			fail(err)
		}
		var reg struct{ URL string }
		json.NewDecoder(resp.Body).Decode(&reg)
		resp.Body.Close()
		c, _, err := dialer.Dial(reg.URL, nil)
		if err != nil {
			fail(err)
		}
		c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"topics":[%q]}`, *topic))
		conns = append(conns, c)
	}
	fmt.Fprintf(os.Stderr, "stall: %d clients on %q, not reading for %s\n", *n, *topic, *hold)
	time.Sleep(*hold)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		msgs := 0
		for {
			_, r, err := c.NextReader()
			if err != nil {
				fmt.Fprintf(os.Stderr, "stall: client %d read %d messages, then %v\n", i, msgs, err)
				break
			}
			io.Copy(io.Discard, r)
			msgs++
		}
	}
}

// smallRcvbuf keeps the kernel from absorbing megabytes on the stalled
// client's behalf, so the server's queue limit is what is measured.
func smallRcvbuf(_, _ string, rc syscall.RawConn) error {
	var err error
	rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	return err
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "stall:", err)
	os.Exit(1)
}
