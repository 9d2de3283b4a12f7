package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file checks ../Dockerfile and ../.dockerignore without a Docker
// engine. The Dockerfile is parsed as the Docker builder does (comments,
// parser directives, line continuations, the JSON and shell forms), its
// instructions are checked, the build stage's `go build` line is run as
// written, and the binary it makes is checked and run with the final
// stage's environment, its HEALTHCHECK command included.

// instruction is one Dockerfile instruction.
type instruction struct {
	line  int      // where it starts
	cmd   string   // upper case: FROM, RUN, ...
	flags []string // leading --name=value words (FROM, COPY, RUN, HEALTHCHECK)
	args  string   // the rest, continuation lines joined
	exec  []string // the JSON (exec) form of args, when it is one
}

// stage is one FROM and what follows it.
type stage struct {
	image, name string
	instrs      []instruction
}

func (s *stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func (s *stage) last(cmd string) *instruction {
	all := s.all(cmd)
	if len(all) == 0 {
		return nil
	}
	return &all[len(all)-1]
}

// parseDockerfile splits a Dockerfile into stages of instructions.
func parseDockerfile(src string) (directives map[string]string, stages []*stage, err error) {
	directives = map[string]string{}
	lines := strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n")
	// Parser directives: "# key=value" lines at the very top.
	i := 0
	for ; i < len(lines); i++ {
		m := regexp.MustCompile(`^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$`).FindStringSubmatch(lines[i])
		if m == nil {
			break
		}
		directives[strings.ToLower(m[1])] = m[2]
	}
	if e, ok := directives["escape"]; ok && e != `\` {
		return nil, nil, fmt.Errorf("escape directive %q: this parser knows only the default backslash", e)
	}
	var instrs []instruction
	for ; i < len(lines); i++ {
		t := strings.TrimSpace(lines[i])
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		start := i + 1
		var b strings.Builder
		for {
			t := strings.TrimRight(lines[i], " \t")
			if cont, ok := strings.CutSuffix(t, `\`); ok {
				b.WriteString(cont)
				b.WriteString(" ")
				// The next lines go on the instruction; comment and empty
				// lines inside a continuation are dropped, as Docker does.
				for i+1 < len(lines) {
					n := strings.TrimSpace(lines[i+1])
					if n != "" && !strings.HasPrefix(n, "#") {
						break
					}
					i++
				}
				if i+1 >= len(lines) {
					return nil, nil, fmt.Errorf("line %d: continuation at the end of the file", start)
				}
				i++
				continue
			}
			b.WriteString(t)
			break
		}
		full := strings.TrimSpace(b.String())
		cmd, rest, _ := strings.Cut(full, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(rest)}
		switch in.cmd {
		case "FROM", "COPY", "ADD", "RUN", "HEALTHCHECK":
			for strings.HasPrefix(in.args, "--") {
				f, r, _ := strings.Cut(in.args, " ")
				in.flags = append(in.flags, f)
				in.args = strings.TrimSpace(r)
			}
		}
		if strings.HasPrefix(in.args, "[") {
			var v []string
			if err := json.Unmarshal([]byte(in.args), &v); err == nil {
				in.exec = v
			}
		}
		switch in.cmd {
		case "FROM", "RUN", "CMD", "ENTRYPOINT", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER",
			"EXPOSE", "HEALTHCHECK", "STOPSIGNAL", "LABEL", "VOLUME", "SHELL", "ONBUILD":
		default:
			return nil, nil, fmt.Errorf("line %d: unknown instruction %q", start, cmd)
		}
		instrs = append(instrs, in)
	}
	for _, in := range instrs {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := &stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			} else if len(f) != 1 {
				return nil, nil, fmt.Errorf("line %d: FROM %s", in.line, in.args)
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				return nil, nil, fmt.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
	}
	return directives, stages, nil
}

// envPairs parses ENV's "k=v k2=v2" (quotes allowed) or legacy "k v".
func envPairs(t *testing.T, in instruction, vars map[string]string) [][2]string {
	t.Helper()
	if !strings.Contains(strings.Fields(in.args)[0], "=") {
		k, v, _ := strings.Cut(in.args, " ")
		return [][2]string{{k, strings.TrimSpace(v)}}
	}
	var out [][2]string
	for _, w := range shellWords(t, in.args, vars)[0] {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			t.Fatalf("Dockerfile:%d: ENV %q is not key=value", in.line, w)
		}
		out = append(out, [2]string{k, v})
	}
	return out
}

// shellWords splits a shell command line into simple commands (at &&,
// ||, ; and |) of words, removing quotes and expanding $VAR and ${VAR}
// from vars (unset: empty). It knows what a RUN line of this Dockerfile
// may hold, not the whole shell: it fails on what it does not know.
func shellWords(t *testing.T, s string, vars map[string]string) [][]string {
	t.Helper()
	var cmds [][]string
	var words []string
	var w strings.Builder
	inWord := false
	endWord := func() {
		if inWord {
			words = append(words, w.String())
			w.Reset()
			inWord = false
		}
	}
	endCmd := func() {
		endWord()
		if len(words) > 0 {
			cmds = append(cmds, words)
			words = nil
		}
	}
	expand := func(i int) int { // s[i] == '$'; returns the index after the name
		j := i + 1
		if j < len(s) && s[j] == '{' {
			end := strings.IndexByte(s[j:], '}')
			if end < 0 {
				t.Fatalf("unclosed ${ in %q", s)
			}
			name := s[j+1 : j+end]
			if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(name) {
				t.Fatalf("${%s}: only plain ${NAME} is supported", name)
			}
			w.WriteString(vars[name])
			return j + end + 1
		}
		for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9') {
			j++
		}
		if j == i+1 {
			t.Fatalf("lone $ in %q", s)
		}
		w.WriteString(vars[s[i+1:j]])
		return j
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			endWord()
			i++
		case c == '&' || c == '|' || c == ';':
			endCmd()
			i++
			if i < len(s) && (s[i] == '&' || s[i] == '|') {
				i++
			}
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				t.Fatalf("unclosed ' in %q", s)
			}
			w.WriteString(s[i+1 : i+1+end])
			inWord = true
			i += end + 2
		case c == '"':
			inWord = true
			i++
			for i < len(s) && s[i] != '"' {
				switch {
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\", s[i+1]) >= 0:
					w.WriteByte(s[i+1])
					i += 2
				case s[i] == '$':
					i = expand(i)
				case s[i] == '`':
					t.Fatalf("command substitution in %q", s)
				default:
					w.WriteByte(s[i])
					i++
				}
			}
			if i >= len(s) {
				t.Fatalf(`unclosed " in %q`, s)
			}
			i++
		case c == '\\' && i+1 < len(s):
			w.WriteByte(s[i+1])
			inWord = true
			i += 2
		case c == '$':
			inWord = true
			i = expand(i)
		case strings.IndexByte("`<>(){}*?[]~", c) >= 0:
			t.Fatalf("shell syntax %q in %q is beyond this checker: keep RUN lines simple or extend shellWords", c, s)
		default:
			w.WriteByte(c)
			inWord = true
			i++
		}
	}
	endCmd()
	return cmds
}

