package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The subscribe and pingflood probes: a couple of sockets that make the
// server's shared read loop work hard, next to victims that time their
// pongs (victims.go). Issue 9 found that a ~58 KB relay.v1 subscribe
// naming thousands of topics was decoded in full before the topic limit
// refused it, and that pings and empty continuation frames were not
// counted by the message rate at all.

// attackerFigures is what the attacking sockets saw.
type attackerFigures struct {
	Attackers   int            `json:"attackers"`
	FrameBytes  int            `json:"frame_bytes,omitempty"`
	Sent        int64          `json:"frames_sent"`
	Replies     map[string]int `json:"replies,omitempty"`
	Closes      map[string]int `json:"closes,omitempty"`
	ClosedAfter []float64      `json:"closed_after_ms,omitempty"`
	SetupErrors map[string]int `json:"setup_errors,omitempty"`
}

type floodFigures struct {
	Attack       attackerFigures `json:"attack"`
	Victims      victimFigures   `json:"victims"`
	ServerCPU    cpuWindows      `json:"server_cpu"`
	BaselineS    float64         `json:"baseline_s"`
	AttackS      float64         `json:"attack_s"`
	Continuation bool            `json:"continuation,omitempty"`
}

// cpuWindows is the server's CPU time (utime+stime) in the baseline and
// in the attack, as a share of one core.
type cpuWindows struct {
	BaselineS   float64 `json:"baseline_s"`
	BaselinePct float64 `json:"baseline_pct"`
	AttackS     float64 `json:"attack_s"`
	AttackPct   float64 `json:"attack_pct"`
}

func setupSubscribe(fs *flag.FlagSet) runFunc {
	nv, every, baseline := victimFlags(fs, 10*time.Second)
	attackers := fs.Int("attackers", 2, "attacking sockets")
	rate := fs.Float64("rate", 45, "subscribes per second per attacker")
	topics := fs.Int("attack-topics", 3000, "topic names in each subscribe")
	since := fs.Int("attack-since", 1000, "of which named in its since map")
	return func(ctx context.Context, p *prober) (any, []figure) {
		cmd := bigSubscribe(*topics, *since)
		p.logf("%d attackers: %d-byte subscribes (%d topics, %d in since) %.0f times a second", *attackers, len(cmd), *topics, *since, *rate)
		interval := time.Duration(float64(time.Second) / *rate)
		return p.flood(ctx, *nv, *every, *baseline, *attackers, "relay.v1", func(s *rawSocket, until time.Time, closed <-chan struct{}, sent *atomic.Int64) {
			frame := make([]byte, 0, len(cmd)+16)
			pace(ctx, interval, until, func(int) bool {
				select {
				case <-closed:
					return false
				default:
				}
				frame = appendFrame(frame[:0], true, opText, cmd, s.key)
				// No shorter deadline: a timed-out write could end mid-frame
				// and garble the stream; a server that stops reading stops
				// the attacker.
				s.conn.SetWriteDeadline(until.Add(2 * time.Second))
				if _, err := s.conn.Write(frame); err != nil {
					return false
				}
				sent.Add(1)
				return true
			})
		}, len(cmd), false)
	}
}

// bigSubscribe is a relay.v1 subscribe naming topics topics, since of
// them in its since map: about 58 KB with the defaults, under the 64 KiB
// message limit.
func bigSubscribe(topics, since int) []byte {
	var b strings.Builder
	b.WriteString(`{"type":"subscribe","id":1,"topics":[`)
	for i := range topics {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"t%d"`, i)
	}
	b.WriteString(`],"since":{`)
	for i := range min(since, topics) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"t%d":{"offset":1,"epoch":"e"}`, i*max(1, topics/max(1, since)))
	}
	b.WriteString(`}}`)
	return []byte(b.String())
}

