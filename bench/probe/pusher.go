package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The pusherchurn probe: Pusher sockets subscribing to, and unsubscribing
// from, a new public channel at every frame, within the default connect
// and message rates. Anyone holding an app's key (it is public: it is in
// every page) can do it. With the app's subscription_count option, each
// channel's count event was a stored publish: the memory engine kept a
// stream per channel for an hour (200 sockets reached -max-streams within
// 30 s and evicted real topics' history), and Redis grew by ~5 KB per
// channel (656 MB after 40 s). The server needs a Pusher app with key
// -key (probes.sh starts one).

var pusherMetrics = []string{"relay_streams", "relay_streams_evicted_total", "relay_history_bytes", "relay_pusher_connections"}

type pusherFigures struct {
	Sockets      int                `json:"sockets"`
	DialErrors   map[string]int     `json:"dial_errors,omitempty"`
	Frames       int64              `json:"frames"`
	Channels     int64              `json:"channels"`
	WriteErrors  int64              `json:"write_errors,omitempty"`
	Closes       map[string]int     `json:"server_closes,omitempty"`
	ElapsedS     float64            `json:"elapsed_s"`
	Before       map[string]float64 `json:"metrics_before,omitempty"`
	AtEnd        map[string]float64 `json:"metrics_at_end,omitempty"`
	LegitBefore  int                `json:"legit_history_before"`
	LegitAfter   int                `json:"legit_history_after"`
	LegitEpochOK bool               `json:"legit_epoch_kept"`
}

func setupPusherChurn(fs *flag.FlagSet) runFunc {
	sockets := fs.Int("sockets", 200, "Pusher sockets (opened at 40 a second, under the default connect rate)")
	rate := fs.Float64("rate", 40, "frames per second per socket, alternately subscribe and unsubscribe (under the default -message-rate)")
	key := fs.String("key", "probekey", "the Pusher app's key")
	return func(ctx context.Context, p *prober) (any, []figure) {
		p.metricNames = pusherMetrics
		return p.pusherChurn(ctx, *sockets, *rate, *key)
	}
}

func (p *prober) pusherChurn(ctx context.Context, sockets int, rate float64, key string) (any, []figure) {
	legit := "legit." + p.runID
	for i := range 3 {
		body := fmt.Appendf(nil, `{"topic":%q,"message":"m%d"}`, legit, i+1)
		if status, out, err := p.post(ctx, p.http, "/publish", body); err != nil || status != 200 {
			p.logf("publishing to %s: %d %s %v", legit, status, out, err)
		}
	}
	f := pusherFigures{Sockets: sockets, Before: p.metrics(ctx, pusherMetrics...)}
	var epochBefore string
	f.LegitBefore, epochBefore = p.historyOf(ctx, legit)
	start := time.Now()
	until := start.Add(p.cfg.duration)
	p.logf("%d Pusher sockets, each subscribing to and unsubscribing from a new public channel %.0f times a second, for %s", sockets, rate, p.cfg.duration)
	var frames, channels, werrs atomic.Int64
	var dialErrs, closes counts
	var wg sync.WaitGroup
	dialer := newDialer(p.src, "")
	wsURL := "ws" + strings.TrimPrefix(p.cfg.base, "http") + "/app/" + key + "?protocol=7&client=probe&version=1"
	pace(ctx, 25*time.Millisecond, until, func(i int) bool {
		if i >= sockets {
			return false
		}
		c, _, err := dialer.DialContext(ctx, wsURL, nil)
		if err != nil {
			dialErrs.addErr(err)
			return true
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			began := time.Now()
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						if ev := gorillaClose(err, began); ev.code != 0 {
							closes.add(fmt.Sprint(ev.code), 1)
						}
						return
					}
				}
			}()
			pace(ctx, time.Duration(float64(time.Second)/rate), until, func(j int) bool {
				event := "pusher:subscribe"
				if j%2 == 1 {
					event = "pusher:unsubscribe"
				} else {
					channels.Add(1)
				}
				msg, _ := json.Marshal(map[string]any{"event": event, "data": map[string]string{"channel": fmt.Sprintf("churn-%s-%d-%d", p.runID, i, j/2)}})
				if err := c.WriteMessage(1, msg); err != nil {
					werrs.Add(1)
					return false
				}
				frames.Add(1)
				return true
			})
		}()
		return true
	})
	go func() {
		for sleep(ctx, 10*time.Second) && time.Now().Before(until) {
			m := p.metrics(ctx, "relay_streams")
			p.logf("%d frames, %d channels; relay_streams %v; server RSS peak %s", frames.Load(), channels.Load(), m["relay_streams"], mib(p.srvPeak()))
		}
	}()
	sleep(ctx, time.Until(until))
	f.AtEnd = p.metrics(ctx, pusherMetrics...)
	wg.Wait()
	var epochAfter string
	f.LegitAfter, epochAfter = p.historyOf(ctx, legit)
	f.LegitEpochOK = epochBefore != "" && epochAfter == epochBefore
	f.Frames, f.Channels, f.WriteErrors = frames.Load(), channels.Load(), werrs.Load()
	f.DialErrors, f.Closes = dialErrs.snapshot(), closes.snapshot()
	f.ElapsedS = round(time.Since(start).Seconds(), 2)
	p.logf("sent %d frames (%d new channels); server closes: %s; streams %v → %v (evicted %v); %s's history %d → %d messages, epoch kept %v",
		f.Frames, f.Channels, countsText(f.Closes), f.Before["relay_streams"], f.AtEnd["relay_streams"], f.AtEnd["relay_streams_evicted_total"],
		legit, f.LegitBefore, f.LegitAfter, f.LegitEpochOK)
	return f, []figure{
		{"frames sent (new channels)", fmt.Sprintf("%d (%d)", f.Frames, f.Channels)},
		{"streams before / at the end (evicted)", fmt.Sprintf("%v / %v (%v)", f.Before["relay_streams"], f.AtEnd["relay_streams"], f.AtEnd["relay_streams_evicted_total"])},
		{"a real topic's history before / after", fmt.Sprintf("%d / %d messages, epoch kept: %v", f.LegitBefore, f.LegitAfter, f.LegitEpochOK)},
	}
}

// historyOf returns how many messages GET /history/{topic} holds, and the
// topic's epoch.
func (p *prober) historyOf(ctx context.Context, topic string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.base+"/history/"+topic, nil)
	if err != nil {
		return 0, ""
	}
	p.authorize(req)
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var h struct {
		Epoch    string            `json:"epoch"`
		Messages []json.RawMessage `json:"messages"`
	}
	if json.Unmarshal(body, &h) != nil {
		return 0, ""
	}
	return len(h.Messages), h.Epoch
}
