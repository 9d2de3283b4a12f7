package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/relaytest"
	"github.com/relayhq/relay/internal/server"
)

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

const page = `<!doctype html>
<title>relay browser test</title>
<script>
const relay = %q;
function report(s) { return fetch("/report", {method: "POST", body: s}); }
async function main() {
  // Content-Type: application/json makes this a preflighted CORS request.
  const r = await fetch(relay + "/register", {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({user_id: 5}),
  });
  const {url} = await r.json();
  await report("url:" + url);
  const ws = new WebSocket(url);
  ws.onopen = () => { ws.send(JSON.stringify({topics: ["browser"]})); report("open"); };
  ws.onmessage = (e) => report("message:" + e.data);
  ws.onclose = (e) => report("close:" + e.code);
}
main().catch((e) => report("error:" + e));
</script>`

// TestBrowserOnAnotherOrigin loads a page from one origin that registers
// with Relay on another (CORS with preflight), connects a WebSocket and
// receives a publish, all in headless Chromium.
func TestBrowserOnAnotherOrigin(t *testing.T) {
	bin := chromium(t)
	reports := make(chan string, 16)
	var relay string // set before the page server starts
	pageSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/report" {
			b, _ := io.ReadAll(r.Body)
			reports <- string(b)
			return
		}
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, page, relay)
	}))
	pageOrigin := "http://" + pageSrv.Listener.Addr().String()
	in := relaytest.Start(t, server.Config{API: api.Config{AllowedOrigins: []string{pageOrigin}}})
	relay = in.URL
	pageSrv.Start()
	defer pageSrv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-first-run", "--disable-quic", "--user-data-dir="+t.TempDir(), pageSrv.URL+"/")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	await := func(prefix string) string {
		t.Helper()
		for {
			select {
			case r := <-reports:
				if strings.HasPrefix(r, "error:") || strings.HasPrefix(r, "close:") {
					t.Fatalf("page reported %q while waiting for %q", r, prefix)
				}
				if strings.HasPrefix(r, prefix) {
					return strings.TrimPrefix(r, prefix)
				}
			case <-ctx.Done():
				t.Fatalf("page never reported %q", prefix)
			}
		}
	}
	if u := await("url:"); !strings.HasPrefix(u, "ws://"+in.Addr+"/ws/") {
		t.Fatalf("page got socket URL %q", u)
	}
	await("open")
	relaytest.Eventually(t, "the page to subscribe", func() bool { return in.Server.Hub.Subscribers("browser") == 1 })
	res, err := in.Client.Publish(ctx, client.Publish{Topic: "browser", Message: "hello, browser ✓"})
	if err != nil || res.Delivered != 1 {
		t.Fatalf("publish: %+v %v", res, err)
	}
	if m := await("message:"); m != "hello, browser ✓" {
		t.Fatalf("page received %q", m)
	}
}
