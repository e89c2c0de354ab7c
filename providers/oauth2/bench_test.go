package oauth2

import (
	"context"
	"testing"

	"github.com/credbroker/credbroker/providers"
)

// BenchmarkIssue measures issuing against the local authorization server.
// "first" is a provider's first token: New (reading the client secret and
// ca_file), a TLS handshake, and the token request, as after a start or for
// a credential the lease manager has not cached. "warm" is a later token on
// the provider's kept-alive connection.
func BenchmarkIssue(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	for _, style := range []struct {
		name string
		cfg  Config
	}{{"basic", f.basic()}, {"post", f.post()}} {
		cfg := style.cfg
		cfg.Now = nil
		req := providers.Request{Name: cfg.Name, Identity: caller}
		b.Run("first/"+style.name, func(b *testing.B) {
			for b.Loop() {
				p, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := p.Credential(ctx, req); err != nil {
					b.Fatal(err)
				}
				p.client.CloseIdleConnections()
			}
		})
		b.Run("warm/"+style.name, func(b *testing.B) {
			p, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer p.client.CloseIdleConnections()
			for b.Loop() {
				if _, err := p.Credential(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
