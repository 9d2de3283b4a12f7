package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayhq/relay/client"
)

// TestBinarySIGTERM builds the real binary, serves the seed API on a free
// port, and checks that SIGTERM closes connected sockets with 1001 and
// exits 0 within the shutdown timeout.
func TestBinarySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "relay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-addr", "127.0.0.1:0", "-shutdown-timeout", "5s", "-log-format", "json")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// The startup log line names the address the kernel picked.
	sc := bufio.NewScanner(stderr)
	var addr string
	for addr == "" && sc.Scan() {
		if m := regexp.MustCompile(`"msg":"relay listening".*"addr":"([^"]+)"`).FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
	}
	if addr == "" {
		t.Fatal("no listening line in the log")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	c, err := client.New("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.Register(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(reg.URL, "ws://"+addr+"/ws/") {
		t.Fatalf("register URL %q does not use the request's host %s", reg.URL, addr)
	}
	conn, err := c.Connect(ctx, reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Receive(ctx)
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != 1001 {
		t.Fatalf("socket ended with %v, want close 1001", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("relay exited with %v, want 0", err)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("shutdown took %v, over the 5s timeout", d)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("still accepting connections after exit")
	}
}
