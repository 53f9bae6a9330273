package apiv1

import _ "embed" // the OpenAPI document

// OpenAPI is the OpenAPI 3.1 document of the admin API (openapi.yaml in this package), which the
// server serves at GET /api/v1/openapi.yaml. A test in internal/api holds it to the route table
// and to the types of this package.
//
//go:embed openapi.yaml
var OpenAPI []byte

// MediaYAML is the media type of the OpenAPI document (RFC 9512).
const MediaYAML = "application/yaml"
