package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/relayhq/relay/client"
)

// historyPage is the most messages one GET /history answers.
const historyPage = 1000

// historyCmd is `relay history TOPIC`: the messages a topic's history
// still holds.
func historyCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay history", flag.ContinueOnError)
	r := remoteFlags(fs, getenv)
	since := fs.String("since", "0", "only messages after `OFFSET` (a number, or OFFSET:EPOCH, which also checks that the stream is still that epoch)")
	limit := fs.Int("limit", 100, "print at most `N` messages (pages of 1000 are fetched as needed); 0: all that history holds")
	asJSON := fs.Bool("json", false, `print one JSON object: {"topic","offset","epoch","complete","messages":[{"offset","message"}]}`)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, `Usage: relay history [flags] TOPIC

Prints the messages of TOPIC that the server's history still holds, oldest
first: one line per message, its offset, a tab, and the message (messages
with newlines in them are easier to read with -json). A summary line goes
to stderr: the stream's latest offset and epoch, and whether history
reaches back to -since (the server keeps each topic's last messages,
bounded by count, age and bytes). Messages published to one user are
never in history.

Examples:
  relay history orders
  relay history -since 40 -limit 10 orders
  relay history -json -limit 0 orders | jq -r '.messages[].message'

Flags:
`)
		fs.PrintDefaults()
	}
	pos, code, ok := parseArgs(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "relay history: "+format+"\n", a...)
		return exitUsage
	}
	if len(pos) != 1 {
		return fail("want one topic, got %d arguments", len(pos))
	}
	topic := pos[0]
	if topic == "" {
		return fail("the topic must not be empty")
	}
	from, err := parseSince(*since, false)
	if err != nil {
		return fail("%v", err)
	}
	if *limit < 0 {
		return fail("-limit must be 0 (everything) or a positive number, got %d", *limit)
	}
	c, err := r.client()
	if err != nil {
		return fail("%v", err)
	}

	// Page through history from -since: each page starts after the last
	// offset seen, until the limit or the end.
	ctx := context.Background()
	h := client.History{Topic: topic, Messages: []client.HistoryMessage{}}
	after := from.Offset
	for first := true; ; first = false {
		n := historyPage
		if *limit > 0 {
			n = min(n, *limit-len(h.Messages))
		}
		page, err := c.History(ctx, topic, client.HistoryOptions{Since: after, Limit: n})
		if err != nil {
			fmt.Fprintf(stderr, "relay history: %s\n", explain(err, r))
			return exitFailure
		}
		if first {
			h.Offset, h.Epoch, h.Complete = page.Offset, page.Epoch, page.Complete
			if from.Epoch != "" && from.Epoch != page.Epoch {
				fmt.Fprintf(stderr, "relay history: %s is now epoch %s, not %s: its stream restarted, and offset %d of the old epoch means nothing in the new one.\nRun without the epoch to read the new stream.\n", topic, page.Epoch, from.Epoch, from.Offset)
				return exitFailure
			}
		} else if page.Epoch != h.Epoch {
			fmt.Fprintf(stderr, "relay history: %s changed epoch from %s to %s while it was being read; run again\n", topic, h.Epoch, page.Epoch)
			return exitFailure
		}
		h.Offset = page.Offset
		h.Messages = append(h.Messages, page.Messages...)
		if len(page.Messages) < n || (*limit > 0 && len(h.Messages) >= *limit) {
			break
		}
		after = page.Messages[len(page.Messages)-1].Offset
	}

	if *asJSON {
		writeJSONLine(stdout, h)
		return exitOK
	}
	out := bufio.NewWriter(stdout)
	for _, m := range h.Messages {
		fmt.Fprintf(out, "%d\t%s\n", m.Offset, m.Message)
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(stderr, "relay history: %v\n", err)
		return exitFailure
	}
	summary := fmt.Sprintf("%s: %d message%s; the stream is at offset %d of epoch %s", topic, len(h.Messages), plural(len(h.Messages)), h.Offset, h.Epoch)
	switch {
	case h.Offset == 0:
		summary += " (nothing has been published to it)"
	case !h.Complete && len(h.Messages) > 0:
		summary += fmt.Sprintf("; history no longer holds offsets %d to %d", from.Offset+1, h.Messages[0].Offset-1)
	case !h.Complete:
		summary += fmt.Sprintf("; history no longer holds the messages after %d", from.Offset)
	}
	if last := h.Offset; len(h.Messages) > 0 && h.Messages[len(h.Messages)-1].Offset < last {
		summary += fmt.Sprintf("; more follow: -since %d", h.Messages[len(h.Messages)-1].Offset)
	}
	fmt.Fprintln(stderr, summary)
	return exitOK
}

// presenceCmd is `relay presence TOPIC`: who is subscribed to a topic.
func presenceCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay presence", flag.ContinueOnError)
	r := remoteFlags(fs, getenv)
	asJSON := fs.Bool("json", false, `print one JSON object: {"topic","users":[{"user_id","connections"}],"connections"}`)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, `Usage: relay presence [flags] TOPIC

Prints the users with a connection subscribed to TOPIC on the node that
answers: one line per user, the user id, a tab, and how many connections
the user has there, in ascending order of user id. A summary line goes to
stderr. With several nodes each node answers for its own connections (use
relay subscribe -presence for the cluster-wide join and leave events).

Examples:
  relay presence room
  relay presence -json room | jq '.connections'

Flags:
`)
		fs.PrintDefaults()
	}
	pos, code, ok := parseArgs(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 || pos[0] == "" {
		msg := fmt.Sprintf("want one topic, got %d arguments", len(pos))
		if len(pos) == 1 {
			msg = "the topic must not be empty"
		}
		fmt.Fprintf(stderr, "relay presence: %s\n", msg)
		return exitUsage
	}
	c, err := r.client()
	if err != nil {
		fmt.Fprintf(stderr, "relay presence: %v\n", err)
		return exitUsage
	}
	p, err := c.Presence(context.Background(), pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "relay presence: %s\n", explain(err, r))
		return exitFailure
	}
	if *asJSON {
		writeJSONLine(stdout, p)
		return exitOK
	}
	out := bufio.NewWriter(stdout)
	for _, u := range p.Users {
		fmt.Fprintf(out, "%d\t%d\n", u.UserID, u.Connections)
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(stderr, "relay presence: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stderr, "%s: %d user%s, %d connection%s\n", p.Topic, len(p.Users), plural(len(p.Users)), p.Connections, plural(p.Connections))
	return exitOK
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// parseSince parses OFFSET or OFFSET:EPOCH; needEpoch refuses a bare
// offset (a stream's position means nothing without its epoch).
func parseSince(s string, needEpoch bool) (client.Position, error) {
	off, epoch, hasEpoch := strings.Cut(s, ":")
	n, err := strconv.ParseUint(off, 10, 64)
	switch {
	case err != nil:
		return client.Position{}, fmt.Errorf("-since %q: want OFFSET:EPOCH, e.g. 41:k3q7ubvv6yx4e (a receipt's offset and epoch)", s)
	case hasEpoch && epoch == "":
		return client.Position{}, fmt.Errorf("-since %q: the epoch after the colon is empty", s)
	case needEpoch && !hasEpoch:
		return client.Position{}, fmt.Errorf("-since %q: give the epoch too, OFFSET:EPOCH (offsets are only comparable within an epoch; relay history prints the current one)", s)
	}
	return client.Position{Offset: n, Epoch: epoch}, nil
}
