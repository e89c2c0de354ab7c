package httpproxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"testing"

	"github.com/credbroker/credbroker/broker"
)

// TestRewriteDestination checks the outgoing URL comes from the upstream
// alone: scheme, host and base path, with the request's path and query.
func TestRewriteDestination(t *testing.T) {
	tests := []struct {
		upstream, target, want string
	}{
		{"https://api.example.com", "/v1/x?a=1", "https://api.example.com/v1/x?a=1"},
		{"https://api.example.com/base/", "/v1/x", "https://api.example.com/base/v1/x"},
		{"https://api.example.com:8443/base", "/v1/a%2Fb", "https://api.example.com:8443/base/v1/a%2Fb"},
		{"https://api.example.com", "http://user:pw@sink.example/x?q", "https://api.example.com/x?q"},
		{"https://api.example.com", "//sink.example/x", "https://api.example.com//sink.example/x"},
	}
	for _, tc := range tests {
		cfg := validConfig()
		cfg.Upstream = tc.upstream
		p, err := New(cfg, nopDecider{})
		if err != nil {
			t.Fatal(err)
		}
		in := httptest.NewRequest("GET", tc.target, nil)
		in.Host = "sink.example"
		in = in.WithContext(context.WithValue(in.Context(), injectionKey{}, &injection{value: "Bearer v"}))
		out := in.Clone(in.Context())
		p.rewrite(&httputil.ProxyRequest{In: in, Out: out})
		if got := out.URL.String(); got != tc.want || out.Host != "" || out.URL.User != nil {
			t.Errorf("%s + %s: %s (Host %q), want %s", tc.upstream, tc.target, got, out.Host, tc.want)
		}
		if out.Header.Get("Authorization") != "Bearer v" {
			t.Errorf("credential header %q", out.Header.Get("Authorization"))
		}
	}
}

type nopDecider struct{}

func (nopDecider) Decide(context.Context, *broker.Request) (*broker.Grant, error) { return nil, nil }

// FuzzRewriteHeader checks that, whatever headers a client sends, the
// outgoing request carries the credential header exactly once with the
// injected value, and no client Authorization, Proxy-* or X-Amz-* header.
func FuzzRewriteHeader(f *testing.F) {
	f.Add("Authorization", "Bearer mine", "Connection", "Authorization", "Authorization")
	f.Add("X-Amz-Date", "x", "Connection", "X-Api-Key, close", "X-Api-Key")
	f.Add("x-amz-security-token", "t", "connection", "x-api-key", "X-Api-Key")
	f.Add("Proxy-Authorization", "Basic x", "X-Api-Key", "dup", "X-Api-Key")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, name string) {
		if checkHeaderName(name) != nil {
			return
		}
		name = http.CanonicalHeaderKey(name)
		in := http.Header{}
		in[k1] = append(in[k1], v1)
		in[k2] = append(in[k2], v2)
		in.Add(k1, v2)
		out := in.Clone()
		const value = "injected-value"
		rewriteHeader(out, in, name, value)
		if got := out[name]; len(got) != 1 || got[0] != value {
			t.Fatalf("credential header %s = %q", name, got)
		}
		for k, vs := range out {
			ck := http.CanonicalHeaderKey(k)
			if ck == name {
				if k != name {
					t.Errorf("a second spelling %q of the credential header survives", k)
				}
				continue
			}
			if ck == "Authorization" || strings.HasPrefix(ck, "Proxy-") || strings.HasPrefix(ck, "X-Amz-") || ck == "Connection" || ck == "Upgrade" {
				t.Errorf("client header %q survives with %q", k, vs)
			}
		}
	})
}
