package relayv1

import (
	"testing"

	"github.com/relayhq/relay/internal/relay"
)

// BenchmarkEncode builds a relay.v1 message frame for a loadgen-style
// payload (JSON in a JSON string), once per publish on the fan-out path.
func BenchmarkEncode(b *testing.B) {
	m := &relay.Message{Topic: "bench", Offset: 12345, Epoch: "a1b2c3d4", Data: []byte(`{"lg_seq":12345,"lg_ts":1700000000000000000,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)}
	b.ReportAllocs()
	b.SetBytes(int64(len(m.Data)))
	for b.Loop() {
		Encode(m)
	}
}

// BenchmarkDecodeCommand decodes a subscribe with recovery and presence,
// on the socket's read loop.
func BenchmarkDecodeCommand(b *testing.B) {
	msg := []byte(`{"type":"subscribe","id":7,"topics":["news","sports","weather"],"since":{"news":{"offset":41,"epoch":"a1b2c3d4"}},"presence":true}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := decodeCommand(msg, 128); err != nil {
			b.Fatal(err)
		}
	}
}
