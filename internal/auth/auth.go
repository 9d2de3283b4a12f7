// Package auth checks who may do what: API keys for server-side calls and
// signed connect tokens (JWT) for sockets, with the topics a token allows.
// It keeps no state beyond its configuration.
package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/relayhq/relay/internal/relay"
)

// Config says which credentials are accepted. The zero value accepts no
// API key and no token: the open mode.
type Config struct {
	// APIKeys are accepted as "Authorization: Bearer <key>"; several allow
	// rotation.
	APIKeys []string
	// TokenSecret verifies HS256 tokens.
	TokenSecret []byte
	// TokenKeys verify RS256 (*rsa.PublicKey) and EdDSA
	// (ed25519.PublicKey) tokens, by key id ("" when the key has none).
	TokenKeys map[string]crypto.PublicKey
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer, Audience string
	// Leeway tolerates clock skew on exp and nbf.
	Leeway time.Duration // default 5s
}

// Auth checks credentials. Create it with New.
type Auth struct {
	keys    [][sha256.Size]byte
	secret  []byte
	pubkeys map[string]crypto.PublicKey
	parser  *jwt.Parser
	methods []string
}

// New validates cfg and returns an Auth.
func New(cfg Config) (*Auth, error) {
	a := &Auth{secret: cfg.TokenSecret, pubkeys: cfg.TokenKeys}
	for _, k := range cfg.APIKeys {
		if len(k) < 16 {
			return nil, errors.New("an API key must be at least 16 characters")
		}
		a.keys = append(a.keys, sha256.Sum256([]byte(k)))
	}
	if len(cfg.TokenSecret) > 0 {
		if len(cfg.TokenSecret) < 32 {
			return nil, errors.New("the token secret must be at least 32 bytes")
		}
		a.methods = append(a.methods, jwt.SigningMethodHS256.Alg())
	}
	var hasRSA, hasEd bool
	for kid, k := range cfg.TokenKeys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() < 2048 {
				return nil, fmt.Errorf("RSA key %q is shorter than 2048 bits", kid)
			}
			hasRSA = true
		case ed25519.PublicKey:
			hasEd = true
		default:
			return nil, fmt.Errorf("key %q is a %T; only RSA and Ed25519 keys are supported", kid, k)
		}
	}
	if hasRSA {
		a.methods = append(a.methods, jwt.SigningMethodRS256.Alg())
	}
	if hasEd {
		a.methods = append(a.methods, jwt.SigningMethodEdDSA.Alg())
	}
	leeway := cfg.Leeway
	if leeway <= 0 {
		leeway = 5 * time.Second
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(a.methods), jwt.WithExpirationRequired(), jwt.WithLeeway(leeway)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// KeysRequired reports whether server-side calls need an API key.
func (a *Auth) KeysRequired() bool { return len(a.keys) > 0 }

// TokensEnabled reports whether sockets may connect with a token.
func (a *Auth) TokensEnabled() bool { return len(a.methods) > 0 }

// CheckKey checks an Authorization header against the API keys. Every key
// is compared, in constant time on fixed-size digests, so neither the
// position of a match nor the keys' lengths show in the timing.
func (a *Auth) CheckKey(header string) error {
	if !a.KeysRequired() {
		return nil
	}
	key, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || key == "" {
		return fmt.Errorf(`this call needs an API key: send "Authorization: Bearer <key>": %w`, relay.ErrUnauthorized)
	}
	sum := sha256.Sum256([]byte(key))
	match := 0
	for i := range a.keys {
		match |= subtle.ConstantTimeCompare(sum[:], a.keys[i][:])
	}
	if match != 1 {
		return fmt.Errorf("the API key is not valid: %w", relay.ErrUnauthorized)
	}
	return nil
}

// Claims are what a verified token grants.
type Claims struct {
	User    relay.UserID
	Topics  Patterns // nil: any topic
	Expires time.Time
}

// tokenClaims is the JWT body: the registered claims and Relay's own.
type tokenClaims struct {
	jwt.RegisteredClaims
	Topics *[]string `json:"topics,omitempty"`
}

// Verify checks a connect token: its signature, exp (required), nbf, iss
// and aud when configured, and that sub is a user id.
func (a *Auth) Verify(token string) (Claims, error) {
	if !a.TokensEnabled() {
		return Claims{}, fmt.Errorf("connect tokens are not enabled on this server: %w", relay.ErrUnauthorized)
	}
	var tc tokenClaims
	if _, err := a.parser.ParseWithClaims(token, &tc, a.keyFor); err != nil {
		why := reason(err)
		if alg := unverifiedAlg(token); alg != "" && !slices.Contains(a.methods, alg) {
			why = fmt.Sprintf("its signing method %q is not accepted here (accepted: %s)", alg, strings.Join(a.methods, ", "))
		}
		return Claims{}, fmt.Errorf("invalid token: %s: %w", why, relay.ErrUnauthorized)
	}
	user, err := strconv.ParseUint(tc.Subject, 10, 64)
	if err != nil {
		return Claims{}, fmt.Errorf(`invalid token: "sub" must be the user id, a non-negative integer in a string: %w`, relay.ErrUnauthorized)
	}
	c := Claims{User: relay.UserID(user), Expires: tc.ExpiresAt.Time}
	if tc.Topics != nil {
		p, err := ParsePatterns(*tc.Topics)
		if err != nil {
			return Claims{}, fmt.Errorf("invalid token: %v: %w", err, relay.ErrUnauthorized)
		}
		c.Topics = p
	}
	return c, nil
}

var requiredClaim = regexp.MustCompile(`(\w+) claim is required`)

// reason names why jwt refused a token, without the token.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "it has expired"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// jwt names the claim: "iss claim is required" (when an issuer
		// or audience is configured) or "exp claim is required".
		if m := requiredClaim.FindStringSubmatch(err.Error()); m != nil {
			return fmt.Sprintf("it has no %q, which is required here", m[1])
		}
		return "it lacks a required claim"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "it is not valid yet"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "its signature does not verify"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return `its "iss" is not accepted`
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return `its "aud" is not accepted`
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "its signing method or key is not accepted"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "it is malformed"
	}
	return "it does not verify"
}

