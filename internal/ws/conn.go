package ws

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/relayhq/relay/internal/relay"
)

// Handler receives what a client sends. Its methods run on the
// connection's reader goroutine, one call at a time.
type Handler interface {
	// HandleText handles one complete, valid UTF-8 text message. msg is
	// only valid during the call.
	HandleText(c *Conn, msg []byte)
	// HandleClose is called once, after the client can send no more.
	HandleClose(c *Conn)
}

// connState is where a connection is in its close handshake.
type connState uint8

const (
	stateOpen      connState = iota
	stateClosing             // a close frame is queued; nothing more is accepted
	stateCloseSent           // the close frame is written and the write side shut
	stateClosed              // the socket is closed
)

// Conn is one WebSocket connection. It owns its socket: exactly one reader
// goroutine (which parks without a buffer while the client is quiet) and,
// only while there is something to write, one writer (a shared writer
// goroutine for non-blocking writes, or a goroutine of its own while the
// socket pushes back).
//
// Deliver and Close never block. Everything the connection sends goes
// through its queue, so control frames never interleave with messages.
type Conn struct {
	srv    *Server
	nc     net.Conn
	raw    syscall.RawConn // nil when there is no file descriptor (TLS)
	p      *poller         // reads c, or nil when a goroutine does
	fd     int32           // c's descriptor, when p is set
	w      *writer
	format relay.Format
	encode func(*relay.Message) []byte
	prof   *Profile // nil: Relay's own protocols
	bucket uint32   // keepalive bucket: which tick of the cycle pings it
	proto  string
	id     uint64 // names the connection in log lines

	lastHeard atomic.Int64 // unix nanoseconds of the last read from the client
	// msgStart is the unix nanoseconds of the read that began the message
	// (or frame) the reader is still waiting for the rest of, 0 when
	// nothing is pending. The reader sets it; keepalive enforces
	// MessageTimeout with it.
	msgStart atomic.Int64

	h  Handler
	rd readState // owned by the reader goroutine

	mu        sync.Mutex
	queue     [][]byte  // frames waiting for a writer, oldest first
	queued    int       // bytes in queue
	inflight  int       // bytes a writer has taken but not yet written
	scheduled bool      // a writer owns the output side
	state     connState //
	readDone  bool      // the reader has stopped: no close reply will be read
	deadline  int64     // unix nanoseconds by which a closing handshake ends
	end       ending    // why the connection ends, for its log line
	logAttrs  []slog.Attr
}

// ending is why a connection ended: the close frame that started its
// closing handshake, and how the socket went when the handshake did not
// complete. finish logs it.
type ending struct {
	code  uint16 // the close code sent: ours, or the echo of the client's; 0 when none was
	text  string // the close reason: ours, or the client's
	by    string // who started the handshake: "server" or "client"
	cause string // how the socket ended short of a completed handshake: see finish
	level slog.Level
	kind  string // the log budget (package logthrottle)
}

// ID returns the number that names the connection in log lines: unique
// within its Server.
func (c *Conn) ID() uint64 { return c.id }

// SetLogAttrs sets attributes (such as the user) added to the
// connection's log lines. The caller must not change attrs afterwards.
func (c *Conn) SetLogAttrs(attrs ...slog.Attr) {
	c.mu.Lock()
	c.logAttrs = attrs
	c.mu.Unlock()
}

// Subprotocol returns the negotiated Sec-WebSocket-Protocol, or "".
func (c *Conn) Subprotocol() string { return c.proto }

// RemoteAddr returns the client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Start begins reading with h. It must be called exactly once after
// Upgrade, even for a connection the caller closes at once.
func (c *Conn) Start(h Handler) {
	c.h = h
	if c.p != nil && c.p.add(c, int(c.fd)) == nil {
		return
	}
	c.p = nil
	go c.readLoop()
}

// Deliver queues the message in d, encoded once per format for all
// subscribers. It implements relay.Subscriber.
func (c *Conn) Deliver(d *relay.Delivery) bool {
	f := d.Frame(c.format, c.encode)
	return f != nil && c.enqueue(f)
}

