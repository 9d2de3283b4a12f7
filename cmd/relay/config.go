package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/relayhq/relay/internal/memorybroker"
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
	WriteTimeout     time.Duration
	RegistrationTTL  time.Duration
	ReconnectGrace   time.Duration
	ShutdownTimeout  time.Duration
	History          historyRules
	IdempotencyTTL   time.Duration
	Metrics          bool
	AdminAddr        string
	PrintConfig      bool
}

// option is one setting: a flag, the environment variable behind its
// default, and the built-in default.
type option struct {
	flag, env, def, usage string
	value                 flag.Value
}

func options(c *serveConfig) []option {
	return []option{
		{"addr", "RELAY_ADDR", "127.0.0.1:8000", "listen address (host:port)", (*strValue)(&c.Addr)},
		{"public-url", "RELAY_PUBLIC_URL", "", "base URL clients reach this server at (ws://, wss://, http:// or https://, optional path prefix); default: each request's Host", (*strValue)(&c.PublicURL)},
		{"allowed-origins", "RELAY_ALLOWED_ORIGINS", "*", "comma-separated browser origins allowed by CORS and WebSocket upgrades, or *", (*strValue)(&c.AllowedOrigins)},
		{"log-format", "RELAY_LOG_FORMAT", "text", "log format: text or json", (*strValue)(&c.LogFormat)},
		{"log-level", "RELAY_LOG_LEVEL", "info", "log level: debug, info, warn or error", (*strValue)(&c.LogLevel)},
		{"max-body", "RELAY_MAX_BODY", "1MiB", "largest HTTP request body", &c.MaxBody},
		{"max-message", "RELAY_MAX_MESSAGE", "64KiB", "largest published message and largest message a client may send", &c.MaxMessage},
		{"max-topics", "RELAY_MAX_TOPICS", "128", "most topics one connection may subscribe to", (*intValue)(&c.MaxTopics)},
		{"max-topic-length", "RELAY_MAX_TOPIC_LENGTH", "256", "longest topic name, in bytes", (*intValue)(&c.MaxTopicLength)},
		{"max-registrations", "RELAY_MAX_REGISTRATIONS", "1000000", "most registrations held at once", (*intValue)(&c.MaxRegistrations)},
		{"send-queue", "RELAY_SEND_QUEUE", "1MiB", "bytes that may wait to be sent to one connection before it is closed as a slow consumer (4002)", &c.SendQueue},
		{"socket-send-buffer", "RELAY_SOCKET_SEND_BUFFER", "0", "SO_SNDBUF for each WebSocket (the kernel's share of a slow client's backlog); 0 keeps the kernel's autotuning", &c.SocketSendBuffer},
		{"ping-interval", "RELAY_PING_INTERVAL", "25s", "how often each connection is pinged", (*durValue)(&c.PingInterval)},
		{"idle-timeout", "RELAY_IDLE_TIMEOUT", "60s", "close a connection nothing was heard from for this long (4003); pongs count", (*durValue)(&c.IdleTimeout)},
		{"write-timeout", "RELAY_WRITE_TIMEOUT", "10s", "drop a connection whose socket accepts nothing for this long", (*durValue)(&c.WriteTimeout)},
		{"registration-ttl", "RELAY_REGISTRATION_TTL", "10m", "forget a registration that never connects after this long", (*durValue)(&c.RegistrationTTL)},
		{"reconnect-grace", "RELAY_RECONNECT_GRACE", "30s", "keep a registration this long after its socket closes so the same URL can reconnect; 0 forgets it at once", (*durValue)(&c.ReconnectGrace)},
		{"shutdown-timeout", "RELAY_SHUTDOWN_TIMEOUT", "10s", "on SIGINT/SIGTERM, time allowed to finish requests and close sockets", (*durValue)(&c.ShutdownTimeout)},
		{"history", "RELAY_HISTORY", "100/5m/1MiB", "history kept per topic, as size/ttl[/bytes]; add prefix=size/ttl[/bytes] entries, comma-separated, for topics starting with prefix (longest wins), e.g. 100/5m,chat.=1000/1h,tmp.=0", &c.History},
		{"idempotency-window", "RELAY_IDEMPOTENCY_WINDOW", "2m", "how long a publish's idempotency_key is remembered", (*durValue)(&c.IdempotencyTTL)},
		{"metrics", "RELAY_METRICS", "true", "serve Prometheus metrics at /metrics on the main listener", (*boolValue)(&c.Metrics)},
		{"admin-addr", "RELAY_ADMIN_ADDR", "", "listen address for pprof and /metrics (keep it private); empty: off", (*strValue)(&c.AdminAddr)},
	}
}

