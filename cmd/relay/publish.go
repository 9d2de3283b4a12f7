package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/relayhq/relay/client"
)

// publishCmd is `relay publish TOPIC [MESSAGE]` and `relay publish -batch
// FILE`.
func publishCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return publishMain(args, getenv, os.Stdin, stdout, stderr)
}

// maxStdinMessage bounds a message read from stdin; the server's own
// limit (-max-message, 64 KiB by default) is usually far lower and is the
// one that answers.
const maxStdinMessage = 64 << 20

func publishMain(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay publish", flag.ContinueOnError)
	r := remoteFlags(fs, getenv)
	user := fs.String("user", "", "deliver only to this user's clients (a user id); default: every subscriber of the topic")
	key := fs.String("idempotency-key", "", "1 to 256 bytes: a repeat with the same key on the same topic within the server's window publishes nothing and answers the first receipt with \"duplicate\":true")
	batch := fs.String("batch", "", "publish every line of `FILE` (- for stdin): JSON objects {\"topic\",\"message\",\"user_id\",\"idempotency_key\"}")
	raw := fs.Bool("raw", false, "publish stdin exactly as read, keeping its final newline")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, `Usage: relay publish [flags] TOPIC [MESSAGE]
       relay publish [flags] -batch FILE

Publishes MESSAGE to TOPIC and prints the server's receipt as one line of
JSON: {"topic":T,"offset":N,"epoch":E,"delivered":K,"duplicate":false}
(offset 0 and epoch "" for a message to one user, which is outside the
topic's stream). Without MESSAGE, or with -, the message is the whole of
stdin, less one final newline (so that echo hi | relay publish t publishes
"hi"; -raw keeps it).

-batch publishes a file of JSON lines, one event per line, in requests of
at most 1000 events, and prints one receipt per event with its "line"; an
event the server refuses prints {"line":L,"topic":T,"status":S,"error":M}
and the command exits 1 after the others. A line that is not a valid event
stops the command before anything is published (exit 2).

Examples:
  relay publish orders 'order 42 shipped'
  echo '{"id":42}' | relay publish -user 7 orders
  relay publish -idempotency-key order-42 orders 'order 42 shipped'
  relay publish -batch events.jsonl
  printf '{"topic":"a","message":"1"}\n{"topic":"b","message":"2"}\n' | relay publish -batch -

Flags:
`)
		fs.PrintDefaults()
	}
	pos, code, ok := parseArgs(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "relay publish: "+format+"\n", a...)
		return exitUsage
	}
	if *batch != "" {
		switch {
		case len(pos) > 0:
			return fail("-batch takes the topics and messages from its file, not from arguments (got %q)", pos[0])
		case *user != "" || *key != "":
			return fail("-batch takes user_id and idempotency_key from each line, not from -user or -idempotency-key")
		}
		return publishBatch(r, *batch, stdin, stdout, stderr)
	}
	if len(pos) == 0 || len(pos) > 2 {
		return fail("want a topic and at most one message, got %d arguments (quote a message that has spaces)", len(pos))
	}
	p := client.Publish{Topic: pos[0], IdempotencyKey: *key}
	if p.Topic == "" {
		return fail("the topic must not be empty")
	}
	if *user != "" {
		u, err := parseUser(*user)
		if err != nil {
			return fail("%v", err)
		}
		p.UserID = &u
	}
	if *key != "" && len(*key) > 256 {
		return fail("-idempotency-key is %d bytes, the limit is 256", len(*key))
	}
	if len(pos) == 2 && pos[1] != "-" {
		p.Message = pos[1]
	} else {
		if f, ok := stdin.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprintln(stderr, "relay publish: reading the message from the terminal; end it with Ctrl-D")
			}
		}
		b, err := io.ReadAll(io.LimitReader(stdin, maxStdinMessage+1))
		if err != nil {
			fmt.Fprintf(stderr, "relay publish: reading the message from stdin: %v\n", err)
			return exitFailure
		}
		if len(b) > maxStdinMessage {
			return fail("the message on stdin exceeds %d bytes", maxStdinMessage)
		}
		if !*raw {
			b = bytes.TrimSuffix(b, []byte("\n"))
			b = bytes.TrimSuffix(b, []byte("\r"))
		}
		p.Message = string(b)
	}
	c, err := r.client()
	if err != nil {
		return fail("%v", err)
	}
	res, err := c.Publish(context.Background(), p)
	if err != nil {
		fmt.Fprintf(stderr, "relay publish: %s\n", explain(err, r))
		return exitFailure
	}
	writeJSONLine(stdout, receiptLine{Topic: p.Topic, Offset: res.Offset, Epoch: res.Epoch, Delivered: res.Delivered, Duplicate: res.Duplicate})
	return exitOK
}