// unverifiedAlg reads a token's alg header without trusting it, to explain
// a refusal.
func unverifiedAlg(token string) string {
	t, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil || t == nil {
		return ""
	}
	alg, _ := t.Header["alg"].(string)
	return alg
}

// keyFor picks the verification key for a token's algorithm (and key id).
func (a *Auth) keyFor(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case jwt.SigningMethodHS256.Alg():
		return a.secret, nil
	case jwt.SigningMethodRS256.Alg(), jwt.SigningMethodEdDSA.Alg():
		rsaAlg := t.Method.Alg() == jwt.SigningMethodRS256.Alg()
		kid, _ := t.Header["kid"].(string)
		var set jwt.VerificationKeySet
		for id, k := range a.pubkeys {
			if kid != "" && id != kid {
				continue
			}
			if _, isRSA := k.(*rsa.PublicKey); isRSA == rsaAlg {
				set.Keys = append(set.Keys, k)
			}
		}
		if len(set.Keys) == 0 {
			return nil, errors.New("no key for this token")
		}
		return set, nil
	}
	return nil, errors.New("unexpected signing method")
}

// Mint signs an HS256 token for user, valid for ttl, limited to topics
// when given. It is for development and tests (`relay token`); production
// backends mint tokens with their own JWT library.
func Mint(secret []byte, user relay.UserID, ttl time.Duration, topics []string) (string, error) {
	now := time.Now()
	tc := tokenClaims{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   user.String(),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	if topics != nil {
		if _, err := ParsePatterns(topics); err != nil {
			return "", err
		}
		tc.Topics = &topics
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, tc).SignedString(secret)
}
