package ws

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/relay"
)

// clientFrame builds a masked client frame.
func clientFrame(fin bool, op byte, payload []byte, key [4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var b []byte
	n := len(payload)
	switch {
	case n <= 125:
		b = append(b, b0, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, b0, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, b0, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i&3])
	}
	return b
}

func TestParseHeader(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	tests := []struct {
		name    string
		in      []byte
		max     int
		held    int // message bytes already assembled
		want    header
		wantErr relay.CloseReason // 0 with errNone means success
		short   bool
	}{
		{name: "small text", in: clientFrame(true, opText, []byte("hi"), key), max: 100,
			want: header{fin: true, op: opText, key: key, length: 2, size: 6}},
		{name: "16-bit length", in: clientFrame(false, opText, make([]byte, 300), key), max: 1000,
			want: header{fin: false, op: opText, key: key, length: 300, size: 8}},
		{name: "64-bit length", in: clientFrame(true, opBinary, make([]byte, 70000), key), max: 100000,
			want: header{fin: true, op: opBinary, key: key, length: 70000, size: 14}},
		{name: "empty", in: nil, max: 10, short: true},
		{name: "one byte", in: []byte{0x81}, max: 10, short: true},
		{name: "no mask key yet", in: []byte{0x81, 0x82, 1, 2}, max: 10, short: true},
		{name: "no 16-bit length yet", in: []byte{0x81, 0x80 | 126, 1}, max: 1000, short: true},
		{name: "unmasked", in: []byte{0x81, 0x02, 'h', 'i'}, max: 10, wantErr: relay.CloseProtocolError},
		{name: "reserved bit", in: []byte{0xC1, 0x80, 0, 0, 0, 0}, max: 10, wantErr: relay.CloseProtocolError},
		{name: "unknown opcode", in: []byte{0x83, 0x80, 0, 0, 0, 0}, max: 10, wantErr: relay.CloseProtocolError},
		{name: "fragmented ping", in: []byte{0x09, 0x80, 0, 0, 0, 0}, max: 10, wantErr: relay.CloseProtocolError},
		{name: "long ping", in: clientFrame(true, opPing, make([]byte, 126), key), max: 1000, wantErr: relay.CloseProtocolError},
		{name: "too large", in: clientFrame(true, opText, make([]byte, 11), key), max: 10, wantErr: relay.CloseTooLarge},
		{name: "too large before payload", in: []byte{0x81, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0}, max: 1 << 20, wantErr: relay.CloseTooLarge},
		{name: "high bit length", in: []byte{0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, max: 1 << 20, wantErr: relay.CloseProtocolError},
		{name: "continuation filling the message", in: clientFrame(true, opContinuation, make([]byte, 100), key), max: 1000, held: 900,
			want: header{fin: true, op: opContinuation, key: key, length: 100, size: 6}},
		{name: "continuation past the message", in: clientFrame(true, opContinuation, make([]byte, 101), key), max: 1000, held: 900, wantErr: relay.CloseTooLarge},
		{name: "continuation past the message before payload", in: []byte{0x00, 0x80 | 126, 0x07, 0xd0}, max: 1024, held: 24, wantErr: relay.CloseTooLarge},
		{name: "ping within a full message", in: clientFrame(true, opPing, make([]byte, 125), key), max: 1000, held: 1000,
			want: header{fin: true, op: opPing, key: key, length: 125, size: 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHeader(tt.in, tt.max, tt.held)
			switch {
			case tt.short:
				if err != errShort {
					t.Fatalf("parseHeader(%x, %d, %d) = %+v, %v; want errShort", tt.in, tt.max, tt.held, got, err)
				}
			case tt.wantErr != 0:
				var ce *closeError
				if !errors.As(err, &ce) || ce.reason != tt.wantErr {
					t.Fatalf("parseHeader(%x, %d, %d) error = %v; want close reason %d", tt.in, tt.max, tt.held, err, tt.wantErr)
				}
			default:
				if err != nil || got != tt.want {
					t.Fatalf("parseHeader(%x, %d, %d) = %+v, %v; want %+v", tt.in, tt.max, tt.held, got, err, tt.want)
				}
			}
		})
	}
}

func TestUnmaskMatchesBytewise(t *testing.T) {
	key := [4]byte{0xde, 0xad, 0xbe, 0xef}
	for n := range 40 {
		in := bytes.Repeat([]byte{0x5a}, n)
		for i := range in {
			in[i] = byte(i * 7)
		}
		want := make([]byte, n)
		for i := range in {
			want[i] = in[i] ^ key[i&3]
		}
		got := bytes.Clone(in)
		unmask(got, key)
		if !bytes.Equal(got, want) {
			t.Fatalf("unmask(%d bytes) = %x, want %x", n, got, want)
		}
	}
}

func TestAppendFrameLengths(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xffff, 0x10000} {
		f := EncodeText(make([]byte, n))
		if len(f) != frameSize(n) || cap(f) != len(f) {
			t.Fatalf("EncodeText(%d bytes): len %d cap %d, want %d", n, len(f), cap(f), frameSize(n))
		}
		if f[0] != 0x81 {
			t.Fatalf("first byte %#x, want 0x81 (FIN, text)", f[0])
		}
	}
}

func TestCloseFrameCutsOnRuneBoundary(t *testing.T) {
	reason := strings.Repeat("é", 100) // 200 bytes
	f := closeFrame(1008, reason)
	payload := f[2:]
	if len(payload) > maxControlPayload {
		t.Fatalf("close payload is %d bytes, over %d", len(payload), maxControlPayload)
	}
	if code := binary.BigEndian.Uint16(payload); code != 1008 {
		t.Fatalf("code = %d", code)
	}
	if !utf8.Valid(payload[2:]) {
		t.Fatalf("reason %q is not valid UTF-8", payload[2:])
	}
}

func TestValidCloseCode(t *testing.T) {
	for code, want := range map[uint16]bool{999: false, 1000: true, 1004: false, 1005: false, 1006: false, 1011: true, 1015: false, 2999: false, 3000: true, 4999: true, 5000: false} {
		if got := validCloseCode(code); got != want {
			t.Errorf("validCloseCode(%d) = %v, want %v", code, got, want)
		}
	}
}
