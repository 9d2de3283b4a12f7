package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Victims are well-behaved relay.v1 sockets that ping the server and time
// the pongs: what an attacker sharing the server's read loop costs
// everyone else. The server answers a relay.v1 ping after every frame
// before it was handled, so a pong's round trip includes whatever the
// reader was busy with.
type victims struct {
	conns       []*websocket.Conn
	attackStart atomic.Int64 // unix ns; 0 during the baseline
	attackEnd   atomic.Int64
	stopc       chan struct{}
	wg          sync.WaitGroup
	mu          sync.Mutex
	sent        map[[2]int]time.Time // (victim, id) → when, until answered
	base, under latencies
	closes      counts
}

// victimFigures compares the pong round trips before and during the
// attack. Lost pings were not answered by the end (plus a second).
type victimFigures struct {
	Victims      int            `json:"victims"`
	IntervalMs   float64        `json:"ping_interval_ms"`
	Baseline     summary        `json:"baseline"`
	Attack       summary        `json:"attack"`
	LostBaseline int            `json:"lost_baseline"`
	LostAttack   int            `json:"lost_attack"`
	Closes       map[string]int `json:"closes,omitempty"`
}

func (p *prober) startVictims(ctx context.Context, n int, every time.Duration) (*victims, error) {
	v := &victims{stopc: make(chan struct{}), sent: map[[2]int]time.Time{}}
	dialer := newDialer(p.src, "relay.v1")
	for i := range n {
		url, err := p.register(ctx, p.http, uint64(8_000_000+i))
		if err != nil {
			v.stop()
			return nil, err
		}
		c, _, err := dialer.DialContext(ctx, url, nil)
		if err != nil {
			v.stop()
			return nil, fmt.Errorf("victim %d: %w", i, err)
		}
		v.conns = append(v.conns, c)
	}
	began := time.Now()
	for i, c := range v.conns {
		v.wg.Add(2)
		go v.read(i, c, began)
		go v.ping(i, c, every)
	}
	return v, nil
}

// ping pings every interval on average, at random moments (uniform
// between half and one and a half intervals): pings on a fixed period
// can lock in phase with an attacker's fixed period, and then always
// (or never) land while the server is busy with it.
func (v *victims) ping(i int, c *websocket.Conn, every time.Duration) {
	defer v.wg.Done()
	t := time.NewTimer(every/2 + rand.N(every))
	defer t.Stop()
	for id := 1; ; id++ {
		select {
		case <-v.stopc:
			return
		case <-t.C:
			t.Reset(every/2 + rand.N(every))
		}
		v.mu.Lock()
		v.sent[[2]int{i, id}] = time.Now()
		v.mu.Unlock()
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"ping","id":%d}`, id)) != nil {
			return
		}
	}
}

func (v *victims) read(i int, c *websocket.Conn, began time.Time) {
	defer v.wg.Done()
	for {
		_, msg, err := c.ReadMessage()
		now := time.Now()
		if err != nil {
			select {
			case <-v.stopc: // our own close
			default:
				v.closes.add(gorillaClose(err, began).key(), 1)
			}
			return
		}
		if !bytes.HasPrefix(msg, []byte(`{"type":"pong"`)) {
			continue
		}
		var r struct{ ID int }
		if json.Unmarshal(msg, &r) != nil {
			continue
		}
		v.mu.Lock()
		t0, ok := v.sent[[2]int{i, r.ID}]
		delete(v.sent, [2]int{i, r.ID})
		v.mu.Unlock()
		if !ok {
			continue
		}
		switch a, e := v.attackStart.Load(), v.attackEnd.Load(); {
		case a == 0 || t0.UnixNano() < a:
			v.base.add(now.Sub(t0))
		case e == 0 || t0.UnixNano() < e:
			v.under.add(now.Sub(t0))
		}
	}
}

// attack marks the attack's start (pings sent from now on count as under
// attack); attackOver marks its end.
func (v *victims) attack()     { v.attackStart.Store(time.Now().UnixNano()) }
func (v *victims) attackOver() { v.attackEnd.Store(time.Now().UnixNano()) }

// finish stops pinging, waits a second for the last pongs and closes.
func (v *victims) finish(every time.Duration) victimFigures {
	if v.attackEnd.Load() == 0 {
		v.attackOver()
	}
	time.Sleep(time.Second)
	v.stop()
	f := victimFigures{Victims: len(v.conns), IntervalMs: float64(every) / 1e6, Baseline: v.base.summary(), Attack: v.under.summary(), Closes: v.closes.snapshot()}
	a, e := v.attackStart.Load(), v.attackEnd.Load()
	v.mu.Lock()
	for _, t0 := range v.sent {
		switch ns := t0.UnixNano(); {
		case a == 0 || ns < a:
			f.LostBaseline++
		case ns < e:
			f.LostAttack++
		}
	}
	v.mu.Unlock()
	return f
}

func (v *victims) stop() {
	select {
	case <-v.stopc:
		return
	default:
	}
	close(v.stopc)
	for _, c := range v.conns {
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
	}
	done := make(chan struct{})
	go func() { v.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
	}
	for _, c := range v.conns {
		c.Close()
	}
}
