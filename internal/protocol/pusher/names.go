package pusher

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
)

// Naming rules, from https://pusher.com/docs/channels/using_channels/channels/#channel-naming-conventions
// ("Channel names may contain a maximum of 164 characters. This limit
// includes channel prefixes"; "lower and uppercase letters, numbers and the
// following punctuation _ - = @ , . ;"; "# is a reserved character"), the
// presence limits at https://pusher.com/docs/channels/using_channels/presence-channels/
// ("maximum 128 characters for user id"), the user data rule at
// https://pusher.com/docs/channels/library_auth_reference/auth-signatures/
// ("an id property set to a non-empty string"), the cache prefixes at
// https://pusher.com/docs/channels/using_channels/cache-channels/, and the
// checks and messages of pusher-http-node (lib/pusher.js: validateChannel,
// validateSocketId, validateUserId, "Too long event name") and pusher-js
// (src/core/channels/channels.ts, channel.ts). Lengths are counted as
// JavaScript does (UTF-16 code units), since that is how the SDKs measure.
const (
	// MaxChannelNameLength is the longest channel name, prefix included.
	// (pusher-http-node allows 200; Pusher documents 164.)
	MaxChannelNameLength = 164
	// MaxEventNameLength is the longest event name.
	MaxEventNameLength = 200
	// MaxUserIDLength is the longest user id (presence channel_data
	// user_id, sign-in user_data id).
	MaxUserIDLength = 128
	// MaxUserInfoSize is Pusher's documented limit on a presence member's
	// user object ("1KB limit for user object"). ParseChannelData does not
	// enforce it; the session decides.
	MaxUserInfoSize = 1024

	// ClientEventPrefix starts every client event name.
	ClientEventPrefix = "client-"
	// ServerToUserPrefix starts the channel Pusher uses to send to a
	// signed-in user: #server-to-user-{user id}.
	ServerToUserPrefix = "#server-to-user-"
)

// Kinds of naming errors. Their Status() is 400.
var (
	ErrInvalidChannelName  = errors.New("pusher: invalid channel name")
	ErrChannelNameTooLong  = errors.New("pusher: channel name too long")
	ErrReservedChannelName = errors.New("pusher: reserved channel name")
	ErrInvalidEventName    = errors.New("pusher: invalid event name")
	ErrEventNameTooLong    = errors.New("pusher: event name too long")
	ErrNotClientEvent      = errors.New("pusher: not a client event")
	ErrInvalidSocketID     = errors.New("pusher: invalid socket id")
	ErrInvalidUserID       = errors.New("pusher: invalid user id")
	ErrInvalidChannelData  = errors.New("pusher: invalid channel_data")
	ErrInvalidUserData     = errors.New("pusher: invalid user_data")
)

// Kind is the type of a channel, given by its name's prefix.
type Kind uint8

// The kinds of channel.
const (
	KindPublic                Kind = iota // no prefix
	KindPrivate                           // private-
	KindPrivateEncrypted                  // private-encrypted-
	KindPresence                          // presence-
	KindCache                             // cache-
	KindPrivateCache                      // private-cache-
	KindPrivateEncryptedCache             // private-encrypted-cache-
	KindPresenceCache                     // presence-cache-
	KindServerToUser                      // #server-to-user-{user id}
)

// prefixes, longest first among those that share a start.
var kindPrefixes = []struct {
	prefix string
	kind   Kind
}{
	{"private-encrypted-cache-", KindPrivateEncryptedCache},
	{"private-encrypted-", KindPrivateEncrypted},
	{"private-cache-", KindPrivateCache},
	{"private-", KindPrivate},
	{"presence-cache-", KindPresenceCache},
	{"presence-", KindPresence},
	{"cache-", KindCache},
}

