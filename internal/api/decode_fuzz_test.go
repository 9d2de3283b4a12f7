package api

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/relay"
)

// The decoders read untrusted bytes. These fuzz targets check that they
// never panic, that every refusal is a 4xx sentinel, and that what they
// accept agrees with encoding/json. Seeds live in testdata/fuzz.

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
				if _, uerr := decodeUserID(ref.UserID); isNull(ref.UserID) || uerr == nil {
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

// FuzzEncodeV1 checks the hand-written JSON of relay.v1 message frames
// against encoding/json: whatever the topic and payload bytes, the frame
// is valid JSON and carries the same strings encoding/json would.
func FuzzEncodeV1(f *testing.F) {
	f.Add("news", []byte(`{"a":"b\n"}`), uint64(7))
	f.Add("t\x01\"", []byte("\xff\xfe \u2028"), uint64(0))
	f.Fuzz(func(t *testing.T, topic string, data []byte, offset uint64) {
		frame := EncodeV1(&relay.Message{Topic: topic, Data: data, Offset: offset, Epoch: "e"})
		payload := frame[2:]
		switch frame[1] {
		case 126:
			payload = frame[4:]
		case 127:
			payload = frame[10:]
		}
		var got struct {
			Type    string  `json:"type"`
			Topic   string  `json:"topic"`
			Offset  *uint64 `json:"offset"`
			Message string  `json:"message"`
		}
		if err := json.Unmarshal(payload, &got); err != nil {
			t.Fatalf("frame %q is not JSON: %v", payload, err)
		}
		var wantTopic, wantMsg string
		b, _ := json.Marshal(topic)
		json.Unmarshal(b, &wantTopic)
		b, _ = json.Marshal(string(data))
		json.Unmarshal(b, &wantMsg)
		if got.Topic != wantTopic || got.Message != wantMsg || got.Type != "message" || (offset > 0) != (got.Offset != nil) {
			t.Fatalf("decoded %+v, want topic %q message %q", got, wantTopic, wantMsg)
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

// FuzzDecodeV1Command holds the relay.v1 command decoder to encoding/json:
// within the topic limit, and with no field given twice, it accepts and
// decodes exactly what json.Unmarshal does; past the limit it refuses
// with ErrLimit, and a repeated field is refused.
func FuzzDecodeV1Command(f *testing.F) {
	f.Add([]byte(`{"type":"subscribe","id":1,"topics":["a","b"],"since":{"a":{"offset":3,"epoch":"e"}},"presence":true}`))
	f.Add([]byte(`{"TYPE":"ping","id":"x"}`))
	f.Add([]byte(`{"topics":["a","b","c","d","e"]}`))
	f.Add([]byte(`{"type":5}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		const max = 4
		cmd, err := decodeV1Command(msg, max)
		if errors.Is(err, relay.ErrLimit) {
			var ref struct {
				Topics []json.RawMessage
				Since  map[string]json.RawMessage
			}
			if json.Unmarshal(msg, &ref) == nil && len(ref.Topics) <= max && len(ref.Since) <= max {
				// A since with repeated keys counts each: refusing it is fine.
				if !strings.Contains(err.Error(), "since names") {
					t.Fatalf("refused %q for its size (%v), but it names %d topics", msg, err, len(ref.Topics))
				}
			}
			return
		}
		if err != nil && strings.Contains(err.Error(), "more than once") {
			checkRefusal(t, err) // encoding/json would merge or pick one
			return
		}
		var ref v1Command
		refErr := json.Unmarshal(msg, &ref)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("decodeV1Command(%q) error = %v, encoding/json says %v", msg, err, refErr)
		}
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if cmd.Type != ref.Type || cmd.Presence != ref.Presence || string(cmd.ID) != string(ref.ID) ||
			!reflect.DeepEqual(cmd.Topics, ref.Topics) || !reflect.DeepEqual(cmd.Since, ref.Since) {
			t.Fatalf("decodeV1Command(%q) = %+v, encoding/json says %+v", msg, cmd, ref)
		}
	})
}
