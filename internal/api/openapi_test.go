package api_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/interlock-dev/interlock/apiv1"
)

// TestServesOpenAPI: GET /api/v1/openapi.yaml answers the document of the source, as YAML.
func TestServesOpenAPI(t *testing.T) {
	s := boot(t)
	r := s.do(t, req{method: "GET", path: "/api/v1/openapi.yaml", token: s.reader}).must(t, http.StatusOK, nil)
	if ct := r.header.Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("Content-Type %q", ct)
	}
	if len(apiv1.OpenAPI) == 0 || !bytes.Equal(r.body, apiv1.OpenAPI) {
		t.Errorf("served %d bytes, want the %d of apiv1.OpenAPI", len(r.body), len(apiv1.OpenAPI))
	}
	s.do(t, req{method: "GET", path: "/api/v1/openapi.yaml?x=1", token: s.reader}).apiError(t, http.StatusBadRequest, "invalid_argument")
}
