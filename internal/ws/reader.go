package ws

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/relay"
)

// readState is the reader goroutine's parsing state. Both slices are nil
// between messages, so a quiet connection holds no read memory. While a
// message arrives they grow by append with what was received, never to a
// declared length, and together hold at most MaxMessageBytes of payload
// plus one frame header (or one control frame), and append's spare
// capacity.
type readState struct {
	partial []byte // the start of a frame whose rest has not arrived
	msg     []byte // the fragments of a message being assembled
	msgOp   byte   // the opcode of that message, 0 when none
	// tokens and refilled (unix nanoseconds) are the client's frame-rate
	// bucket.
	tokens   float64
	refilled int64
}

// readBufSize is the size of the pooled buffers reads land in.
const readBufSize = 8 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// readable runs on a poller's loop when c's socket is readable: one read
// into a pooled buffer, then the frames in it.
func (c *Conn) readable() {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		for {
			n, rerr = syscall.Read(int(fd), *bp)
			if rerr != syscall.EINTR {
				return true
			}
		}
	})
	if err == nil && rerr == syscall.EAGAIN {
		return // a stale event
	}
	if err != nil || rerr != nil || n == 0 {
		c.readerExit()
		return
	}
	now := time.Now().UnixNano()
	c.lastHeard.Store(now)
	if !c.consume((*bp)[:n], now) {
		c.readerExit()
	}
}

// readLoop is the reader goroutine of a connection that has no poller
// (TLS, or a platform without epoll). With a descriptor it parks in the
// network poller without a buffer; without one it must read with a buffer
// in hand.
func (c *Conn) readLoop() {
	defer c.readerExit()
	for {
		buf, n, err := c.read()
		if n > 0 { // handle the data even when an error came with it (TLS: data then close_notify)
			now := time.Now().UnixNano()
			c.lastHeard.Store(now)
			more := c.consume((*buf)[:n], now)
			readBufs.Put(buf)
			if !more {
				return
			}
		} else if buf != nil {
			readBufs.Put(buf)
		}
		if err != nil || n == 0 {
			return
		}
	}
}

// read waits until the socket is readable, then reads into a pooled buffer.
func (c *Conn) read() (*[]byte, int, error) {
	if c.raw == nil {
		buf := readBufs.Get().(*[]byte)
		n, err := c.nc.Read(*buf)
		return buf, n, err
	}
	var (
		buf  *[]byte
		n    int
		rerr error
	)
	err := c.raw.Read(func(fd uintptr) bool {
		b := readBufs.Get().(*[]byte)
		for {
			n, rerr = syscall.Read(int(fd), *b)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			readBufs.Put(b)
			return false // park until readable
		}
		buf = b
		return true
	})
	if err == nil {
		err = rerr
	}
	return buf, n, err
}

// readerExit runs once, on the reader (goroutine or poller loop), when the
// client can send no more: after EOF, an error, a close frame or a
// violation.
func (c *Conn) readerExit() {
	c.rd.partial, c.rd.msg = nil, nil
	c.msgStart.Store(0)
	// Leave the poller first: until readDone is set nobody else closes a
	// polled socket, so the descriptor still names this connection (set
	// later, a close elsewhere could let a new connection reuse it, and
	// the removal would hit that one).
	if c.p != nil {
		c.p.remove(c, int(c.fd))
	}
	c.mu.Lock()
	c.readDone = true
	// Open: the client went away without a close frame. CloseSent: the
	// client answered (or dropped) our close. Closing: the writer finishes
	// the connection once the close frame is out.
	fin := c.state == stateOpen || c.state == stateCloseSent
	cause := ""
	if c.state == stateOpen {
		cause = causeLost
	}
	closed := c.state == stateClosed
	c.mu.Unlock()
	if fin {
		c.finish(cause)
	} else if closed && c.p != nil {
		c.nc.Close() // finish ran first and left closing the socket to us
	}
	c.h.HandleClose(c)
}

// consume parses the frames in data, read at now (unix nanoseconds),
// handling each complete one. It returns false when the reader must stop.
//
// A frame is refused as soon as its header shows it cannot be accepted
// (too large for its message, or out of sequence), before its payload is
// buffered, and each complete frame spends a rate token. When data leaves
// a message unfinished, c.msgStart records when it began, for
// MessageTimeout.
func (c *Conn) consume(data []byte, now int64) bool {
	rd := &c.rd
	// fresh: nothing is pending from before this point in the stream, so
	// whatever is left pending at the end began in this read.
	fresh := len(rd.partial) == 0 && rd.msgOp == 0
	if len(rd.partial) > 0 {
		rd.partial = append(rd.partial, data...)
		data = rd.partial
	}
	for len(data) > 0 {
		h, err := parseHeader(data, c.srv.cfg.MaxMessageBytes, len(rd.msg))
		if err == errShort {
			break
		}
		if err == nil {
			err = rd.admit(h.op)
		}
		if err != nil {
			c.violation(err)
			return false
		}
		if len(data) < h.size+h.length {
			break
		}
		if !c.takeToken(now) {
			c.rateLimited()
			return false
		}
		payload := data[h.size : h.size+h.length]
		data = data[h.size+h.length:]
		unmask(payload, h.key)
		if !c.frame(h, payload) {
			return false
		}
		if rd.msgOp == 0 {
			fresh = true // no message is open: the next frame starts anew
		}
	}
	switch {
	case len(data) == 0:
		rd.partial = nil
	case len(rd.partial) == 0:
		rd.partial = append([]byte(nil), data...)
	case len(data) == len(rd.partial):
		// Nothing was consumed: partial is still one incomplete frame.
	case cap(rd.partial) > len(data)+2*readBufSize:
		// The large frame partial held is done: keep only the tail, so
		// the memory held stays in proportion to what is pending.
		rd.partial = append([]byte(nil), data...)
	default: // data is the tail of partial
		rd.partial = rd.partial[:copy(rd.partial, data)]
	}
	if len(rd.partial) > 0 || rd.msgOp != 0 {
		if fresh {
			c.msgStart.Store(now)
		}
	} else if c.msgStart.Load() != 0 {
		c.msgStart.Store(0)
	}
	return true
}

