package main

import (
	"crypto"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/ratelimit"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/server"
)

// serveConfig is everything `relay serve` can be told, before it becomes
// the packages' Configs.
type serveConfig struct {
	Addr             string
	PublicURL        string
	AllowedOrigins   string
	LogFormat        string
	LogLevel         string
	MaxBody          byteSize
	MaxMessage       byteSize
	MaxTopics        int
	MaxTopicLength   int
	MaxRegistrations int
	SendQueue        byteSize
	SocketSendBuffer byteSize
	PingInterval     time.Duration
	IdleTimeout      time.Duration
	MessageTimeout   time.Duration
	WriteTimeout     time.Duration
	RegistrationTTL  time.Duration
	ReconnectGrace   time.Duration
	ShutdownTimeout  time.Duration
	History          historyRules
	HistoryBudget    byteSize
	MaxStreams       int
	IdempotencyTTL   time.Duration
	Metrics          bool
	MetricsNeedKey   bool
	AdminAddr        string
	APIKeys          string
	APIKeysFile      string
	Insecure         bool
	TokenSecret      string
	TokenPublicKey   string
	TokenJWKS        string
	TokenIssuer      string
	TokenAudience    string
	MaxConnections   int
	MaxHTTPConns     int
	MaxHTTPPerAddr   int
	RegisterRate     float64
	ConnectRate      float64
	MessageRate      float64
	RateExempt       string
	TLSCert          string
	TLSKey           string
	Broker           string
	NodeID           string
	PrintConfig      bool
	Pusher           pusherSettings

	ConfigFile string
	// sources says where each setting's value came from, by flag name:
	// "default", "FILE:LINE", the variable's name, or "-flag".
	sources map[string]string
	// Warnings are mistakes that do not stop the server (a RELAY_*
	// variable that is no setting).
	Warnings []string
}

// option is one setting: a flag, the environment variable behind its
// default, and the built-in default. Secret ones are redacted when printed.
type option struct {
	flag, env, def, usage string
	value                 flag.Value
	secret                bool
}

