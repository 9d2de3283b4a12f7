package loadgen

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Result is what a run measured. Its JSON form is what `relay bench
// -json` prints.
type Result struct {
	Scenario string    `json:"scenario"`
	Servers  []string  `json:"servers"`
	Start    time.Time `json:"start"`
	Seconds  float64   `json:"seconds"` // the whole run
	Params   Params    `json:"params"`

	Connect  ConnectResult   `json:"connect"`
	Publish  *PublishResult  `json:"publish,omitempty"`  // fanout and topics
	Delivery *DeliveryResult `json:"delivery,omitempty"` // fanout and topics
	Memory   MemoryResult    `json:"memory"`
	CPU      *CPUResult      `json:"cpu,omitempty"` // fanout and topics

	// Errors counts errors by stage and cause.
	Errors map[string]int64 `json:"errors,omitempty"`
	// OK is false when the run failed: Failures says why. Losses alone do
	// not fail a run.
	OK       bool     `json:"ok"`
	Failures []string `json:"failures,omitempty"`
}

// Params echoes the configuration.
type Params struct {
	Connections     int     `json:"connections"`
	Topics          int     `json:"topics"`
	Rate            float64 `json:"rate"` // 0: as fast as the server answers
	Inflight        int     `json:"inflight"`
	Messages        int64   `json:"messages"` // 0: until duration
	DurationSeconds float64 `json:"duration_seconds"`
	Size            int     `json:"size"`
	WarmupSeconds   float64 `json:"warmup_seconds"`
	DrainSeconds    float64 `json:"drain_seconds"`
	DialConcurrency int     `json:"dial_concurrency"`
	Sources         int     `json:"source_addresses"`
}

// ConnectResult is the connection phase.
type ConnectResult struct {
	Attempted int     `json:"attempted"`
	Connected int     `json:"connected"`
	Failed    int     `json:"failed"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"` // connections set up per second
	// Setup is register + upgrade + subscribe, per connection.
	Setup Latency `json:"setup"`
	// Retries counts setups repeated after a 429 or 503.
	Retries int64 `json:"retries"`
	// Ready is the subscribers that received a probe before publishing
	// started (fanout and topics), proving the server had their topics.
	Ready int64 `json:"ready"`
	// Dropped is the sockets the server closed (or that failed) during
	// the run.
	Dropped int64 `json:"dropped"`
}

// PublishResult is the HTTP side.
type PublishResult struct {
	Attempted int64   `json:"attempted"`
	Accepted  int64   `json:"accepted"` // answered 200
	Failed    int64   `json:"failed"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"` // accepted per second of publishing
	// ServerDelivered sums the "delivered" fields of the answers: the
	// sockets the answering node queued each message for (Relay; other
	// nodes of a cluster are not counted).
	ServerDelivered int64   `json:"server_delivered"`
	HTTP            Latency `json:"http"`
	// LagMaxMs is how far behind schedule a fixed-rate publish started at
	// worst (all -inflight requests were waiting for answers).
	LagMaxMs float64 `json:"lag_max_ms"`
}

// DeliveryResult is what the subscribers got.
type DeliveryResult struct {
	// Expected is, over the publishes answered 200, the subscribers of
	// their topic.
	Expected   int64 `json:"expected"`
	Received   int64 `json:"received"`   // expected deliveries that arrived
	Lost       int64 `json:"lost"`       // expected - received
	Duplicates int64 `json:"duplicates"` // deliveries beyond a topic's subscribers
	// Unexpected counts frames that are not this run's messages, or
	// belong to a publish that was not answered 200.
	Unexpected int64   `json:"unexpected"`
	PerSecond  float64 `json:"per_second"` // received, from the first publish to the last delivery
	// Latency is from just before the publish request to the receive, per
	// delivery.
	Latency Latency `json:"latency"`
	// LastRecipient is per message: until its last subscriber had it
	// (messages that reached every subscriber only).
	LastRecipient Latency `json:"last_recipient"`
}

