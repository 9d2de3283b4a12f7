package openapitest

import (
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestSpecIsOpenAPI31 checks the document's structure: the version, the
// info object, that every operation has an id (unique) and responses
// with descriptions, that every $ref resolves, that path parameters match
// the templates, that security requirements and tags are declared, and
// that every schema compiles as JSON Schema 2020-12.
func TestSpecIsOpenAPI31(t *testing.T) {
	s := load(t)
	if v, _ := s.doc["openapi"].(string); !regexp.MustCompile(`^3\.1\.\d+$`).MatchString(v) {
		t.Errorf("openapi is %q, want 3.1.x", v)
	}
	info, _ := s.doc["info"].(map[string]any)
	for _, f := range []string{"title", "version"} {
		if v, _ := info[f].(string); v == "" {
			t.Errorf("info.%s is missing", f)
		}
	}

	// Every reference resolves.
	var walk func(ptr string, v any)
	walk = func(ptr string, v any) {
		switch n := v.(type) {
		case map[string]any:
			if ref, ok := n["$ref"]; ok {
				r, _ := ref.(string)
				if !strings.HasPrefix(r, "#/") {
					t.Errorf("#%s: $ref %q is not a local reference", ptr, r)
				} else if _, ok := s.at(r[1:]); !ok {
					t.Errorf("#%s: $ref %q resolves to nothing", ptr, r)
				}
			}
			for k, c := range n {
				walk(ptr+pointer(k), c)
			}
		case []any:
			for i, c := range n {
				walk(ptr+"/"+strconv.Itoa(i), c)
			}
		}
	}
	walk("", s.doc)

	schemes, _ := s.doc["components"].(map[string]any)["securitySchemes"].(map[string]any)
	declaredTags := map[string]bool{}
	for _, tg := range s.doc["tags"].([]any) {
		declaredTags[tg.(map[string]any)["name"].(string)] = true
	}
	ids := map[string]string{}
	paramRe := regexp.MustCompile(`\{([^}/]+)\}`)
	if len(s.paths()) == 0 {
		t.Fatal("no paths")
	}
	for _, path := range s.paths() {
		if !strings.HasPrefix(path, "/") {
			t.Errorf("path %q does not start with /", path)
		}
		item, itemPtr, err := s.deref(pointer("paths", path))
		if err != nil {
			t.Errorf("path %s: %v", path, err)
			continue
		}
		ops := s.operations(path)
		if len(ops) == 0 {
			t.Errorf("path %s has no operations", path)
		}
		var inTemplate []string
		for _, m := range paramRe.FindAllStringSubmatch(path, -1) {
			inTemplate = append(inTemplate, m[1])
		}
		sort.Strings(inTemplate)
		for _, method := range ops {
			where := strings.ToUpper(method) + " " + path
			opPtr := itemPtr + pointer(method)
			op, ok := item[method].(map[string]any)
			if !ok {
				t.Errorf("%s: the operation is not an object (an operation cannot be a $ref)", where)
				continue
			}
			if id, _ := op["operationId"].(string); id == "" {
				t.Errorf("%s has no operationId", where)
			} else if other, dup := ids[id]; dup {
				t.Errorf("%s and %s share the operationId %q", where, other, id)
			} else {
				ids[id] = where
			}
			if d, _ := op["summary"].(string); d == "" {
				t.Errorf("%s has no summary", where)
			}
			// Path parameters: exactly those of the template, required.
			var inParams []string
			var params []string
			if ps, ok := item["parameters"].([]any); ok {
				for i := range ps {
					params = append(params, itemPtr+pointer("parameters", strconv.Itoa(i)))
				}
			}
			if ps, ok := op["parameters"].([]any); ok {
				for i := range ps {
					params = append(params, opPtr+pointer("parameters", strconv.Itoa(i)))
				}
			}
			for _, pp := range params {
				p, pptr, err := s.deref(pp)
				if err != nil {
					t.Errorf("%s: parameter: %v", where, err)
					continue
				}
				name, _ := p["name"].(string)
				in, _ := p["in"].(string)
				if name == "" || !slices.Contains([]string{"path", "query", "header", "cookie"}, in) {
					t.Errorf("%s: parameter #%s needs a name and in: path, query, header or cookie", where, pptr)
				}
				if _, ok := p["schema"]; !ok {
					t.Errorf("%s: parameter %s has no schema", where, name)
				} else if _, err := s.schema(pptr + "/schema"); err != nil {
					t.Errorf("%s: parameter %s: %v", where, name, err)
				}
				if in == "path" {
					inParams = append(inParams, name)
					if req, _ := p["required"].(bool); !req {
						t.Errorf("%s: path parameter %s must be required", where, name)
					}
				}
			}
			sort.Strings(inParams)
			if !slices.Equal(inParams, inTemplate) {
				t.Errorf("%s: path parameters %v, the template has %v", where, inParams, inTemplate)
			}
			// Responses.
			resps, _ := op["responses"].(map[string]any)
			if len(resps) == 0 {
				t.Errorf("%s has no responses", where)
			}
			for code := range resps {
				if !regexp.MustCompile(`^([1-5][0-9][0-9]|default)$`).MatchString(code) {
					t.Errorf("%s: response key %q is not a status code", where, code)
				}
				r, rptr, err := s.deref(opPtr + pointer("responses", code))
				if err != nil {
					t.Errorf("%s %s: %v", where, code, err)
					continue
				}
				if d, _ := r["description"].(string); d == "" {
					t.Errorf("%s %s has no description", where, code)
				}
				content, _ := r["content"].(map[string]any)
				for mt := range content {
					if _, ok := content[mt].(map[string]any)["schema"]; !ok {
						continue
					}
					if _, err := s.schema(rptr + pointer("content", mt, "schema")); err != nil {
						t.Errorf("%s %s %s: %v", where, code, mt, err)
					}
				}
			}
			if _, ok := op["requestBody"]; ok {
				b, bptr, err := s.deref(opPtr + "/requestBody")
				if err != nil {
					t.Errorf("%s: requestBody: %v", where, err)
				} else {
					for mt := range b["content"].(map[string]any) {
						if _, err := s.schema(bptr + pointer("content", mt, "schema")); err != nil {
							t.Errorf("%s request %s: %v", where, mt, err)
						}
					}
				}
			}
			// Security requirements name declared schemes.
			if sec, ok := op["security"].([]any); ok {
				for _, req := range sec {
					for name := range req.(map[string]any) {
						if _, ok := schemes[name]; !ok {
							t.Errorf("%s: security scheme %q is not declared", where, name)
						}
					}
				}
			}
			tags, _ := op["tags"].([]any)
			if len(tags) == 0 {
				t.Errorf("%s has no tag", where)
			}
			for _, tg := range tags {
				if !declaredTags[tg.(string)] {
					t.Errorf("%s: tag %q is not declared", where, tg)
				}
			}
		}
	}

	// Every component schema compiles.
	schemas, _ := s.doc["components"].(map[string]any)["schemas"].(map[string]any)
	if len(schemas) == 0 {
		t.Error("no component schemas")
	}
	for name := range schemas {
		if _, err := s.schema(pointer("components", "schemas", name)); err != nil {
			t.Errorf("schema %s: %v", name, err)
		}
	}
}