func options(c *serveConfig) []option {
	return append([]option{
		{"addr", "RELAY_ADDR", "127.0.0.1:8000", "listen address (host:port)", (*strValue)(&c.Addr), false},
		{"broker", "RELAY_BROKER", "memory", "engine holding streams, registrations and presence: memory (one node, nothing to run), redis://[user:pass@]host:port/db (or rediss://) or nats://host:port to run several nodes on one Redis or NATS JetStream", (*strValue)(&c.Broker), false},
		{"node-id", "RELAY_NODE_ID", "", "this node's name among the nodes sharing a broker, shown in logs, metrics and /readyz; empty: random per start", (*strValue)(&c.NodeID), false},
		{"public-url", "RELAY_PUBLIC_URL", "", "base URL clients reach this server at (ws://, wss://, http:// or https://, optional path prefix); default: each request's Host", (*strValue)(&c.PublicURL), false},
		{"allowed-origins", "RELAY_ALLOWED_ORIGINS", "*", "comma-separated browser origins allowed by CORS and WebSocket upgrades, or *", (*strValue)(&c.AllowedOrigins), false},
		{"log-format", "RELAY_LOG_FORMAT", "text", "log format: text or json", (*strValue)(&c.LogFormat), false},
		{"log-level", "RELAY_LOG_LEVEL", "info", "log level: debug, info, warn or error", (*strValue)(&c.LogLevel), false},
		{"max-body", "RELAY_MAX_BODY", "1MiB", "largest HTTP request body", &c.MaxBody, false},
		{"max-message", "RELAY_MAX_MESSAGE", "64KiB", "largest published message and largest message a client may send", &c.MaxMessage, false},
		{"max-topics", "RELAY_MAX_TOPICS", "128", "most topics one connection may subscribe to", (*intValue)(&c.MaxTopics), false},
		{"max-topic-length", "RELAY_MAX_TOPIC_LENGTH", "256", "longest topic name, in bytes", (*intValue)(&c.MaxTopicLength), false},
		{"max-registrations", "RELAY_MAX_REGISTRATIONS", "1000000", "most registrations held at once", (*intValue)(&c.MaxRegistrations), false},
		{"send-queue", "RELAY_SEND_QUEUE", "1MiB", "bytes that may wait to be sent to one connection before it is closed as a slow consumer (4002)", &c.SendQueue, false},
		{"socket-send-buffer", "RELAY_SOCKET_SEND_BUFFER", "0", "SO_SNDBUF for each WebSocket (the kernel's share of a slow client's backlog); 0 keeps the kernel's autotuning", &c.SocketSendBuffer, false},
		{"ping-interval", "RELAY_PING_INTERVAL", "25s", "how often each connection is pinged", (*durValue)(&c.PingInterval), false},
		{"idle-timeout", "RELAY_IDLE_TIMEOUT", "60s", "close a connection nothing was heard from for this long (4003); pongs count", (*durValue)(&c.IdleTimeout), false},
		{"message-timeout", "RELAY_MESSAGE_TIMEOUT", "10s", "longest a client may take to send one message, from its first byte to its last (1008 past it); bounds how long a trickled message is held", (*durValue)(&c.MessageTimeout), false},
		{"write-timeout", "RELAY_WRITE_TIMEOUT", "10s", "drop a connection whose socket accepts nothing for this long", (*durValue)(&c.WriteTimeout), false},
		{"registration-ttl", "RELAY_REGISTRATION_TTL", "10m", "forget a registration that never connects after this long", (*durValue)(&c.RegistrationTTL), false},
		{"reconnect-grace", "RELAY_RECONNECT_GRACE", "30s", "keep a registration this long after its socket closes so the same URL can reconnect; 0 forgets it at once", (*durValue)(&c.ReconnectGrace), false},
		{"shutdown-timeout", "RELAY_SHUTDOWN_TIMEOUT", "10s", "on SIGINT/SIGTERM, time allowed to finish requests and close sockets", (*durValue)(&c.ShutdownTimeout), false},
		{"history", "RELAY_HISTORY", "100/5m/1MiB", "history kept per topic, as size/ttl[/bytes]; add prefix=size/ttl[/bytes] entries, comma-separated, for topics starting with prefix (longest wins), e.g. 100/5m,chat.=1000/1h,tmp.=0", &c.History, false},
		{"history-budget", "RELAY_HISTORY_BUDGET", "64MiB", "history kept across all topics (payloads, topic names and 128 bytes per message); past it the oldest messages of the least recently published topics are dropped", &c.HistoryBudget, false},
		{"max-streams", "RELAY_MAX_STREAMS", "100000", "most topics with a stream (offsets, epoch, history) at once; past it the least recently published topic's stream is dropped and its next publish starts a new epoch", (*intValue)(&c.MaxStreams), false},
		{"idempotency-window", "RELAY_IDEMPOTENCY_WINDOW", "2m", "how long a publish's idempotency_key is remembered", (*durValue)(&c.IdempotencyTTL), false},
		{"metrics", "RELAY_METRICS", "true", "serve Prometheus metrics at /metrics on the main listener", (*boolValue)(&c.Metrics), false},
		{"admin-addr", "RELAY_ADMIN_ADDR", "", "listen address for the dashboard (no login), pprof and /metrics: keep it private; empty: off", (*strValue)(&c.AdminAddr), false},
		{"api-keys", "RELAY_API_KEYS", "", "comma-separated API keys (16+ characters each) that server-side calls must send as Authorization: Bearer <key>", (*strValue)(&c.APIKeys), true},
		{"api-keys-file", "RELAY_API_KEYS_FILE", "", "file with more API keys, one per line", (*strValue)(&c.APIKeysFile), false},
		{"insecure", "RELAY_INSECURE", "false", "serve the open API (no API key) on a non-loopback address anyway", (*boolValue)(&c.Insecure), false},
		{"metrics-require-key", "RELAY_METRICS_REQUIRE_KEY", "false", "make /metrics on the main listener take the API key", (*boolValue)(&c.MetricsNeedKey), false},
		{"token-secret", "RELAY_TOKEN_SECRET", "", "secret (32+ bytes) verifying HS256 connect tokens for GET /ws?token=", (*strValue)(&c.TokenSecret), true},
		{"token-public-key", "RELAY_TOKEN_PUBLIC_KEY", "", "PEM file of an RSA or Ed25519 public key verifying RS256/EdDSA connect tokens", (*strValue)(&c.TokenPublicKey), false},
		{"token-jwks", "RELAY_TOKEN_JWKS", "", "JSON Web Key Set file of RSA/Ed25519 keys verifying connect tokens (by kid)", (*strValue)(&c.TokenJWKS), false},
		{"token-issuer", "RELAY_TOKEN_ISSUER", "", "required iss of connect tokens", (*strValue)(&c.TokenIssuer), false},
		{"token-audience", "RELAY_TOKEN_AUDIENCE", "", "required aud of connect tokens", (*strValue)(&c.TokenAudience), false},
		{"max-connections", "RELAY_MAX_CONNECTIONS", "0", "most WebSocket connections (503 past it); 0: the open-file limit minus 256", (*intValue)(&c.MaxConnections), false},
		{"max-http-connections", "RELAY_MAX_HTTP_CONNECTIONS", "1024", "most connections that are not WebSockets (reading a request, running one, or idle in keep-alive); past it the longest idle, then the oldest still sending its request, is closed to make room", (*intValue)(&c.MaxHTTPConns), false},
		{"max-http-connections-per-address", "RELAY_MAX_HTTP_CONNECTIONS_PER_ADDRESS", "256", "most such connections from one client address (IPv6 by /64), -rate-exempt ranges excepted; 0: no per-address cap (e.g. behind a proxy)", (*intValue)(&c.MaxHTTPPerAddr), false},
		{"register-rate", "RELAY_REGISTER_RATE", "20", "registrations per second per client address without an API key, i.e. in the open mode, loopback excepted (bursts of twice that; 429 past it); 0: no limit", (*floatValue)(&c.RegisterRate), false},
		{"connect-rate", "RELAY_CONNECT_RATE", "50", "WebSocket upgrades per second per client address (bursts of twice that; 429 past it); 0: no limit", (*floatValue)(&c.ConnectRate), false},
		{"rate-exempt", "RELAY_RATE_EXEMPT", "", "comma-separated address ranges the per-address rates do not apply to", (*strValue)(&c.RateExempt), false},
		{"message-rate", "RELAY_MESSAGE_RATE", "50", "frames per second one client may send, each fragment, ping and pong counted (bursts of twice that; closed with 4004 past it); 0: no limit", (*floatValue)(&c.MessageRate), false},
		{"tls-cert", "RELAY_TLS_CERT", "", "certificate file (PEM) to serve HTTPS and wss:// with", (*strValue)(&c.TLSCert), false},
		{"tls-key", "RELAY_TLS_KEY", "", "private key file (PEM) for -tls-cert", (*strValue)(&c.TLSKey), false},
	}, pusherOptions(&c.Pusher)...)
}

