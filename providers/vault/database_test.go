package vault

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"

	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/pgtest"
	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/providertest"
)

// brokerDBPolicy is what the broker's token may do with the database
// secrets engine: issue, renew and revoke.
const brokerDBPolicy = `
path "database/creds/ro" { capabilities = ["read"] }
path "sys/leases/renew"  { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
`

// databaseEngine mounts Vault's database secrets engine on a real
// PostgreSQL, with a role "ro" whose users live 1h by default and 2h at
// most.
func (f *fixture) databaseEngine(t testing.TB) *pgtest.Server {
	t.Helper()
	pg := pgtest.Start(t)
	if err := f.root.Sys().MountWithContext(context.Background(), "database", &api.MountInput{Type: "database"}); err != nil {
		t.Fatal(err)
	}
	u := url.URL{Scheme: "postgresql", Host: pg.Host + ":" + strconv.Itoa(pg.Port), Path: "/postgres", RawQuery: "sslmode=disable"}
	f.write(t, "database/config/pg", map[string]any{
		"plugin_name":    "postgresql-database-plugin",
		"connection_url": strings.Replace(u.String(), "//", "//{{username}}:{{password}}@", 1),
		"username":       pg.SuperUser,
		"password":       pg.SuperPassword,
		"allowed_roles":  "ro",
	})
	f.write(t, "database/roles/ro", map[string]any{
		"db_name": "pg",
		"creation_statements": `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
			GRANT pg_read_all_data TO "{{name}}";`,
		"default_ttl": "1h",
		"max_ttl":     "2h",
	})
	f.putPolicy(t, "broker-db", brokerDBPolicy)
	return pg
}

// login proves a dynamic credential works: it logs in to PostgreSQL with
// it and asks who it is.
func login(ctx context.Context, pg *pgtest.Server, c providers.Credential) error {
	user, pw := string(c.Data[FieldUsername].Reveal()), string(c.Data[FieldPassword].Reveal())
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN(user, pw, "postgres"))
	if err != nil {
		return fmt.Errorf("logging in as the issued user: %w", err)
	}
	defer conn.Close(ctx)
	var who string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil {
		return err
	}
	if who != user {
		return fmt.Errorf("logged in as %q, issued %q", who, user)
	}
	return nil
}

