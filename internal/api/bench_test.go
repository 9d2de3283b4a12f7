package api

import "testing"

func BenchmarkDecodePublish(b *testing.B) {
	body := []byte(`{"topic":"bench","user_id":null,"message":"{\"lg_seq\":12345,\"lg_ts\":1700000000000000000,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := decodePublish(body, 65536); err != nil {
			b.Fatal(err)
		}
	}
}
