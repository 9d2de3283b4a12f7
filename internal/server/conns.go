package server

import (
	"context"
	"crypto/tls"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/relayhq/relay/internal/connlimit"
)

// ConnStats returns the counters of the main listener's connection caps
// (Config.Conns). They are live from New on and count across Run.
func (s *Server) ConnStats() *connlimit.Stats { return &s.conns }

// tlsConfig is the main listener's TLS set-up: TLS 1.2 or later and, in
// TLS 1.2, only ECDHE key exchange with AEAD ciphers. Go still enables the
// CBC suites by default, and those are the ones padding-oracle and
// Lucky13-style attacks go after. TLS 1.3's suites are all AEAD and not
// configurable. HTTP/2 needs one of the AES-128-GCM suites, which are here.
func tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}

// The http.Server error log passes at most errorLogBurst lines per
// errorLogWindow.
const (
	errorLogBurst  = 10
	errorLogWindow = 10 * time.Second
)

// errorLog returns the http.Server's ErrorLog: its lines go to log at Warn,
// at most errorLogBurst per errorLogWindow. net/http logs a line per failed
// TLS handshake and per broken request, so without a cap anyone can fill
// the log (and the disk) by opening connections and dropping them. When
// lines are dropped, one line says so, and the first line of a later
// window says how many.
func errorLog(l *slog.Logger) *log.Logger {
	return newLimitedLog(l, time.Now)
}

func newLimitedLog(l *slog.Logger, now func() time.Time) *log.Logger {
	return log.New(&limitedLog{log: l, now: now}, "", 0)
}

type limitedLog struct {
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex
	start      time.Time // of the current window
	n          int       // lines in the current window
	suppressed int       // of them, dropped
}

func (w *limitedLog) Write(p []byte) (int, error) {
	now := w.now()
	w.mu.Lock()
	var dropped int
	if w.start.IsZero() || now.Sub(w.start) >= errorLogWindow {
		dropped = w.suppressed
		w.start, w.n, w.suppressed = now, 0, 0
	}
	w.n++
	pass, first := w.n <= errorLogBurst, w.n == errorLogBurst+1
	if !pass {
		w.suppressed++
	}
	w.mu.Unlock()
	ctx := context.Background()
	if dropped > 0 {
		w.log.Log(ctx, slog.LevelWarn, "http server error lines suppressed", "lines", dropped, "window", errorLogWindow)
	}
	switch {
	case pass:
		w.log.Log(ctx, slog.LevelWarn, strings.TrimSuffix(string(p), "\n"))
	case first:
		w.log.Log(ctx, slog.LevelWarn, "http server error log rate-limited; dropping lines until the window ends", "max_lines", errorLogBurst, "window", errorLogWindow)
	}
	return len(p), nil
}
