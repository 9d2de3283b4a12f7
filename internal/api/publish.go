package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/relayhq/relay/internal/jsonwire"
	"github.com/relayhq/relay/internal/relay"
)

// maxBatch bounds the events of one batch publish.
const maxBatch = 1000

func (a *API) publish(w http.ResponseWriter, r *http.Request) {
	b, err := a.body(w, r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	p, err := decodePublish(*b, a.cfg.MaxMessageBytes)
	putBody(b)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rc, err := a.publishOne(r.Context(), p)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var out [128]byte
	w.Header()["Content-Type"] = jsonContentType
	w.Write(appendReceipt(out[:0], rc))
}

// publishOne validates a decoded publish and hands it to the broker.
func (a *API) publishOne(ctx context.Context, p publishRequest) (relay.Receipt, error) {
	if err := a.hub.CheckTopic(p.Topic); err != nil {
		return relay.Receipt{}, err
	}
	m := &relay.Message{Topic: p.Topic, User: p.User, HasUser: p.HasUser, Data: p.Message}
	return a.broker.Publish(ctx, m, relay.PublishOptions{IdempotencyKey: p.IdempotencyKey})
}

// appendReceipt writes a publish's answer by hand, since this is the hot
// path: {"offset":N,"epoch":"E","delivered":K}, without offset and epoch
// for a message to one user (it is outside the topic's stream), with
// "duplicate":true when an idempotency key matched an earlier publish.
func appendReceipt(b []byte, rc relay.Receipt) []byte {
	b = append(b, '{')
	if rc.Offset > 0 {
		b = append(b, `"offset":`...)
		b = strconv.AppendUint(b, rc.Offset, 10)
		b = append(b, `,"epoch":`...)
		b = jsonwire.AppendString(b, rc.Epoch)
		b = append(b, ',')
	}
	b = append(b, `"delivered":`...)
	b = strconv.AppendInt(b, int64(rc.Delivered), 10)
	if rc.Duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	return append(b, '}')
}

// publishBatch publishes many events in one request: a JSON array of
// publish bodies, or {"events": [...]}. Each event succeeds or fails on its
// own; the answer lists one result per event, in order.
func (a *API) publishBatch(w http.ResponseWriter, r *http.Request) {
	b, err := a.body(w, r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	events, err := decodeBatch(*b)
	if err != nil {
		putBody(b)
		a.fail(w, r, err)
		return
	}
	out := make([]byte, 0, 64*len(events)+16)
	out = append(out, `{"results":[`...)
	for i, ev := range events {
		if i > 0 {
			out = append(out, ',')
		}
		p, err := decodePublish(ev, a.cfg.MaxMessageBytes)
		var rc relay.Receipt
		if err == nil {
			rc, err = a.publishOne(r.Context(), p)
		}
		if err != nil {
			out = append(out, `{"status":`...)
			out = strconv.AppendInt(out, int64(status(err)), 10)
			out = append(out, `,"error":`...)
			out = jsonwire.AppendString(out, fmt.Sprintf("event %d: %s", i, relay.Detail(err)))
			out = append(out, '}')
			continue
		}
		out = appendReceipt(out, rc)
	}
	putBody(b)
	w.Header()["Content-Type"] = jsonContentType
	w.Write(append(out, "]}"...))
}

// decodeBatch splits a batch body into its events.
func decodeBatch(body []byte) ([]json.RawMessage, error) {
	var events []json.RawMessage
	if err := jsonwire.Object(body, func(key, val []byte) {
		if jsonwire.FieldIs(key, "events") {
			json.Unmarshal(val, &events)
		}
	}); err != nil {
		if json.Unmarshal(body, &events) != nil { // a bare array is fine too
			return nil, fmt.Errorf(`a batch is {"events": [publish, ...]} or [publish, ...]: %w`, relay.ErrInvalid)
		}
	}
	switch {
	case len(events) == 0:
		return nil, fmt.Errorf(`a batch needs "events": a non-empty array of publish objects: %w`, relay.ErrInvalid)
	case len(events) > maxBatch:
		return nil, fmt.Errorf("a batch holds at most %d events, this one has %d: %w", maxBatch, len(events), relay.ErrTooLarge)
	}
	return events, nil
}

// jsonContentType is shared by every response; nothing may modify it.
var jsonContentType = []string{"application/json"}
