package seed

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/relay"
)

// The topics command is untrusted bytes. This fuzz target checks that its
// decoder never panics, that every refusal is a 4xx sentinel, and that
// what it accepts agrees with encoding/json. Seeds live in testdata/fuzz.

// checkValidity holds the scanner to json.Valid: it must refuse invalid
// JSON and must not call valid JSON invalid.
func checkValidity(t *testing.T, body []byte, err error) {
	valid := json.Valid(body)
	syntax := err != nil && (strings.Contains(err.Error(), "not valid JSON") || strings.Contains(err.Error(), "body is empty"))
	if valid == syntax {
		t.Fatalf("json.Valid(%q) = %v, but decoding said %v", body, valid, err)
	}
}

func checkRefusal(t *testing.T, err error) {
	if !errors.Is(err, relay.ErrInvalid) && !errors.Is(err, relay.ErrTooLarge) {
		t.Fatalf("error %v wraps neither ErrInvalid nor ErrTooLarge", err)
	}
	if !utf8.ValidString(err.Error()) {
		t.Fatalf("error message is not valid UTF-8: %q", err.Error())
	}
}

func FuzzDecodeTopics(f *testing.F) {
	f.Add([]byte(`{"topics":["cats","dogs"]}`))
	f.Add([]byte(`{"topics":[]}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		topics, err := decodeTopics(msg, 1<<20)
		checkValidity(t, msg, err)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		var ref struct {
			Topics []string `json:"topics"`
		}
		if err := json.Unmarshal(msg, &ref); err != nil || len(ref.Topics) != len(topics) {
			t.Fatalf("decoded %q from %q; encoding/json: %q, %v", topics, msg, ref.Topics, err)
		}
	})
}
