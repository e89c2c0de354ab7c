package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/credbroker/credbroker/providers"
)

// terminateWait bounds how long Revoke waits for each of the role's
// sessions to end after asking it to.
const terminateWait = 10 * time.Second

// Provider issues short-lived PostgreSQL login roles for one credential.
type Provider struct {
	cfg     Config
	log     *slog.Logger
	admin   *admin
	comment string // the comment marking this install's roles
}

var (
	_ providers.Revoker = (*Provider)(nil)
	_ providers.Sweeper = (*Provider)(nil)
)

// New validates cfg and reads the admin DSN file once, so that a missing or
// malformed file fails at start. It does not connect: an unreachable server
// is reported by the first Credential call.
func New(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.InstallID == "" {
		return nil, errors.New("postgres: the install id is not set")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.RolePrefix == "" {
		cfg.RolePrefix = DefaultRolePrefix
	}
	if cfg.AdminConnections == 0 {
		cfg.AdminConnections = DefaultAdminConnections
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Provider{
		cfg:     cfg,
		log:     log.With("credential", cfg.Name, "kind", Kind),
		admin:   newAdmin(cfg.AdminDSNFile, cfg.Database, cfg.AdminConnections),
		comment: "credbroker install " + cfg.InstallID,
	}
	if _, err := p.admin.config(); err != nil {
		return nil, p.errorf("%w", err)
	}
	return p, nil
}

// TTL reports the credential's own lifetime.
func (p *Provider) TTL() time.Duration { return p.cfg.TTL }

// Close closes the admin connections, waiting for calls in flight.
func (p *Provider) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return p.admin.close(ctx)
}

// Credential creates a login role for req's subject: a random password
// sent as a SCRAM-SHA-256 verifier, VALID UNTIL the expiry (now plus the
// smaller of the credential's TTL and req.TTL), member of the Grant roles,
// with the admin role as a member (so that Revoke may end its sessions and
// reassign what it owns), and a comment naming this install. The role and
// its comment are created in one transaction, in one round trip.
func (p *Provider) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	if err := ctx.Err(); err != nil {
		return providers.Credential{}, p.errorf("issuing: %w", err)
	}
	ttl := p.cfg.TTL
	if req.TTL > 0 && req.TTL < ttl {
		ttl = req.TTL
	}
	// PostgreSQL keeps microseconds: the lease states what the server does.
	expires := p.cfg.Now().Add(ttl).Truncate(time.Microsecond)
	role := roleName(p.cfg.RolePrefix, req.Identity.Subject, newSuffix())
	password := newPassword()
	var salt [16]byte
	_, _ = rand.Read(salt[:])
	verifier, err := scramVerifier(password, salt[:], scramIterations)
	if err != nil {
		return providers.Credential{}, p.errorf("issuing: %w", err)
	}

	ident := pgx.Identifier{role}.Sanitize()
	var create strings.Builder
	create.WriteString("CREATE ROLE " + ident + " WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT")
	create.WriteString(" PASSWORD " + quoteLiteral(verifier))
	create.WriteString(" VALID UNTIL " + quoteLiteral(expires.UTC().Format("2006-01-02 15:04:05.999999")+"+00"))
	if p.cfg.ConnectionLimit > 0 {
		create.WriteString(" CONNECTION LIMIT " + strconv.Itoa(p.cfg.ConnectionLimit))
	}
	if len(p.cfg.Grant) > 0 {
		grants := make([]string, len(p.cfg.Grant))
		for i, g := range p.cfg.Grant {
			grants[i] = pgx.Identifier{g}.Sanitize()
		}
		create.WriteString(" IN ROLE " + strings.Join(grants, ", "))
	}
	create.WriteString(" ROLE CURRENT_USER")
	comment := "COMMENT ON ROLE " + ident + " IS " + quoteLiteral(p.comment)

	var cc *pgx.ConnConfig
	err = p.admin.do(ctx, func(c *pgx.Conn) error {
		cc = c.Config()
		// One simple-protocol query of two statements: one round trip,
		// and one implicit transaction.
		_, err := c.Exec(ctx, create.String()+"; "+comment)
		return err
	})
	if err != nil {
		return providers.Credential{}, p.errorf("creating role %s: %w", role, withContext(ctx, err))
	}

	host, port, database := p.cfg.Host, p.cfg.Port, p.cfg.Database
	if host == "" {
		host = cc.Host
	}
	if port == 0 {
		port = int(cc.Port)
	}
	if database == "" {
		database = cc.Database
	}
	lease := providers.Lease{
		ID:         Kind + ":" + role,
		Credential: req.Name,
		Subject:    req.Identity.Subject,
		Kind:       Kind,
		ExpiresAt:  expires,
	}
	p.log.Debug("postgres: role created", "role", role, "subject", req.Identity.Subject, "expires_at", expires)
	return providers.Credential{
		Lease: lease,
		Data: map[string]providers.Secret{
			FieldUsername: providers.NewSecret([]byte(role)),
			FieldPassword: providers.NewSecret([]byte(password)),
			FieldHost:     providers.NewSecret([]byte(host)),
			FieldPort:     providers.NewSecret([]byte(strconv.Itoa(port))),
			FieldDatabase: providers.NewSecret([]byte(database)),
		},
	}, nil
}

