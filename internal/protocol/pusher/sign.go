package pusher

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file holds every signature Pusher Channels uses, all of them a hex
// HMAC-SHA256 keyed with an app secret:
//
//   - HTTP API requests: https://pusher.com/docs/channels/library_auth_reference/rest-api/#authentication
//   - channel authorization and user sign-in strings:
//     https://pusher.com/docs/channels/library_auth_reference/auth-signatures/
//   - webhooks: https://pusher.com/docs/channels/server_api/webhooks/#authentication
//
// Where the documentation is silent, the behaviour (and the error texts) follow
// Pusher's own request-signing library, pusher/pusher-signature
// (lib/pusher/signature.rb), which produces the messages Pusher's HTTP API
// answers with, and the official SDKs (pusher-http-node, pusher-http-go).

// Credentials are one app token: the app id (as in /apps/{id}/...), the
// public key and the secret. An app may have several tokens.
type Credentials struct {
	ID     string
	Key    string
	Secret string
}

// Sign returns the hex HMAC-SHA256 of s keyed with the secret: the
// signature of every Pusher signing scheme.
func (c Credentials) Sign(s string) string {
	return hmacHex(c.Secret, []byte(s))
}

func hmacHex(secret string, data []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil))
}

// KeyLookup finds the credentials of an auth_key. It reports false for a key
// it does not know.
type KeyLookup func(authKey string) (Credentials, bool)

// Protocol constants of the HTTP API signature.
const (
	// AuthVersion is the only auth_version Pusher accepts.
	AuthVersion = "1.0"
	// TimestampGrace is how far auth_timestamp may be from the server's
	// clock, either way. A difference of exactly TimestampGrace is already
	// rejected, as Pusher's signature library does (error >= grace).
	TimestampGrace = 600 * time.Second
)

// Webhook headers (https://pusher.com/docs/channels/server_api/webhooks/#authentication).
const (
	HeaderWebhookKey       = "X-Pusher-Key"
	HeaderWebhookSignature = "X-Pusher-Signature"
)

