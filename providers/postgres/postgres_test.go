package postgres

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/internal/logtest"
	"github.com/credbroker/credbroker/internal/pgtest"
	"github.com/credbroker/credbroker/providers"
	"github.com/credbroker/credbroker/providers/providertest"
)

// fixture is a real PostgreSQL 15 (internal/pgtest, SCRAM-SHA-256) set up
// as a deployment would be: an admin role with CREATEROLE whose DSN is in a
// file, a grant role with privileges on one table and not on another, and
// a role that receives revoked roles' objects.
type fixture struct {
	srv      *pgtest.Server
	password string // the admin role's: the conformance canary
	dsnFile  string
}

func setup(t testing.TB) *fixture {
	t.Helper()
	srv := pgtest.Start(t)
	f := &fixture{srv: srv, password: "CANARY-pgadmin-" + rand.Text()}
	for _, sql := range []string{
		`CREATE ROLE broker_admin LOGIN CREATEROLE PASSWORD '` + f.password + `'`,
		`CREATE ROLE orders_rw NOLOGIN`,
		`CREATE ROLE orders_owner NOLOGIN`,
		`GRANT orders_rw TO broker_admin WITH ADMIN OPTION`,
		`GRANT orders_owner TO broker_admin`,
		`CREATE TABLE orders (id int)`,
		`INSERT INTO orders VALUES (1), (2)`,
		`GRANT SELECT, INSERT ON orders TO orders_rw`,
		`CREATE TABLE payroll (salary int)`,
		`GRANT CREATE ON SCHEMA public TO orders_rw`,
		// Every statement of the broker's admin sessions reaches the log,
		// which shows what the server saw of issued passwords.
		`ALTER ROLE broker_admin SET log_statement = 'all'`,
	} {
		srv.Exec(t, sql)
	}
	f.dsnFile = f.writeDSN(t, "admin.dsn", f.password)
	return f
}