// dockerignore is a .dockerignore, matched as Docker's builder does: a
// path is excluded by the last pattern matching it or one of its parent
// directories; "!" re-includes; * and ? stop at /, ** spans directories.
type dockerignore []struct {
	re      *regexp.Regexp
	include bool
}

func parseDockerignore(src string) dockerignore {
	var d dockerignore
	for _, l := range strings.Split(src, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		include := strings.HasPrefix(l, "!")
		l = filepath.ToSlash(filepath.Clean(strings.TrimPrefix(l, "!")))
		l = strings.TrimPrefix(l, "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(l); i++ {
			switch {
			case strings.HasPrefix(l[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(l[i:], "**"):
				re.WriteString(".*")
				i++
			case l[i] == '*':
				re.WriteString("[^/]*")
			case l[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(l[i : i+1]))
			}
		}
		re.WriteString("$")
		d = append(d, struct {
			re      *regexp.Regexp
			include bool
		}{regexp.MustCompile(re.String()), include})
	}
	return d
}

func (d dockerignore) excluded(path string) bool {
	var parents []string
	for p := path; p != "." && p != "/" && p != ""; p = filepath.ToSlash(filepath.Dir(p)) {
		parents = append(parents, p)
	}
	ex := false
	for _, p := range d {
		for _, q := range parents {
			if p.re.MatchString(q) {
				ex = !p.include
				break
			}
		}
	}
	return ex
}

// image is the Dockerfile, parsed, with the facts the tests need.
type image struct {
	stages      []*stage
	build       *stage
	final       *stage
	finalEnv    map[string]string
	buildEnv    map[string]string // the build stage's ENV and ARG defaults
	buildArgs   []string          // the `go build` command line, env assignments first
	buildOut    string            // its -o
	copiedFrom  string            // COPY --from=build source in the final stage
	copiedTo    string
	healthcheck []string
	entrypoint  []string
	cmd         []string
}

func loadImage(t *testing.T) *image {
	t.Helper()
	src, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	_, stages, err := parseDockerfile(string(src))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	im := &image{stages: stages}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s); want a multi-stage build (build, then a minimal runtime)", len(stages))
	}
	im.final = stages[len(stages)-1]
	for _, s := range stages[:len(stages)-1] {
		for _, in := range s.all("RUN") {
			if strings.Contains(in.args, "go build") {
				im.build = s
			}
		}
	}
	if im.build == nil || im.build.name == "" {
		t.Fatal("no named build stage with a `go build` RUN")
	}
	im.buildEnv = map[string]string{}
	for _, in := range im.build.instrs {
		switch in.cmd {
		case "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			im.buildEnv[k] = v // BuildKit fills TARGETOS & co; unset they are empty and go builds for this machine
		case "ENV":
			for _, kv := range envPairs(t, in, im.buildEnv) {
				im.buildEnv[kv[0]] = kv[1]
			}
		case "RUN":
			if !strings.Contains(in.args, "go build") {
				continue
			}
			if in.exec != nil {
				t.Fatalf("Dockerfile:%d: expected the shell form for the go build RUN", in.line)
			}
			for _, words := range shellWords(t, in.args, im.buildEnv) {
				j := 0
				for j < len(words) && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(words[j]) {
					j++
				}
				if j+1 < len(words) && words[j] == "go" && words[j+1] == "build" {
					im.buildArgs = words
				}
			}
		}
	}
	if im.buildArgs == nil {
		t.Fatal("no `go build` command found in the build stage's RUN lines")
	}
	for i, w := range im.buildArgs {
		if w == "-o" && i+1 < len(im.buildArgs) {
			im.buildOut = im.buildArgs[i+1]
		}
	}
	im.finalEnv = map[string]string{}
	for _, in := range im.final.instrs {
		switch in.cmd {
		case "ENV":
			for _, kv := range envPairs(t, in, im.finalEnv) {
				im.finalEnv[kv[0]] = kv[1]
			}
		case "COPY":
			for _, f := range in.flags {
				if f == "--from="+im.build.name {
					w := strings.Fields(in.args)
					if len(w) != 2 {
						t.Fatalf("Dockerfile:%d: COPY %s: want one source and one destination", in.line, in.args)
					}
					im.copiedFrom, im.copiedTo = w[0], w[1]
				}
			}
		}
	}
	if hc := im.final.last("HEALTHCHECK"); hc != nil {
		_, rest, _ := strings.Cut(hc.args, " ")
		var v []string
		if err := json.Unmarshal([]byte(strings.TrimSpace(rest)), &v); err == nil && strings.HasPrefix(hc.args, "CMD ") {
			im.healthcheck = v
		} else {
			t.Fatalf("Dockerfile:%d: HEALTHCHECK %s: want CMD in the exec (JSON) form: the runtime image has no shell", hc.line, hc.args)
		}
	}
	if in := im.final.last("ENTRYPOINT"); in != nil {
		im.entrypoint = in.exec
	}
	if in := im.final.last("CMD"); in != nil {
		im.cmd = in.exec
	}
	return im
}

