package subscribe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
)

var (
	// ErrInvalidConfig means a [Config] broke a rule; [Config.Validate] says which.
	ErrInvalidConfig = errors.New("invalid subscriber config")
	// ErrNoStream means the event stream does not exist (yet): Interlock creates it when it
	// first starts, never the subscriber.
	ErrNoStream = errors.New("event stream not found")
	// ErrPermanent marks a handler error that retrying cannot fix: wrap it
	// (fmt.Errorf("...: %w", subscribe.ErrPermanent)) to send the event to the poison queue at
	// once. Events that do not decode are permanent failures too.
	ErrPermanent = errors.New("permanent failure")
	// ErrStopped means the subscription ended although the context did not.
	ErrStopped = errors.New("subscription stopped unexpectedly")
)

// Handler reacts to one event. Returning nil acknowledges it; an error has it retried and then
// poisoned (see [Config]). It must return when ctx ends. [DeliveryFrom] tells, from ctx, how the
// event was delivered and gives the Watermill message.
type Handler func(ctx context.Context, ev events.Event) error

// Defaults of [Config].
const (
	DefaultAckWait              = 30 * time.Second
	DefaultMaxRetries           = 3
	DefaultRetryInitialInterval = 100 * time.Millisecond
	DefaultRetryMaxInterval     = 2 * time.Second
	DefaultRedeliveryDelay      = time.Second
	// DefaultPoisonStream is the stream created for poison subjects when none holds them.
	DefaultPoisonStream = "INTERLOCK_POISON"
	// PoisonSubjectPrefix starts every default poison subject: "_INTERLOCK.poison.<durable>".
	// It is outside "interlock.>", so a poisoned event never lands in the event stream.
	PoisonSubjectPrefix = "_INTERLOCK.poison."
)

