package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// checktoken says whether the server, configured as `relay serve` would
// be (config file, environment, flags), accepts a connect token, and
// why not: the question every "my client gets 401" starts with.
func checktoken(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, rest, err := parseSettings("relay checktoken", args, getenv, stdout, 1)
	if code, ok := settingsError(err, "relay checktoken", stderr); !ok {
		return code
	}
	tok := ""
	switch {
	case len(rest) == 0:
		fmt.Fprintln(stderr, "relay checktoken: give the token: relay checktoken [flags] TOKEN (or - to read it from stdin)\nRun 'relay checktoken -h' for usage.")
		return exitUsage
	case rest[0] == "-":
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		tok = line
	default:
		tok = rest[0]
	}
	tok = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(tok), "Bearer "))
	sec, err := cfg.security()
	if err != nil {
		fmt.Fprintf(stderr, "relay: invalid configuration:\n%v\n", err)
		return exitUsage
	}
	describe(tok, stdout)
	if !sec.TokensEnabled() {
		fmt.Fprintln(stdout, "refused: this configuration accepts no connect tokens; set -token-secret / RELAY_TOKEN_SECRET (HS256), -token-public-key / RELAY_TOKEN_PUBLIC_KEY or -token-jwks / RELAY_TOKEN_JWKS (RS256, EdDSA)")
		return exitFailure
	}
	c, err := sec.Verify(tok)
	if err != nil {
		fmt.Fprintf(stdout, "refused: %s\n", strings.TrimSuffix(err.Error(), ": unauthorized"))
		return exitFailure
	}
	topics := "any topic"
	if c.Topics != nil {
		topics = "topics " + strings.Join(c.Topics, ", ")
	}
	fmt.Fprintf(stdout, "accepted: user %s, %s, until %s (in %s)\n", c.User, topics, c.Expires.UTC().Format(time.RFC3339), time.Until(c.Expires).Round(time.Second))
	return exitOK
}

// describe prints what a token claims, read without verifying it, so
// that a refusal can be matched against the configuration (issuer,
// audience, key id, expiry).
func describe(tok string, w io.Writer) {
	claims := jwt.MapClaims{}
	t, _, err := jwt.NewParser().ParseUnverified(tok, claims)
	if err != nil {
		fmt.Fprintln(w, "token: not a JWT (want three base64url parts separated by dots)")
		return
	}
	fmt.Fprintf(w, "token: alg %v", t.Header["alg"])
	if kid, ok := t.Header["kid"]; ok {
		fmt.Fprintf(w, ", kid %v", kid)
	}
	for _, k := range []string{"sub", "iss", "aud", "topics"} {
		if v, ok := claims[k]; ok {
			fmt.Fprintf(w, ", %s %v", k, v)
		}
	}
	for _, k := range []string{"nbf", "exp"} {
		if d, err := claims.GetExpirationTime(); k == "exp" && err == nil && d != nil {
			fmt.Fprintf(w, ", exp %s", d.UTC().Format(time.RFC3339))
		} else if nb, err := claims.GetNotBefore(); k == "nbf" && err == nil && nb != nil {
			fmt.Fprintf(w, ", nbf %s", nb.UTC().Format(time.RFC3339))
		}
	}
	fmt.Fprintln(w)
}
