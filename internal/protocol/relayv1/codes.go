package relayv1

import (
	"errors"

	"github.com/relayhq/relay/internal/relay"
)

// codes is the one table from Relay's sentinel errors to the codes of
// relay.v1 error frames (docs/protocol.md); package api maps the same
// sentinels to HTTP statuses. A command that cannot be decoded is
// "bad_request" unless it names too many topics (see Session.run).
var codes = []struct {
	err  error
	code string
}{
	{relay.ErrInvalid, "invalid"},
	{relay.ErrUnauthorized, "unauthorized"},
	{relay.ErrForbidden, "forbidden"},
	{relay.ErrNotFound, "not_found"},
	{relay.ErrTooLarge, "too_large"},
	{relay.ErrLimit, "limit_exceeded"},
	{relay.ErrUnavailable, "unavailable"},
}

// errorCode maps err to a relay.v1 error code; errors outside the table
// are the server's: "internal".
func errorCode(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}
