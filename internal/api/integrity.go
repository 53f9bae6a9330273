package api

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/interlock-dev/interlock/apiv1"
	"github.com/interlock-dev/interlock/events"
	"github.com/interlock-dev/interlock/internal/auth"
	"github.com/interlock-dev/interlock/projections"
)

// IntegrityRecord is what the projections refused because it failed verification:
// *projections.Integrity.
type IntegrityRecord interface {
	// Problems returns the latest problems, in stream order, and how many there were in all.
	Problems() ([]projections.Problem, uint64)
	// Unacknowledged returns the latest problems no acknowledgement covers, and the sequence of
	// the latest problem.
	Unacknowledged() ([]projections.Problem, uint64)
	// Acknowledged is the acknowledgement that reaches furthest.
	Acknowledged() projections.Acknowledgement
}

// Chains verifies the stream's signatures and hash chains: *events.Store opened with a signer.
type Chains interface {
	// VerifyChains walks the chains of the subjects q selects from their start.
	VerifyChains(ctx context.Context, q events.Query, limit int) (events.ChainReport, error)
	// Verifier has the keys and the cut-over; nil when the store does not sign.
	Verifier() *events.Verifier
	// SigningKeyID is the id of the key this server signs with.
	SigningKeyID() string
}

// maxVerifyProblems bounds the problems GET /api/v1/audit/verify lists.
const maxVerifyProblems = 100

// Integrity statuses.
const (
	integrityOK = "ok"
	// integrityAcknowledged: the projections refused messages, and an operator acknowledged
	// every one of them.
	integrityAcknowledged = "acknowledged"
	// integrityProblems: some refused message is not acknowledged; /readyz answers 503.
	integrityProblems = "problems"
)

// integrityStatus is the integrity part of /readyz and GET /api/v1/integrity: the record as p
// may see it. A token scoped to an environment sees that
// environment's problems only (and counts those among the latest). With p nil (the public
// /readyz) problems name no subject and carry no detail: flag keys are not public.
func (a *API) integrityStatus(p *auth.Principal) *apiv1.Integrity {
	if a.cfg.Integrity == nil {
		return nil
	}
	problems, count := a.cfg.Integrity.Problems()
	ack := a.cfg.Integrity.Acknowledged()
	st := &apiv1.Integrity{Status: integrityOK, Count: count, Problems: []projections.Problem{}}
	for _, pr := range problems {
		switch {
		case p == nil:
			pr.Subject, pr.Detail = "", ""
		case p.Environment != "" && !strings.HasPrefix(pr.Subject, "interlock."+p.Environment+"."):
			continue
		}
		st.Problems = append(st.Problems, pr)
		st.Latest = max(st.Latest, pr.Sequence)
		if pr.Sequence > ack.Through {
			st.Unacknowledged++
		}
	}
	if p == nil || p.Environment == "" {
		_, st.Latest = a.cfg.Integrity.Unacknowledged()
	} else {
		st.Count = uint64(len(st.Problems))
	}
	if ack.Sequence != 0 {
		st.Acknowledged = &ack
	}
	switch {
	case st.Latest > ack.Through:
		st.Status = integrityProblems
	case st.Count > 0:
		st.Status = integrityAcknowledged
	}
	if a.cfg.Chains != nil {
		if v := a.cfg.Chains.Verifier(); v != nil {
			c := v.Cutover()
			st.Cutover, st.KeyID = &c, a.cfg.Chains.SigningKeyID()
		}
	}
	return st
}

// integrity answers GET /api/v1/integrity: the messages this replica's projections refused.
func (a *API) integrity(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	st := a.integrityStatus(&p)
	if st == nil {
		return &requestError{kind: errNoRoute, msg: "this server does not verify events"}
	}
	a.writeJSON(w, r, http.StatusOK, st)
	return nil
}