// Error is the error type of this package. errors.Is(err, ErrX) tells the
// kind; Error() is the message to show the client (Pusher's own wording
// where it is known); Status() the HTTP status Pusher answers with.
type Error struct {
	kind error
	msg  string
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the kind: one of the Err* variables.
func (e *Error) Unwrap() error { return e.kind }

// Status is the HTTP status for the error: 401 for authentication failures
// (Pusher's HTTP API documents 401 as "Authentication error: response body
// will contain an explanation", and its SDKs map 401 to their
// authentication error), 400 for everything else.
func (e *Error) Status() int {
	switch e.kind {
	case ErrMissingAuthKey, ErrUnknownAuthKey, ErrAuthVersion, ErrAuthTimestamp,
		ErrTimestampExpired, ErrInvalidSignature, ErrBodyMD5, ErrInvalidAuthKey:
		return http.StatusUnauthorized
	}
	return http.StatusBadRequest
}

func newError(kind error, format string, args ...any) *Error {
	return &Error{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Kinds of signature errors.
var (
	// ErrMalformedQuery: the query string cannot be decoded (a bad %-escape)
	// or repeats an auth parameter. 400.
	ErrMalformedQuery = errors.New("pusher: malformed query")
	// ErrMissingAuthKey: no auth_key parameter. 401.
	ErrMissingAuthKey = errors.New("pusher: missing auth_key")
	// ErrUnknownAuthKey: the auth_key (or webhook key) names no credentials. 401.
	ErrUnknownAuthKey = errors.New("pusher: unknown auth_key")
	// ErrAuthVersion: auth_version is missing or not "1.0". 401.
	ErrAuthVersion = errors.New("pusher: unsupported auth_version")
	// ErrAuthTimestamp: auth_timestamp is missing. 401.
	ErrAuthTimestamp = errors.New("pusher: missing auth_timestamp")
	// ErrTimestampExpired: auth_timestamp is TimestampGrace or more away from
	// the server's clock. 401.
	ErrTimestampExpired = errors.New("pusher: auth_timestamp expired")
	// ErrInvalidSignature: auth_signature (or a channel, user or webhook
	// signature) does not match. 401.
	ErrInvalidSignature = errors.New("pusher: invalid signature")
	// ErrBodyMD5: a non-empty body without body_md5, or a body_md5 that is
	// not the MD5 of the body. 401.
	ErrBodyMD5 = errors.New("pusher: invalid body_md5")
	// ErrInvalidAuthKey: the key part of a channel or user auth string is not
	// the app's key. 401.
	ErrInvalidAuthKey = errors.New("pusher: invalid key in auth data")
	// ErrReservedParam: SignRequest was given one of the parameters it
	// computes itself. 400.
	ErrReservedParam = errors.New("pusher: reserved parameter")
)

// Names of the authentication parameters.
const (
	paramAuthKey       = "auth_key"
	paramAuthTimestamp = "auth_timestamp"
	paramAuthVersion   = "auth_version"
	paramAuthSignature = "auth_signature"
	paramBodyMD5       = "body_md5"
)

func isReservedParam(lowerKey string) bool {
	switch lowerKey {
	case paramAuthKey, paramAuthTimestamp, paramAuthVersion, paramAuthSignature, paramBodyMD5:
		return true
	}
	return false
}

// param is one query parameter, in the order it came, key lowercased.
type param struct{ key, value string }

// decodeQuery splits a raw query on '&' only and %-decodes keys and values
// ('+' is a space), calling add for each parameter in order.
func decodeQuery(raw string, add func(key, value string)) error {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return newError(ErrMalformedQuery, "Invalid query: cannot decode parameter name %s", strconv.Quote(k))
		}
		value, err := url.QueryUnescape(v)
		if err != nil {
			return newError(ErrMalformedQuery, "Invalid query: cannot decode the value of %s", strconv.Quote(key))
		}
		add(key, value)
	}
	return nil
}

// parseParams decodes a raw query keeping the order, keys lowercased as
// Pusher does before signing.
func parseParams(raw string) ([]param, error) {
	var ps []param
	err := decodeQuery(raw, func(k, v string) { ps = append(ps, param{strings.ToLower(k), v}) })
	return ps, err
}

// ParseQuery decodes a raw query string the way VerifyRequest reads it:
// split on '&' only (a ';', valid in channel names and sent unescaped by
// pusher-http-node, is an ordinary character, where net/url rejects it),
// keys and values %-decoded with '+' as a space. Keys keep their case. The
// HTTP layer should read its parameters (info, filter_by_prefix, ...) with
// it, so that it acts on what was signed.
func ParseQuery(raw string) (url.Values, error) {
	v := url.Values{}
	if err := decodeQuery(raw, v.Add); err != nil {
		return nil, err
	}
	return v, nil
}

// stringToSign is METHOD \n path \n the parameters except auth_signature,
// keys lowercased, sorted by key (stable: repeated keys keep their order),
// joined as key=value with '&', nothing escaped.
func stringToSign(method, path string, ps []param) string {
	sorted := make([]param, 0, len(ps))
	for _, p := range ps {
		if p.key != paramAuthSignature {
			sorted = append(sorted, p)
		}
	}
	slices.SortStableFunc(sorted, func(a, b param) int { return strings.Compare(a.key, b.key) })
	var b strings.Builder
	b.WriteString(strings.ToUpper(method))
	b.WriteByte('\n')
	b.WriteString(path)
	b.WriteByte('\n')
	for i, p := range sorted {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.key)
		b.WriteByte('=')
		b.WriteString(p.value)
	}
	return b.String()
}

