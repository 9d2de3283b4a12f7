package client_test

import (
	"context"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/server"
)

// exampleServer runs a server on a free loopback port and returns its URL
// and how to stop it.
func exampleServer() (string, func()) { return exampleServerWith(server.Config{}) }

// exampleServerWith is exampleServer with a configuration.
func exampleServerWith(cfg server.Config) (string, func()) {
	ln, err := server.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(cfg, nil).Run(ctx, ln) }()
	return "http://" + ln.Addr().String(), func() { cancel(); <-done }
}

// Publish and read the receipt. The idempotency key makes a retry safe:
// when an answer is lost (a timeout, a dropped connection) the backend
// cannot know whether the message went out, and publishing again with
// the same key answers the first publish's receipt instead of
// delivering it twice.
func ExampleClient_Publish() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, _ := client.New(url)
	p := client.Publish{Topic: "orders", Message: "order 42 shipped", IdempotencyKey: "order-42-shipped"}
	r, err := c.Publish(ctx, p)
	if err != nil {
		fmt.Println("not published:", err)
		return
	}
	fmt.Println("offset", r.Offset, "delivered", r.Delivered, "duplicate", r.Duplicate, "epoch set", r.Epoch != "")
	again, _ := c.Publish(ctx, p) // the retry
	fmt.Println("offset", again.Offset, "duplicate", again.Duplicate, "same epoch", again.Epoch == r.Epoch)
	// Output:
	// offset 1 delivered 0 duplicate false epoch set true
	// offset 1 duplicate true same epoch true
}

