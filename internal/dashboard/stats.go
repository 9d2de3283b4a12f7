package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/relayhq/relay/internal/hub"
)

// Snapshot is what the dashboard shows of one node, sampled every second
// and pushed on /dashboard/events.
type Snapshot struct {
	Node       string `json:"node"`
	Engine     string `json:"engine"` // memory, redis, nats
	Networked  bool   `json:"networked"`
	Scope      string `json:"scope"` // "this node": the figures are this node's own, whatever Nodes lists
	Ready      bool   `json:"ready"`
	ReadyError string `json:"ready_error,omitempty"`
	Time       int64  `json:"time"` // Unix milliseconds
	Uptime     int64  `json:"uptime_seconds"`

	Connections   int64 `json:"connections"`
	Registrations int64 `json:"registrations"`
	Topics        int   `json:"topics"` // topics with subscribers on this node

	Publishes    uint64  `json:"publishes"` // totals since start
	Deliveries   uint64  `json:"deliveries"`
	PublishRate  float64 `json:"publish_rate"` // per second, over the last sample
	DeliveryRate float64 `json:"delivery_rate"`

	SlowConsumerCloses uint64            `json:"slow_consumer_closes"`
	Rejected           uint64            `json:"rejected"` // HTTP requests refused
	RejectedByStatus   map[string]uint64 `json:"rejected_by_status"`
	RateLimited        uint64            `json:"rate_limited"` // register, connect and message rate limits

	ListenerOpen *int64 `json:"listener_open,omitempty"` // connections on the main listener

	TopTopics []hub.TopicCount `json:"top_topics"`
	// Nodes lists every node's summary when the engine shares them (see
	// Peers); without, it is absent and the figures are this node's only.
	Nodes []NodeSummary `json:"nodes,omitempty"`
	// Series holds [time ms, publishes/s, deliveries/s] points, oldest
	// first: the last five minutes in a stream's first event, the newest
	// point in the others.
	Series [][3]float64 `json:"series"`
}

// topN is how many topics the dashboard lists.
const topN = 10

// seriesLen is the points kept: five minutes at one a second.
const seriesLen = 300

// ring keeps the last seriesLen points.
type ring struct {
	pts  [seriesLen][3]float64
	next int
	n    int
}

func (r *ring) add(p [3]float64) {
	r.pts[r.next] = p
	r.next = (r.next + 1) % seriesLen
	r.n = min(r.n+1, seriesLen)
}

func (r *ring) all() [][3]float64 {
	out := make([][3]float64, 0, r.n)
	for i := range r.n {
		out = append(out, r.pts[(r.next-r.n+i+seriesLen)%seriesLen])
	}
	return out
}

// sample is the counters at one instant, to compute rates from.
type sample struct {
	at                    time.Time
	publishes, deliveries uint64
}

// frame is one sample, encoded once for every stream.
type frame struct {
	snap Snapshot
	data []byte        // the event with the newest point only
	next chan struct{} // closed when a newer frame replaces this one
}

