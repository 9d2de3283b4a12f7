package pusher

import (
	"errors"
	"strings"
	"testing"
)

func TestParseChannelKinds(t *testing.T) {
	tests := []struct {
		name string
		kind Kind
		// IsPrivate, IsPresence, IsCache, IsEncrypted, RequiresAuth
		private, presence, cache, encrypted, auth bool
	}{
		// The example of https://pusher.com/docs/channels/using_channels/channels/#channel-naming-conventions
		{"foo-bar_1234@=,.;", KindPublic, false, false, false, false, false},
		{"App.Models.User.1", KindPublic, false, false, false, false, false},
		{"private-foobar", KindPrivate, true, false, false, false, true},
		{"private-App.Models.User.1", KindPrivate, true, false, false, false, true},
		{"private-encrypted-foo", KindPrivateEncrypted, true, false, false, true, true},
		{"presence-foobar", KindPresence, false, true, false, false, true},
		// https://pusher.com/docs/channels/using_channels/cache-channels/
		{"cache-location", KindCache, false, false, true, false, false},
		{"private-cache-x", KindPrivateCache, true, false, true, false, true},
		{"private-encrypted-cache-x", KindPrivateEncryptedCache, true, false, true, true, true},
		{"presence-cache-x", KindPresenceCache, false, true, true, false, true},
		// Prefixes are exact and case-sensitive.
		{"Private-foo", KindPublic, false, false, false, false, false},
		{"privatefoo", KindPublic, false, false, false, false, false},
		{"encrypted-foo", KindPublic, false, false, false, false, false},
		{"cachex", KindPublic, false, false, false, false, false},
		{"presence-encrypted-x", KindPresence, false, true, false, false, true},
		{"private-presence-x", KindPrivate, true, false, false, false, true},
		// A bare prefix is a valid name of its kind.
		{"private-", KindPrivate, true, false, false, false, true},
		{"presence-", KindPresence, false, true, false, false, true},
	}
	for _, tt := range tests {
		c, err := ParseChannel(tt.name)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if c.Name != tt.name || c.Kind != tt.kind {
			t.Errorf("%s: got %+v, want kind %v", tt.name, c, tt.kind)
		}
		k := c.Kind
		got := [5]bool{k.IsPrivate(), k.IsPresence(), k.IsCache(), k.IsEncrypted(), k.RequiresAuth()}
		want := [5]bool{tt.private, tt.presence, tt.cache, tt.encrypted, tt.auth}
		if got != want {
			t.Errorf("%s (%v): private/presence/cache/encrypted/auth = %v, want %v", tt.name, k, got, want)
		}
		if k.AllowsClientEvents() != tt.auth || k.IsServerToUser() || c.UserID() != "" {
			t.Errorf("%s: AllowsClientEvents/IsServerToUser/UserID wrong", tt.name)
		}
	}
}

func TestParseChannelLength(t *testing.T) {
	// "Channel names may contain a maximum of 164 characters. This limit
	// includes channel prefixes."
	name := "presence-" + strings.Repeat("a", MaxChannelNameLength-len("presence-"))
	if c, err := ParseChannel(name); err != nil || c.Kind != KindPresence {
		t.Errorf("164 characters: %v", err)
	}
	wantMsg(t, errOf(ParseChannel(name+"b")), ErrChannelNameTooLong, 400, "Channel name too long: '"+name+"b'")
	wantMsg(t, errOf(ParseChannel(strings.Repeat("x", 500))), ErrChannelNameTooLong, 400,
		"Channel name too long: '"+strings.Repeat("x", 500)+"'")
}

func errOf(_ Channel, err error) error { return err }

func TestParseChannelCharacters(t *testing.T) {
	for _, name := range []string{
		"", " ", "foo bar", "foo:bar", "foo/bar", "foo#bar", "foo*", "foo!", "foo?", "foo+bar",
		"foo'bar", `foo"bar`, "foo\nbar", "foo\x00", "café", "foo%20", "{}", "[a]", "a|b", "a~b", "a$b",
		"private-foo bar", "presence-a:b",
	} {
		wantMsg(t, errOf(ParseChannel(name)), ErrInvalidChannelName, 400, "Invalid channel name: '"+name+"'")
	}
	// Every allowed character.
	all := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-=@,.;"
	if _, err := ParseChannel(all); err != nil {
		t.Errorf("allowed characters: %v", err)
	}
	// Characters are checked before length, as pusher-http-node does.
	wantKind(t, errOf(ParseChannel(strings.Repeat("x", 200)+" ")), ErrInvalidChannelName, 400)
}

