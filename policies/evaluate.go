package policies

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/credbroker/credbroker/attest"
)

// Evaluate decides whether in.Identity may have in.Request.Credential.
//
// Deny policies are consulted first: the first matching one, in load
// order, decides. Otherwise the first matching allow policy in load order
// decides, and its ttl caps the credential's lifetime. Without a matching
// policy the request is denied. Evaluate is safe for concurrent use and
// builds the condition input only when a condition has to run.
func (s *Set) Evaluate(in Input) Decision {
	return s.evaluate(context.Background(), in)
}

// EvaluateContext is Evaluate with conditions interruptible through ctx:
// a condition still running when ctx is done fails to evaluate, so an allow
// policy does not match and a deny policy does.
func (s *Set) EvaluateContext(ctx context.Context, in Input) Decision {
	if ctx == nil {
		ctx = context.Background()
	}
	return s.evaluate(ctx, in)
}

func (s *Set) evaluate(ctx context.Context, in Input) Decision {
	if s == nil {
		return nilSet.evaluate(ctx, in)
	}
	if in.Now.IsZero() {
		in.Now = time.Now()
	}
	var act *activation
	d, ok := s.decide(ctx, &in, &act)
	if act != nil {
		act.reset()
		s.acts.Put(act)
	}
	if !ok {
		return s.defaultDeny(&in)
	}
	return d
}

// decide returns the decision of the first matching deny policy, else of
// the first matching allow policy; ok is false when none matches.
func (s *Set) decide(ctx context.Context, in *Input, act **activation) (d Decision, ok bool) {
	for _, p := range s.denies {
		if !p.creds.match(in.Request.Credential) || !p.matchWorkload(&in.Identity) {
			continue
		}
		if p.cond != nil {
			ok, err := p.cond.eval(ctx, s.activate(act, in))
			if err != nil {
				return Decision{Effect: Deny, Policy: p.name, Version: p.version, Reason: p.denyReason + ": " + failClosed(err)}, true
			}
			if !ok {
				continue
			}
		}
		return Decision{Effect: Deny, Policy: p.name, Version: p.version, Reason: p.denyReason}, true
	}
	for _, p := range s.allows {
		if !p.creds.match(in.Request.Credential) || !p.matchWorkload(&in.Identity) {
			continue
		}
		if p.cond != nil {
			if ok, err := p.cond.eval(ctx, s.activate(act, in)); err != nil || !ok {
				continue
			}
		}
		return Decision{Effect: Allow, Policy: p.name, Version: p.version, Reason: p.allowReason, TTL: p.ttl}, true
	}
	return Decision{}, false
}

// nilSet stands in for a nil *Set: no policies, so everything is denied.
var nilSet = &Set{version: emptyVersion}

func (s *Set) defaultDeny(in *Input) Decision {
	subject := in.Identity.Subject
	if subject == "" {
		subject = "an unidentified caller"
	}
	return Decision{
		Effect:  Deny,
		Version: s.version,
		Reason:  "no policy allows " + subject + " to read " + in.Request.Credential,
	}
}

// activate returns the activation for in, taking one from the pool on
// first use.
func (s *Set) activate(act **activation, in *Input) *activation {
	if *act == nil {
		a, _ := s.acts.Get().(*activation)
		if a == nil {
			a = newActivation().(*activation)
		}
		a.in = *in
		*act = a
	}
	return *act
}

// failClosed describes a deny condition that failed to evaluate.
func failClosed(err error) string {
	return "condition failed to evaluate, so the deny applies: " + err.Error()
}

// patterns is a policy's credential list.
type patterns []pattern

func (ps patterns) match(name string) bool {
	for i := range ps {
		if ps[i].match(name) {
			return true
		}
	}
	return false
}

func (p *policy) matchWorkload(id *attest.Identity) bool {
	for i := range p.workloads {
		if p.workloads[i].match(id) {
			return true
		}
	}
	return false
}

// Explain evaluates every policy against in and reports, besides the
// Decision that Evaluate would return, why each policy did or did not
// match: which workload entry matched or why none did, whether the
// credential is listed, and what the condition yielded.
func (s *Set) Explain(in Input) Explanation {
	return s.explain(context.Background(), in)
}

// ExplainContext is Explain with conditions interruptible through ctx, as
// for EvaluateContext.
func (s *Set) ExplainContext(ctx context.Context, in Input) Explanation {
	if ctx == nil {
		ctx = context.Background()
	}
	return s.explain(ctx, in)
}

func (s *Set) explain(ctx context.Context, in Input) Explanation {
	if s == nil {
		s = nilSet
	}
	if in.Now.IsZero() {
		in.Now = time.Now()
	}
	var (
		act      *activation
		ex       = Explanation{Trace: make([]Step, 0, len(s.all))}
		deny     *policy
		denyErr  error
		allow    *policy
		why      []string
		credName = in.Request.Credential
	)
	for _, p := range s.all {
		why = why[:0]
		wlOK := false
		for i := range p.workloads {
			if p.workloads[i].match(&in.Identity) {
				wlOK = true
				why = append(why, fmt.Sprintf("workload: entry at line %d matches", p.workloads[i].line))
				break
			}
		}
		if !wlOK {
			var misses []string
			for i := range p.workloads {
				misses = append(misses, fmt.Sprintf("line %d: %s", p.workloads[i].line, p.workloads[i].mismatch(&in.Identity)))
			}
			why = append(why, "workload: no entry matches ("+strings.Join(misses, "; ")+")")
		}
		credOK := false
		for i := range p.creds {
			if p.creds[i].match(credName) {
				credOK = true
				why = append(why, fmt.Sprintf("credential: %q matches %q", credName, p.creds[i].text))
				break
			}
		}
		if !credOK {
			texts := make([]string, len(p.creds))
			for i := range p.creds {
				texts[i] = strconv.Quote(p.creds[i].text)
			}
			why = append(why, fmt.Sprintf("credential: %q is not among %s", credName, strings.Join(texts, ", ")))
		}
		matched := wlOK && credOK
		var condErr error
		switch {
		case p.cond == nil:
			why = append(why, "condition: none")
		case !matched:
			why = append(why, "condition: not evaluated")
		default:
			ok, err := p.cond.eval(ctx, s.activate(&act, &in))
			switch {
			case err != nil && p.effect == Deny:
				condErr = err
				why = append(why, "condition: failed to evaluate, so the deny applies: "+err.Error())
			case err != nil:
				matched = false
				why = append(why, "condition: failed to evaluate, so the allow does not apply: "+err.Error())
			default:
				matched = ok
				why = append(why, "condition: "+strconv.FormatBool(ok))
			}
		}
		if matched && p.effect == Deny && deny == nil {
			deny, denyErr = p, condErr
		}
		if matched && p.effect == Allow && allow == nil {
			allow = p
		}
		ex.Trace = append(ex.Trace, Step{
			Policy: p.name, Effect: p.effect, File: p.file, Line: p.line,
			Matched: matched, Why: strings.Join(why, "; "),
		})
	}
	if act != nil {
		act.reset()
		s.acts.Put(act)
	}
	switch {
	case deny != nil:
		ex.Decision = Decision{Effect: Deny, Policy: deny.name, Version: deny.version, Reason: deny.denyReason}
		if denyErr != nil {
			ex.Decision.Reason += ": " + failClosed(denyErr)
		}
	case allow != nil:
		ex.Decision = Decision{Effect: Allow, Policy: allow.name, Version: allow.version, Reason: allow.allowReason, TTL: allow.ttl}
	default:
		ex.Decision = s.defaultDeny(&in)
	}
	return ex
}
