package openapitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/relayhq/relay/docs"
)

// methods are the operation fields of an OpenAPI path item.
var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// specURL names docs/openapi.yaml as a JSON Schema resource: OpenAPI 3.1
// schemas are JSON Schema 2020-12, so compiling a location inside the
// whole document resolves their #/components/schemas/... references.
const specURL = "https://relay.invalid/openapi.json"

// spec is docs/openapi.yaml, decoded once.
type spec struct {
	doc      map[string]any // JSON values as jsonschema decodes them (numbers are json.Number)
	compiler *jsonschema.Compiler
	mu       sync.Mutex
	schemas  map[string]*jsonschema.Schema // by JSON pointer
}

var (
	loadOnce sync.Once
	loaded   *spec
	loadErr  error
)

// load decodes the embedded document: YAML to JSON (which fails on a
// mapping key that is not a string), then to the values jsonschema works
// on.
func load(t *testing.T) *spec {
	t.Helper()
	loadOnce.Do(func() {
		var y any
		if loadErr = yaml.Unmarshal(docs.OpenAPI, &y); loadErr != nil {
			return
		}
		var j []byte
		if j, loadErr = json.Marshal(y); loadErr != nil {
			loadErr = fmt.Errorf("the document is not JSON-compatible (a mapping key that is not a string?): %w", loadErr)
			return
		}
		var v any
		if v, loadErr = jsonschema.UnmarshalJSON(bytes.NewReader(j)); loadErr != nil {
			return
		}
		doc, ok := v.(map[string]any)
		if !ok {
			loadErr = fmt.Errorf("the document is not a mapping")
			return
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		if loadErr = c.AddResource(specURL, doc); loadErr != nil {
			return
		}
		loaded = &spec{doc: doc, compiler: c, schemas: map[string]*jsonschema.Schema{}}
	})
	if loadErr != nil {
		t.Fatalf("docs/openapi.yaml: %v", loadErr)
	}
	return loaded
}

// escape escapes one JSON pointer token.
func escape(tok string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

// pointer joins tokens into a JSON pointer.
func pointer(toks ...string) string {
	var b strings.Builder
	for _, t := range toks {
		b.WriteString("/" + escape(t))
	}
	return b.String()
}

// at returns the value at a JSON pointer ("" is the document).
func (s *spec) at(ptr string) (any, bool) {
	var v any = s.doc
	if ptr == "" {
		return v, true
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false
	}
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch n := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = n[tok]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n) {
				return nil, false
			}
			v = n[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// deref follows $ref from the object at ptr and returns the object it
// ends at, with its pointer.
func (s *spec) deref(ptr string) (map[string]any, string, error) {
	for range 10 {
		v, ok := s.at(ptr)
		if !ok {
			return nil, "", fmt.Errorf("nothing at #%s", ptr)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, "", fmt.Errorf("#%s is not an object", ptr)
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return m, ptr, nil
		}
		if !strings.HasPrefix(ref, "#") {
			return nil, "", fmt.Errorf("#%s: only local references are used: %s", ptr, ref)
		}
		ptr = ref[1:]
	}
	return nil, "", fmt.Errorf("#%s: reference loop", ptr)
}

// schema compiles the schema at ptr.
func (s *spec) schema(ptr string) (*jsonschema.Schema, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch, ok := s.schemas[ptr]; ok {
		return sch, nil
	}
	sch, err := s.compiler.Compile(specURL + "#" + ptr)
	if err != nil {
		return nil, err
	}
	s.schemas[ptr] = sch
	return sch, nil
}

// paths returns the document's paths, sorted.
func (s *spec) paths() []string {
	ps, _ := s.doc["paths"].(map[string]any)
	var out []string
	for p := range ps {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// operations returns the methods (lower case) path has operations for.
func (s *spec) operations(path string) []string {
	item, _, err := s.deref(pointer("paths", path))
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range methods {
		if _, ok := item[m]; ok {
			out = append(out, m)
		}
	}
	return out
}

// hasOperation reports whether path has an operation for method.
func (s *spec) hasOperation(path, method string) bool {
	return slices.Contains(s.operations(path), strings.ToLower(method))
}

// template turns an OpenAPI path template into a regexp matching the
// request paths it describes (a parameter is one path segment).
func template(path string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i, part := range regexp.MustCompile(`\{[^}/]+\}`).Split(path, -1) {
		if i > 0 {
			b.WriteString("[^/]+")
		}
		b.WriteString(regexp.QuoteMeta(part))
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// match returns the spec path describing a request path: a literal one
// before a template.
func (s *spec) match(reqPath string) (string, bool) {
	var tmpl string
	for _, p := range s.paths() {
		if p == reqPath {
			return p, true
		}
		if strings.Contains(p, "{") && template(p).MatchString(reqPath) {
			tmpl = p
		}
	}
	return tmpl, tmpl != ""
}
