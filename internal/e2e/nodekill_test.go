package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/relaytest"
)

// relayBinary builds cmd/relay for one test.
func relayBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "relay")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/relayhq/relay/cmd/relay").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// process is a relay node running as its own process.
type process struct {
	cmd  *exec.Cmd
	addr string
	URL  string
}

var listening = regexp.MustCompile(`msg="relay listening" .*addr=(127\.0\.0\.1:\d+)`)

// startProcess runs relay with args on addr (127.0.0.1:0 for any port)
// until the test ends, and waits until /readyz answers 200.
func startProcess(t *testing.T, bin, addr string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-addr", addr, "-register-rate", "0", "-connect-rate", "0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd}
	t.Cleanup(func() { p.kill() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case p.addr = <-found:
	case <-time.After(20 * time.Second):
		t.Fatal("relay did not report its address within 20s")
	}
	p.URL = "http://" + p.addr
	relaytest.Eventually(t, "/readyz 200 on "+p.addr, func() bool {
		code, _, _ := request(t, http.MethodGet, p.URL+"/readyz", "")
		return code == http.StatusOK
	})
	return p
}

func (p *process) kill() {
	if p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

// resumer is a relay.v1 client that follows one topic and, when its node
// dies, resumes on another with since.
type resumer struct {
	t     *testing.T
	topic string
	id    string

	mu   sync.Mutex
	msgs []frameV1
	err  error // a failed dial
}

func (r *resumer) dial(addr string, since *frameV1) *websocket.Conn {
	d := websocket.Dialer{Subprotocols: []string{"relay.v1"}}
	ws, _, err := d.Dial("ws://"+addr+"/ws/"+r.id, nil)
	if err != nil {
		r.mu.Lock()
		r.err = err // reported by the test, not from this goroutine
		r.mu.Unlock()
		return nil
	}
	cmd := map[string]any{"type": "subscribe", "topics": []string{r.topic}}
	if since != nil {
		cmd["since"] = map[string]any{r.topic: map[string]any{"offset": *since.Offset, "epoch": *since.Epoch}}
	}
	b, _ := json.Marshal(cmd)
	ws.WriteMessage(websocket.TextMessage, b)
	return ws
}

// run reads until the connection fails, then resumes on next (once).
func (r *resumer) run(ws *websocket.Conn, next string, resumed chan<- bool) {
	for {
		ws.SetReadDeadline(time.Now().Add(time.Minute))
		_, b, err := ws.ReadMessage()
		if err != nil {
			if next == "" {
				return
			}
			r.mu.Lock()
			var last *frameV1
			if len(r.msgs) > 0 {
				last = &r.msgs[len(r.msgs)-1]
			}
			r.mu.Unlock()
			ws = r.dial(next, last)
			if ws == nil {
				return
			}
			next = ""
			continue
		}
		var f frameV1
		if json.Unmarshal(b, &f) != nil || f.Topic != r.topic {
			continue
		}
		if f.Type == "subscribed" && next == "" {
			resumed <- f.Recovered != nil && *f.Recovered
		}
		if f.Type == "message" {
			r.mu.Lock()
			r.msgs = append(r.msgs, f)
			r.mu.Unlock()
		}
	}
}

func TestClusterNodeKilledMidStream(t *testing.T) {
	bin := relayBinary(t)
	for name, start := range privateEngines {
		t.Run(name, func(t *testing.T) { testNodeKilled(t, bin, start(t).URL()) })
	}
}

func testNodeKilled(t *testing.T, bin, broker string) {
	var nodes []*process
	for i := range 3 {
		nodes = append(nodes, startProcess(t, bin, "127.0.0.1:0", "-broker", broker, "-node-id", fmt.Sprint("n", i)))
	}
	victim, survivor, other := nodes[0], nodes[1], nodes[2]
	cl, err := client.New(survivor.URL)
	if err != nil {
		t.Fatal(err)
	}
	const topic = "live"
	reg, err := cl.Register(ctxT(t), 42)
	if err != nil {
		t.Fatal(err)
	}
	r := &resumer{t: t, topic: topic, id: reg.ID}
	first := r.dial(victim.addr, nil)
	resumed := make(chan bool, 1)
	go r.run(first, survivor.addr, resumed)

	// User 43 is present on the victim only; user 100 watches from the
	// survivor.
	leaver, err := cl.Register(ctxT(t), 43)
	if err != nil {
		t.Fatal(err)
	}
	lc := dialV1(t, "ws://"+victim.addr+"/ws/"+leaver.ID)
	lc.subscribe(map[string]any{"topics": []string{"room"}})
	watcher, err := cl.Register(ctxT(t), 100)
	if err != nil {
		t.Fatal(err)
	}
	wc := dialV1(t, "ws://"+survivor.addr+"/ws/"+watcher.ID)
	wf := wc.subscribe(map[string]any{"topics": []string{"room"}, "presence": true})[0]
	if fmt.Sprint(wf.Users) != "[43]" {
		t.Fatalf("present before the watcher: %v, want [43]", wf.Users)
	}
	wc.expect("join") // its own

	time.Sleep(200 * time.Millisecond) // the first subscribe is in place
	pubs := []*client.Client{}
	for _, n := range []*process{survivor, other} {
		c, _ := client.New(n.URL)
		pubs = append(pubs, c)
	}
	var killedAt time.Time
	acked := map[uint64]string{}
	tick := time.NewTicker(time.Millisecond)
	for i := range 3000 {
		<-tick.C
		if i == 1000 {
			victim.kill()
			killedAt = time.Now()
		}
		msg := fmt.Sprint("m", i)
		res, err := pubs[i%2].Publish(ctxT(t), client.Publish{Topic: topic, Message: msg})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		acked[res.Offset] = msg
	}
	tick.Stop()
	select {
	case ok := <-resumed:
		if !ok {
			t.Fatal("the resume on the survivor was not recovered")
		}
	case <-time.After(10 * time.Second):
		r.mu.Lock()
		defer r.mu.Unlock()
		t.Fatalf("the client did not resume on the survivor (%v)", r.err)
	}
	tl := &tail{}
	relaytest.Eventually(t, "every message", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.msgs) >= len(acked)
	})
	r.mu.Lock()
	tl.msgs = append(tl.msgs, r.msgs...)
	r.mu.Unlock()
	tl.check(t, "client resumed after its node died", acked)

	// The dead node's presence is gone, with one leave, within ~15s.
	wc.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	f := wc.expect("leave")
	if *f.UserID != 43 {
		t.Fatalf("leave = %+v, want user 43", f)
	}
	t.Logf("leave for the dead node's user came %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	if d := time.Since(killedAt); d > 20*time.Second {
		t.Fatalf("leave came %s after the kill, want about 15s", d)
	}

	// Restarted on the same address with a new id, it serves again.
	restart := time.Now()
	again := startProcess(t, bin, victim.addr, "-broker", broker, "-node-id", "n0-again")
	t.Logf("restarted node ready in %s", time.Since(restart).Round(time.Millisecond))
	if code, _, body := request(t, http.MethodPost, again.URL+"/publish", `{"topic":"live","message":"back"}`); code != http.StatusOK {
		t.Fatalf("publish on the restarted node = %d %s", code, body)
	}
}