func TestDockerfileParser(t *testing.T) {
	src := "# syntax=docker/dockerfile:1\n# escape=\\\n\n# a comment\nARG V=1\nFROM a:1 AS b\nRUN x \\\n  # dropped\n  && y \\\n\n  z\nENV A=1 B=\"two words\"\nENV C 3\nFROM scratch\nCOPY --from=b --chmod=0755 /o /p\nHEALTHCHECK --interval=5s CMD [\"/p\", \"health\"]\nCMD [\"serve\"]\n"
	dir, stages, err := parseDockerfile(src)
	if err != nil {
		t.Fatal(err)
	}
	if dir["syntax"] != "docker/dockerfile:1" || len(stages) != 2 || stages[0].name != "b" || stages[1].image != "scratch" {
		t.Fatalf("directives %v, stages %+v", dir, stages)
	}
	if run := stages[0].last("RUN"); run.args != "x    && y    z" || run.line != 7 {
		t.Fatalf("RUN %+v", run)
	}
	env := stages[0].all("ENV")
	if got := envPairs(t, env[0], nil); fmt.Sprint(got) != "[[A 1] [B two words]]" {
		t.Fatalf("ENV %v", got)
	}
	if got := envPairs(t, env[1], nil); fmt.Sprint(got) != "[[C 3]]" {
		t.Fatalf("legacy ENV %v", got)
	}
	cp := stages[1].last("COPY")
	if fmt.Sprint(cp.flags) != "[--from=b --chmod=0755]" || cp.args != "/o /p" {
		t.Fatalf("COPY %+v", cp)
	}
	if hc := stages[1].last("HEALTHCHECK"); fmt.Sprint(hc.flags) != "[--interval=5s]" || hc.args != `CMD ["/p", "health"]` {
		t.Fatalf("HEALTHCHECK %+v", hc)
	}
	if fmt.Sprint(stages[1].last("CMD").exec) != "[serve]" {
		t.Fatal("CMD exec form not parsed")
	}
	if _, _, err := parseDockerfile("FROM a\nRUN x \\\n"); err == nil {
		t.Fatal("a continuation at the end of the file was accepted")
	}
	if _, _, err := parseDockerfile("FROM a\nRUNN x\n"); err == nil {
		t.Fatal("an unknown instruction was accepted")
	}
	got := shellWords(t, `A=1 B=$X go build -ldflags="-s -w" -o '/out/$Y' ./x && echo "${X}z" \$`, map[string]string{"X": "x"})
	if fmt.Sprintf("%q", got) != `[["A=1" "B=x" "go" "build" "-ldflags=-s -w" "-o" "/out/$Y" "./x"] ["echo" "xz" "$"]]` {
		t.Fatalf("shellWords: %q", got)
	}
	di := parseDockerignore("*\n!cmd/\n**/*.pem\n!keep.pem\n")
	for path, want := range map[string]bool{"x": true, ".git/config": true, "cmd/relay/main.go": false, "cmd/a.pem": true, "keep.pem": false} {
		if di.excluded(path) != want {
			t.Errorf(".dockerignore: excluded(%s) = %v", path, !want)
		}
	}
}

