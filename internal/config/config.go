// Package config reads the configuration of `interlock serve` from flags, environment variables
// and an optional JSON file, in that order of precedence. Only cmd calls it.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/edge"
	"github.com/spf13/pflag"
)

// Config is everything `interlock serve` can be told.
type Config struct {
	// Data is the directory of the embedded NATS server's JetStream files.
	Data string `json:"data"`
	// HTTP is the address the API, OFREP and dashboard listen on.
	HTTP string `json:"http"`
	// NATSURL, when set, is a comma-separated list of an existing NATS cluster's URLs; no
	// embedded server is started.
	NATSURL string `json:"natsUrl"`
	// NATSCreds is a NATS credentials file for NATSURL.
	NATSCreds string `json:"natsCreds"`
	// NATSCA is a PEM file of the certificate authorities that verify the NATS cluster's server
	// certificates (with NATSURL; the system's roots when empty).
	NATSCA string `json:"natsCa"`
	// NATSCert and NATSKey are PEM files of this process's certificate on NATS: the client
	// certificate presented to the cluster with NATSURL, or the embedded server's listener
	// certificate (its clients then connect with tls://).
	NATSCert string `json:"natsCert"`
	NATSKey  string `json:"natsKey"`
	// TLSCert and TLSKey are PEM files of the HTTP server's certificate: with them it serves
	// HTTPS only.
	TLSCert string `json:"tlsCert"`
	TLSKey  string `json:"tlsKey"`
	// NATSListen is where the embedded server accepts other processes ("" for in-process only).
	NATSListen string `json:"natsListen"`
	// Replicas of the event stream (1 embedded; 3 in a cluster).
	Replicas int `json:"replicas"`
	// NoSync turns off the fsync of every write on the embedded server. Acknowledged events may
	// then be lost on power failure; for tests and benchmarks only.
	NoSync bool `json:"noSync"`
	// DefaultEnvironment is the environment OFREP evaluates in when neither the token's scope nor
	// the X-Interlock-Environment header names one.
	DefaultEnvironment string `json:"defaultEnvironment"`
	// PublicURL is the base URL clients reach this server at (for links the server hands out,
	// such as OFREP's event stream); relative links when empty.
	PublicURL string `json:"publicUrl"`
	// APIRateLimit is how many admin API requests per second each token may make (0: no limit),
	// with bursts of APIRateBurst.
	APIRateLimit float64 `json:"apiRateLimit"`
	APIRateBurst int     `json:"apiRateBurst"`
	// OFREPRateLimit is how many OFREP evaluations per second each token may make (0: no limit),
	// with bursts of OFREPRateBurst.
	OFREPRateLimit float64 `json:"ofrepRateLimit"`
	OFREPRateBurst int     `json:"ofrepRateBurst"`
	// GuardSources, when not empty, are the URL prefixes a rollout's or a valve's metric source
	// may have (comma-separated on the command line): the guard fetches nothing else. When
	// empty, it fetches only from loopback addresses.
	GuardSources []string `json:"guardSources"`
	// SigningKey is a PEM file holding the Ed25519 private key (PKCS #8) every event is signed
	// with. Replicas share it. When empty, an embedded server uses <data>/signing/key.pem,
	// generated at first start; with NATSURL it is required.
	SigningKey string `json:"signingKey"`
	// VerifyKeys are PEM files of earlier signing keys (public or private), which events may
	// still be signed with after a rotation (comma-separated on the command line).
	VerifyKeys []string `json:"verifyKeys"`
	// CriticalEnvironments are the environments where the dashboard's kill switch asks the
	// person to type the flag's key before it kills (comma-separated on the command line).
	CriticalEnvironments []string `json:"criticalEnvironments"`
	// ReadyMaxLag is how far behind the event store the projections may fall before /readyz
	// answers 503.
	ReadyMaxLag events.Duration `json:"readyMaxLag"`
	// PublicRead lets anyone read the admin API without a token (flags, history, audit,
	// segments, subscribers, the event feed). Off by default: reads need a token of a role that
	// may read, in its environment scope.
	PublicRead bool `json:"publicRead"`
	// MetricsPublic lets anyone read GET /metrics without a token, for a scraper that has none.
	// Off by default: /metrics is a read like any other, and needs a token of a role that may
	// read (or PublicRead).
	MetricsPublic bool `json:"metricsPublic"`
	// CORSOrigins are the origins a browser app may call OFREP and the event feeds from
	// (comma-separated on the command line); none by default.
	CORSOrigins []string `json:"corsOrigins"`
	// LogLevel is debug, info, warn or error; LogFormat text or json.
	LogLevel  string `json:"logLevel"`
	LogFormat string `json:"logFormat"`
	// AdminToken comes only from INTERLOCK_ADMIN_TOKEN (never a flag, which `ps` would show, nor a
	// file that might be committed).
	AdminToken string `json:"-"`
}

