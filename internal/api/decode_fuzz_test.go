package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/jsonwire"
	"github.com/relayhq/relay/internal/relay"
)

// The request decoders read untrusted bytes. These fuzz targets check that
// they never panic, that every refusal is a 4xx sentinel, and that what
// they accept agrees with encoding/json. Seeds live in testdata/fuzz.

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

func FuzzDecodePublish(f *testing.F) {
	f.Add([]byte(`{"topic":"cats","user_id":null,"message":"hi"}`))
	f.Add([]byte(`{"topic":"t","user_id":42,"message":"\u00e9\n"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodePublish(body, 1024)
		checkValidity(t, body, err)
		if err != nil {
			checkRefusal(t, err)
			// Whatever encoding/json reads as a complete, valid publish
			// must be accepted too.
			var ref struct {
				Topic   *string         `json:"topic"`
				UserID  json.RawMessage `json:"user_id"`
				Message *string         `json:"message"`
			}
			if json.Unmarshal(body, &ref) == nil && ref.Topic != nil && ref.Message != nil && len(*ref.Message) <= 1024 {
				if _, uerr := decodeUserID(ref.UserID); jsonwire.IsNull(ref.UserID) || uerr == nil {
					t.Fatalf("refused %q (%v), which encoding/json reads as topic %q message %q", body, err, *ref.Topic, *ref.Message)
				}
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		var ref struct {
			Topic   string  `json:"topic"`
			UserID  *uint64 `json:"user_id"`
			Message string  `json:"message"`
		}
		if err := json.Unmarshal(body, &ref); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", body, err)
		}
		if ref.Topic != p.Topic || ref.Message != string(p.Message) || (ref.UserID != nil) != p.HasUser ||
			(ref.UserID != nil && relay.UserID(*ref.UserID) != p.User) {
			t.Fatalf("decoded %+v, encoding/json says %+v", p, ref)
		}
		if len(p.Message) > 1024 {
			t.Fatalf("accepted a %d-byte message over the limit", len(p.Message))
		}
	})
}

func FuzzDecodeRegister(f *testing.F) {
	f.Add([]byte(`{"user_id":1}`))
	f.Add([]byte(`{"user_id":-1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := decodeRegister(body)
		checkValidity(t, body, err)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		var ref struct {
			UserID uint64 `json:"user_id"`
		}
		if err := json.Unmarshal(body, &ref); err != nil || relay.UserID(ref.UserID) != r.User {
			t.Fatalf("decoded user %d from %q; encoding/json: %d, %v", r.User, body, ref.UserID, err)
		}
	})
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"events":[{"topic":"t","message":"m"}]}`))
	f.Add([]byte(`[{"topic":"t","message":"m"},{"topic":""}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		events, err := decodeBatch(body)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if len(events) == 0 || len(events) > maxBatch {
			t.Fatalf("accepted a batch of %d events", len(events))
		}
		for _, ev := range events {
			if !json.Valid(ev) {
				t.Fatalf("event %q is not JSON", ev)
			}
		}
	})
}
