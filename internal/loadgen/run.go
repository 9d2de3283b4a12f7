package loadgen

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// msgState is one publish's accounting.
type msgState struct {
	state  atomic.Int32 // 0 not answered yet, 1 answered 200, 2 failed
	recv   atomic.Int32 // deliveries received
	maxLat atomic.Int64 // slowest delivery, µs
	sentAt atomic.Int64 // unix ns just before the request
}

const (
	chunkBits = 14
	chunkLen  = 1 << chunkBits
	maxChunks = 1 << 12 // 67M publishes per run
)

// msgTable holds every publish's accounting, in chunks allocated as
// publishes get there, readable without a lock.
type msgTable struct {
	chunks [maxChunks]atomic.Pointer[[chunkLen]msgState]
}

func (t *msgTable) get(seq int64) *msgState {
	if seq < 0 || seq >= maxChunks*chunkLen {
		return nil
	}
	c := t.chunks[seq>>chunkBits].Load()
	if c == nil {
		return nil
	}
	return &c[seq&(chunkLen-1)]
}

// add returns seq's state, allocating its chunk.
func (t *msgTable) add(seq int64) *msgState {
	if seq < 0 || seq >= maxChunks*chunkLen {
		return nil
	}
	p := &t.chunks[seq>>chunkBits]
	c := p.Load()
	if c == nil {
		p.CompareAndSwap(nil, new([chunkLen]msgState))
		c = p.Load()
	}
	return &c[seq&(chunkLen-1)]
}

type run struct {
	cfg        Config
	start      time.Time
	topicNames []string
	topicSubs  []atomic.Int64
	topicReady []atomic.Int64
	regHTTP    *http.Client
	pubHTTP    *http.Client
	ws         *websocket.Dialer
	pad        string

	mu      sync.Mutex
	conns   []*conn
	readers sync.WaitGroup
	closing atomic.Bool
	phase   atomic.Value // string

	errs       errCounter
	connected  atomic.Int64
	connFailed atomic.Int64
	retries    atomic.Int64
	dropped    atomic.Int64
	setupLat   Hist

	msgs       msgTable
	lat        Hist
	pubLat     Hist
	nextSeq    atomic.Int64
	attempted  atomic.Int64
	accepted   atomic.Int64
	pubFailed  atomic.Int64
	srvDeliv   atomic.Int64
	lagMaxUs   atomic.Int64
	unexpected atomic.Int64
	firstSend  atomic.Int64
	lastRecv   atomic.Int64
	nextServer atomic.Uint64
}

