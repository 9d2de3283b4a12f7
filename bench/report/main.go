// Command report turns the load generator's JSON results from bench/run.sh
// into the markdown table of docs/benchmarks.md: seedport and Relay side by
// side, their ratio, and each goal of DESIGN §4 met or missed.
//
//	go run ./bench/report results.jsonl > table.md
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// result is one load generator run, labelled "<server>/<scenario>" by
// bench/run.sh, or one of the script's own measurements (see lookup).
type result map[string]any

// get follows a dotted path ("delivery.latency.p99_ms") to a number.
func (r result) get(path string) (float64, bool) {
	var v any = map[string]any(r)
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return 0, false
		}
		v = m[k]
	}
	f, ok := v.(float64)
	return f, ok
}

// row is one line of the table.
type row struct {
	scenario, metric, path string
	unit                   string
	higher                 bool // higher is better
	// goal judges Relay's figure (and seedport's, for ratios); it returns
	// the goal's text and whether it was met.
	goal func(relay, seed float64, all map[string]result) (string, bool)
}

func ratioGoal(min float64) func(r, s float64, _ map[string]result) (string, bool) {
	return func(r, s float64, _ map[string]result) (string, bool) {
		return fmt.Sprintf("≥ %.1f× seedport", min), s > 0 && r/s >= min
	}
}

func atMost(limit float64, unit string) func(r, s float64, _ map[string]result) (string, bool) {
	return func(r, _ float64, _ map[string]result) (string, bool) {
		return fmt.Sprintf("≤ %s %s", strconv.FormatFloat(limit, 'f', -1, 64), unit), r <= limit
	}
}

// flatWith compares Relay's CPU per delivery with the 1k-subscriber run
// of base: within 20%, or cheaper.
func flatWith(base string) func(r, s float64, all map[string]result) (string, bool) {
	return func(r, _ float64, all map[string]result) (string, bool) {
		b, _ := all["relay/"+base].get("cpu.server_us_per_delivery")
		return fmt.Sprintf("≤ 1.2 × %.2f µs (%s)", b, base), b > 0 && r <= 1.2*b
	}
}

func zero(r, _ float64, _ map[string]result) (string, bool) { return "0", r == 0 }

