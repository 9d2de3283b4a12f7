package redisbroker

import (
	"testing"

	"github.com/relayhq/relay/internal/relay"
)

// Joins and leaves keep the format of nodes before relay.InfoRoster: the
// info is the payload, the rest of the message after the fourth newline,
// so an old node's join (empty payload) reads as one without info, and
// an info holding newlines reads back whole.
func TestDecodePresenceMessage(t *testing.T) {
	for _, c := range []struct {
		wire string
		kind relay.Kind
		data []byte
	}{
		{"j\n0\n\n7\n", relay.KindJoin, nil},
		{"l\n0\n\n7\n", relay.KindLeave, nil},
		{"j\n0\n\n7\n{\"a\":\"x\ny\"}\n", relay.KindJoin, []byte("{\"a\":\"x\ny\"}\n")},
		{"l\n0\n\n7\nl\n0\n\n8\n\x00", relay.KindLeave, []byte("l\n0\n\n8\n\x00")},
	} {
		m, ok := decodeMessage("room", c.wire)
		if !ok || m.Kind != c.kind || m.User != 7 || m.Topic != "room" || string(m.Data) != string(c.data) || (c.data == nil) != (m.Data == nil) {
			t.Errorf("decodeMessage(%q) = %+v, %v; want kind %d, user 7, data %q", c.wire, m, ok, c.kind, c.data)
		}
	}
	// A publish keeps an empty payload as it is.
	if m, ok := decodeMessage("room", "p\n3\ne\n\n"); !ok || m.Data == nil || len(m.Data) != 0 {
		t.Errorf("decodeMessage(empty publish) = %+v, %v; want empty, non-nil data", m, ok)
	}
}