// parseServe reads the settings of `relay serve`; out gets the usage on
// -h.
func parseServe(args []string, getenv func(string) string, out io.Writer) (*serveConfig, error) {
	c, _, err := parseSettings("relay serve", args, getenv, out, 0)
	return c, err
}

// environ lists the process's environment, for the warning about RELAY_*
// variables that are no setting (tests replace it).
var environ = os.Environ

// usageError is a mistake on the command line itself (an unknown flag, a
// flag's bad value): reported on one line with a pointer to -h.
type usageError struct{ error }

// parseSettings reads the defaults, the config file (-config /
// RELAY_CONFIG), the environment and the flags, each overriding the one
// before, validates the result and notes where each value came from. It
// allows up to maxArgs positional arguments and returns them.
func parseSettings(name string, args []string, getenv func(string) string, out io.Writer, maxArgs int) (*serveConfig, []string, error) {
	c := &serveConfig{sources: map[string]string{}}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var errs []error
	opts := options(c)
	byFlag := map[string]option{}
	for _, o := range opts {
		if err := o.value.Set(o.def); err != nil {
			panic("bad default for " + o.flag + ": " + err.Error())
		}
		byFlag[o.flag] = o
		c.sources[o.flag] = "default"
		fs.Var(o.value, o.flag, o.usage+" (env "+o.env+")")
	}
	c.ConfigFile = getenv("RELAY_CONFIG")
	if f, ok := configFlag(args); ok {
		c.ConfigFile = f
	}
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "YAML file of settings, keys named like these flags without the dash (env RELAY_CONFIG); flags and RELAY_* variables override it")
	fs.BoolVar(&c.PrintConfig, "print-config", false, "print the configuration in force, and where each value came from, and exit")
	if c.ConfigFile != "" {
		settings, err := readConfigFile(c.ConfigFile)
		if err != nil {
			errs = append(errs, err)
		}
		names := make([]string, 0, len(opts))
		for _, o := range opts {
			names = append(names, o.flag)
		}
		for _, s := range settings {
			o, ok := byFlag[s.key]
			if !ok {
				msg := fmt.Sprintf("%s:%d: unknown setting %q", c.ConfigFile, s.line, s.key)
				if near := closest(s.key, names); near != "" {
					msg += fmt.Sprintf("; did you mean %s?", near)
				} else {
					msg += "; keys are the flags of relay serve -h, without the dash"
				}
				errs = append(errs, errors.New(msg))
				continue
			}
			if err := o.value.Set(s.value); err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %s %q: %v", c.ConfigFile, s.line, s.key, s.value, err))
				continue
			}
			c.sources[o.flag] = fmt.Sprintf("%s:%d", c.ConfigFile, s.line)
		}
	}
	for _, o := range opts {
		if v := getenv(o.env); v != "" {
			if err := o.value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", o.env, v, err))
				continue
			}
			c.sources[o.flag] = o.env
		}
	}
	fs.Usage = func() {} // the flag package calls it on every error, too
	if err := parseInterspersed(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(out, "Usage: %s\n\nSettings come from flags, then RELAY_* environment variables, then the\nconfig file (-config), then the defaults below.\n\n", synopsis[name])
			fs.SetOutput(out)
			fs.PrintDefaults()
			return nil, nil, err
		}
		return nil, nil, usageError{err}
	}
	fs.Visit(func(f *flag.Flag) {
		if _, ok := byFlag[f.Name]; ok {
			c.sources[f.Name] = "-" + f.Name
		}
	})
	if fs.NArg() > maxArgs {
		return nil, nil, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(maxArgs))}
	}
	c.Warnings = unknownEnv(environ(), opts)
	errs = append(errs, c.validate()...)
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return c, fs.Args(), nil
}

