package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/projections"
)

// CreateFlag creates a flag from Config, validated and normalised. It is disabled unless
// Config.Enabled.
//
// Errors: [ErrExists] if the flag already exists; events.ErrInvalid (naming the condition) when
// a rule uses a segment that does not exist or is archived in Env (see [CreateSegment]).
type CreateFlag struct {
	Meta
	Env, Key string
	Config   events.FlagConfig
}

// Name is "create".
func (CreateFlag) Name() string { return "create" }

func (c CreateFlag) validate(context.Context, *Service) (Command, error) {
	m, cfg, err := validateCreate(c.Meta, c.Env, c.Key, c.Config)
	if err != nil {
		return nil, fmt.Errorf("create %s/%s: %w", c.Env, c.Key, err)
	}
	c.Meta, c.Config = m, cfg
	return c, nil
}

func (c CreateFlag) exec(ctx context.Context, s *Service) (Result, error) {
	return exec(ctx, s, flagKind, flagCommand{
		name: c.Name(), env: c.Env, key: c.Key, meta: c.Meta, create: true,
		decide: func(ctx context.Context, _ *flagEntry) (decision, error) {
			if err := s.checkSegments(ctx, c.Env, &c.Config); err != nil {
				return decision{}, err
			}
			return decision{typ: events.TypeFlagCreated, payload: events.FlagCreated{Flag: c.Config}, cfg: &c.Config}, nil
		},
	})
}

// validateCreate is everything CreateFlag checks before it looks at the stream.
func validateCreate(m Meta, env, key string, cfg events.FlagConfig) (Meta, events.FlagConfig, error) {
	m, err := validateCommand(m, env, key, false)
	if err != nil {
		return Meta{}, events.FlagConfig{}, err
	}
	cfg = cfg.Clone()
	if err := cfg.Validate(); err != nil {
		return Meta{}, events.FlagConfig{}, err
	}
	normalize(&cfg)
	return m, cfg, nil
}

// UpdateFlag applies Patch, a JSON Merge Patch (RFC 7396) object, to the flag's configuration
// document (the JSON of events.FlagConfig) and stores the result if it is valid and differs from
// the current configuration; a patch that changes nothing writes nothing. The read-only fields of
// a flag (key, environment, version, archived, createdAt, updatedAt, updatedBy) and unknown
// fields are refused.
//
// Errors: [ErrNotFound]; [*VersionError] when ExpectedVersion is not 0 and not the flag's
// version; [ErrArchived]; events.ErrInvalid (naming the condition) when the result's rules use a
// segment that does not exist or is archived in Env; [ErrRolloutActive] when it would change the
// defaultServe of a flag whose rollout is running or paused.
type UpdateFlag struct {
	Meta
	Env, Key        string
	ExpectedVersion uint64
	Patch           []byte

	p *patch // Patch, parsed by validate
}

// Name is "update".
func (UpdateFlag) Name() string { return "update" }

func (c UpdateFlag) validate(context.Context, *Service) (Command, error) {
	m, err := validateCommand(c.Meta, c.Env, c.Key, false)
	if err == nil {
		c.p, err = parsePatch(c.Patch)
	}
	if err != nil {
		return nil, fmt.Errorf("update %s/%s: %w", c.Env, c.Key, err)
	}
	c.Meta = m
	return c, nil
}

func (c UpdateFlag) exec(ctx context.Context, s *Service) (Result, error) {
	p := c.p
	return exec(ctx, s, flagKind, flagCommand{
		name: c.Name(), env: c.Env, key: c.Key, meta: c.Meta, expected: c.ExpectedVersion,
		decide: func(ctx context.Context, e *flagEntry) (decision, error) {
			cur := &e.state
			if cur.Archived {
				return decision{}, archived()
			}
			enc, err := encodingOf(e)
			if err != nil {
				return decision{}, err
			}
			next, err := p.apply(cur.FlagConfig, enc)
			if err != nil {
				return decision{}, err
			}
			if next.same {
				return noop, nil
			}
			if err := keepsRolloutServe(cur, &next.cfg); err != nil {
				return decision{}, err
			}
			if err := s.checkSegments(ctx, c.Env, &next.cfg); err != nil {
				return decision{}, err
			}
			return decision{
				typ:  events.TypeFlagUpdated,
				data: updatedData(next.enc.canon, p.compact),
				cfg:  &next.cfg,
				enc:  &next.enc,
			}, nil
		},
	})
}

