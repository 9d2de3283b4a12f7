// Package loadgen is the engine of `relay bench`: it opens WebSocket
// subscribers on a Relay deployment (or any server speaking the tutorial
// protocol: POST /register, GET /ws/{id}, a {"topics":[...]} text frame,
// POST /publish), publishes timestamped messages over HTTP and measures
// what arrives: deliveries per second, latency from publish to receive,
// losses and duplicates.
//
// Every message is "seq:unixnano:" padded with 'x' to the configured size,
// so each receive knows which publish it belongs to and when that publish
// was sent. Publishers and subscribers run in the same process, so the
// latency needs no clock synchronisation.
package loadgen

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Scenarios.
const (
	Connections = "connections" // open idle sockets: connect rate, errors, server memory per connection
	Fanout      = "fanout"      // every subscriber on one topic
	Topics      = "topics"      // subscribers spread over many topics, publishes spread over them
)

// Config is one run.
type Config struct {
	Scenario string
	// Servers are the base URLs (http:// or https://). Subscriber i
	// registers on Servers[i mod n]; publishes go round-robin.
	Servers []string
	// APIKey, when set, is sent as Authorization: Bearer on /register,
	// /publish and /metrics.
	APIKey string
	// Connections is the number of sockets (subscribers) to open.
	Connections int
	// Topics is the number of topics of the topics scenario (subscriber i
	// listens to topic i mod Topics, publish s goes to topic s mod Topics).
	Topics int
	// Rate is the publishes per second over all topics; 0 publishes as
	// fast as the server answers, with Inflight requests outstanding.
	Rate float64
	// Inflight bounds the publishes waiting for an answer.
	Inflight int
	// Messages stops publishing after this many publishes; 0: Duration
	// alone decides.
	Messages int64
	// Duration bounds the publishing phase; in the connections scenario it
	// is how long the sockets are held idle.
	Duration time.Duration
	// Size is the message size in bytes (at least the "seq:unixnano:"
	// prefix).
	Size int
	// Warmup bounds the wait for every subscriber to prove it is
	// subscribed (by receiving a probe message) before publishing starts.
	Warmup time.Duration
	// Drain bounds the wait for stragglers after the last publish; what
	// has not arrived by then is lost.
	Drain time.Duration
	// DialConcurrency bounds the connection setups in flight.
	DialConcurrency int
	// Source lists the local addresses WebSocket dials to loopback
	// servers are made from, round-robin (each address has its own
	// ephemeral ports and its own per-address rate limits on the server);
	// empty lets the kernel choose.
	Source []netip.Addr
	// Progress, when set, is called about once a second.
	Progress func(Progress)
}

// Defaults for zero fields.
const (
	DefaultConnections     = 1000
	DefaultTopics          = 100
	DefaultInflight        = 32
	DefaultDuration        = 10 * time.Second
	DefaultSize            = 100
	DefaultWarmup          = 10 * time.Second
	DefaultDrain           = 5 * time.Second
	DefaultDialConcurrency = 64
	// fdHeadroom is what a run needs beside its sockets: HTTP
	// connections, the runtime's descriptors, stdio.
	fdHeadroom = 64
)

func (c *Config) check() error {
	switch c.Scenario {
	case Connections, Fanout, Topics:
	case "":
		c.Scenario = Fanout
	default:
		return fmt.Errorf("unknown scenario %q: want connections, fanout or topics", c.Scenario)
	}
	if len(c.Servers) == 0 {
		return fmt.Errorf("no server given")
	}
	for i, s := range c.Servers {
		s = strings.TrimRight(strings.TrimSpace(s), "/")
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("server %q: want a base URL like http://127.0.0.1:8000", s)
		}
		c.Servers[i] = s
	}
	if c.Connections < 0 || c.Topics < 0 || c.Rate < 0 || c.Inflight < 0 || c.Messages < 0 ||
		c.Duration < 0 || c.Size < 0 || c.Warmup < 0 || c.Drain < 0 || c.DialConcurrency < 0 {
		return fmt.Errorf("counts, rates and durations must not be negative")
	}
	if c.Connections == 0 && c.Scenario == Connections {
		c.Connections = DefaultConnections
	}
	if c.Topics == 0 {
		c.Topics = DefaultTopics
	}
	if c.Scenario != Topics {
		c.Topics = 1
	}
	if c.Inflight == 0 {
		c.Inflight = DefaultInflight
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.Warmup == 0 {
		c.Warmup = DefaultWarmup
	}
	if c.Drain == 0 {
		c.Drain = DefaultDrain
	}
	if c.DialConcurrency == 0 {
		c.DialConcurrency = DefaultDialConcurrency
	}
	if _, hard, err := raiseFileLimit(); err == nil && hard > 0 {
		need := uint64(c.Connections + c.Inflight + c.DialConcurrency + fdHeadroom)
		if need > hard {
			return fmt.Errorf("%d connections need about %d open files, over this process's hard limit of %d (RLIMIT_NOFILE): use at most %d connections per process, or run several relay bench processes (on several machines) and add their figures",
				c.Connections, need, hard, int(hard)-c.Inflight-c.DialConcurrency-fdHeadroom)
		}
	}
	return nil
}

// MaxConnections is the most sockets one process can open under its hard
// open-file limit (RLIMIT_NOFILE), leaving room for HTTP connections; 0
// when the limit is unknown. hard is the limit.
func MaxConnections() (n int, hard uint64) {
	_, hard, err := raiseFileLimit()
	if err != nil || hard == 0 || hard > 1<<30 {
		return 0, hard
	}
	return max(int(hard)-DefaultInflight-DefaultDialConcurrency-fdHeadroom, 0), hard
}

// LoopbackSources is the source range used for loopback servers by
// default on Linux: 127.0.0.2 to 127.0.0.250.
func LoopbackSources() []netip.Addr {
	var a []netip.Addr
	for i := 2; i <= 250; i++ {
		a = append(a, netip.AddrFrom4([4]byte{127, 0, 0, byte(i)}))
	}
	return a
}

// Progress is the state of a run, reported once a second.
type Progress struct {
	Elapsed         time.Duration
	Phase           string // connecting, warmup, publishing, draining, idle
	Connected       int64
	Target          int
	PublishedPerSec float64
	DeliveredPerSec float64
	P99ms           float64
	LostSoFar       int64 // deliveries missing for publishes older than Drain
}

// String is the progress line.
func (p Progress) String() string {
	return fmt.Sprintf("%6.1fs %-10s connected %d/%d  published %.0f/s  delivered %.0f/s  p99 %.1f ms  lost %d",
		p.Elapsed.Seconds(), p.Phase, p.Connected, p.Target, p.PublishedPerSec, p.DeliveredPerSec, p.P99ms, p.LostSoFar)
}