func setupPingflood(fs *flag.FlagSet) runFunc {
	nv, every, baseline := victimFlags(fs, 5*time.Second)
	attackers := fs.Int("attackers", 2, "attacking sockets")
	cont := fs.Bool("continuation", false, "send a text frame's start, then empty non-final continuation frames, instead of pings")
	batch := fs.Int("batch", 256, "frames per write")
	size := fs.Int("payload", 0, "ping payload bytes (0 to 125)")
	return func(ctx context.Context, p *prober) (any, []figure) {
		// build makes one write's worth of frames, masked with a socket's key.
		build := func(key [4]byte) []byte {
			var b []byte
			for range *batch {
				if *cont {
					b = appendHeader(b, false, opContinuation, 0, key)
				} else {
					b = appendFrame(b, true, opPing, make([]byte, min(*size, 125)), key)
				}
			}
			return b
		}
		frameLen := len(build([4]byte{})) / max(1, *batch)
		what := "ping frames"
		if *cont {
			what = "empty non-final continuation frames"
		}
		p.logf("%d attackers: %s as fast as possible, %d per write", *attackers, what, *batch)
		return p.flood(ctx, *nv, *every, *baseline, *attackers, "", func(s *rawSocket, until time.Time, closed <-chan struct{}, sent *atomic.Int64) {
			buf := build(s.key)
			if *cont {
				if _, err := s.conn.Write(appendFrame(nil, false, opText, []byte("{"), s.key)); err != nil {
					return
				}
				sent.Add(1)
			}
			// Whole writes only (a timed-out write could end mid-frame): the
			// deadline just bounds a server that stopped reading.
			s.conn.SetWriteDeadline(until.Add(2 * time.Second))
			for time.Now().Before(until) && ctx.Err() == nil {
				select {
				case <-closed:
					return
				default:
				}
				n, err := s.conn.Write(buf)
				sent.Add(int64(n / frameLen))
				if err != nil {
					return
				}
			}
		}, frameLen, *cont)
	}
}

func victimFlags(fs *flag.FlagSet, baseline time.Duration) (*int, *time.Duration, *time.Duration) {
	return fs.Int("victims", 20, "victim relay.v1 sockets timing their pongs"),
		fs.Duration("ping-interval", 100*time.Millisecond, "victim ping period"),
		fs.Duration("baseline", baseline, "victims alone before the attack")
}

