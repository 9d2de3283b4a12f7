package pusher

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// docCreds are the credentials of Pusher's worked examples:
// https://pusher.com/docs/channels/library_auth_reference/auth-signatures/
// and https://pusher.com/docs/channels/library_auth_reference/rest-api/#worked-authentication-example
// (app_id 3 in the latter).
var docCreds = Credentials{ID: "3", Key: "278d425bdf160c739803", Secret: "7ad3773142a6692b25b8"}

func docLookup(key string) (Credentials, bool) {
	if key == docCreds.Key {
		return docCreds, true
	}
	return Credentials{}, false
}

// The HTTP API worked example, https://pusher.com/docs/channels/library_auth_reference/rest-api/#worked-authentication-example:
// triggering "foo" on "project-3", all values as printed there.
const (
	docBody         = `{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`
	docTimestamp    = 1353088179
	docBodyMD5      = "ec365a775a4cd0599faeb73354201b6f"
	docSignature    = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
	docStringToSign = "POST\n/apps/3/events\n" +
		"auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
	docQuery = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0" +
		"&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=" + docSignature
)

func docNow(offset int64) time.Time { return time.Unix(docTimestamp+offset, 0) }

// wantKind fails unless err is an *Error of the given kind and status.
func wantKind(t *testing.T, err, kind error, status int) *Error {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("err = %v, want kind %v", err, kind)
	}
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("err %T is not *Error", err)
	}
	if pe.Status() != status {
		t.Errorf("status = %d, want %d", pe.Status(), status)
	}
	return pe
}

// wantMsg is wantKind plus an exact message.
func wantMsg(t *testing.T, err, kind error, status int, msg string) {
	t.Helper()
	if pe := wantKind(t, err, kind, status); pe.Error() != msg {
		t.Errorf("message\n%s\nwant\n%s", pe.Error(), msg)
	}
}

func TestChannelAuthDocVectors(t *testing.T) {
	// Source: https://pusher.com/docs/channels/library_auth_reference/auth-signatures/
	// (pusher/docs docs/channels/library_auth_reference/auth-signatures.md).
	tests := []struct {
		name                           string
		socketID, channel, channelData string
		want                           string
	}{
		{
			// "Private channel" worked example.
			"private", "1234.1234", "private-foobar", "",
			"278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
		},
		{
			// "Presence channels" example. The signature printed on the page
			// today, afaed369…, is over user_info {"name":"Mr. Pusher"}: the
			// page's older wording (https://pusher.com/docs/auth_signatures#presence,
			// also quoted by pusher-http-haskell's and pusher-http-java's
			// tests). The page now shows "Mr. Channels" next to the same,
			// no longer matching, signature.
			"presence documented signature", "1234.1234", "presence-foobar",
			`{"user_id":10,"user_info":{"name":"Mr. Pusher"}}`,
			"278d425bdf160c739803:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c",
		},
		{
			// The channel_data the page shows today. Not a documented
			// value: derived independently with
			// printf '%s' '1234.1234:presence-foobar:{…"Mr. Channels"…}' | openssl dgst -sha256 -hmac 7ad3773142a6692b25b8
			// and node's crypto.createHmac, which agree.
			"presence current page text", "1234.1234", "presence-foobar",
			`{"user_id":10,"user_info":{"name":"Mr. Channels"}}`,
			"278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ChannelAuth(docCreds, tt.socketID, tt.channel, tt.channelData); got != tt.want {
				t.Errorf("ChannelAuth = %s, want %s", got, tt.want)
			}
			if err := VerifyChannelAuth(docCreds, tt.socketID, tt.channel, tt.channelData, tt.want); err != nil {
				t.Errorf("VerifyChannelAuth: %v", err)
			}
		})
	}
}

