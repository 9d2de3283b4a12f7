package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/relay"
)

// token mints an HS256 connect token for development: `relay token -sub 42
// -topics 'chat.*'`. Production backends mint their own with any JWT
// library: HS256, RS256 or EdDSA, with "sub" (the user id, as a string),
// "exp" and optionally "topics".
func token(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay token", flag.ContinueOnError)
	sub := fs.String("sub", "", "the user id the token is for (required)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	topics := fs.String("topics", "", "comma-separated topics, or prefixes ending in *, the token allows; empty: any topic")
	secret := fs.String("secret", getenv("RELAY_TOKEN_SECRET"), "HS256 secret, 32+ bytes (env RELAY_TOKEN_SECRET)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: relay token -sub USER [-ttl 1h] [-topics 'chat.*,news']\n\nPrints a connect token for GET /ws?token=<token>; relay checktoken TOKEN checks one.\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	user, err := strconv.ParseUint(*sub, 10, 64)
	switch {
	case *sub == "":
		err = errors.New("-sub is required: the user id the token is for")
	case err != nil:
		err = fmt.Errorf("-sub %q: want a non-negative integer user id", *sub)
	case len(*secret) < 32:
		err = errors.New("set RELAY_TOKEN_SECRET (or -secret) to the server's token secret, 32+ bytes")
	case *ttl <= 0:
		err = errors.New("-ttl must be positive")
	}
	if err != nil {
		fmt.Fprintln(stderr, "relay token:", err)
		return 2
	}
	var list []string
	for _, t := range strings.Split(*topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			list = append(list, t)
		}
	}
	tok, err := auth.Mint([]byte(*secret), relay.UserID(user), *ttl, list)
	if err != nil {
		fmt.Fprintln(stderr, "relay token:", err)
		return 2
	}
	fmt.Fprintln(stdout, tok)
	return 0
}
