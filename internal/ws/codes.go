package ws

import "github.com/relayhq/relay/internal/relay"

// closeCodes is the one table of the WebSocket close codes Relay sends, by
// reason. 4000–4999 are Relay's own; docs/protocol.md lists them all.
var closeCodes = [...]struct {
	code uint16
	text string
}{
	relay.CloseNormal:          {1000, ""},
	relay.CloseShutdown:        {1001, "server shutting down"},
	relay.CloseProtocolError:   {1002, "protocol error"},
	relay.CloseUnsupportedData: {1003, "binary messages are not supported"},
	relay.CloseInvalidPayload:  {1007, "text message is not valid UTF-8"},
	relay.ClosePolicy:          {1008, "command refused"},
	relay.CloseTooLarge:        {1009, "message too large"},
	relay.CloseInternal:        {1011, "internal error"},
	relay.CloseUnregistered:    {4000, "unregistered"},
	relay.CloseReplaced:        {4001, "replaced by a newer connection"},
	relay.CloseSlowConsumer:    {4002, "slow consumer: send queue full"},
	relay.CloseIdle:            {4003, "idle timeout"},
	relay.CloseRateLimited:     {4004, "rate limit: too many messages"},
}