// TestDockerfile checks the instructions: a multi-stage build of a static
// binary, a non-root runtime stage without a shell, the health check, the
// listen address, and no secret in the image.
func TestDockerfile(t *testing.T) {
	im := loadImage(t)

	// The build stage's Go is the release go.mod names, so that the build
	// never fetches another toolchain (GOTOOLCHAIN).
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if m := regexp.MustCompile(`^golang:(\d+\.\d+\.\d+)(-\w+)?$`).FindStringSubmatch(im.build.image); m == nil || goLine == nil || m[1] != string(goLine[1]) {
		t.Errorf("build stage FROM %s: want an exact golang:%s tag (go.mod's go line)", im.build.image, goLine[1])
	}
	if w := im.build.last("WORKDIR"); w == nil || !slicesContain(im.build.all("COPY"), ". .") {
		t.Error("build stage: want a WORKDIR and COPY . . (the go build runs in the build context's root)")
	}
	// go.mod and go.sum are copied and downloaded before the sources, so
	// that the module layer is cached across source changes.
	var order []string
	for _, in := range im.build.instrs {
		order = append(order, in.cmd+" "+in.args)
	}
	joined := strings.Join(order, "\n")
	if i, j, k := strings.Index(joined, "COPY go.mod go.sum"), strings.Index(joined, "go mod download"), strings.Index(joined, "COPY . ."); i < 0 || j < i || k < j {
		t.Error("build stage: want COPY go.mod go.sum, RUN go mod download, then COPY . . (module layer caching)")
	}

	env := map[string]string{}
	for _, w := range im.buildArgs {
		if k, v, ok := strings.Cut(w, "="); ok && !strings.HasPrefix(w, "-") && regexp.MustCompile(`^[A-Z_]+$`).MatchString(k) {
			env[k] = v
		}
	}
	if env["CGO_ENABLED"] != "0" && im.buildEnv["CGO_ENABLED"] != "0" {
		t.Error("go build: want CGO_ENABLED=0 (a static binary for distroless/static)")
	}
	line := strings.Join(im.buildArgs, " ")
	for _, want := range []string{"-trimpath", "-ldflags=-s -w", "./cmd/relay"} {
		if !strings.Contains(line, want) {
			t.Errorf("go build %q lacks %q", line, want)
		}
	}
	if im.buildOut == "" || im.copiedFrom != im.buildOut {
		t.Errorf("the final stage copies %q from the build stage, which writes %q", im.copiedFrom, im.buildOut)
	}

	// The runtime stage: non-root, no shell needed, a health check that
	// runs the binary.
	if !strings.HasPrefix(im.final.image, "gcr.io/distroless/static") && im.final.image != "scratch" {
		t.Errorf("final stage FROM %s: want distroless/static or scratch", im.final.image)
	}
	u := im.final.last("USER")
	if u == nil {
		t.Fatal("final stage has no USER: it would run as root")
	}
	uid, _, _ := strings.Cut(u.args, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %s: want a numeric non-zero uid (Kubernetes' runAsNonRoot checks it)", u.args)
	}
	for _, in := range im.final.instrs {
		switch in.cmd {
		case "RUN":
			t.Errorf("Dockerfile:%d: RUN in the runtime stage: it has no shell", in.line)
		case "CMD", "ENTRYPOINT":
			if in.exec == nil {
				t.Errorf("Dockerfile:%d: %s in the shell form: the runtime image has no shell", in.line, in.cmd)
			}
		}
	}
	if len(im.entrypoint) != 1 || im.entrypoint[0] != im.copiedTo {
		t.Errorf("ENTRYPOINT %q: want [%q], the binary copied in", im.entrypoint, im.copiedTo)
	}
	if len(im.healthcheck) < 2 || im.healthcheck[0] != im.copiedTo || im.healthcheck[1] != "health" {
		t.Errorf("HEALTHCHECK CMD %q: want [%q, \"health\", ...]", im.healthcheck, im.copiedTo)
	}
	hc := im.final.last("HEALTHCHECK")
	for _, f := range hc.flags {
		if v, ok := strings.CutPrefix(f, "--timeout="); ok {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 3*time.Second {
				t.Errorf("HEALTHCHECK %s: want more than relay health's own 3s -timeout", f)
			}
		}
	}

	// Listening on every interface, on the port it exposes.
	host, port, err := net.SplitHostPort(im.finalEnv["RELAY_ADDR"])
	if err != nil || host != "0.0.0.0" {
		t.Errorf("ENV RELAY_ADDR=%q: want 0.0.0.0:PORT", im.finalEnv["RELAY_ADDR"])
	}
	if e := im.final.last("EXPOSE"); e == nil || strings.TrimSuffix(e.args, "/tcp") != port {
		t.Errorf("EXPOSE does not name RELAY_ADDR's port %s", port)
	}

	// No secret baked in: no key, secret, token or password in ENV, ARG
	// or LABEL, and none can enter the build context.
	secret := regexp.MustCompile(`(?i)(KEY|SECRET|TOKEN|PASSW|CREDENTIAL)`)
	for _, s := range im.stages {
		for _, in := range s.instrs {
			if in.cmd != "ENV" && in.cmd != "ARG" && in.cmd != "LABEL" {
				continue
			}
			if secret.MatchString(in.args) {
				t.Errorf("Dockerfile:%d: %s %s looks like a secret: pass secrets at docker run", in.line, in.cmd, in.args)
			}
		}
		for _, in := range append(s.all("COPY"), s.all("ADD")...) {
			if regexp.MustCompile(`(?i)\.env\b|\.pem\b|\.key\b|relay\.yaml`).MatchString(in.args) {
				t.Errorf("Dockerfile:%d: %s %s copies a configuration or key file into the image", in.line, in.cmd, in.args)
			}
		}
	}
}

func slicesContain(ins []instruction, args string) bool {
	for _, in := range ins {
		if in.args == args {
			return true
		}
	}
	return false
}

// TestDockerignore checks that every file `go build ./cmd/relay` reads is
// in the build context, and that secrets and .git are not.
func TestDockerignore(t *testing.T) {
	src, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	di := parseDockerignore(string(src))
	out, err := exec.Command("go", "list", "-deps", "-json=Dir,Module,GoFiles,EmbedFiles,CgoFiles,SFiles,HFiles,CFiles", "../cmd/relay").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	need := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct {
			Dir                                                   string
			Module                                                *struct{ Main bool }
			GoFiles, EmbedFiles, CgoFiles, SFiles, HFiles, CFiles []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, files := range [][]string{p.GoFiles, p.EmbedFiles, p.CgoFiles, p.SFiles, p.HFiles, p.CFiles} {
			for _, f := range files {
				need = append(need, filepath.ToSlash(filepath.Join(rel, f)))
			}
		}
	}
	if len(need) < 10 {
		t.Fatalf("go list found only %v", need)
	}
	for _, f := range need {
		if di.excluded(f) {
			t.Errorf(".dockerignore leaves out %s, which go build ./cmd/relay reads: let it in", f)
		}
	}
	for _, f := range []string{".git/config", ".env", "deploy/relay.env", "cmd/relay/tls.key", "internal/x/cert.pem", "relay", "bench/out/x", ".ci/run"} {
		if !di.excluded(f) {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}
}

// TestDockerBuildStage runs the build stage's `go build` line as written
// (its output redirected to a temporary directory), checks that the
// binary is static and stripped, and runs it as the image would: with the
// final stage's environment it refuses to start without an API key; with
// a key it serves, the HEALTHCHECK command passes, and once it has
// stopped the HEALTHCHECK command fails.
func TestDockerBuildStage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	im := loadImage(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "relay")
	root, _ := filepath.Abs("..")

	var envAssign []string
	args := im.buildArgs
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") && strings.Contains(args[0], "=") {
		envAssign = append(envAssign, args[0])
		args = args[1:]
	}
	args = append([]string(nil), args...)
	for i := range args {
		if i > 0 && args[i-1] == "-o" {
			args[i] = bin
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = root // WORKDIR /src after COPY . .
	cmd.Env = os.Environ()
	for k, v := range im.buildEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, envAssign...)
	t.Logf("running the build stage's %s (-o %s)", strings.Join(im.buildArgs, " "), bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary has a %v program header: it is not static", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v (DT_NEEDED)", libs)
	}
	if f.Section(".symtab") != nil || f.Section(".debug_info") != nil {
		t.Error("the binary has a symbol table or DWARF: -ldflags=-s -w did not take")
	}
	f.Close()
	if data, err := os.ReadFile(bin); err != nil {
		t.Fatal(err)
	} else if bytes.Contains(data, []byte(root+"/")) {
		t.Errorf("the binary holds the build directory %s: -trimpath did not take", root)
	}

	// The container's process: ENTRYPOINT + CMD, the binary renamed.
	argv := append(append([]string(nil), im.entrypoint...), im.cmd...)
	if len(argv) == 0 || argv[0] != im.copiedTo {
		t.Fatalf("ENTRYPOINT/CMD %q does not run %s", argv, im.copiedTo)
	}
	argv[0] = bin
	health := append([]string{bin}, im.healthcheck[1:]...)
	containerEnv := func(over map[string]string) []string {
		env := map[string]string{}
		for k, v := range im.finalEnv {
			env[k] = v
		}
		for k, v := range over {
			env[k] = v
		}
		var out []string
		for k, v := range env {
			out = append(out, k+"="+v)
		}
		return out
	}
	port := freePort(t)

	// 1. As shipped, with no key given at docker run: exit 2 at once.
	_, imagePort, _ := net.SplitHostPort(im.finalEnv["RELAY_ADDR"])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The port is a free one rather than the image's own, so that a Relay
	// that did start would not clash with anything.
	noKey := exec.CommandContext(ctx, argv[0], argv[1:]...)
	noKey.Env = containerEnv(map[string]string{"RELAY_ADDR": "0.0.0.0:" + port})
	out, err := noKey.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "RELAY_API_KEYS") {
		t.Fatalf("the image's command without an API key: %v\n%s\nwant exit 2 naming RELAY_API_KEYS", err, out)
	}
	if imagePort == "" {
		t.Fatal("RELAY_ADDR has no port")
	}

	// 2. With a key: it serves, and the HEALTHCHECK command, run with the
	// container's environment as Docker runs it, passes. (127.0.0.1
	// rather than 0.0.0.0: a test listens on loopback only.)
	key := randomKey(t)
	env := containerEnv(map[string]string{"RELAY_ADDR": "127.0.0.1:" + port, "RELAY_API_KEYS": key})
	srv := startRelay(t, ctx, argv, env)
	waitHealthy(t, ctx, health, env)
	resp, err := http.Post("http://127.0.0.1:"+port+"/register", "application/json", strings.NewReader(`{"user_id":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /register without the key: %d, want 401", resp.StatusCode)
	}
	ready := exec.CommandContext(ctx, health[0], append(health[1:], "-readyz")...)
	ready.Env = env
	if out, err := ready.CombinedOutput(); err != nil {
		t.Errorf("relay health -readyz: %v\n%s", err, out)
	}

	// 3. Stopped (docker stop sends the STOPSIGNAL): it exits 0 and the
	// HEALTHCHECK command fails with exit 1.
	if s := im.final.last("STOPSIGNAL"); s != nil && s.args != "SIGTERM" {
		t.Errorf("STOPSIGNAL %s: Relay stops gracefully on SIGTERM", s.args)
	}
	srv.Process.Signal(syscall.SIGTERM)
	if err := srv.Wait(); err != nil {
		t.Errorf("relay after SIGTERM: %v, want exit 0", err)
	}
	dead := exec.CommandContext(ctx, health[0], health[1:]...)
	dead.Env = env
	out, err = dead.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || strings.Count(string(out), "\n") != 1 {
		t.Errorf("HEALTHCHECK against a stopped server: %v %q, want exit 1 and one line", err, out)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

func randomKey(t *testing.T) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// startRelay starts a relay process; it is killed when the test ends.
func startRelay(t *testing.T, ctx context.Context, argv, env []string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	var mu sync.Mutex
	var logs bytes.Buffer
	pr, pw, _ := os.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			mu.Lock()
			t.Logf("relay's log:\n%s", logs.String())
			mu.Unlock()
		}
	})
	return cmd
}

// waitHealthy runs the health command until it passes, as Docker's
// start period allows.
func waitHealthy(t *testing.T, ctx context.Context, health, env []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := exec.CommandContext(ctx, health[0], health[1:]...)
		c.Env = env
		out, err := c.CombinedOutput()
		if err == nil {
			if !strings.HasPrefix(string(out), "ok: ") {
				t.Errorf("health passed but printed %q", out)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the HEALTHCHECK command %q never passed: %v\n%s", health, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
