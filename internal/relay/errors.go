package relay

import "errors"

// Sentinel errors. Packages wrap them with detail (fmt.Errorf("...: %w",
// ErrInvalid)); the HTTP layer maps them to statuses in one table and shows
// the wrapped message, which must be written for a person to act on.
var (
	ErrInvalid      = errors.New("invalid request")         // 400
	ErrUnauthorized = errors.New("unauthorized")            // 401
	ErrForbidden    = errors.New("forbidden")               // 403
	ErrNotFound     = errors.New("not found")               // 404
	ErrTooLarge     = errors.New("too large")               // 413
	ErrLimit        = errors.New("limit reached")           // 429
	ErrUnavailable  = errors.New("temporarily unavailable") // 503
)
