package relay

import (
	"errors"
	"strings"
)

// Sentinel errors. Packages wrap them with detail (fmt.Errorf("...: %w",
// ErrInvalid)); the HTTP layer maps them to statuses in one table, each
// socket protocol to its own codes, and both show the wrapped message
// (see Detail), which must be written for a person to act on.
var (
	ErrInvalid      = errors.New("invalid request")         // 400
	ErrUnauthorized = errors.New("unauthorized")            // 401
	ErrForbidden    = errors.New("forbidden")               // 403
	ErrNotFound     = errors.New("not found")               // 404
	ErrTooLarge     = errors.New("too large")               // 413
	ErrLimit        = errors.New("limit reached")           // 429
	ErrUnavailable  = errors.New("temporarily unavailable") // 503
)

// sentinels lists the sentinel errors, in the order Detail trims them.
var sentinels = []error{ErrInvalid, ErrUnauthorized, ErrForbidden, ErrNotFound, ErrTooLarge, ErrLimit, ErrUnavailable}

// Detail returns err's message without the sentinel's own text at its
// end: "topic is required" is clearer to the person reading it than
// "topic is required: invalid request".
func Detail(err error) string {
	msg := err.Error()
	for _, s := range sentinels {
		msg = strings.TrimSuffix(msg, ": "+s.Error())
	}
	return msg
}