// Default is the configuration with nothing set.
func Default() Config {
	return Config{
		Data:               ".interlock",
		HTTP:               "127.0.0.1:8080",
		NATSListen:         "127.0.0.1:4222",
		Replicas:           1,
		DefaultEnvironment: "production",
		ReadyMaxLag:        events.Duration(5 * time.Second),
		APIRateLimit:       100,
		APIRateBurst:       200,
		LogLevel:           "info",
		LogFormat:          "text",
	}
}

// ErrHelp is returned by [Load] when the arguments ask for help; the usage has been written.
var ErrHelp = pflag.ErrHelp

// Flags are the command-line flags of `interlock serve`, registered on a flag set by [NewFlags].
type Flags struct {
	fs         *pflag.FlagSet
	configFile *string
}

// NewFlags returns the flags of `interlock serve`, with Default's values as defaults
// (INTERLOCK_CONFIG, read through getenv, for --config). Once a command line is parsed with them
// ([Flags.FlagSet]), [Flags.Load] builds the configuration.
func NewFlags(getenv func(string) string) *Flags {
	cfg := Default()
	fs := pflag.NewFlagSet("interlock serve", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := &Flags{fs: fs}
	f.configFile = fs.String("config", getenv("INTERLOCK_CONFIG"), "JSON configuration `file` (env INTERLOCK_CONFIG)")
	fs.String("data", cfg.Data, "`dir`ectory of the embedded NATS server's data (env INTERLOCK_DATA)")
	fs.String("http", cfg.HTTP, "HTTP listen `address` (env INTERLOCK_HTTP)")
	fs.String("nats-url", "", "use this NATS cluster (comma-separated `urls`) instead of an embedded server (env INTERLOCK_NATS_URL)")
	fs.String("nats-creds", "", "NATS credentials `file` for --nats-url (env INTERLOCK_NATS_CREDS)")
	fs.String("nats-ca", "", "PEM `file` of the CAs that verify the --nats-url servers; default the system's (env INTERLOCK_NATS_CA)")
	fs.String("nats-cert", "", "PEM `file` of the NATS certificate: the client's with --nats-url, else the embedded listener's (env INTERLOCK_NATS_CERT)")
	fs.String("nats-key", "", "PEM `file` of the private key of --nats-cert (env INTERLOCK_NATS_KEY)")
	fs.String("tls-cert", "", "PEM `file` of the HTTP server's certificate (chain); with --tls-key it serves HTTPS (env INTERLOCK_TLS_CERT)")
	fs.String("tls-key", "", "PEM `file` of the private key of --tls-cert (env INTERLOCK_TLS_KEY)")
	fs.String("nats-listen", cfg.NATSListen, "`address` where the embedded NATS server accepts clients; empty for in-process only (env INTERLOCK_NATS_LISTEN)")
	fs.Int("replicas", cfg.Replicas, "`n` replicas of the event stream (env INTERLOCK_REPLICAS)")
	fs.String("default-environment", cfg.DefaultEnvironment, "`env`ironment OFREP evaluates in when the token and request name none (env INTERLOCK_DEFAULT_ENVIRONMENT)")
	fs.String("public-url", "", "base `url` clients reach this server at, for links it hands out (env INTERLOCK_PUBLIC_URL)")
	fs.Float64("api-rate-limit", cfg.APIRateLimit, "admin API requests per second per token, 0 for no limit (env INTERLOCK_API_RATE_LIMIT)")
	fs.Int("api-rate-burst", cfg.APIRateBurst, "admin API requests a token may make at once above the rate (env INTERLOCK_API_RATE_BURST)")
	fs.Float64("ofrep-rate-limit", 0, "OFREP evaluations per second per token, 0 for no limit (env INTERLOCK_OFREP_RATE_LIMIT)")
	fs.Int("ofrep-rate-burst", 0, "OFREP requests a token may make at once above the rate (env INTERLOCK_OFREP_RATE_BURST)")
	fs.String("guard-sources", "", "comma-separated URL `prefixes` the guard may read metrics from; empty for loopback addresses only (env INTERLOCK_GUARD_SOURCES)")
	fs.String("signing-key", "", "PEM `file` of the Ed25519 key events are signed with; default <data>/signing/key.pem, generated (env INTERLOCK_SIGNING_KEY_FILE)")
	fs.String("verify-keys", "", "comma-separated PEM `files` of earlier signing keys that still verify (env INTERLOCK_VERIFY_KEYS)")
	fs.String("critical-environments", "", "comma-separated `environments` where the dashboard's kill switch asks to type the flag key (env INTERLOCK_CRITICAL_ENVIRONMENTS)")
	fs.String("cors-origins", "", "comma-separated `origins` allowed to call OFREP and the event feeds from a browser (env INTERLOCK_CORS_ORIGINS)")
	fs.Duration("ready-max-lag", time.Duration(cfg.ReadyMaxLag), "how far behind the event store the projections may fall before /readyz answers 503 (env INTERLOCK_READY_MAX_LAG)")
	fs.Bool("public-read", false, "let anyone read the admin API without a token (env INTERLOCK_PUBLIC_READ)")
	fs.Bool("metrics-public", false, "let anyone read /metrics without a token (env INTERLOCK_METRICS_PUBLIC)")
	fs.Bool("no-sync", false, "do not fsync every write (unsafe: for tests and benchmarks) (env INTERLOCK_NO_SYNC)")
	fs.String("log-level", cfg.LogLevel, "debug, info, warn or error (env INTERLOCK_LOG_LEVEL)")
	fs.String("log-format", cfg.LogFormat, "text or json (env INTERLOCK_LOG_FORMAT)")
	return f
}

// FlagSet is the set the flags are registered on, to parse a command line with (or to add to
// another set that parses it).
func (f *Flags) FlagSet() *pflag.FlagSet { return f.fs }

// Help writes the help of `interlock serve`: what it does, then every flag with its default.
func (f *Flags) Help(w io.Writer) {
	fmt.Fprintf(w, "Usage: interlock serve [flags]\n\nRuns the Interlock server. With no flags it starts an embedded NATS server storing under ./.interlock\nand serves HTTP on 127.0.0.1:8080. The bootstrap admin token comes from INTERLOCK_ADMIN_TOKEN or\nis generated at first start and printed once.\n\nFlags:\n%s", f.fs.FlagUsages())
}

// Load builds the configuration of `interlock serve` from its arguments (without "serve"), the
// environment (INTERLOCK_* variables, read through getenv) and the JSON file named by --config or
// INTERLOCK_CONFIG. Flags win over the environment, which wins over the file. Usage goes to out
// when args ask for help ([ErrHelp]).
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	f := NewFlags(getenv)
	fs := f.fs
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			f.Help(out)
		}
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return f.Load(getenv)
}