func TestParseChannelReserved(t *testing.T) {
	// '#' is reserved; pusher-js refuses such names with this message
	// (src/core/channels/channels.ts).
	for _, name := range []string{"#", "#foo", "#server-to-user", "#Server-to-user-1", "#private-x"} {
		wantMsg(t, errOf(ParseChannel(name)), ErrReservedChannelName, 400, `Cannot create a channel with name "`+name+`".`)
	}

	// The user channel: its suffix is a user id (any characters, as
	// pusher-http-node's sendToUser builds it), non-empty, at most 128.
	for _, id := range []string{"123", "a b@c.d", "user:1", strings.Repeat("u", MaxUserIDLength)} {
		c, err := ParseChannel(ServerToUserPrefix + id)
		if err != nil {
			t.Errorf("%q: %v", id, err)
			continue
		}
		if c.Kind != KindServerToUser || !c.Kind.IsServerToUser() || c.UserID() != id {
			t.Errorf("%q: %+v user %q", id, c, c.UserID())
		}
		if c.Kind.RequiresAuth() || c.Kind.AllowsClientEvents() || c.Kind.IsPrivate() || c.Kind.IsCache() {
			t.Errorf("%q: helpers wrong", id)
		}
	}
	for _, id := range []string{"", strings.Repeat("u", MaxUserIDLength+1)} {
		wantKind(t, errOf(ParseChannel(ServerToUserPrefix+id)), ErrInvalidChannelName, 400)
	}
}

func TestKindString(t *testing.T) {
	want := []string{"public", "private", "private-encrypted", "presence", "cache",
		"private-cache", "private-encrypted-cache", "presence-cache", "server-to-user"}
	for k := KindPublic; k <= KindServerToUser; k++ {
		if k.String() != want[k] {
			t.Errorf("Kind(%d) = %q, want %q", k, k.String(), want[k])
		}
	}
	if Kind(99).String() != "Kind(99)" {
		t.Errorf("unknown kind: %q", Kind(99).String())
	}
}

func TestEventNames(t *testing.T) {
	// At most 200 characters (pusher-http-node: "Event name can be at most
	// 200 characters long", message "Too long event name: '…'").
	if err := ValidateEventName(strings.Repeat("e", MaxEventNameLength)); err != nil {
		t.Errorf("200 characters: %v", err)
	}
	long := strings.Repeat("e", MaxEventNameLength+1)
	wantMsg(t, ValidateEventName(long), ErrEventNameTooLong, 400, "Too long event name: '"+long+"'")
	wantKind(t, ValidateEventName(""), ErrInvalidEventName, 400)
	// Counted as JavaScript does: an emoji is two characters.
	if err := ValidateEventName(strings.Repeat("😀", 100)); err != nil {
		t.Errorf("100 emoji: %v", err)
	}
	wantKind(t, ValidateEventName(strings.Repeat("😀", 101)), ErrEventNameTooLong, 400)
	if err := ValidateEventName(strings.Repeat("é", 200)); err != nil {
		t.Errorf("200 é (400 bytes): %v", err)
	}
	// Event names are not limited to the channel characters.
	if err := ValidateEventName(`App\Events\OrderShipped`); err != nil {
		t.Errorf("Laravel event name: %v", err)
	}

	// Client events must start with client- (pusher-js's message).
	for _, ok := range []string{"client-x", "client-typing", "client-" + strings.Repeat("x", MaxEventNameLength-len("client-"))} {
		if err := ValidateClientEventName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"my-event", "Client-x", "client", "clientx", "pusher:ping", "", " client-x"} {
		wantMsg(t, ValidateClientEventName(bad), ErrNotClientEvent, 400, "Event '"+bad+"' does not start with 'client-'")
	}
	wantKind(t, ValidateClientEventName("client-"+strings.Repeat("x", MaxEventNameLength)), ErrEventNameTooLong, 400)
}

func TestSocketIDs(t *testing.T) {
	for _, ok := range []string{"1234.1234", "0.0", "123456789012.987654321"} {
		if err := ValidateSocketID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1234", "1234.", ".1234", "a.1", "1.a", "1.2.3", " 1.2", "1.2 ", "-1.2", "١.٢", "1:2"} {
		wantMsg(t, ValidateSocketID(bad), ErrInvalidSocketID, 400, "Invalid socket id: '"+bad+"'")
	}
}