// Config is a subscriber's configuration. URL and Durable are required; the rest have defaults.
type Config struct {
	// URL of the NATS server or cluster (comma-separated URLs). The subscriber opens and owns its
	// own connection.
	URL string
	// Options for that connection: credentials, TLS, a name. The subscriber puts a name,
	// unlimited reconnects and an error handler that logs before them, so they may override
	// those.
	Options []nats.Option
	// Stream is the event stream; [events.DefaultStreamName] ("INTERLOCK") when empty.
	Stream string
	// Durable names this service's consumer: 1-64 characters of letters, digits, '-' and '_',
	// with at most one '@' inside. Every instance of a service uses the same one; different
	// services use different ones. On Interlock's embedded NATS server a token owns the durables
	// named after it: "NAME" or "NAME@anything" for the token NAME.
	Durable string
	// Token authenticates to Interlock's embedded NATS server with an Interlock token (see
	// events.TokenAuth). Leave it empty with Options that carry other credentials.
	Token string
	// Environment keeps the events of one environment; every environment when empty.
	Environment string
	// Entity keeps the events of one kind of entity, [events.EntityFlag] or
	// [events.EntitySegment]; both when empty.
	Entity string
	// Keys keeps the events of these entities (of kind Entity, which they require) only.
	Keys []string
	// DeliverNew starts a new durable at the events appended after it is created, instead of the
	// first event in the stream. An existing durable always resumes where it left off.
	DeliverNew bool
	// AckWait bounds one event's handling, retries included: when it passes, the handler's
	// context ends and the event is delivered again. DefaultAckWait when 0.
	AckWait time.Duration
	// MaxRetries is how many times a failing handler is called again, in process, before the
	// event is poisoned. DefaultMaxRetries when 0; -1 for no retries. Retries also stop once half
	// of AckWait has passed.
	MaxRetries int
	// RetryInitialInterval and RetryMaxInterval bound the exponential backoff between retries.
	// DefaultRetryInitialInterval and DefaultRetryMaxInterval when 0.
	RetryInitialInterval time.Duration
	RetryMaxInterval     time.Duration
	// RedeliveryDelay is how long the server waits before delivering again an event that was not
	// acknowledged: one that could not be poisoned, one interrupted by a shutdown, every failure
	// with NoPoisonQueue. DefaultRedeliveryDelay when 0.
	RedeliveryDelay time.Duration
	// PoisonSubject receives, as JetStream messages, the events whose handler still failed after
	// the retries, with their CloudEvents headers and data and the reason in "reason_poisoned".
	// PoisonSubjectPrefix + Durable when empty. It may not be inside "interlock.>".
	PoisonSubject string
	// PoisonStream is created to store the poison subject if no stream does yet (with the event
	// stream's replicas); an existing stream that holds the subject is used as it is.
	// DefaultPoisonStream when empty.
	PoisonStream string
	// NoPoisonQueue turns the poison queue off: an event whose handler keeps failing is
	// delivered again, every RedeliveryDelay, until it succeeds, and the events after it wait.
	NoPoisonQueue bool
	// Logger receives the subscriber's logs with component=subscribe. Nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Stream == "" {
		c.Stream = events.DefaultStreamName
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	switch c.MaxRetries {
	case 0:
		c.MaxRetries = DefaultMaxRetries
	case -1:
		c.MaxRetries = 0
	}
	if c.RetryInitialInterval == 0 {
		c.RetryInitialInterval = DefaultRetryInitialInterval
	}
	if c.RetryMaxInterval == 0 {
		c.RetryMaxInterval = max(DefaultRetryMaxInterval, c.RetryInitialInterval)
	}
	if c.RedeliveryDelay == 0 {
		c.RedeliveryDelay = DefaultRedeliveryDelay
	}
	if c.PoisonSubject == "" {
		c.PoisonSubject = PoisonSubjectPrefix + c.Durable
	}
	if c.PoisonStream == "" {
		c.PoisonStream = DefaultPoisonStream
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with the configuration, joined; each wraps [ErrInvalidConfig].
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if strings.TrimSpace(c.URL) == "" {
		add("url: required")
	}
	if !validName(strings.Replace(c.Durable, "@", "", 1), 63) || strings.HasPrefix(c.Durable, "@") || strings.HasSuffix(c.Durable, "@") {
		add("durable %q: 1-64 characters of letters, digits, '-' and '_', with at most one '@' inside", c.Durable)
	}
	if c.Stream != "" && !validName(c.Stream, 255) {
		add("stream %q: letters, digits, '-' and '_'", c.Stream)
	}
	if c.Environment != "" {
		if err := events.ValidateEnvironment(c.Environment); err != nil {
			add("environment: %v", err)
		}
	}
	switch c.Entity {
	case "", events.EntityFlag, events.EntitySegment:
	default:
		add("entity %q: %q or %q", c.Entity, events.EntityFlag, events.EntitySegment)
	}
	if len(c.Keys) > 0 && c.Entity == "" {
		add("keys: name the entity (flag or segment) the keys are of")
	}
	for i, k := range c.Keys {
		if err := events.ValidateFlagKey(k); err != nil {
			add("keys[%d]: %v", i, err)
		} else if slices.Contains(c.Keys[:i], k) {
			add("keys[%d]: %q given twice", i, k)
		}
	}
	if c.AckWait < 0 {
		add("ack wait: negative")
	}
	if c.AckWait > 0 && c.AckWait < 100*time.Millisecond {
		add("ack wait %v: at least 100ms", c.AckWait)
	}
	if c.MaxRetries < -1 {
		add("max retries %d: -1 (none), 0 (default) or more", c.MaxRetries)
	}
	if c.RetryInitialInterval < 0 || c.RetryMaxInterval < 0 {
		add("retry intervals: negative")
	}
	if c.RetryMaxInterval > 0 && c.RetryMaxInterval < c.RetryInitialInterval {
		add("retry max interval %v is below the initial interval %v", c.RetryMaxInterval, c.RetryInitialInterval)
	}
	if c.RedeliveryDelay < 0 {
		add("redelivery delay: negative")
	}
	if c.PoisonSubject != "" {
		if err := validPoisonSubject(c.PoisonSubject); err != nil {
			add("poison subject %q: %v", c.PoisonSubject, err)
		}
	}
	if c.PoisonStream != "" && !validName(c.PoisonStream, 255) {
		add("poison stream %q: letters, digits, '-' and '_'", c.PoisonStream)
	}
	return errors.Join(errs...)
}

// validName accepts JetStream stream and consumer names this package is willing to use.
func validName(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validPoisonSubject(s string) error {
	if len(s) > 255 {
		return errors.New("longer than 255 bytes")
	}
	if s == "interlock" || strings.HasPrefix(s, "interlock.") {
		return errors.New("inside interlock.>, the event stream's subjects")
	}
	if strings.HasPrefix(s, "$") {
		return errors.New("a system subject")
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" {
			return errors.New("empty token")
		}
		if strings.ContainsAny(tok, "*> \t\r\n") {
			return errors.New("no wildcards or spaces")
		}
	}
	return nil
}

// Subscriber runs one handler on one durable consumer.
type Subscriber struct {
	cfg     Config
	handler Handler
	logger  *slog.Logger
	filters []string
}

// New returns a subscriber for cfg that calls h; it does no I/O. The error wraps
// [ErrInvalidConfig] (see [Config.Validate]), or says h is nil.
func New(cfg Config, h Handler) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("%w: handler: required", ErrInvalidConfig)
	}
	cfg.setDefaults()
	return &Subscriber{
		cfg:     cfg,
		handler: h,
		logger:  cfg.Logger.With("component", "subscribe", "durable", cfg.Durable),
		filters: filterSubjects(cfg),
	}, nil
}