func TestUserAuthDocVector(t *testing.T) {
	// "User authentication" worked example,
	// https://pusher.com/docs/channels/library_auth_reference/auth-signatures/
	const want = "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
	if got := UserAuth(docCreds, "1234.1234", `{"id":"12345"}`); got != want {
		t.Errorf("UserAuth = %s, want %s", got, want)
	}
	if err := VerifyUserAuth(docCreds, "1234.1234", `{"id":"12345"}`, want); err != nil {
		t.Errorf("VerifyUserAuth: %v", err)
	}
	// The signed strings of a sign-in and of a subscription to a channel
	// named `:user::{"id":"12345"}` would be the same; only the channel
	// naming rules keep the two schemes apart, so VerifyChannelAuth refuses
	// any name with a ':'.
	wantKind(t, VerifyChannelAuth(docCreds, "1234.1234", `:user::{"id":"12345"}`, "", want), ErrInvalidChannelName, 400)
	if _, err := ParseChannel(`:user::{"id":"12345"}`); !errors.Is(err, ErrInvalidChannelName) {
		t.Errorf("ParseChannel accepted a name with ':': %v", err)
	}
}

func TestVerifyChannelAuthRejects(t *testing.T) {
	const sig = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
	good := docCreds.Key + ":" + sig
	presence := ChannelAuth(docCreds, "1234.1234", "presence-foobar", `{"user_id":10}`)

	// The key part must be the app's key; Pusher's message (as reported in
	// pusher/pusher-js#237): "Invalid key in subscription auth data: '…'".
	wantMsg(t, VerifyChannelAuth(docCreds, "1234.1234", "private-foobar", "", "INSERT_YOUR_KEY_HERE:"+sig),
		ErrInvalidAuthKey, http.StatusUnauthorized, "Invalid key in subscription auth data: 'INSERT_YOUR_KEY_HERE'")
	wantKind(t, VerifyChannelAuth(docCreds, "1234.1234", "private-foobar", "", sig), ErrInvalidAuthKey, 401)
	wantKind(t, VerifyChannelAuth(docCreds, "1234.1234", "private-foobar", "", ""), ErrInvalidAuthKey, 401)

	// Anything else that changes the signed string, or the signature.
	// Pusher's message (pusher/pusher-websocket-java#205): "Invalid
	// signature: Expected HMAC SHA256 hex digest of <string>, but got <sig>".
	wantMsg(t, VerifyChannelAuth(docCreds, "1234.1235", "private-foobar", "", good), ErrInvalidSignature, 401,
		"Invalid signature: Expected HMAC SHA256 hex digest of 1234.1235:private-foobar, but got "+sig)
	for _, tc := range []struct{ socket, channel, data, auth string }{
		{"1234.1234", "private-foobaz", "", good},
		{"1234.1234", "private-foobar", "", docCreds.Key + ":" + strings.ToUpper(sig)},
		{"1234.1234", "private-foobar", "", good + "0"},
		{"1234.1234", "private-foobar", `{"user_id":10}`, good},
		{"1234.1234", "presence-foobar", `{"user_id":11}`, presence},
		{"1234.1234", "presence-foobar", `{"user_id": 10}`, presence}, // verbatim, not re-encoded
		{"1234.1234", "presence-foobar", "", presence},
	} {
		wantKind(t, VerifyChannelAuth(docCreds, tc.socket, tc.channel, tc.data, tc.auth), ErrInvalidSignature, 401)
	}
	// Another app's secret behind the right key.
	other := Credentials{ID: "3", Key: docCreds.Key, Secret: "other-secret"}
	wantKind(t, VerifyChannelAuth(other, "1234.1234", "private-foobar", "", good), ErrInvalidSignature, 401)
	// No secret configured: never verifies.
	wantKind(t, VerifyChannelAuth(Credentials{Key: docCreds.Key}, "1.1", "private-a", "",
		ChannelAuth(Credentials{Key: docCreds.Key}, "1.1", "private-a", "")), ErrInvalidAuthKey, 401)

	// User sign-in.
	user := UserAuth(docCreds, "1.2", `{"id":"7"}`)
	wantKind(t, VerifyUserAuth(docCreds, "1.2", `{"id":"8"}`, user), ErrInvalidSignature, 401)
	wantKind(t, VerifyUserAuth(docCreds, "1.3", `{"id":"7"}`, user), ErrInvalidSignature, 401)
	wantKind(t, VerifyUserAuth(docCreds, "1.2", `{"id":"7"}`, "k"+user), ErrInvalidAuthKey, 401)
}

