package loadgen

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

func runT(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestFanoutDeliversEverything(t *testing.T) {
	in := relaytest.Start(t, server.Config{Metrics: true})
	var lines atomic.Int64
	res := runT(t, Config{
		Scenario: Fanout, Servers: []string{in.URL}, Connections: 50, Messages: 200, Size: 64,
		Drain: 5 * time.Second, Progress: func(Progress) { lines.Add(1) },
	})
	if !res.OK {
		t.Fatalf("run failed: %v %v", res.Failures, res.Errors)
	}
	if res.Connect.Connected != 50 || res.Connect.Ready != 50 {
		t.Errorf("connected %d, ready %d, want 50", res.Connect.Connected, res.Connect.Ready)
	}
	p, d := res.Publish, res.Delivery
	if p.Accepted != 200 || p.Attempted != 200 || p.Failed != 0 {
		t.Errorf("publishes %+v, want 200 accepted", p)
	}
	if p.ServerDelivered != 50*200 {
		t.Errorf("the server reported %d deliveries, want %d", p.ServerDelivered, 50*200)
	}
	if d.Expected != 50*200 || d.Received != 50*200 || d.Lost != 0 || d.Duplicates != 0 || d.Unexpected != 0 {
		t.Errorf("deliveries %+v, want 10000 received, none lost", d)
	}
	if d.Latency.Count != 50*200 || d.Latency.MaxMs < d.Latency.P50ms || d.LastRecipient.Count != 200 {
		t.Errorf("latency %+v, last recipient %+v", d.Latency, d.LastRecipient)
	}
	if !res.Memory.Known || res.Memory.PerConnection == nil {
		t.Errorf("memory %+v: the server has /metrics", res.Memory)
	}
	if res.CPU == nil || res.CPU.ServerSeconds == nil || res.CPU.WindowSeconds <= 0 {
		t.Errorf("cpu %+v: the server has /metrics", res.CPU)
	}
}

func TestTopicsSpreadsSubscribersAndPublishes(t *testing.T) {
	in := relaytest.Start(t, server.Config{})
	res := runT(t, Config{Scenario: Topics, Servers: []string{in.URL}, Connections: 60, Topics: 20, Messages: 400, Rate: 2000})
	if !res.OK {
		t.Fatalf("run failed: %v %v", res.Failures, res.Errors)
	}
	d := res.Delivery
	// 3 subscribers per topic, every publish reaches its topic's 3.
	if d.Expected != 3*400 || d.Received != d.Expected || d.Lost != 0 || d.Duplicates != 0 {
		t.Errorf("deliveries %+v, want 1200 received", d)
	}
	if res.Memory.Known || res.Memory.PerConnection != nil || res.Memory.Note == "" {
		t.Errorf("memory %+v: the server has no /metrics, want unknown with a note", res.Memory)
	}
	if res.CPU == nil || res.CPU.ServerSeconds != nil {
		t.Errorf("cpu %+v: the server has no /metrics, want unknown", res.CPU)
	}
}

func TestClusterRoundRobin(t *testing.T) {
	a := relaytest.Start(t, server.Config{})
	b := relaytest.Start(t, server.Config{})
	// Two independent servers: subscribers on a only get a's publishes, so
	// half of each publish's expected deliveries are lost, exactly.
	res := runT(t, Config{Scenario: Fanout, Servers: []string{a.URL, b.URL}, Connections: 10, Messages: 20, Drain: 300 * time.Millisecond, Warmup: 2 * time.Second})
	d := res.Delivery
	if d.Expected != 10*20 || d.Received != 10*20/2 || d.Lost != 10*20/2 {
		t.Errorf("deliveries %+v, want half of 200 received", d)
	}
}

func TestConnectionsScenario(t *testing.T) {
	in := relaytest.Start(t, server.Config{Metrics: true})
	res := runT(t, Config{Scenario: Connections, Servers: []string{in.URL}, Connections: 100, Duration: 200 * time.Millisecond})
	if !res.OK || res.Connect.Connected != 100 || res.Connect.PerSecond <= 0 || res.Connect.Setup.Count != 100 {
		t.Fatalf("connect %+v failures %v", res.Connect, res.Failures)
	}
	if res.Publish != nil || res.Delivery != nil {
		t.Errorf("the connections scenario publishes nothing: %+v %+v", res.Publish, res.Delivery)
	}
	if res.Memory.PerConnection == nil {
		t.Errorf("memory %+v", res.Memory)
	}
}

func TestDeadServerFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	res := runT(t, Config{Scenario: Fanout, Servers: []string{"http://" + addr}, Connections: 5, Messages: 5, Warmup: 200 * time.Millisecond, Drain: 100 * time.Millisecond})
	if res.OK || res.Connect.Connected != 0 || res.Connect.Failed != 5 {
		t.Fatalf("connect %+v ok %v", res.Connect, res.OK)
	}
	if !strings.Contains(strings.Join(res.Failures, ";"), "no connection") {
		t.Errorf("failures %v", res.Failures)
	}
	found := false
	for k := range res.Errors {
		found = found || strings.Contains(k, "refused")
	}
	if !found {
		t.Errorf("errors %v do not say the connection was refused", res.Errors)
	}
	if res.Publish.Accepted != 0 || res.Memory.Known {
		t.Errorf("publish %+v memory %+v", res.Publish, res.Memory)
	}
}

