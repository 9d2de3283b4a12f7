package auth

import (
	"fmt"
	"strings"
)

// Patterns are the topics a token allows: exact names, or prefixes written
// with a trailing '*' ("chat.*" allows "chat.42"). Topic names cannot
// contain '*', so a pattern means one thing.
type Patterns []string

// maxPatterns bounds the topics claim of one token.
const maxPatterns = 256

// ParsePatterns validates a token's topics claim.
func ParsePatterns(list []string) (Patterns, error) {
	if len(list) > maxPatterns {
		return nil, fmt.Errorf(`"topics" lists %d patterns, at most %d are allowed`, len(list), maxPatterns)
	}
	for _, p := range list {
		if p == "" || strings.Contains(strings.TrimSuffix(p, "*"), "*") {
			return nil, fmt.Errorf(`"topics" pattern %q: want a topic name, or a prefix ending in one "*"`, p)
		}
	}
	return Patterns(list), nil
}

// Allow reports whether topic matches a pattern; nil Patterns allow all.
func (p Patterns) Allow(topic string) bool {
	if p == nil {
		return true
	}
	for _, x := range p {
		if prefix, ok := strings.CutSuffix(x, "*"); ok {
			if strings.HasPrefix(topic, prefix) {
				return true
			}
		} else if x == topic {
			return true
		}
	}
	return false
}