// FilterSubjects are the subjects the consumer selects.
func (s *Subscriber) FilterSubjects() []string { return slices.Clone(s.filters) }

func filterSubjects(c Config) []string {
	env := c.Environment
	if env == "" {
		env = "*"
	}
	switch {
	case len(c.Keys) > 0:
		out := make([]string, len(c.Keys))
		for i, k := range c.Keys {
			if c.Entity == events.EntitySegment {
				out[i] = events.SegmentSubject(env, k)
			} else {
				out[i] = events.FlagSubject(env, k)
			}
		}
		return out
	case c.Entity != "":
		return []string{events.EntitySubjects(env, c.Entity)}
	case c.Environment != "":
		return []string{events.EnvironmentSubjects(c.Environment)}
	}
	return []string{events.AllSubjects}
}

// consumerConfig is the durable's configuration: explicit acks, one event in flight, no limit on
// deliveries, never removed for inactivity.
func (s *Subscriber) consumerConfig() jetstream.ConsumerConfig {
	policy := jetstream.DeliverAllPolicy
	if s.cfg.DeliverNew {
		policy = jetstream.DeliverNewPolicy
	}
	cfg := jetstream.ConsumerConfig{
		Name:          s.cfg.Durable,
		Durable:       s.cfg.Durable,
		Description:   "Interlock event subscriber " + s.cfg.Durable,
		DeliverPolicy: policy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		// The server redelivers only after the subscriber's own limit has passed, so an event
		// is not handled twice at once.
		AckWait:       s.cfg.AckWait + 5*time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
	// One filter goes in the request's subject, where the server's permissions can check it.
	if len(s.filters) == 1 {
		cfg.FilterSubject = s.filters[0]
	} else {
		cfg.FilterSubjects = s.filters
	}
	return cfg
}

// Run subscribes and calls the handler for every event until ctx ends; then it lets the event in
// hand finish (within AckWait), closes its connection and returns nil. Errors: connecting,
// [ErrNoStream], a durable that exists with a configuration that cannot be changed to this one
// (say, another AckPolicy), a poison stream that cannot be created, or [ErrStopped].
func (s *Subscriber) Run(ctx context.Context) error {
	opts := append([]nats.Option{
		nats.Name("interlock-subscriber " + s.cfg.Durable),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			s.logger.Warn("nats", "error", err)
		}),
	}, s.cfg.Options...)
	if s.cfg.Token != "" {
		opts = append(opts, events.TokenAuth(s.cfg.Token))
	}
	nc, err := nats.Connect(s.cfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", s.cfg.URL, err)
	}
	defer nc.Close()
	// Closing the Watermill subscriber drains the connection: the durable's callbacks finish (an
	// unanswered event is nakked in one) before the connection closes. drained says it has.
	drained := make(chan struct{})
	closedCB := nc.Opts.ClosedCB
	nc.SetClosedHandler(func(c *nats.Conn) {
		close(drained)
		if closedCB != nil {
			closedCB(c)
		}
	})
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	cons, err := s.ensureConsumer(setupCtx, js)
	if err == nil && !s.cfg.NoPoisonQueue {
		err = s.ensurePoisonStream(setupCtx, js)
	}
	cancel()
	if err != nil {
		return err
	}

	wlog := watermill.NewSlogLoggerWithLevelMapping(s.logger, map[slog.Level]slog.Level{
		// Watermill logs every message at info: that is debug here.
		slog.LevelInfo: slog.LevelDebug,
	})
	guarded := guardedConsumer{Consumer: cons, delay: s.cfg.RedeliveryDelay, logger: s.logger}
	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn:           nc,
		Logger:         wlog,
		AckWaitTimeout: s.cfg.AckWait,
		// The durable is made above, the stream is Interlock's: nothing is created here and,
		// with no closer, nothing is deleted when the subscription ends.
		ResourceInitializer: func(context.Context, jetstream.JetStream, string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
			return guarded, nil, nil
		},
		NakDelay:    wmjs.NewStaticDelay(s.cfg.RedeliveryDelay),
		Unmarshaler: unmarshaler{},
		ConsumeOptions: []jetstream.PullConsumeOpt{
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				s.logger.Warn("consume", "error", err)
			}),
		},
	})
	if err != nil {
		return fmt.Errorf("watermill subscriber: %w", err)
	}
	// Closing the Watermill subscriber drains the connection, which is this Run's own. Run waits
	// for the drain: closing the connection first would lose the nak of an event in hand, which
	// the durable would then hold back for its whole ack wait, even from a restarted subscriber.
	defer func() {
		if err := sub.Close(); err != nil {
			// Not drained (say, the connection is down): nothing to wait for.
			s.logger.Warn("close subscriber", "error", err)
			return
		}
		wait := time.NewTimer(s.cfg.AckWait)
		defer wait.Stop()
		select {
		case <-drained:
		case <-wait.C:
			s.logger.Warn("connection not drained within the ack wait; closing it", "ack_wait", s.cfg.AckWait)
		}
	}()

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: s.cfg.AckWait}, wlog)
	if err != nil {
		return fmt.Errorf("watermill router: %w", err)
	}
	router.AddMiddleware(middleware.CorrelationID)
	if !s.cfg.NoPoisonQueue {
		pub, err := wmjs.NewPublisher(wmjs.PublisherConfig{Conn: nc, Logger: wlog})
		if err != nil {
			return fmt.Errorf("watermill publisher: %w", err)
		}
		poison, err := middleware.PoisonQueueWithFilter(poisonPublisher{pub: pub, logger: s.logger},
			s.cfg.PoisonSubject, func(err error) bool { return !errors.Is(err, errInterrupted) })
		if err != nil {
			return fmt.Errorf("poison queue: %w", err)
		}
		router.AddMiddleware(poison)
	}
	router.AddMiddleware(
		interrupted,
		middleware.Retry{
			MaxRetries:          s.cfg.MaxRetries,
			InitialInterval:     s.cfg.RetryInitialInterval,
			MaxInterval:         s.cfg.RetryMaxInterval,
			Multiplier:          2,
			RandomizationFactor: 0.2,
			MaxElapsedTime:      s.cfg.AckWait / 2,
			ShouldRetry:         func(p middleware.RetryParams) bool { return !errors.Is(p.Err, ErrPermanent) },
		}.Middleware,
		middleware.Recoverer,
	)
	router.AddConsumerHandler("interlock-"+s.cfg.Durable, strings.Join(s.filters, ","), sub, s.handle)

	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		if err := router.Close(); err != nil {
			s.logger.Warn("close router", "error", err)
		}
	})
	s.logger.Info("subscribed", "stream", s.cfg.Stream, "filter", s.filters)
	err = router.Run(ctx)
	close(done)
	wg.Wait()
	switch {
	case err != nil:
		return fmt.Errorf("subscribe %s: %w", s.cfg.Durable, err)
	case ctx.Err() == nil:
		return fmt.Errorf("subscribe %s: %w", s.cfg.Durable, ErrStopped)
	}
	return nil
}