// parseServe reads the environment, then the flags (which win), and
// validates the result. Every error names the flag and its variable.
func parseServe(args []string, getenv func(string) string, out io.Writer) (*serveConfig, error) {
	c := &serveConfig{}
	fs := flag.NewFlagSet("relay serve", flag.ContinueOnError)
	fs.SetOutput(out)
	var errs []error
	opts := options(c)
	for _, o := range opts {
		if err := o.value.Set(o.def); err != nil {
			panic("bad default for " + o.flag + ": " + err.Error())
		}
		if v := getenv(o.env); v != "" {
			if err := o.value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", o.env, v, err))
			}
		}
		fs.Var(o.value, o.flag, o.usage+" (env "+o.env+")")
	}
	fs.BoolVar(&c.PrintConfig, "print-config", false, "print the effective configuration and exit")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: relay [serve] [flags]\n\nServes the Relay API. Flags override RELAY_* environment variables.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	errs = append(errs, c.validate()...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
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
		{"-write-timeout / RELAY_WRITE_TIMEOUT", int64(c.WriteTimeout)},
		{"-registration-ttl / RELAY_REGISTRATION_TTL", int64(c.RegistrationTTL)},
		{"-shutdown-timeout / RELAY_SHUTDOWN_TIMEOUT", int64(c.ShutdownTimeout)},
		{"-idempotency-window / RELAY_IDEMPOTENCY_WINDOW", int64(c.IdempotencyTTL)},
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
	if c.SendQueue > 0 && c.SendQueue < c.MaxMessage+14 {
		bad("-send-queue / RELAY_SEND_QUEUE (%s) must hold at least one frame of -max-message / RELAY_MAX_MESSAGE (%s)", c.SendQueue, c.MaxMessage)
	}
	return errs
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
	sc.WS.WriteTimeout = c.WriteTimeout
	if c.PublicURL != "" {
		sc.API.PublicURL, _ = parsePublicURL(c.PublicURL) // validated
	}
	sc.API.MaxBodyBytes = int64(c.MaxBody)
	sc.API.MaxMessageBytes = int(c.MaxMessage)
	for _, o := range strings.Split(c.AllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			sc.API.AllowedOrigins = append(sc.API.AllowedOrigins, o)
		}
	}
	sc.Memory.History = c.History
	sc.Memory.IdempotencyWindow = c.IdempotencyTTL
	sc.Metrics = c.Metrics
	sc.AdminAddr = c.AdminAddr
	sc.ShutdownTimeout = c.ShutdownTimeout
	return sc
}

// print writes the effective configuration as RELAY_* assignments.
func (c *serveConfig) print(w io.Writer) {
	for _, o := range options(c) {
		fmt.Fprintf(w, "%s=%s\n", o.env, o.value.String())
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

// byteSize is a size in bytes, written as a number with an optional
// B, KB, KiB, MB or MiB suffix.
type byteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000_000}, {"GB", 1000_000_000}, {"B", 1}}

func (v *byteSize) Set(s string) error {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return fmt.Errorf("not a size (e.g. 65536, 64KiB, 1MiB)")
	}
	*v = byteSize(n * mult)
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
