package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The fresh probe: topics nobody ever publishes to. Issue 9 found that a
// read (a relay.v1 subscribe, GET /history) created a stream, with an
// epoch, for every topic it named, and kept it: four sockets subscribing
// to 128 new names 45 times a second for 30 s took the server from 12 to
// 623 MiB, and 345 MB stayed after every socket closed.

type freshFigures struct {
	Mode         string             `json:"mode"`
	Sockets      int                `json:"sockets,omitempty"`
	Dials        int64              `json:"dials,omitempty"`
	DialErrors   map[string]int     `json:"dial_errors,omitempty"`
	Subscribes   int64              `json:"subscribes,omitempty"`
	Unsubscribes int64              `json:"unsubscribes,omitempty"`
	TopicsNamed  int64              `json:"topics_named,omitempty"`
	Subscribed   int64              `json:"subscribed_replies,omitempty"`
	Replies      map[string]int     `json:"other_replies,omitempty"`
	Closes       map[string]int     `json:"server_closes,omitempty"`
	FirstCloseS  float64            `json:"first_close_s,omitempty"`
	Requests     int64              `json:"requests,omitempty"`
	Statuses     map[string]int     `json:"statuses,omitempty"`
	Latency      *summary           `json:"latency,omitempty"`
	RatePerS     float64            `json:"per_s"`
	ElapsedS     float64            `json:"elapsed_s"`
	MetricsEnd   map[string]float64 `json:"metrics_at_end,omitempty"`
}

var freshMetrics = []string{"relay_streams", "relay_fresh_epochs", "relay_registrations", "relay_connections"}

func setupFresh(fs *flag.FlagSet) runFunc {
	sockets := fs.Int("sockets", 4, "relay.v1 sockets, one registration each")
	topics := fs.Int("topics", 128, "new topic names per subscribe (the per-connection limit)")
	rate := fs.Float64("rate", 45, "subscribes per second per socket")
	mode := fs.String("mode", "unsubscribe", `unsubscribe: unsubscribe the previous names before each subscribe (two frames); replace: one seed-style {"topics":[...]} command replaces them (one frame)`)
	reconnect := fs.Bool("reconnect", true, "reconnect (same registration) a socket the server closed, as an attacker would")
	history := fs.Bool("history", false, "read GET /history/{new topic} instead of subscribing")
	histRate := fs.Float64("history-rate", 10000, "-history: requests per second in all")
	conc := fs.Int("conc", 16, "-history: concurrent keep-alive clients")
	return func(ctx context.Context, p *prober) (any, []figure) {
		p.metricNames = freshMetrics
		if *history {
			return p.freshHistory(ctx, *histRate, *conc)
		}
		if *mode != "unsubscribe" && *mode != "replace" {
			p.logf("unknown -mode %q; using unsubscribe", *mode)
			*mode = "unsubscribe"
		}
		return p.freshSockets(ctx, *sockets, *topics, *rate, *mode, *reconnect)
	}
}

// freshState is what the sockets of the fresh probe count together.
type freshState struct {
	start                 time.Time
	dials, subs, unsubs   atomic.Int64
	named, subscribed     atomic.Int64
	firstClose            atomic.Int64 // ns since start
	dialErrs, replies, cl counts
}

