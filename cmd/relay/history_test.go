package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

func TestHistoryCommand(t *testing.T) {
	in := relaytest.Start(t, server.Config{Memory: memorybroker.Config{History: []memorybroker.HistoryRule{{Size: 3000, TTL: time.Hour, Bytes: 1 << 20}}}})
	c := in.Client
	getenv := cliEnv(in.URL)
	var epoch string
	for i := 1; i <= 5; i++ {
		r, err := c.Publish(cliCtx(t), client.Publish{Topic: "news/eu", Message: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		epoch = r.Epoch
	}

	code, out, errb := cliRun(getenv, "history", "news/eu")
	if code != 0 || out != "1\tm1\n2\tm2\n3\tm3\n4\tm4\n5\tm5\n" {
		t.Fatalf("history: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	if want := "news/eu: 5 messages; the stream is at offset 5 of epoch " + epoch + "\n"; errb != want {
		t.Fatalf("summary %q, want %q", errb, want)
	}
	code, out, errb = cliRun(getenv, "history", "-since", "2:"+epoch, "-limit", "2", "news/eu")
	if code != 0 || out != "3\tm3\n4\tm4\n" || !strings.Contains(errb, "more follow: -since 4") {
		t.Fatalf("history -since 2 -limit 2: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, out, _ = cliRun(getenv, "history", "-json", "-since", "3", "news/eu")
	want := fmt.Sprintf(`{"topic":"news/eu","offset":5,"epoch":%q,"complete":true,"messages":[{"offset":4,"message":"m4"},{"offset":5,"message":"m5"}]}`+"\n", epoch)
	if code != 0 || out != want {
		t.Fatalf("history -json: exit %d\n got %s\nwant %s", code, out, want)
	}
	// An epoch that is not the stream's: the offset means nothing.
	code, out, errb = cliRun(getenv, "history", "-since", "2:old", "news/eu")
	if code != exitFailure || out != "" || !strings.Contains(errb, "now epoch "+epoch) {
		t.Fatalf("history with another epoch: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, out, _ = cliRun(getenv, "history", "-json", "quiet")
	var empty client.History
	if err := json.Unmarshal([]byte(out), &empty); code != 0 || err != nil || empty.Offset != 0 || empty.Messages == nil || len(empty.Messages) != 0 {
		t.Fatalf("history of an unused topic: exit %d, %s", code, out)
	}

	// Beyond one page: -limit 0 reads all 2,500 in pages of 1,000.
	msgs := make([]client.Publish, 1000)
	for round := range 3 {
		for i := range msgs {
			msgs[i] = client.Publish{Topic: "big", Message: fmt.Sprint(round*1000 + i + 1)}
		}
		n := 1000
		if round == 2 {
			n = 500
		}
		if _, err := c.PublishBatch(cliCtx(t), msgs[:n]); err != nil {
			t.Fatal(err)
		}
	}
	code, out, _ = cliRun(getenv, "history", "-json", "-limit", "0", "big")
	var h client.History
	if err := json.Unmarshal([]byte(out), &h); code != 0 || err != nil || len(h.Messages) != 2500 || h.Offset != 2500 || !h.Complete {
		t.Fatalf("history -limit 0: exit %d, %d messages (%v)", code, len(h.Messages), err)
	}
	for i, m := range h.Messages {
		if m.Offset != uint64(i+1) || m.Message != fmt.Sprint(i+1) {
			t.Fatalf("message %d = %+v", i, m)
		}
	}
	code, out, _ = cliRun(getenv, "history", "-limit", "1500", "-since", "100", "big")
	if lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); code != 0 || len(lines) != 1500 || lines[0] != "101\t101" || lines[1499] != "1600\t1600" {
		t.Fatalf("history -limit 1500 -since 100: exit %d, %d lines", code, len(lines))
	}

	for _, args := range [][]string{
		{"history"},
		{"history", ""},
		{"history", "a", "b"},
		{"history", "-since", "x", "t"},
		{"history", "-since", "3:", "t"},
		{"history", "-limit", "-1", "t"},
	} {
		if code, out, errb := cliRun(getenv, args...); code != exitUsage || out != "" || strings.Count(errb, "\n") > 2 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2", args, code, out, errb)
		}
	}
	dead := "http://" + cliFreeAddr(t)
	if code, _, errb := cliRun(cliEnv(dead), "history", "t"); code != exitFailure || !strings.Contains(errb, "-server") {
		t.Fatalf("unreachable: exit %d, stderr %q", code, errb)
	}
}

func TestPresenceCommand(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	c := in.Client
	getenv := cliEnv(in.URL)
	cliListen(t, c, 100, "room")
	cliListen(t, c, 7, "room")
	cliListen(t, c, 7, "room")
	cliListen(t, c, 8, "hall")

	code, out, errb := cliRun(getenv, "presence", "room")
	if code != 0 || out != "7\t2\n100\t1\n" || errb != "room: 2 users, 3 connections\n" {
		t.Fatalf("presence: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	code, out, _ = cliRun(getenv, "presence", "-json", "room")
	if want := `{"topic":"room","users":[{"user_id":7,"connections":2},{"user_id":100,"connections":1}],"connections":3}` + "\n"; code != 0 || out != want {
		t.Fatalf("presence -json: exit %d\n got %s\nwant %s", code, out, want)
	}
	code, out, _ = cliRun(getenv, "presence", "empty", "-json")
	if code != 0 || out != `{"topic":"empty","users":[],"connections":0}`+"\n" {
		t.Fatalf("presence of an empty topic: exit %d, %s", code, out)
	}
	for _, args := range [][]string{{"presence"}, {"presence", ""}, {"presence", "a", "b"}} {
		if code, out, _ := cliRun(getenv, args...); code != exitUsage || out != "" {
			t.Errorf("%q: exit %d, stdout %q; want 2", args, code, out)
		}
	}
	dead := "http://" + cliFreeAddr(t)
	if code, _, errb := cliRun(cliEnv(dead), "presence", "room"); code != exitFailure || !strings.Contains(errb, "Set -server or RELAY_SERVER") {
		t.Fatalf("unreachable: exit %d, stderr %q", code, errb)
	}
}
