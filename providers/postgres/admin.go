package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrClosed is returned by calls on a closed Provider.
var ErrClosed = errors.New("postgres: provider closed")

// admin is a small pool of connections as the admin role. A slot holds a
// connection, or nil when it is to be (re)connected; the DSN file is read
// at each connect, so that a rotated file is used from the next connect on.
type admin struct {
	file     string
	database string // overrides the DSN's database when set
	slots    chan *pgx.Conn
	closed   atomic.Bool
}

func newAdmin(file, database string, n int) *admin {
	a := &admin{file: file, database: database, slots: make(chan *pgx.Conn, n)}
	for range n {
		a.slots <- nil
	}
	return a
}

// config reads and parses the DSN file. Its errors never carry the DSN:
// pgx's parse errors may echo it, password included, so they are replaced.
func (a *admin) config() (*pgx.ConnConfig, error) {
	b, err := os.ReadFile(a.file)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is said once, below
		}
		return nil, fmt.Errorf("admin_dsn_file %s: %w", a.file, err)
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" {
		return nil, fmt.Errorf("admin_dsn_file %s is empty", a.file)
	}
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("admin_dsn_file %s does not hold a valid libpq URL or key=value DSN", a.file)
	}
	if a.database != "" {
		cc.Database = a.database
	}
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	cc.RuntimeParams["application_name"] = "credbroker"
	return cc, nil
}

// acquire returns a connection, connecting its slot first when needed, and
// whether it is new. The caller must release it.
func (a *admin) acquire(ctx context.Context) (*pgx.Conn, bool, error) {
	var c *pgx.Conn
	select {
	case c = <-a.slots:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	if a.closed.Load() {
		a.slots <- c
		return nil, false, ErrClosed
	}
	if c != nil && !c.IsClosed() {
		return c, false, nil
	}
	c, err := a.connect(ctx)
	if err != nil {
		a.slots <- nil
		return nil, false, err
	}
	return c, true, nil
}

// do runs fn on a connection. When fn fails because a connection kept from
// before broke (the server restarted, the session was ended), fn runs once
// more on a new connection: fn must be safe to repeat after a failure.
func (a *admin) do(ctx context.Context, fn func(*pgx.Conn) error) error {
	for {
		c, fresh, err := a.acquire(ctx)
		if err != nil {
			return err
		}
		err = fn(c)
		broken := c.IsClosed()
		a.release(c)
		if err == nil || fresh || !broken || ctx.Err() != nil {
			return err
		}
	}
}

// release returns c to its slot, or closes it when it is not idle (a
// statement cancelled mid-way, a transaction left open).
func (a *admin) release(c *pgx.Conn) {
	if c.IsClosed() || c.PgConn().TxStatus() != 'I' {
		_ = c.Close(context.Background())
		c = nil
	}
	a.slots <- c
}

// close closes every connection, waiting for those in use to be released.
func (a *admin) close(ctx context.Context) error {
	a.closed.Store(true)
	n := cap(a.slots)
	for range n {
		select {
		case c := <-a.slots:
			if c != nil {
				_ = c.Close(ctx)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for range n {
		a.slots <- nil
	}
	return nil
}

func (a *admin) connect(ctx context.Context) (*pgx.Conn, error) {
	cc, err := a.config()
	if err != nil {
		return nil, err
	}
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s as %q: %w", address(cc), cc.User, safeError(ctx, err, cc.Password))
	}
	return c, nil
}

// address is where cc connects: host:port, or the socket directory.
func address(cc *pgx.ConnConfig) string {
	if strings.HasPrefix(cc.Host, "/") {
		return cc.Host
	}
	return net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port)))
}

// redactedError is an error whose text was checked for a secret. It
// unwraps only to what callers branch on: a context error or the server's
// error.
type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

// safeError returns err with every occurrence of secret removed from its
// text. The server's own error (PgError: severity, message, SQLSTATE) and a
// context's error stay reachable through errors.As and errors.Is.
func safeError(ctx context.Context, err error, secret string) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	var cause error
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		cause = pe
	case errors.Is(err, context.Canceled):
		cause = context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		cause = context.DeadlineExceeded
	}
	msg := err.Error()
	if cause != nil {
		msg = cause.Error()
	}
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, "[redacted]")
	}
	return &redactedError{msg: msg, cause: cause}
}
