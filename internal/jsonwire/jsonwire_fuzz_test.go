package jsonwire

import (
	"encoding/json"
	"testing"
)

// FuzzMembers holds the scanner to encoding/json: it refuses exactly the
// documents json.Valid refuses, calls a valid non-object ErrNotObject,
// and hands out keys and values that encoding/json reads the same way.
// (The decoders built on it are fuzzed in their own packages.)
func FuzzMembers(f *testing.F) {
	f.Add([]byte(`{"topic":"cats","user_id":null,"message":"hi"}`))
	f.Add([]byte(`{"a\u00e9\n":[1,{"b":2.5e-3}],"A":true}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`{"a":1,}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var keys []string
		var vals [][]byte
		err := Members(b, func(key, val []byte) {
			keys = append(keys, string(key))
			vals = append(vals, val)
		})
		valid := json.Valid(b)
		switch {
		case !valid:
			if err == nil || err == ErrNotObject {
				t.Fatalf("Members(%q) = %v, but it is not valid JSON", b, err)
			}
			return
		case err == ErrNotObject:
			var m map[string]json.RawMessage
			if json.Unmarshal(b, &m) == nil && m != nil {
				t.Fatalf("Members(%q) = ErrNotObject, but it is an object", b)
			}
			return
		case err != nil:
			t.Fatalf("Members(%q) = %v, but it is valid JSON", b, err)
		}
		var ref map[string]json.RawMessage
		if err := json.Unmarshal(b, &ref); err != nil {
			t.Fatalf("Members accepted %q, which encoding/json refuses as an object: %v", b, err)
		}
		// encoding/json keeps the last of repeated keys.
		last := map[string][]byte{}
		for i, k := range keys {
			last[k] = vals[i]
		}
		if len(last) != len(ref) {
			t.Fatalf("Members(%q) gave keys %q, encoding/json %d keys", b, keys, len(ref))
		}
		for k, v := range last {
			if string(ref[k]) != string(v) {
				t.Fatalf("Members(%q): key %q = %q, encoding/json %q", b, k, v, ref[k])
			}
		}
	})
}

// FuzzAppendString holds AppendString to encoding/json: the result is a
// JSON string that decodes to what encoding/json makes of the same bytes.
func FuzzAppendString(f *testing.F) {
	f.Add([]byte("plain"))
	f.Add([]byte("\"\\\n\r\t\x01\x7f\xff\xfe \u2028"))
	f.Fuzz(func(t *testing.T, s []byte) {
		got := AppendString([]byte("x"), s)
		if got[0] != 'x' {
			t.Fatalf("AppendString overwrote its buffer: %q", got)
		}
		var dec, want string
		if err := json.Unmarshal(got[1:], &dec); err != nil {
			t.Fatalf("AppendString(%q) = %s, not a JSON string: %v", s, got[1:], err)
		}
		ref, _ := json.Marshal(string(s))
		json.Unmarshal(ref, &want)
		if dec != want {
			t.Fatalf("AppendString(%q) decodes to %q, encoding/json's to %q", s, dec, want)
		}
	})
}