// flood runs victims alone for baseline, then attackers sockets running
// send for -duration beside them, and reports both sides.
func (p *prober) flood(ctx context.Context, nv int, every, baseline time.Duration, attackers int, protocol string,
	send func(s *rawSocket, until time.Time, closed <-chan struct{}, sent *atomic.Int64), frameBytes int, cont bool) (any, []figure) {
	f := floodFigures{Continuation: cont}
	f.Attack.Attackers, f.Attack.FrameBytes = attackers, frameBytes
	v, err := p.startVictims(ctx, nv, every)
	if err != nil {
		p.logf("victims: %v", err)
		p.res.Aborted = "victims: " + err.Error()
		return f, nil
	}
	// The attackers connect before the baseline ends, so that connecting
	// is not part of the attack window.
	var socks []*rawSocket
	var setupErrs, replies, closes counts
	for i := range attackers {
		url, err := p.register(ctx, p.http, uint64(6_000_000+i))
		if err == nil {
			var s *rawSocket
			if s, err = rawDial(ctx, p.src, url, protocol); err == nil {
				socks = append(socks, s)
				continue
			}
		}
		setupErrs.addErr(err)
	}
	cpu0 := p.cpu()
	t0 := time.Now()
	p.logf("baseline: %d victims pinging every %s for %s", nv, every, baseline)
	sleep(ctx, baseline)
	cpu1 := p.cpu()
	f.BaselineS = round(time.Since(t0).Seconds(), 2)

	v.attack()
	start := time.Now()
	until := start.Add(p.cfg.duration)
	var sent, pongs atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, s := range socks {
		closed := make(chan struct{})
		wg.Add(2)
		go func() { // the server's side: replies, pongs, and its close
			defer wg.Done()
			defer close(closed)
			for {
				fr, err := readServerFrame(s.br, 1<<20)
				if err != nil {
					if time.Now().Before(until) && ctx.Err() == nil {
						closes.add(closeEvent{err: err}.key(), 1)
						mu.Lock()
						f.Attack.ClosedAfter = append(f.Attack.ClosedAfter, round(float64(time.Since(start))/1e6, 1))
						mu.Unlock()
					}
					return
				}
				switch fr.op {
				case opClose:
					code, _ := closeCode(fr.payload)
					closes.add(fmt.Sprint(code), 1)
					mu.Lock()
					f.Attack.ClosedAfter = append(f.Attack.ClosedAfter, round(float64(time.Since(start))/1e6, 1))
					mu.Unlock()
					return
				case opPong:
					pongs.Add(1)
				case opText:
					var r struct{ Type, Code string }
					json.Unmarshal(fr.payload, &r)
					if r.Code != "" {
						r.Type += ":" + r.Code
					}
					replies.add(r.Type, 1)
				}
			}
		}()
		go func() {
			defer wg.Done()
			send(s, until, closed, &sent)
			// Stop: the attack is over, or the server closed us. Closing
			// the socket also ends the reader.
			if time.Now().Before(until) {
				select {
				case <-closed:
				case <-time.After(2 * time.Second):
				}
			}
			s.conn.Close()
		}()
	}
	go func() {
		for sleep(ctx, 5*time.Second) && time.Now().Before(until) {
			p.logf("attack: %d frames sent; attackers closed: %s", sent.Load(), closes.String())
		}
	}()
	sleep(ctx, time.Until(until))
	v.attackOver()
	cpu2 := p.cpu()
	f.AttackS = round(time.Since(start).Seconds(), 2)
	wg.Wait()
	f.Victims = v.finish(every)
	f.Attack.Sent = sent.Load()
	if n := pongs.Load(); n > 0 {
		replies.add("pong", int(n))
	}
	f.Attack.Replies, f.Attack.Closes, f.Attack.SetupErrors = replies.snapshot(), closes.snapshot(), setupErrs.snapshot()
	if cpu0 >= 0 && cpu1 >= 0 && cpu2 >= 0 {
		f.ServerCPU = cpuWindows{
			BaselineS: round((cpu1 - cpu0).Seconds(), 2), BaselinePct: round(100*(cpu1-cpu0).Seconds()/f.BaselineS, 1),
			AttackS: round((cpu2 - cpu1).Seconds(), 2), AttackPct: round(100*(cpu2-cpu1).Seconds()/f.AttackS, 1),
		}
	}
	p.logf("victims: baseline %s; under attack %s; lost %d/%d; closes %s", f.Victims.Baseline, f.Victims.Attack, f.Victims.LostBaseline, f.Victims.LostAttack, countsText(f.Victims.Closes))
	p.logf("attackers: %d frames sent, replies %s, closed: %s after %v ms; server CPU %.0f%% baseline, %.0f%% under attack",
		f.Attack.Sent, countsText(f.Attack.Replies), countsText(f.Attack.Closes), f.Attack.ClosedAfter, f.ServerCPU.BaselinePct, f.ServerCPU.AttackPct)
	closedText := countsText(f.Attack.Closes)
	if len(f.Attack.ClosedAfter) > 0 {
		closedText += fmt.Sprintf(" after %v ms", f.Attack.ClosedAfter)
	}
	return f, []figure{
		{"victim pong p99 baseline → under attack", fmt.Sprintf("%.2f → %.2f ms (max %.2f ms, lost %d)", f.Victims.Baseline.P99, f.Victims.Attack.P99, f.Victims.Attack.Max, f.Victims.LostAttack)},
		{"attack frames sent", fmt.Sprint(f.Attack.Sent)},
		{"attackers' replies", countsText(f.Attack.Replies)},
		{"attackers closed", closedText},
		{"server CPU baseline → under attack", fmt.Sprintf("%.0f%% → %.0f%% of a core", f.ServerCPU.BaselinePct, f.ServerCPU.AttackPct)},
	}
}

// cpu is the server's CPU time so far, -1 without -server-pid.
func (p *prober) cpu() time.Duration {
	if p.cfg.serverPID <= 0 {
		return -1
	}
	return cpuTime(p.cfg.serverPID)
}
