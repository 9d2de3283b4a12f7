package deploy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/relayhq/relay/client"
)

// The proxy tests run each committed proxy configuration, adapted to
// free loopback ports and a test certificate, in front of a real Relay,
// and check that a WebSocket client receives, through the proxy, a
// message published through the proxy. The adaptation is a list of
// substitutions each of which must apply, so that an edit to a committed
// file cannot silently leave the test checking something else.

// sub replaces every match of re in a configuration; it must match.
type sub struct{ re, repl string }

func render(t *testing.T, name, src string, subs []sub) string {
	t.Helper()
	for _, s := range subs {
		re := regexp.MustCompile(s.re)
		if !re.MatchString(src) {
			t.Fatalf("%s: nothing matches %q: the committed file changed, update the test's substitutions", name, s.re)
		}
		src = re.ReplaceAllString(src, s.repl)
	}
	return src
}

// onlyFirst keeps the first match of re (replaced by repl) and deletes
// the others: the committed files list three nodes, the test runs one.
func onlyFirst(t *testing.T, name, src, re, repl string) string {
	t.Helper()
	n := 0
	out := regexp.MustCompile(re).ReplaceAllStringFunc(src, func(m string) string {
		n++
		if n > 1 {
			return ""
		}
		return regexp.MustCompile(re).ReplaceAllString(m, repl)
	})
	if n < 2 {
		t.Fatalf("%s: want several upstream nodes matching %q, found %d", name, re, n)
	}
	return out
}

// proxyEnv is what every proxy test shares: a Relay behind it, free
// ports, and a certificate for 127.0.0.1.
type proxyEnv struct {
	dir                  string
	relayAddr, key       string
	httpPort, httpsPort  string
	cert, certKey, combo string
	pool                 *x509.CertPool
}

func newProxyEnv(t *testing.T) *proxyEnv {
	t.Helper()
	bin := relayBinary(t)
	e := &proxyEnv{dir: t.TempDir(), key: randomKey(t), httpPort: freePort(t), httpsPort: freePort(t)}
	e.relayAddr = "127.0.0.1:" + freePort(t)
	e.writeCert(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	// As relay.env.example says for a node behind a proxy.
	env := []string{
		"RELAY_ADDR=" + e.relayAddr,
		"RELAY_API_KEYS=" + e.key,
		"RELAY_PUBLIC_URL=https://127.0.0.1:" + e.httpsPort,
		"RELAY_RATE_EXEMPT=127.0.0.1/32",
		"RELAY_LOG_FORMAT=json",
	}
	startRelay(t, ctx, []string{bin, "serve"}, env)
	waitHTTP(t, "http://"+e.relayAddr+"/health", nil)
	return e
}

func (e *proxyEnv) writeCert(t *testing.T) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "relay proxy test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	e.cert, e.certKey, e.combo = filepath.Join(e.dir, "cert.pem"), filepath.Join(e.dir, "key.pem"), filepath.Join(e.dir, "combined.pem")
	for path, data := range map[string][]byte{e.cert: certPEM, e.certKey: keyPEM, e.combo: append(append([]byte{}, certPEM...), keyPEM...)} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.pool = x509.NewCertPool()
	e.pool.AppendCertsFromPEM(certPEM)
}

func (e *proxyEnv) tlsConfig() *tls.Config { return &tls.Config{RootCAs: e.pool} }

// startProxy starts a proxy in its own process group; the test's end
// stops it with SIGTERM (so that nginx's master stops its workers), then
// SIGKILLs the group if it lingers.
func startProxy(t *testing.T, name string, args []string, env []string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s's output:\n%s", name, b)
		}
	})
}

