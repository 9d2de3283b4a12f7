package pusher

import (
	"bytes"
	"encoding/json"
	"strings"
)

// TopicPrefix starts every Pusher channel's topic. Relay's own topic names
// may not contain '*', so no seed or relay.v1 client and no POST /publish
// can reach a Pusher channel through its topic.
const TopicPrefix = "*pusher/"

// Topic is the Relay topic of channel in app.
func Topic(app, channel string) string { return TopicPrefix + app + "/" + channel }

// SplitTopic returns the app and channel of a Pusher topic.
func SplitTopic(topic string) (app, channel string, ok bool) {
	rest, ok := strings.CutPrefix(topic, TopicPrefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "/")
}

// Event is one event as pusher-js receives it.
type Event struct {
	Event   string `json:"event"`
	Channel string `json:"channel,omitempty"`
	// Data is the event's data as a JSON value, sent verbatim: a string
	// for events from the HTTP API (the SDKs encode objects into one),
	// whatever the sender sent for client events; empty: no data.
	Data json.RawMessage `json:"data,omitempty"`
	// UserID names the sender of a client event on a presence channel.
	UserID string `json:"user_id,omitempty"`
}

// Encode returns the message a Pusher topic carries for e: the socket id
// to leave out (empty for none), a newline, and the frame every recipient
// gets, encoded once here for all of them.
func (e Event) Encode(exclude string) []byte {
	b := make([]byte, 0, len(exclude)+len(e.Event)+len(e.Channel)+len(e.Data)+len(e.UserID)+64)
	b = append(b, exclude...)
	b = append(b, '\n')
	return appendEvent(b, e)
}

// Frame returns e as a frame, for the one socket it is for.
func (e Event) Frame() []byte { return appendEvent(nil, e) }

func appendEvent(b []byte, e Event) []byte {
	// json.Marshal escapes <, > and & for HTML, which pusher-js does not
	// need; an Encoder without that keeps frames as short as the data.
	var w bytes.Buffer
	w.Write(b)
	enc := json.NewEncoder(&w)
	enc.SetEscapeHTML(false)
	enc.Encode(e) // cannot fail: strings only
	out := w.Bytes()
	return out[:len(out)-1] // the Encoder's newline
}

// SplitMessage returns the socket id a topic message leaves out and the
// frame it carries; ok is false for a message that is not a Pusher event.
func SplitMessage(data []byte) (exclude, frame []byte, ok bool) {
	i := bytes.IndexByte(data, '\n')
	if i < 0 || i > 64 {
		return nil, nil, false
	}
	return data[:i], data[i+1:], true
}
