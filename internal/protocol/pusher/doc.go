// Package pusher implements the Pusher Channels protocol (version 7), so
// that pusher-js, Laravel Echo and the official Pusher server SDKs work
// against Relay unchanged.
//
// This part of the package is the cryptographic and naming layer, and uses
// the standard library only:
//
//   - sign.go: HTTP API request signatures (VerifyRequest, SignRequest),
//     private and presence channel authorization strings (ChannelAuth,
//     VerifyChannelAuth), user sign-in strings (UserAuth, VerifyUserAuth)
//     and webhook signatures (WebhookSignature, VerifyWebhook).
//   - names.go: channel names and kinds (ParseChannel, Kind), event names,
//     socket ids, and the user ids carried in channel_data and user_data.
//
// Over them sit the protocol itself:
//
//   - app.go: the apps (credentials and per-app options), from flags or an
//     apps file.
//   - event.go: a channel is the Relay topic *pusher/{app}/{channel}; an
//     event is stored as the frame pusher-js receives, after the socket id
//     it leaves out, so fan-out encodes nothing per recipient.
//   - protocol.go and session.go: the socket endpoint /app/{key} and one
//     Session per socket (subscriptions, presence, client events, sign-in).
//   - httpapi.go: the HTTP API at /apps/{app_id}/....
//
// docs/pusher.md has the design and what is supported.
//
// Errors returned here are *Error values: errors.Is tells the kind (the Err*
// variables), Error() is the text Pusher itself shows for that case where
// Pusher's text is known, and Status() is the HTTP status Pusher answers
// with.
package pusher