// synopsis is the usage line of each command that takes the server's
// settings.
var synopsis = map[string]string{
	"relay serve":       "relay [serve] [flags]: serve the Relay API",
	"relay checkconfig": "relay checkconfig FILE [flags]: check a config file, with the environment and flags on top, without serving",
	"relay checktoken":  "relay checktoken TOKEN [flags]: say whether the server so configured accepts a connect token, and why not\n(TOKEN - reads it from stdin)",
}

// configFlag finds -config among the flags before they are parsed: the
// file's values must be in place first so that the flags override them.
func configFlag(args []string) (string, bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue // an argument: flags may follow it
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "config" {
			continue
		}
		if hasValue {
			return value, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func (c *serveConfig) validate() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		bad("-addr / RELAY_ADDR %q: want host:port", c.Addr)
	}
	if c.PublicURL != "" {
		if _, err := parsePublicURL(c.PublicURL); err != nil {
			bad("-public-url / RELAY_PUBLIC_URL: %v", err)
		}
	}
	if err := checkBroker(c.Broker); err != nil {
		bad("-broker / RELAY_BROKER: %v", err)
	}
	if c.NodeID != "" && !validNodeID(c.NodeID) {
		bad("-node-id / RELAY_NODE_ID %q: use 1 to 64 letters, digits, '.', '_' or '-'", c.NodeID)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("-log-format / RELAY_LOG_FORMAT %q: want text or json", c.LogFormat)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("-log-level / RELAY_LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel)
	}
	positive := []struct {
		name string
		v    int64
	}{
		{"-max-body / RELAY_MAX_BODY", int64(c.MaxBody)},
		{"-max-message / RELAY_MAX_MESSAGE", int64(c.MaxMessage)},
		{"-max-topics / RELAY_MAX_TOPICS", int64(c.MaxTopics)},
		{"-max-topic-length / RELAY_MAX_TOPIC_LENGTH", int64(c.MaxTopicLength)},
		{"-max-registrations / RELAY_MAX_REGISTRATIONS", int64(c.MaxRegistrations)},
		{"-send-queue / RELAY_SEND_QUEUE", int64(c.SendQueue)},
		{"-ping-interval / RELAY_PING_INTERVAL", int64(c.PingInterval)},
		{"-idle-timeout / RELAY_IDLE_TIMEOUT", int64(c.IdleTimeout)},
		{"-message-timeout / RELAY_MESSAGE_TIMEOUT", int64(c.MessageTimeout)},
		{"-write-timeout / RELAY_WRITE_TIMEOUT", int64(c.WriteTimeout)},
		{"-registration-ttl / RELAY_REGISTRATION_TTL", int64(c.RegistrationTTL)},
		{"-shutdown-timeout / RELAY_SHUTDOWN_TIMEOUT", int64(c.ShutdownTimeout)},
		{"-idempotency-window / RELAY_IDEMPOTENCY_WINDOW", int64(c.IdempotencyTTL)},
		{"-history-budget / RELAY_HISTORY_BUDGET", int64(c.HistoryBudget)},
		{"-max-streams / RELAY_MAX_STREAMS", int64(c.MaxStreams)},
		{"-max-http-connections / RELAY_MAX_HTTP_CONNECTIONS", int64(c.MaxHTTPConns)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			bad("%s must be greater than zero", p.name)
		}
	}
	if c.ReconnectGrace < 0 {
		bad("-reconnect-grace / RELAY_RECONNECT_GRACE must not be negative (0 forgets a registration when its socket closes)")
	}
	if c.IdleTimeout > 0 && c.IdleTimeout <= c.PingInterval {
		bad("-idle-timeout / RELAY_IDLE_TIMEOUT (%s) must be longer than -ping-interval / RELAY_PING_INTERVAL (%s), or live clients would time out between pings", c.IdleTimeout, c.PingInterval)
	}
	if c.MaxMessage > 0 && c.MaxBody > 0 && c.MaxBody <= c.MaxMessage {
		bad("-max-body / RELAY_MAX_BODY (%s) must be larger than -max-message / RELAY_MAX_MESSAGE (%s), or no publish could carry the largest message", c.MaxBody, c.MaxMessage)
	}
	if c.HistoryBudget > 0 && c.HistoryBudget < c.MaxMessage+c.MaxBody {
		bad("-history-budget / RELAY_HISTORY_BUDGET (%s) must be at least -max-message plus -max-body (%s), or one large publish would empty every topic's history", c.HistoryBudget, c.MaxMessage+c.MaxBody)
	}
	switch {
	case c.TLSCert != "" && c.TLSKey == "" || c.TLSCert == "" && c.TLSKey != "":
		bad("-tls-cert / RELAY_TLS_CERT and -tls-key / RELAY_TLS_KEY go together")
	case c.TLSCert != "":
		// Loaded here, not when the listener starts: an unreadable file
		// must stop the start, not end a server that said it listens.
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			bad("-tls-cert / RELAY_TLS_CERT and -tls-key / RELAY_TLS_KEY: %v", err)
		}
	}
	for _, o := range splitList(c.AllowedOrigins) {
		if err := checkOrigin(o); err != nil {
			bad("-allowed-origins / RELAY_ALLOWED_ORIGINS: %v", err)
		}
	}
	if c.TokenPublicKey != "" && c.TokenJWKS != "" {
		bad("-token-public-key / RELAY_TOKEN_PUBLIC_KEY and -token-jwks / RELAY_TOKEN_JWKS: give one or the other")
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"-register-rate / RELAY_REGISTER_RATE", c.RegisterRate}, {"-connect-rate / RELAY_CONNECT_RATE", c.ConnectRate}, {"-message-rate / RELAY_MESSAGE_RATE", c.MessageRate}} {
		if r.v < 0 {
			bad("%s must not be negative", r.name)
		}
	}
	if c.MaxConnections < 0 {
		bad("-max-connections / RELAY_MAX_CONNECTIONS must not be negative")
	}
	if c.MaxHTTPPerAddr < 0 {
		bad("-max-http-connections-per-address / RELAY_MAX_HTTP_CONNECTIONS_PER_ADDRESS must not be negative (0: no per-address cap)")
	}
	if _, err := parsePrefixes(c.RateExempt); err != nil {
		bad("-rate-exempt / RELAY_RATE_EXEMPT: %v", err)
	}
	if _, err := c.Pusher.apps(); err != nil {
		bad("%v", err)
	}
	if c.SendQueue > 0 && c.SendQueue < c.MaxMessage+14 {
		bad("-send-queue / RELAY_SEND_QUEUE (%s) must hold at least one frame of -max-message / RELAY_MAX_MESSAGE (%s)", c.SendQueue, c.MaxMessage)
	}
	return errs
}

