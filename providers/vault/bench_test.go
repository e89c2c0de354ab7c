package vault

import (
	"context"
	"testing"
	"time"

	"github.com/credbroker/credbroker/providers"
)

// BenchmarkIssue measures first-issue latency against the Vault dev
// server: one Credential call as the lease manager makes it on a cache
// miss, with the broker's token already held (the first call's login is
// outside the timer, except in kv-with-login, where each issue is a new
// provider's first: an AppRole login and the read). kv is one read of a KV v2 secret; dynamic is one
// database/creds read, for which Vault creates a PostgreSQL role, each
// lease revoked outside the timer.
func BenchmarkIssue(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	roleID, secretIDFile, _ := f.approle(b, "1h", "24h", "kv-read", "broker-db")
	auth := Auth{AppRole: &AppRoleAuth{RoleID: roleID, SecretIDFile: secretIDFile}}
	req := providers.Request{Name: "bench", TTL: 10 * time.Minute, Identity: caller}

	b.Run("kv", func(b *testing.B) {
		p := mustNew(b, Config{Address: f.srv.Addr, Auth: auth, KV: &KV{Path: "stripe", Field: "key"}, Name: "bench"})
		issue(b, p, req) // logs in
		for b.Loop() {
			if _, err := p.Credential(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})

	// A provider's very first issue: an AppRole login, then the read.
	b.Run("kv-with-login", func(b *testing.B) {
		cfg := Config{Address: f.srv.Addr, Auth: auth, KV: &KV{Path: "stripe", Field: "key"}, Name: "bench"}
		for b.Loop() {
			if _, err := mustNew(b, cfg).Credential(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})

	f.databaseEngine(b)
	b.Run("dynamic", func(b *testing.B) {
		p := mustNew(b, Config{Address: f.srv.Addr, Auth: auth, Dynamic: &Dynamic{Path: "database/creds/ro"}, Name: "bench"})
		leases := []providers.Lease{issue(b, p, req).Lease}
		for b.Loop() {
			cr, err := p.Credential(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			leases = append(leases, cr.Lease)
		}
		b.StopTimer()
		for _, l := range leases {
			if err := p.Revoke(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
	})
}