// acknowledgeIntegrity answers POST /api/v1/integrity/acknowledgements: the caller (an admin of
// every environment) acknowledges the integrity problems up to a stream sequence, for a reason.
// The body is {"through": N, "reason": "..."}; without through, the latest problem this replica
// recorded. The acknowledgement is an event every replica applies; the answer (201) comes once
// this replica applied it, with its integrity status.
func (a *API) acknowledgeIntegrity(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if a.cfg.Integrity == nil {
		return &requestError{kind: errNoRoute, msg: "this server does not verify events"}
	}
	var body apiv1.AcknowledgeRequest
	if err := a.readJSON(w, r, &body, false); err != nil {
		return err
	}
	pending, latest := a.cfg.Integrity.Unacknowledged()
	if body.Through == 0 {
		if len(pending) == 0 {
			return &requestError{kind: errConflict, msg: "no integrity problem waits for an acknowledgement on this replica; give through to acknowledge up to a stream sequence"}
		}
		body.Through = latest
	}
	var n uint64
	for _, pr := range pending {
		if pr.Sequence <= body.Through {
			n++
		}
	}
	ev, err := a.cfg.Commands.AcknowledgeIntegrity(r.Context(), meta(r, p, body.Reason), body.Through, n)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.WriteTimeout)
	defer cancel()
	if err := a.cfg.Catalog.WaitSequence(ctx, ev.Sequence); err != nil {
		a.logger.WarnContext(r.Context(), "answering a write before the catalog applied it",
			"subject", ev.Subject(), "sequence", ev.Sequence, "correlation_id", correlationID(r.Context()), "error", err)
	}
	a.writeJSON(w, r, http.StatusCreated, apiv1.Acknowledged{
		Acknowledgement: apiv1.Acknowledgement{Through: body.Through, Sequence: ev.Sequence, Actor: ev.Actor, Reason: ev.Reason, Time: ev.Time},
		Integrity:       a.integrityStatus(&p),
	})
	return nil
}

// signingKeys answers GET /api/v1/signing-keys: the public keys events verify with, for
// in-process readers that verify on their own.
func (a *API) signingKeys(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r, nil); err != nil {
		return err
	}
	v := a.chainsVerifier()
	if v == nil {
		return &requestError{kind: errNoRoute, msg: "this server does not sign events"}
	}
	current := a.cfg.Chains.SigningKeyID()
	keys := []apiv1.SigningKey{}
	for _, k := range v.Keys().List() {
		p, err := events.MarshalPublicKey(ed25519.PublicKey(k.Key))
		if err != nil {
			return err
		}
		keys = append(keys, apiv1.SigningKey{ID: k.ID, Key: base64.StdEncoding.EncodeToString(k.Key), PEM: string(p), Current: k.ID == current})
	}
	a.writeJSON(w, r, http.StatusOK, apiv1.SigningKeys{Keys: keys, Cutover: v.Cutover()})
	return nil
}

func (a *API) chainsVerifier() *events.Verifier {
	if a.cfg.Chains == nil {
		return nil
	}
	return a.cfg.Chains.Verifier()
}

// auditVerify answers GET /api/v1/audit/verify?environment=&flag=: it walks the hash chains of
// the selected subjects (every subject, an environment's, or one flag's) from their start and
// verifies every signature, trusting nothing it verified before.
func (a *API) auditVerify(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	q, err := query(r, []string{"environment", "flag"})
	if err != nil {
		return err
	}
	if a.chainsVerifier() == nil {
		return &requestError{kind: errNoRoute, msg: "this server does not sign events"}
	}
	// A token scoped to an environment verifies that environment (and asks for no other).
	env, err := scopeEnvironment(p, q.Get("environment"))
	if err != nil {
		return err
	}
	key := q.Get("flag")
	subjects := []string{events.AllSubjects}
	switch {
	case key != "" && env == "":
		return badRequest("flag: a flag key is only unique within an environment: give the environment too")
	case key != "":
		if err := errors.Join(events.ValidateEnvironment(env), events.ValidateFlagKey(key)); err != nil {
			return err
		}
		subjects = []string{events.FlagSubject(env, key)}
	case env != "":
		if err := events.ValidateEnvironment(env); err != nil {
			return err
		}
		subjects = []string{events.EnvironmentSubjects(env)}
	}
	rep, err := a.cfg.Chains.VerifyChains(r.Context(), events.Query{Subjects: subjects}, maxVerifyProblems)
	if err != nil {
		return err
	}
	out := apiv1.VerifyReport{Verified: rep.Events, Refused: rep.Refused, Problems: []apiv1.VerifyProblem{}, Cutover: rep.Cutover}
	for _, p := range rep.Problems {
		out.Problems = append(out.Problems, apiv1.VerifyProblem{Sequence: p.Sequence, Subject: p.Subject, Reason: p.Reason(), Detail: p.Detail})
	}
	a.writeJSON(w, r, http.StatusOK, out)
	return nil
}
