package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// table prints the headline figures of result files as one markdown
// table: a row per (run label, figure), a column per file, so that two
// servers probed by bench/probes.sh can be set side by side:
//
//	probe table old/probes.jsonl new/probes.jsonl
func table(files []string, w io.Writer) int {
	if len(files) == 0 {
		fmt.Fprintln(os.Stderr, "usage: probe table FILE...")
		return 2
	}
	type key struct{ label, figure string }
	var order []key
	seen := map[key]bool{}
	cols := make([]map[key]string, len(files))
	names := make([]string, len(files))
	for i, name := range files {
		cols[i] = map[key]string{}
		names[i] = name
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe table:", err)
			return 1
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var r result
			if json.Unmarshal(sc.Bytes(), &r) != nil || r.Probe == "" {
				continue
			}
			if r.Run != "" {
				names[i] = r.Run
			}
			label := r.Label
			if label == "" {
				label = r.Probe
			}
			hl := r.Headline
			if r.Aborted != "" {
				hl = append(hl, figure{"aborted", r.Aborted})
			}
			for _, h := range hl {
				k := key{label, h.Name}
				cols[i][k] = h.Value
				if !seen[k] {
					seen[k] = true
					order = append(order, k)
				}
			}
		}
		f.Close()
	}
	fmt.Fprintf(w, "| probe | figure | %s |\n|---|---|%s\n", strings.Join(names, " | "), strings.Repeat("---|", len(names)))
	last := ""
	for _, k := range order {
		label := k.label
		if label == last {
			label = ""
		}
		last = k.label
		fmt.Fprintf(w, "| %s | %s |", label, k.figure)
		for _, c := range cols {
			v, ok := c[k]
			if !ok {
				v = "–"
			}
			fmt.Fprintf(w, " %s |", strings.ReplaceAll(v, "|", "\\|"))
		}
		fmt.Fprintln(w)
	}
	return 0
}