// receiptLine is what publish prints per message; Line numbers the
// events of -batch.
type receiptLine struct {
	Line      int    `json:"line,omitempty"`
	Topic     string `json:"topic"`
	Offset    uint64 `json:"offset"`
	Epoch     string `json:"epoch"`
	Delivered int    `json:"delivered"`
	Duplicate bool   `json:"duplicate"`
}

// refusalLine is what -batch prints for an event the server refused.
type refusalLine struct {
	Line   int    `json:"line"`
	Topic  string `json:"topic"`
	Status int    `json:"status"`
	Error  string `json:"error"`
}

// batchEvent is one event of a -batch file and the line it came from.
type batchEvent struct {
	line int
	p    client.Publish
	size int // its JSON, to keep each request under the server's body limit
}

// batchBodyBudget bounds the body of one batch request, below the
// server's default -max-body of 1 MiB. A server configured lower answers
// 413, and the request is split in halves until it fits.
const batchBodyBudget = 512 << 10

func publishBatch(r *remote, file string, stdin io.Reader, stdout, stderr io.Writer) int {
	in, name := stdin, "stdin"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			fmt.Fprintf(stderr, "relay publish: -batch: %v\n", err)
			return exitUsage
		}
		defer f.Close()
		in, name = f, file
	}
	events, err := readBatch(in, name)
	if err != nil {
		fmt.Fprintf(stderr, "relay publish: %v\nNothing was published.\n", err)
		return exitUsage
	}
	if len(events) == 0 {
		fmt.Fprintf(stderr, "relay publish: %s holds no events\n", name)
		return exitUsage
	}
	c, err := r.client()
	if err != nil {
		fmt.Fprintf(stderr, "relay publish: %v\n", err)
		return exitUsage
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	b := &batcher{c: c, out: out}
	for start := 0; start < len(events); {
		end, size := start, 0
		for end < len(events) && end-start < client.MaxBatch && (end == start || size+events[end].size+1 <= batchBodyBudget) {
			size += events[end].size + 1
			end++
		}
		if err := b.send(events[start:end]); err != nil {
			out.Flush()
			fmt.Fprintf(stderr, "relay publish: %s\n", explain(err, r))
			if b.sent > 0 {
				fmt.Fprintf(stderr, "The events before line %d were sent (their receipts are above); line %d and the ones after it were not.\n", b.failedAt, b.failedAt)
			} else {
				fmt.Fprintln(stderr, "Nothing was published.")
			}
			return exitFailure
		}
		start = end
	}
	out.Flush()
	if b.refused > 0 {
		fmt.Fprintf(stderr, "relay publish: the server refused %d of %d events (their lines say why); the others were published\n", b.refused, len(events))
		return exitFailure
	}
	return exitOK
}

// batcher sends a -batch file's events and prints their receipts.
type batcher struct {
	c        *client.Client
	out      io.Writer
	sent     int // events answered
	refused  int // events the server refused
	failedAt int // the first line of the request that failed
}

