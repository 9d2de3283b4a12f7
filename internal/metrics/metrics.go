// Package metrics exports Relay's counters to Prometheus. The hot paths
// only bump atomic counters in their own packages; this package reads them
// when /metrics is scraped, so scraping costs nothing between scrapes and
// the hub stays free of Prometheus.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/relayhq/relay/internal/api"
	"github.com/relayhq/relay/internal/connlimit"
	"github.com/relayhq/relay/internal/hub"
	"github.com/relayhq/relay/internal/memorybroker"
	"github.com/relayhq/relay/internal/protocol/pusher"
	"github.com/relayhq/relay/internal/relay"
	"github.com/relayhq/relay/internal/ws"
)

// Sources are the counters to export.
type Sources struct {
	Hub    *hub.Stats
	WS     *ws.Stats
	API    *api.Stats
	Memory *memorybroker.Broker // nil with another engine
	Conns  *connlimit.Stats     // the main listener's connection caps
	// Engine is the node's engine: its readiness, and for networked ones
	// what the node corrected.
	Engine relay.Broker
	NodeID string
	// Pusher is the Pusher protocol's counters, nil when it is off.
	Pusher *pusher.Stats
}

// Handler returns the /metrics handler for src, with Go runtime and process
// metrics beside Relay's own.
func Handler(src Sources) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	h, w := src.Hub, src.WS
	gauge("relay_connections", "Open WebSocket connections.", func() float64 { return float64(w.Connections.Load()) })
	gauge("relay_registrations", "Registrations held, connected or not.", func() float64 { return float64(h.Registrations.Load()) })
	counter("relay_connections_accepted_total", "WebSocket upgrades completed.", func() float64 { return float64(w.Accepted.Load()) })
	counter("relay_registrations_expired_total", "Registrations removed because they never connected or did not reconnect in time.", func() float64 { return float64(h.Expired.Load()) })
	counter("relay_publishes_total", "Messages fanned out on this node.", func() float64 { return float64(h.Publishes.Load()) })
	counter("relay_deliveries_total", "Messages queued for a connection.", func() float64 { return float64(h.Deliveries.Load()) })
	counter("relay_slow_consumer_closes_total", "Connections closed because their send queue overflowed (close code 4002).", func() float64 { return float64(w.SlowConsumers.Load()) })
	counter("relay_idle_closes_total", "Connections closed by the idle timeout (close code 4003).", func() float64 { return float64(w.IdleCloses.Load()) })
	counter("relay_write_timeouts_total", "Connections dropped because a write to them timed out.", func() float64 { return float64(w.WriteTimeouts.Load()) })
	counter("relay_protocol_violations_total", "Connections closed for breaking the WebSocket protocol or sending unsupported data.", func() float64 { return float64(w.Violations.Load()) })
	counter("relay_backpressure_total", "Times a socket could not take a write at once and got a goroutine of its own.", func() float64 { return float64(w.Backpressured.Load()) })
	counter("relay_ws_messages_received_total", "Text messages received from clients.", func() float64 { return float64(w.MessagesIn.Load()) })
	counter("relay_slow_messages_total", "Connections closed (1008) because a message took longer than -message-timeout to arrive.", func() float64 { return float64(w.SlowMessages.Load()) })
	counter("relay_connections_refused_total", "WebSocket upgrades refused at the connection limit.", func() float64 { return float64(w.Refused.Load()) })
	if a := src.API; a != nil {
		counter("relay_seed_ignored_frames_total", "Texts seed sockets sent that were neither a topics command nor ping, ignored as the tutorial's server ignores them.", func() float64 { return float64(a.SeedIgnored()) })
	}
	if c := src.Conns; c != nil {
		labeled := func(kind, name, help, label, value string, f func() float64) {
			opts := prometheus.Opts{Name: name, Help: help, ConstLabels: prometheus.Labels{label: value}}
			if kind == "gauge" {
				reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts), f))
			} else {
				reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts(opts), f))
			}
		}
		const connsHelp = "Connections open on the main listener: all of them (WebSockets included, against the open-file limit) and those that are not WebSockets (against -max-http-connections)."
		labeled("gauge", "relay_listener_connections", connsHelp, "kind", "all", func() float64 { return float64(c.Open.Load()) })
		labeled("gauge", "relay_listener_connections", connsHelp, "kind", "http", func() float64 { return float64(c.Pending.Load()) })
		const shedHelp = "Connections closed to make room at a connection cap: idle keep-alive ones, and ones still sending their first request (slowloris)."
		labeled("counter", "relay_listener_shed_total", shedHelp, "state", "idle", func() float64 { return float64(c.ShedIdle.Load()) })
		labeled("counter", "relay_listener_shed_total", shedHelp, "state", "reading", func() float64 { return float64(c.ShedReading.Load()) })
		const capHelp = "New connections that found a cap reached: open (open-file limit minus headroom), http (-max-http-connections), per_address (-max-http-connections-per-address)."
		labeled("counter", "relay_listener_at_cap_total", capHelp, "cap", "open", func() float64 { return float64(c.AtMaxOpen.Load()) })
		labeled("counter", "relay_listener_at_cap_total", capHelp, "cap", "http", func() float64 { return float64(c.AtMaxPending.Load()) })
		labeled("counter", "relay_listener_at_cap_total", capHelp, "cap", "per_address", func() float64 { return float64(c.AtMaxPerAddress.Load()) })
		counter("relay_listener_refused_total", "New connections closed at once: a cap was reached and every connection under it was busy.", func() float64 { return float64(c.Refused.Load()) })
		counter("relay_listener_aborted_total", "Requests not run because their connection had just been closed to make room.", func() float64 { return float64(c.Aborted.Load()) })
		counter("relay_listener_accept_errors_total", "Failed accepts that were retried (such as too many open files).", func() float64 { return float64(c.AcceptErrors.Load()) })
	}
	if p := src.Pusher; p != nil {
		gauge("relay_pusher_connections", "Open Pusher sockets (also counted in relay_connections).", func() float64 { return float64(p.Connections.Load()) })
		counter("relay_pusher_client_events_total", "Client events accepted from Pusher sockets.", func() float64 { return float64(p.ClientEvents.Load()) })
		counter("relay_pusher_triggers_total", "Events accepted by the Pusher HTTP API, one per channel.", func() float64 { return float64(p.Triggers.Load()) })
		counter("relay_pusher_webhook_events_sent_total", "Webhook events delivered (a 2xx answer).", func() float64 { return float64(p.WebhooksSent()) })
		counter("relay_pusher_webhook_events_failed_total", "Webhook events dropped after every retry failed.", func() float64 { return float64(p.WebhooksFailed()) })
		counter("relay_pusher_webhook_events_dropped_total", "Webhook events dropped because the queue was full or the node stopped.", func() float64 { return float64(p.WebhooksDropped()) })
	}
	if m := src.Memory; m != nil {
		ms := m.Stats()
		gauge("relay_streams", "Topics with a stream (offsets, epoch, history) in the memory engine.", func() float64 { return float64(m.Streams()) })
		gauge("relay_fresh_epochs", "Epochs remembered for topics read but never published to.", func() float64 { return float64(m.FreshEpochs()) })
		gauge("relay_history_bytes", "History held across all topics, as counted against -history-budget.", func() float64 { held, _ := m.HistoryBytes(); return float64(held) })
		counter("relay_history_evicted_total", "Messages dropped from history to stay within -history-budget.", func() float64 { _, n := m.HistoryBytes(); return float64(n) })
		counter("relay_streams_evicted_total", "Streams dropped because -max-streams was reached.", func() float64 { return float64(ms.StreamsEvicted.Load()) })
		counter("relay_fresh_epochs_evicted_total", "Fresh epochs forgotten early because their table was full.", func() float64 { return float64(ms.FreshEvicted.Load()) })
	}
	if e := src.Engine; e != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_engine_ready", Help: "1 while the node's engine (memory, Redis or NATS) can serve, as /readyz reports.",
			ConstLabels: prometheus.Labels{"node": src.NodeID}}, func() float64 {
			if e.Ready() != nil {
				return 0
			}
			return 1
		}))
	}
	if e, ok := src.Engine.(relay.StatsReporter); ok {
		counter("relay_engine_reconnects_total", "Pub/sub connections to the engine replaced because they failed or went silent.", func() float64 { return float64(e.EngineStats().Reconnects) })
		counter("relay_engine_repeats_total", "Messages from the engine dropped because this node had fanned them out already.", func() float64 { return float64(e.EngineStats().Repeats) })
		counter("relay_engine_repaired_total", "Messages read from history because pub/sub lost them.", func() float64 { return float64(e.EngineStats().Repaired) })
		counter("relay_engine_resets_total", "Gaps history could no longer fill; relay.v1 subscribers were told recovered:false.", func() float64 { return float64(e.EngineStats().Resets) })
	}
	reg.MustRegister(rejected{src.API}, limited{src.API, w})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// rejected exports the API's refusals by status.