// writeDSN writes the admin DSN with password to a file of its own.
func (f *fixture) writeDSN(t testing.TB, name, password string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(f.srv.DSN("broker_admin", password, "postgres")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (f *fixture) config(installID string) Config {
	return Config{
		Name:         "orders-db",
		AdminDSNFile: f.dsnFile,
		Grant:        []string{"orders_rw"},
		ReassignTo:   "orders_owner",
		InstallID:    installID,
	}
}

func (f *fixture) provider(t testing.TB, cfg Config) *Provider {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// login connects with an issued credential, as an application would: to
// its host, port and database, over TCP, authenticating with SCRAM-SHA-256.
func login(ctx context.Context, c providers.Credential) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(string(c.Data[FieldPort].Reveal()))
	if err != nil {
		return nil, err
	}
	cc.Host, cc.Port = string(c.Data[FieldHost].Reveal()), uint16(port)
	cc.Database = string(c.Data[FieldDatabase].Reveal())
	cc.User, cc.Password = string(c.Data[FieldUsername].Reveal()), string(c.Data[FieldPassword].Reveal())
	return pgx.ConnectConfig(ctx, cc)
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

var payments = attest.Identity{Method: "kubernetes", Subject: "system:serviceaccount:payments:api"}

// TestIssue logs in with an issued credential and finds exactly the
// granted privileges, the expiry and the install's mark on the role, and
// no plaintext password in the server's statement log.
func TestIssue(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	cfg := f.config("install-a")
	cfg.ConnectionLimit = 3
	p := f.provider(t, cfg)
	cr, err := p.Credential(ctx, providers.Request{Name: "orders-db", TTL: 10 * time.Minute, Identity: payments})
	if err != nil {
		t.Fatal(err)
	}
	role := string(cr.Data[FieldUsername].Reveal())
	if !strings.HasPrefix(role, "credbroker_system_serviceaccount_payments_api_") || cr.ID != "postgres:"+role {
		t.Errorf("role %q, lease id %q", role, cr.ID)
	}
	if got := string(cr.Data[FieldHost].Reveal()) + ":" + string(cr.Data[FieldPort].Reveal()) + "/" + string(cr.Data[FieldDatabase].Reveal()); got != "127.0.0.1:"+strconv.Itoa(f.srv.Port)+"/postgres" {
		t.Errorf("host, port, database %s: want the DSN's", got)
	}

	conn, err := login(ctx, cr)
	if err != nil {
		t.Fatalf("login with the issued credential: %v", err)
	}
	defer conn.Close(ctx)
	for _, tt := range []struct {
		name, sql string
		code      string // SQLSTATE; "" for success
	}{
		{"granted table readable", `SELECT count(*) FROM orders`, ""},
		{"granted insert", `INSERT INTO orders VALUES (3)`, ""},
		{"other table denied", `SELECT count(*) FROM payroll`, "42501"},
		{"cannot create roles", `CREATE ROLE escalate LOGIN`, "42501"},
		{"cannot create databases", `CREATE DATABASE escalate`, "42501"},
		{"cannot grant itself more", `GRANT pg_read_all_data TO ` + pgx.Identifier{role}.Sanitize(), "42501"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := conn.Exec(ctx, tt.sql)
			if got := sqlState(err); got != tt.code || (tt.code == "" && err != nil) {
				t.Fatalf("%s: %v, want SQLSTATE %q", tt.sql, err, tt.code)
			}
		})
	}

	var elevated bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls
		FROM pg_roles WHERE rolname = current_user`).Scan(&elevated); err != nil || elevated {
		t.Errorf("the issued role has a superuser, createrole, createdb, replication or bypassrls attribute (%v)", err)
	}

	var until time.Time
	var connLimit int
	var comment, stored string
	var members []string
	err = f.srv.Conn(t).QueryRow(ctx, `SELECT a.rolvaliduntil, a.rolconnlimit, shobj_description(a.oid, 'pg_authid'), a.rolpassword,
			ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = a.oid ORDER BY 1)
		FROM pg_authid a WHERE a.rolname = $1`, role).Scan(&until, &connLimit, &comment, &stored, &members)
	if err != nil {
		t.Fatal(err)
	}
	if !until.Equal(cr.ExpiresAt) {
		t.Errorf("VALID UNTIL %v, lease expiry %v", until, cr.ExpiresAt)
	}
	if connLimit != 3 || comment != "credbroker install install-a" || !slices.Equal(members, []string{"orders_rw"}) {
		t.Errorf("connection limit %d, comment %q, member of %v", connLimit, comment, members)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$4096:") {
		t.Errorf("stored password %q is not a SCRAM-SHA-256 verifier", stored)
	}

	log := f.srv.Log(t)
	if !strings.Contains(log, "CREATE ROLE "+pgx.Identifier{role}.Sanitize()) || !strings.Contains(log, "SCRAM-SHA-256$") {
		t.Fatal("the server log lacks the CREATE ROLE statement: statement logging is not on")
	}
	if strings.Contains(log, string(cr.Data[FieldPassword].Reveal())) {
		t.Error("the issued password reached the server's log")
	}
}

// TestOverrides: host, port and database come from the config when set;
// the admin connection then uses that database.
func TestOverrides(t *testing.T) {
	f := setup(t)
	f.srv.Exec(t, `CREATE DATABASE orders`)
	cfg := f.config("install-a")
	cfg.Host, cfg.Port, cfg.Database, cfg.Grant = "db.internal", 6432, "orders", nil
	cr, err := f.provider(t, cfg).Credential(context.Background(), providers.Request{Identity: payments})
	if err != nil {
		t.Fatal(err)
	}
	got := string(cr.Data[FieldHost].Reveal()) + ":" + string(cr.Data[FieldPort].Reveal()) + "/" + string(cr.Data[FieldDatabase].Reveal())
	if got != "db.internal:6432/orders" {
		t.Errorf("host, port, database %s", got)
	}
	var n int
	if err := f.srv.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE usename = 'broker_admin' AND datname = 'orders'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d admin sessions on the database orders, %v", n, err)
	}
}

// TestRevoke ends an open session of the role, hands its objects to
// reassign_to, drops it, and is idempotent.
func TestRevoke(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	p := f.provider(t, f.config("install-a"))
	cr, err := p.Credential(ctx, providers.Request{Identity: payments})
	if err != nil {
		t.Fatal(err)
	}
	role := string(cr.Data[FieldUsername].Reveal())
	conn, err := login(ctx, cr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE scratch (v int)`); err != nil {
		t.Fatal(err)
	}

	if err := p.Revoke(ctx, cr.Lease); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, err := conn.Exec(ctx, `SELECT 1`); err == nil {
		t.Error("the role's session survived Revoke")
	}
	admin := f.srv.Conn(t)
	var owner string
	if err := admin.QueryRow(ctx, `SELECT tableowner FROM pg_tables WHERE tablename = 'scratch'`).Scan(&owner); err != nil || owner != "orders_owner" {
		t.Errorf("scratch owned by %q (%v), want orders_owner", owner, err)
	}
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, role).Scan(&n); err != nil || n != 0 {
		t.Errorf("role %s still exists (%d, %v)", role, n, err)
	}
	if _, err := login(ctx, cr); sqlState(err) != "28P01" {
		t.Errorf("login after revoke: %v, want a refused password", err)
	}

	for _, tt := range []struct {
		name string
		id   string
		ok   bool
	}{
		{"again", cr.ID, true},
		{"never issued", "postgres:credbroker_never_issued_abcdefghij", true},
		{"not a role of this provider", "postgres:broker_admin", false},
		{"another kind", "vault:credbroker_x", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Revoke(ctx, providers.Lease{ID: tt.id, Kind: Kind})
			if (err == nil) != tt.ok {
				t.Fatalf("revoke %s: %v", tt.id, err)
			}
		})
	}

	// A role with the prefix that this install did not mark is left alone.
	f.srv.Exec(t, `CREATE ROLE credbroker_foreign_abcdefghij LOGIN`)
	f.srv.Exec(t, `COMMENT ON ROLE credbroker_foreign_abcdefghij IS 'credbroker install install-b'`)
	err = p.Revoke(ctx, providers.Lease{ID: "postgres:credbroker_foreign_abcdefghij", Kind: Kind})
	if err == nil || !strings.Contains(err.Error(), "does not carry this install's comment") {
		t.Errorf("revoke of another install's role: %v", err)
	}
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = 'credbroker_foreign_abcdefghij'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("another install's role was dropped (%d, %v)", n, err)
	}
}

