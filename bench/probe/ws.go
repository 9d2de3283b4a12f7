package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
)

// Raw WebSocket framing. The attacks need frames no well-behaved library
// sends: a message left unfinished, a continuation header declaring more
// than will ever come, thousands of pings in one write. So the attacking
// sockets do the handshake and the framing by hand; the victims, who
// behave, use gorilla.

// RFC 6455 opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// appendHeader appends a client frame header declaring length payload
// bytes, masked with key (RFC 6455 §5.3: every client frame is masked).
// The payload, if any, must follow masked with the same key.
func appendHeader(b []byte, fin bool, op byte, length int, key [4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	switch {
	case length <= 125:
		b = append(b, b0, 0x80|byte(length))
	case length <= 0xffff:
		b = append(b, b0, 0x80|126, byte(length>>8), byte(length))
	default:
		b = append(b, b0, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(length))
	}
	return append(b, key[:]...)
}

// appendFrame appends a whole masked client frame carrying payload.
func appendFrame(b []byte, fin bool, op byte, payload []byte, key [4]byte) []byte {
	b = appendHeader(b, fin, op, len(payload), key)
	return appendMasked(b, payload, key, 0)
}

// appendMasked appends payload masked with key, as if it started at byte
// offset pos of its frame's payload (the mask cycles every 4 bytes).
func appendMasked(b, payload []byte, key [4]byte, pos int) []byte {
	for i, c := range payload {
		b = append(b, c^key[(pos+i)&3])
	}
	return b
}

func newMaskKey() [4]byte {
	var k [4]byte
	rand.Read(k[:])
	return k
}

// serverFrame is a frame read from the server (never masked).
type serverFrame struct {
	fin     bool
	op      byte
	payload []byte
}

// readServerFrame reads one frame. Payloads longer than max are read and
// dropped (payload is nil then), so a reader can skim a stream of
// messages it only counts.
func readServerFrame(r *bufio.Reader, max int) (serverFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return serverFrame{}, err
	}
	f := serverFrame{fin: h[0]&0x80 != 0, op: h[0] & 0x0f}
	if h[1]&0x80 != 0 {
		return f, errors.New("server sent a masked frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(e[:])
	}
	if n > uint64(max) {
		_, err := r.Discard(int(min(n, 1<<40)))
		return f, err
	}
	f.payload = make([]byte, n)
	_, err := io.ReadFull(r, f.payload)
	return f, err
}

// closeCode returns the status code of a close frame's payload (1005, "no
// status", when it has none) and its reason.
func closeCode(payload []byte) (int, string) {
	if len(payload) < 2 {
		return websocket.CloseNoStatusReceived, ""
	}
	return int(binary.BigEndian.Uint16(payload)), string(payload[2:])
}

// rawSocket is a WebSocket after a hand-made handshake: writes go straight
// to conn, reads through br (which may already hold the first frames).
type rawSocket struct {
	conn net.Conn
	br   *bufio.Reader
	key  [4]byte
}

// rawDial opens a WebSocket to wsURL from one of the source addresses,
// asking for protocol (none when empty), with the handshake written and
// checked by hand.
func rawDial(ctx context.Context, src *srcPool, wsURL, protocol string) (*rawSocket, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	if err := checkLoopback(wsURL); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := src.dial(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", u.RequestURI(), u.Host, key)
	if protocol != "" {
		req += "Sec-WebSocket-Protocol: " + protocol + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	br := bufio.NewReaderSize(conn, 16<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("handshake: status %d", resp.StatusCode)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		conn.Close()
		return nil, errors.New("handshake: wrong Sec-WebSocket-Accept")
	}
	conn.SetDeadline(time.Time{})
	return &rawSocket{conn: conn, br: br, key: newMaskKey()}, nil
}

// closeEvent is how a socket ended, seen from the client.
type closeEvent struct {
	code   int           // the server's close code; 0: the TCP connection ended without one
	reason string        // the close frame's reason
	after  time.Duration // since the attack (or the socket) began
	err    error         // the read error when there was no close frame
}

// closeKey names how a socket ended, for counting: "1009", "4004",
// "no close frame (EOF)".
func (e closeEvent) key() string {
	if e.code != 0 {
		return fmt.Sprint(e.code)
	}
	if e.err == nil {
		return "no close frame"
	}
	return "no close frame (" + shortErr(e.err) + ")"
}

// newDialer is the gorilla dialer of well-behaved sockets. The write
// buffer holds a whole command, so each goes out as one frame: the server
// charges a rate token per frame.
func newDialer(src *srcPool, protocol string) *websocket.Dialer {
	d := &websocket.Dialer{
		NetDialContext:   src.dial,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   16 << 10,
		WriteBufferSize:  68 << 10,
	}
	if protocol != "" {
		d.Subprotocols = []string{protocol}
	}
	return d
}

// gorillaClose reads how a gorilla read loop ended.
func gorillaClose(err error, began time.Time) closeEvent {
	ev := closeEvent{after: time.Since(began)}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		ev.code, ev.reason = ce.Code, ce.Text
		if ce.Code == websocket.CloseAbnormalClosure { // gorilla's name for "no close frame"
			ev.code, ev.err = 0, io.ErrUnexpectedEOF
		}
		return ev
	}
	ev.err = err
	return ev
}
