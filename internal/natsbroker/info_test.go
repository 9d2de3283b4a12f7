package natsbroker

import (
	"encoding/json"
	"maps"
	"testing"
)

// A presence entry without info keeps the format of nodes before
// relay.InfoRoster (the members object alone), so that they read and
// write it as ever; one with info round-trips, any bytes included.
func TestPresenceValue(t *testing.T) {
	members := map[string]int{"n1#a": 2, "n2#b": 1}
	old, _ := json.Marshal(members)
	if got := encodePresence(members, nil); string(got) != string(old) {
		t.Errorf("encodePresence(no info) = %s, want %s (the earlier format)", got, old)
	}
	if got, info, ok := decodePresence(old); !ok || !maps.Equal(got, members) || info != nil {
		t.Errorf("decodePresence(%s) = %v, %q, %v; want %v, nil, true", old, got, info, ok, members)
	}
	odd := []byte("{\"name\":\"x\ny \\\"q\\\"\"}\n\x00\xff")
	val := encodePresence(members, odd)
	var earlier map[string]int
	if json.Unmarshal(val, &earlier) == nil {
		t.Errorf("an earlier node reads %s as %v; want an error (it must not take it for members)", val, earlier)
	}
	if got, info, ok := decodePresence(val); !ok || !maps.Equal(got, members) || string(info) != string(odd) {
		t.Errorf("decodePresence(%s) = %v, %q, %v; want %v, %q, true", val, got, info, ok, members, odd)
	}
	for _, bad := range []string{"", "[]", `{"i":"eA=="}`, "nope"} {
		if got, info, ok := decodePresence([]byte(bad)); ok {
			t.Errorf("decodePresence(%q) = %v, %q, true; want not ok", bad, got, info)
		}
	}
}