// SendText queues a text message for this connection only.
func (c *Conn) SendText(payload []byte) bool {
	return c.enqueue(EncodeText(payload))
}

// enqueue appends frame to the queue and makes sure a writer will send it.
// A frame that would take the queue past its byte limit closes the
// connection with the slow-consumer code instead: the client is told, and
// nothing it could still receive is dropped silently.
func (c *Conn) enqueue(frame []byte) bool {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return false
	}
	if c.queued+c.inflight+len(frame) > c.srv.cfg.SendQueueBytes {
		c.mu.Unlock()
		c.srv.stats.SlowConsumers.Add(1)
		c.CloseWith(relay.CloseSlowConsumer, "")
		return false
	}
	c.pushAndUnlock(frame)
	return true
}

// pushAndUnlock appends frame to the queue, releases c.mu and, if no
// writer owns the output side yet, hands the connection to its writer.
func (c *Conn) pushAndUnlock(frame []byte) {
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	sched := !c.scheduled
	c.scheduled = true
	c.mu.Unlock()
	if sched {
		c.w.add(c)
	}
}

// Close starts the closing handshake for reason. It implements
// relay.Subscriber.
func (c *Conn) Close(reason relay.CloseReason) { c.CloseWith(reason, "") }

// CloseWith starts the closing handshake for reason with a reason text for
// the client (the table's text when empty). Messages already queued are
// still sent first, except for a slow consumer, whose queue is dropped.
func (c *Conn) CloseWith(reason relay.CloseReason, text string) {
	cc := closeCodes[reason]
	if c.prof != nil {
		if pc, ok := c.prof.CloseCodes[reason]; ok {
			cc.code, cc.text, cc.kind = pc.Code, pc.Text, "ws_close_"+strconv.Itoa(int(pc.Code))
		}
	}
	if text == "" {
		text = cc.text
	}
	c.startClose(closeFrame(cc.code, text), reason == relay.CloseSlowConsumer,
		ending{code: cc.code, text: text, by: "server", level: cc.level, kind: cc.kind})
}

// CloseCode starts the closing handshake with a code of the connection's
// own protocol (such as Pusher's 4001 or 4009), logged at Info.
func (c *Conn) CloseCode(code uint16, text string) {
	c.startClose(closeFrame(code, text), false,
		ending{code: code, text: text, by: "server", level: slog.LevelInfo, kind: "ws_close_" + strconv.Itoa(int(code))})
}

// startClose queues frame (a close frame) as the last frame; end says why,
// for the log.
func (c *Conn) startClose(frame []byte, drop bool, end ending) {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return
	}
	c.end = end
	if drop {
		clear(c.queue)
		c.queue = c.queue[:0]
		c.queued = 0
	}
	c.state = stateClosing
	c.deadline = time.Now().Add(c.srv.cfg.CloseTimeout).UnixNano()
	c.pushAndUnlock(frame)
}

// control queues a pong or ping, counted against the queue limit so that a
// client pinging without reading cannot grow it.
func (c *Conn) control(op byte, payload []byte) {
	c.enqueue(appendFrame(make([]byte, 0, frameSize(len(payload))), op, payload))
}

// Causes given to finish: how a socket ended when its close handshake did
// not run to completion ("" when it did).
const (
	causeLost         = "connection lost"           // the client went away without a close frame
	causeWriteFailed  = "write failed"              // the socket refused a write (reset, broken pipe)
	causeWriteTimeout = "write timeout"             // the client read nothing for WriteTimeout
	causeCloseTimeout = "close handshake timed out" // no reply to our close frame within CloseTimeout
	causeShutdown     = "shutdown timeout"          // still open when the shutdown timeout ended
)