// ensureConsumer creates the durable, or updates it to this configuration, keeping where an
// existing one started (a deliver policy cannot change). It asks nothing of the stream itself, so
// a user allowed only to consume (see Interlock's perimeter) can run it.
func (s *Subscriber) ensureConsumer(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	want := s.consumerConfig()
	existing, err := js.Consumer(ctx, s.cfg.Stream, s.cfg.Durable)
	switch {
	case err == nil:
		have := existing.CachedInfo().Config
		want.DeliverPolicy, want.OptStartSeq, want.OptStartTime = have.DeliverPolicy, have.OptStartSeq, have.OptStartTime
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("%w: %s (start Interlock first)", ErrNoStream, s.cfg.Stream)
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("consumer %s: %w", s.cfg.Durable, err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, s.cfg.Stream, want)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: %s (start Interlock first)", ErrNoStream, s.cfg.Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", s.cfg.Durable, s.cfg.Stream, err)
	}
	return cons, nil
}

// ensurePoisonStream makes sure a stream stores the poison subject, creating PoisonStream (with
// the event stream's replicas) when none does. It never changes an existing stream. Interlock
// creates [DefaultPoisonStream] when it starts, so that subscribers need not.
func (s *Subscriber) ensurePoisonStream(ctx context.Context, js jetstream.JetStream) error {
	name, err := js.StreamNameBySubject(ctx, s.cfg.PoisonSubject)
	if err == nil {
		s.logger.Debug("poison subject stored", "stream", name, "subject", s.cfg.PoisonSubject)
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("poison stream for %s: %w", s.cfg.PoisonSubject, err)
	}
	stream, err := js.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return fmt.Errorf("poison stream for %s: stream %s: %w", s.cfg.PoisonSubject, s.cfg.Stream, err)
	}
	subjects := []string{s.cfg.PoisonSubject}
	if strings.HasPrefix(s.cfg.PoisonSubject, PoisonSubjectPrefix) {
		subjects = []string{PoisonSubjectPrefix + ">"}
	}
	if err := createPoisonStream(ctx, js, s.cfg.PoisonStream, subjects, stream.CachedInfo().Config.Replicas); err != nil {
		return fmt.Errorf("create poison stream %s for %s: %w", s.cfg.PoisonStream, s.cfg.PoisonSubject, err)
	}
	return nil
}