func TestParseChannelData(t *testing.T) {
	tests := []struct {
		data, id, info string
	}{
		// The example of https://pusher.com/docs/channels/library_auth_reference/auth-signatures/#presence-channels
		{`{"user_id":10,"user_info":{"name":"Mr. Channels"}}`, "10", `{"name":"Mr. Channels"}`},
		{`{"user_id":"unique_user_id","user_info":{"name":"Mr Channels","twitter_id":"@pusher"}}`, "unique_user_id", `{"name":"Mr Channels","twitter_id":"@pusher"}`},
		{`{"user_id":"42"}`, "42", ""},
		{` { "user_info" : null , "user_id" : 7 } `, "7", ""},
		{`{"user_id":-3}`, "-3", ""},
		{`{"user_id":-0}`, "0", ""},
		// Numbers print as JavaScript prints them; integers stay verbatim,
		// even past 2^53.
		{`{"user_id":12345678901234567890}`, "12345678901234567890", ""},
		{`{"user_id":1.5}`, "1.5", ""},
		{`{"user_id":1e3}`, "1000", ""},
		{`{"user_id":1E21}`, "1e+21", ""},
		{`{"user_id":1e-7}`, "1e-7", ""},
		{`{"user_id":0.000001}`, "0.000001", ""},
		{`{"user_id":"` + strings.Repeat("u", MaxUserIDLength) + `"}`, strings.Repeat("u", MaxUserIDLength), ""},
		{`{"user_id":"é\u00e9"}`, "éé", ""},
		{`{"user_id":"x","extra":[1,2]}`, "x", ""},
	}
	for _, tt := range tests {
		m, err := ParseChannelData(tt.data)
		if err != nil {
			t.Errorf("%s: %v", tt.data, err)
			continue
		}
		if m.UserID != tt.id || string(m.UserInfo) != tt.info {
			t.Errorf("%s: got %q %s, want %q %s", tt.data, m.UserID, m.UserInfo, tt.id, tt.info)
		}
	}

	for _, data := range []string{"", "null", "10", `"x"`, `[{"user_id":1}]`, `{"user_id":1} x`, `{"user_id":1}{}`, `{"user_id":1`, "{user_id:1}"} {
		wantKind(t, errOf2(ParseChannelData(data)), ErrInvalidChannelData, 400)
	}
	wantKind(t, errOf2(ParseChannelData(`{}`)), ErrInvalidChannelData, 400)
	wantKind(t, errOf2(ParseChannelData(`{"user_info":{}}`)), ErrInvalidChannelData, 400)
	for _, id := range []string{`""`, `null`, `true`, `{}`, `["1"]`, `1e400`, `"` + strings.Repeat("u", MaxUserIDLength+1) + `"`} {
		wantKind(t, errOf2(ParseChannelData(`{"user_id":`+id+`}`)), ErrInvalidUserID, 400)
	}
	// Pusher's message for a user_info that is not an object
	// (pusher/pusher-http-php#32).
	for _, info := range []string{`"joe"`, `1`, `[]`, `true`} {
		wantMsg(t, errOf2(ParseChannelData(`{"user_id":1,"user_info":`+info+`}`)), ErrInvalidChannelData, 400,
			"user_info supplied to presence subscription is invalid - if supplied it must be a type of hash")
	}
}

func errOf2(_ Member, err error) error { return err }

func TestParseUserData(t *testing.T) {
	// The example of https://pusher.com/docs/channels/library_auth_reference/auth-signatures/#user-authentication
	u, err := ParseUserData(`{"id":"12345"}`)
	if err != nil || u.ID != "12345" {
		t.Fatalf("got %+v, %v", u, err)
	}
	u, err = ParseUserData(`{"id":"` + strings.Repeat("u", MaxUserIDLength) + `","name":"x","watchlist":["1"]}`)
	if err != nil || u.ID != strings.Repeat("u", MaxUserIDLength) {
		t.Fatalf("got %+v, %v", u, err)
	}
	// The id must be a non-empty string: numbers are refused here, unlike
	// in channel_data (pusher-http-node's validateUserId).
	for _, id := range []string{`12345`, `""`, `null`, `{}`, `"` + strings.Repeat("u", MaxUserIDLength+1) + `"`} {
		_, err := ParseUserData(`{"id":` + id + `}`)
		wantKind(t, err, ErrInvalidUserID, 400)
	}
	_, err = ParseUserData(`{"user_id":"1"}`)
	wantKind(t, err, ErrInvalidUserID, 400)
	for _, data := range []string{"", "null", `"x"`, `[]`, `{"id":"1"} x`} {
		_, err := ParseUserData(data)
		wantMsg(t, err, ErrInvalidUserData, 400, "Invalid user data: '"+data+"'")
	}
}

func TestValidateUserID(t *testing.T) {
	if err := ValidateUserID("1"); err != nil {
		t.Error(err)
	}
	wantMsg(t, ValidateUserID(""), ErrInvalidUserID, 400, "Invalid user id: ''")
	// 128 characters, JavaScript-counted.
	if err := ValidateUserID(strings.Repeat("😀", 64)); err != nil {
		t.Errorf("64 emoji: %v", err)
	}
	wantKind(t, ValidateUserID(strings.Repeat("😀", 64)+"x"), ErrInvalidUserID, 400)
	if !errors.Is(ValidateUserID(strings.Repeat("x", 129)), ErrInvalidUserID) {
		t.Error("129 characters accepted")
	}
}
