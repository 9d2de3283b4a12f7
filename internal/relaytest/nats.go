package relaytest

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
)

// NATS is a private nats-server with JetStream for tests that stop or
// restart it.
type NATS struct {
	t    testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
}

// StartNATS starts nats-server -js on a free loopback port until the test
// ends, storing in a temporary directory.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	if _, err := exec.LookPath("nats-server"); err != nil {
		t.Fatalf("nats-server is not installed (.ci/run installs it): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &NATS{t: t, port: ln.Addr().(*net.TCPAddr).Port, dir: t.TempDir()}
	ln.Close()
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// URL is the server's nats:// URL.
func (n *NATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// Start (re)starts the server on its port, keeping its store, and waits
// until it accepts connections.
func (n *NATS) Start() {
	n.t.Helper()
	n.cmd = exec.Command("nats-server", "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-sd", n.dir)
	if err := n.cmd.Start(); err != nil {
		n.t.Fatalf("starting nats-server: %v", err)
	}
	Eventually(n.t, "nats-server answering", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// Stop kills the server and waits until it is gone.
func (n *NATS) Stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Kill()
	n.cmd.Wait()
	n.cmd = nil
}
