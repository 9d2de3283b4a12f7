package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/relayhq/relay/client"
)

// subscribeCmd is `relay subscribe TOPIC...`. SIGINT and SIGTERM end it
// cleanly (exit 0).
func subscribeCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return subscribeMain(ctx, args, getenv, stdout, stderr)
}

// streamLine is what -json prints per event: a relay.v1 frame (message,
// join, leave) or a gap.
type streamLine struct {
	Type    string  `json:"type"`
	Topic   string  `json:"topic"`
	Offset  *uint64 `json:"offset,omitempty"`
	Epoch   string  `json:"epoch,omitempty"`
	Message *string `json:"message,omitempty"`
	UserID  *uint64 `json:"user_id,omitempty"`
	Private bool    `json:"private,omitempty"`
}

func subscribeMain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay subscribe", flag.ContinueOnError)
	r := remoteFlags(fs, getenv)
	userFlag := fs.String("user", "0", "the user id to register as (publishes to this user reach it; presence shows it)")
	token := fs.String("token", getenv("RELAY_TOKEN"), "connect with this connect `token` (GET /ws?token=) instead of registering (env RELAY_TOKEN)")
	sinceFlag := fs.String("since", "", "start after `OFFSET:EPOCH` (one topic only): replay what followed it, then go on live")
	presence := fs.Bool("presence", false, "also report users joining and leaving the topics")
	asJSON := fs.Bool("json", false, "print every event as one JSON object per line (messages, gaps, joins and leaves) on stdout")
	count := fs.Int("count", 0, "exit 0 after `N` messages (0: run until interrupted)")
	timeout := fs.Duration("timeout", 0, "stop after this long (0: no limit); with -count, not having received N messages by then is exit 1")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, `Usage: relay subscribe [flags] TOPIC...

Prints the messages of the topics as they arrive, one per line, exactly as
published (use -json for messages that hold newlines). It speaks relay.v1
with the Go client's Stream: when the connection drops (a network failure,
a server restart) it reconnects with backoff and resumes every topic from
the last message it printed, so no message is printed twice and, as long as
the server's history reaches back (Redis and NATS engines keep it across a
restart), none is missed.

When messages were lost for good (history trimmed; the in-memory engine
restarted and its topics have a new epoch), a line on stderr says so and
where the topic resumes: "relay subscribe: gap on T ...". Lines starting
with "#" on stderr report the connection: where each topic starts, joins
and leaves (with -presence), reconnects, and where each topic stood when
the command stopped (pass it to -since to go on from there). stdout holds
only messages (or, with -json, events), and is flushed as they arrive.

With -json each line is one object:
  {"type":"message","topic":T,"offset":N,"epoch":E,"message":M}
  {"type":"message","topic":T,"message":M,"private":true}  (published to this user only)
  {"type":"gap","topic":T,"offset":N,"epoch":E}            (lost messages; resumes after N)
  {"type":"join","topic":T,"user_id":U}, {"type":"leave",...} (with -presence)

It connects with -token (or RELAY_TOKEN) when given; otherwise it registers
as -user (POST /register, with the API key when the server needs one) and
registers again on every reconnect, so it survives a server restart that
forgets registrations. SIGINT and SIGTERM stop it cleanly (exit 0).

Examples:
  relay subscribe orders
  relay subscribe -json -presence orders chat | jq .
  relay subscribe -since 41:k3q7ubvv6yx4e orders
  relay subscribe -count 1 -timeout 30s deploys   # wait for one message
  relay subscribe -token "$(relay token -sub 7)" orders

Flags:
`)
		fs.PrintDefaults()
	}
	topics, code, ok := parseArgs(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "relay subscribe: "+format+"\n", a...)
		return exitUsage
	}
	if len(topics) == 0 {
		return fail("name at least one topic")
	}
	seen := map[string]bool{}
	for _, t := range topics {
		if t == "" {
			return fail("a topic must not be empty")
		}
		if seen[t] {
			return fail("topic %q is given twice", t)
		}
		seen[t] = true
	}
	user, err := parseUser(*userFlag)
	if err != nil {
		return fail("%v", err)
	}
	var since client.Position
	if *sinceFlag != "" {
		if len(topics) != 1 {
			return fail("-since is a position in one topic's stream: give exactly one topic with it, not %d", len(topics))
		}
		if since, err = parseSince(*sinceFlag, true); err != nil {
			return fail("%v", err)
		}
	}
	switch {
	case *count < 0:
		return fail("-count must not be negative")
	case *timeout < 0:
		return fail("-timeout must not be negative")
	}
	c, err := r.client()
	if err != nil {
		return fail("%v", err)
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	// Connect: a token URL, or a registration renewed on every reconnect.
	note := func(format string, a ...any) { fmt.Fprintf(stderr, "# "+format+"\n", a...) }
	var (
		url   string
		opts  = client.StreamOptions{MaxBackoff: 5 * time.Second}
		regMu sync.Mutex
		regID string // the registration in use, deleted on exit
	)
	if *token != "" {
		url = c.TokenURL(*token)
	} else {
		reg, err := c.Register(ctx, user)
		if err != nil {
			return subscribeFailed(ctx, stderr, "registering", err, r)
		}
		url, regID = reg.URL, reg.ID
		var lastErr string
		opts.Reconnect = func(ctx context.Context) (string, error) {
			reg, err := c.Register(ctx, user)
			if err != nil {
				// Say why once, not on every attempt.
				if msg := err.Error(); msg != lastErr {
					lastErr = msg
					note("reconnecting: registering failed, retrying: %v", err)
				}
				return "", err
			}
			lastErr = ""
			note("reconnecting: registered again as user %d", user)
			regMu.Lock()
			regID = reg.ID
			regMu.Unlock()
			return reg.URL, nil
		}
		defer func() {
			regMu.Lock()
			id := regID
			regMu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			c.Unregister(ctx, id) // best effort: it would expire anyway
		}()
	}
	s, err := c.OpenStream(ctx, url, opts)
	if err != nil {
		if *token != "" {
			var ce *client.Error
			if errors.As(err, &ce) && ce.Status == http.StatusUnauthorized {
				fmt.Fprintf(stderr, "relay subscribe: %s refused the connect token: %s\nMint a fresh one (relay token -sub USER with the server's secret) and pass it with -token or RELAY_TOKEN.\n", r.server, ce.Message)
				return exitFailure
			}
		}
		return subscribeFailed(ctx, stderr, "connecting", err, r)
	}
	defer s.Close()
	if *sinceFlag != "" {
		err = s.SubscribeSince(ctx, *presence, map[string]client.Position{topics[0]: since})
	} else {
		err = s.Subscribe(ctx, *presence, topics...)
	}
	if err != nil {
		return subscribeFailed(ctx, stderr, "subscribing", err, r)
	}
	for _, t := range topics {
		if p, ok := s.Position(t); ok {
			note("subscribed to %s after offset %d of epoch %s", t, p.Offset, p.Epoch)
		}
		if *presence {
			note("present on %s: %s", t, users(s.Present(t)))
		}
	}

	out := bufio.NewWriter(stdout)
	defer func() {
		out.Flush()
		for _, t := range topics {
			if p, ok := s.Position(t); ok {
				note("%s stopped after offset %d of epoch %s (go on with -since %d:%s)", t, p.Offset, p.Epoch, p.Offset, p.Epoch)
			}
		}
	}()
	events := s.Events()
	received := 0
	for *count == 0 || received < *count {
		var ev client.Event
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && *count > 0 {
				out.Flush()
				fmt.Fprintf(stderr, "relay subscribe: -timeout %s passed after %d of the %d messages -count asks for\n", *timeout, received, *count)
				return exitFailure
			}
			return exitOK // interrupted, or -timeout without -count
		case e, ok := <-events:
			if !ok {
				out.Flush()
				fmt.Fprintf(stderr, "relay subscribe: the stream ended: %v\n", s.Err())
				return exitFailure
			}
			ev = e
		}
		switch ev.Type {
		case "message":
			received++
			if *asJSON {
				line := streamLine{Type: "message", Topic: ev.Topic, Message: &ev.Message, Private: ev.Private}
				if !ev.Private {
					line.Offset, line.Epoch = &ev.Offset, ev.Epoch
				}
				writeJSONLine(out, line)
			} else {
				out.WriteString(ev.Message)
				out.WriteByte('\n')
			}
		case "gap":
			out.Flush() // the messages before the gap come first
			fmt.Fprintf(stderr, "relay subscribe: gap on %s: messages were lost (history no longer holds them, or the stream restarted with a new epoch); resuming after offset %d of epoch %s\n", ev.Topic, ev.Offset, ev.Epoch)
			if *asJSON {
				writeJSONLine(out, streamLine{Type: "gap", Topic: ev.Topic, Offset: &ev.Offset, Epoch: ev.Epoch})
			}
		case "join", "leave":
			if *asJSON {
				writeJSONLine(out, streamLine{Type: ev.Type, Topic: ev.Topic, UserID: &ev.UserID})
			} else {
				out.Flush()
				note("%s: user %d on %s", ev.Type, ev.UserID, ev.Topic)
			}
		}
		if len(events) == 0 { // nothing else waiting: show what we have
			if err := out.Flush(); err != nil {
				fmt.Fprintf(stderr, "relay subscribe: writing: %v\n", err)
				return exitFailure
			}
		}
	}
	return exitOK
}

// subscribeFailed reports a failure to connect or subscribe; an
// interruption meanwhile is a clean exit.
func subscribeFailed(ctx context.Context, stderr io.Writer, doing string, err error, r *remote) int {
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			fmt.Fprintf(stderr, "relay subscribe: -timeout passed while %s\n", doing)
			return exitFailure
		}
		return exitOK
	}
	var (
		ce *client.Error
		ne net.Error
	)
	if errors.As(err, &ce) || errors.As(err, &ne) {
		fmt.Fprintf(stderr, "relay subscribe: %s: %s\n", doing, explain(err, r))
	} else {
		fmt.Fprintf(stderr, "relay subscribe: %s: %v\n", doing, err)
	}
	return exitFailure
}

func users(us []uint64) string {
	if len(us) == 0 {
		return "nobody"
	}
	s := make([]string, len(us))
	for i, u := range us {
		s[i] = fmt.Sprint(u)
	}
	return "users " + strings.Join(s, ", ")
}