type rejected struct{ s *api.Stats }

var rejectedDesc = prometheus.NewDesc("relay_http_rejected_total", "HTTP requests refused, by status.", []string{"status"}, nil)

func (r rejected) Describe(ch chan<- *prometheus.Desc) { ch <- rejectedDesc }

func (r rejected) Collect(ch chan<- prometheus.Metric) {
	r.s.Rejected(func(status int, n uint64) {
		ch <- prometheus.MustNewConstMetric(rejectedDesc, prometheus.CounterValue, float64(n), strconv.Itoa(status))
	})
}

// limited exports the rate limits' refusals by what was limited.
type limited struct {
	api *api.Stats
	ws  *ws.Stats
}

var limitedDesc = prometheus.NewDesc("relay_rate_limited_total", "Requests and connections refused by a rate limit: register and connect per client address, messages per connection (closed with 4004).", []string{"what"}, nil)

func (l limited) Describe(ch chan<- *prometheus.Desc) { ch <- limitedDesc }

func (l limited) Collect(ch chan<- prometheus.Metric) {
	register, connect := l.api.Limited()
	for what, n := range map[string]uint64{"register": register, "connect": connect, "messages": l.ws.RateLimited.Load()} {
		ch <- prometheus.MustNewConstMetric(limitedDesc, prometheus.CounterValue, float64(n), what)
	}
}