func (p *prober) freshSockets(ctx context.Context, sockets, topics int, rate float64, mode string, reconnect bool) (any, []figure) {
	st := &freshState{start: time.Now()}
	until := st.start.Add(p.cfg.duration)
	p.logf("%d relay.v1 sockets, each subscribing to %d new topics %.0f times a second (%s mode) for %s", sockets, topics, rate, mode, p.cfg.duration)
	var wg sync.WaitGroup
	for i := range sockets {
		url, err := p.register(ctx, p.http, uint64(9_000_000+i))
		if err != nil {
			st.dialErrs.addErr(err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.freshSocket(ctx, st, i, url, topics, time.Duration(float64(time.Second)/rate), until, mode, reconnect)
		}()
	}
	// Progress, and the server's own counts while the sockets are still
	// subscribed.
	var atEnd map[string]float64
	go func() {
		for sleep(ctx, 5*time.Second) && time.Now().Before(until) {
			p.logf("%d subscribes sent, %d topics named, %d subscribed replies; server RSS peak %s", st.subs.Load(), st.named.Load(), st.subscribed.Load(), mib(p.srvPeak()))
		}
	}()
	sleep(ctx, time.Until(until.Add(-300*time.Millisecond)))
	atEnd = p.metrics(ctx, freshMetrics...)
	wg.Wait()
	el := time.Since(st.start).Seconds()
	f := freshFigures{
		Mode: mode, Sockets: sockets, Dials: st.dials.Load(), DialErrors: st.dialErrs.snapshot(),
		Subscribes: st.subs.Load(), Unsubscribes: st.unsubs.Load(), TopicsNamed: st.named.Load(),
		Subscribed: st.subscribed.Load(), Replies: st.replies.snapshot(), Closes: st.cl.snapshot(),
		RatePerS: round(float64(st.subs.Load())/el, 1), ElapsedS: round(el, 2), MetricsEnd: atEnd,
	}
	if ns := st.firstClose.Load(); ns > 0 {
		f.FirstCloseS = round(float64(ns)/1e9, 2)
	}
	p.logf("sent %d subscribes (%d topic names), got %d subscribed replies, other replies: %s; server closes: %s; dials %d",
		f.Subscribes, f.TopicsNamed, f.Subscribed, countsText(f.Replies), countsText(f.Closes), f.Dials)
	return f, []figure{
		{"subscribes sent (topic names)", fmt.Sprintf("%d (%d)", f.Subscribes, f.TopicsNamed)},
		{"replies", fmt.Sprintf("subscribed×%d; %s", f.Subscribed, countsText(f.Replies))},
		{"sockets closed by the server", countsText(f.Closes)},
	}
}

// freshSocket runs one attacking socket until the attack ends,
// reconnecting to its registration when the server closes it.
func (p *prober) freshSocket(ctx context.Context, st *freshState, sock int, url string, topics int, every time.Duration, until time.Time, mode string, reconnect bool) {
	dialer := newDialer(p.src, "relay.v1")
	seq := 0
	names := func() []byte {
		var b []byte
		for i := range topics {
			if i > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, `"fresh.%s.%d.%d"`, p.runID, sock, seq)
			seq++
		}
		return b
	}
	for time.Now().Before(until) && ctx.Err() == nil {
		c, _, err := dialer.DialContext(ctx, url, nil)
		if err != nil {
			st.dialErrs.addErr(err)
			if !sleep(ctx, 500*time.Millisecond) {
				return
			}
			continue
		}
		st.dials.Add(1)
		ended := make(chan closeEvent, 1)
		go func() {
			for {
				_, msg, err := c.ReadMessage()
				if err != nil {
					ended <- gorillaClose(err, st.start)
					return
				}
				st.reply(msg)
			}
		}()
		var prev []byte
		var ev *closeEvent
		id := 0
		pace(ctx, every, until, func(int) bool {
			select {
			case e := <-ended:
				ev = &e
				return false
			default:
			}
			if mode == "unsubscribe" && prev != nil {
				id++
				if c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"unsubscribe","id":%d,"topics":[%s]}`, id, prev)) != nil {
					return false
				}
				st.unsubs.Add(1)
			}
			prev = names()
			id++
			cmd := fmt.Appendf(nil, `{"type":"subscribe","id":%d,"topics":[%s]}`, id, prev)
			if mode == "replace" {
				cmd = fmt.Appendf(nil, `{"topics":[%s]}`, prev)
			}
			if c.WriteMessage(websocket.TextMessage, cmd) != nil {
				return false
			}
			st.subs.Add(1)
			st.named.Add(int64(topics))
			return true
		})
		if ev == nil && (!time.Now().Before(until) || ctx.Err() != nil) {
			// Our own end: close politely and let the reader finish.
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			<-ended
			c.Close()
			return
		}
		if ev == nil { // a write failed: the server is closing us
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			e := <-ended
			ev = &e
		}
		c.Close()
		st.cl.add(ev.key(), 1)
		st.firstClose.CompareAndSwap(0, int64(ev.after))
		if !reconnect {
			return
		}
	}
}

// reply counts one server frame; subscribed replies, by far the most, by
// their prefix alone.
func (st *freshState) reply(msg []byte) {
	if bytes.HasPrefix(msg, []byte(`{"type":"subscribed"`)) {
		st.subscribed.Add(1)
		return
	}
	var r struct{ Type, Code string }
	if json.Unmarshal(msg, &r) != nil {
		st.replies.add("(not JSON)", 1)
		return
	}
	if r.Code != "" {
		r.Type += ":" + r.Code
	}
	st.replies.add(r.Type, 1)
}

// freshHistory is the HTTP form of the attack: GET /history of a new
// topic, rate times a second, from conc keep-alive clients.
func (p *prober) freshHistory(ctx context.Context, rate float64, conc int) (any, []figure) {
	start := time.Now()
	until := start.Add(p.cfg.duration)
	p.logf("GET /history/{new topic} at %.0f/s from %d clients for %s", rate, conc, p.cfg.duration)
	var n atomic.Int64
	var statuses counts
	var lat latencies
	var wg sync.WaitGroup
	every := time.Duration(float64(conc) * float64(time.Second) / rate)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pace(ctx, every, until, func(int) bool {
				i := n.Add(1)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.base+"/history/fresh."+p.runID+".h"+strconv.Itoa(w)+"."+strconv.FormatInt(i, 10), nil)
				p.authorize(req)
				t0 := time.Now()
				resp, err := p.http.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						statuses.addErr(err)
					}
					return true
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat.add(time.Since(t0))
				statuses.add(strconv.Itoa(resp.StatusCode), 1)
				return true
			})
		}()
	}
	go func() {
		for sleep(ctx, 5*time.Second) && time.Now().Before(until) {
			p.logf("%d requests; server RSS peak %s", n.Load(), mib(p.srvPeak()))
		}
	}()
	sleep(ctx, time.Until(until.Add(-300*time.Millisecond)))
	atEnd := p.metrics(ctx, freshMetrics...)
	wg.Wait()
	el := time.Since(start).Seconds()
	s := lat.summary()
	f := freshFigures{Mode: "history", Requests: n.Load(), Statuses: statuses.snapshot(), Latency: &s,
		RatePerS: round(float64(n.Load())/el, 1), ElapsedS: round(el, 2), MetricsEnd: atEnd}
	p.logf("%d requests (%.0f/s): %s; latency %s", f.Requests, f.RatePerS, countsText(f.Statuses), s)
	return f, []figure{
		{"GET /history of new topics", fmt.Sprintf("%d (%.0f/s): %s", f.Requests, f.RatePerS, countsText(f.Statuses))},
	}
}
