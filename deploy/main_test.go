package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var binDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "relay-deploy-test")
	if err != nil {
		panic(err)
	}
	binDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
	buildOut  []byte
)

// relayBinary builds ../cmd/relay once for the tests that run a server.
func relayBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	bin := filepath.Join(binDir, "relay")
	buildOnce.Do(func() {
		buildOut, buildErr = exec.Command("go", "build", "-o", bin, "../cmd/relay").CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build ../cmd/relay: %v\n%s", buildErr, buildOut)
	}
	return bin
}
