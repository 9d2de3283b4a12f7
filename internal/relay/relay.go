// Package relay is Relay's shared vocabulary: the identifiers, the message,
// the sentinel errors and the contracts between the hub, the transports and
// the brokers. It imports nothing of Relay's own, so every other package can
// depend on it without cycles.
package relay

import "strconv"

// UserID identifies an application user. One user may have many clients
// (tabs, devices). The seed API carries it as a non-negative JSON integer.
type UserID uint64

func (u UserID) String() string { return strconv.FormatUint(uint64(u), 10) }

// ClientID identifies one registration: the <id> in /ws/<id>. It is random,
// URL-safe and carries at least 128 bits, so knowing one does not help guess
// another.
type ClientID string

// Message is one publish on its way to subscribers.
type Message struct {
	Topic string
	// User restricts delivery to one user's clients when HasUser is set.
	User    UserID
	HasUser bool
	// Data is the payload; seed clients receive exactly these bytes as a
	// text frame.
	Data []byte
}

// Format is a wire encoding of a message (one per WebSocket protocol).
type Format uint8

// The wire formats, one per WebSocket protocol a client can speak.
const (
	FormatSeed Format = iota // raw text frame carrying Message.Data
	numFormats
)

// Delivery is one message on its way to many subscribers. It memoises each
// wire encoding so that a publish encodes a format once, however many
// subscribers share it. A Delivery belongs to the publishing goroutine; the
// frames it hands out are shared and must not be modified.
type Delivery struct {
	Msg    *Message
	frames [numFormats][]byte
}

// Frame returns the encoding of d.Msg in format f, calling encode the first
// time it is asked for.
func (d *Delivery) Frame(f Format, encode func(*Message) []byte) []byte {
	if d.frames[f] == nil {
		d.frames[f] = encode(d.Msg)
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
	ClosePolicy                      // the client sent a command the server refuses
	CloseProtocolError               // the client broke RFC 6455
	CloseUnsupportedData             // the client sent a binary message
	CloseInvalidPayload              // a text message was not valid UTF-8
	CloseTooLarge                    // a message exceeded the inbound limit
	CloseInternal                    // the server failed
)