// Run runs one scenario. The error is for a configuration that cannot
// run; a run that failed is a Result with OK false.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.Servers = append([]string(nil), cfg.Servers...)
	if err := cfg.check(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, start: time.Now()}
	var id [4]byte
	rand.Read(id[:])
	prefix := "relay-bench-" + hex.EncodeToString(id[:])
	for i := range cfg.Topics {
		if cfg.Scenario == Topics {
			r.topicNames = append(r.topicNames, prefix+"-"+strconv.Itoa(i))
		} else {
			r.topicNames = append(r.topicNames, prefix)
		}
	}
	r.topicSubs = make([]atomic.Int64, cfg.Topics)
	r.topicReady = make([]atomic.Int64, cfg.Topics)
	r.regHTTP = newHTTPClient(cfg.DialConcurrency)
	r.pubHTTP = newHTTPClient(cfg.Inflight)
	d := &dialer{src: cfg.Source, net: net10s}
	r.ws = &websocket.Dialer{
		NetDialContext:   d.dial,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   2048,
		WriteBufferSize:  256,
		WriteBufferPool:  &sync.Pool{},
		Proxy:            nil,
	}
	if pad := cfg.Size - len("1000000:1700000000000000000:"); pad > 0 {
		r.pad = strings.Repeat("x", pad)
	}
	res := &Result{
		Scenario: cfg.Scenario, Servers: cfg.Servers, Start: r.start.UTC(),
		Params: Params{
			Connections: cfg.Connections, Topics: cfg.Topics, Rate: cfg.Rate, Inflight: cfg.Inflight,
			Messages: cfg.Messages, DurationSeconds: cfg.Duration.Seconds(), Size: cfg.Size,
			WarmupSeconds: cfg.Warmup.Seconds(), DrainSeconds: cfg.Drain.Seconds(),
			DialConcurrency: cfg.DialConcurrency, Sources: len(cfg.Source),
		},
	}
	r.phase.Store("connecting")
	pctx, stopProgress := context.WithCancel(ctx)
	progressDone := make(chan struct{})
	go func() { defer close(progressDone); r.progress(pctx) }()

	beforeStats, memErr := r.scrape(ctx)

	t0 := time.Now()
	r.connect(ctx, cfg.Connections)
	connSecs := time.Since(t0).Seconds()
	res.Connect = ConnectResult{
		Attempted: cfg.Connections, Connected: int(r.connected.Load()), Failed: int(r.connFailed.Load()),
		Seconds: connSecs, Retries: r.retries.Load(),
	}
	if connSecs > 0 {
		res.Connect.PerSecond = float64(res.Connect.Connected) / connSecs
	}
	res.Connect.Setup = r.setupLat.Summary()

	if cfg.Scenario == Connections {
		r.phase.Store("idle")
		select {
		case <-time.After(cfg.Duration):
		case <-ctx.Done():
		}
	} else {
		r.warmup(ctx)
		res.Connect.Ready = r.ready()
		srv0, srvErr := r.scrape(ctx)
		cpu0, t0 := cpuSeconds(), time.Now()
		r.publish(ctx, res)
		cpu := &CPUResult{WindowSeconds: time.Since(t0).Seconds()}
		cpu.LoadgenPct = 100 * (cpuSeconds() - cpu0) / cpu.WindowSeconds
		if srv1, err := r.scrape(ctx); err == nil && srvErr == nil && srv1.cpu > 0 {
			s := srv1.cpu - srv0.cpu
			cpu.ServerSeconds = &s
			cpu.ServerPct = 100 * s / cpu.WindowSeconds
			if n := res.Delivery.Received; n > 0 {
				cpu.ServerUsPerDelivery = 1e6 * s / float64(n)
			}
			if n := res.Publish.Accepted; n > 0 {
				cpu.ServerUsPerPublish = 1e6 * s / float64(n)
			}
		}
		res.CPU = cpu
	}
	afterStats, memErr2 := r.scrape(ctx)
	before, after := int64(beforeStats.rss), int64(afterStats.rss)
	res.Memory = MemoryResult{BeforeBytes: before, AfterBytes: after, Known: memErr == nil && memErr2 == nil}
	switch {
	case !res.Memory.Known:
		err := memErr
		if err == nil {
			err = memErr2
		}
		res.Memory.Note = err.Error()
	case res.Connect.Connected == 0:
		res.Memory.Note = "no connection"
	default:
		per := float64(after-before) / float64(res.Connect.Connected)
		res.Memory.PerConnection = &per
	}

	// Close every socket; what the server closed before counts as dropped.
	r.closing.Store(true)
	res.Connect.Dropped = r.dropped.Load()
	r.mu.Lock()
	for _, c := range r.conns {
		c.ws.Close()
	}
	r.mu.Unlock()
	r.readers.Wait()
	stopProgress()
	<-progressDone
	r.regHTTP.CloseIdleConnections()
	r.pubHTTP.CloseIdleConnections()

	res.Errors = r.errs.snapshot()
	res.Seconds = time.Since(r.start).Seconds()
	r.judge(ctx, res)
	return res, nil
}

func (r *run) ready() int64 {
	var n int64
	for i := range r.topicReady {
		n += r.topicReady[i].Load()
	}
	return n
}

// judge decides whether the run failed.
func (r *run) judge(ctx context.Context, res *Result) {
	var f []string
	c := res.Connect
	if ctx.Err() != nil {
		f = append(f, "interrupted: "+ctx.Err().Error())
	}
	if c.Attempted > 0 && c.Connected == 0 {
		f = append(f, "no connection succeeded")
	} else if c.Failed > 0 {
		f = append(f, fmt.Sprintf("%d of %d connections failed", c.Failed, c.Attempted))
	}
	if c.Dropped > 0 {
		f = append(f, fmt.Sprintf("%d connections dropped during the run", c.Dropped))
	}
	if p := res.Publish; p != nil {
		if p.Accepted == 0 {
			f = append(f, "no publish was accepted")
		} else if p.Failed > 0 {
			f = append(f, fmt.Sprintf("%d of %d publishes failed", p.Failed, p.Attempted))
		}
		if n := int64(c.Connected) - c.Ready; n > 0 && c.Connected > 0 {
			f = append(f, fmt.Sprintf("%d subscribers received nothing within the warmup (%s)", n, r.cfg.Warmup))
		}
	}
	res.Failures = f
	res.OK = len(f) == 0
}

// serverStats is what /metrics tells of the servers, summed.
type serverStats struct {
	rss, cpu float64
}

