package subscribe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/interlock-dev/interlock/events"
)

// Metadata keys the subscriber adds to every Watermill message, besides the event's CloudEvents
// headers (ce-id, ce-type, ...), which it copies as they are. A poisoned event carries them too.
const (
	MetadataSubject          = "interlock_subject"
	MetadataStreamSequence   = "interlock_stream_sequence"
	MetadataConsumerSequence = "interlock_consumer_sequence"
	MetadataNumDelivered     = "interlock_num_delivered"
)

// Delivery says how an event reached the handler.
type Delivery struct {
	// StreamSequence is the event's sequence in the stream (also ev.Sequence).
	StreamSequence uint64
	// NumDelivered is 1 the first time the server delivers the event, more when it delivers it
	// again (the handler failed, or the subscriber stopped before acknowledging it). In-process
	// retries do not count.
	NumDelivered uint64
	// Message is the Watermill message: UUID is the event id, Payload its data, Metadata its
	// CloudEvents headers and the Metadata* keys.
	Message *message.Message
}

type deliveryKey struct{}

// DeliveryFrom returns the delivery of the event a handler was called with, from its context.
func DeliveryFrom(ctx context.Context) (Delivery, bool) {
	d, ok := ctx.Value(deliveryKey{}).(Delivery)
	return d, ok
}

// unmarshaler turns a JetStream message into a Watermill message. It never fails: the
// watermill-nats subscriber (v2.1.3) dereferences the message even when unmarshalling fails, so
// anything wrong is left for decodeMessage to find, which poisons the event.
type unmarshaler struct{}

func (unmarshaler) Unmarshal(m jetstream.Msg) (*message.Message, error) {
	h := m.Headers()
	md := make(message.Metadata, len(h)+5)
	for k, v := range h {
		// Nats-Msg-Id and the other Nats-* headers are the server's business; the event id is
		// in ce-id.
		if len(v) == 0 || strings.HasPrefix(k, "Nats-") || strings.HasPrefix(k, "_watermill") {
			continue
		}
		md[k] = v[0]
	}
	md[MetadataSubject] = m.Subject()
	if meta, err := m.Metadata(); err == nil {
		md[MetadataStreamSequence] = strconv.FormatUint(meta.Sequence.Stream, 10)
		md[MetadataConsumerSequence] = strconv.FormatUint(meta.Sequence.Consumer, 10)
		md[MetadataNumDelivered] = strconv.FormatUint(meta.NumDelivered, 10)
	}
	if id := h.Get(events.HeaderCorrelationID); id != "" {
		md[middleware.CorrelationIDMetadataKey] = id
	}
	wm := message.NewMessage(h.Get(events.HeaderID), m.Data())
	wm.Metadata = md
	return wm, nil
}

// decodeMessage reads the event back from a Watermill message made by unmarshaler. The error
// wraps events.ErrMalformed or events.ErrUnknownType; the delivery is filled in as far as it can.
func decodeMessage(msg *message.Message) (events.Event, Delivery, error) {
	var d Delivery
	d.StreamSequence, _ = strconv.ParseUint(msg.Metadata.Get(MetadataStreamSequence), 10, 64)
	d.NumDelivered, _ = strconv.ParseUint(msg.Metadata.Get(MetadataNumDelivered), 10, 64)
	h := make(nats.Header, 16)
	for k, v := range msg.Metadata {
		if strings.HasPrefix(k, "ce-") {
			h[k] = []string{v}
		}
	}
	ev, err := events.Decode(msg.Metadata.Get(MetadataSubject), h, msg.Payload)
	if err != nil {
		return events.Event{}, d, err
	}
	if d.StreamSequence == 0 {
		return events.Event{}, d, fmt.Errorf("%w: no stream sequence", events.ErrMalformed)
	}
	ev.Sequence = d.StreamSequence
	return ev, d, nil
}

// guardedConsumer is the durable as the watermill-nats subscriber sees it. That subscriber leaves
// a message unanswered when it stops or when the handler outlives AckWait; with one message in
// flight, the durable would then wait for the server's ack wait before delivering anything, even
// to a restarted subscriber. The guard answers every such message with a delayed nak instead.
type guardedConsumer struct {
	jetstream.Consumer
	delay  time.Duration
	logger *slog.Logger
}

func (c guardedConsumer) Consume(h jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	return c.Consumer.Consume(func(m jetstream.Msg) {
		g := &guardedMsg{Msg: m}
		h(g)
		if g.answered.Load() {
			return
		}
		if err := m.NakWithDelay(c.delay); err != nil {
			c.logger.Debug("nak an unanswered event", "subject", m.Subject(), "error", err)
		}
	}, opts...)
}

// guardedMsg records whether the message was answered.
type guardedMsg struct {
	jetstream.Msg
	answered atomic.Bool
}

func (m *guardedMsg) answer(err error) error {
	if err == nil {
		m.answered.Store(true)
	}
	return err
}

func (m *guardedMsg) Ack() error                          { return m.answer(m.Msg.Ack()) }
func (m *guardedMsg) DoubleAck(ctx context.Context) error { return m.answer(m.Msg.DoubleAck(ctx)) }
func (m *guardedMsg) Nak() error                          { return m.answer(m.Msg.Nak()) }
func (m *guardedMsg) NakWithDelay(d time.Duration) error  { return m.answer(m.Msg.NakWithDelay(d)) }
func (m *guardedMsg) Term() error                         { return m.answer(m.Msg.Term()) }
func (m *guardedMsg) TermWithReason(r string) error       { return m.answer(m.Msg.TermWithReason(r)) }

// errInterrupted marks a failure that happened because the event's context ended (shutdown, or
// AckWait passed): it says nothing about the event, so the event is delivered again rather than
// poisoned.
var errInterrupted = errors.New("interrupted")

func interrupted(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil && msg.Context().Err() != nil {
			return out, fmt.Errorf("%w: %w", errInterrupted, err)
		}
		return out, err
	}
}

// poisonPublisher publishes poisoned events with header values NATS can carry (a panic's reason
// has a stack trace over many lines) and logs each one. Closing it does nothing: the connection
// is the subscriber's.
type poisonPublisher struct {
	pub    message.Publisher
	logger *slog.Logger
}

// maxHeaderValue bounds one header value of a poisoned event.
const maxHeaderValue = 1024

func (p poisonPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		for k, v := range m.Metadata {
			m.Metadata[k] = headerValue(v)
		}
	}
	if err := p.pub.Publish(topic, msgs...); err != nil {
		return err
	}
	for _, m := range msgs {
		p.logger.Error("event moved to the poison queue", "subject", topic,
			"sequence", m.Metadata.Get(MetadataStreamSequence), "id", m.UUID,
			"reason", m.Metadata.Get(middleware.ReasonForPoisonedKey))
	}
	return nil
}

func (poisonPublisher) Close() error { return nil }

// headerValue makes s one line of at most maxHeaderValue bytes.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == '\t' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxHeaderValue {
		s = strings.ToValidUTF8(s[:maxHeaderValue-3], "") + "..."
	}
	return s
}
