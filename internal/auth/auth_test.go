package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/relayhq/relay/internal/relay"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(extra map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "42", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func TestAPIKeys(t *testing.T) {
	a, err := New(Config{APIKeys: []string{"first-key-0123456", "second-key-012345"}})
	if err != nil {
		t.Fatal(err)
	}
	for header, ok := range map[string]bool{
		"Bearer first-key-0123456": true,
		"Bearer second-key-012345": true, // rotation: both keys work
		"Bearer first-key-0123457": false,
		"Bearer first-key-012345":  false, // a prefix is not the key
		"first-key-0123456":        false, // no scheme
		"Basic Zmlyc3Q6a2V5":       false,
		"":                         false,
		"Bearer ":                  false,
		"bearer first-key-0123456": false,
	} {
		err := a.CheckKey(header)
		if (err == nil) != ok || (err != nil && !errors.Is(err, relay.ErrUnauthorized)) {
			t.Errorf("CheckKey(%q) = %v, want ok %v", header, err, ok)
		}
	}
	if _, err := New(Config{APIKeys: []string{"short"}}); err == nil {
		t.Fatal("a 5-character API key was accepted")
	}
	open, _ := New(Config{})
	if open.KeysRequired() || open.CheckKey("") != nil || open.TokensEnabled() {
		t.Fatal("the zero Config should require nothing and enable no tokens")
	}
}

func TestHS256Tokens(t *testing.T) {
	a, err := New(Config{TokenSecret: secret, Issuer: "backend", Audience: "relay"})
	if err != nil {
		t.Fatal(err)
	}
	good := map[string]any{"iss": "backend", "aud": "relay"}
	tok := sign(t, jwt.SigningMethodHS256, secret, claims(merge(good, map[string]any{"topics": []string{"chat.*", "news"}})), "")
	c, err := a.Verify(tok)
	if err != nil {
		t.Fatalf("Verify(valid) = %v", err)
	}
	if c.User != 42 || !c.Topics.Allow("chat.1") || !c.Topics.Allow("news") || c.Topics.Allow("newsroom") || c.Topics.Allow("sports") {
		t.Fatalf("claims = %+v", c)
	}
	if c, _ := a.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(good), "")); c.Topics != nil {
		t.Fatalf("a token without topics should allow any: %v", c.Topics)
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tests := []struct {
		name, token, why string
	}{
		{"expired", sign(t, jwt.SigningMethodHS256, secret, claims(merge(good, map[string]any{"exp": time.Now().Add(-time.Minute).Unix()})), ""), "expired"},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, claims(merge(good, map[string]any{"exp": nil})), ""), `no "exp"`},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, secret, claims(merge(good, map[string]any{"nbf": time.Now().Add(time.Hour).Unix()})), ""), "not valid yet"},
		{"forged", sign(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdefgh"), claims(good), ""), "signature"},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"iss": "evil", "aud": "relay"}), ""), `"iss"`},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"iss": "backend", "aud": "other"}), ""), `"aud"`},
		{"sub not a user id", sign(t, jwt.SigningMethodHS256, secret, claims(merge(good, map[string]any{"sub": "alice"})), ""), `"sub"`},
		{"negative sub", sign(t, jwt.SigningMethodHS256, secret, claims(merge(good, map[string]any{"sub": "-1"})), ""), `"sub"`},
		{"bad topic pattern", sign(t, jwt.SigningMethodHS256, secret, claims(merge(good, map[string]any{"topics": []string{"a*b"}})), ""), "pattern"},
		{"alg none", unsigned(claims(good)), "method"},
		{"RS256 with no RSA key configured", sign(t, jwt.SigningMethodRS256, rsaKey, claims(good), ""), "method"},
		{"garbage", "not.a.token", "malformed"},
		{"empty", "", "malformed"},
	}
	for _, tt := range tests {
		_, err := a.Verify(tt.token)
		if err == nil || !errors.Is(err, relay.ErrUnauthorized) || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("%s: Verify = %v, want ErrUnauthorized mentioning %q", tt.name, err, tt.why)
		}
		if err != nil && tt.token != "" && strings.Contains(err.Error(), tt.token) {
			t.Errorf("%s: the error repeats the token", tt.name)
		}
	}
	if _, err := New(Config{TokenSecret: []byte("short")}); err == nil {
		t.Fatal("a 5-byte token secret was accepted")
	}
}

func unsigned(c jwt.MapClaims) string {
	s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	return s
}