// A Stream on a registration: it reconnects by itself and recovers what
// it missed. Reconnect registers again, since a registration outlives its
// socket only for the server's reconnect grace.
func ExampleClient_OpenStream() {
	url, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _ := client.New(url)
	reg, err := c.Register(ctx, 7)
	if err != nil {
		fmt.Println(err)
		return
	}
	s, err := c.OpenStream(ctx, reg.URL, client.StreamOptions{
		Reconnect: func(ctx context.Context) (string, error) {
			r, err := c.Register(ctx, 7)
			return r.URL, err
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	if err := s.Subscribe(ctx, false, "orders"); err != nil {
		fmt.Println(err)
		return
	}
	c.Publish(ctx, client.Publish{Topic: "orders", Message: "order 42 shipped"})
	select {
	case ev := <-s.Events():
		fmt.Println(ev.Type, ev.Topic, ev.Offset, ev.Message)
	case <-ctx.Done():
		fmt.Println("nothing arrived")
	}
	pos, _ := s.Position("orders")
	fmt.Println("position", pos.Offset)
	// Output:
	// message orders 1 order 42 shipped
	// position 1
}

// Resume from a receipt: a program that knows the last message it
// handled (here the first publish's receipt) gets what followed it, then
// live messages.
func ExampleStream_SubscribeSince() {
	url, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _ := client.New(url)
	var receipts []client.PublishResult
	for _, m := range []string{"m1", "m2", "m3"} {
		r, _ := c.Publish(ctx, client.Publish{Topic: "jobs", Message: m})
		receipts = append(receipts, r)
	}
	reg, _ := c.Register(ctx, 1)
	s, err := c.OpenStream(ctx, reg.URL, client.StreamOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	done := client.Position{Offset: receipts[0].Offset, Epoch: receipts[0].Epoch}
	if err := s.SubscribeSince(ctx, false, map[string]client.Position{"jobs": done}); err != nil {
		fmt.Println(err)
		return
	}
	for range 2 {
		ev := <-s.Events()
		fmt.Println(ev.Type, ev.Offset, ev.Message)
	}
	// Output:
	// message 2 m2
	// message 3 m3
}

// Page through a topic's history: pass the last offset seen as Since.
func ExampleClient_History() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, _ := client.New(url)
	for i := 1; i <= 5; i++ {
		c.Publish(ctx, client.Publish{Topic: "news", Message: fmt.Sprint("m", i)})
	}
	var since uint64
	for {
		h, err := c.History(ctx, "news", client.HistoryOptions{Since: since, Limit: 2})
		if err != nil {
			fmt.Println(err)
			return
		}
		if len(h.Messages) == 0 {
			fmt.Println("up to date at", h.Offset)
			break
		}
		// Complete is false when history no longer held the message after
		// since: then some were lost in between.
		fmt.Print("page complete=", h.Complete, ":")
		for _, m := range h.Messages {
			fmt.Print(" ", m.Offset, "=", m.Message)
			since = m.Offset
		}
		fmt.Println()
	}
	// Output:
	// page complete=true: 1=m1 2=m2
	// page complete=true: 3=m3 4=m4
	// page complete=true: 5=m5
	// up to date at 5
}

// Who is on a topic: users, each with their connections (a user's second
// tab is a second connection, not a second user).
func ExampleClient_Presence() {
	url, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _ := client.New(url)
	for _, user := range []uint64{7, 7, 100} {
		reg, _ := c.Register(ctx, user)
		conn, err := c.Connect(ctx, reg.URL)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer conn.Close()
		conn.SetTopics(ctx, "room") // returns once the server applied it
	}
	p, err := c.Presence(ctx, "room")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, u := range p.Users {
		fmt.Println("user", u.UserID, "connections", u.Connections)
	}
	fmt.Println("connections in all", p.Connections)
	// Output:
	// user 7 connections 2
	// user 100 connections 1
	// connections in all 3
}

// Connect with a token instead of a registration: the backend signs a
// short-lived JWT (here HS256 with the server's -token-secret) whose sub
// is the user id and whose topics claim limits what the socket may
// subscribe to. No call to the server is needed to mint it.
func ExampleClient_TokenURL() {
	secret := []byte("token-secret-0123456789abcdef0123456789")
	a, _ := auth.New(auth.Config{TokenSecret: secret})
	url, stop := exampleServerWith(server.Config{API: api.Config{Auth: a}})
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _ := client.New(url)

	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub":    "42",
		"exp":    time.Now().Add(10 * time.Minute).Unix(),
		"topics": []string{"chat.*"},
	}).SignedString(secret)
	if err != nil {
		fmt.Println(err)
		return
	}
	s, err := c.OpenStream(ctx, c.TokenURL(token), client.StreamOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	fmt.Println("chat.lobby:", s.Subscribe(ctx, false, "chat.lobby"))
	fmt.Println("admin:", s.Subscribe(ctx, false, "admin"))
	c.Publish(ctx, client.Publish{Topic: "chat.lobby", Message: "hello 42"})
	ev := <-s.Events()
	fmt.Println(ev.Type, ev.Topic, ev.Message)
	// Output:
	// chat.lobby: <nil>
	// admin: relay: forbidden: topic "admin" is not allowed by this connection's token
	// message chat.lobby hello 42
}

// Publish a batch in one request: each event succeeds or fails on its own,
// so check every result.
func ExampleClient_PublishBatch() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, _ := client.New(url)
	res, err := c.PublishBatch(ctx, []client.Publish{
		{Topic: "orders", Message: "order 41 paid"},
		{Topic: "", Message: "no topic"},
		{Topic: "orders", Message: "order 42 paid", IdempotencyKey: "order-42"},
		{Topic: "orders", Message: "order 42 paid", IdempotencyKey: "order-42"}, // a retry
	})
	if err != nil {
		fmt.Println("nothing was published:", err)
		return
	}
	for i, r := range res {
		if r.Err != nil {
			fmt.Println(i, "refused:", r.Err)
			continue
		}
		fmt.Println(i, "offset", r.Offset, "duplicate", r.Duplicate)
	}
	h, _ := c.History(ctx, "orders", client.HistoryOptions{})
	for _, m := range h.Messages {
		fmt.Println("history:", m.Offset, m.Message)
	}
	// Output:
	// 0 offset 1 duplicate false
	// 1 refused: relay: 400 Bad Request: topic must not be empty
	// 2 offset 2 duplicate false
	// 3 offset 2 duplicate true
	// history: 1 order 41 paid
	// history: 2 order 42 paid
}
