// Package providertest is the conformance suite every credential provider
// passes. A provider's tests build it against a real upstream (or a local
// server speaking the upstream's protocol) and call Run:
//
//	providertest.Run(t, providertest.Case{
//		Kind:     postgres.Kind,
//		Fields:   postgres.Fields,
//		Provider: p,
//		Failing:  down, // the same provider pointed at an upstream that refuses
//		Canary:   adminPassword,
//		Logs:     logs.String,
//	})
//
// Run checks what the broker and the lease manager rely on: an issued
// credential has a lease naming its credential, subject and kind, an
// expiry that is neither zero, past, nor beyond the requested cap, and
// exactly the declared fields, none empty; a cancelled context is honoured;
// a failure is an error that carries no secret; nothing secret reaches the
// provider's log; and a Revoker revokes idempotently.
package providertest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/providers"
)

// Provider is what the broker asks for credentials.
type Provider interface {
	Credential(ctx context.Context, req providers.Request) (providers.Credential, error)
}

// Case describes one provider under test.
type Case struct {
	// Kind is the provider's kind constant.
	Kind string
	// Fields are the provider's declared data fields.
	Fields []string
	// Provider is configured against a working upstream.
	Provider Provider
	// Failing is the same provider configured against an upstream that
	// fails (down, or refusing the broker's own credentials). Required: a
	// failure must be an error, and carry no secret.
	Failing Provider
	// Canary is a secret the provider holds for its own use (an admin
	// password, a client secret, a token): it must never appear in an
	// error or a log line. Required.
	Canary string
	// Logs returns everything the provider logged so far; nil when it
	// takes no logger.
	Logs func() string
	// Use proves an issued credential works upstream (logs in with it,
	// calls the API with it). Optional; when set and the provider is a
	// Revoker, Use must fail after Revoke.
	Use func(ctx context.Context, c providers.Credential) error
	// Public names data fields that are not secret (a role name, a host),
	// which errors and logs may show; every other field of 6 bytes or more
	// is treated as a secret.
	Public []string
	// Identity is the caller the credentials are asked for; default a unix
	// identity.
	Identity attest.Identity
	// Name is the credential name asked for; default "conformance".
	Name string
}

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, c Case) {
	t.Helper()
	if c.Provider == nil || c.Failing == nil || c.Canary == "" {
		t.Fatal("providertest: Case needs Provider, Failing and Canary")
	}
	if c.Name == "" {
		c.Name = "conformance"
	}
	if c.Identity.Subject == "" {
		c.Identity = attest.Identity{Method: attest.MethodUnix, Subject: "unix:uid:4242", Claims: map[string]any{"uid": int64(4242)}}
	}
	var issued []providers.Credential
	secrets := func() []string {
		out := []string{c.Canary}
		for _, cr := range issued {
			for k, s := range cr.Data {
				if len(s.Reveal()) >= 6 && !slices.Contains(c.Public, k) { // shorter values (a port, "5432") are not secrets
					out = append(out, string(s.Reveal()))
				}
			}
		}
		return out
	}
	noSecret := func(t *testing.T, where, text string) {
		t.Helper()
		for _, s := range secrets() {
			if strings.Contains(text, s) {
				t.Errorf("%s carries a secret: %q", where, text)
			}
		}
	}
	ctx := context.Background()

	t.Run("issue", func(t *testing.T) {
		for _, ttl := range []time.Duration{10 * time.Minute, 2 * time.Minute} {
			before := time.Now()
			cr, err := c.Provider.Credential(ctx, providers.Request{Name: c.Name, TTL: ttl, Identity: c.Identity})
			if err != nil {
				t.Fatalf("ttl %v: %v", ttl, err)
			}
			issued = append(issued, cr)
			after := time.Now()
			if cr.ID == "" || cr.Kind != c.Kind || cr.Credential != c.Name || cr.Subject != c.Identity.Subject {
				t.Errorf("ttl %v: lease %+v: want an id, kind %q, credential %q, subject %q", ttl, cr.Lease, c.Kind, c.Name, c.Identity.Subject)
			}
			if cr.ExpiresAt.IsZero() || !cr.ExpiresAt.After(after) {
				t.Errorf("ttl %v: expiry %v is zero or past", ttl, cr.ExpiresAt)
			}
			// One second of slack: some upstreams state expiry in whole seconds.
			if limit := before.Add(ttl + time.Second); cr.ExpiresAt.After(limit) {
				t.Errorf("ttl %v: expiry %v is beyond the cap (%v)", ttl, cr.ExpiresAt, limit)
			}
			var got []string
			for k, v := range cr.Data {
				got = append(got, k)
				if v.IsZero() {
					t.Errorf("ttl %v: field %q is empty", ttl, k)
				}
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(c.Fields))
			if !slices.Equal(got, want) {
				t.Errorf("ttl %v: fields %v, declared %v", ttl, got, want)
			}
			if c.Use != nil {
				if err := c.Use(ctx, cr); err != nil {
					t.Errorf("ttl %v: the issued credential does not work upstream: %v", ttl, err)
				}
			}
		}
		if len(issued) == 2 && issued[0].ID == issued[1].ID {
			t.Errorf("two issues share lease id %q", issued[0].ID)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		cr, err := c.Provider.Credential(cctx, providers.Request{Name: c.Name, TTL: time.Minute, Identity: c.Identity})
		if err == nil {
			issued = append(issued, cr)
			t.Fatal("a cancelled context still issued a credential")
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v does not wrap context.Canceled", err)
		}
		noSecret(t, "error", err.Error())
	})

	t.Run("failing", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		cr, err := c.Failing.Credential(cctx, providers.Request{Name: c.Name, TTL: time.Minute, Identity: c.Identity})
		if err == nil {
			t.Fatalf("the failing upstream issued a credential (lease %+v)", cr.Lease)
		}
		noSecret(t, "error", err.Error())
	})

	t.Run("revoke", func(t *testing.T) {
		r, ok := c.Provider.(providers.Revoker)
		if !ok {
			t.Logf("%s is not a Revoker: its leases end at expiry", c.Kind)
			return
		}
		cr, err := c.Provider.Credential(ctx, providers.Request{Name: c.Name, TTL: time.Minute, Identity: c.Identity})
		if err != nil {
			t.Fatal(err)
		}
		issued = append(issued, cr)
		for i := range 2 {
			if err := r.Revoke(ctx, cr.Lease); err != nil {
				t.Fatalf("revoke %d: %v", i+1, err)
			}
		}
		if c.Use != nil {
			if err := c.Use(ctx, cr); err == nil {
				t.Error("the credential still works after Revoke")
			}
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := r.Revoke(cctx, cr.Lease); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("revoke with a cancelled context: %v does not wrap context.Canceled", err)
		}
	})

	t.Run("logs", func(t *testing.T) {
		if c.Logs == nil {
			return
		}
		noSecret(t, "log", c.Logs())
	})
}