// TestDatabaseDynamic issues PostgreSQL users through Vault's database
// secrets engine, logs in with them, renews the lease (Vault grants at
// most the role's max_ttl), revokes it and sees the login fail.
func TestDatabaseDynamic(t *testing.T) {
	f := newFixture(t)
	pg := f.databaseEngine(t)
	ctx := context.Background()
	var log logtest.Buffer
	token := f.token(t, "24h", "broker-db")
	p := mustNew(t, Config{
		Address: f.srv.Addr,
		Auth:    Auth{TokenFile: f.file(t, "token", token)},
		Dynamic: &Dynamic{Path: "database/creds/ro"},
		Name:    "orders-db",
		TTL:     3 * time.Hour,
		Logger:  log.Logger(),
	})

	for _, tt := range []struct {
		name string
		ttl  time.Duration
		want time.Duration // expiry from now, within a few seconds
	}{
		{"a policy ttl shorter than Vault's lease", 30 * time.Minute, 30 * time.Minute},
		{"Vault's lease shorter than the cap", 0, time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			cr := issue(t, p, providers.Request{Name: "orders-db", TTL: tt.ttl, Identity: caller})
			after := time.Now()
			if !strings.HasPrefix(cr.ID, "vault:database/creds/ro/") || cr.Kind != Kind || len(cr.Data) != 2 {
				t.Errorf("lease %+v, fields %v", cr.Lease, cr.Data)
			}
			// Vault states durations in whole seconds.
			if cr.ExpiresAt.Before(before.Add(tt.want-time.Second)) || cr.ExpiresAt.After(after.Add(tt.want)) {
				t.Errorf("expiry in %v, want %v", cr.ExpiresAt.Sub(before), tt.want)
			}
			if err := login(ctx, pg, cr); err != nil {
				t.Fatal(err)
			}
			if err := p.Revoke(ctx, cr.Lease); err != nil {
				t.Fatal(err)
			}
		})
	}

	cr := issue(t, p, providers.Request{Name: "orders-db", TTL: 30 * time.Minute, Identity: caller})
	for _, tt := range []struct {
		name      string
		ttl       time.Duration
		atMost    time.Duration
		atLeast   time.Duration
		shortened bool
	}{
		{"renewed for 10 minutes", 10 * time.Minute, 10 * time.Minute, 10*time.Minute - 5*time.Second, false},
		{"asked beyond the role's max_ttl: Vault grants less", 5 * time.Hour, 2 * time.Hour, time.Hour, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			renewed, err := p.Renew(ctx, cr.Lease, tt.ttl)
			if err != nil {
				t.Fatal(err)
			}
			after := time.Now()
			// Vault states durations in whole seconds.
			if renewed.ExpiresAt.After(after.Add(tt.atMost+time.Second)) || renewed.ExpiresAt.Before(before.Add(tt.atLeast)) {
				t.Errorf("renewed until %v from now, want between %v and %v", renewed.ExpiresAt.Sub(before), tt.atLeast, tt.atMost)
			}
			if tt.shortened && !renewed.ExpiresAt.Before(before.Add(tt.ttl)) {
				t.Errorf("renewed until %v from now: not shorter than asked (%v)", renewed.ExpiresAt.Sub(before), tt.ttl)
			}
			if renewed.ID != cr.ID {
				t.Errorf("renewal changed the lease id")
			}
			if err := login(ctx, pg, cr); err != nil {
				t.Fatalf("after renewal: %v", err)
			}
		})
	}

	if err := p.Revoke(ctx, cr.Lease); err != nil {
		t.Fatal(err)
	}
	if err := login(ctx, pg, cr); err == nil {
		t.Fatal("the revoked user still logs in")
	}
	for _, id := range []string{cr.ID, "vault:database/creds/ro/NoSuchLease0000000000000"} {
		if err := p.Revoke(ctx, providers.Lease{ID: id}); err != nil {
			t.Errorf("revoking %s, which Vault does not know: %v", id, err)
		}
	}
	if _, err := p.Renew(ctx, cr.Lease, time.Minute); !errors.Is(err, ErrNotRenewable) {
		t.Errorf("renewing a revoked lease: %v, want ErrNotRenewable", err)
	}
	if strings.Contains(log.String(), token) || strings.Contains(log.String(), pg.SuperPassword) {
		t.Errorf("the log carries a secret: %s", log.String())
	}
}

// TestConformanceDynamic runs the provider suite on database credentials,
// proving each works by logging in to PostgreSQL and fails after Revoke.
// The failing provider holds the same token for a Vault address that
// refuses connections; the canary is the broker's token.
func TestConformanceDynamic(t *testing.T) {
	f := newFixture(t)
	pg := f.databaseEngine(t)
	token := f.token(t, "24h", "broker-db")
	var log logtest.Buffer
	cfg := Config{
		Address: f.srv.Addr,
		Auth:    Auth{TokenFile: f.file(t, "token", token)},
		Dynamic: &Dynamic{Path: "database/creds/ro"},
		Name:    "conformance",
		Logger:  log.Logger(),
	}
	p := mustNew(t, cfg)
	cfg.Address = closedAddress(t)
	failing := mustNew(t, cfg)
	providertest.Run(t, providertest.Case{
		Kind:     Kind,
		Fields:   cfg.Fields(),
		Provider: p,
		Failing:  failing,
		Canary:   token,
		Logs:     log.String,
		Use:      func(ctx context.Context, c providers.Credential) error { return login(ctx, pg, c) },
	})
}
