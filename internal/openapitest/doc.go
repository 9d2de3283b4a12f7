// Package openapitest checks docs/openapi.yaml against the server: that
// the document is well-formed OpenAPI 3.1, that it describes exactly the
// routes the server mounts, and that real responses of every described
// status match the described headers, media types and schemas. It has
// tests only.
package openapitest