// security builds the credential checks from the settings, reading the
// key files. Errors name the setting.
func (c *serveConfig) security() (*auth.Auth, error) {
	var ac auth.Config
	for _, k := range strings.Split(c.APIKeys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			ac.APIKeys = append(ac.APIKeys, k)
		}
	}
	if c.APIKeysFile != "" {
		b, err := os.ReadFile(c.APIKeysFile)
		if err != nil {
			return nil, fmt.Errorf("-api-keys-file / RELAY_API_KEYS_FILE: %v", err)
		}
		for _, k := range strings.Split(string(b), "\n") {
			if k = strings.TrimSpace(k); k != "" && !strings.HasPrefix(k, "#") {
				ac.APIKeys = append(ac.APIKeys, k)
			}
		}
	}
	ac.TokenSecret = []byte(c.TokenSecret)
	switch {
	case c.TokenPublicKey != "":
		b, err := os.ReadFile(c.TokenPublicKey)
		if err == nil {
			var k crypto.PublicKey
			if k, err = auth.ParsePublicKeyPEM(b); err == nil {
				ac.TokenKeys = map[string]crypto.PublicKey{"": k}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("-token-public-key / RELAY_TOKEN_PUBLIC_KEY: %v", err)
		}
	case c.TokenJWKS != "":
		b, err := os.ReadFile(c.TokenJWKS)
		if err == nil {
			ac.TokenKeys, err = auth.ParseJWKS(b)
		}
		if err != nil {
			return nil, fmt.Errorf("-token-jwks / RELAY_TOKEN_JWKS: %v", err)
		}
	}
	ac.Issuer, ac.Audience = c.TokenIssuer, c.TokenAudience
	a, err := auth.New(ac)
	if err != nil {
		return nil, fmt.Errorf("credentials (RELAY_API_KEYS, RELAY_TOKEN_*): %v", err)
	}
	return a, nil
}

