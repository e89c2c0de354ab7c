package lease

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/internal/pgtest"
	"github.com/credbroker/credbroker/providers/postgres"
)

// BenchmarkFirstIssue measures what a cache miss costs a decision on top
// of the decision itself: the provider's issue, the lease store's row, and
// the committed lifecycle row — each iteration for a new workload, against
// a real PostgreSQL. BenchmarkHit is the cached case, for comparison.
func BenchmarkFirstIssue(b *testing.B) {
	pg := pgtest.Start(b)
	pg.Exec(b, "CREATE ROLE orders_rw NOLOGIN")
	m := benchManager(b)
	p, err := postgres.New(postgres.Config{Name: "orders-db", AdminDSNFile: writeFile(b, pg.AdminDSN()), Grant: []string{"orders_rw"}, InstallID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	c, err := m.Add("orders-db", p)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		cr, err := c.Credential(ctx, req(fmt.Sprintf("unix:uid:%d", 10000+i), time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		c.Settle(cr.Lease, true)
	}
}

// BenchmarkHit measures a cached credential's path through the manager.
func BenchmarkHit(b *testing.B) {
	m := benchManager(b)
	c, err := m.Add("db", &fake{clock: &clock{t: time.Now()}, ttl: 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	r := req("unix:uid:1", time.Hour)
	if _, err := c.Credential(ctx, r); err != nil { // issued before the clock starts
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			cr, err := c.Credential(ctx, r)
			if err != nil {
				b.Error(err)
				return
			}
			c.Settle(cr.Lease, true)
		}
	})
}

func benchManager(b *testing.B) *Manager {
	dir := b.TempDir()
	l, err := audit.Open(context.Background(), audit.Config{Path: filepath.Join(dir, "audit.db")})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done; l.Close() })
	s, err := OpenStore(context.Background(), filepath.Join(dir, "leases.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	m, err := New(Config{Store: s, Audit: l, Logger: discard()})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func writeFile(b *testing.B, content string) string {
	p := filepath.Join(b.TempDir(), "dsn")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}
