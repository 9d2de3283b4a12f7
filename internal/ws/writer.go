package ws

import (
	"errors"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// writeBufSize is the size of a writer's coalescing buffer: everything
// queued on a connection goes out in one write of up to this many bytes.
const writeBufSize = 64 << 10

// maxKeptQueue is the largest queue backing array a connection keeps
// between flushes; larger ones go back to the garbage collector.
const maxKeptQueue = 64

// writer is a shared goroutine that flushes connections with non-blocking
// writes. Connections become ready when their queue goes from empty to
// non-empty; a writer then sends everything queued on each in one write. A
// connection whose socket pushes back is handed to a goroutine of its own
// (writeBlocking) so it never holds up the others.
type writer struct {
	mu    sync.Mutex
	ready []*Conn // connections to flush, each at most once
	spare []*Conn // the other buffer: only the writer goroutine holds it
	wake  chan struct{}

	buf []byte // owned by the writer goroutine
	// op and opWrite do the raw write: bound once, so a write allocates no
	// closure.
	op      rawWrite
	opWrite func(fd uintptr) bool
}

func newWriter() *writer {
	w := &writer{wake: make(chan struct{}, 1), buf: make([]byte, 0, writeBufSize)}
	w.opWrite = w.op.write
	return w
}

// rawWrite writes p to a descriptor without ever waiting for it.
type rawWrite struct {
	p   []byte
	n   int
	err error
}

func (o *rawWrite) write(fd uintptr) bool {
	o.n, o.err = 0, nil
	for o.n < len(o.p) {
		m, e := syscall.Write(int(fd), o.p[o.n:])
		if m > 0 {
			o.n += m
		}
		if e == syscall.EINTR {
			continue
		}
		if e != nil {
			o.err = e
			break
		}
		if m == 0 {
			o.err = syscall.EAGAIN
			break
		}
	}
	return true // never wait here: waiting is writeBlocking's job
}

// add makes c ready. The caller has just claimed c's output side.
func (w *writer) add(c *Conn) {
	w.mu.Lock()
	w.ready = append(w.ready, c)
	first := len(w.ready) == 1
	w.mu.Unlock()
	if first {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// run flushes ready connections until stop is closed.
func (w *writer) run(stop <-chan struct{}) {
	for {
		select {
		case <-w.wake:
		case <-stop:
			return
		}
		for {
			// Yield first: publishers that are already runnable get to
			// queue their messages, so each connection's frames from a
			// burst of publishes leave in a single write.
			runtime.Gosched()
			w.mu.Lock()
			if len(w.ready) == 0 {
				w.mu.Unlock()
				break
			}
			batch := w.ready
			w.ready, w.spare = w.spare, nil
			w.mu.Unlock()
			for _, c := range batch {
				c.flush(w)
			}
			clear(batch)
			w.spare = batch[:0]
		}
	}
}

// flush sends everything queued on c. It runs on the writer goroutine.
func (c *Conn) flush(w *writer) {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	c.inflight += c.queued
	c.queued = 0
	c.mu.Unlock()

	if c.raw == nil {
		go c.writeBlocking(nil, q)
		return
	}
	written := 0
	pending := w.buf[:0]
	for i, f := range q {
		if len(pending)+len(f) > cap(pending) && len(pending) > 0 {
			n, ok := c.writeOut(w, pending, true, q[i:])
			written += n
			if !ok {
				c.account(written)
				return
			}
			pending = pending[:0]
		}
		if len(f) > cap(pending) {
			n, ok := c.writeOut(w, f, false, q[i+1:])
			written += n
			if !ok {
				c.account(written)
				return
			}
			continue
		}
		pending = append(pending, f...)
	}
	if len(pending) > 0 {
		n, ok := c.writeOut(w, pending, true, nil)
		written += n
		if !ok {
			c.account(written)
			return
		}
	}
	clear(q)
	c.mu.Lock()
	c.inflight -= written
	if c.queue == nil && cap(q) <= maxKeptQueue {
		c.queue = q[:0]
	}
	again := len(c.queue) > 0 && c.state != stateClosed
	var fin, shut bool
	if !again {
		fin, shut = c.drainedLocked()
	}
	c.mu.Unlock()
	if again {
		w.add(c) // more arrived while writing: flush it in the next round
		return
	}
	c.afterDrain(fin, shut)
}

// writeOut writes p without blocking. If the socket takes only part of it,
// the rest of p (copied when p is the writer's buffer) and the frames in
// rest go to a goroutine that waits for the socket; ok is then false, as it
// is when the connection failed and was finished.
func (c *Conn) writeOut(w *writer, p []byte, borrowed bool, rest [][]byte) (n int, ok bool) {
	n, err := c.writeNow(w, p)
	if err == nil {
		return n, true
	}
	if err != syscall.EAGAIN {
		c.finish(causeWriteFailed)
		return n, false
	}
	left := p[n:]
	if borrowed {
		left = append([]byte(nil), left...)
	}
	c.srv.stats.Backpressured.Add(1)
	go c.writeBlocking(left, rest)
	return n, false
}

// writeNow writes as much of p as the socket takes right now, using the
// writer's op (so only on w's goroutine).
func (c *Conn) writeNow(w *writer, p []byte) (n int, err error) {
	w.op = rawWrite{p: p}
	werr := c.raw.Write(w.opWrite)
	n, err = w.op.n, w.op.err
	w.op.p = nil
	if werr != nil {
		return n, werr
	}
	return n, err
}

func (c *Conn) account(written int) {
	c.mu.Lock()
	c.inflight -= written
	c.mu.Unlock()
}

// blockBufs holds the coalescing buffers of goroutines in writeBlocking.
var blockBufs = sync.Pool{New: func() any { b := make([]byte, 0, writeBufSize); return &b }}

// writeBlocking owns c's output side while its socket pushes back (or
// always, for connections without a descriptor). It writes first, then the
// frames in rest, then whatever is queued meanwhile, each write bounded by
// the write timeout, and returns the output side once the queue is empty.
func (c *Conn) writeBlocking(first []byte, rest [][]byte) {
	bp := blockBufs.Get().(*[]byte)
	defer blockBufs.Put(bp)
	for {
		if len(first) > 0 && !c.writeWait(first) {
			return
		}
		buf := (*bp)[:0]
		for _, f := range rest {
			if len(buf)+len(f) > cap(buf) && len(buf) > 0 {
				if !c.writeWait(buf) {
					return
				}
				buf = buf[:0]
			}
			if len(f) > cap(buf) {
				if !c.writeWait(f) {
					return
				}
				continue
			}
			buf = append(buf, f...)
		}
		if len(buf) > 0 && !c.writeWait(buf) {
			return
		}
		clear(rest)
		first = nil
		c.mu.Lock()
		if len(c.queue) == 0 || c.state == stateClosed {
			fin, shut := c.drainedLocked()
			c.mu.Unlock()
			c.afterDrain(fin, shut)
			return
		}
		rest = c.queue
		c.queue = nil
		c.inflight += c.queued
		c.queued = 0
		c.mu.Unlock()
	}
}

// writeWait writes all of p, waiting for the socket up to the write
// timeout. A client that takes longer is too slow to keep: it is finished.
func (c *Conn) writeWait(p []byte) bool {
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	n, err := c.nc.Write(p)
	c.nc.SetWriteDeadline(time.Time{})
	c.account(n)
	if err != nil {
		cause := causeWriteFailed
		if errors.Is(err, syscall.ETIMEDOUT) || isTimeout(err) {
			c.srv.stats.WriteTimeouts.Add(1)
			cause = causeWriteTimeout
		}
		c.finish(cause)
		return false
	}
	return true
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