// admit checks a frame's opcode against the message in progress, so that
// a frame which can only be refused is refused before its payload is
// buffered.
func (rd *readState) admit(op byte) error {
	switch op {
	case opText, opBinary:
		if rd.msgOp != 0 {
			return protocolError("new message before the previous one ended")
		}
		if op == opBinary {
			return &closeError{relay.CloseUnsupportedData, ""}
		}
	case opContinuation:
		if rd.msgOp == 0 {
			return protocolError("continuation frame without a message")
		}
	}
	return nil
}

// frame handles one complete frame, which parseHeader and admit have
// already checked; false means stop reading.
func (c *Conn) frame(h header, payload []byte) bool {
	rd := &c.rd
	switch h.op {
	case opText:
		if h.fin {
			return c.message(payload)
		}
		rd.msgOp = h.op
		rd.msg = append(rd.msg[:0], payload...)
	case opContinuation: // within MaxMessageBytes: parseHeader counted rd.msg
		rd.msg = append(rd.msg, payload...)
		if h.fin {
			msg := rd.msg
			rd.msg, rd.msgOp = nil, 0
			return c.message(msg)
		}
	case opPing:
		c.control(opPong, payload)
	case opPong:
		// lastHeard is already updated: that is all a pong is for.
	case opClose:
		c.peerClose(payload)
		return false
	}
	return true
}

// message hands a complete text message to the handler. Its frames have
// already paid their rate tokens.
func (c *Conn) message(msg []byte) bool {
	if !utf8.Valid(msg) {
		c.violation(&closeError{relay.CloseInvalidPayload, ""})
		return false
	}
	c.srv.stats.MessagesIn.Add(1)
	c.h.HandleText(c, msg)
	c.mu.Lock()
	open := c.state == stateOpen
	c.mu.Unlock()
	return open
}

// takeToken spends one of the client's frame tokens, refilled at
// MessageRate per second up to MessageBurst. It runs for every frame, so
// it reads no clock: now is the time of the read the frame came in, and
// the frames of one read refill nothing.
func (c *Conn) takeToken(now int64) bool {
	rate := c.srv.cfg.MessageRate
	if rate <= 0 {
		return true
	}
	rd := &c.rd
	if now != rd.refilled {
		if d := now - rd.refilled; d > 0 { // the wall clock may step back: refill nothing then
			rd.tokens = min(float64(c.srv.cfg.MessageBurst), rd.tokens+float64(d)*rate/float64(time.Second))
		}
		rd.refilled = now
	}
	if rd.tokens < 1 {
		return false
	}
	rd.tokens--
	return true
}

// rateLimited closes the connection with 4004 for running out of tokens,
// counted unless it was closing already (a client flooding while its
// close handshake runs is not counted twice; the reader just stops).
func (c *Conn) rateLimited() {
	c.mu.Lock()
	open := c.state == stateOpen
	c.mu.Unlock()
	if open {
		c.srv.stats.RateLimited.Add(1)
		c.CloseWith(relay.CloseRateLimited, "")
	}
}

// violation closes the connection for something the client did wrong.
func (c *Conn) violation(err error) {
	c.srv.stats.Violations.Add(1)
	var ce *closeError
	if errors.As(err, &ce) {
		c.CloseWith(ce.reason, ce.text)
		return
	}
	c.CloseWith(relay.CloseProtocolError, err.Error())
}

// peerClose answers the client's close frame by echoing its status code
// (RFC 6455 §5.5.1), or ends the connection if we had already sent ours.
func (c *Conn) peerClose(p []byte) {
	var reply []byte
	end := ending{by: "client", level: slog.LevelDebug, kind: "ws_close_client"}
	switch {
	case len(p) == 0:
		reply = appendFrame(nil, opClose, nil)
		end.code = 1005 // no status: the echo has none either
	case len(p) == 1:
		c.violation(protocolError("close frame with a one-byte payload"))
		return
	default:
		code := binary.BigEndian.Uint16(p)
		if !validCloseCode(code) {
			c.violation(protocolError("invalid close code"))
			return
		}
		if !utf8.Valid(p[2:]) {
			c.violation(&closeError{relay.CloseInvalidPayload, "close reason is not valid UTF-8"})
			return
		}
		reply = closeFrame(code, "")
		end.code = code
		if c.srv.cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
			end.text = string(p[2:])
		}
	}
	c.startClose(reply, false, end)
}