// scrape reads process_resident_memory_bytes and
// process_cpu_seconds_total from every server's /metrics and sums them.
func (r *run) scrape(ctx context.Context) (serverStats, error) {
	var sum serverStats
	for _, base := range r.cfg.Servers {
		s, err := r.scrapeOne(ctx, base)
		if err != nil {
			return serverStats{}, err
		}
		sum.rss += s.rss
		sum.cpu += s.cpu
	}
	return sum, nil
}

func (r *run) scrapeOne(ctx context.Context, base string) (serverStats, error) {
	var s serverStats
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return s, err
	}
	if r.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+r.cfg.APIKey)
	}
	resp, err := r.regHTTP.Do(req)
	if err != nil {
		return s, fmt.Errorf("%s/metrics: %s", base, shortError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("%s/metrics answered %d", base, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := 0
	for sc.Scan() && found < 2 {
		line := sc.Text()
		for name, dst := range map[string]*float64{"process_resident_memory_bytes ": &s.rss, "process_cpu_seconds_total ": &s.cpu} {
			if v, ok := strings.CutPrefix(line, name); ok {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					*dst = f
					found++
				}
			}
		}
	}
	if s.rss == 0 {
		return s, fmt.Errorf("%s/metrics has no process_resident_memory_bytes", base)
	}
	return s, nil
}

// message builds publish seq's body for topic: the message is
// "seq:unixnano:" and padding. The characters need no JSON escaping.
func (r *run) body(seq int64, topic string, now int64) []byte {
	b := make([]byte, 0, len(topic)+len(r.pad)+80)
	b = append(b, `{"topic":`...)
	b = strconv.AppendQuote(b, topic)
	b = append(b, `,"user_id":null,"message":"`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, now, 10)
	b = append(b, ':')
	b = append(b, r.pad...)
	b = append(b, `"}`...)
	return b
}

// send publishes once and says whether it was answered 200.
func (r *run) send(ctx context.Context, seq int64, topic int, m *msgState) bool {
	base := r.cfg.Servers[r.nextServer.Add(1)%uint64(len(r.cfg.Servers))]
	now := time.Now()
	if m != nil {
		m.sentAt.Store(now.UnixNano())
	}
	code, body, _, err := r.post(ctx, r.pubHTTP, base+"/publish", r.body(seq, r.topicNames[topic], now.UnixNano()))
	if seq >= 0 {
		r.pubLat.Record(time.Since(now).Microseconds())
	}
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.errs.add(&stageError{"publish", err})
		}
		return false
	case code != http.StatusOK:
		r.errs.addString(fmt.Sprintf("publish: status %d %s", code, truncate(string(body), 120)))
		return false
	}
	if seq >= 0 {
		var ans struct {
			Delivered int64 `json:"delivered"`
		}
		if json.Unmarshal(body, &ans) == nil {
			r.srvDeliv.Add(ans.Delivered)
		}
	}
	return true
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// warmup publishes probes to every topic that has a subscriber that has
// received nothing yet, until all have or Warmup has passed.
func (r *run) warmup(ctx context.Context) {
	r.phase.Store("warmup")
	deadline := time.Now().Add(r.cfg.Warmup)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		sem := make(chan struct{}, r.cfg.Inflight)
		var wg sync.WaitGroup
		pending := false
		for t := range r.topicSubs {
			if r.topicReady[t].Load() >= r.topicSubs[t].Load() {
				continue
			}
			pending = true
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				r.send(ctx, -1, t, nil)
			})
		}
		wg.Wait()
		if !pending {
			return
		}
		// Give the probes time to arrive before probing again.
		for range 10 {
			if r.ready() >= r.connected.Load() {
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
}

// publish runs the publishing phase, then waits for stragglers and counts.
func (r *run) publish(ctx context.Context, res *Result) {
	r.phase.Store("publishing")
	start := time.Now()
	deadline := start.Add(r.cfg.Duration)
	pctx, cancel := context.WithDeadline(ctx, deadline.Add(10*time.Second))
	defer cancel()
	limit := r.cfg.Messages
	one := func() bool {
		if time.Now().After(deadline) || pctx.Err() != nil {
			return false
		}
		seq := r.nextSeq.Add(1) - 1
		if limit > 0 && seq >= limit {
			return false
		}
		m := r.msgs.add(seq)
		if m == nil {
			return false
		}
		r.firstSend.CompareAndSwap(0, time.Now().UnixNano())
		r.attempted.Add(1)
		if r.send(pctx, seq, int(seq%int64(r.cfg.Topics)), m) {
			r.accepted.Add(1)
			m.state.Store(1)
		} else {
			r.pubFailed.Add(1)
			m.state.Store(2)
		}
		return true
	}
	var wg sync.WaitGroup
	if r.cfg.Rate == 0 {
		for range r.cfg.Inflight {
			wg.Go(func() {
				for one() {
				}
			})
		}
	} else {
		tick := make(chan struct{})
		for range r.cfg.Inflight {
			wg.Go(func() {
				for range tick {
					one()
				}
			})
		}
		interval := float64(time.Second) / r.cfg.Rate
	schedule:
		for i := int64(0); limit == 0 || i < limit; i++ {
			due := start.Add(time.Duration(float64(i) * interval))
			if due.After(deadline) {
				break
			}
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					break schedule
				}
			}
			select {
			case tick <- struct{}{}:
			case <-ctx.Done():
				break schedule
			}
			if lag := time.Since(due).Microseconds(); lag > r.lagMaxUs.Load() {
				r.lagMaxUs.Store(lag)
			}
		}
		close(tick)
	}
	wg.Wait()
	pubSecs := time.Since(start).Seconds()

	// Wait for stragglers, then count.
	r.phase.Store("draining")
	end := time.Now().Add(r.cfg.Drain)
	var d DeliveryResult
	for {
		d = r.count()
		if d.Lost == 0 || time.Now().After(end) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if first, last := r.firstSend.Load(), r.lastRecv.Load(); last > first && first > 0 {
		d.PerSecond = float64(d.Received) / (float64(last-first) / 1e9)
	}
	d.Unexpected += r.unexpected.Load()
	d.Latency = r.lat.Summary()
	res.Delivery = &d
	p := &PublishResult{
		Attempted: r.attempted.Load(), Accepted: r.accepted.Load(), Failed: r.pubFailed.Load(),
		Seconds: pubSecs, ServerDelivered: r.srvDeliv.Load(), HTTP: r.pubLat.Summary(),
		LagMaxMs: ms(r.lagMaxUs.Load()),
	}
	if pubSecs > 0 {
		p.PerSecond = float64(p.Accepted) / pubSecs
	}
	res.Publish = p
}

