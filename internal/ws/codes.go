package ws

import (
	"log/slog"

	"github.com/relayhq/relay/internal/relay"
)

// closeCodes is the one table of the WebSocket close codes Relay sends, by
// reason. 4000–4999 are Relay's own; docs/protocol.md lists them all.
//
// level is the level the close is logged at: Debug for the ordinary end of
// a connection, Info for a client that broke the protocol or sent what the
// server refuses, Warn for what an operator may have to act on (slow
// consumers, rate limits, internal errors). kind is its log budget (see
// package logthrottle). docs/operations.md's Logs table lists them.
var closeCodes = [...]struct {
	code  uint16
	text  string
	level slog.Level
	kind  string
}{
	relay.CloseNormal:          {1000, "", slog.LevelDebug, "ws_close_1000"},
	relay.CloseShutdown:        {1001, "server shutting down", slog.LevelDebug, "ws_close_1001"},
	relay.CloseProtocolError:   {1002, "protocol error", slog.LevelInfo, "ws_close_1002"},
	relay.CloseUnsupportedData: {1003, "binary messages are not supported", slog.LevelInfo, "ws_close_1003"},
	relay.CloseInvalidPayload:  {1007, "text message is not valid UTF-8", slog.LevelInfo, "ws_close_1007"},
	relay.ClosePolicy:          {1008, "command refused", slog.LevelInfo, "ws_close_1008"},
	relay.CloseTooLarge:        {1009, "message too large", slog.LevelInfo, "ws_close_1009"},
	relay.CloseInternal:        {1011, "internal error", slog.LevelWarn, "ws_close_1011"},
	relay.CloseUnregistered:    {4000, "unregistered", slog.LevelDebug, "ws_close_4000"},
	relay.CloseReplaced:        {4001, "replaced by a newer connection", slog.LevelDebug, "ws_close_4001"},
	relay.CloseSlowConsumer:    {4002, "slow consumer: send queue full", slog.LevelWarn, "ws_close_4002"},
	relay.CloseIdle:            {4003, "idle timeout", slog.LevelDebug, "ws_close_4003"},
	relay.CloseRateLimited:     {4004, "rate limit: too many messages", slog.LevelWarn, "ws_close_4004"},
}