// TestOwned lists exactly this install's roles: not another install's with
// the same prefix, not this install's under another prefix, not revoked
// ones.
func TestOwned(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	a := f.provider(t, f.config("install-a"))
	b := f.provider(t, f.config("install-b"))
	otherPrefix := f.config("install-a")
	otherPrefix.RolePrefix = "app_"
	c := f.provider(t, otherPrefix)
	f.srv.Exec(t, `CREATE ROLE credbroker_by_hand_abcdefghij LOGIN`)

	var want []providers.Lease
	for i := range 3 {
		cr, err := a.Credential(ctx, providers.Request{Name: "orders-db", TTL: time.Duration(i+1) * time.Minute, Identity: payments})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, providers.Lease{ID: cr.ID, Credential: "orders-db", Kind: Kind, ExpiresAt: cr.ExpiresAt})
	}
	for _, p := range []*Provider{b, c} {
		if _, err := p.Credential(ctx, providers.Request{Identity: payments}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Revoke(ctx, want[0]); err != nil {
		t.Fatal(err)
	}
	want = want[1:]
	slices.SortFunc(want, func(x, y providers.Lease) int { return strings.Compare(x.ID, y.ID) })

	got, err := a.Owned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("owned %v, want %v", got, want)
	}
	for i := range got {
		if got[i].ID != want[i].ID || got[i].Kind != Kind || got[i].Credential != "orders-db" || !got[i].ExpiresAt.Equal(want[i].ExpiresAt) {
			t.Errorf("owned[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.Owned(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("owned with a cancelled context: %v", err)
	}
}

// TestOutage: an admin server down at start fails issues with an error,
// and the provider recovers when it is back, without a failed issue for the
// connection that broke while idle.
func TestOutage(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	p := f.provider(t, f.config("install-a"))
	if _, err := p.Credential(ctx, providers.Request{Identity: payments}); err != nil {
		t.Fatal(err)
	}
	f.srv.Stop(t)
	_, err := p.Credential(ctx, providers.Request{Identity: payments})
	if err == nil || strings.Contains(err.Error(), f.password) {
		t.Fatalf("issue while the server is down: %v", err)
	}
	if !strings.Contains(err.Error(), `connecting to 127.0.0.1:`) {
		t.Errorf("error %q does not say where it connected", err)
	}
	f.srv.Restart(t)
	if _, err := p.Credential(ctx, providers.Request{Identity: payments}); err != nil {
		t.Fatalf("issue after restart: %v", err)
	}
	// The connection is idle and healthy; restart again: the issue that
	// finds it broken retries on a new one.
	f.srv.Restart(t)
	if _, err := p.Credential(ctx, providers.Request{Identity: payments}); err != nil {
		t.Fatalf("issue after the second restart: %v", err)
	}
}

// TestRotatedDSN: the DSN file is read again at reconnect, so a rotated
// admin password is used once the old sessions end.
func TestRotatedDSN(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	p := f.provider(t, f.config("install-a"))
	if _, err := p.Credential(ctx, providers.Request{Identity: payments}); err != nil {
		t.Fatal(err)
	}
	const rotated = "CANARY-rotated-admin-password"
	f.srv.Exec(t, `ALTER ROLE broker_admin PASSWORD '`+rotated+`'`)
	if err := os.WriteFile(f.dsnFile, []byte(f.srv.DSN("broker_admin", rotated, "postgres")), 0o600); err != nil {
		t.Fatal(err)
	}
	f.srv.Exec(t, `SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE usename = 'broker_admin'`)
	if _, err := p.Credential(ctx, providers.Request{Identity: payments}); err != nil {
		t.Fatalf("issue after rotation: %v", err)
	}
}

// TestScramVerifierMatchesServer: for the same password, salt and
// iterations, the verifier computed here is the one PostgreSQL computes.
func TestScramVerifierMatchesServer(t *testing.T) {
	srv := pgtest.Start(t)
	password := newPassword()
	srv.Exec(t, `CREATE ROLE scram_probe PASSWORD '`+password+`'`)
	var stored string
	if err := srv.Conn(t).QueryRow(context.Background(), `SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_probe'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
	head, _, _ := strings.Cut(strings.TrimPrefix(stored, "SCRAM-SHA-256$"), "$")
	iter, salt64, _ := strings.Cut(head, ":")
	n, err1 := strconv.Atoi(iter)
	salt, err2 := base64.StdEncoding.DecodeString(salt64)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("stored verifier %q: %v", stored, err)
	}
	got, err := scramVerifier(password, salt, n)
	if err != nil || got != stored {
		t.Fatalf("verifier\n%s, server's\n%s (%v)", got, stored, err)
	}
}

// recorder keeps what a provider issued, to look for it in logs.
type recorder struct {
	*Provider
	mu     sync.Mutex
	issued []providers.Credential
}

func (r *recorder) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	c, err := r.Provider.Credential(ctx, req)
	if err == nil {
		r.mu.Lock()
		r.issued = append(r.issued, c)
		r.mu.Unlock()
	}
	return c, err
}

// TestConformance runs the provider suite against PostgreSQL; the failing
// provider's DSN file has a wrong admin password. The admin password is the
// canary.
//
// The suite counts every field of 6 bytes or more as a secret. Of this
// provider's fields only the password is: the username is the lease id
// (recorded in the audit log, and named in this provider's log lines and
// errors), and host and database are configuration. So the fixture names a
// database and a host that no message happens to contain ("app", and
// "localhost" while the admin DSN says 127.0.0.1), and the provider's log is
// checked here, for the canary and the passwords.
func TestConformance(t *testing.T) {
	f := setup(t)
	f.srv.Exec(t, `CREATE DATABASE app`)
	logs := &logtest.Buffer{}
	logger := logs.Logger()
	cfg := f.config("install-a")
	cfg.Host, cfg.Database, cfg.Logger = "localhost", "app", logger
	p := &recorder{Provider: f.provider(t, cfg)}
	bad := f.config("install-a")
	bad.AdminDSNFile = f.writeDSN(t, "wrong.dsn", "wrong-"+f.password[len("CANARY-"):])
	bad.Database, bad.Logger = "app", logger
	failing := f.provider(t, bad)
	providertest.Run(t, providertest.Case{
		Kind:     Kind,
		Fields:   cfg.Fields(),
		Provider: p,
		Failing:  failing,
		Canary:   f.password,
		Identity: payments,
		Name:     "orders-db",
		Use: func(ctx context.Context, c providers.Credential) error {
			conn, err := login(ctx, c)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			_, err = conn.Exec(ctx, `SELECT 1`)
			return err
		},
	})
	_, err := failing.Credential(context.Background(), providers.Request{Identity: payments})
	if sqlState(err) != "28P01" || !strings.Contains(err.Error(), `as "broker_admin"`) || strings.Contains(err.Error(), f.password) {
		t.Errorf("failing provider: %v, want the server's refusal of the admin password", err)
	}

	out := logs.String()
	if len(p.issued) == 0 || !strings.Contains(out, string(p.issued[0].Data[FieldUsername].Reveal())) {
		t.Fatalf("the provider logged no issue:\n%s", out)
	}
	for _, c := range p.issued {
		if strings.Contains(out, string(c.Data[FieldPassword].Reveal())) {
			t.Error("an issued password reached the log")
		}
	}
	if strings.Contains(out, f.password) || strings.Contains(out, "wrong-"+f.password[len("CANARY-"):]) {
		t.Error("an admin password reached the log")
	}
}

// BenchmarkIssue measures first-issue latency: a Credential call for a
// subject the broker has no credential for, on a warm admin connection
// ("warm", what the lease manager's cache miss costs) and on a new provider
// that connects first ("cold", the first issue after start).
func BenchmarkIssue(b *testing.B) {
	f := setup(b)
	ctx := context.Background()
	b.Run("warm", func(b *testing.B) {
		p := f.provider(b, f.config("bench"))
		if _, err := p.Credential(ctx, providers.Request{Identity: payments}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := p.Credential(ctx, providers.Request{Identity: payments}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			p, err := New(f.config("bench"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Credential(ctx, providers.Request{Identity: payments}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			p.Close()
			b.StartTimer()
		}
	})
}

// TestBusyAndClosed: waiting for an admin connection honours ctx, and a
// closed provider refuses work.
func TestBusyAndClosed(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	cfg := f.config("install-a")
	cfg.AdminConnections = 1
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := p.admin.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := p.admin.acquire(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("acquire while the one connection is busy, ctx cancelled: %v", err)
	}
	p.admin.release(c)
	if _, err := p.Credential(ctx, providers.Request{Identity: payments}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !c.IsClosed() {
		t.Error("Close left the admin connection open")
	}
	if _, err := p.Credential(ctx, providers.Request{Identity: payments}); !errors.Is(err, ErrClosed) {
		t.Errorf("issue after Close: %v", err)
	}
}

// TestPing checks the start-up probe: a working admin DSN passes, a wrong
// password, a role without CREATEROLE and a stopped server fail, each
// saying so without the password.
func TestPing(t *testing.T) {
	f := setup(t)
	f.srv.Exec(t, `CREATE ROLE no_create LOGIN PASSWORD '`+f.password+`'`)
	ctx := context.Background()
	good := f.provider(t, f.config("ping"))
	if err := good.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	wrong := f.config("ping")
	wrong.AdminDSNFile = f.writeDSN(t, "wrong.dsn", "not-the-password")
	noCreate := f.config("ping")
	noCreate.AdminDSNFile = filepath.Join(t.TempDir(), "nocreate.dsn")
	if err := os.WriteFile(noCreate.AdminDSNFile, []byte(f.srv.DSN("no_create", f.password, "postgres")), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tt := range map[string]struct {
		cfg  Config
		want string
	}{
		"wrong password": {wrong, "password authentication failed"},
		"no createrole":  {noCreate, "grant it CREATEROLE"},
	} {
		err := f.provider(t, tt.cfg).Ping(ctx)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), f.password) {
			t.Errorf("%s: %v, want an error saying %q and no password", name, err, tt.want)
		}
	}
	f.srv.Stop(t)
	if err := f.provider(t, f.config("ping")).Ping(ctx); err == nil || strings.Contains(err.Error(), f.password) {
		t.Errorf("a stopped server: %v", err)
	}
}