func (k Kind) String() string {
	switch k {
	case KindPublic:
		return "public"
	case KindPrivate:
		return "private"
	case KindPrivateEncrypted:
		return "private-encrypted"
	case KindPresence:
		return "presence"
	case KindCache:
		return "cache"
	case KindPrivateCache:
		return "private-cache"
	case KindPrivateEncryptedCache:
		return "private-encrypted-cache"
	case KindPresenceCache:
		return "presence-cache"
	case KindServerToUser:
		return "server-to-user"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// IsPrivate reports a private- channel: private, private-encrypted and
// their cache variants. Presence channels are not private by this test
// (see RequiresAuth).
func (k Kind) IsPrivate() bool {
	switch k {
	case KindPrivate, KindPrivateEncrypted, KindPrivateCache, KindPrivateEncryptedCache:
		return true
	}
	return false
}

// IsPresence reports a presence- channel, cache variant included.
func (k Kind) IsPresence() bool { return k == KindPresence || k == KindPresenceCache }

// IsCache reports a cache channel of any kind: cache-, private-cache-,
// private-encrypted-cache-, presence-cache-.
func (k Kind) IsCache() bool {
	switch k {
	case KindCache, KindPrivateCache, KindPrivateEncryptedCache, KindPresenceCache:
		return true
	}
	return false
}

// IsEncrypted reports an end-to-end encrypted channel
// (private-encrypted-, cache variant included): Relay relays its payloads
// without reading them.
func (k Kind) IsEncrypted() bool { return k == KindPrivateEncrypted || k == KindPrivateEncryptedCache }

// IsServerToUser reports the #server-to-user- channel: the HTTP API may
// publish to it, no client may subscribe to it.
func (k Kind) IsServerToUser() bool { return k == KindServerToUser }

// RequiresAuth reports a channel whose subscription needs an auth string:
// private and presence channels of every variant.
func (k Kind) RequiresAuth() bool { return k.IsPrivate() || k.IsPresence() }

// AllowsClientEvents reports a channel on which clients may trigger
// client- events: the authorized (private and presence) channels. The
// protocol does not forbid them on encrypted channels, though the Pusher
// client libraries cannot send them there.
func (k Kind) AllowsClientEvents() bool { return k.RequiresAuth() }

// Channel is a parsed channel name.
type Channel struct {
	Name string
	Kind Kind
}

// UserID is the user id of a #server-to-user- channel, "" for any other.
func (c Channel) UserID() string {
	if c.Kind != KindServerToUser {
		return ""
	}
	return strings.TrimPrefix(c.Name, ServerToUserPrefix)
}

// channelChar[b] reports a byte allowed in a channel name: [A-Za-z0-9_\-=@,.;].
var channelChar = func() (t [256]bool) {
	for b := 'a'; b <= 'z'; b++ {
		t[b] = true
		t[b-'a'+'A'] = true
	}
	for b := '0'; b <= '9'; b++ {
		t[b] = true
	}
	for _, b := range "_-=@,.;" {
		t[b] = true
	}
	return t
}()

// ParseChannel validates a channel name and tells its kind.
//
// A name must be 1 to MaxChannelNameLength characters from
// [A-Za-z0-9_\-=@,.;]; errors read "Invalid channel name: '…'" and "Channel
// name too long: '…'", as pusher-http-node words them. '#' is reserved: a
// name starting with it is accepted only as #server-to-user-{user id}
// (KindServerToUser; the user id follows the user id rules, not the
// character set, as pusher-http-node's sendToUser does), any other gets
// pusher-js's message `Cannot create a channel with name "…".`
// (ErrReservedChannelName). The session must still refuse subscriptions to
// KindServerToUser channels.
func ParseChannel(name string) (Channel, error) {
	if strings.HasPrefix(name, "#") {
		if id, ok := strings.CutPrefix(name, ServerToUserPrefix); ok {
			if ValidateUserID(id) != nil {
				return Channel{}, newError(ErrInvalidChannelName, "Invalid channel name: '%s'", name)
			}
			return Channel{Name: name, Kind: KindServerToUser}, nil
		}
		return Channel{}, newError(ErrReservedChannelName, "Cannot create a channel with name \"%s\".", name)
	}
	if name == "" {
		return Channel{}, newError(ErrInvalidChannelName, "Invalid channel name: '%s'", name)
	}
	for i := 0; i < len(name); i++ {
		if !channelChar[name[i]] {
			return Channel{}, newError(ErrInvalidChannelName, "Invalid channel name: '%s'", name)
		}
	}
	if len(name) > MaxChannelNameLength { // ASCII only by now: bytes are characters
		return Channel{}, newError(ErrChannelNameTooLong, "Channel name too long: '%s'", name)
	}
	for _, p := range kindPrefixes {
		if strings.HasPrefix(name, p.prefix) {
			return Channel{Name: name, Kind: p.kind}, nil
		}
	}
	return Channel{Name: name, Kind: KindPublic}, nil
}

// jsLen is the length of s as JavaScript counts it: UTF-16 code units.
func jsLen(s string) int {
	n := 0
	for _, r := range s {
		if utf16.RuneLen(r) == 2 {
			n += 2
		} else {
			n++
		}
	}
	return n
}

// ValidateEventName checks an event name: non-empty and at most
// MaxEventNameLength characters ("Too long event name: '…'", as
// pusher-http-node words it).
func ValidateEventName(name string) error {
	if name == "" {
		return newError(ErrInvalidEventName, "Invalid event name: ''")
	}
	if jsLen(name) > MaxEventNameLength {
		return newError(ErrEventNameTooLong, "Too long event name: '%s'", name)
	}
	return nil
}

// ValidateClientEventName checks the name of an event a client triggers:
// it must start with "client-" (pusher-js's message: "Event '…' does not
// start with 'client-'") and be a valid event name.
func ValidateClientEventName(name string) error {
	if !strings.HasPrefix(name, ClientEventPrefix) {
		return newError(ErrNotClientEvent, "Event '%s' does not start with 'client-'", name)
	}
	return ValidateEventName(name)
}

// maxSocketID bounds a socket id an event may name.
const maxSocketID = 48

// ValidateSocketID checks a socket id: digits, a dot, digits (the
// pusher-http-node check /^\d+\.\d+$/, message "Invalid socket id: '…'"),
// at most maxSocketID bytes.
func ValidateSocketID(id string) error {
	before, after, ok := strings.Cut(id, ".")
	// At most maxSocketID bytes: Relay's own are at most 33, and an event
	// stores the id it leaves out before its frame (see event.go).
	if !ok || len(id) > maxSocketID || !allDigits(before) || !allDigits(after) {
		return newError(ErrInvalidSocketID, "Invalid socket id: '%s'", id)
	}
	return nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ValidateUserID checks a user id in its string form: non-empty
// (pusher-http-node: "Invalid user id: '…'") and at most MaxUserIDLength
// characters (Pusher's documented presence limit).
func ValidateUserID(id string) error {
	if id == "" {
		return newError(ErrInvalidUserID, "Invalid user id: '%s'", id)
	}
	if jsLen(id) > MaxUserIDLength {
		return newError(ErrInvalidUserID, "User id too long (more than %d characters): '%s'", MaxUserIDLength, id)
	}
	// Ids name Relay's internal topics (a user's online and control
	// topics) and the engines' keys: no control characters.
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return newError(ErrInvalidUserID, "Invalid user id: control characters are not allowed: %q", id)
		}
	}
	return nil
}

// Member is the presence member a channel_data describes.
type Member struct {
	// UserID is user_id as a string: a JSON string as is, a JSON number as
	// JavaScript would print it (integers verbatim, so ids beyond 2^53 stay
	// distinct).
	UserID string
	// UserInfo is user_info verbatim, nil when absent or null.
	UserInfo json.RawMessage
}

// ParseChannelData reads the channel_data of a presence subscription: a JSON
// object with a user_id that is a non-empty string or a number (Pusher's own
// example signs {"user_id":10,...}, Laravel sends numeric ids) of at most
// MaxUserIDLength characters, and an optional user_info that must be an
// object. Errors are ErrInvalidChannelData, or ErrInvalidUserID for a bad
// user_id; the user_info message is Pusher's.
func ParseChannelData(channelData string) (Member, error) {
	obj, ok := decodeObject(channelData)
	if !ok {
		return Member{}, newError(ErrInvalidChannelData, "channel_data supplied to presence subscription is invalid - it must be a JSON encoded hash")
	}
	raw, ok := obj["user_id"]
	if !ok {
		return Member{}, newError(ErrInvalidChannelData, "channel_data supplied to presence subscription is invalid - it must contain a user_id")
	}
	id, ok := userIDString(raw)
	if !ok {
		return Member{}, newError(ErrInvalidUserID, "user_id supplied to presence subscription is invalid - it must be a non-empty string or a number")
	}
	if err := ValidateUserID(id); err != nil {
		return Member{}, err
	}
	m := Member{UserID: id}
	if info, ok := obj["user_info"]; ok && string(info) != "null" {
		if info[0] != '{' {
			return Member{}, newError(ErrInvalidChannelData, "user_info supplied to presence subscription is invalid - if supplied it must be a type of hash")
		}
		m.UserInfo = info
	}
	return m, nil
}

// UserData is what ParseUserData reads from a sign-in's user_data.
type UserData struct {
	// ID is the user's id.
	ID string
}

// ParseUserData reads the user_data of a pusher:signin: a JSON object whose
// id is a non-empty string (numbers are not accepted here, unlike
// channel_data: Pusher documents a string and pusher-http-node refuses
// anything else) of at most MaxUserIDLength characters.
func ParseUserData(userData string) (UserData, error) {
	obj, ok := decodeObject(userData)
	if !ok {
		return UserData{}, newError(ErrInvalidUserData, "Invalid user data: '%s'", userData)
	}
	var id string
	raw, ok := obj["id"]
	if !ok || raw[0] != '"' || json.Unmarshal(raw, &id) != nil {
		return UserData{}, newError(ErrInvalidUserID, "Invalid user id in user data: the id must be a non-empty string")
	}
	if err := ValidateUserID(id); err != nil {
		return UserData{}, err
	}
	return UserData{ID: id}, nil
}

// decodeObject decodes s as exactly one JSON object, members raw.
func decodeObject(s string) (map[string]json.RawMessage, bool) {
	dec := json.NewDecoder(strings.NewReader(s))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return obj, true
}

// userIDString turns a raw user_id (a JSON string or number) into its
// string form.
func userIDString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	case c == '-' || (c >= '0' && c <= '9'):
		return jsNumber(string(raw))
	}
	return "", false
}

// jsNumber formats a JSON number literal as JavaScript's String(n) does,
// except that integer literals are kept verbatim (JavaScript would round
// those beyond 2^53; Pusher warns about them rather than merging users).
func jsNumber(lit string) (string, bool) {
	if isIntegerLiteral(lit) {
		if lit == "-0" {
			return "0", true
		}
		return lit, true
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", false
	}
	if f == 0 {
		return "0", true
	}
	if a := math.Abs(f); a >= 1e-6 && a < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64), true
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // 1e+21, 1.5e-07
	mant, exp, _ := strings.Cut(s, "e")
	sign, digits := exp[:1], strings.TrimLeft(exp[1:], "0")
	return mant + "e" + sign + digits, true
}

func isIntegerLiteral(s string) bool {
	s = strings.TrimPrefix(s, "-")
	return allDigits(s)
}