var rows = []row{
	{"conns19k", "server RSS per idle connection", "memory.server_bytes_per_conn", "B", false, func(r, _ float64, _ map[string]result) (string, bool) {
		return "≤ 8192 B (stretch ≤ 4096)", r <= 8192
	}},
	{"conns19k", "server goroutines at idle (19k conns)", "extra.goroutines", "", false, atMost(19000, "")},
	{"conns19k", "connections dropped while idle", "delivery.conn_drops", "", false, zero},
	{"conns10k", "connect rate", "connect.rate_per_s", "/s", true, ratioGoal(1.2)},
	{"fanout1k_max", "deliveries per second", "delivery.per_s", "/s", true, func(r, _ float64, all map[string]result) (string, bool) {
		lg, _ := all["relay/fanout1k_max"].get("cpu.loadgen_pct_of_core")
		return "≥ 1M/s or loadgen CPU ≥ 85%", r >= 1e6 || lg >= 85
	}},
	{"fanout1k_max", "server CPU per delivery", "cpu.server_us_per_delivery", "µs", false, atMost(1, "µs")},
	{"fanout1k_max", "load generator CPU", "cpu.loadgen_pct_of_core", "%", true, nil},
	{"fanout1k_max", "lost deliveries", "delivery.lost", "", false, zero},
	{"fanout1k_100", "delivery latency p99", "delivery.latency.p99_ms", "ms", false, atMost(10, "ms")},
	{"fanout1k_100", "lost deliveries", "delivery.lost", "", false, zero},
	{"fanout1k_100_stalled", "delivery latency p99, one stalled client", "delivery.latency.p99_ms", "ms", false, func(r, _ float64, all map[string]result) (string, bool) {
		base, _ := all["relay/fanout1k_100"].get("delivery.latency.p99_ms")
		return fmt.Sprintf("≤ 1.1 × %.2f ms (run without it)", base), base > 0 && r <= 1.1*base
	}},
	{"fanout10k_10", "last-recipient latency p99", "delivery.last_recipient_latency.p99_ms", "ms", false, atMost(60, "ms")},
	{"fanout10k_10", "lost deliveries", "delivery.lost", "", false, zero},
	{"overload10k", "deliveries per second", "delivery.per_s", "/s", true, ratioGoal(4)},
	{"overload10k", "server peak RSS", "memory.server_rss_max", "B", false, nil},
	{"overload10k", "lost deliveries", "delivery.lost", "", false, nil},
	{"overload10k", "connections dropped", "delivery.conn_drops", "", false, nil},
	{"topics", "publishes per second", "publish.accepted_per_s", "/s", true, ratioGoal(3.5)},
	{"topics", "delivery latency p99", "delivery.latency.p99_ms", "ms", false, atMost(10, "ms")},
	{"topics", "lost deliveries", "delivery.lost", "", false, zero},
	{"httppub", "HTTP publishes per second (no subscribers)", "publish.accepted_per_s", "/s", true, ratioGoal(1.3)},
	{"fanout19k_5", "server CPU per delivery, 19k subscribers at 5 msg/s (same delivery rate as 1k at 100)", "cpu.server_us_per_delivery", "µs", false, flatWith("fanout1k_100")},
	{"fanout19k_5", "lost deliveries", "delivery.lost", "", false, zero},
	{"fanout19k_max", "server CPU per delivery, 19k subscribers at full rate", "cpu.server_us_per_delivery", "µs", false, flatWith("fanout1k_max")},
	{"fanout19k_max", "lost deliveries", "delivery.lost", "", false, zero},
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: report results.jsonl")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	all := map[string]result{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r result
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		label, _ := r["label"].(string)
		all[label] = r
	}
	fmt.Println("| scenario | figure | seedport | Relay | Relay ÷ seedport | goal | met |")
	fmt.Println("|---|---|---:|---:|---:|---|:-:|")
	for _, rw := range rows {
		if all["relay/"+rw.scenario] == nil && all["seedport/"+rw.scenario] == nil {
			continue
		}
		rv, hasR := lookup(all, "relay", rw.scenario, rw.path)
		sv, hasS := lookup(all, "seedport", rw.scenario, rw.path)
		cell := func(v float64, ok bool) string {
			if !ok {
				return "–"
			}
			return format(v, rw.unit)
		}
		ratio := "–"
		if hasR && hasS && sv != 0 {
			ratio = fmt.Sprintf("%.2f×", rv/sv)
		}
		goal, met := "", ""
		if rw.goal != nil && hasR {
			g, ok := rw.goal(rv, sv, all)
			goal = g
			met = map[bool]string{true: "✅", false: "❌"}[ok]
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s |\n", rw.scenario, rw.metric, cell(sv, hasS), cell(rv, hasR), ratio, goal, met)
	}
}

// lookup finds a figure of one server's run of a scenario. Paths starting
// with "extra." come from the script's own measurement lines, labelled
// "extra/<server>/<scenario>".
func lookup(all map[string]result, server, scenario, path string) (float64, bool) {
	if rest, ok := strings.CutPrefix(path, "extra."); ok {
		return all["extra/"+server+"/"+scenario].get(rest)
	}
	return all[server+"/"+scenario].get(path)
}

func format(v float64, unit string) string {
	switch unit {
	case "B":
		switch {
		case v >= 1<<20:
			return fmt.Sprintf("%.1f MiB", v/(1<<20))
		default:
			return fmt.Sprintf("%.0f B", v)
		}
	case "/s":
		return fmt.Sprintf("%.0f/s", v)
	case "ms", "µs":
		return fmt.Sprintf("%.2f %s", v, unit)
	case "%":
		return fmt.Sprintf("%.0f%%", v)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
