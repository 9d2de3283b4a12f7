package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The partial probe: seed sockets that each send a non-final text frame
// of 65,000 bytes, then the header of a continuation frame declaring
// 65,536 more, then drip that payload a byte every 5 s. A server that
// buffers until a message is complete holds ~64 KB per socket for as long
// as the drip lasts, and the drip keeps the idle timeout away. The header
// alone shows the message will exceed 64 KiB, so a server can refuse it
// (1009) before reading on.

type partialFigures struct {
	Sockets     int            `json:"sockets"`
	Opened      int64          `json:"opened"`
	SetupErrors map[string]int `json:"setup_errors,omitempty"`
	SetupS      float64        `json:"setup_s"`
	FirstBytes  int            `json:"first_frame_bytes"`
	Declared    int            `json:"continuation_declared_bytes"`
	Dripped     int64          `json:"bytes_dripped"`
	Closed      int64          `json:"closed_by_server"`
	Closes      map[string]int `json:"closes,omitempty"`
	Reasons     map[string]int `json:"close_reasons,omitempty"`
	OpenFor     summary        `json:"open_until_closed"`
	OpenAtEnd   int64          `json:"open_at_end"`
	ElapsedS    float64        `json:"elapsed_s"`
}

func setupPartial(fs *flag.FlagSet) runFunc {
	n := fs.Int("n", 3000, "sockets")
	first := fs.Int("first", 65000, "payload bytes of the first (non-final) text frame")
	declared := fs.Int("declared", 65536, "payload length the continuation frame's header declares")
	drip := fs.Duration("drip", 5*time.Second, "one byte of the continuation's payload this often")
	conc := fs.Int("conc", 64, "socket setups (register, upgrade, first frame) in flight")
	return func(ctx context.Context, p *prober) (any, []figure) {
		start := time.Now()
		until := start.Add(p.cfg.duration)
		p.logf("%d sockets: a %d-byte non-final text frame, then a continuation declaring %d bytes, one byte every %s, for %s", *n, *first, *declared, *drip, p.cfg.duration)
		payload := bytes.Repeat([]byte("a"), *first)
		var (
			opened, dripped, closed, open, setupNs atomic.Int64
			setupErrs, codes, reasons              counts
			openFor                                latencies
			wg                                     sync.WaitGroup
		)
		sem := make(chan struct{}, *conc)
		for i := range *n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				s, err := p.partialSocket(ctx, uint64(7_000_000+i), payload, *declared)
				<-sem
				if err != nil {
					setupErrs.addErr(err)
					return
				}
				setupNs.Store(int64(time.Since(start)))
				began := time.Now()
				opened.Add(1)
				open.Add(1)
				ended := make(chan closeEvent, 1)
				go func() {
					for {
						f, err := readServerFrame(s.br, 4096)
						if err != nil {
							ended <- closeEvent{err: err, after: time.Since(began)}
							return
						}
						if f.op == opClose {
							code, reason := closeCode(f.payload)
							ended <- closeEvent{code: code, reason: reason, after: time.Since(began)}
							return
						}
					}
				}()
				t := time.NewTicker(*drip)
				defer t.Stop()
				end := time.NewTimer(time.Until(until))
				defer end.Stop()
				var ev *closeEvent
			drip:
				for pos := 0; ev == nil; {
					select {
					case e := <-ended:
						ev = &e
					case <-ctx.Done():
						break drip
					case <-end.C:
						break drip
					case <-t.C:
						if pos >= *declared {
							continue // the whole payload is out: wait for the end
						}
						if _, err := s.conn.Write(appendMasked(nil, payload[:1], s.key, pos)); err == nil {
							pos++
							dripped.Add(1)
							continue
						}
						// A failed write: the server is closing us; its
						// close frame, if any, is on the way.
						s.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
						e := <-ended
						ev = &e
					}
				}
				if ev == nil {
					select {
					case e := <-ended:
						ev = &e
					default:
					}
				}
				s.conn.Close()
				if ev != nil {
					open.Add(-1)
					closed.Add(1)
					codes.add(ev.key(), 1)
					if ev.reason != "" {
						reasons.add(ev.reason, 1)
					}
					openFor.add(ev.after)
				}
			}()
		}
		go func() {
			for sleep(ctx, 5*time.Second) && time.Now().Before(until) {
				p.logf("%d sockets open, %d closed by the server (%s); server RSS peak %s", open.Load(), closed.Load(), codes.String(), mib(p.srvPeak()))
			}
		}()
		// Done when every socket is closed, or at the end.
		all := make(chan struct{})
		go func() { wg.Wait(); close(all) }()
		select {
		case <-all:
		case <-ctx.Done():
		case <-time.After(time.Until(until)):
		}
		atEnd := open.Load()
		<-all
		f := partialFigures{
			Sockets: *n, Opened: opened.Load(), SetupErrors: setupErrs.snapshot(), SetupS: round(float64(setupNs.Load())/1e9, 2),
			FirstBytes: *first, Declared: *declared, Dripped: dripped.Load(), Closed: closed.Load(),
			Closes: codes.snapshot(), Reasons: reasons.snapshot(), OpenFor: openFor.summary(), OpenAtEnd: atEnd,
			ElapsedS: round(time.Since(start).Seconds(), 2),
		}
		p.logf("%d sockets opened in %.1f s (errors: %s); closed by the server %d: %s; open until closed %s; still open at the end %d",
			f.Opened, f.SetupS, countsText(f.SetupErrors), f.Closed, countsText(f.Closes), f.OpenFor, f.OpenAtEnd)
		openText := "none closed"
		if f.OpenFor.N > 0 {
			openText = fmt.Sprintf("%s / %s", msText(f.OpenFor.P50), msText(f.OpenFor.Max))
		}
		return f, []figure{
			{"sockets opened / closed by the server / open at the end", fmt.Sprintf("%d / %d / %d", f.Opened, f.Closed, f.OpenAtEnd)},
			{"close codes", countsText(f.Closes)},
			{"open until closed by the server (p50 / max)", openText},
		}
	}
}

// partialSocket registers user, upgrades (seed protocol) and sends the
// first frame and the continuation's header.
func (p *prober) partialSocket(ctx context.Context, user uint64, payload []byte, declared int) (*rawSocket, error) {
	url, err := p.register(ctx, p.http, user)
	if err != nil {
		return nil, err
	}
	s, err := rawDial(ctx, p.src, url, "")
	if err != nil {
		return nil, err
	}
	b := appendFrame(make([]byte, 0, len(payload)+32), false, opText, payload, s.key)
	b = appendHeader(b, true, opContinuation, declared, s.key)
	s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.conn.Write(b); err != nil {
		s.conn.Close()
		return nil, fmt.Errorf("first frame: %w", err)
	}
	s.conn.SetWriteDeadline(time.Time{})
	return s, nil
}

// msText shows a duration in milliseconds, in seconds from 10 s.
func msText(ms float64) string {
	if ms >= 10000 {
		return fmt.Sprintf("%.1f s", ms/1000)
	}
	return fmt.Sprintf("%.1f ms", ms)
}