// finish closes the socket at once and forgets the connection, then logs
// why it ended; cause says how, when the close handshake did not complete.
// It is safe to call more than once and from any goroutine. A connection
// read by a poller is only shut down here: the poller's loop sees EOF and
// closes it (readerExit), so its handler never runs concurrently with the
// close.
func (c *Conn) finish(cause string) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	if cause != "" {
		if c.end.kind == "" { // no close frame was sent: the cause is the whole story
			c.end.level, c.end.kind = slog.LevelDebug, "ws_close_lost"
			if cause == causeWriteTimeout {
				c.end.level, c.end.kind = slog.LevelInfo, "ws_close_write_timeout"
			}
		}
		c.end.cause = cause
	}
	end, attrs := c.end, c.logAttrs
	c.state = stateClosed
	clear(c.queue)
	c.queue = nil
	c.queued = 0
	readerGone := c.readDone
	c.mu.Unlock()
	if c.p == nil || readerGone {
		c.nc.Close()
	} else {
		c.raw.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	}
	c.logEnd(end, attrs) // before remove: a Server's Run returns only after its connections' lines
	c.srv.remove(c)
}

// logEnd logs the connection's end at its level, within its kind's budget:
// the close code and reason, who started the close, how the socket ended
// if the handshake did not complete, and the client's address. Nothing is
// built when the level is disabled or the budget spent.
func (c *Conn) logEnd(e ending, attrs []slog.Attr) {
	lt, ctx := c.srv.cfg.Log, context.Background()
	if !lt.Allow(ctx, e.level, e.kind) {
		return
	}
	a := make([]slog.Attr, 0, 8+len(attrs))
	a = append(a, slog.Uint64("conn", c.id), slog.String("remote", c.nc.RemoteAddr().String()))
	if e.code != 0 {
		a = append(a, slog.Int("code", int(e.code)), slog.String("reason", e.text), slog.String("by", e.by))
	}
	if e.cause != "" {
		a = append(a, slog.String("cause", e.cause))
	}
	a = append(a, attrs...)
	lt.Logger().LogAttrs(ctx, e.level, "socket closed", a...)
}

// drainedLocked runs when a writer has sent everything queued. It releases
// the output side and says what the caller must do once it has unlocked:
// finish the connection, or shut its write side. When the queue ended with
// the close frame, the write side is shut so the client sees the close
// frame then EOF, and the client's reply is awaited unless the reader has
// already stopped. The caller acts after unlocking because shutting a TLS
// connection's write side writes an alert, which may block.
func (c *Conn) drainedLocked() (finish, shutWrite bool) {
	c.scheduled = false
	if c.state != stateClosing {
		return false, false
	}
	if c.readDone {
		return true, false
	}
	c.state = stateCloseSent
	return false, true
}

// afterDrain carries out what drainedLocked asked for.
func (c *Conn) afterDrain(finish, shutWrite bool) {
	switch {
	case finish:
		c.finish("")
	case shutWrite:
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
}

// keepalive runs on every tick of the shared ticker: it pings the
// connections of this tick's bucket, closes the idle ones and those whose
// client has taken longer than MessageTimeout to finish a message, ends
// close handshakes that ran out of time and lets go of queue memory that a
// quiet connection no longer needs.
func (c *Conn) keepalive(now int64, bucket uint32) {
	c.mu.Lock()
	switch c.state {
	case stateOpen:
		c.mu.Unlock()
		if now-c.lastHeard.Load() > int64(c.srv.cfg.IdleTimeout) {
			c.srv.stats.IdleCloses.Add(1)
			c.Close(relay.CloseIdle)
			return
		}
		// A client trickling a message in keeps lastHeard fresh, and the
		// reader holds what it has sent: the message as a whole is timed.
		if start := c.msgStart.Load(); start != 0 && now-start > int64(c.srv.cfg.MessageTimeout) {
			c.srv.stats.SlowMessages.Add(1)
			c.CloseWith(relay.ClosePolicy, c.srv.slowText)
			return
		}
		if c.bucket == bucket {
			if c.prof != nil && c.prof.Ping != nil {
				c.enqueue(c.prof.Ping)
			} else {
				c.enqueue(pingFrame)
			}
		}
		c.mu.Lock()
		if !c.scheduled && len(c.queue) == 0 && cap(c.queue) > 0 {
			c.queue = nil
		}
		c.mu.Unlock()
	case stateClosing, stateCloseSent:
		late := now > c.deadline
		c.mu.Unlock()
		if late {
			c.finish(causeCloseTimeout)
		}
	default:
		c.mu.Unlock()
	}
}
