package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/dashboard"
	"github.com/relayhq/relay/internal/natsbroker"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

const testKey = "dashboard-test-key-0123456789"

// chromium finds a headless-capable Chromium. Without one the browser test
// is skipped, unless RELAY_REQUIRE_BROWSER is set (as .ci/run does).
func chromium(t *testing.T) string {
	for _, p := range []string{os.Getenv("RELAY_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("RELAY_REQUIRE_BROWSER") != "" {
		t.Fatal("RELAY_REQUIRE_BROWSER is set but no chromium was found (apt-get install -y chromium)")
	}
	t.Skip("no chromium on PATH; set RELAY_REQUIRE_BROWSER=1 to make this a failure")
	return ""
}

// browser starts headless Chromium for the test, within ctx; do runs
// steps in its tab and fails the test on an error.
func browser(t *testing.T, ctx context.Context, bin string) (context.Context, func(...chromedp.Action[chromedp.Void])) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(t.TempDir()), chromedp.Flag("disable-quic", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	return bctx, func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatal(err)
		}
	}
}

// poll waits, at most 15 s, until the JavaScript expression expr holds.
func poll(what, expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
			return fmt.Errorf("waiting for %s (%s): %w", what, expr, err)
		}
		return nil
	})
}

// consoleProblems collects the errors, warnings and exceptions the page
// writes to its console from now on; the returned func stops collecting
// and returns them.
func consoleProblems(bctx context.Context) func() []string {
	var (
		mu       sync.Mutex
		problems []string
	)
	cctx, stop := context.WithCancel(bctx)
	messages := chromedp.Console(cctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				mu.Lock()
				problems = append(problems, m.String()+" at "+m.URL)
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return problems
	}
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := server.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// keyedServer starts a node whose API takes testKey.
func keyedServer(t *testing.T) *relaytest.Instance {
	t.Helper()
	au, err := auth.New(auth.Config{APIKeys: []string{testKey}})
	if err != nil {
		t.Fatal(err)
	}
	return relaytest.Start(t, server.Config{API: api.Config{Auth: au}, NodeID: "relay-1"})
}

// screenshotDir is where the test writes its screenshots: RELAY_SCREENSHOTS,
// or a new temporary directory that is kept so that it can be looked at.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("RELAY_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "relay-dashboard-screenshots-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDashboardInBrowser drives the main listener's dashboard in headless
// Chromium: a wrong key is refused, the right one logs in, a publish made
// over HTTP moves the live numbers, a publish from the console reaches a
// subscribed WebSocket client, a watched topic shows a message published
// over HTTP, history and presence are read, and the page writes no error
// to its console. It saves desktop (1280×800) and phone (390×844)
// screenshots.
func TestDashboardInBrowser(t *testing.T) {
	bin := chromium(t)
	in := keyedServer(t)
	c, err := client.New(in.URL, client.WithHeader("Authorization", "Bearer "+testKey))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bctx, do := browser(t, ctx, bin)

	// From the first page on, the page must write no error to its console.
	problems := consoleProblems(bctx)
	// A wrong key is refused with the form again.
	do(chromedp.Navigate(in.URL+"/dashboard/"),
		chromedp.WaitVisible(chromedp.ID("key")),
		chromedp.SetValue(chromedp.ID("key"), "not-the-key-at-all-000"),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("login-error")))

	do(chromedp.SetValue(chromedp.ID("key"), testKey),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("m-connections")),
		poll("the first live figures", `document.getElementById("live").textContent === "live"`))

	// Some audience, so that the top topics have rows.
	var conns []*client.Conn
	subscribe := func(topic string) *client.Conn {
		t.Helper()
		reg, err := c.Register(ctx, 7)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := c.Connect(ctx, reg.URL)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		if err := conn.SetTopics(ctx, topic); err != nil {
			t.Fatal(err)
		}
		if err := conn.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	for i := range 4 {
		subscribe("orders")
		if i < 2 {
			subscribe("chat")
		}
	}
	receiver := subscribe("from-console")
	do(poll("the top topics", `[...document.querySelectorAll("#top tbody td:first-child")].some(td => td.textContent === "orders")`),
		poll("the connections card", `document.getElementById("m-connections").textContent === "7"`))

	// A publish over HTTP moves the live numbers.
	var before string
	if before, err = chromedp.Run(bctx, chromedp.Text(chromedp.ID("m-publishes"))); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Publish(ctx, client.Publish{Topic: "orders", Message: fmt.Sprintf("order %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	do(poll("the publish count to move", fmt.Sprintf(`document.getElementById("m-publishes").textContent !== %q && Number(document.getElementById("m-publishes").textContent.replace(/\D/g, "")) >= 3`, before)),
		poll("the deliveries count", `Number(document.getElementById("m-deliveries").textContent.replace(/\D/g, "")) >= 12`))

	// A publish from the console reaches a subscribed WebSocket client.
	const fromConsole = `from the console <b>&amp;</b> "quoted" ✓`
	do(chromedp.SetValue(chromedp.ID("pub-topic"), "from-console"),
		chromedp.SetValue(chromedp.ID("pub-message"), fromConsole),
		chromedp.Click(chromedp.ID("pub-send")),
		poll("the publish result", `document.getElementById("pub-result").textContent.startsWith("published at offset 1")`))
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	got, err := receiver.Receive(rctx)
	rcancel()
	if err != nil || got != fromConsole {
		t.Fatalf("the subscribed client received %q, %v; want %q", got, err, fromConsole)
	}

	// A topic watched in the console shows a message published over HTTP,
	// as text.
	const watched = `<img src=x id=injected> live ✓`
	do(chromedp.Click(chromedp.CSS(`.tab[data-tab="watch"]`)),
		chromedp.SetValue(chromedp.ID("watch-topic"), "watched"),
		chromedp.Click(chromedp.ID("watch-start")),
		poll("the watch to subscribe", `document.getElementById("watch-status").dataset.watching === "watched"`))
	if _, err := c.Publish(ctx, client.Publish{Topic: "watched", Message: watched}); err != nil {
		t.Fatal(err)
	}
	do(poll("the watched message", fmt.Sprintf(`[...document.querySelectorAll("#watch-log .m")].some(e => e.textContent === %q)`, watched)),
		poll("no injected element", `document.getElementById("injected") === null`))

	// Desktop screenshot, with the chart drawn from a few seconds of load.
	for i := range 60 {
		c.Publish(ctx, client.Publish{Topic: "orders", Message: fmt.Sprintf("load %d", i)})
		if i%10 == 0 {
			c.Publish(ctx, client.Publish{Topic: "watched", Message: fmt.Sprintf("event %d", i)})
		}
		time.Sleep(50 * time.Millisecond)
	}
	do(poll("a few chart points", `document.getElementById("line-a").getAttribute("points").split(" ").length >= 2`))
	dir := screenshotDir(t)
	do(chromedp.EmulateViewport(1280, 800), chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`), chromedp.Sleep(300*time.Millisecond))
	shot := func(name string) {
		t.Helper()
		buf, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shot("dashboard-1280x800.png")

	// History and presence of the watched topic.
	do(chromedp.Click(chromedp.CSS(`.tab[data-tab="history"]`)),
		chromedp.SetValue(chromedp.ID("hist-topic"), "watched"),
		chromedp.Click(chromedp.ID("hist-read")),
		poll("the history", fmt.Sprintf(`[...document.querySelectorAll("#hist-table tbody td.mono")].some(e => e.textContent === %q)`, watched)),
		chromedp.Click(chromedp.CSS(`.tab[data-tab="presence"]`)),
		chromedp.SetValue(chromedp.ID("pres-topic"), "watched"),
		chromedp.Click(chromedp.ID("pres-read")),
		poll("the presence", `[...document.querySelectorAll("#pres-table tbody td:first-child")].some(e => e.textContent === "0")`))

	// Phone width: nothing but the tables that scroll sideways is wider
	// than the screen.
	do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(1), chromedp.EmulateMobile),
		chromedp.Click(chromedp.CSS(`.tab[data-tab="watch"]`)),
		poll("the phone layout", `window.innerWidth === 390`))
	wide, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("body *")]
		.filter(e => !e.closest(".table-scroll") && e.getBoundingClientRect().right > 391)
		.map(e => e.tagName + "#" + e.id + " " + Math.round(e.getBoundingClientRect().right))`))
	if err != nil || len(wide) > 0 {
		t.Errorf("at phone width, wider than the screen: %v %v", wide, err)
	}
	do(chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`), chromedp.Sleep(300*time.Millisecond))
	shot("dashboard-390x844.png")
	// Dark: the colours follow prefers-color-scheme.
	do(chromedp.EmulateViewport(1280, 800),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
			return err
		}),
		poll("the dark theme", `getComputedStyle(document.body).backgroundColor === "rgb(11, 15, 23)"`))
	shot("dashboard-dark-1280x800.png")
	t.Logf("screenshots in %s", dir)

	if p := problems(); len(p) > 0 {
		t.Errorf("the page wrote to its console:\n%s", strings.Join(p, "\n"))
	}
}

// TestDashboardAdminListener serves the dashboard on the admin listener
// without a login, and the main listener without API keys refuses it.
func TestDashboardAdminListener(t *testing.T) {
	admin := freeAddr(t)
	in := relaytest.Start(t, server.Config{AdminAddr: admin})
	var res *http.Response
	var err error
	relaytest.Eventually(t, "the admin listener", func() bool {
		res, err = http.Get("http://" + admin + "/dashboard/")
		return err == nil
	})
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(res.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("admin /dashboard/: %s, CSP %q", res.Status, res.Header.Get("Content-Security-Policy"))
	}
	res, err = http.Get(in.URL + "/dashboard/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("main /dashboard/ without keys: %s %s", res.Status, res.Header.Get("Content-Type"))
	}
	res, err = http.Post(in.URL+"/dashboard/api/publish", "application/json", strings.NewReader(`{"topic":"x","message":"y"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("main publish console without keys: %s", res.Status)
	}
}

// TestDashboardAdminInBrowser opens the admin listener's dashboard, which
// has no login, and publishes from its console to a subscribed client.
func TestDashboardAdminInBrowser(t *testing.T) {
	bin := chromium(t)
	admin := freeAddr(t)
	in := relaytest.Start(t, server.Config{AdminAddr: admin})
	relaytest.Eventually(t, "the admin listener", func() bool {
		res, err := http.Get("http://" + admin + "/dashboard/")
		if err == nil {
			res.Body.Close()
		}
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reg, err := in.Client.Register(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := in.Client.Connect(ctx, reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetTopics(ctx, "admin-topic"); err != nil {
		t.Fatal(err)
	}
	if err := conn.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	bctx, do := browser(t, ctx, bin)
	problems := consoleProblems(bctx)
	do(chromedp.Navigate("http://"+admin+"/dashboard/"),
		poll("the first live figures", `document.getElementById("live").textContent === "live"`),
		poll("no logout button", `document.getElementById("logout") === null`),
		chromedp.SetValue(chromedp.ID("pub-topic"), "admin-topic"),
		chromedp.SetValue(chromedp.ID("pub-message"), "from the admin console"),
		chromedp.Click(chromedp.ID("pub-send")),
		poll("the publish result", `document.getElementById("pub-result").textContent.startsWith("published")`),
		chromedp.Click(chromedp.CSS(`.tab[data-tab="watch"]`)),
		chromedp.SetValue(chromedp.ID("watch-topic"), "admin-topic"),
		chromedp.Click(chromedp.ID("watch-start")),
		poll("the watch to subscribe", `document.getElementById("watch-status").dataset.watching === "admin-topic"`))
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	got, err := conn.Receive(rctx)
	rcancel()
	if err != nil || got != "from the admin console" {
		t.Fatalf("the subscribed client received %q, %v", got, err)
	}
	if p := problems(); len(p) > 0 {
		t.Errorf("the page wrote to its console:\n%s", strings.Join(p, "\n"))
	}
}

// Both networked engines let every dashboard list every node.
var (
	_ dashboard.Peers = (*redisbroker.Broker)(nil)
	_ dashboard.Peers = (*natsbroker.Broker)(nil)
)

// TestDashboardOnEngines runs the dashboard of a node in a two-node
// cluster on each networked engine: the snapshot names the engine and the
// node, its Nodes list both nodes (the engines implement dashboard.Peers),
// and a console watch socket on one node receives a message published on
// the other.
func TestDashboardOnEngines(t *testing.T) {
	for name, url := range relaytest.Engines {
		t.Run(name, func(t *testing.T) {
			au, err := auth.New(auth.Config{APIKeys: []string{testKey}})
			if err != nil {
				t.Fatal(err)
			}
			nodes := relaytest.Cluster(t, 2, url, server.Config{API: api.Config{Auth: au}})
			base := nodes[0].URL
			jar, _ := cookiejar.New(nil)
			hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
			res, err := hc.PostForm(base+"/dashboard/login", neturl.Values{"key": {testKey}})
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK { // after the 303
				t.Fatalf("login: %s", res.Status)
			}
			var snap struct {
				Node, Engine string
				Networked    bool
			}
			getJSON(t, hc, "GET", base+"/dashboard/api/snapshot", &snap)
			if snap.Engine != name || !snap.Networked || snap.Node == "" {
				t.Fatalf("snapshot %+v", snap)
			}
			// Both nodes show in Nodes once each shared its summary
			// (every 2 s; the snapshot is resampled every second).
			var want []string
			for _, n := range nodes {
				want = append(want, n.Server.Engine.(interface{ NodeID() string }).NodeID())
			}
			slices.Sort(want)
			var listed []string
			deadline := time.Now().Add(15 * time.Second)
			for !slices.Equal(listed, want) {
				if time.Now().After(deadline) {
					t.Fatalf("snapshot nodes %v, want %v", listed, want)
				}
				time.Sleep(100 * time.Millisecond)
				var s struct{ Nodes []dashboard.NodeSummary }
				getJSON(t, hc, "GET", base+"/dashboard/api/snapshot", &s)
				listed = listed[:0]
				for _, n := range s.Nodes {
					listed = append(listed, n.Node)
				}
			}
			var w struct{ Path, Protocol string }
			getJSON(t, hc, "POST", base+"/dashboard/api/watch", &w)
			u, _ := neturl.Parse(base)
			h := http.Header{"Origin": {base}}
			for _, ck := range jar.Cookies(&neturl.URL{Scheme: "http", Host: u.Host, Path: "/dashboard/"}) {
				h.Add("Cookie", ck.Name+"="+ck.Value)
			}
			d := websocket.Dialer{Subprotocols: []string{w.Protocol}, HandshakeTimeout: 10 * time.Second}
			conn, _, err := d.Dial("ws://"+u.Host+w.Path, h)
			if err != nil {
				t.Fatalf("watch socket: %v", err)
			}
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			conn.WriteJSON(map[string]any{"type": "subscribe", "id": 1, "topics": []string{"across"}})
			var f struct{ Type, Topic, Message string }
			if err := conn.ReadJSON(&f); err != nil || f.Type != "subscribed" {
				t.Fatalf("subscribe: %+v %v", f, err)
			}
			other, err := client.New(nodes[1].URL, client.WithHeader("Authorization", "Bearer "+testKey))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := other.Publish(context.Background(), client.Publish{Topic: "across", Message: "from node 1"}); err != nil {
				t.Fatal(err)
			}
			for f.Type != "message" {
				if err := conn.ReadJSON(&f); err != nil {
					t.Fatalf("waiting for the message: %v", err)
				}
			}
			if f.Topic != "across" || f.Message != "from node 1" {
				t.Fatalf("message %+v", f)
			}
		})
	}
}

func getJSON(t *testing.T, hc *http.Client, method, u string, v any) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	req.Header.Set(dashboard.CSRFHeader, "1")
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s", method, u, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
