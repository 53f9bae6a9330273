// Package openfeature is an OpenFeature provider (github.com/open-feature/go-sdk) that evaluates
// Interlock flags in process with a [local.Client]: an evaluation through an openfeature.Client
// reads the client's current flag set and does no I/O.
//
// The provider does not run the client: run it yourself (client.Run in your errgroup), then
// register the provider; its Init waits until the client is ready. It emits PROVIDER_READY once
// the client is ready (and again when contact with the stream comes back),
// PROVIDER_CONFIGURATION_CHANGED with the keys of the flags an event changed, PROVIDER_STALE while
// the client serves a state it cannot refresh, and PROVIDER_ERROR when following the stream fails.
//
// Reasons and error codes are the engine's, which are OpenFeature's. Flag metadata carries the
// flag's "version" (int64) and "environment" (string). A number flag answers Float and, when its
// value is a whole number within int64, Int; asking a flag for another type than its own is
// TYPE_MISMATCH. Object evaluations return a copy of the variant's value that the caller may
// change; flag metadata maps are shared between evaluations and must not be changed.
package openfeature

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	of "github.com/open-feature/go-sdk/openfeature"

	"github.com/interlock-dev/interlock/local"
	"github.com/interlock-dev/interlock/targeting"
)

// Name is the provider's name in its metadata and events.
const Name = "interlock"

// DefaultInitTimeout bounds how long Init waits for the client to be ready.
const DefaultInitTimeout = 30 * time.Second

// ErrNotReady is returned by Init when the client did not become ready in time.
var ErrNotReady = errors.New("interlock client not ready")

// Config tunes a [Provider]. The zero value is valid.
type Config struct {
	// InitTimeout bounds how long Init (without a context) waits for the client to be ready.
	// DefaultInitTimeout when 0.
	InitTimeout time.Duration
	// EventBuffer is the capacity of the event channel. 16 when 0.
	EventBuffer int
}

func (c *Config) setDefaults() {
	if c.InitTimeout == 0 {
		c.InitTimeout = DefaultInitTimeout
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = 16
	}
}

// Validate reports every problem with the configuration, joined.
func (c Config) Validate() error {
	var errs []error
	if c.InitTimeout < 0 {
		errs = append(errs, fmt.Errorf("init timeout: %v is negative", c.InitTimeout))
	}
	if c.EventBuffer < 0 {
		errs = append(errs, fmt.Errorf("event buffer: %d is negative", c.EventBuffer))
	}
	return errors.Join(errs...)
}

// Provider is the OpenFeature provider. It implements of.FeatureProvider, of.StateHandler,
// of.ContextAwareStateHandler and of.EventHandler.
type Provider struct {
	client *local.Client
	cfg    Config
	events chan of.Event
	meta   metadataCache

	mu         sync.Mutex
	queue      []of.Event
	wake       chan struct{}
	stop       chan struct{} // closed by Shutdown; nil while not initialised
	done       chan struct{} // closed when the forwarder has stopped
	unobserve  func()
	initFailed bool
}

