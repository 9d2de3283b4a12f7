// Package relay is Relay's shared vocabulary: the identifiers, the message,
// the sentinel errors and the contracts between the hub, the transports and
// the brokers. It imports nothing of Relay's own, so every other package can
// depend on it without cycles.
package relay

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"strconv"
	"strings"
	"time"
)

// UserID identifies an application user. One user may have many clients
// (tabs, devices). The seed API carries it as a non-negative JSON integer.
type UserID uint64

func (u UserID) String() string { return strconv.FormatUint(uint64(u), 10) }

// ClientID identifies one registration: the <id> in /ws/<id>. It is random,
// URL-safe and carries at least 128 bits, so knowing one does not help guess
// another.
type ClientID string

// Message is one publish, or one presence event, on its way to
// subscribers.
type Message struct {
	Kind  Kind
	Topic string
	// User restricts delivery of a publish to one user's clients when
	// HasUser is set; for presence events it is the user who joined or
	// left.
	User    UserID
	HasUser bool
	// Data is the payload; seed clients receive exactly these bytes as a
	// text frame.
	Data []byte
	// Offset is the message's place in its topic's stream, from 1, +1 per
	// publish, comparable only within one Epoch. A message published to
	// one user lives outside the stream: its Offset is 0 and it is never
	// stored in history, so other users see no gap.
	Offset uint64
	Epoch  string
}

// Kind says what a Message carries.
type Kind uint8

// The kinds of Message.
const (
	KindPublish Kind = iota
	KindJoin         // User started being present on Topic
	KindLeave        // User stopped being present on Topic
	// KindReset says this node missed messages on Topic that history no
	// longer held: subscribers now stand at Offset and Epoch, and
	// relay.v1 clients are told recovered:false, as after a failed
	// recovery.
	KindReset
)

// NewEpoch returns 64 random bits in base32: the name of a new stream, so
// offsets from an earlier stream of the topic never match.
func NewEpoch() string {
	var b [8]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// HistoryRule bounds the history of the topics starting with Prefix. The
// longest matching prefix wins; the rule with the empty prefix is the
// default.
type HistoryRule struct {
	Prefix string
	Size   int           // messages kept; 0 keeps none
	TTL    time.Duration // how long a message is kept
	Bytes  int           // payload bytes kept
}

// DefaultHistory is the history kept when no rule says otherwise: the last
// 100 messages of a topic, for 5 minutes, up to 1 MiB.
var DefaultHistory = HistoryRule{Size: 100, TTL: 5 * time.Minute, Bytes: 1 << 20}

// Position is a point in a topic's stream.
type Position struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// Format is a wire encoding of a message (one per WebSocket protocol).
type Format uint8

// The wire formats, one per WebSocket protocol a client can speak.
const (
	FormatSeed   Format = iota // raw text frame carrying Message.Data
	FormatV1                   // relay.v1 JSON frames
	FormatPusher               // Pusher Channels protocol 7 frames
	NumFormats
)

// Delivery is one message on its way to many subscribers. It memoises each
// wire encoding so that a publish encodes a format once, however many
// subscribers share it. A Delivery belongs to the publishing goroutine; the
// frames it hands out are shared and must not be modified.
type Delivery struct {
	Msg    *Message
	frames [NumFormats][]byte
	done   [NumFormats]bool
}

// Frame returns the encoding of d.Msg in format f, calling encode the first
// time it is asked for. Nil means the format has no frame for this message
// (the seed protocol has none for presence events).
func (d *Delivery) Frame(f Format, encode func(*Message) []byte) []byte {
	if !d.done[f] {
		d.frames[f], d.done[f] = encode(d.Msg), true
	}
	return d.frames[f]
}

// Subscriber is a live connection as the hub sees it.
type Subscriber interface {
	// Deliver queues d for the connection and reports whether it was
	// accepted. It never blocks and does no I/O: a full queue closes the
	// connection instead (the slow-consumer policy).
	Deliver(d *Delivery) bool
	// Close asks the connection to close for reason. It does not wait.
	Close(reason CloseReason)
}

// CloseReason says why the server closes a connection. Each transport maps
// reasons to its own codes in one table (see ws.closeCodes).
type CloseReason uint8

// The reasons the server closes a connection.
const (
	CloseNormal          CloseReason = iota
	CloseShutdown                    // the server is stopping
	CloseUnregistered                // DELETE /register/{id} removed the registration
	CloseReplaced                    // a newer socket connected with the same id
	CloseSlowConsumer                // the send queue overflowed
	CloseIdle                        // nothing was heard from the client within the idle timeout
	CloseRateLimited                 // the client sent messages faster than allowed
	ClosePolicy                      // the client sent a command the server refuses
	CloseProtocolError               // the client broke RFC 6455
	CloseUnsupportedData             // the client sent a binary message
	CloseInvalidPayload              // a text message was not valid UTF-8
	CloseTooLarge                    // a message exceeded the inbound limit
	CloseInternal                    // the server failed
)

// Every calls f with the time every d until ctx is done: the one loop
// behind every package's background sweep (its Run).
func Every(ctx context.Context, d time.Duration, f func(now time.Time)) error {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			f(now)
		}
	}
}