// EnableFlag turns the flag on; enabling an enabled flag writes nothing.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived].
type EnableFlag struct {
	Meta
	Env, Key        string
	ExpectedVersion uint64
}

// Name is "enable".
func (EnableFlag) Name() string { return "enable" }

func (c EnableFlag) validate(context.Context, *Service) (Command, error) {
	err := target(&c.Meta, c.Name(), c.Env, c.Key, false)
	return c, err
}

func (c EnableFlag) exec(ctx context.Context, s *Service) (Result, error) {
	return exec(ctx, s, flagKind, flagCommand{
		name: c.Name(), env: c.Env, key: c.Key, meta: c.Meta, expected: c.ExpectedVersion,
		decide: func(_ context.Context, e *flagEntry) (decision, error) {
			cur := &e.state
			switch {
			case cur.Archived:
				return decision{}, archived()
			case cur.Enabled:
				return noop, nil
			}
			return decision{typ: events.TypeFlagEnabled, payload: events.FlagEnabled{}}, nil
		},
	})
}

// KillFlag turns the flag off, whatever else is happening to it: it carries no expected version
// and decides again after every concurrent change until it wins or ctx ends (no attempt limit).
// Meta.Reason is required. Killing a disabled flag writes nothing. Archived flags can be killed.
//
// Errors: [ErrNotFound].
type KillFlag struct {
	Meta
	Env, Key string
}

// Name is "kill".
func (KillFlag) Name() string { return "kill" }

func (c KillFlag) validate(context.Context, *Service) (Command, error) {
	err := target(&c.Meta, c.Name(), c.Env, c.Key, true)
	return c, err
}

func (c KillFlag) exec(ctx context.Context, s *Service) (Result, error) {
	return exec(ctx, s, flagKind, flagCommand{
		name: c.Name(), env: c.Env, key: c.Key, meta: c.Meta, persistent: true,
		decide: func(_ context.Context, e *flagEntry) (decision, error) {
			if !e.state.Enabled {
				return noop, nil
			}
			return decision{typ: events.TypeFlagKilled, payload: events.FlagKilled{}}, nil
		},
	})
}

// RestoreFlag brings back the configuration the flag had at version ToVersion, which must be
// between 1 and the current version minus one, as a new version: history is never rewritten.
// Restoring a configuration equal to the current one writes nothing. Note that the configuration
// includes whether the flag is enabled.
//
// Errors: [ErrNotFound]; [*VersionError]; [ErrArchived]; events.ErrInvalid for a ToVersion out
// of range, or a configuration that no longer passes today's validation or whose rules use a
// segment that no longer exists or is archived.
type RestoreFlag struct {
	Meta
	Env, Key                   string
	ToVersion, ExpectedVersion uint64
}

// Name is "restore".
func (RestoreFlag) Name() string { return "restore" }

func (c RestoreFlag) validate(context.Context, *Service) (Command, error) {
	m, err := validateCommand(c.Meta, c.Env, c.Key, false)
	if err == nil && c.ToVersion == 0 {
		err = &events.ValidationError{Field: "toVersion", Message: "versions start at 1"}
	}
	if err != nil {
		return nil, fmt.Errorf("restore %s/%s: %w", c.Env, c.Key, err)
	}
	c.Meta = m
	return c, nil
}