// loopback reports whether addr listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// fileLimit returns the process's open-file limit (Go raises the soft
// limit to the hard one at start).
func fileLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<20 {
		return 1 << 20
	}
	return max(int(r.Cur), 512)
}

// parsePublicURL accepts ws, wss, http and https URLs with a host and an
// optional path prefix.
func parsePublicURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return nil, fmt.Errorf("%q: scheme must be ws, wss, http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%q: only scheme, host, port and path are allowed", s)
	}
	return u, nil
}

// serverConfig turns the validated settings into the packages' Configs.
func (c *serveConfig) serverConfig() server.Config {
	var sc server.Config
	sc.Hub.RegistrationTTL = c.RegistrationTTL
	sc.Hub.ReconnectGrace = c.ReconnectGrace
	if c.ReconnectGrace == 0 {
		sc.Hub.ReconnectGrace = -1 // the hub's "forget at once"
	}
	sc.Hub.MaxRegistrations = c.MaxRegistrations
	sc.Hub.MaxTopics = c.MaxTopics
	sc.Hub.MaxTopicLength = c.MaxTopicLength
	sc.WS.SendQueueBytes = int(c.SendQueue)
	sc.WS.MaxMessageBytes = int(c.MaxMessage)
	sc.WS.SocketSendBuffer = int(c.SocketSendBuffer)
	sc.WS.PingInterval = c.PingInterval
	sc.WS.IdleTimeout = c.IdleTimeout
	sc.WS.MessageTimeout = c.MessageTimeout
	sc.WS.WriteTimeout = c.WriteTimeout
	if c.PublicURL != "" {
		sc.API.PublicURL, _ = parsePublicURL(c.PublicURL) // validated
	}
	sc.API.MaxBodyBytes = int64(c.MaxBody)
	sc.API.MaxMessageBytes = int(c.MaxMessage)
	sc.API.AllowedOrigins = splitList(c.AllowedOrigins)
	sc.Memory.History = c.History
	sc.Memory.HistoryBudget = int64(c.HistoryBudget)
	sc.Memory.MaxStreams = c.MaxStreams
	sc.Memory.IdempotencyWindow = c.IdempotencyTTL
	sc.Metrics = c.Metrics
	sc.API.MetricsNeedKey = c.MetricsNeedKey
	exempt, _ := parsePrefixes(c.RateExempt) // validated
	// Registration is rate-limited where anyone may register: the open
	// mode. With API keys only trusted backends register, in bulk, bounded
	// by -max-registrations. The local backend of the open mode (loopback)
	// registers freely.
	if c.RegisterRate > 0 && c.APIKeys == "" && c.APIKeysFile == "" {
		loop := append(slices.Clone(exempt), netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
		sc.API.RegisterLimit = ratelimit.New(c.RegisterRate, int(2*c.RegisterRate), loop, 100_000)
	}
	if c.ConnectRate > 0 {
		sc.API.ConnectLimit = ratelimit.New(c.ConnectRate, int(2*c.ConnectRate), exempt, 100_000)
	}
	sc.WS.MessageRate = c.MessageRate
	sc.Conns.MaxPending = c.MaxHTTPConns
	sc.Conns.MaxPerAddress = c.MaxHTTPPerAddr
	if c.MaxHTTPPerAddr == 0 {
		sc.Conns.MaxPerAddress = -1 // connlimit's "no cap"
	}
	sc.Conns.Exempt = exempt
	sc.WS.MaxConnections = c.MaxConnections
	if sc.WS.MaxConnections == 0 {
		sc.WS.MaxConnections = fileLimit() - 256
	}
	sc.TLSCert, sc.TLSKey = c.TLSCert, c.TLSKey
	sc.AdminAddr = c.AdminAddr
	sc.ShutdownTimeout = c.ShutdownTimeout
	sc.Pusher, _ = c.Pusher.apps() // validated
	sc.PusherPathPrefix = c.Pusher.PathPrefix
	sc.NodeID = c.NodeID
	if sc.NodeID == "" {
		sc.NodeID = redisbroker.NewNodeID()
	}
	return sc
}

// print writes the settings in force as RELAY_* assignments, each with
// where its value came from; derived values (the connection limit taken
// from the open-file limit) are shown as they will apply. Secrets are
// redacted.
func (c *serveConfig) print(w io.Writer) {
	fmt.Fprintln(w, "# Relay settings in force: flags > RELAY_* environment > config file > defaults.")
	if c.ConfigFile != "" {
		fmt.Fprintf(w, "# config file: %s\n", c.ConfigFile)
	}
	type line struct{ assign, note string }
	var lines []line
	width := 0
	for _, o := range options(c) {
		v, note := o.value.String(), c.sources[o.flag]
		switch {
		case o.secret && v != "":
			v = "<redacted>"
		case o.flag == "broker":
			v = redisbroker.Redact(v) // the URL's password
		case o.flag == "max-connections" && c.MaxConnections == 0:
			v = strconv.Itoa(fileLimit() - 256)
			note += fmt.Sprintf(" (0: the open-file limit %d minus 256)", fileLimit())
		case o.flag == "node-id" && v == "":
			note += " (empty: a random id per start)"
		}
		l := line{o.env + "=" + v, note}
		width = max(width, len(l.assign))
		lines = append(lines, l)
	}
	for _, l := range lines {
		fmt.Fprintf(w, "%-*s  # %s\n", width, l.assign, l.note)
	}
}

func (c *serveConfig) logger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Flag values.

type strValue string

func (v *strValue) Set(s string) error { *v = strValue(s); return nil }
func (v *strValue) String() string     { return string(*v) }

type intValue int

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not an integer")
	}
	*v = intValue(n)
	return nil
}
func (v *intValue) String() string { return strconv.Itoa(int(*v)) }