// VerifyRequest authenticates a Pusher HTTP API request and returns the
// credentials whose key signed it.
//
// method is the request method; path the path the client signed: the
// request's path starting at the app prefix, /apps/{id}/..., after the
// caller has removed any prefix a proxy adds, and %-decoded (r.URL.Path):
// the SDKs sign the path before their HTTP library escapes it, and for the
// characters of app ids and channel names the two forms are the same.
// rawQuery is the query string as received (r.URL.RawQuery), body the
// request body (nil or empty for none), lookup finds the credentials of an
// auth_key, now is the server's clock.
//
// The checks, in Pusher's order: auth_key present and known; auth_version
// "1.0"; auth_timestamp present and less than TimestampGrace away from now
// (either way); auth_signature equal to the hex HMAC-SHA256, keyed with the
// secret, of METHOD\npath\nquery, query being every parameter except
// auth_signature with keys lowercased, sorted by key, joined as key=value
// with '&' and not escaped; then body_md5: required when the body is
// non-empty, and whenever present it must be the hex MD5 of the body. It
// is signed like any other parameter, which is what ties the body to the
// signature. Other parameters are allowed and are signed too.
//
// The caller must still check that the returned credentials belong to the
// app the path names (Credentials.ID against {id}). Errors are *Error (401,
// or 400 for ErrMalformedQuery) and their text is what Pusher answers.
func VerifyRequest(method, path, rawQuery string, body []byte, lookup KeyLookup, now time.Time) (Credentials, error) {
	ps, err := parseParams(rawQuery)
	if err != nil {
		return Credentials{}, err
	}
	auth := make(map[string]string, 5)
	for _, p := range ps {
		if !isReservedParam(p.key) {
			continue
		}
		if _, dup := auth[p.key]; dup {
			return Credentials{}, newError(ErrMalformedQuery, "Invalid query: parameter %s given more than once", p.key)
		}
		auth[p.key] = p.value
	}

	key, ok := auth[paramAuthKey]
	if !ok {
		return Credentials{}, newError(ErrMissingAuthKey, "Missing parameter: auth_key")
	}
	creds, ok := lookup(key)
	if !ok || creds.Secret == "" {
		return Credentials{}, newError(ErrUnknownAuthKey, "Unknown auth_key")
	}

	version, ok := auth[paramAuthVersion]
	if !ok {
		return Credentials{}, newError(ErrAuthVersion, "Version required")
	}
	if version != AuthVersion {
		return Credentials{}, newError(ErrAuthVersion, "Version not supported")
	}

	ts, ok := auth[paramAuthTimestamp]
	if !ok {
		return Credentials{}, newError(ErrAuthTimestamp, "Timestamp required")
	}
	given, server := leadingInt(ts), now.Unix()
	diff := given - server
	if diff < 0 {
		diff = -diff
	}
	if diff >= int64(TimestampGrace/time.Second) {
		return Credentials{}, newError(ErrTimestampExpired,
			"Timestamp expired: Given timestamp (%s) not within %ds of server time (%s)",
			isoTime(given), int64(TimestampGrace/time.Second), isoTime(server))
	}

	sts := stringToSign(method, path, ps)
	want := creds.Sign(sts)
	got, ok := auth[paramAuthSignature]
	if !ok || !hmac.Equal([]byte(got), []byte(want)) {
		sent := "nil"
		if ok {
			sent = strconv.Quote(got)
		}
		return Credentials{}, newError(ErrInvalidSignature,
			"Invalid signature: you should have sent HmacSHA256Hex(%s, your_secret_key), but you sent %s",
			strconv.Quote(sts), sent)
	}

	bodyMD5, ok := auth[paramBodyMD5]
	if !ok {
		if len(body) > 0 {
			return Credentials{}, newError(ErrBodyMD5, "Missing parameter: body_md5 (required for a non-empty body)")
		}
		return creds, nil
	}
	if actual := md5Hex(body); bodyMD5 != actual {
		return Credentials{}, newError(ErrBodyMD5,
			"Invalid body_md5: given %s, but the MD5 of the request body is %s", strconv.Quote(bodyMD5), actual)
	}
	return creds, nil
}

func md5Hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// leadingInt reads auth_timestamp as Ruby's String#to_i does, which is what
// Pusher's signature library compares: an optional sign and the leading
// decimal digits; anything else gives 0 (so a garbage timestamp is reported
// as expired, as Pusher does). Values are clamped far beyond any real time.
func leadingInt(s string) int64 {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	const limit = int64(1) << 40 // ~ year 36812
	var n int64
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int64(s[i]-'0')
		if n > limit {
			n = limit
			break
		}
	}
	if neg {
		return -n
	}
	return n
}

func isoTime(unix int64) string {
	return time.Unix(unix, 0).UTC().Format("2006-01-02T15:04:05Z")
}

// SignRequest signs an HTTP API request the way the official SDKs do and
// returns the full query string to send: params (whose keys are lowercased)
// plus auth_key, auth_timestamp (now), auth_version and, for a non-empty
// body, body_md5, sorted by key and %-escaped, then auth_signature. path is
// the path VerifyRequest will be given (/apps/{id}/...). params must not
// contain the parameters SignRequest computes (ErrReservedParam).
func SignRequest(c Credentials, method, path string, params url.Values, body []byte, now time.Time) (string, error) {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	ps := make([]param, 0, len(params)+4)
	for _, k := range keys {
		lk := strings.ToLower(k)
		if isReservedParam(lk) {
			return "", newError(ErrReservedParam, "%s is a required parameter and cannot be overridden", lk)
		}
		for _, v := range params[k] {
			ps = append(ps, param{lk, v})
		}
	}
	ps = append(ps,
		param{paramAuthKey, c.Key},
		param{paramAuthTimestamp, strconv.FormatInt(now.Unix(), 10)},
		param{paramAuthVersion, AuthVersion},
	)
	if len(body) > 0 {
		ps = append(ps, param{paramBodyMD5, md5Hex(body)})
	}
	signature := c.Sign(stringToSign(method, path, ps))

	slices.SortStableFunc(ps, func(a, b param) int { return strings.Compare(a.key, b.key) })
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(url.QueryEscape(p.key))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(p.value))
		b.WriteByte('&')
	}
	b.WriteString(paramAuthSignature)
	b.WriteByte('=')
	b.WriteString(signature)
	return b.String(), nil
}

