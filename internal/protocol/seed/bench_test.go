package seed

import "testing"

// BenchmarkDecodeTopics decodes the seed protocol's topics command, on
// the socket's read loop.
func BenchmarkDecodeTopics(b *testing.B) {
	msg := []byte(`{"topics":["cats","dogs","birds"]}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := decodeTopics(msg, 128); err != nil {
			b.Fatal(err)
		}
	}
}
