package oidc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/credbroker/credbroker/attest/oidc/oidctest"
)

// authRecorder is a second HTTPS server that serves the issuer's JWKS (as a
// cluster publishing its keys on another host does) and records the
// Authorization header of every request it receives.
type authRecorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // Authorization values, "" when absent
}

func newAuthRecorder(t *testing.T, iss *oidctest.Issuer) *authRecorder {
	t.Helper()
	r := &authRecorder{}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen = append(r.seen, req.Header.Get("Authorization"))
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(iss.JWKS())
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *authRecorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// TestHeaderOnlyToAllowedOrigins: the configured header (the broker's own
// Kubernetes token) reaches the issuer's origin and the listed origins,
// never a jwks_uri elsewhere nor a redirect that leaves them; the keys are
// fetched there without it.
func TestHeaderOnlyToAllowedOrigins(t *testing.T) {
	const secret = "Bearer broker-own-token"
	key := oidctest.NewRSAKey(t, "k1")
	iss := oidctest.NewIssuer(t, key)
	iss.RequireBearer("broker-own-token") // discovery is served to the broker's token only
	other := newAuthRecorder(t, iss)
	iss.Mux.HandleFunc("GET /moved-jwks", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.srv.URL+"/jwks", http.StatusFound)
	})
	header := func() (http.Header, error) { return http.Header{"Authorization": {secret}}, nil }

	for _, tt := range []struct {
		name          string
		jwksURI       string
		headerOrigins []string
		wantHeader    bool // whether other receives it
	}{
		// Both servers are 127.0.0.1: the port alone makes another origin.
		{"jwks_uri on another origin", other.srv.URL + "/jwks", nil, false},
		{"redirect to another origin", iss.URL + "/moved-jwks", nil, false},
		{"another origin listed as a header origin", other.srv.URL + "/jwks", []string{other.srv.URL + "/ignored/path"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			iss.SetJWKSURI(tt.jwksURI)
			defer iss.SetJWKSURI("")
			before := len(other.requests())
			keys, err := NewRemoteKeys(RemoteConfig{Issuer: iss.URL, HTTPClient: iss.Client(), Header: header, HeaderOrigins: tt.headerOrigins})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := keys.Key(context.Background(), "k1"); err != nil {
				t.Fatalf("Key: %v (discovery needs the header, the JWKS is public)", err)
			}
			got := other.requests()[before:]
			if len(got) != 1 {
				t.Fatalf("the other server saw %d requests, want 1", len(got))
			}
			if (got[0] == secret) != tt.wantHeader || (!tt.wantHeader && got[0] != "") {
				t.Errorf("the other server received Authorization %q; want the header: %v", got[0], tt.wantHeader)
			}
		})
	}
}

// TestHeaderNotCalledForOtherOrigins: the header function (which reads
// the token file) is not even called for a request that goes without it.
func TestHeaderNotCalledForOtherOrigins(t *testing.T) {
	key := oidctest.NewRSAKey(t, "k1")
	iss := oidctest.NewIssuer(t, key)
	other := newAuthRecorder(t, iss)
	calls := 0
	keys, err := NewRemoteKeys(RemoteConfig{
		Issuer: iss.URL, JWKSURL: other.srv.URL + "/jwks", HTTPClient: iss.Client(),
		Header: func() (http.Header, error) { calls++; return http.Header{"Authorization": {"Bearer x"}}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Key(context.Background(), "k1"); err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Errorf("Header called %d times for a JWKS URL on another origin", calls)
	}
}

func TestHeaderOriginsMustBeHTTPS(t *testing.T) {
	header := func() (http.Header, error) { return nil, nil }
	for _, o := range []string{"http://api.example:6443", "ftp://api.example", "not a url", "https://"} {
		if _, err := NewRemoteKeys(RemoteConfig{Issuer: "https://issuer.example", Header: header, HeaderOrigins: []string{o}}); err == nil {
			t.Errorf("header origin %q accepted", o)
		}
	}
}

func TestOrigin(t *testing.T) {
	for _, tt := range []struct{ a, b string }{
		{"https://Example.COM", "https://example.com:443/path"},
		{"https://[::1]:8443/x", "https://[::1]:8443"},
		{"http://example.com", "http://example.com:80"},
	} {
		oa, errA := origin(tt.a)
		ob, errB := origin(tt.b)
		if errA != nil || errB != nil || oa != ob {
			t.Errorf("origin(%q) = %q, %v; origin(%q) = %q, %v; want equal", tt.a, oa, errA, tt.b, ob, errB)
		}
	}
	for _, tt := range []struct{ a, b string }{
		{"https://example.com", "http://example.com"},
		{"https://example.com", "https://example.com:8443"},
		{"https://example.com", "https://api.example.com"},
		{"https://example.com", "https://example.com.evil.test"},
	} {
		oa, _ := origin(tt.a)
		ob, _ := origin(tt.b)
		if oa == ob {
			t.Errorf("origin(%q) == origin(%q) = %q", tt.a, tt.b, oa)
		}
	}
}
