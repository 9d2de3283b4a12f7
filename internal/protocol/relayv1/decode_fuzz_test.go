package relayv1

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/relayhq/relay/internal/relay"
)

// Commands are untrusted bytes, and frames carry untrusted topics and
// payloads. These fuzz targets check that the decoder never panics, that
// every refusal is a 4xx sentinel, and that what the decoder accepts and
// the encoder writes agree with encoding/json. Seeds live in
// testdata/fuzz.

func checkRefusal(t *testing.T, err error) {
	if !errors.Is(err, relay.ErrInvalid) && !errors.Is(err, relay.ErrTooLarge) {
		t.Fatalf("error %v wraps neither ErrInvalid nor ErrTooLarge", err)
	}
	if !utf8.ValidString(err.Error()) {
		t.Fatalf("error message is not valid UTF-8: %q", err.Error())
	}
}

// FuzzEncode checks the hand-written JSON of relay.v1 message frames
// against encoding/json: whatever the topic and payload bytes, the frame
// is valid JSON and carries the same strings encoding/json would.
func FuzzEncode(f *testing.F) {
	f.Add("news", []byte(`{"a":"b\n"}`), uint64(7))
	f.Add("t\x01\"", []byte("\xff\xfe \u2028"), uint64(0))
	f.Fuzz(func(t *testing.T, topic string, data []byte, offset uint64) {
		wire := Encode(&relay.Message{Topic: topic, Data: data, Offset: offset, Epoch: "e"})
		payload := wire[2:]
		switch wire[1] {
		case 126:
			payload = wire[4:]
		case 127:
			payload = wire[10:]
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

// FuzzDecodeCommand holds the relay.v1 command decoder to encoding/json:
// within the topic limit, and with no field given twice, it accepts and
// decodes exactly what json.Unmarshal does; past the limit it refuses
// with ErrLimit, and a repeated field is refused.
func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte(`{"type":"subscribe","id":1,"topics":["a","b"],"since":{"a":{"offset":3,"epoch":"e"}},"presence":true}`))
	f.Add([]byte(`{"TYPE":"ping","id":"x"}`))
	f.Add([]byte(`{"topics":["a","b","c","d","e"]}`))
	f.Add([]byte(`{"type":5}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		const max = 4
		cmd, err := decodeCommand(msg, max)
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
		var ref command
		refErr := json.Unmarshal(msg, &ref)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("decodeCommand(%q) error = %v, encoding/json says %v", msg, err, refErr)
		}
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if cmd.Type != ref.Type || cmd.Presence != ref.Presence || string(cmd.ID) != string(ref.ID) ||
			!reflect.DeepEqual(cmd.Topics, ref.Topics) || !reflect.DeepEqual(cmd.Since, ref.Since) {
			t.Fatalf("decodeCommand(%q) = %+v, encoding/json says %+v", msg, cmd, ref)
		}
	})
}