// Load builds the configuration from the flags given on the command line, the environment
// (INTERLOCK_* variables, read through getenv) and the JSON file named by --config or
// INTERLOCK_CONFIG. Flags win over the environment, which wins over the file.
func (f *Flags) Load(getenv func(string) string) (Config, error) {
	cfg := Default()
	fs, configFile := f.fs, f.configFile
	if *configFile != "" {
		if err := cfg.loadFile(*configFile); err != nil {
			return Config{}, err
		}
	}
	if err := cfg.loadEnv(getenv); err != nil {
		return Config{}, err
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Changed {
			return
		}
		if err := cfg.set(f.Name, f.Value.String()); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", f.Name, err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	cfg.AdminToken = getenv("INTERLOCK_ADMIN_TOKEN")
	return cfg, cfg.Validate()
}

func (c *Config) loadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(io.LimitReader(f, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

var envNames = map[string]string{
	"data": "INTERLOCK_DATA", "http": "INTERLOCK_HTTP", "nats-url": "INTERLOCK_NATS_URL",
	"nats-creds": "INTERLOCK_NATS_CREDS", "nats-listen": "INTERLOCK_NATS_LISTEN",
	"nats-ca": "INTERLOCK_NATS_CA", "nats-cert": "INTERLOCK_NATS_CERT", "nats-key": "INTERLOCK_NATS_KEY",
	"tls-cert": "INTERLOCK_TLS_CERT", "tls-key": "INTERLOCK_TLS_KEY",
	"replicas": "INTERLOCK_REPLICAS", "no-sync": "INTERLOCK_NO_SYNC",
	"log-level": "INTERLOCK_LOG_LEVEL", "log-format": "INTERLOCK_LOG_FORMAT",
	"default-environment": "INTERLOCK_DEFAULT_ENVIRONMENT",
	"public-url":          "INTERLOCK_PUBLIC_URL", "ofrep-rate-limit": "INTERLOCK_OFREP_RATE_LIMIT",
	"ofrep-rate-burst": "INTERLOCK_OFREP_RATE_BURST", "guard-sources": "INTERLOCK_GUARD_SOURCES",
	"signing-key": "INTERLOCK_SIGNING_KEY_FILE", "verify-keys": "INTERLOCK_VERIFY_KEYS",
	"public-read": "INTERLOCK_PUBLIC_READ", "api-rate-limit": "INTERLOCK_API_RATE_LIMIT", "api-rate-burst": "INTERLOCK_API_RATE_BURST", "ready-max-lag": "INTERLOCK_READY_MAX_LAG", "cors-origins": "INTERLOCK_CORS_ORIGINS",
	"critical-environments": "INTERLOCK_CRITICAL_ENVIRONMENTS", "metrics-public": "INTERLOCK_METRICS_PUBLIC",
}

func (c *Config) loadEnv(getenv func(string) string) error {
	var errs []error
	for name, env := range envNames {
		v, ok := lookup(getenv, env)
		if !ok {
			continue
		}
		if err := c.set(name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", env, err))
		}
	}
	return errors.Join(errs...)
}

// lookup treats an unset and an empty variable alike, except INTERLOCK_NATS_LISTEN, where empty
// is meaningful; getenv cannot tell them apart, so "none" also means in-process only.
func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func (c *Config) set(name, v string) error {
	switch name {
	case "data":
		c.Data = v
	case "http":
		c.HTTP = v
	case "nats-url":
		c.NATSURL = v
	case "nats-creds":
		c.NATSCreds = v
	case "nats-listen":
		c.NATSListen = v
	case "nats-ca":
		c.NATSCA = v
	case "nats-cert":
		c.NATSCert = v
	case "nats-key":
		c.NATSKey = v
	case "tls-cert":
		c.TLSCert = v
	case "tls-key":
		c.TLSKey = v
	case "replicas":
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		c.Replicas = n
	case "no-sync":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		c.NoSync = b
	case "cors-origins":
		c.CORSOrigins = nil
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.CORSOrigins = append(c.CORSOrigins, o)
			}
		}
	case "ready-max-lag":
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 5s", v)
		}
		c.ReadyMaxLag = events.Duration(d)
	case "public-read":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		c.PublicRead = b
	case "metrics-public":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		c.MetricsPublic = b
	case "default-environment":
		c.DefaultEnvironment = v
	case "public-url":
		c.PublicURL = v
	case "api-rate-limit":
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		c.APIRateLimit = f
	case "api-rate-burst":
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		c.APIRateBurst = n
	case "ofrep-rate-limit":
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		c.OFREPRateLimit = f
	case "ofrep-rate-burst":
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		c.OFREPRateBurst = n
	case "guard-sources":
		c.GuardSources = nil
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.GuardSources = append(c.GuardSources, p)
			}
		}
	case "signing-key":
		c.SigningKey = v
	case "verify-keys":
		c.VerifyKeys = nil
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.VerifyKeys = append(c.VerifyKeys, p)
			}
		}
	case "critical-environments":
		c.CriticalEnvironments = nil
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				c.CriticalEnvironments = append(c.CriticalEnvironments, e)
			}
		}
	case "log-level":
		c.LogLevel = v
	case "log-format":
		c.LogFormat = v
	}
	return nil
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.NATSURL == "" && c.Data == "" {
		errs = append(errs, errors.New("data: a directory is required for the embedded NATS server"))
	}
	if _, _, err := net.SplitHostPort(c.HTTP); err != nil {
		errs = append(errs, fmt.Errorf("http: %q is not host:port", c.HTTP))
	}
	if c.NATSListen != "" && c.NATSListen != "none" {
		if _, _, err := net.SplitHostPort(c.NATSListen); err != nil {
			errs = append(errs, fmt.Errorf("nats-listen: %q is not host:port", c.NATSListen))
		}
	}
	if c.NATSURL != "" {
		for _, u := range strings.Split(c.NATSURL, ",") {
			if !strings.HasPrefix(strings.TrimSpace(u), "nats://") && !strings.HasPrefix(strings.TrimSpace(u), "tls://") {
				errs = append(errs, fmt.Errorf("nats-url: %q is not a nats:// or tls:// URL", u))
			}
		}
	} else if c.NATSCreds != "" {
		errs = append(errs, errors.New("nats-creds: only with --nats-url"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls-cert, tls-key: give both or neither"))
	}
	if (c.NATSCert == "") != (c.NATSKey == "") {
		errs = append(errs, errors.New("nats-cert, nats-key: give both or neither"))
	}
	if c.NATSURL == "" && c.NATSCA != "" {
		errs = append(errs, errors.New("nats-ca: only with --nats-url (the embedded server does not verify client certificates; its clients present tokens)"))
	}
	if c.NATSURL == "" && c.NATSCert != "" && (c.NATSListen == "" || c.NATSListen == "none") {
		errs = append(errs, errors.New("nats-cert: the embedded server does not listen (--nats-listen none), so it has no listener to secure"))
	}
	if c.NATSURL != "" && c.SigningKey == "" {
		errs = append(errs, errors.New("signing-key: required with --nats-url: every replica signs events with the same key"))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas: %d is not between 1 and 5", c.Replicas))
	}
	if c.NATSURL == "" && c.Replicas != 1 {
		errs = append(errs, fmt.Errorf("replicas: an embedded single server holds 1 replica, not %d; use --nats-url for a cluster", c.Replicas))
	}
	if err := events.ValidateEnvironment(c.DefaultEnvironment); err != nil {
		errs = append(errs, fmt.Errorf("default-environment: %w", err))
	}
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "http://") && !strings.HasPrefix(c.PublicURL, "https://") {
		errs = append(errs, fmt.Errorf("public-url: %q is not an http:// or https:// URL", c.PublicURL))
	}
	if c.OFREPRateLimit < 0 || math.IsNaN(c.OFREPRateLimit) || math.IsInf(c.OFREPRateLimit, 0) {
		errs = append(errs, fmt.Errorf("ofrep-rate-limit: %v is not a rate (0 for no limit)", c.OFREPRateLimit))
	}
	if c.APIRateLimit < 0 || math.IsNaN(c.APIRateLimit) || math.IsInf(c.APIRateLimit, 0) {
		errs = append(errs, fmt.Errorf("api-rate-limit: %v is not a rate (0 for no limit)", c.APIRateLimit))
	}
	if c.APIRateBurst < 0 {
		errs = append(errs, fmt.Errorf("api-rate-burst: %d is negative", c.APIRateBurst))
	}
	if c.OFREPRateBurst < 0 {
		errs = append(errs, fmt.Errorf("ofrep-rate-burst: %d is negative", c.OFREPRateBurst))
	}
	for _, e := range c.CriticalEnvironments {
		if err := events.ValidateEnvironment(e); err != nil {
			errs = append(errs, fmt.Errorf("critical-environments: %w", err))
		}
	}
	for _, p := range c.GuardSources {
		if u, err := url.Parse(p); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("guard-sources: %q is not an http:// or https:// URL prefix", p))
		}
	}
	if err := (edge.Config{CORSOrigins: c.CORSOrigins}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("cors-origins: %w", err))
	}
	if c.ReadyMaxLag <= 0 {
		errs = append(errs, fmt.Errorf("ready-max-lag: %v is not a positive duration", time.Duration(c.ReadyMaxLag)))
	}
	if _, err := c.Level(); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log-format: %q is not text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// Level is the slog level LogLevel names.
func (c Config) Level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log-level: %q is not debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

// Logger builds the process's logger writing to w.
func (c Config) Logger(w io.Writer) *slog.Logger {
	level, _ := c.Level()
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