// count goes over every publish: what was expected, received, duplicated.
func (r *run) count() DeliveryResult {
	var d DeliveryResult
	var last Hist
	n := min(r.nextSeq.Load(), r.attempted.Load()+int64(r.cfg.Inflight))
	for seq := int64(0); seq < n; seq++ {
		m := r.msgs.get(seq)
		if m == nil {
			continue
		}
		got := int64(m.recv.Load())
		if m.state.Load() != 1 {
			d.Unexpected += got
			continue
		}
		want := r.topicSubs[seq%int64(r.cfg.Topics)].Load()
		d.Expected += want
		d.Received += min(got, want)
		d.Duplicates += max(0, got-want)
		if got >= want && want > 0 {
			last.Record(m.maxLat.Load())
		}
	}
	d.Lost = d.Expected - d.Received
	d.LastRecipient = last.Summary()
	return d
}

// progress calls cfg.Progress every second until ctx ends.
func (r *run) progress(ctx context.Context) {
	if r.cfg.Progress == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastPub, lastRecv int64
	var cursor, lost int64 // publishes checked for losses, and what they lost
	prev := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			secs := now.Sub(prev).Seconds()
			prev = now
			pub := r.attempted.Load()
			var recv int64
			r.mu.Lock()
			for _, c := range r.conns {
				recv += c.received.Load()
			}
			r.mu.Unlock()
			// Publishes answered more than Drain ago are final.
			old := now.Add(-r.cfg.Drain).UnixNano()
			for ; ; cursor++ {
				m := r.msgs.get(cursor)
				if m == nil {
					break
				}
				st := m.state.Load()
				if st == 0 || m.sentAt.Load() > old {
					break
				}
				if st == 1 {
					lost += max(0, r.topicSubs[cursor%int64(r.cfg.Topics)].Load()-int64(m.recv.Load()))
				}
			}
			r.cfg.Progress(Progress{
				Elapsed: now.Sub(r.start), Phase: r.phase.Load().(string),
				Connected: r.connected.Load(), Target: r.cfg.Connections,
				PublishedPerSec: float64(pub-lastPub) / secs, DeliveredPerSec: float64(recv-lastRecv) / secs,
				P99ms: r.lat.Summary().P99ms, LostSoFar: lost,
			})
			lastPub, lastRecv = pub, recv
		}
	}
}
