package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/internal/auth"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigPrecedence(t *testing.T) {
	c, err := parseServe([]string{"-ping-interval", "5s"},
		env(map[string]string{"RELAY_PING_INTERVAL": "7s", "RELAY_MAX_TOPICS": "9", "RELAY_SEND_QUEUE": "2MiB"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.PingInterval != 5*time.Second {
		t.Errorf("ping interval = %v, want the flag's 5s over the env's 7s", c.PingInterval)
	}
	if c.MaxTopics != 9 || c.SendQueue != 2<<20 {
		t.Errorf("env values not applied: topics %d, queue %d", c.MaxTopics, c.SendQueue)
	}
	if c.Addr != "127.0.0.1:8000" || c.ReconnectGrace != 30*time.Second || !c.Metrics {
		t.Errorf("defaults: addr %q grace %v metrics %v", c.Addr, c.ReconnectGrace, c.Metrics)
	}
	sc := c.serverConfig()
	if sc.WS.SendQueueBytes != 2<<20 || sc.Hub.MaxTopics != 9 || sc.WS.PingInterval != 5*time.Second {
		t.Errorf("server config = %+v", sc)
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"RELAY_PING_INTERVAL": "soon"}, `RELAY_PING_INTERVAL="soon": not a duration`},
		{nil, map[string]string{"RELAY_MAX_BODY": "lots"}, `RELAY_MAX_BODY="lots": not a size`},
		{[]string{"-addr", "8000"}, nil, "-addr / RELAY_ADDR"},
		{[]string{"-idle-timeout", "10s", "-ping-interval", "20s"}, nil, "RELAY_IDLE_TIMEOUT (10s) must be longer than -ping-interval"},
		{[]string{"-max-message", "2MiB"}, nil, "RELAY_MAX_BODY (1MiB) must be larger than -max-message"},
		{[]string{"-public-url", "ftp://x"}, nil, "RELAY_PUBLIC_URL"},
		{[]string{"-log-format", "xml"}, nil, "RELAY_LOG_FORMAT"},
		{[]string{"-max-topics", "0"}, nil, "-max-topics / RELAY_MAX_TOPICS must be greater than zero"},
		{[]string{"-reconnect-grace", "-1s"}, nil, "RELAY_RECONNECT_GRACE must not be negative"},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
		{[]string{"-history", "chat.=10/1m"}, nil, "no default"},
		{[]string{"-history", "10/soon"}, nil, "ttl must be a positive duration"},
		{[]string{"-history", "10/1m,a=1/1m,a=2/1m"}, nil, `prefix "a" given twice`},
		{[]string{"-connect-rate", "NaN"}, nil, "-connect-rate: not a finite number"},
		{nil, map[string]string{"RELAY_MESSAGE_RATE": "NaN"}, `RELAY_MESSAGE_RATE="NaN": not a finite number`},
		{[]string{"-register-rate", "+Inf"}, nil, "not a finite number"},
		{[]string{"-history-budget", "1MiB"}, nil, "-history-budget / RELAY_HISTORY_BUDGET (1MiB) must be at least"},
		{[]string{"-max-streams", "0"}, nil, "-max-streams / RELAY_MAX_STREAMS must be greater than zero"},
	}
	for _, tt := range tests {
		_, err := parseServe(tt.args, env(tt.env), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseServe(%q, %v) = %v; want an error containing %q", tt.args, tt.env, err, tt.want)
		}
	}
}

func TestZeroGraceForgetsAtOnce(t *testing.T) {
	c, err := parseServe([]string{"-reconnect-grace", "0"}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if g := c.serverConfig().Hub.ReconnectGrace; g >= 0 {
		t.Fatalf("hub grace = %v, want negative (forget at once)", g)
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"serve", "-h"}, env(nil), &out, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, o := range options(&serveConfig{}) {
		if !strings.Contains(out.String(), "-"+o.flag) || !strings.Contains(out.String(), o.env) {
			t.Errorf("help lacks -%s / %s", o.flag, o.env)
		}
	}
}

func TestPrintConfig(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-print-config", "-max-topics", "3"}, env(map[string]string{"RELAY_ADDR": "127.0.0.1:9"}), &out, &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	for _, want := range []string{
		`(?m)^RELAY_ADDR=127\.0\.0\.1:9 +# RELAY_ADDR$`,
		`(?m)^RELAY_MAX_TOPICS=3 +# -max-topics$`,
		`(?m)^RELAY_SEND_QUEUE=1MiB +# default$`,
		// The limit in force, not the 0 that means "derive it".
		fmt.Sprintf(`(?m)^RELAY_MAX_CONNECTIONS=%d +# default \(0: the open-file limit`, fileLimit()-256),
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("print-config lacks %s:\n%s", want, out.String())
		}
	}
}

