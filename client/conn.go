package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Conn is a WebSocket connection speaking the seed protocol: every message
// arrives as one text frame with exactly the published text.
//
// A reader goroutine receives frames into a buffer of 256 messages; when
// the application stops calling Receive, the buffer fills, the socket stops
// being read, and the server eventually closes the connection as a slow
// consumer (code 4002), which Receive then reports.
type Conn struct {
	ws   *websocket.Conn
	msgs chan string
	done chan struct{} // closed when the reader stops
	quit chan struct{} // closed by Close
	once sync.Once
	err  error // why the reader stopped; read after done

	wmu     sync.Mutex // serialises data frames (gorilla allows one writer)
	pingSeq atomic.Uint64
	pmu     sync.Mutex
	pongs   map[string]chan struct{}
}

// CloseError is how the connection ended, when the server closed it.
type CloseError = websocket.CloseError

// Connect dials a socket URL returned by Register.
func (c *Client) Connect(ctx context.Context, wsURL string) (*Conn, error) {
	ws, err := c.dial(ctx, wsURL, c.header)
	if err != nil {
		return nil, err
	}
	conn := &Conn{
		ws:    ws,
		msgs:  make(chan string, 256),
		done:  make(chan struct{}),
		quit:  make(chan struct{}),
		pongs: make(map[string]chan struct{}),
	}
	ws.SetPongHandler(conn.pong)
	go conn.read()
	return conn, nil
}

// dial opens a WebSocket. A refusal by the server (an HTTP status instead
// of the upgrade) is an *Error with the server's explanation.
func (c *Client) dial(ctx context.Context, url string, h http.Header) (*websocket.Conn, error) {
	ws, resp, err := c.dialer.DialContext(ctx, url, h)
	if err == nil {
		return ws, nil
	}
	if resp == nil {
		return nil, fmt.Errorf("relay: connect: %w", err)
	}
	var e struct {
		Error string `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = "connect: " + err.Error()
	}
	return nil, &Error{Status: resp.StatusCode, Message: e.Error}
}

func (c *Conn) read() {
	defer close(c.done)
	defer close(c.msgs)
	for {
		typ, b, err := c.ws.ReadMessage()
		if err != nil {
			c.err = err
			return
		}
		if typ == websocket.TextMessage {
			select {
			case c.msgs <- string(b):
			case <-c.quit:
				c.err = net.ErrClosed
				return
			}
		}
	}
}

func (c *Conn) pong(payload string) error {
	c.pmu.Lock()
	ch := c.pongs[payload]
	delete(c.pongs, payload)
	c.pmu.Unlock()
	if ch != nil {
		close(ch)
	}
	return nil
}

// Receive returns the next message. After the connection ends it returns
// the reason, a *CloseError when the server closed it with a code.
func (c *Conn) Receive(ctx context.Context) (string, error) {
	select {
	case m, ok := <-c.msgs:
		if !ok {
			return "", c.err
		}
		return m, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Messages returns the channel messages arrive on; it is closed when the
// connection ends (then see Err).
func (c *Conn) Messages() <-chan string { return c.msgs }

// Err returns why the connection ended, once Messages is closed.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// SetTopics replaces the connection's topics and returns once the server
// has applied them: the command is followed by a WebSocket ping, and the
// server answers pings only after the commands before them took effect.
func (c *Conn) SetTopics(ctx context.Context, topics ...string) error {
	if topics == nil {
		topics = []string{}
	}
	b, err := json.Marshal(map[string][]string{"topics": topics})
	if err != nil {
		return err
	}
	if err := c.WriteText(b); err != nil {
		return err
	}
	return c.Sync(ctx)
}

// Sync returns once the server has handled everything sent before it.
func (c *Conn) Sync(ctx context.Context) error {
	key := "sync-" + strconv.FormatUint(c.pingSeq.Add(1), 10)
	ch := make(chan struct{})
	c.pmu.Lock()
	c.pongs[key] = ch
	c.pmu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	if err := c.ws.WriteControl(websocket.PingMessage, []byte(key), deadline); err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-c.done:
		if c.err != nil {
			return c.err
		}
		return errors.New("relay: connection closed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WriteText sends raw text on the socket (e.g. the seed's "ping").
func (c *Conn) WriteText(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// Close sends a normal close (1000) and waits up to a second for the
// server's answer before dropping the connection.
func (c *Conn) Close() error {
	err := c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.once.Do(func() { close(c.quit) })
	select {
	case <-c.done:
	case <-time.After(time.Second):
	}
	c.ws.Close()
	if errors.Is(err, websocket.ErrCloseSent) {
		err = nil
	}
	return err
}

// CloseCode returns the close code the server sent, or 0 while the
// connection is open or if it ended without one.
func (c *Conn) CloseCode() int {
	var ce *websocket.CloseError
	if errors.As(c.Err(), &ce) {
		return ce.Code
	}
	return 0
}