// sample reads the node's counters, appends the rates to the series and
// publishes a new frame.
func (d *Dashboard) sample() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	hs, ws := d.cfg.Hub.Stats(), d.cfg.WS.Stats()
	s := Snapshot{
		Node:               d.cfg.NodeID,
		Engine:             engineName(d.cfg.Engine),
		Networked:          d.cfg.Engine.Registry() != nil,
		Scope:              "this node",
		Time:               now.UnixMilli(),
		Uptime:             int64(now.Sub(d.started) / time.Second),
		Connections:        ws.Connections.Load(),
		Registrations:      hs.Registrations.Load(),
		Publishes:          hs.Publishes.Load(),
		Deliveries:         hs.Deliveries.Load(),
		SlowConsumerCloses: ws.SlowConsumers.Load(),
		RejectedByStatus:   map[string]uint64{},
	}
	if p := d.peers.Load(); p != nil {
		s.Nodes = *p
	}
	if err := d.cfg.Engine.Ready(); err != nil {
		s.ReadyError = err.Error()
	} else {
		s.Ready = true
	}
	// The top topics cost a walk of the topic index: only while someone
	// watches (full computes them for a stream's first event).
	if d.streams.Load() > 0 {
		s.TopTopics, s.Topics = d.cfg.Hub.TopTopics(topN)
	}
	as := d.cfg.API.Stats()
	as.Rejected(func(status int, n uint64) {
		s.Rejected += n
		s.RejectedByStatus[strconv.Itoa(status)] = n
	})
	reg, conn := as.Limited()
	s.RateLimited = reg + conn + ws.RateLimited.Load()
	if c := d.cfg.Conns; c != nil {
		open := c.Open.Load()
		s.ListenerOpen = &open
	}
	if !d.last.at.IsZero() {
		if secs := now.Sub(d.last.at).Seconds(); secs > 0 {
			s.PublishRate = float64(s.Publishes-d.last.publishes) / secs
			s.DeliveryRate = float64(s.Deliveries-d.last.deliveries) / secs
		}
		d.series.add([3]float64{float64(s.Time), round2(s.PublishRate), round2(s.DeliveryRate)})
	}
	d.last = sample{at: now, publishes: s.Publishes, deliveries: s.Deliveries}
	s.PublishRate, s.DeliveryRate = round2(s.PublishRate), round2(s.DeliveryRate)
	f := &frame{snap: s, next: make(chan struct{})}
	if d.series.n > 0 {
		s.Series = [][3]float64{d.series.pts[(d.series.next+seriesLen-1)%seriesLen]}
	} else {
		s.Series = [][3]float64{}
	}
	f.data = event(s)
	if old := d.cur.Swap(f); old != nil {
		close(old.next)
	}
}

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

// full returns f's snapshot with the whole series, for a stream's first
// event and /dashboard/api/snapshot.
func (d *Dashboard) full(f *frame) Snapshot {
	s := f.snap
	if s.TopTopics == nil {
		s.TopTopics, s.Topics = d.cfg.Hub.TopTopics(topN)
	}
	d.mu.Lock()
	s.Series = d.series.all()
	d.mu.Unlock()
	return s
}

// event encodes s as one server-sent event.
func event(s Snapshot) []byte {
	b, _ := json.Marshal(s) // plain data: cannot fail
	return fmt.Appendf(nil, "event: snapshot\ndata: %s\n\n", b)
}

// engineName names the engine by its package: memorybroker is "memory".
func engineName(e any) string {
	t := strings.TrimPrefix(fmt.Sprintf("%T", e), "*")
	if i := strings.IndexByte(t, '.'); i >= 0 {
		t = t[:i]
	}
	return strings.TrimSuffix(t, "broker")
}

// snapshot answers GET /dashboard/api/snapshot: the latest sample with
// the whole series, as JSON.
func (d *Dashboard) snapshot(w http.ResponseWriter, r *http.Request) {
	s := d.full(d.cur.Load())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(s)
}

// events streams the samples as server-sent events: the first with the
// last five minutes of rates, then one a second. The stream ends when
// the server stops.
func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	if d.streams.Add(1) > maxStreams {
		d.streams.Add(-1)
		w.Header().Set("Retry-After", "5")
		jsonError(w, http.StatusServiceUnavailable, fmt.Sprintf("%d dashboards are open on this node already", maxStreams))
		return
	}
	defer d.streams.Add(-1)
	rc := http.NewResponseController(w)
	// The server's read and write timeouts would end the stream: lift
	// the read deadline and move the write deadline with every event.
	rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
	f := d.cur.Load()
	data := event(d.full(f))
	for {
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(data); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-f.next:
		case <-r.Context().Done():
			return
		case <-d.stopping:
			return
		}
		f = d.cur.Load()
		data = f.data
	}
}
