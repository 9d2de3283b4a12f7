// Package client is the Go client for Relay: the HTTP API that app
// backends call (register, publish, unregister) and the WebSocket side
// that browsers and devices use (connect, choose topics, receive).
//
//	c, _ := client.New("http://127.0.0.1:8000")
//	reg, _ := c.Register(ctx, 42)
//	conn, _ := c.Connect(ctx, reg.URL)
//	conn.SetTopics(ctx, "cats", "dogs")
//	c.Publish(ctx, client.Publish{Topic: "cats", Message: "hello"})
//	msg, _ := conn.Receive(ctx) // "hello"
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Client talks to one Relay server. It is safe for concurrent use.
type Client struct {
	base   *url.URL
	http   *http.Client
	dialer *websocket.Dialer
	header http.Header
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client use h for HTTP calls.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithDialer makes the client use d for WebSocket connections.
func WithDialer(d *websocket.Dialer) Option { return func(c *Client) { c.dialer = d } }

// WithHeader adds a header to every HTTP request and WebSocket handshake.
func WithHeader(key, value string) Option {
	return func(c *Client) { c.header.Add(key, value) }
}

// New returns a client for the server at baseURL (http:// or https://).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q must be http:// or https:// with a host", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &Client{
		base:   u,
		http:   &http.Client{Timeout: 30 * time.Second},
		dialer: &websocket.Dialer{HandshakeTimeout: 10 * time.Second},
		header: http.Header{},
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is a refusal from the server: the HTTP status and the server's
// explanation.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("relay: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Registration is the result of Register.
type Registration struct {
	ID  string // the id in the URL; pass it to Unregister
	URL string // the WebSocket URL to Connect to
}

// Register creates a registration for userID and returns its socket URL.
func (c *Client) Register(ctx context.Context, userID uint64) (Registration, error) {
	var out struct {
		URL string `json:"url"`
	}
	if err := c.call(ctx, http.MethodPost, "/register", map[string]uint64{"user_id": userID}, &out); err != nil {
		return Registration{}, err
	}
	i := strings.LastIndex(out.URL, "/ws/")
	if i < 0 {
		return Registration{}, fmt.Errorf("relay: register returned an unexpected URL %q", out.URL)
	}
	return Registration{ID: out.URL[i+len("/ws/"):], URL: out.URL}, nil
}

// Unregister removes a registration; its socket, if connected, is closed
// with code 4000.
func (c *Client) Unregister(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/register/"+url.PathEscape(id), nil, nil)
}

// Publish is one message to publish.
type Publish struct {
	Topic string
	// UserID, when set, restricts delivery to that user's clients.
	UserID  *uint64
	Message string
}

// PublishResult is the server's answer to a publish.
type PublishResult struct {
	// Offset and Epoch place the message in its topic's stream (zero for
	// a message to one user).
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
	// Delivered counts the connections on the node that answered which
	// the message was queued for; other nodes deliver on their own.
	Delivered int `json:"delivered"`
	// Duplicate reports that an earlier publish with the same
	// idempotency key answered.
	Duplicate bool `json:"duplicate"`
}

// Publish sends a message to every client subscribed to p.Topic.
func (c *Client) Publish(ctx context.Context, p Publish) (PublishResult, error) {
	body := struct {
		Topic   string  `json:"topic"`
		UserID  *uint64 `json:"user_id"`
		Message string  `json:"message"`
	}{p.Topic, p.UserID, p.Message}
	var out PublishResult
	err := c.call(ctx, http.MethodPost, "/publish", body, &out)
	return out, err
}

// Health returns nil while the server is serving.
func (c *Client) Health(ctx context.Context) error {
	return c.call(ctx, http.MethodGet, "/health", nil, nil)
}

// call sends one JSON request and decodes a JSON answer into out.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return err
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &Error{Status: resp.StatusCode, Message: e.Error}
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("relay: decoding %s %s answer: %w", method, path, err)
		}
	}
	return nil
}