func (c RestoreFlag) exec(ctx context.Context, s *Service) (Result, error) {
	env, key, toVersion := c.Env, c.Key, c.ToVersion
	// The configuration at toVersion is loaded once: history does not change.
	var (
		old    *events.FlagConfig
		oldErr error
	)
	return exec(ctx, s, flagKind, flagCommand{
		name: c.Name(), env: env, key: key, meta: c.Meta, expected: c.ExpectedVersion,
		decide: func(ctx context.Context, e *flagEntry) (decision, error) {
			cur := &e.state
			if cur.Archived {
				return decision{}, archived()
			}
			if toVersion >= cur.Version {
				return decision{}, &events.ValidationError{Field: "toVersion",
					Message: fmt.Sprintf("%d is not an earlier version: the flag is at version %d", toVersion, cur.Version)}
			}
			if oldErr != nil {
				return decision{}, oldErr
			}
			if old == nil {
				cfg, err := s.configAt(ctx, env, key, toVersion)
				if errors.Is(err, events.ErrInvalid) {
					oldErr = err
				}
				if err != nil {
					return decision{}, err
				}
				old = &cfg
			}
			now, err := encodingOf(e)
			if err != nil {
				return decision{}, err
			}
			restored, err := encode(*old)
			if err != nil {
				return decision{}, err
			}
			if bytes.Equal(restored.canon, now.canon) {
				return noop, nil
			}
			if err := keepsRolloutServe(cur, old); err != nil {
				return decision{}, err
			}
			if err := s.checkSegments(ctx, env, old); err != nil {
				return decision{}, err
			}
			return decision{
				typ:     events.TypeFlagRestored,
				payload: events.FlagRestored{FromVersion: toVersion, Flag: *old},
				cfg:     old,
				enc:     &restored,
			}, nil
		},
	})
}

// configAt folds the flag's events up to version and returns its configuration then, validated
// against today's rules and normalised.
func (s *Service) configAt(ctx context.Context, env, key string, version uint64) (events.FlagConfig, error) {
	var f projections.Flag
	q := events.Query{Subjects: []string{events.FlagSubject(env, key)}}
	err := s.store.Read(ctx, q, func(ev events.Event, err error) error {
		if errors.Is(err, events.ErrIntegrity) {
			return nil // not history: the stream's refused messages count for nothing
		}
		if err != nil {
			return fmt.Errorf("event at sequence %d: %w", ev.Sequence, err)
		}
		if err := f.Apply(ev); err != nil {
			return err
		}
		if f.Version == version {
			return events.ErrStop
		}
		return nil
	})
	if err != nil {
		return events.FlagConfig{}, fmt.Errorf("read history: %w", err)
	}
	if f.Version != version {
		return events.FlagConfig{}, fmt.Errorf("version %d: %w", version, projections.ErrNotFound)
	}
	cfg := f.FlagConfig.Clone()
	if err := cfg.Validate(); err != nil {
		return events.FlagConfig{}, fmt.Errorf("the configuration of version %d no longer passes validation: %w", version, err)
	}
	normalize(&cfg)
	return cfg, nil
}

// Get reads the flag's latest events from the stream, refreshing the cache, and returns its
// current state, archived or not.
//
// Errors: [ErrNotFound]; events.ErrInvalid for a bad environment or key; otherwise a read error.
func (s *Service) Get(ctx context.Context, env, key string) (projections.Flag, error) {
	return get(ctx, s, flagKind, "get", env, key)
}

// updatedData is the encoding of events.FlagUpdated{Flag: cfg, Patch: patch} built from cfg's
// canonical encoding, which saves encoding the configuration a second time. TestUpdatedData
// holds it to the payload's encoding.
func updatedData(canon, patch []byte) json.RawMessage {
	b := make([]byte, 0, len(canon)+len(patch)+20)
	b = append(b, `{"flag":`...)
	b = append(b, canon...)
	if len(patch) > 0 {
		b = append(b, `,"patch":`...)
		b = append(b, patch...)
	}
	return append(b, '}')
}

