package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/relayhq/relay/client"
)

// Exit codes every subcommand keeps, so that scripts can tell a mistake in
// the command line from a failure of the server or the network.
const (
	exitOK      = 0
	exitFailure = 1 // the server refused, could not be reached, or the work failed
	exitUsage   = 2 // bad flags, arguments or configuration: fix the command
)

// command is one `relay` subcommand.
type command struct {
	name, args, summary string
	run                 func(args []string, getenv func(string) string, stdout, stderr io.Writer) int
}

// commands lists every subcommand in the order `relay -h` shows them.
func commands() []command {
	return []command{
		{"serve", "[flags]", "run the server (the default command)", serve},
		{"publish", "TOPIC [MESSAGE]", "publish a message (from stdin when absent or -) and print the receipt", publishCmd},
		{"subscribe", "TOPIC...", "print a topic's messages as they arrive, recovering across reconnects", subscribeCmd},
		{"history", "TOPIC", "print the messages a topic still holds", historyCmd},
		{"presence", "TOPIC", "print who is present on a topic", presenceCmd},
		{"bench", "[flags]", "load-test a deployment: connections, fan-out, many topics", benchCmd},
		{"genconfig", "[FILE]", "write a commented config file with a fresh API key and token secret", genconfig},
		{"checkconfig", "FILE", "check a config file (and the environment) without serving", checkconfig},
		{"token", "-sub USER", "mint a connect token for development", token},
		{"checktoken", "TOKEN", "say whether and why the server would accept a connect token", checktoken},
		{"version", "", "print the version and the VCS revision it was built from", versionCmd},
		{"health", "", "check a server's /health (for container health checks)", healthCmd},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Relay: app backends publish over HTTP, browsers and phones receive over WebSocket.\n\nUsage: relay [command] [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %-16s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintf(w, "\nRun relay COMMAND -h for a command's flags. Exit codes: 0 success, 1 failure (the server refused or was unreachable), 2 bad usage or configuration.\n")
}

// parseFlags parses a subcommand's flags. -h prints the full usage to
// stdout; a mistake prints one line naming it and how to get help, not
// the whole flag list. It returns the exit code when the command should
// stop.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (int, bool) {
	usage := fs.Usage
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		if usage != nil {
			usage()
		} else {
			fs.PrintDefaults()
		}
		return exitOK, false
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\nRun '%s -h' to see the flags.\n", fs.Name(), err, fs.Name())
		return exitUsage, false
	}
	return 0, true
}

// parseInterspersed parses flags wherever they stand among the arguments
// (`relay publish news hi -user 7` as well as `relay publish -user 7 news
// hi`); everything after "--" is an argument. fs.Args() then holds the
// arguments in order.
func parseInterspersed(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" || len(rest) == 0 {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}

// remote is the server a client subcommand talks to.
type remote struct {
	server, apiKey string
}

// remoteFlags adds -server and -api-key, defaulting from RELAY_SERVER and
// RELAY_API_KEY.
func remoteFlags(fs *flag.FlagSet, getenv func(string) string) *remote {
	r := &remote{}
	def := getenv("RELAY_SERVER")
	if def == "" {
		def = "http://127.0.0.1:8000"
	}
	fs.StringVar(&r.server, "server", def, "the Relay server's base URL (env RELAY_SERVER)")
	fs.StringVar(&r.apiKey, "api-key", getenv("RELAY_API_KEY"), "API key, when the server requires one (env RELAY_API_KEY)")
	return r
}

// client builds a Go client for the server, sending the API key.
func (r *remote) client(opts ...client.Option) (*client.Client, error) {
	if r.apiKey != "" {
		opts = append(opts, client.WithHeader("Authorization", "Bearer "+r.apiKey))
	}
	c, err := client.New(strings.TrimSuffix(r.server, "/"), opts...)
	if err != nil {
		return nil, fmt.Errorf("-server / RELAY_SERVER: %v", err)
	}
	return c, nil
}

// explain turns a client error into advice: what went wrong and what to
// do about it.
func explain(err error, r *remote) string {
	var e *client.Error
	if errors.As(err, &e) {
		switch e.Status {
		case 401:
			if r.apiKey == "" {
				return fmt.Sprintf("%s: %s\nThe server requires an API key: pass -api-key or set RELAY_API_KEY.", r.server, e.Message)
			}
			return fmt.Sprintf("%s: %s\nThe server refused this API key: check -api-key / RELAY_API_KEY.", r.server, e.Message)
		}
		return fmt.Sprintf("%s: %d %s", r.server, e.Status, e.Message)
	}
	return fmt.Sprintf("%v\nIs Relay running at %s? Set -server or RELAY_SERVER to its address.", err, r.server)
}