// waitHTTP GETs url until it answers 200.
func waitHTTP(t *testing.T, url string, tc *tls.Config) {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: nil}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s never answered 200: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkThroughProxy is what a deployment must do through the proxy:
// register (with the API key), get a wss:// URL that points at the proxy,
// connect over TLS with the relay.v1-less tutorial protocol, and receive a
// message published through the proxy; /readyz answers through it; the
// plain HTTP port redirects to HTTPS.
func (e *proxyEnv) checkThroughProxy(t *testing.T, redirect bool) {
	t.Helper()
	base := "https://127.0.0.1:" + e.httpsPort
	waitHTTP(t, base+"/readyz", e.tlsConfig())
	c, err := client.New(base,
		client.WithHTTPClient(&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: e.tlsConfig(), Proxy: nil}}),
		client.WithDialer(&websocket.Dialer{TLSClientConfig: e.tlsConfig(), HandshakeTimeout: 10 * time.Second}),
		client.WithHeader("Authorization", "Bearer "+e.key))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg, err := c.Register(ctx, 7)
	if err != nil {
		t.Fatalf("register through the proxy: %v", err)
	}
	if !strings.HasPrefix(reg.URL, "wss://127.0.0.1:"+e.httpsPort+"/ws/") {
		t.Fatalf("register handed out %q: want a wss:// URL through the proxy (RELAY_PUBLIC_URL)", reg.URL)
	}
	conn, err := c.Connect(ctx, reg.URL)
	if err != nil {
		t.Fatalf("WebSocket upgrade through the proxy: %v", err)
	}
	defer conn.Close()
	if err := conn.Sync(ctx); err != nil {
		t.Fatalf("ping/pong through the proxy: %v", err)
	}
	for i, msg := range []string{"through the proxy", strings.Repeat("x", 60<<10)} {
		if _, err := c.Publish(ctx, client.Publish{Topic: "cats", Message: msg}); err != nil {
			t.Fatalf("publish through the proxy: %v", err)
		}
		got, err := conn.Receive(ctx)
		if err != nil || got != msg {
			t.Fatalf("message %d through the proxy: %.40q, %v", i, got, err)
		}
	}
	if redirect {
		hc := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := hc.Get("http://127.0.0.1:" + e.httpPort + "/register")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMovedPermanently || !strings.HasPrefix(resp.Header.Get("Location"), "https://") {
			t.Errorf("plain HTTP: %s, Location %q: want a 301 to https://", resp.Status, resp.Header.Get("Location"))
		}
	}
}

