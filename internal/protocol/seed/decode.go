package seed

import (
	"fmt"

	"github.com/relayhq/relay/internal/jsonwire"
	"github.com/relayhq/relay/internal/protocol"
	"github.com/relayhq/relay/internal/relay"
)

// decodeTopics decodes the seed protocol's {"topics": [...]} command,
// refusing more than maxTopics names before decoding any (see
// protocol.TopicNames). A text that is not a topics command at all (not
// JSON, not an object, or without a "topics" array) is refused with a
// *notTopicsCommand, which the seed protocol ignores; a topics array with
// bad entries is a topics command, refused. Refusals wrap relay.ErrInvalid
// or relay.ErrLimit; the decoder is fuzzed (decode_fuzz_test.go).
func decodeTopics(msg []byte, maxTopics int) ([]string, error) {
	var raw []byte
	err := jsonwire.Object(msg, func(key, val []byte) {
		if jsonwire.FieldIs(key, "topics") {
			raw = val
		}
	})
	if err != nil {
		return nil, &notTopicsCommand{err}
	}
	if jsonwire.IsNull(raw) {
		return nil, &notTopicsCommand{fmt.Errorf(`topics is required: send {"topics": ["name", ...]}: %w`, relay.ErrInvalid)}
	}
	if jsonwire.Elements(raw) < 0 {
		return nil, &notTopicsCommand{fmt.Errorf("topics must be an array of strings: %w", relay.ErrInvalid)}
	}
	return protocol.TopicNames(raw, maxTopics)
}

// notTopicsCommand is decodeTopics' refusal of a text that is no topics
// command: the tutorial's server ignores such texts, and so does the seed
// protocol.
type notTopicsCommand struct{ err error }

func (e *notTopicsCommand) Error() string { return e.err.Error() }
func (e *notTopicsCommand) Unwrap() error { return e.err }
