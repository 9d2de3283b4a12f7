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
	"strconv"
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
	// IdempotencyKey (1 to 256 bytes), when set, makes a repeat of this
	// publish with the same key on the same topic and audience, within the
	// server's idempotency window (2 minutes by default), a no-op that
	// answers with the first publish's offset and Duplicate set. Set it to
	// retry a publish whose answer was lost (a timeout, a dropped
	// connection) without delivering the message twice.
	IdempotencyKey string
}

// body is p as the server reads it, for /publish and /publish/batch.
func (p Publish) body() any {
	return struct {
		Topic          string  `json:"topic"`
		UserID         *uint64 `json:"user_id"`
		Message        string  `json:"message"`
		IdempotencyKey string  `json:"idempotency_key,omitempty"`
	}{p.Topic, p.UserID, p.Message, p.IdempotencyKey}
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
	// Err is set, as an *Error, for an event of a PublishBatch that the
	// server refused (the others were published all the same). Publish
	// returns its refusal as its error instead.
	Err error `json:"-"`
}

// Publish sends a message to every client subscribed to p.Topic.
func (c *Client) Publish(ctx context.Context, p Publish) (PublishResult, error) {
	var out PublishResult
	err := c.call(ctx, http.MethodPost, "/publish", p.body(), &out)
	return out, err
}

// MaxBatch is the most events the server accepts in one PublishBatch; a
// larger batch is refused as a whole (413) and publishes nothing.
const MaxBatch = 1000

// PublishBatch publishes ps in one request, in order, and returns one
// result per event. The server publishes each event on its own: one it
// refuses (an empty topic, a message over the size limit) has its Err set
// and does not stop the others, so check every result's Err. The error is
// for the request as a whole (the server unreachable, a missing API key,
// more than MaxBatch events, a body over the server's -max-body): then
// nothing was published. Split larger batches into several calls. An
// empty batch sends nothing.
func (c *Client) PublishBatch(ctx context.Context, ps []Publish) ([]PublishResult, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	events := make([]any, len(ps))
	for i, p := range ps {
		events[i] = p.body()
	}
	var out struct {
		Results []struct {
			PublishResult
			Status int    `json:"status"`
			Error  string `json:"error"`
		} `json:"results"`
	}
	if err := c.call(ctx, http.MethodPost, "/publish/batch", map[string]any{"events": events}, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(ps) {
		return nil, fmt.Errorf("relay: the batch of %d events was answered with %d results", len(ps), len(out.Results))
	}
	res := make([]PublishResult, len(ps))
	for i, r := range out.Results {
		res[i] = r.PublishResult
		if r.Status != 0 || r.Error != "" {
			// The server names events by their index in the batch, which
			// the caller knows already.
			msg := strings.TrimPrefix(r.Error, fmt.Sprintf("event %d: ", i))
			res[i] = PublishResult{Err: &Error{Status: r.Status, Message: msg}}
		}
	}
	return res, nil
}

// HistoryOptions choose which messages History returns.
type HistoryOptions struct {
	// Since returns only messages with offsets above it: pass the last
	// offset you have to page through a topic. 0 starts at the oldest
	// message history holds.
	Since uint64
	// Limit bounds the messages returned, 1 to 1000; 0 is the server's
	// default (100).
	Limit int
}

// History is a page of a topic's history.
type History struct {
	Topic string `json:"topic"`
	// Offset and Epoch are the stream's latest position: pass them to
	// Stream.SubscribeSince to receive what follows this page. A topic
	// nobody has published to has offset 0.
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
	// Complete is true when the first message is the one right after
	// Since: history had not dropped any message in between (it is bounded
	// by count, age and bytes per topic).
	Complete bool             `json:"complete"`
	Messages []HistoryMessage `json:"messages"`
}

// HistoryMessage is one message of a topic's history.
type HistoryMessage struct {
	Offset  uint64 `json:"offset"`
	Message string `json:"message"`
}

// maxHistoryAnswer bounds a history answer: 1000 messages of the default
// 64 KiB, escaped. The bound only guards against a server that never
// stops answering.
const maxHistoryAnswer = 512 << 20

// History returns the messages of topic after opts.Since that the
// server's history still holds, oldest first. Messages published to one
// user are never in history.
func (c *Client) History(ctx context.Context, topic string, opts HistoryOptions) (History, error) {
	q := url.Values{}
	if opts.Since > 0 {
		q.Set("since", strconv.FormatUint(opts.Since, 10))
	}
	if opts.Limit != 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	path := "/history/" + url.PathEscape(topic)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out History
	if err := c.callLimit(ctx, http.MethodGet, path, nil, &out, maxHistoryAnswer); err != nil {
		return History{}, err
	}
	if out.Messages == nil {
		out.Messages = []HistoryMessage{}
	}
	return out, nil
}

// Presence is who has a connection subscribed to a topic.
type Presence struct {
	Topic string        `json:"topic"`
	Users []PresentUser `json:"users"`
	// Connections counts every connection subscribed, across users.
	Connections int `json:"connections"`
}

// PresentUser is one user present on a topic.
type PresentUser struct {
	UserID      uint64 `json:"user_id"`
	Connections int    `json:"connections"`
}

// Presence returns the users with a connection subscribed to topic on the
// node that answers (with several nodes on one engine, each node answers
// for its own connections). Seed and relay.v1 connections both count.
func (c *Client) Presence(ctx context.Context, topic string) (Presence, error) {
	var out Presence
	if err := c.call(ctx, http.MethodGet, "/presence/"+url.PathEscape(topic), nil, &out); err != nil {
		return Presence{}, err
	}
	if out.Users == nil {
		out.Users = []PresentUser{}
	}
	return out, nil
}

// TokenURL returns the socket URL that connects with a signed connect
// token instead of a registration (GET /ws?token=...): pass it to
// OpenStream or Connect. The token's "sub" is the user id; such a
// connection has no registration to delete or to come back to, so a
// Stream on it reconnects with the same token, as long as it is valid.
func (c *Client) TokenURL(token string) string {
	u := *c.base
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	u.Path += "/ws"
	u.RawPath = ""
	u.RawQuery = url.Values{"token": {token}}.Encode()
	u.Fragment = ""
	return u.String()
}

// Health returns nil while the server is serving.
func (c *Client) Health(ctx context.Context) error {
	return c.call(ctx, http.MethodGet, "/health", nil, nil)
}

// call sends one JSON request and decodes a JSON answer of at most 1 MiB
// into out.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	return c.callLimit(ctx, method, path, in, out, 1<<20)
}

// callLimit is call with an answer of at most limit bytes.
func (c *Client) callLimit(ctx context.Context, method, path string, in, out any, limit int64) error {
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
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return err
	}
	if int64(len(b)) > limit {
		return fmt.Errorf("relay: the answer to %s %s exceeds %d bytes", method, path, limit)
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
