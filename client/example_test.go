package client_test

import (
	"context"
	"fmt"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/server"
)

// exampleServer runs a server on a free loopback port and returns its URL
// and how to stop it.
func exampleServer() (string, func()) {
	ln, err := server.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(server.Config{}, nil).Run(ctx, ln) }()
	return "http://" + ln.Addr().String(), func() { cancel(); <-done }
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
