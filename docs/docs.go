// Package docs embeds the documents the server serves: the OpenAPI
// description of the HTTP API (openapi.yaml), which docs/protocol.md
// explains in prose.
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml, the OpenAPI 3.1 description of the HTTP
// API, served at GET /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
