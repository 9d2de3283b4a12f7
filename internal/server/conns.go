package server

import (
	"context"
	"crypto/tls"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/relayhq/relay/internal/connlimit"
	"github.com/relayhq/relay/internal/logthrottle"
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

// The http.Server error log passes bursts of errorLogBurst lines, then one
// line per errorLogWindow/errorLogBurst: errorLogBurst per errorLogWindow.
const (
	errorLogBurst  = 10
	errorLogWindow = 10 * time.Second
)

// kindServerError is the http.Server error log's budget in the node's
// logthrottle.Throttle.
const kindServerError = "http_server_error"

// errorLog returns the http.Server's ErrorLog: its lines go to lt's logger
// at Warn, within the budget of kindServerError. net/http logs a line per
// failed TLS handshake and per broken request, so without a cap anyone can
// fill the log (and the disk) by opening connections and dropping them.
// Dropped lines are counted in lt's "log lines suppressed" summaries.
func errorLog(lt *logthrottle.Throttle) *log.Logger {
	lt.Limit(kindServerError, errorLogBurst, errorLogWindow/errorLogBurst)
	return log.New(limitedLog{lt}, "", 0)
}

type limitedLog struct{ lt *logthrottle.Throttle }

func (w limitedLog) Write(p []byte) (int, error) {
	ctx := context.Background()
	if w.lt.Allow(ctx, slog.LevelWarn, kindServerError) {
		w.lt.Logger().LogAttrs(ctx, slog.LevelWarn, strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
