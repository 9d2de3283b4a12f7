package relay

import (
	"errors"
	"fmt"
	"testing"
)

func TestDetail(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("topic is required: %w", ErrInvalid), "topic is required"},
		{fmt.Errorf("too many topics: %w", ErrLimit), "too many topics"},
		{fmt.Errorf("body exceeds 10 bytes: %w", ErrTooLarge), "body exceeds 10 bytes"},
		{fmt.Errorf("subscribing: %w", fmt.Errorf("engine down: %w", ErrUnavailable)), "subscribing: engine down"},
		{ErrNotFound, "not found"},
		{errors.New("disk full"), "disk full"},
	} {
		if got := Detail(tt.err); got != tt.want {
			t.Errorf("Detail(%q) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