func TestRequestDocVector(t *testing.T) {
	ps, err := parseParams(docQuery)
	if err != nil {
		t.Fatal(err)
	}
	if got := stringToSign("POST", "/apps/3/events", ps); got != docStringToSign {
		t.Errorf("string to sign:\n%q\nwant\n%q", got, docStringToSign)
	}
	if got := md5Hex([]byte(docBody)); got != docBodyMD5 {
		t.Errorf("body md5 = %s, want %s", got, docBodyMD5)
	}
	if got := docCreds.Sign(docStringToSign); got != docSignature {
		t.Errorf("signature = %s, want %s", got, docSignature)
	}

	// SignRequest produces the documented query, byte for byte.
	q, err := SignRequest(docCreds, "POST", "/apps/3/events", nil, []byte(docBody), docNow(0))
	if err != nil {
		t.Fatal(err)
	}
	if q != docQuery {
		t.Errorf("SignRequest =\n%s\nwant\n%s", q, docQuery)
	}

	for _, offset := range []int64{0, 1, -1, 599, -599} {
		creds, err := VerifyRequest("POST", "/apps/3/events", docQuery, []byte(docBody), docLookup, docNow(offset))
		if err != nil {
			t.Fatalf("offset %d: %v", offset, err)
		}
		if creds != docCreds {
			t.Errorf("credentials = %+v", creds)
		}
	}
}

