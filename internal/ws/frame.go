package ws

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/relay"
)

// RFC 6455 opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// maxControlPayload is the largest payload a control frame may carry.
const maxControlPayload = 125

// frameSize is the size of an unmasked frame carrying n payload bytes.
func frameSize(n int) int {
	switch {
	case n <= 125:
		return 2 + n
	case n <= 0xffff:
		return 4 + n
	default:
		return 10 + n
	}
}

// appendFrame appends one final, unmasked frame: server frames are never
// masked, so the same bytes can go to every subscriber.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	n := len(payload)
	switch {
	case n <= 125:
		dst = append(dst, 0x80|op, byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|op, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// EncodeText returns a text frame carrying payload, in one exact-size
// allocation.
func EncodeText(payload []byte) []byte {
	return appendFrame(make([]byte, 0, frameSize(len(payload))), opText, payload)
}

// EncodeSeed is the seed protocol's frame: a text frame whose payload is
// exactly the published message. Presence events have no seed frame.
func EncodeSeed(m *relay.Message) []byte {
	if m.Kind != relay.KindPublish {
		return nil
	}
	return EncodeText(m.Data)
}

// closeFrame builds a close frame with code and a reason cut to fit the
// 125-byte control payload on a UTF-8 boundary.
func closeFrame(code uint16, reason string) []byte {
	if len(reason) > maxControlPayload-2 {
		reason = reason[:maxControlPayload-2]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, code)
	p = append(p, reason...)
	return appendFrame(make([]byte, 0, frameSize(len(p))), opClose, p)
}

var pingFrame = appendFrame(nil, opPing, nil)

// header is a parsed client frame header.
type header struct {
	fin    bool
	op     byte
	key    [4]byte
	length int // payload bytes
	size   int // header bytes
}

// errShort means more bytes are needed to parse the header.
var errShort = errors.New("incomplete frame header")

// closeError is a violation that ends the connection with reason.
type closeError struct {
	reason relay.CloseReason
	text   string
}

func (e *closeError) Error() string { return e.text }

func protocolError(text string) error {
	return &closeError{relay.CloseProtocolError, text}
}

// parseHeader parses the header of a client frame at the start of b. held
// is the size of the fragmented message already assembled, which a
// continuation frame adds to. A frame that would take its message past max
// bytes is refused before its payload arrives, so a client cannot make the
// server buffer more than max bytes of a message.
func parseHeader(b []byte, max, held int) (header, error) {
	if len(b) < 2 {
		return header{}, errShort
	}
	h := header{fin: b[0]&0x80 != 0, op: b[0] & 0x0f, size: 2}
	if b[0]&0x70 != 0 {
		return h, protocolError("reserved bits set without an extension")
	}
	switch h.op {
	case opContinuation, opText, opBinary:
	case opClose, opPing, opPong:
		if !h.fin {
			return h, protocolError("fragmented control frame")
		}
	default:
		return h, protocolError("unknown opcode")
	}
	if b[1]&0x80 == 0 {
		return h, protocolError("client frame is not masked")
	}
	n := uint64(b[1] & 0x7f)
	switch n {
	case 126:
		if len(b) < 4 {
			return h, errShort
		}
		n = uint64(binary.BigEndian.Uint16(b[2:]))
		h.size = 4
	case 127:
		if len(b) < 10 {
			return h, errShort
		}
		n = binary.BigEndian.Uint64(b[2:])
		h.size = 10
		if n>>63 != 0 {
			return h, protocolError("payload length has the high bit set")
		}
	}
	if h.op >= opClose && n > maxControlPayload {
		return h, protocolError("control frame longer than 125 bytes")
	}
	total := n // the message's size with this frame's payload
	if h.op == opContinuation {
		total += uint64(held) // n < 1<<63: no overflow
	}
	if total > uint64(max) {
		return h, &closeError{relay.CloseTooLarge, ""} // the table's text: "message too large"
	}
	if len(b) < h.size+4 {
		return h, errShort
	}
	copy(h.key[:], b[h.size:])
	h.size += 4
	h.length = int(n)
	return h, nil
}

// unmask XORs b with the masking key, eight bytes at a time.
func unmask(b []byte, key [4]byte) {
	if len(b) >= 8 {
		k := uint64(binary.LittleEndian.Uint32(key[:]))
		k |= k << 32
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
}

// validCloseCode reports whether a peer may send code in a close frame
// (RFC 6455 §7.4).
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