// lossy is a server speaking the tutorial protocol that answers 200 to
// every publish but delivers only those whose sequence number is not a
// multiple of 10, and delivers sequence numbers divisible by 7 twice.
type lossy struct {
	mu    sync.Mutex
	conns []*websocket.Conn
	fail  bool // answer publishes 500
}

func (s *lossy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/register":
		w.Write([]byte(`{"url":"ws://` + r.Host + `/ws/` + strconv.Itoa(rand.IntN(1e9)) + `"}`))
	case strings.HasPrefix(r.URL.Path, "/ws/"):
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c.ReadMessage() // the topics
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
	case r.URL.Path == "/publish":
		var body struct{ Message string }
		if err := jsonDecode(r, &body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if s.fail && !strings.HasPrefix(body.Message, "-") {
			http.Error(w, `{"error":"boom"}`, 500)
			return
		}
		seq, _ := strconv.Atoi(body.Message[:strings.IndexByte(body.Message, ':')])
		times := 1
		if seq >= 0 && seq%10 == 0 {
			times = 0
		} else if seq > 0 && seq%7 == 0 {
			times = 2
		}
		s.mu.Lock()
		for _, c := range s.conns {
			for range times {
				c.WriteMessage(websocket.TextMessage, []byte(body.Message))
			}
		}
		s.mu.Unlock()
		w.Write([]byte(`{}`))
	default:
		http.NotFound(w, r)
	}
}

func TestLossesAndDuplicatesAreCounted(t *testing.T) {
	ts := httptest.NewServer(&lossy{})
	defer ts.Close()
	res := runT(t, Config{Scenario: Fanout, Servers: []string{ts.URL}, Connections: 5, Messages: 100, Drain: 300 * time.Millisecond})
	d := res.Delivery
	// seq 0..99: 10 multiples of 10 dropped; multiples of 7 not of 10
	// (7,14,...,98 minus 70) are 13 duplicated.
	if d.Expected != 500 || d.Lost != 5*10 || d.Received != 500-50 || d.Duplicates != 5*13 {
		t.Errorf("deliveries %+v, want 50 lost and 65 duplicates", d)
	}
	if !res.OK {
		t.Errorf("losses alone do not fail a run: %v", res.Failures)
	}
	if res.Memory.Known {
		t.Errorf("memory %+v", res.Memory)
	}
}

func TestServerErrorsFail(t *testing.T) {
	ts := httptest.NewServer(&lossy{fail: true})
	defer ts.Close()
	res := runT(t, Config{Scenario: Fanout, Servers: []string{ts.URL}, Connections: 3, Messages: 20, Drain: 100 * time.Millisecond})
	if res.OK || res.Publish.Failed != 20 || res.Publish.Accepted != 0 || res.Delivery.Expected != 0 {
		t.Errorf("publish %+v delivery %+v ok %v", res.Publish, res.Delivery, res.OK)
	}
	if res.Errors["publish: status 500 {\"error\":\"boom\"}"] != 20 {
		t.Errorf("errors %v", res.Errors)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Scenario: "nope", Servers: []string{"http://127.0.0.1:1"}},
		{Servers: nil},
		{Servers: []string{"ftp://x"}},
		{Servers: []string{"http://127.0.0.1:1"}, Connections: 1 << 30},
		{Servers: []string{"http://127.0.0.1:1"}, Rate: -1},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

func TestHist(t *testing.T) {
	var h Hist
	for v := int64(1); v <= 100000; v++ {
		h.Record(v)
	}
	s := h.Summary()
	for _, c := range []struct{ got, want float64 }{{s.P50ms, 50}, {s.P90ms, 90}, {s.P99ms, 99}, {s.P999ms, 99.9}, {s.MaxMs, 100}} {
		if c.got < c.want*0.99 || c.got > c.want*1.01 {
			t.Errorf("got %v, want %v within 1%%", c.got, c.want)
		}
	}
	if s.Count != 100000 {
		t.Errorf("count %d", s.Count)
	}
	for i := 0; i < histIndex(1<<50); i++ {
		if histValue(i) > histValue(i+1) || histIndex(uint64(histValue(i))) != i {
			t.Fatalf("bucket %d: value %d maps to %d", i, histValue(i), histIndex(uint64(histValue(i))))
		}
	}
}

func TestParse(t *testing.T) {
	seq, rest, ok := parseInt([]byte("12:1700:xx"))
	ts, _, ok2 := parseInt(rest)
	if !ok || !ok2 || seq != 12 || ts != 1700 {
		t.Errorf("%d %d %v %v", seq, ts, ok, ok2)
	}
	if s, _, ok := parseInt([]byte("-1:5:")); !ok || s != -1 {
		t.Errorf("probe: %d %v", s, ok)
	}
	for _, bad := range []string{"", "x", "12", "12x:", ":"} {
		if _, _, ok := parseInt([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestDialerSourceAddresses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("binding to any 127.0.0.0/8 address is Linux's")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	d := &dialer{src: []netip.Addr{netip.MustParseAddr("127.0.0.7")}}
	for _, addr := range []string{ln.Addr().String(), "localhost:" + port} {
		c, err := d.dial(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got := s.RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.7" {
			t.Errorf("%s: dialed from %s, want 127.0.0.7", addr, got)
		}
		s.Close()
		c.Close()
	}
}