// send publishes events in one request, or in halves when the server
// refuses the request as too large (413: its -max-body is lower than the
// budget; a refused request publishes nothing, so the halves are safe).
func (b *batcher) send(events []batchEvent) error {
	ps := make([]client.Publish, len(events))
	for i, e := range events {
		ps[i] = e.p
	}
	res, err := b.c.PublishBatch(context.Background(), ps)
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusRequestEntityTooLarge && len(events) > 1 {
		half := len(events) / 2
		if err := b.send(events[:half]); err != nil {
			return err
		}
		return b.send(events[half:])
	}
	if err != nil {
		b.failedAt = events[0].line
		return err
	}
	for i, r := range res {
		e := events[i]
		if r.Err != nil {
			b.refused++
			line := refusalLine{Line: e.line, Topic: e.p.Topic, Error: r.Err.Error()}
			if errors.As(r.Err, &ce) {
				line.Status, line.Error = ce.Status, ce.Message
			}
			writeJSONLine(b.out, line)
			continue
		}
		writeJSONLine(b.out, receiptLine{Line: e.line, Topic: e.p.Topic, Offset: r.Offset, Epoch: r.Epoch, Delivered: r.Delivered, Duplicate: r.Duplicate})
	}
	b.sent += len(events)
	return nil
}

// maxBatchLine bounds one line of a -batch file.
const maxBatchLine = 16 << 20

// readBatch reads a file of JSON lines, one publish per line; blank lines
// are skipped. Its errors name the line.
func readBatch(in io.Reader, name string) ([]batchEvent, error) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxBatchLine)
	var events []batchEvent
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var ev struct {
			Topic          *string `json:"topic"`
			Message        *string `json:"message"`
			UserID         *uint64 `json:"user_id"`
			IdempotencyKey *string `json:"idempotency_key"`
		}
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.DisallowUnknownFields()
		err := dec.Decode(&ev)
		if err == nil && dec.More() {
			err = errors.New("more than one JSON value on the line")
		}
		switch {
		case err != nil:
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) && te.Field != "" {
				err = fmt.Errorf("%s must be %s", te.Field, map[string]string{
					"topic": "a string", "message": "a string", "idempotency_key": "a string", "user_id": "a non-negative integer",
				}[te.Field])
			}
		case ev.Topic == nil:
			err = errors.New(`"topic" is required`)
		case *ev.Topic == "":
			err = errors.New("topic must not be empty")
		case ev.Message == nil:
			err = errors.New(`"message" is required`)
		case ev.IdempotencyKey != nil && (len(*ev.IdempotencyKey) == 0 || len(*ev.IdempotencyKey) > 256):
			err = errors.New("idempotency_key must be 1 to 256 bytes")
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v (want {\"topic\": T, \"message\": M} with optional \"user_id\" and \"idempotency_key\")", name, line, err)
		}
		p := client.Publish{Topic: *ev.Topic, Message: *ev.Message, UserID: ev.UserID}
		if ev.IdempotencyKey != nil {
			p.IdempotencyKey = *ev.IdempotencyKey
		}
		events = append(events, batchEvent{line: line, p: p, size: len(text)})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: the line exceeds %d bytes", name, line+1, maxBatchLine)
		}
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	return events, nil
}

// writeJSONLine prints v as one line of JSON.
func writeJSONLine(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only plain structs are printed
		panic(err)
	}
	w.Write(append(b, '\n'))
}

// parseArgs parses the flags (parseFlags lets them stand anywhere among
// the arguments: `relay publish orders hi -user 7`; after "--" everything
// is an argument, so a message may start with "-") and returns the other
// arguments in order.
func parseArgs(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) ([]string, int, bool) {
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return nil, code, false
	}
	return fs.Args(), 0, true
}

// parseUser parses a -user flag.
func parseUser(s string) (uint64, error) {
	u, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("-user %q: want a user id, a non-negative integer", s)
	}
	return u, nil
}
