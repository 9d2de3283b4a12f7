// Command relay is the Relay server: app backends publish over HTTP,
// browsers and phones receive over WebSocket.
//
//	relay [serve] [flags]        serve (the default)
//	relay publish TOPIC [MSG]    and subscribe, history, presence, bench:
//	                             a terminal client for a running server
//	relay genconfig|checkconfig  write or check a config file
//	relay token|checktoken       mint or check a connect token
//	relay version                print the version
//
// `relay -h` lists the commands (cli.go holds the table). Configuration
// comes from flags, RELAY_* environment variables and a config file, in
// that order of precedence; `relay serve -h` lists every setting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/relayhq/relay/internal/auth"
	"github.com/relayhq/relay/internal/redisbroker"
	"github.com/relayhq/relay/internal/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		usage(stdout) // "relay -h" lists the commands; "relay serve -h" the settings
		return exitOK
	}
	name := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(args, getenv, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "relay: unknown command %q\nRun 'relay -h' to list the commands.\n", name)
	return exitUsage
}

// settingsError reports a failure of parseSettings: nothing for -h, one
// line for a mistake on the command line, every mistake in the settings
// otherwise. It returns the exit code and false when the command must
// stop.
func settingsError(err error, name string, stderr io.Writer) (int, bool) {
	var ue usageError
	switch {
	case err == nil:
		return exitOK, true
	case errors.Is(err, flag.ErrHelp):
		return exitOK, false
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %v\nRun '%s -h' to see the settings.\n", name, ue.error, name)
	default:
		fmt.Fprintf(stderr, "relay: invalid configuration:\n%v\n", err)
	}
	return exitUsage, false
}

// exposure refuses to serve the open API (no API key) off loopback unless
// told to, and warns whenever the API is open.
func (c *serveConfig) exposure(sec *auth.Auth) (warning string, err error) {
	switch {
	case sec.KeysRequired():
		return "", nil
	case !loopback(c.Addr) && !c.Insecure:
		return "", fmt.Errorf("refusing to serve the open API on %s, which is not a loopback address:\n"+
			"set RELAY_API_KEYS (or -api-keys) so that register, publish, history and presence need a key,\n"+
			"or RELAY_INSECURE=true (or -insecure) to serve it open anyway", c.Addr)
	case !loopback(c.Addr):
		return "serving the open API on a non-loopback address because -insecure is set: anyone who can reach it can register and publish", nil
	}
	return "no API key configured: anyone who can reach this address can register and publish; set RELAY_API_KEYS to require one", nil
}

func serve(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, _, err := parseSettings("relay serve", args, getenv, stdout, 0)
	if code, ok := settingsError(err, "relay serve", stderr); !ok {
		return code
	}
	if cfg.PrintConfig {
		cfg.print(stdout)
		return exitOK
	}
	log := cfg.logger(stderr)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	sec, err := cfg.security()
	if err != nil {
		fmt.Fprintf(stderr, "relay: invalid configuration:\n%v\n", err)
		return 2
	}
	warning, err := cfg.exposure(sec)
	if err != nil {
		fmt.Fprintf(stderr, "relay: %v\n", err)
		return exitUsage
	}
	if warning != "" {
		log.Warn(warning, "addr", cfg.Addr)
	}
	ln, err := server.Listen(context.Background(), cfg.Addr)
	if err != nil {
		log.Error("cannot listen; set -addr / RELAY_ADDR to a free address", "addr", cfg.Addr, "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sc := cfg.serverConfig()
	sc.API.Auth = sec
	log = log.With("node", sc.NodeID)
	if sc.Engine, err = cfg.engine(sc, log.With("component", "engine")); err != nil {
		fmt.Fprintf(stderr, "relay: invalid configuration:\n%v\n", err)
		return 2
	}
	srv := server.New(sc, log)
	log.Info("relay listening", "addr", ln.Addr().String(), "engine", redisbroker.Redact(cfg.Broker), "tls", cfg.TLSCert != "",
		"api_keys", sec.KeysRequired(), "connect_tokens", sec.TokensEnabled(), "version", version())
	if err := srv.Run(ctx, ln); err != nil {
		log.Error("relay stopped", "err", err)
		return 1
	}
	log.Info("relay stopped")
	return 0
}