// New returns a provider evaluating with c, or the configuration's problems.
func New(c *local.Client, cfg Config) (*Provider, error) {
	if c == nil {
		return nil, errors.New("openfeature provider: client: required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("openfeature provider: %w", err)
	}
	cfg.setDefaults()
	return &Provider{
		client: c,
		cfg:    cfg,
		events: make(chan of.Event, cfg.EventBuffer),
		meta:   metadataCache{env: c.Environment()},
		wake:   make(chan struct{}, 1),
	}, nil
}

// Metadata names the provider.
func (p *Provider) Metadata() of.Metadata { return of.Metadata{Name: Name} }

// Hooks returns none: the provider has no hooks.
func (p *Provider) Hooks() []of.Hook { return nil }

// EventChannel is where the provider's events go. It is the same channel on every call.
func (p *Provider) EventChannel() <-chan of.Event { return p.events }

// Init waits up to [Config.InitTimeout] for the client to be ready. Errors: an
// *of.ProviderInitError whose message names [ErrNotReady] when it is not ready in time (the
// provider then emits PROVIDER_READY when it becomes ready); [local.ErrClosed] when the client was
// closed.
func (p *Provider) Init(evalCtx of.EvaluationContext) error {
	return p.InitWithContext(context.Background(), evalCtx)
}

// InitWithContext is Init, also ended by ctx.
func (p *Provider) InitWithContext(ctx context.Context, _ of.EvaluationContext) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.InitTimeout)
	defer cancel()
	p.start()
	err := p.client.WaitReady(ctx)
	p.mu.Lock()
	p.initFailed = err != nil
	p.mu.Unlock()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, local.ErrClosed):
		return err
	}
	return &of.ProviderInitError{ErrorCode: of.ProviderNotReadyCode, Message: fmt.Sprintf("%v: %v", ErrNotReady, err)}
}

// start registers with the client and starts forwarding events, unless already started.
func (p *Provider) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop != nil {
		return
	}
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	p.queue = nil
	p.unobserve = p.client.Observe(p.observe)
	go p.forward(p.stop, p.done)
}

// Shutdown stops the provider's events. The client keeps running: it is the caller's.
func (p *Provider) Shutdown() { _ = p.ShutdownWithContext(context.Background()) }

