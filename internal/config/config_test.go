package config

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "interlock.json")
	if err := os.WriteFile(file, []byte(`{"http": "127.0.0.1:1111", "data": "/from-file", "logLevel": "debug"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file, "--http", "127.0.0.1:3333"},
		env(map[string]string{"INTERLOCK_HTTP": "127.0.0.1:2222", "INTERLOCK_DATA": "/from-env", "INTERLOCK_ADMIN_TOKEN": "secret"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP != "127.0.0.1:3333" || cfg.Data != "/from-env" || cfg.LogLevel != "debug" || cfg.AdminToken != "secret" {
		t.Fatalf("precedence: %+v", cfg)
	}
}

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("got %+v, want %+v", cfg, Default())
	}
}

func TestLoadRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad http", []string{"--http", "nope"}, nil, "http"},
		{"replicas embedded", []string{"--replicas", "3"}, nil, "use --nats-url"},
		{"replicas range", []string{"--nats-url", "nats://a:4222", "--replicas", "9"}, nil, "between 1 and 5"},
		{"bad url", []string{"--nats-url", "http://x"}, nil, "nats://"},
		{"bad env number", nil, map[string]string{"INTERLOCK_REPLICAS": "x"}, "INTERLOCK_REPLICAS"},
		{"bad level", []string{"--log-level", "loud"}, nil, "log-level"},
		{"unknown flag", []string{"--nope"}, nil, "unknown flag: --nope"},
		{"stray argument", []string{"extra"}, nil, "unexpected argument"},
		{"creds without url", []string{"--nats-creds", "x.creds"}, nil, "only with --nats-url"},
		{"bad public url", []string{"--public-url", "flags.example.com"}, nil, "public-url"},
		{"negative rate", []string{"--ofrep-rate-limit", "-1"}, nil, "ofrep-rate-limit"},
		{"bad burst env", nil, map[string]string{"INTERLOCK_OFREP_RATE_BURST": "many"}, "INTERLOCK_OFREP_RATE_BURST"},
		{"bad cors origin", []string{"--cors-origins", "app.example.com"}, nil, "cors-origins"},
		{"bad public read", nil, map[string]string{"INTERLOCK_PUBLIC_READ": "sometimes"}, "INTERLOCK_PUBLIC_READ"},
		{"bad metrics public", []string{"--metrics-public=maybe"}, nil, "metrics-public"},
		{"bad metrics public env", nil, map[string]string{"INTERLOCK_METRICS_PUBLIC": "often"}, "INTERLOCK_METRICS_PUBLIC"},
		{"tls cert without key", []string{"--tls-cert", "c.pem"}, nil, "both or neither"},
		{"tls key without cert", nil, map[string]string{"INTERLOCK_TLS_KEY": "k.pem"}, "both or neither"},
		{"nats cert without key", []string{"--nats-cert", "c.pem"}, nil, "nats-cert, nats-key"},
		{"nats ca embedded", []string{"--nats-ca", "ca.pem"}, nil, "only with --nats-url"},
		{"nats cert without listener", []string{"--nats-cert", "c.pem", "--nats-key", "k.pem", "--nats-listen", "none"}, nil, "does not listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, env(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestLoadOFREPSettings(t *testing.T) {
	cfg, err := Load([]string{"--ofrep-rate-limit", "50", "--public-url", "https://flags.example.com"},
		env(map[string]string{"INTERLOCK_OFREP_RATE_BURST": "20"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OFREPRateLimit != 50 || cfg.OFREPRateBurst != 20 || cfg.PublicURL != "https://flags.example.com" {
		t.Fatalf("%+v", cfg)
	}
}

func TestLoadFileUnknownField(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(file, []byte(`{"htp": "x"}`), 0o600)
	if _, err := Load([]string{"--config", file}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "htp") {
		t.Fatalf("got %v", err)
	}
}

func TestGuardSources(t *testing.T) {
	getenv := func(k string) string {
		if k == "INTERLOCK_GUARD_SOURCES" {
			return "http://127.0.0.1:8081/, https://prometheus.internal:9090"
		}
		return ""
	}
	cfg, err := Load(nil, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"http://127.0.0.1:8081/", "https://prometheus.internal:9090"}; !reflect.DeepEqual(cfg.GuardSources, want) {
		t.Fatalf("guard sources %q, want %q", cfg.GuardSources, want)
	}
	if _, err := Load([]string{"--guard-sources", "ftp://x/"}, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), "guard-sources") {
		t.Fatalf("an ftp prefix: %v", err)
	}
}

func TestCriticalEnvironments(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		file string
		want []string
	}{
		{name: "flag", args: []string{"--critical-environments", "production, eu-prod"}, want: []string{"production", "eu-prod"}},
		{name: "environment", env: map[string]string{"INTERLOCK_CRITICAL_ENVIRONMENTS": "production"}, want: []string{"production"}},
		{name: "file", file: `{"criticalEnvironments": ["production", "staging"]}`, want: []string{"production", "staging"}},
		{name: "flag over environment", args: []string{"--critical-environments", "staging"},
			env: map[string]string{"INTERLOCK_CRITICAL_ENVIRONMENTS": "production"}, want: []string{"staging"}},
		{name: "none", want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				file := filepath.Join(t.TempDir(), "c.json")
				if err := os.WriteFile(file, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append([]string{"--config", file}, args...)
			}
			cfg, err := Load(args, env(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.CriticalEnvironments, tc.want) {
				t.Fatalf("critical environments %q, want %q", cfg.CriticalEnvironments, tc.want)
			}
		})
	}
	if _, err := Load([]string{"--critical-environments", "prod,no spaces"}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "critical-environments") {
		t.Fatalf("a bad environment name: %v", err)
	}
}

func TestLoadReadModeAndCORS(t *testing.T) {
	file := filepath.Join(t.TempDir(), "interlock.json")
	if err := os.WriteFile(file, []byte(`{"publicRead": true, "corsOrigins": ["https://a.example.com"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file}, env(nil), io.Discard)
	if err != nil || !cfg.PublicRead || !reflect.DeepEqual(cfg.CORSOrigins, []string{"https://a.example.com"}) {
		t.Fatalf("from the file: %+v, %v", cfg, err)
	}
	cfg, err = Load([]string{"--cors-origins", "https://b.example.com, http://localhost:3000"},
		env(map[string]string{"INTERLOCK_PUBLIC_READ": "true"}), io.Discard)
	if err != nil || !cfg.PublicRead || !reflect.DeepEqual(cfg.CORSOrigins, []string{"https://b.example.com", "http://localhost:3000"}) {
		t.Fatalf("from flags and environment: %+v, %v", cfg, err)
	}
	if cfg, err := Load(nil, env(nil), io.Discard); err != nil || cfg.PublicRead || cfg.CORSOrigins != nil {
		t.Fatalf("defaults: reads need a token and no CORS; got %+v, %v", cfg, err)
	}
}

// TestMetricsPublic: /metrics needs a token unless the flag, the environment or the file opens it;
// a flag overrides the environment, which overrides the file.
func TestMetricsPublic(t *testing.T) {
	file := filepath.Join(t.TempDir(), "interlock.json")
	if err := os.WriteFile(file, []byte(`{"metricsPublic": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want bool
	}{
		{"default", nil, nil, false},
		{"flag", []string{"--metrics-public"}, nil, true},
		{"environment", nil, map[string]string{"INTERLOCK_METRICS_PUBLIC": "true"}, true},
		{"file", []string{"--config", file}, nil, true},
		{"environment over file", []string{"--config", file}, map[string]string{"INTERLOCK_METRICS_PUBLIC": "false"}, false},
		{"flag over environment", []string{"--metrics-public=false"}, map[string]string{"INTERLOCK_METRICS_PUBLIC": "true"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(tc.args, env(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MetricsPublic != tc.want {
				t.Fatalf("metrics public %v, want %v", cfg.MetricsPublic, tc.want)
			}
		})
	}
}

func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--tls-cert", notPEM, "--tls-key", notPEM}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.TLS(); err == nil || !strings.Contains(err.Error(), "tls-cert "+notPEM) {
		t.Fatalf("TLS() of a file that is no certificate: %v", err)
	}
	cfg, err = Load([]string{"--nats-url", "tls://127.0.0.1:4222", "--signing-key", "k.pem", "--nats-ca", notPEM}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.TLS(); err == nil || !strings.Contains(err.Error(), "nats-ca "+notPEM) {
		t.Fatalf("TLS() of a CA file without certificates: %v", err)
	}
	cfg, err = Load(nil, env(map[string]string{"INTERLOCK_NATS_CERT": "c.pem", "INTERLOCK_NATS_KEY": "k.pem"}), io.Discard)
	if err != nil || cfg.NATSCert != "c.pem" || cfg.NATSKey != "k.pem" {
		t.Fatalf("nats cert from the environment: %+v, %v", cfg, err)
	}
	if _, err := cfg.TLS(); err == nil || !strings.Contains(err.Error(), "nats-cert c.pem") {
		t.Fatalf("TLS() of missing files: %v", err)
	}
}
