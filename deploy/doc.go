// Package deploy holds no code: its tests check the packaging files of
// the repository without the tools they are written for, or with them
// when they are installed.
//
//   - dockerfile_test.go: ../Dockerfile and ../.dockerignore, without a
//     Docker engine: the instructions are parsed and checked, the build
//     stage's `go build` line is run as written, the binary is checked to
//     be static, and the image's HEALTHCHECK command is run against the
//     binary serving with the image's environment.
//   - systemd_test.go: relay.service, by its keys and, when
//     systemd-analyze is installed, `systemd-analyze verify` and
//     `systemd-analyze security --offline`.
//   - proxy_test.go: nginx.conf, haproxy.cfg and Caddyfile, run in front
//     of a real relay server when nginx, haproxy or caddy is installed
//     (required when RELAY_REQUIRE_NGINX is set, for nginx).
//
// docs/operations.md, "Packaging and deployment", says what these checks
// cover and what they cannot.
package deploy
