package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The config file (-config / RELAY_CONFIG) is YAML whose keys are the
// flags' names without the dash: `max-body: 4MiB`. It sits below the
// environment and the flags, so one file can serve every node while each
// node's environment or command line changes what differs. YAML was
// chosen over TOML because its parser keeps the line of every key and
// value, so every mistake in the file is reported with its line.

// fileSetting is one key of the config file, as written.
type fileSetting struct {
	key, value string
	line       int
}

// readConfigFile reads the config file's settings. A value is a scalar,
// or a list of scalars for settings that take comma-separated lists.
func readConfigFile(path string) ([]fileSetting, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-config / RELAY_CONFIG: %v", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc.Kind == 0 { // an empty file sets nothing
		return nil, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: want a mapping of settings (key: value), one per line", path, root.Line)
	}
	var out []fileSetting
	var errs []error
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if prev, dup := seen[k.Value]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: %s is already set on line %d", path, k.Line, k.Value, prev))
			continue
		}
		seen[k.Value] = k.Line
		value, err := scalarOrList(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %s: %v", path, v.Line, k.Value, err))
			continue
		}
		out = append(out, fileSetting{key: k.Value, value: value, line: k.Line})
	}
	return out, errors.Join(errs...)
}

func scalarOrList(v *yaml.Node) (string, error) {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", nil
		}
		return v.Value, nil
	case yaml.SequenceNode:
		items := make([]string, 0, len(v.Content))
		for _, it := range v.Content {
			if it.Kind == yaml.AliasNode {
				it = it.Alias
			}
			if it.Kind != yaml.ScalarNode {
				return "", errors.New("a list may hold only plain values")
			}
			if strings.Contains(it.Value, ",") {
				return "", fmt.Errorf("list item %q contains a comma, which separates items", it.Value)
			}
			items = append(items, it.Value)
		}
		return strings.Join(items, ","), nil
	}
	return "", errors.New("want a value or a list of values, not a mapping")
}

// closest returns the candidate nearest to s by edit distance, when it is
// near enough to be a plausible typo.
func closest(s string, candidates []string) string {
	best, bestD := "", len(s)/3+2
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// clientEnv are RELAY_* variables read by other parts of Relay (the
// client subcommands and the test suites), which the server must not warn
// about.
var clientEnv = []string{"RELAY_SERVER", "RELAY_API_KEY", "RELAY_TOKEN", "RELAY_CONFIG"}

// unknownEnv warns about RELAY_* variables that are no setting: a typo
// in a variable name would otherwise be silently ignored.
func unknownEnv(environ []string, opts []option) []string {
	known := map[string]bool{}
	var names []string
	for _, o := range opts {
		known[o.env] = true
		names = append(names, o.env)
	}
	for _, n := range clientEnv {
		known[n] = true
	}
	var warnings []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "RELAY_") || known[name] || strings.HasPrefix(name, "RELAY_REQUIRE_") || strings.HasPrefix(name, "RELAY_TEST_") {
			continue
		}
		w := fmt.Sprintf("%s is set but is not a Relay setting", name)
		if c := closest(name, names); c != "" {
			w += fmt.Sprintf("; did you mean %s?", c)
		} else {
			w += "; relay serve -h lists the settings"
		}
		warnings = append(warnings, w)
	}
	return warnings
}