// CreatePoisonStream creates [DefaultPoisonStream], which stores every default poison subject
// (PoisonSubjectPrefix + ">"), unless it exists. Interlock calls it when it starts: subscribers
// whose users may not create streams then find it.
func CreatePoisonStream(ctx context.Context, js jetstream.JetStream, replicas int) error {
	err := createPoisonStream(ctx, js, DefaultPoisonStream, []string{PoisonSubjectPrefix + ">"}, replicas)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create poison stream %s: %w", DefaultPoisonStream, err)
	}
	return nil
}

func createPoisonStream(ctx context.Context, js jetstream.JetStream, name string, subjects []string, replicas int) error {
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: "Interlock events that subscribers could not handle",
		Subjects:    subjects,
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	return err
}

// handle decodes the event and calls the handler with the delivery in its context.
func (s *Subscriber) handle(msg *message.Message) error {
	ev, d, err := decodeMessage(msg)
	if err != nil {
		s.logger.Error("undecodable event", "sequence", d.StreamSequence, "error", err)
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	d.Message = msg
	ctx := context.WithValue(msg.Context(), deliveryKey{}, d)
	if err := s.handler(ctx, ev); err != nil {
		s.logger.Warn("handler failed", "sequence", ev.Sequence, "id", ev.ID, "type", ev.Type,
			"subject", ev.Subject(), "delivered", d.NumDelivered, "error", err)
		return err
	}
	return nil
}