// Revoke ends a role issued by this provider: it stops new logins, ends
// the role's sessions, reassigns the objects it owns in the admin
// connection's database to ReassignTo, drops what remains of its
// privileges, and drops the role. A role that no longer exists is revoked
// without error; a role without this install's comment is refused.
func (p *Provider) Revoke(ctx context.Context, lease providers.Lease) error {
	if err := ctx.Err(); err != nil {
		return p.errorf("revoking %s: %w", lease.ID, err)
	}
	role, err := leaseRole(p.cfg.RolePrefix, lease.ID)
	if err != nil {
		return p.errorf("revoking: %w", err)
	}
	err = p.admin.do(ctx, func(c *pgx.Conn) error {
		err := p.revoke(ctx, c, role)
		if isUndefinedRole(err) {
			return nil // dropped meanwhile: by another revocation, or by hand
		}
		return err
	})
	if err != nil {
		return p.errorf("revoking %s: %w", role, withContext(ctx, err))
	}
	p.log.Debug("postgres: role revoked", "role", role)
	return nil
}

func (p *Provider) revoke(ctx context.Context, c *pgx.Conn, role string) error {
	var comment pgtype.Text
	err := c.QueryRow(ctx, `SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1`, role).Scan(&comment)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if comment.String != p.comment {
		return fmt.Errorf("role %s exists but does not carry this install's comment: not dropped", role)
	}
	ident := pgx.Identifier{role}.Sanitize()
	if _, err := c.Exec(ctx, "ALTER ROLE "+ident+" NOLOGIN"); err != nil {
		return err
	}
	var stuck int
	err = c.QueryRow(ctx, `SELECT count(*) FILTER (WHERE NOT pg_terminate_backend(pid, $2))
		FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()`,
		role, terminateWait.Milliseconds()).Scan(&stuck)
	if err != nil {
		return err
	}
	if stuck > 0 {
		return fmt.Errorf("%d sessions of the role did not end within %v", stuck, terminateWait)
	}
	to := "CURRENT_USER"
	if p.cfg.ReassignTo != "" {
		to = pgx.Identifier{p.cfg.ReassignTo}.Sanitize()
	}
	// One query, so one implicit transaction: the role is dropped with its
	// objects reassigned, or nothing changes.
	_, err = c.Exec(ctx, "REASSIGN OWNED BY "+ident+" TO "+to+"; DROP OWNED BY "+ident+"; DROP ROLE "+ident)
	return err
}

// Owned lists the roles this install issued through this provider's
// prefix that still exist, expired or not: those whose name begins with
// the prefix and whose comment names this install. A role without an
// expiry is reported as expiring now.
func (p *Provider) Owned(ctx context.Context) ([]providers.Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, p.errorf("listing roles: %w", err)
	}
	var out []providers.Lease
	err := p.admin.do(ctx, func(c *pgx.Conn) error {
		out = out[:0]
		rows, err := c.Query(ctx, `SELECT rolname, rolvaliduntil FROM pg_roles
			WHERE starts_with(rolname, $1) AND shobj_description(oid, 'pg_authid') = $2
			ORDER BY rolname`, p.cfg.RolePrefix, p.comment)
		if err != nil {
			return err
		}
		now := p.cfg.Now()
		var name string
		var until pgtype.Timestamptz
		_, err = pgx.ForEachRow(rows, []any{&name, &until}, func() error {
			expires := now
			if until.Valid && until.InfinityModifier == pgtype.Finite {
				expires = until.Time
			}
			out = append(out, providers.Lease{ID: Kind + ":" + name, Credential: p.cfg.Name, Kind: Kind, ExpiresAt: expires})
			return nil
		})
		return err
	})
	if err != nil {
		return nil, p.errorf("listing roles: %w", withContext(ctx, err))
	}
	return out, nil
}

// Ping connects with the admin DSN and checks that its role may create
// roles, issuing nothing.
func (p *Provider) Ping(ctx context.Context) error {
	var create bool
	err := p.admin.do(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&create)
	})
	if err != nil {
		return p.errorf("ping: %w", withContext(ctx, err))
	}
	if !create {
		return p.errorf("ping: the admin role may not create roles: grant it CREATEROLE")
	}
	return nil
}

// withContext makes an error of a call whose ctx ended wrap the context's
// error, whatever the driver made of the interruption.
func withContext(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%w: %v", ctxErr, err)
	}
	return err
}

// isUndefinedRole reports whether err is PostgreSQL's undefined_object, as
// ALTER ROLE and DROP ROLE report a role that does not exist.
func isUndefinedRole(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42704"
}

// errorf prefixes an error with the package and the credential.
func (p *Provider) errorf(format string, args ...any) error {
	return fmt.Errorf("postgres: credential %q: "+format, append([]any{p.cfg.Name}, args...)...)
}
