package ws

import (
	"encoding/binary"
	"errors"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/relay"
)

// readState is the reader goroutine's parsing state. Both slices are nil
// between messages, so a quiet connection holds no read memory.
type readState struct {
	partial []byte // the start of a frame whose rest has not arrived
	msg     []byte // the fragments of a message being assembled
	msgOp   byte   // the opcode of that message, 0 when none
	// tokens and refilled are the client's message-rate bucket.
	tokens   float64
	refilled time.Time
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
	c.lastHeard.Store(time.Now().UnixNano())
	if !c.consume((*bp)[:n]) {
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
			c.lastHeard.Store(time.Now().UnixNano())
			more := c.consume((*buf)[:n])
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
	closed := c.state == stateClosed
	c.mu.Unlock()
	if fin {
		c.finish()
	} else if closed && c.p != nil {
		c.nc.Close() // finish ran first and left closing the socket to us
	}
	c.h.HandleClose(c)
}

// consume parses the frames in data, handling each complete one. It
// returns false when the reader must stop.
func (c *Conn) consume(data []byte) bool {
	rd := &c.rd
	if len(rd.partial) > 0 {
		rd.partial = append(rd.partial, data...)
		data = rd.partial
	}
	for len(data) > 0 {
		h, err := parseHeader(data, c.srv.cfg.MaxMessageBytes)
		if err == errShort {
			break
		}
		if err != nil {
			c.violation(err)
			return false
		}
		if len(data) < h.size+h.length {
			break
		}
		payload := data[h.size : h.size+h.length]
		data = data[h.size+h.length:]
		unmask(payload, h.key)
		if !c.frame(h, payload) {
			return false
		}
	}
	switch {
	case len(data) == 0:
		rd.partial = nil
	case len(rd.partial) > 0: // data is the tail of partial
		rd.partial = rd.partial[:copy(rd.partial, data)]
	default:
		rd.partial = append([]byte(nil), data...)
	}
	return true
}

// frame handles one frame; false means stop reading.
func (c *Conn) frame(h header, payload []byte) bool {
	rd := &c.rd
	switch h.op {
	case opText, opBinary:
		if rd.msgOp != 0 {
			c.violation(protocolError("new message before the previous one ended"))
			return false
		}
		if h.op == opBinary {
			c.violation(&closeError{relay.CloseUnsupportedData, ""})
			return false
		}
		if h.fin {
			return c.message(payload)
		}
		rd.msgOp = h.op
		rd.msg = append(rd.msg[:0], payload...)
	case opContinuation:
		if rd.msgOp == 0 {
			c.violation(protocolError("continuation frame without a message"))
			return false
		}
		if len(rd.msg)+len(payload) > c.srv.cfg.MaxMessageBytes {
			c.violation(&closeError{relay.CloseTooLarge, ""})
			return false
		}
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

// message hands a complete text message to the handler.
func (c *Conn) message(msg []byte) bool {
	if !utf8.Valid(msg) {
		c.violation(&closeError{relay.CloseInvalidPayload, ""})
		return false
	}
	if !c.takeToken() {
		c.srv.stats.RateLimited.Add(1)
		c.CloseWith(relay.CloseRateLimited, "")
		return false
	}
	c.srv.stats.MessagesIn.Add(1)
	c.h.HandleText(c, msg)
	c.mu.Lock()
	open := c.state == stateOpen
	c.mu.Unlock()
	return open
}

// takeToken spends one of the client's message tokens, refilled at
// MessageRate per second up to MessageBurst.
func (c *Conn) takeToken() bool {
	rate := c.srv.cfg.MessageRate
	if rate <= 0 {
		return true
	}
	now := time.Now()
	rd := &c.rd
	rd.tokens = min(float64(c.srv.cfg.MessageBurst), rd.tokens+now.Sub(rd.refilled).Seconds()*rate)
	rd.refilled = now
	if rd.tokens < 1 {
		return false
	}
	rd.tokens--
	return true
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
	switch {
	case len(p) == 0:
		reply = appendFrame(nil, opClose, nil)
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
	}
	c.startClose(reply, false)
}