// lookProxy finds a proxy binary, or skips (fails when required).
func lookProxy(t *testing.T, name, require string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if require != "" && os.Getenv(require) != "" {
		t.Fatalf("%s is not installed and %s is set", name, require)
	}
	t.Skipf("%s is not installed (apt-get install %s)", name, name)
	return ""
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestProxyTimeouts: the committed configurations keep idle WebSockets
// longer than Relay's ping interval and idle timeout (25 s, 60 s), or
// the proxy would cut live sockets.
func TestProxyTimeouts(t *testing.T) {
	n := readFile(t, "nginx.conf")
	for _, d := range []string{"proxy_read_timeout", "proxy_send_timeout"} {
		m := regexp.MustCompile(`(?m)^\s*` + d + `\s+(\d+)s;`).FindStringSubmatch(n)
		if m == nil {
			t.Errorf("nginx.conf: no %s: nginx's default (60s) is at Relay's idle timeout", d)
		} else if s := atoi(m[1]); s <= 60 {
			t.Errorf("nginx.conf: %s %ss: want more than Relay's 60s idle timeout", d, m[1])
		}
	}
	for _, want := range []string{"proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;", "proxy_set_header Connection $connection_upgrade;", "proxy_buffering off;"} {
		if !strings.Contains(n, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
	h := readFile(t, "haproxy.cfg")
	if m := regexp.MustCompile(`(?m)^\s*timeout tunnel\s+(\d+)([smh])`).FindStringSubmatch(h); m == nil || m[2] == "s" && atoi(m[1]) <= 60 {
		t.Errorf("haproxy.cfg: want a timeout tunnel above 60s, got %v", m)
	}
	if !strings.Contains(h, "option httpchk GET /readyz") {
		t.Error("haproxy.cfg: no /readyz health check")
	}
	if !strings.Contains(readFile(t, "Caddyfile"), "health_uri /readyz") {
		t.Error("Caddyfile: no /readyz health check")
	}
}

func atoi(s string) int {
	n := 0
	fmt.Sscan(s, &n)
	return n
}

// TestNginx runs deploy/nginx.conf (nginx -t, then nginx) in front of
// Relay. Skipped when nginx is not installed, unless RELAY_REQUIRE_NGINX
// is set.
func TestNginx(t *testing.T) {
	nginx := lookProxy(t, "nginx", "RELAY_REQUIRE_NGINX")
	e := newProxyEnv(t)
	site := readFile(t, "nginx.conf")
	site = onlyFirst(t, "nginx.conf", site, `(?m)^(\s*)server 10\.0\.0\.\d+:8000( [^;]*)?;\n`, "${1}server "+e.relayAddr+"${2};\n")
	site = render(t, "nginx.conf", site, []sub{
		{`(?m)^\s*listen \[::\]:\d+[^;]*;\n`, ""}, // loopback only in a test
		{`(?m)^(\s*)listen 80;`, "${1}listen 127.0.0.1:" + e.httpPort + ";"},
		{`(?m)^(\s*)listen 443 ssl;`, "${1}listen 127.0.0.1:" + e.httpsPort + " ssl;"},
		{`(?m)^(\s*ssl_certificate)\s+\S+;`, "${1} " + e.cert + ";"},
		{`(?m)^(\s*ssl_certificate_key)\s+\S+;`, "${1} " + e.certKey + ";"},
	})
	prefix := t.TempDir()
	if err := os.WriteFile(filepath.Join(prefix, "relay.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	// The main configuration a distribution's nginx.conf provides,
	// reduced to a private prefix.
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the temporary files are the test's own
	}
	main := fmt.Sprintf(`%s
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 512; }
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[2]s/relay.conf;
}
`, user, prefix)
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{nginx, "-p", prefix, "-e", filepath.Join(prefix, "error.log"), "-c", conf}
	if out, err := exec.Command(args[0], append(args[1:], "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n%s", err, out, site)
	}
	startProxy(t, "nginx", append(args, "-g", "daemon off;"), os.Environ())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nginx error.log:\n%s", readFile(t, filepath.Join(prefix, "error.log")))
		}
	})
	e.checkThroughProxy(t, true)
}

// TestHAProxy runs deploy/haproxy.cfg (haproxy -c, then haproxy) in
// front of Relay, with its /readyz checks. Skipped when haproxy is not
// installed, unless RELAY_REQUIRE_HAPROXY is set.
func TestHAProxy(t *testing.T) {
	haproxy := lookProxy(t, "haproxy", "RELAY_REQUIRE_HAPROXY")
	e := newProxyEnv(t)
	cfg := readFile(t, "haproxy.cfg")
	cfg = onlyFirst(t, "haproxy.cfg", cfg, `(?m)^(\s*)server (\S+) 10\.0\.0\.\d+:8000(.*)\n`, "${1}server ${2} "+e.relayAddr+"${3}\n")
	cfg = render(t, "haproxy.cfg", cfg, []sub{
		{`(?m)^\s*bind :::\d+.*\n`, ""},
		{`(?m)^(\s*)bind :80\b`, "${1}bind 127.0.0.1:" + e.httpPort},
		{`(?m)^(\s*)bind :443 ssl crt \S+`, "${1}bind 127.0.0.1:" + e.httpsPort + " ssl crt " + e.combo},
		{`(?m)^(\s*maxconn) 50000`, "${1} 1000"}, // within a test's open-file limit
	})
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(haproxy, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, cfg)
	}
	startProxy(t, "haproxy", []string{haproxy, "-db", "-f", path}, os.Environ())
	e.checkThroughProxy(t, true)
}

// TestCaddy runs deploy/Caddyfile (caddy validate, then caddy run) in
// front of Relay, with a test certificate instead of Let's Encrypt.
// Skipped when caddy is not installed, unless RELAY_REQUIRE_CADDY is set.
func TestCaddy(t *testing.T) {
	caddy := lookProxy(t, "caddy", "RELAY_REQUIRE_CADDY")
	e := newProxyEnv(t)
	cf := readFile(t, "Caddyfile")
	cf = render(t, "Caddyfile", cf, []sub{
		{`(?m)^relay\.example\.com \{`, "https://127.0.0.1:" + e.httpsPort + " {\n\tbind 127.0.0.1\n\ttls " + e.cert + " " + e.certKey},
		{`(?m)^(\s*)reverse_proxy 10\.0\.0\.11:8000 10\.0\.0\.12:8000 10\.0\.0\.13:8000 \{`, "${1}reverse_proxy " + e.relayAddr + " {"},
	})
	// No admin endpoint, no ACME, no port 80: a test's own ports only.
	cf = "{\n\tadmin off\n\tauto_https disable_redirects\n\thttp_port " + e.httpPort + "\n\thttps_port " + e.httpsPort + "\n}\n\n" + cf
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cf), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	v := exec.Command(caddy, "validate", "--config", path, "--adapter", "caddyfile")
	v.Env = env
	if out, err := v.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s\n%s", err, out, cf)
	}
	startProxy(t, "caddy", []string{caddy, "run", "--config", path, "--adapter", "caddyfile"}, env)
	e.checkThroughProxy(t, false)
}
