package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unit is a systemd unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			section = l[1 : len(l)-1]
			u[section] = map[string][]string{}
		case section == "":
			t.Fatalf("%s:%d: %q outside a section", path, n, l)
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || strings.HasSuffix(l, `\`) {
				t.Fatalf("%s:%d: %q is not Key=value on one line", path, n, l)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

// get is the key's value in force: the last one given.
func (u unit) get(section, key string) (string, bool) {
	v := u[section][key]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

// TestSystemdUnit checks relay.service's keys: how Relay is started and
// stopped, its file-descriptor limit, and the sandbox.
func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, "relay.service")
	want := map[string]string{
		"Type":                    "simple",
		"ExecStart":               "/usr/local/bin/relay serve",
		"EnvironmentFile":         "/etc/relay/relay.env",
		"Restart":                 "on-failure",
		"KillSignal":              "SIGTERM",
		"DynamicUser":             "yes",
		"CapabilityBoundingSet":   "",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"RestrictNamespaces":      "yes",
		"RestrictSUIDSGID":        "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
	}
	for k, w := range want {
		if v, ok := u.get("Service", k); !ok || v != w {
			t.Errorf("[Service] %s=%q, want %q", k, v, w)
		}
	}
	if got := u["Service"]["SystemCallFilter"]; len(got) == 0 || got[0] != "@system-service" {
		t.Errorf("SystemCallFilter=%q: want @system-service first", got)
	}
	if _, ok := u.get("Service", "AmbientCapabilities"); ok {
		t.Error("AmbientCapabilities set: Relay needs none on ports >= 1024 (it is a comment for ports below)")
	}
	if v, _ := u.get("Service", "RestartPreventExitStatus"); v != "2" {
		t.Errorf("RestartPreventExitStatus=%q: want 2 (a configuration mistake, not worth restarting on)", v)
	}
	n, err := strconv.Atoi(func() string { v, _ := u.get("Service", "LimitNOFILE"); return v }())
	if err != nil || n < 16384 {
		t.Errorf("LimitNOFILE: %v %d: want a number well above systemd's 1024 (one descriptor per WebSocket)", err, n)
	}
	// systemd must wait longer than Relay's graceful stop before SIGKILL.
	stop, _ := u.get("Service", "TimeoutStopSec")
	stopD, err := time.ParseDuration(stop)
	if err != nil {
		t.Fatalf("TimeoutStopSec=%q: %v (use a Go-parsable value like 20s)", stop, err)
	}
	shutdown := 10 * time.Second // -shutdown-timeout's default
	env := parseEnvExample(t)
	if v := env["RELAY_SHUTDOWN_TIMEOUT"]; v != "" {
		if shutdown, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	if stopD < shutdown+5*time.Second {
		t.Errorf("TimeoutStopSec=%v: want at least 5s more than the shutdown timeout %v", stopD, shutdown)
	}
	if v, _ := u.get("Install", "WantedBy"); v != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%q", v)
	}
}

// parseEnvExample reads relay.env.example, its commented-out RELAY_*
// lines included, as KEY=value.
func parseEnvExample(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("relay.env.example")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		commented := strings.HasPrefix(l, "#")
		l = strings.TrimPrefix(l, "#")
		if !regexp.MustCompile(`^RELAY_[A-Z_]+=`).MatchString(l) {
			if !commented && l != "" {
				t.Fatalf("relay.env.example:%d: %q is neither a comment nor RELAY_*=value", i+1, l)
			}
			continue
		}
		k, v, _ := strings.Cut(l, "=")
		if strings.ContainsAny(v, `"'$`) {
			t.Errorf("relay.env.example:%d: %q: no quotes or $ (systemd and docker --env-file read them differently)", i+1, l)
		}
		env[k] = v
	}
	return env
}

// TestEnvExample runs `relay -print-config` with every setting of
// relay.env.example, the commented ones too, an API key filled in: Relay
// accepts all of them.
func TestEnvExample(t *testing.T) {
	bin := relayBinary(t)
	env := parseEnvExample(t)
	if v, ok := env["RELAY_API_KEYS"]; !ok || v != "" {
		t.Errorf("RELAY_API_KEYS=%q in the example: want it present and empty (no key is shipped)", v)
	}
	help, _ := exec.Command(bin, "serve", "-h").CombinedOutput()
	for k := range env {
		if !regexp.MustCompile(`\b` + k + `\b`).Match(help) {
			t.Errorf("relay.env.example sets %s, which relay serve -h does not list", k)
		}
	}
	env["RELAY_API_KEYS"] = strings.Repeat("k", 24)
	delete(env, "RELAY_API_KEYS_FILE")                  // a file only the service has
	env["RELAY_BROKER"] = "memory"                      // checked, not dialled, by -print-config; keep it offline
	env["RELAY_TOKEN_SECRET"] = strings.Repeat("s", 32) // empty in the example
	cmd := exec.Command(bin, "-print-config")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("relay -print-config with relay.env.example: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "RELAY_ADDR=0.0.0.0:8000") {
		t.Errorf("-print-config does not show the example's RELAY_ADDR:\n%s", out)
	}
}

// TestSystemdAnalyze runs `systemd-analyze verify` (no warning allowed)
// and `systemd-analyze security --offline` on relay.service, with
// ExecStart pointed at a binary that exists here.
func TestSystemdAnalyze(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("RELAY_REQUIRE_SYSTEMD") != "" {
			t.Fatal("systemd-analyze is not installed and RELAY_REQUIRE_SYSTEMD is set")
		}
		t.Skip("systemd-analyze is not installed (apt-get install systemd); the unit's keys are still checked by TestSystemdUnit")
	}
	src, err := os.ReadFile("relay.service")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(src), "/usr/local/bin/relay", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The exposure score, 0 (locked down) to 10; --threshold is in tenths.
	out, err = exec.Command(sa, "security", "--offline=true", "--threshold=20", path).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for relay\.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Errorf("systemd-analyze security: %v (want an exposure level of 2.0 or less)\n%s", err, out)
	} else {
		t.Logf("systemd-analyze security: exposure %s", m[1])
	}
}