// channelStringToSign is socket_id:channel_name, and :channel_data after it
// when there is channel_data (presence channels). An empty channel_data is
// no channel_data, as in the SDKs.
func channelStringToSign(socketID, channel, channelData string) string {
	s := socketID + ":" + channel
	if channelData != "" {
		s += ":" + channelData
	}
	return s
}

func userStringToSign(socketID, userData string) string {
	return socketID + "::user::" + userData
}

// ChannelAuth returns the auth string authorizing socketID on a private or
// presence channel: key:hex(HMAC-SHA256(secret, socket_id:channel_name)),
// with :channel_data appended to the signed string for a presence channel.
// channelData is signed verbatim, byte for byte as the client sends it.
func ChannelAuth(c Credentials, socketID, channel, channelData string) string {
	return c.Key + ":" + c.Sign(channelStringToSign(socketID, channel, channelData))
}

// VerifyChannelAuth checks the auth a client sent in pusher:subscribe. The
// part before the first ':' must be the app's key (ErrInvalidAuthKey), the
// rest the signature (ErrInvalidSignature); both are compared in constant
// time. channelData is the channel_data of the same message, verbatim (""
// when absent). The error texts are the ones Pusher sends in pusher:error.
//
// The channel name must have passed ParseChannel: it is what keeps the
// signed strings unambiguous (a name with a ':' could collide with a
// presence or sign-in string), and VerifyChannelAuth refuses such a name
// itself with ErrInvalidChannelName.
func VerifyChannelAuth(c Credentials, socketID, channel, channelData, auth string) error {
	if strings.Contains(channel, ":") {
		return newError(ErrInvalidChannelName, "Invalid channel name: '%s'", channel)
	}
	return verifyAuth(c, channelStringToSign(socketID, channel, channelData), auth, "subscription")
}

// UserAuth returns the auth string of a user sign-in (pusher:signin):
// key:hex(HMAC-SHA256(secret, socket_id::user::user_data)), user_data signed
// verbatim.
func UserAuth(c Credentials, socketID, userData string) string {
	return c.Key + ":" + c.Sign(userStringToSign(socketID, userData))
}

// VerifyUserAuth checks the auth of a pusher:signin, as VerifyChannelAuth
// does for subscriptions. Pusher's text for a bad sign-in key is not
// documented; the message follows the subscription one.
func VerifyUserAuth(c Credentials, socketID, userData, auth string) error {
	return verifyAuth(c, userStringToSign(socketID, userData), auth, "signin")
}

func verifyAuth(c Credentials, sts, auth, what string) error {
	key, signature, _ := strings.Cut(auth, ":")
	if c.Secret == "" || subtle.ConstantTimeCompare([]byte(key), []byte(c.Key)) != 1 {
		return newError(ErrInvalidAuthKey, "Invalid key in %s auth data: '%s'", what, key)
	}
	if !hmac.Equal([]byte(signature), []byte(c.Sign(sts))) {
		return newError(ErrInvalidSignature, "Invalid signature: Expected HMAC SHA256 hex digest of %s, but got %s", sts, signature)
	}
	return nil
}

// WebhookSignature is the X-Pusher-Signature of a webhook body: the hex
// HMAC-SHA256 of the body keyed with the secret. The X-Pusher-Key header
// carries c.Key.
func WebhookSignature(c Credentials, body []byte) string {
	return hmacHex(c.Secret, body)
}

// VerifyWebhook checks a webhook's X-Pusher-Key (key) and
// X-Pusher-Signature (signature) headers against the body, as the Pusher
// SDKs do on receipt.
func VerifyWebhook(c Credentials, key, signature string, body []byte) error {
	if c.Secret == "" || subtle.ConstantTimeCompare([]byte(key), []byte(c.Key)) != 1 {
		return newError(ErrUnknownAuthKey, "Received webhook with unknown key: %s", strconv.Quote(key))
	}
	if !hmac.Equal([]byte(signature), []byte(WebhookSignature(c, body))) {
		return newError(ErrInvalidSignature, "Received webhook with invalid signature")
	}
	return nil
}