type durValue time.Duration

func (v *durValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("not a duration (e.g. 30s, 10m)")
	}
	*v = durValue(d)
	return nil
}
func (v *durValue) String() string { return time.Duration(*v).String() }

type boolValue bool

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("not a boolean (true or false)")
	}
	*v = boolValue(b)
	return nil
}
func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }

// byteSize is a size in bytes: a number, possibly with a fraction, and an
// optional unit. KB, MB, GB are powers of 1000 and KiB, MiB, GiB powers of
// 1024, as everywhere else; case does not matter (1gb = 1GB), since
// refusing one spelling of an unambiguous unit helps nobody.
type byteSize int64

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1000, "kb": 1000, "kib": 1 << 10, "ki": 1 << 10,
	"m": 1000_000, "mb": 1000_000, "mib": 1 << 20, "mi": 1 << 20,
	"g": 1000_000_000, "gb": 1000_000_000, "gib": 1 << 30, "gi": 1 << 30,
}

const sizeHelp = "not a size: write a number with an optional unit, e.g. 65536, 64KiB, 1.5MiB or 1GB (KB, MB, GB are powers of 1000; KiB, MiB, GiB of 1024; any case)"

func (v *byteSize) Set(s string) error {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	whole, frac, hasFrac := strings.Cut(num, ".")
	if !ok || whole == "" || hasFrac && (frac == "" || strings.Contains(frac, ".")) {
		return errors.New(sizeHelp)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f*float64(mult) > 1<<40 {
		return errors.New(sizeHelp + "; at most 1TiB")
	}
	n := f * float64(mult)
	if n != math.Trunc(n) {
		return fmt.Errorf("%q is not a whole number of bytes", s)
	}
	*v = byteSize(n)
	return nil
}

func (v byteSize) String() string {
	n := int64(v)
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

// historyRules is the -history setting: size/ttl[/bytes] for every topic,
// and prefix=size/ttl[/bytes] for topics starting with prefix.
type historyRules []memorybroker.HistoryRule

func (v *historyRules) Set(s string) error {
	var rules []memorybroker.HistoryRule
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		prefix, spec, found := strings.Cut(item, "=")
		if !found {
			prefix, spec = "", item
		}
		if seen[prefix] {
			return fmt.Errorf("prefix %q given twice", prefix)
		}
		seen[prefix] = true
		r := memorybroker.HistoryRule{Prefix: prefix, TTL: time.Minute, Bytes: 1 << 20}
		parts := strings.Split(spec, "/")
		n, err := strconv.Atoi(parts[0])
		if err != nil || n < 0 || len(parts) > 3 {
			return fmt.Errorf("%q: want size/ttl[/bytes], e.g. 100/5m/1MiB", item)
		}
		r.Size = n
		if len(parts) > 1 {
			if r.TTL, err = time.ParseDuration(parts[1]); err != nil || r.TTL <= 0 {
				return fmt.Errorf("%q: ttl must be a positive duration", item)
			}
		}
		if len(parts) > 2 {
			var b byteSize
			if err := b.Set(parts[2]); err != nil || b <= 0 {
				return fmt.Errorf("%q: bytes must be a positive size", item)
			}
			r.Bytes = int(b)
		}
		rules = append(rules, r)
	}
	if !seen[""] {
		return fmt.Errorf("no default: start with size/ttl for all topics, e.g. 100/5m")
	}
	*v = rules
	return nil
}

func (v *historyRules) String() string {
	parts := make([]string, 0, len(*v))
	for _, r := range *v {
		p := fmt.Sprintf("%d/%s/%s", r.Size, r.TTL, byteSize(r.Bytes))
		if r.Prefix != "" {
			p = r.Prefix + "=" + p
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ",")
}

type floatValue float64

func (v *floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		// NaN compares false with everything, so it would pass every
		// range check and disable the limit it sets.
		return fmt.Errorf("not a finite number")
	}
	*v = floatValue(f)
	return nil
}
func (v *floatValue) String() string { return strconv.FormatFloat(float64(*v), 'f', -1, 64) }

// parsePrefixes reads a comma-separated list of address ranges (CIDR, or
// single addresses).
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			a, err := netip.ParseAddr(item)
			if err != nil {
				return nil, fmt.Errorf("%q is not an address or range", item)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address range", item)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// splitList splits a comma-separated setting, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// checkOrigin accepts * or an origin exactly as browsers send it in the
// Origin header (scheme://host[:port], lower case, no path), since the
// allowlist is compared byte for byte: "example.com" would never match
// and refuse every browser.
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("%q is not an origin: write it as browsers send it, with its scheme, e.g. https://%s", o, strings.TrimPrefix(strings.TrimPrefix(o, "//"), "*."))
	}
	switch {
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return fmt.Errorf("%q: an origin is scheme://host[:port] with no path, e.g. %s://%s", o, u.Scheme, u.Host)
	case strings.ToLower(o) != o:
		return fmt.Errorf("%q: browsers send origins in lower case; write %s", o, strings.ToLower(o))
	case u.Scheme == "https" && u.Port() == "443", u.Scheme == "http" && u.Port() == "80":
		return fmt.Errorf("%q: browsers omit the default port; write %s://%s", o, u.Scheme, u.Hostname())
	case strings.Contains(u.Host, "*"):
		return fmt.Errorf("%q: wildcards are not supported; list each origin, or use *", o)
	}
	return nil
}

// checkBroker validates -broker: memory, or a Redis or NATS URL.
func checkBroker(b string) error {
	if b == "memory" {
		return nil
	}
	u, err := url.Parse(b)
	if err != nil {
		return fmt.Errorf("%q is not memory or a URL: %v", redisbroker.Redact(b), err)
	}
	switch u.Scheme {
	case "redis", "rediss", "nats":
	default:
		return fmt.Errorf("%q: want memory, redis://host:port/db, rediss://host:port/db or nats://host:port", redisbroker.Redact(b))
	}
	if u.Host == "" {
		return fmt.Errorf("%q names no host:port", redisbroker.Redact(b))
	}
	return nil
}

func validNodeID(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}
