package connlimit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// logEvery is how often, at most, failed accepts are logged.
const logEvery = 10 * time.Second

// Listener wraps inner so that every connection it accepts is counted, and
// admitted only within the caps. Its Accept retries temporary failures
// (EMFILE, ENFILE, ENOBUFS…) itself, waiting 5ms doubling to 1s between
// tries as net/http would, but logging at most one line per 10s instead of
// one per failure; it returns only errors that will not go away, such as
// the listener being closed.
//
// Its connections are net.Conns that also offer what the layers above
// look for on a *net.TCPConn: SyscallConn (the WebSocket layer reads and
// writes the descriptor itself), CloseWrite, and ReadFrom (net/http's
// sendfile path).
func (l *Limiter) Listener(inner net.Listener) net.Listener {
	return &listener{Listener: inner, l: l, done: make(chan struct{})}
}

type listener struct {
	net.Listener
	l        *Limiter
	done     chan struct{} // closed by Close, to cut a backoff short
	doneOnce sync.Once
}

func (ln *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		nc, err := ln.Listener.Accept()
		if err != nil {
			if !retryable(err) {
				return nil, err
			}
			ln.l.acceptFailed(err)
			delay = min(max(2*delay, ln.l.backoffMin), ln.l.backoffMax)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ln.done:
				t.Stop() // the next Accept reports the closed listener
			}
			continue
		}
		delay = 0
		c := &conn{Conn: nc, owner: ln.l}
		if ln.l.admit(c) {
			return c, nil
		}
		nc.Close()
	}
}

func (ln *listener) Close() error {
	ln.doneOnce.Do(func() { close(ln.done) })
	return ln.Listener.Close()
}

// retryable reports whether a failed accept may succeed if tried again.
// net/http's own test is the deprecated Temporary method, which covers
// EMFILE, ENFILE and an aborted or reset connection; ENOBUFS and ENOMEM
// are kernel memory pressure, which passes too.
func retryable(err error) bool {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	var te interface{ Temporary() bool }
	if errors.As(err, &te) && te.Temporary() {
		return true
	}
	return errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// acceptFailed counts a failed accept and logs it, within its budget of
// one line per logEvery (kind "accept_error"); the line says how many
// failures there were since the previous one. Under descriptor exhaustion
// the backoff alone would still log one line a second.
func (l *Limiter) acceptFailed(err error) {
	l.stats.AcceptErrors.Add(1)
	l.unreported.Add(1)
	ctx := context.Background()
	if !l.logs.Allow(ctx, slog.LevelError, kindAcceptError) {
		return
	}
	l.logs.Logger().LogAttrs(ctx, slog.LevelError, "accept failing; retrying", slog.Any("err", err), slog.Uint64("errors", l.unreported.Swap(0)))
}

// conn is an accepted connection, counted until it is closed.
type conn struct {
	net.Conn
	owner  *Limiter
	key    netip.Addr // see addrKey
	exempt bool       // from the per-address cap
	closed atomic.Bool
	shed   atomic.Bool // closed to make room; its requests must not run

	// Guarded by owner.mu.
	prev, next *conn // the pending list, while pending
	state      state // what it is doing
	released   bool  // its slot has been given back
}

// Close closes the connection and gives its slot back; later calls do
// nothing and return net.ErrClosed.
func (c *conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return net.ErrClosed
	}
	err := c.Conn.Close()
	c.owner.release(c)
	return err
}

// SyscallConn returns the inner connection's raw descriptor access.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// CloseWrite shuts the inner connection's write side.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// ReadFrom lets net/http use the inner connection's sendfile or splice.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