// MemoryResult is the server's resident memory from /metrics
// (process_resident_memory_bytes, summed over the servers).
type MemoryResult struct {
	Known       bool  `json:"known"`
	BeforeBytes int64 `json:"before_bytes"`
	AfterBytes  int64 `json:"after_bytes"` // with every socket open (after the hold in the connections scenario)
	// PerConnection is (after - before) / connected; null when unknown.
	PerConnection *float64 `json:"per_connection_bytes"`
	Note          string   `json:"note,omitempty"`
}

// CPUResult is the CPU used from the first publish to the end of the
// drain: the servers' from process_cpu_seconds_total in their /metrics
// (summed; server_seconds null and the server figures absent when
// unknown), this process's from getrusage.
type CPUResult struct {
	WindowSeconds       float64  `json:"window_seconds"`
	ServerSeconds       *float64 `json:"server_seconds"`
	ServerPct           float64  `json:"server_pct_of_core,omitempty"`
	ServerUsPerDelivery float64  `json:"server_us_per_delivery,omitempty"`
	ServerUsPerPublish  float64  `json:"server_us_per_publish,omitempty"`
	LoadgenPct          float64  `json:"loadgen_pct_of_core"`
}

// Summary writes the human summary.
func (r *Result) Summary(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("relay bench %s against %s (%.1fs)", r.Scenario, strings.Join(r.Servers, ", "), r.Seconds)
	c := r.Connect
	p("  connections   %d/%d connected, %d failed, %.0f/s; setup p50 %.1f ms, p99 %.1f ms; %d retried; %d dropped",
		c.Connected, c.Attempted, c.Failed, c.PerSecond, c.Setup.P50ms, c.Setup.P99ms, c.Retries, c.Dropped)
	if r.Memory.PerConnection != nil {
		p("  server memory %.1f MiB -> %.1f MiB, %.0f B per connection", mib(r.Memory.BeforeBytes), mib(r.Memory.AfterBytes), *r.Memory.PerConnection)
	} else {
		p("  server memory per connection unknown (%s)", r.Memory.Note)
	}
	if pb := r.Publish; pb != nil {
		rate := "as fast as answered"
		if r.Params.Rate > 0 {
			rate = fmt.Sprintf("at %g/s", r.Params.Rate)
		}
		p("  publishes     %d accepted of %d, %d failed, %.0f/s (%s, %d in flight); HTTP p50 %.1f ms, p99 %.1f ms",
			pb.Accepted, pb.Attempted, pb.Failed, pb.PerSecond, rate, r.Params.Inflight, pb.HTTP.P50ms, pb.HTTP.P99ms)
	}
	if d := r.Delivery; d != nil {
		p("  deliveries    %d of %d expected, %.0f/s; lost %d, duplicates %d, unexpected %d",
			d.Received, d.Expected, d.PerSecond, d.Lost, d.Duplicates, d.Unexpected)
		l := d.Latency
		p("  latency       p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms", l.P50ms, l.P90ms, l.P99ms, l.P999ms, l.MaxMs)
		l = d.LastRecipient
		p("  last recipient p50 %.2f ms, p99 %.2f ms, max %.2f ms (per message, until every subscriber had it)", l.P50ms, l.P99ms, l.MaxMs)
	}
	if c := r.CPU; c != nil {
		if c.ServerSeconds != nil {
			p("  cpu           server %.0f%% of a core, %.2f µs per delivery, %.1f µs per publish; relay bench %.0f%% of a core",
				c.ServerPct, c.ServerUsPerDelivery, c.ServerUsPerPublish, c.LoadgenPct)
		} else {
			p("  cpu           server unknown (no process_cpu_seconds_total in /metrics); relay bench %.0f%% of a core", c.LoadgenPct)
		}
	}
	if len(r.Errors) > 0 {
		keys := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		p("  errors")
		for _, k := range keys {
			p("    %6d  %s", r.Errors[k], k)
		}
	}
	if r.OK {
		p("  ok")
	} else {
		p("  FAILED: %s", strings.Join(r.Failures, "; "))
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