func merge(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func TestRS256FromPEM(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pub, err := ParsePublicKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{TokenKeys: map[string]crypto.PublicKey{"": pub}})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := a.Verify(sign(t, jwt.SigningMethodRS256, key, claims(nil), "")); err != nil || c.User != 42 {
		t.Fatalf("RS256 token: %+v %v", c, err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := a.Verify(sign(t, jwt.SigningMethodRS256, other, claims(nil), "")); err == nil {
		t.Fatal("a token signed by another RSA key verified")
	}
	// HS256 must not be accepted with the public key as the secret (the
	// classic algorithm-confusion attack).
	if _, err := a.Verify(sign(t, jwt.SigningMethodHS256, der, claims(nil), "")); err == nil {
		t.Fatal("an HS256 token keyed with the RSA public key verified")
	}
}

func TestEdDSAFromJWKS(t *testing.T) {
	pub1, priv1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, priv2, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	enc := base64.RawURLEncoding.EncodeToString
	jwks := fmt.Sprintf(`{"keys":[
		{"kty":"OKP","crv":"Ed25519","kid":"k1","x":%q},
		{"kty":"OKP","crv":"Ed25519","kid":"k2","x":%q},
		{"kty":"RSA","kid":"r1","n":%q,"e":%q},
		{"kty":"EC","crv":"P-256","kid":"skipped","x":"AA","y":"AA"},
		{"kty":"OKP","crv":"Ed25519","kid":"enc","use":"enc","x":%q}]}`,
		enc(pub1), enc(pub2), enc(rsaKey.N.Bytes()), enc(big.NewInt(int64(rsaKey.E)).Bytes()), enc(pub1))
	keys, err := ParseJWKS([]byte(jwks))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("parsed %d keys, want 3 (k1, k2, r1)", len(keys))
	}
	a, err := New(Config{TokenKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
		ok     bool
	}{
		{"k1", jwt.SigningMethodEdDSA, priv1, "k1", true},
		{"k2", jwt.SigningMethodEdDSA, priv2, "k2", true},
		{"no kid: any key", jwt.SigningMethodEdDSA, priv2, "", true},
		{"wrong kid", jwt.SigningMethodEdDSA, priv1, "k2", false},
		{"unknown kid", jwt.SigningMethodEdDSA, priv1, "zz", false},
		{"RSA by kid", jwt.SigningMethodRS256, rsaKey, "r1", true},
	} {
		_, err := a.Verify(sign(t, tt.method, tt.key, claims(nil), tt.kid))
		if (err == nil) != tt.ok {
			t.Errorf("%s: Verify = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	for _, bad := range []string{`{}`, `{"keys":[]}`, `not json`, `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}`, `{"keys":[{"kty":"RSA","n":"AQAB","e":"Ag"}]}`} {
		if _, err := ParseJWKS([]byte(bad)); err == nil {
			t.Errorf("ParseJWKS(%s) accepted", bad)
		}
	}
}

func TestMintRoundTrip(t *testing.T) {
	a, _ := New(Config{TokenSecret: secret})
	tok, err := Mint(secret, 7, time.Minute, []string{"room.*"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.Verify(tok)
	if err != nil || c.User != 7 || !c.Topics.Allow("room.1") || c.Topics.Allow("other") {
		t.Fatalf("minted token: %+v %v", c, err)
	}
	if _, err := Mint(secret, 7, time.Minute, []string{"a*b"}); err == nil {
		t.Fatal("minted a token with an invalid pattern")
	}
}

// FuzzVerify feeds arbitrary strings as tokens: never a panic, and every
// refusal is ErrUnauthorized without the token in the message.
func FuzzVerify(f *testing.F) {
	a, _ := New(Config{TokenSecret: secret})
	good, _ := Mint(secret, 1, time.Hour, []string{"x*"})
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := a.Verify(tok)
		if err == nil {
			// Only the minted token (or an equivalent encoding of it) can
			// verify: nothing else is signed with the secret.
			if c.User != 1 || !c.Topics.Allow("x1") || c.Topics.Allow("y") {
				t.Fatalf("verified %q as %+v", tok, c)
			}
			return
		}
		if !errors.Is(err, relay.ErrUnauthorized) {
			t.Fatalf("Verify(%q) = %v, not ErrUnauthorized", tok, err)
		}
		if len(tok) > 8 && strings.Contains(err.Error(), tok) {
			t.Fatalf("the error repeats the token")
		}
	})
}

func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseJWKS(b)
		if err == nil && len(keys) == 0 {
			t.Fatal("accepted a set with no keys")
		}
		if err == nil {
			New(Config{TokenKeys: keys}) // must not panic on whatever was accepted
		}
	})
}