// ShutdownWithContext is Shutdown; it returns ctx.Err() if ctx ends before the event forwarder
// has stopped.
func (p *Provider) ShutdownWithContext(ctx context.Context) error {
	p.mu.Lock()
	stop, done, unobserve := p.stop, p.done, p.unobserve
	p.stop, p.done, p.unobserve = nil, nil, nil
	p.mu.Unlock()
	if stop == nil {
		return nil
	}
	unobserve()
	close(stop)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// observe turns a client notice into a provider event, queued for the forwarder. It never blocks:
// it runs on the client's goroutine.
func (p *Provider) observe(n local.Notice) {
	ev := of.Event{ProviderName: Name}
	ev.EventMetadata = map[string]any{"sequence": int64(n.Sequence)}
	switch n.Kind {
	case local.NoticeReady:
		p.mu.Lock()
		failed := p.initFailed
		p.mu.Unlock()
		if !failed {
			return // Init returns and the SDK says so
		}
		ev.EventType, ev.Message = of.ProviderReady, "the flags are loaded"
	case local.NoticeFresh:
		ev.EventType, ev.Message = of.ProviderReady, "contact with the event stream is back"
	case local.NoticeChanged:
		ev.EventType, ev.Message, ev.FlagChanges = of.ProviderConfigChange, "flags changed", n.Keys
	case local.NoticeStale:
		ev.EventType, ev.Message = of.ProviderStale, "contact with the event stream is lost; serving the last-known flags"
	case local.NoticeError:
		ev.EventType, ev.ErrorCode = of.ProviderError, of.GeneralCode
		ev.Message = "following the event stream fails; serving the last-known flags"
		if n.Err != nil {
			ev.Message += ": " + n.Err.Error()
		}
	default:
		return
	}
	p.mu.Lock()
	if p.stop == nil {
		p.mu.Unlock()
		return
	}
	if last := len(p.queue) - 1; last >= 0 && ev.EventType == of.ProviderConfigChange && p.queue[last].EventType == of.ProviderConfigChange {
		// Coalesce a burst of changes into one event naming every flag.
		prev := &p.queue[last]
		prev.FlagChanges = mergeKeys(prev.FlagChanges, ev.FlagChanges)
		prev.EventMetadata = ev.EventMetadata
	} else {
		p.queue = append(p.queue, ev)
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// mergeKeys returns the sorted union of two sorted key lists.
func mergeKeys(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i] < b[j]:
			out = append(out, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	return out
}

// forward sends queued events on the event channel, in order, until stop is closed.
func (p *Provider) forward(stop, done chan struct{}) {
	defer close(done)
	for {
		p.mu.Lock()
		var ev of.Event
		have := len(p.queue) > 0
		if have {
			ev = p.queue[0]
			p.queue = p.queue[1:]
		}
		p.mu.Unlock()
		if !have {
			select {
			case <-p.wake:
				continue
			case <-stop:
				return
			}
		}
		select {
		case p.events <- ev:
		case <-stop:
			return
		}
	}
}

// BooleanEvaluation evaluates a boolean flag.
func (p *Provider) BooleanEvaluation(_ context.Context, flag string, defaultValue bool, flatCtx of.FlattenedContext) of.BoolResolutionDetail {
	ev := p.evaluate(flag, flatCtx)
	d, ok := p.detail(&ev, targeting.KindBool)
	if !ok {
		return of.BoolResolutionDetail{Value: defaultValue, ProviderResolutionDetail: d}
	}
	return of.BoolResolutionDetail{Value: ev.Variant.Bool, ProviderResolutionDetail: d}
}

// StringEvaluation evaluates a string flag.
func (p *Provider) StringEvaluation(_ context.Context, flag string, defaultValue string, flatCtx of.FlattenedContext) of.StringResolutionDetail {
	ev := p.evaluate(flag, flatCtx)
	d, ok := p.detail(&ev, targeting.KindString)
	if !ok {
		return of.StringResolutionDetail{Value: defaultValue, ProviderResolutionDetail: d}
	}
	return of.StringResolutionDetail{Value: ev.Variant.String, ProviderResolutionDetail: d}
}

// FloatEvaluation evaluates a number flag.
func (p *Provider) FloatEvaluation(_ context.Context, flag string, defaultValue float64, flatCtx of.FlattenedContext) of.FloatResolutionDetail {
	ev := p.evaluate(flag, flatCtx)
	d, ok := p.detail(&ev, targeting.KindNumber)
	if !ok {
		return of.FloatResolutionDetail{Value: defaultValue, ProviderResolutionDetail: d}
	}
	return of.FloatResolutionDetail{Value: ev.Variant.Number, ProviderResolutionDetail: d}
}

// IntEvaluation evaluates a number flag whose served value is a whole number within int64; any
// other number is TYPE_MISMATCH.
func (p *Provider) IntEvaluation(_ context.Context, flag string, defaultValue int64, flatCtx of.FlattenedContext) of.IntResolutionDetail {
	ev := p.evaluate(flag, flatCtx)
	d, ok := p.detail(&ev, targeting.KindNumber)
	if !ok {
		return of.IntResolutionDetail{Value: defaultValue, ProviderResolutionDetail: d}
	}
	n := ev.Variant.Number
	if n != math.Trunc(n) || n < math.MinInt64 || n >= math.MaxInt64 {
		d = of.ProviderResolutionDetail{
			ResolutionError: of.NewTypeMismatchResolutionError(msgNotInteger),
			Reason:          of.ErrorReason,
			FlagMetadata:    d.FlagMetadata,
		}
		return of.IntResolutionDetail{Value: defaultValue, ProviderResolutionDetail: d}
	}
	return of.IntResolutionDetail{Value: int64(n), ProviderResolutionDetail: d}
}

// ObjectEvaluation evaluates an object flag. The value is a copy the caller owns.
func (p *Provider) ObjectEvaluation(_ context.Context, flag string, defaultValue any, flatCtx of.FlattenedContext) of.InterfaceResolutionDetail {
	ev := p.evaluate(flag, flatCtx)
	d, ok := p.detail(&ev, targeting.KindObject)
	if !ok {
		return of.InterfaceResolutionDetail{Value: defaultValue, ProviderResolutionDetail: d}
	}
	return of.InterfaceResolutionDetail{Value: deepCopy(ev.Variant.Object), ProviderResolutionDetail: d}
}

// evaluate runs the engine on the flattened context: the targeting key is the SDK's
// "targetingKey" entry, and the attributes are the map itself (read, never changed).
func (p *Provider) evaluate(flag string, flat of.FlattenedContext) targeting.Evaluation {
	ectx := targeting.EvalContext{Attributes: flat}
	if tk, ok := flat[of.TargetingKey].(string); ok {
		ectx.TargetingKey = tk
	}
	return p.client.Evaluate(flag, &ectx)
}

// detail is the resolution detail of ev for a flag asked as want; ok is false when the value
// must not be used (an error, or a flag of another type).
func (p *Provider) detail(ev *targeting.Evaluation, want targeting.ValueKind) (of.ProviderResolutionDetail, bool) {
	var md of.FlagMetadata
	if ev.Version > 0 {
		md = p.meta.get(ev.FlagKey, ev.Version)
	}
	if ev.ErrorCode != "" || ev.Variant == nil {
		return of.ProviderResolutionDetail{ResolutionError: resolutionError(ev), Reason: of.ErrorReason, FlagMetadata: md}, false
	}
	if ev.Kind != want {
		return of.ProviderResolutionDetail{
			ResolutionError: of.NewTypeMismatchResolutionError(mismatch[ev.Kind][want]),
			Reason:          of.ErrorReason,
			FlagMetadata:    md,
		}, false
	}
	return of.ProviderResolutionDetail{Reason: of.Reason(ev.Reason), Variant: ev.Variant.Name, FlagMetadata: md}, true
}

// resolutionError maps the engine's error code to the SDK's.
func resolutionError(ev *targeting.Evaluation) of.ResolutionError {
	msg := ev.ErrorMessage
	switch ev.ErrorCode {
	case targeting.ErrorFlagNotFound:
		return of.NewFlagNotFoundResolutionError(msg)
	case targeting.ErrorTypeMismatch:
		return of.NewTypeMismatchResolutionError(msg)
	case targeting.ErrorTargetingKeyMissing:
		return of.NewTargetingKeyMissingResolutionError(msg)
	case targeting.ErrorInvalidContext:
		return of.NewInvalidContextResolutionError(msg)
	case targeting.ErrorParseError:
		return of.NewParseErrorResolutionError(msg)
	case "":
		return of.NewGeneralResolutionError("the evaluation served no variant")
	}
	return of.NewGeneralResolutionError(msg)
}

const msgNotInteger = "the flag's value is a number that is not a whole int64: ask for a float"

// mismatch holds the message of every type mismatch, [flag kind][asked kind], so that no
// evaluation formats a string.
var mismatch = func() (m [5][5]string) {
	for have := targeting.KindUnknown; have <= targeting.KindObject; have++ {
		for want := targeting.KindUnknown; want <= targeting.KindObject; want++ {
			m[have][want] = "the flag's values are " + kindName(have) + ", not " + kindName(want)
		}
	}
	return m
}()

func kindName(k targeting.ValueKind) string {
	switch k {
	case targeting.KindBool:
		return "booleans"
	case targeting.KindString:
		return "strings"
	case targeting.KindNumber:
		return "numbers"
	case targeting.KindObject:
		return "objects"
	}
	return "of an unknown type"
}

// metadataCache holds the flag metadata of the latest version of each flag evaluated, so that an
// evaluation does not allocate a map.
type metadataCache struct {
	env string
	m   sync.Map // flag key → *metadataEntry
}

type metadataEntry struct {
	version uint64
	md      of.FlagMetadata
}

func (c *metadataCache) get(key string, version uint64) of.FlagMetadata {
	if e, ok := c.m.Load(key); ok {
		if e := e.(*metadataEntry); e.version == version {
			return e.md
		}
	}
	e := &metadataEntry{version: version, md: of.FlagMetadata{"version": int64(version), "environment": c.env}}
	c.m.Store(key, e)
	return e.md
}

// deepCopy copies a decoded JSON value, so that the caller cannot change the flag set's.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = deepCopy(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = deepCopy(x)
		}
		return out
	}
	return v
}