func TestCanonicalQueryDocExample(t *testing.T) {
	// https://pusher.com/docs/channels/library_auth_reference/rest-api/#generating-authentication-signatures:
	// "given the keys auth_key: foo, Name: Something else, you get
	// auth_key=foo&name=Something else".
	ps, err := parseParams("Name=Something%20else&auth_key=foo")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := stringToSign("get", "/some/resource", ps), "GET\n/some/resource\nauth_key=foo&name=Something else"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestVerifyRequestTimestamp(t *testing.T) {
	for _, tc := range []struct {
		offset int64
		msg    string
	}{
		// The server is 601 s ahead: the request is stale.
		{601, "Timestamp expired: Given timestamp (2012-11-16T17:49:39Z) not within 600s of server time (2012-11-16T17:59:40Z)"},
		// 601 s behind: from the future, equally refused (pusher/pusher-http-ruby#49
		// shows Pusher's 401 for a timestamp 601 s ahead).
		{-601, "Timestamp expired: Given timestamp (2012-11-16T17:49:39Z) not within 600s of server time (2012-11-16T17:39:38Z)"},
		// Exactly 600 s is already out, as in pusher-signature (error >= grace).
		{600, "Timestamp expired: Given timestamp (2012-11-16T17:49:39Z) not within 600s of server time (2012-11-16T17:59:39Z)"},
		{-600, "Timestamp expired: Given timestamp (2012-11-16T17:49:39Z) not within 600s of server time (2012-11-16T17:39:39Z)"},
	} {
		_, err := VerifyRequest("POST", "/apps/3/events", docQuery, []byte(docBody), docLookup, docNow(tc.offset))
		wantMsg(t, err, ErrTimestampExpired, http.StatusUnauthorized, tc.msg)
	}
}

// signed builds a raw query from params in the given order, with
// auth_signature computed over stringToSign (so over what VerifyRequest
// should reconstruct), for requests the SDKs could send.
func signedQuery(t *testing.T, c Credentials, method, path, raw string) string {
	t.Helper()
	ps, err := parseParams(raw)
	if err != nil {
		t.Fatal(err)
	}
	return raw + "&auth_signature=" + c.Sign(stringToSign(method, path, ps))
}

func TestVerifyRequestRejects(t *testing.T) {
	body := []byte(docBody)
	const ts = "1353088179"
	now := docNow(10)
	verify := func(query string, body []byte) error {
		_, err := VerifyRequest("POST", "/apps/3/events", query, body, docLookup, now)
		return err
	}
	msg := func(err error) string {
		if err == nil {
			return "<nil>"
		}
		return err.Error()
	}

	t.Run("missing auth_key", func(t *testing.T) {
		err := verify("auth_timestamp="+ts+"&auth_version=1.0&body_md5="+docBodyMD5+"&auth_signature="+docSignature, body)
		wantMsg(t, err, ErrMissingAuthKey, 401, "Missing parameter: auth_key")
	})
	t.Run("unknown auth_key", func(t *testing.T) {
		q := strings.Replace(docQuery, docCreds.Key, "0000000000000000000a", 1)
		wantMsg(t, verify(q, body), ErrUnknownAuthKey, 401, "Unknown auth_key")
		// A key whose credentials have no secret is unknown too.
		_, err := VerifyRequest("POST", "/apps/3/events", docQuery, body,
			func(string) (Credentials, bool) { return Credentials{ID: "3", Key: docCreds.Key}, true }, now)
		wantKind(t, err, ErrUnknownAuthKey, 401)
	})
	t.Run("wrong secret", func(t *testing.T) {
		other := Credentials{ID: "3", Key: docCreds.Key, Secret: "not-the-secret"}
		_, err := VerifyRequest("POST", "/apps/3/events", docQuery, body,
			func(string) (Credentials, bool) { return other, true }, now)
		// Pusher's wording, as quoted in pusher/pusher-http-go#91.
		want := `Invalid signature: you should have sent HmacSHA256Hex("POST\n/apps/3/events\n` +
			`auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f", ` +
			`your_secret_key), but you sent "` + docSignature + `"`
		wantMsg(t, err, ErrInvalidSignature, 401, want)
	})
	t.Run("signature", func(t *testing.T) {
		base := strings.TrimSuffix(docQuery, "&auth_signature="+docSignature)
		if pe := wantKind(t, verify(base, body), ErrInvalidSignature, 401); !strings.HasSuffix(pe.Error(), "but you sent nil") {
			t.Errorf("message %q", pe.Error())
		}
		wantKind(t, verify(base+"&auth_signature="+strings.ToUpper(docSignature), body), ErrInvalidSignature, 401)
		wantKind(t, verify(base+"&auth_signature=", body), ErrInvalidSignature, 401)
		wantKind(t, verify(base+"&auth_signature="+docSignature[:63], body), ErrInvalidSignature, 401)
		// Another path or method than the one signed.
		_, err := VerifyRequest("POST", "/apps/4/events", docQuery, body, docLookup, now)
		wantKind(t, err, ErrInvalidSignature, 401)
		_, err = VerifyRequest("PUT", "/apps/3/events", docQuery, body, docLookup, now)
		wantKind(t, err, ErrInvalidSignature, 401)
		// The method is uppercased before signing.
		if _, err := VerifyRequest("post", "/apps/3/events", docQuery, body, docLookup, now); err != nil {
			t.Errorf("lowercase method: %v", err)
		}
	})
	t.Run("tampered body", func(t *testing.T) {
		tampered := bytes.Replace(body, []byte("project-3"), []byte("project-4"), 1)
		err := verify(docQuery, tampered)
		wantKind(t, err, ErrBodyMD5, 401)
		if !strings.Contains(msg(err), docBodyMD5) {
			t.Errorf("message %q does not name the given body_md5", msg(err))
		}
		// A body_md5 changed to match the new body breaks the signature.
		q := strings.Replace(docQuery, docBodyMD5, md5Hex(tampered), 1)
		wantKind(t, verify(q, tampered), ErrInvalidSignature, 401)
	})
	t.Run("missing body_md5 with body", func(t *testing.T) {
		q := signedQuery(t, docCreds, "POST", "/apps/3/events", "auth_key="+docCreds.Key+"&auth_timestamp="+ts+"&auth_version=1.0")
		wantMsg(t, verify(q, body), ErrBodyMD5, 401, "Missing parameter: body_md5 (required for a non-empty body)")
		// Without a body, body_md5 is optional ...
		if err := verify(q, nil); err != nil {
			t.Errorf("no body, no body_md5: %v", err)
		}
		// ... but when present it must be the MD5 of the (empty) body.
		q = signedQuery(t, docCreds, "POST", "/apps/3/events",
			"auth_key="+docCreds.Key+"&auth_timestamp="+ts+"&auth_version=1.0&body_md5=d41d8cd98f00b204e9800998ecf8427e")
		if err := verify(q, nil); err != nil {
			t.Errorf("empty body with its md5: %v", err)
		}
		q = signedQuery(t, docCreds, "POST", "/apps/3/events",
			"auth_key="+docCreds.Key+"&auth_timestamp="+ts+"&auth_version=1.0&body_md5="+docBodyMD5)
		wantKind(t, verify(q, nil), ErrBodyMD5, 401)
	})
	t.Run("version", func(t *testing.T) {
		q := signedQuery(t, docCreds, "POST", "/apps/3/events", "auth_key="+docCreds.Key+"&auth_timestamp="+ts+"&body_md5="+docBodyMD5)
		wantMsg(t, verify(q, body), ErrAuthVersion, 401, "Version required")
		q = signedQuery(t, docCreds, "POST", "/apps/3/events", "auth_key="+docCreds.Key+"&auth_timestamp="+ts+"&auth_version=2.0&body_md5="+docBodyMD5)
		wantMsg(t, verify(q, body), ErrAuthVersion, 401, "Version not supported")
	})
	t.Run("timestamp", func(t *testing.T) {
		q := signedQuery(t, docCreds, "POST", "/apps/3/events", "auth_key="+docCreds.Key+"&auth_version=1.0&body_md5="+docBodyMD5)
		wantMsg(t, verify(q, body), ErrAuthTimestamp, 401, "Timestamp required")
		// Garbage reads as 0, as Ruby's to_i does in Pusher's library.
		q = signedQuery(t, docCreds, "POST", "/apps/3/events", "auth_key="+docCreds.Key+"&auth_timestamp=soon&auth_version=1.0&body_md5="+docBodyMD5)
		wantMsg(t, verify(q, body), ErrTimestampExpired, 401,
			"Timestamp expired: Given timestamp (1970-01-01T00:00:00Z) not within 600s of server time (2012-11-16T17:49:49Z)")
	})
	t.Run("uppercase param keys", func(t *testing.T) {
		// Keys are lowercased before signing: a request whose keys are in
		// upper case verifies when the signature is over the lowercased keys ...
		raw := "AUTH_KEY=" + docCreds.Key + "&Auth_Timestamp=" + ts + "&AUTH_VERSION=1.0&Name=Something%20else&BODY_MD5=" + docBodyMD5
		if err := verify(signedQuery(t, docCreds, "POST", "/apps/3/events", raw), body); err != nil {
			t.Errorf("uppercase keys, lowercased signature: %v", err)
		}
		// ... and fails when the client signed them as it sent them.
		clientString := "POST\n/apps/3/events\nAUTH_KEY=" + docCreds.Key + "&AUTH_VERSION=1.0&Auth_Timestamp=" + ts +
			"&BODY_MD5=" + docBodyMD5 + "&Name=Something else"
		err := verify(raw+"&auth_signature="+docCreds.Sign(clientString), body)
		wantKind(t, err, ErrInvalidSignature, 401)
	})
	t.Run("unescaped values", func(t *testing.T) {
		// Values are signed decoded: spaces, '&', '=', ';' and '+' as such.
		raw := "auth_key=" + docCreds.Key + "&auth_timestamp=" + ts + "&auth_version=1.0&body_md5=" + docBodyMD5 +
			"&filter=a%26b%3Dc%3Bd%2Be&name=Something+else"
		want := "POST\n/apps/3/events\nauth_key=" + docCreds.Key + "&auth_timestamp=" + ts + "&auth_version=1.0&body_md5=" + docBodyMD5 +
			"&filter=a&b=c;d+e&name=Something else"
		if err := verify(raw+"&auth_signature="+docCreds.Sign(want), body); err != nil {
			t.Errorf("decoded values: %v", err)
		}
		// A client that signed the escaped form is refused.
		escaped := "POST\n/apps/3/events\n" + raw
		wantKind(t, verify(raw+"&auth_signature="+docCreds.Sign(escaped), body), ErrInvalidSignature, 401)
	})
	t.Run("extra params", func(t *testing.T) {
		// Signed extra parameters are fine ...
		raw := "auth_key=" + docCreds.Key + "&auth_timestamp=" + ts + "&auth_version=1.0&body_md5=" + docBodyMD5 + "&info=user_count"
		q := signedQuery(t, docCreds, "POST", "/apps/3/events", raw)
		if err := verify(q, body); err != nil {
			t.Errorf("signed extra param: %v", err)
		}
		// ... unsigned ones, added or changed afterwards, are not.
		wantKind(t, verify(docQuery+"&info=user_count", body), ErrInvalidSignature, 401)
		wantKind(t, verify("socket_id=1.1&"+docQuery, body), ErrInvalidSignature, 401)
		wantKind(t, verify(strings.Replace(q, "info=user_count", "info=subscription_count", 1), body), ErrInvalidSignature, 401)
		// A repeated ordinary key is signed twice, in order.
		q = signedQuery(t, docCreds, "POST", "/apps/3/events", raw+"&info=subscription_count")
		if err := verify(q, body); err != nil {
			t.Errorf("repeated extra param: %v", err)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		wantKind(t, verify(docQuery+"&auth_key="+docCreds.Key, body), ErrMalformedQuery, http.StatusBadRequest)
		wantKind(t, verify(docQuery+"&AUTH_SIGNATURE="+docSignature, body), ErrMalformedQuery, 400)
		wantKind(t, verify(docQuery+"&x=%zz", body), ErrMalformedQuery, 400)
		wantKind(t, verify("%zz=1&"+docQuery, body), ErrMalformedQuery, 400)
	})
}

// pusher-http-node puts its query in the URL unescaped (lib/requests.js,
// createSignedQueryString): ';' and ',' arrive raw and must not split it.
func TestVerifyRequestNodeStyleQuery(t *testing.T) {
	const path = "/apps/3/channels"
	signedPart := "auth_key=" + docCreds.Key + "&auth_timestamp=1353088179&auth_version=1.0" +
		"&filter_by_prefix=presence-a;b&info=user_count,subscription_count"
	q := signedPart + "&auth_signature=" + docCreds.Sign("GET\n"+path+"\n"+signedPart)
	if _, err := VerifyRequest("GET", path, q, nil, docLookup, docNow(0)); err != nil {
		t.Fatal(err)
	}
	v, err := ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	if v.Get("filter_by_prefix") != "presence-a;b" || v.Get("info") != "user_count,subscription_count" {
		t.Errorf("ParseQuery = %v", v)
	}
	if _, err := ParseQuery("a=%zz"); !errors.Is(err, ErrMalformedQuery) {
		t.Errorf("ParseQuery bad escape: %v", err)
	}
}

func TestSignRequestRoundTrip(t *testing.T) {
	app := Credentials{ID: "42", Key: "key-42", Secret: "secret-42"}
	lookup := func(k string) (Credentials, bool) { return app, k == app.Key }
	now := time.Unix(1_700_000_000, 0)

	// GET with parameters: no body_md5; values that need escaping survive.
	params := url.Values{"info": {"user_count"}, "filter_by_prefix": {"presence-"}, "Name": {"Something else & more"}}
	q, err := SignRequest(app, "GET", "/apps/42/channels", params, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(q, "body_md5") {
		t.Errorf("GET query has body_md5: %s", q)
	}
	if !strings.HasSuffix(q, "&auth_signature="+app.Sign(
		"GET\n/apps/42/channels\nauth_key=key-42&auth_timestamp=1700000000&auth_version=1.0"+
			"&filter_by_prefix=presence-&info=user_count&name=Something else & more")) {
		t.Errorf("query %s", q)
	}
	r := httptest.NewRequest("GET", "/apps/42/channels?"+q, nil)
	if _, err := VerifyRequest(r.Method, r.URL.Path, r.URL.RawQuery, nil, lookup, now); err != nil {
		t.Fatalf("GET: %v", err)
	}

	// POST through net/http: the verifier takes r.URL.Path and r.URL.RawQuery.
	body := []byte(`{"name":"ev","channel":"private-a","data":"{}"}`)
	q, err = SignRequest(app, "POST", "/apps/42/events", nil, body, now)
	if err != nil {
		t.Fatal(err)
	}
	r = httptest.NewRequest("POST", "/apps/42/events?"+q, bytes.NewReader(body))
	creds, err := VerifyRequest(r.Method, r.URL.Path, r.URL.RawQuery, body, lookup, now.Add(TimestampGrace-time.Second))
	if err != nil || creds.ID != "42" {
		t.Fatalf("POST: %v %+v", err, creds)
	}

	// Parameters SignRequest computes itself cannot be passed in.
	for _, k := range []string{"auth_key", "AUTH_TIMESTAMP", "auth_version", "auth_signature", "body_md5"} {
		_, err := SignRequest(app, "GET", "/apps/42/channels", url.Values{k: {"x"}}, nil, now)
		wantKind(t, err, ErrReservedParam, 400)
	}
}

func TestWebhookSignature(t *testing.T) {
	// Pusher documents no webhook vector. This body is the documented
	// format (https://pusher.com/docs/channels/server_api/webhooks/); the
	// signature was derived independently with
	// printf '%s' "$body" | openssl dgst -sha256 -hmac 7ad3773142a6692b25b8
	// and node's crypto.createHmac, which agree.
	body := []byte(`{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"my-channel"}]}`)
	const want = "c19001ae3963ccb13bf618e5b16ba9848e7e74df0993aa0689168e341c6833cf"
	if got := WebhookSignature(docCreds, body); got != want {
		t.Fatalf("WebhookSignature = %s, want %s", got, want)
	}
	if err := VerifyWebhook(docCreds, docCreds.Key, want, body); err != nil {
		t.Fatal(err)
	}
	wantKind(t, VerifyWebhook(docCreds, "other-key", want, body), ErrUnknownAuthKey, 401)
	wantKind(t, VerifyWebhook(docCreds, docCreds.Key, want, append(body, ' ')), ErrInvalidSignature, 401)
	wantKind(t, VerifyWebhook(docCreds, docCreds.Key, strings.ToUpper(want), body), ErrInvalidSignature, 401)
	wantKind(t, VerifyWebhook(docCreds, docCreds.Key, "", body), ErrInvalidSignature, 401)
}

func TestLeadingInt(t *testing.T) {
	// Ruby's String#to_i, which Pusher's library applies to auth_timestamp.
	for in, want := range map[string]int64{
		"1353088179": 1353088179, "+5": 5, "-5": -5, " 12abc": 12, "1353088179.9": 1353088179,
		"abc": 0, "": 0, "-": 0, "99999999999999999999999999": 1 << 40,
	} {
		if got := leadingInt(in); got != want {
			t.Errorf("leadingInt(%q) = %d, want %d", in, got, want)
		}
	}
	// A fractional timestamp is read by its integer part; the signature
	// still covers the text as sent.
	raw := "auth_key=" + docCreds.Key + "&auth_timestamp=1353088179.5&auth_version=1.0"
	if _, err := VerifyRequest("GET", "/apps/3/channels", signedQuery(t, docCreds, "GET", "/apps/3/channels", raw), nil, docLookup, docNow(0)); err != nil {
		t.Error(err)
	}
}
