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
// The package will also hold the Pusher socket session (the pusher:*
// events on /app/{key}) and the HTTP API (/apps/{id}/...), built on top of
// these pieces.
//
// Errors returned here are *Error values: errors.Is tells the kind (the Err*
// variables), Error() is the text Pusher itself shows for that case where
// Pusher's text is known, and Status() is the HTTP status Pusher answers
// with.
package pusher
