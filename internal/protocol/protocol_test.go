package protocol

import (
	"errors"
	"fmt"
	"testing"

	"github.com/relayhq/relay/internal/relay"
)

func TestTopicNames(t *testing.T) {
	for _, tt := range []struct {
		raw     string
		want    []string
		wantErr error
	}{
		{`["cats","dogs"]`, []string{"cats", "dogs"}, nil},
		{`[]`, []string{}, nil},
		{` [ "a" , "b" , "c" ] `, []string{"a", "b", "c"}, nil},
		{`["a","b","c","d"]`, nil, relay.ErrLimit},
		{`[1,2,3,4,5,6]`, nil, relay.ErrLimit}, // counted before the names are read
		{`["a",1]`, nil, relay.ErrInvalid},
		{`"cats"`, nil, relay.ErrInvalid},
		{`{"a":1}`, nil, relay.ErrInvalid},
		{`null`, nil, relay.ErrInvalid},
	} {
		got, err := TopicNames([]byte(tt.raw), 3)
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) || fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
			t.Errorf("TopicNames(%s, 3) = %q, %v; want %q, %v", tt.raw, got, err, tt.want, tt.wantErr)
		}
	}
}