// keepsRolloutServe refuses a new configuration that would take the flag's default serve from
// its active rollout (the rollout's stages own it) or drop a variant that the rollout or the
// flag's safety valve may still serve.
func keepsRolloutServe(cur *projections.Flag, next *events.FlagConfig) error {
	has := func(name string) bool { _, ok := next.Variants[name]; return ok }
	if v := cur.Valve; v != nil && v.Variant != "" && !has(v.Variant) {
		return &events.ValidationError{Field: "variants",
			Message: fmt.Sprintf("%q is what the flag's safety valve serves: configure the valve with another variant first", v.Variant)}
	}
	r := cur.Rollout
	if !r.Active() {
		return nil
	}
	if !reflect.DeepEqual(cur.DefaultServe, next.DefaultServe) {
		return fmt.Errorf("%w: defaultServe belongs to rollout %s while it is %s; advance, pause or abort the rollout instead",
			ErrRolloutActive, r.ID, r.Status)
	}
	for _, name := range []string{r.Plan.Treatment, r.Plan.Control} {
		if !has(name) {
			return fmt.Errorf("%w: variant %q belongs to rollout %s while it is %s", ErrRolloutActive, name, r.ID, r.Status)
		}
	}
	return nil
}

func archived() error {
	return fmt.Errorf("%w: unarchive it first", ErrArchived)
}

// Limits on Meta besides events.MaxReasonLen.
const (
	maxActorLen = 256
	maxIDLen    = 256
)

func validateTarget(env, key string) error {
	if err := events.ValidateEnvironment(env); err != nil {
		return err
	}
	return events.ValidateFlagKey(key)
}

// target checks what every command carries and trims the white space of *m; its error names the
// command and its target.
func target(m *Meta, name, env, key string, reasonRequired bool) error {
	clean, err := validateCommand(*m, env, key, reasonRequired)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", name, env, key, err)
	}
	*m = clean
	return nil
}

// validateCommand checks what every command carries and returns m with white space trimmed.
func validateCommand(m Meta, env, key string, reasonRequired bool) (Meta, error) {
	if err := validateTarget(env, key); err != nil {
		return Meta{}, err
	}
	return cleanMeta(m, reasonRequired)
}

// cleanMeta checks m and returns it with white space trimmed.
func cleanMeta(m Meta, reasonRequired bool) (Meta, error) {
	m.Actor = strings.TrimSpace(m.Actor)
	m.Reason = strings.TrimSpace(m.Reason)
	m.CorrelationID = strings.TrimSpace(m.CorrelationID)
	m.CausationID = strings.TrimSpace(m.CausationID)
	var errs []error
	check := func(field, v string, max int) {
		if len(v) > max {
			errs = append(errs, &events.ValidationError{Field: field, Message: fmt.Sprintf("longer than %d bytes", max)})
		} else if msg := badText(v); msg != "" {
			errs = append(errs, &events.ValidationError{Field: field, Message: msg})
		}
	}
	if m.Actor == "" {
		errs = append(errs, &events.ValidationError{Field: "actor", Message: "every command names its actor"})
	}
	check("actor", m.Actor, maxActorLen)
	if reasonRequired && m.Reason == "" {
		errs = append(errs, &events.ValidationError{Field: "reason", Message: "is required: say why"})
	}
	check("reason", m.Reason, events.MaxReasonLen)
	check("correlationId", m.CorrelationID, maxIDLen)
	check("causationId", m.CausationID, maxIDLen)
	if m.EventID != "" {
		if _, err := uuid.Parse(m.EventID); err != nil {
			errs = append(errs, &events.ValidationError{Field: "eventId", Message: "is not a UUID"})
		}
	}
	return m, errors.Join(errs...)
}

// badText says what is wrong with a header value, or "" when nothing is: NATS headers are one
// line each, so a control character would be altered on the way to the stream.
func badText(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "contains a control character (a line break?): one line of text only"
		}
	}
	return ""
}