func TestHistoryRules(t *testing.T) {
	c, err := parseServe([]string{"-history", "50/2m, chat.=1000/1h/4MiB, tmp.=0"}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	got := c.serverConfig().Memory.History
	want := "[{ 50 2m0s 1048576} {chat. 1000 1h0m0s 4194304} {tmp. 0 1m0s 1048576}]"
	if fmt.Sprint(got) != want {
		t.Fatalf("rules = %v, want %s", got, want)
	}
	if s := c.History.String(); s != "50/2m0s/1MiB,chat.=1000/1h0m0s/4MiB,tmp.=0/1m0s/1MiB" {
		t.Fatalf("String() = %s", s)
	}
}

// TestRefusesOpenAPIOffLoopback: without an API key Relay will not serve
// on a non-loopback address unless told it is meant to.
func TestRefusesOpenAPIOffLoopback(t *testing.T) {
	var out bytes.Buffer
	code := run([]string{"-addr", "0.0.0.0:8000"}, env(nil), &out, &out)
	if code != 2 || !strings.Contains(out.String(), "refusing to serve the open API on 0.0.0.0:8000") || !strings.Contains(out.String(), "RELAY_API_KEYS") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	// With a key, or with -insecure, the check passes; 192.0.2.1 (a
	// documentation address) is then not on this machine, so listening
	// fails instead, and nothing is ever bound.
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"-addr", "192.0.2.1:8000"}, map[string]string{"RELAY_API_KEYS": "a-key-long-enough-123"}},
		{[]string{"-addr", "192.0.2.1:8000", "-insecure"}, nil},
	} {
		out.Reset()
		code := run(tc.args, env(tc.env), &out, &out)
		if code != 1 || strings.Contains(out.String(), "refusing") || !strings.Contains(out.String(), "cannot listen") {
			t.Fatalf("%v %v: exit %d: %s", tc.args, tc.env, code, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"-addr", "192.0.2.1:8000"}, env(map[string]string{"RELAY_API_KEYS": "short"}), &out, &out); code != 2 || !strings.Contains(out.String(), "at least 16") {
		t.Fatalf("short key: exit %d: %s", code, out.String())
	}
}

func TestPrintConfigRedactsSecrets(t *testing.T) {
	var out bytes.Buffer
	run([]string{"-print-config"}, env(map[string]string{"RELAY_API_KEYS": "sekrit-key-0123456789", "RELAY_TOKEN_SECRET": "token-secret-0123456789abcdefghijkl"}), &out, &out)
	if strings.Contains(out.String(), "sekrit") || strings.Contains(out.String(), "token-secret") || !strings.Contains(out.String(), "RELAY_API_KEYS=<redacted>") {
		t.Fatalf("print-config leaked a secret:\n%s", out.String())
	}
}

func TestBrokerSetting(t *testing.T) {
	var out bytes.Buffer
	run([]string{"-print-config", "-broker", "redis://app:hunter2secret@10.0.0.5:6379/2", "-node-id", "relay-1"}, env(nil), &out, &out)
	if strings.Contains(out.String(), "hunter2secret") || !strings.Contains(out.String(), "RELAY_BROKER=redis://app:xxxxx@10.0.0.5:6379/2") ||
		!strings.Contains(out.String(), "RELAY_NODE_ID=relay-1") {
		t.Fatalf("print-config of a broker URL with a password:\n%s", out.String())
	}
	for _, bad := range []string{"mysql://x:1", "redis://", "redis", "nats:/nohost"} {
		out.Reset()
		if code := run([]string{"-broker", bad}, env(nil), &out, &out); code != 2 || !strings.Contains(out.String(), "-broker / RELAY_BROKER") {
			t.Errorf("-broker %q: exit %d: %s", bad, code, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"-node-id", "a b"}, env(nil), &out, &out); code != 2 || !strings.Contains(out.String(), "-node-id / RELAY_NODE_ID") {
		t.Errorf("-node-id with a space: exit %d: %s", code, out.String())
	}
}

func TestTokenSubcommand(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"token", "-sub", "42", "-topics", "chat.*,news"}, env(map[string]string{"RELAY_TOKEN_SECRET": "0123456789abcdef0123456789abcdef"}), &out, &errb)
	if code != 0 || strings.Count(out.String(), ".") != 2 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
	a, _ := auth.New(auth.Config{TokenSecret: []byte("0123456789abcdef0123456789abcdef")})
	c, err := a.Verify(strings.TrimSpace(out.String()))
	if err != nil || c.User != 42 || !c.Topics.Allow("chat.x") || c.Topics.Allow("sports") {
		t.Fatalf("minted token: %+v %v", c, err)
	}
	for _, args := range [][]string{{"token"}, {"token", "-sub", "x"}, {"token", "-sub", "1", "-secret", "short"}} {
		if code := run(args, env(nil), &out, &errb); code != 2 {
			t.Fatalf("%v: exit %d, want 2", args, code)
		}
	}
}

func TestRateLimitPolicy(t *testing.T) {
	open, _ := parseServe(nil, env(nil), &bytes.Buffer{})
	sc := open.serverConfig()
	if sc.API.RegisterLimit == nil || sc.API.ConnectLimit == nil {
		t.Fatal("the open mode should rate-limit registrations and upgrades")
	}
	now := time.Now()
	lo, far := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.7")
	for range 100 {
		if !sc.API.RegisterLimit.Allow(lo, now) {
			t.Fatal("the local backend was rate-limited registering in the open mode")
		}
	}
	limited := false
	for range 100 {
		limited = limited || !sc.API.RegisterLimit.Allow(far, now)
	}
	if !limited {
		t.Fatal("100 registrations in an instant from one remote address were not limited")
	}
	keyed, _ := parseServe(nil, env(map[string]string{"RELAY_API_KEYS": "a-key-long-enough-123"}), &bytes.Buffer{})
	if sc := keyed.serverConfig(); sc.API.RegisterLimit != nil || sc.API.ConnectLimit == nil {
		t.Fatal("with API keys, registrations (key holders) are not rate-limited; upgrades still are")
	}
}
