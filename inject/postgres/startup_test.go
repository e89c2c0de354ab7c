package postgres_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/inject/postgres"
	"github.com/credbroker/credbroker/internal/pgtest"
)

// rawClient speaks the protocol by hand and keeps every byte it reads.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	got  bytes.Buffer
	fe   *pgproto3.Frontend
}

// raw connects to the listener.
func (s *served) raw(t *testing.T) *rawClient {
	t.Helper()
	network, addr := "unix", filepath.Join(s.dir, ".s.PGSQL.5432")
	if s.dir == "" {
		network, addr = "tcp", net.JoinHostPort(s.host, strconv.Itoa(s.port))
	}
	conn, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(hangBound))
	c := &rawClient{t: t, conn: conn}
	c.fe = pgproto3.NewFrontend(io.TeeReader(conn, &c.got), conn)
	return c
}

// write sends bytes as they are.
func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// send sends a message.
func (c *rawClient) send(m pgproto3.FrontendMessage) {
	c.t.Helper()
	b, err := m.Encode(nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(b)
}

// byte1 reads the one-byte answer to SSLRequest or GSSENCRequest.
func (c *rawClient) byte1() byte {
	c.t.Helper()
	var b [1]byte
	if _, err := io.ReadFull(io.TeeReader(c.conn, &c.got), b[:]); err != nil {
		c.t.Fatal(err)
	}
	return b[0]
}

// until receives messages up to and including one of type T, failing on
// an ErrorResponse, and returns them.
func until[T pgproto3.BackendMessage](c *rawClient) []pgproto3.BackendMessage {
	c.t.Helper()
	var out []pgproto3.BackendMessage
	for {
		m, err := c.fe.Receive()
		if err != nil {
			c.t.Fatalf("after %d messages: %v", len(out), err)
		}
		out = append(out, copyMessage(m))
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			c.t.Fatalf("error: %s (%s)", e.Message, e.Code)
		}
		if _, ok := m.(T); ok {
			return out
		}
	}
}

// copyMessage keeps the messages the tests look at past the next Receive.
func copyMessage(m pgproto3.BackendMessage) pgproto3.BackendMessage {
	switch m := m.(type) {
	case *pgproto3.BackendKeyData:
		c := *m
		c.SecretKey = bytes.Clone(m.SecretKey)
		return &c
	case *pgproto3.NegotiateProtocolVersion:
		c := *m
		return &c
	case *pgproto3.DataRow:
		c := pgproto3.DataRow{}
		for _, v := range m.Values {
			c.Values = append(c.Values, bytes.Clone(v))
		}
		return &c
	}
	return m
}

// fatal receives an ErrorResponse and then the end of the connection.
func (c *rawClient) fatal() *pgproto3.ErrorResponse {
	c.t.Helper()
	m, err := c.fe.Receive()
	if err != nil {
		c.t.Fatalf("no ErrorResponse: %v", err)
	}
	e, ok := m.(*pgproto3.ErrorResponse)
	if !ok {
		c.t.Fatalf("%T, want an ErrorResponse", m)
	}
	cp := *e
	if _, err := c.fe.Receive(); err == nil {
		c.t.Fatal("the connection goes on after a FATAL")
	}
	return &cp
}

// startup is a protocol 3.0 StartupMessage with params.
func startup(params map[string]string) *pgproto3.StartupMessage {
	return &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}
}

// packet is a startup packet: a length word and code, then body.
func packet(code uint32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, body...)
}

// TestStartup: what the listener answers to each startup packet.
func TestStartup(t *testing.T) {
	h := newHarness(t)
	s := h.listen(t, "unix", credApp, nil)
	user := map[string]string{"user": "someone", "database": "appdb"}

	t.Run("GSSENCRequest refused, then a session", func(t *testing.T) {
		c := s.raw(t)
		c.write(packet(80877104, nil))
		if b := c.byte1(); b != 'N' {
			t.Fatalf("answer %q", b)
		}
		c.send(startup(user))
		msgs := until[*pgproto3.ReadyForQuery](c)
		if _, ok := msgs[0].(*pgproto3.AuthenticationOk); !ok {
			t.Fatalf("first message %T, want AuthenticationOk", msgs[0])
		}
	})
	t.Run("SSLRequest without listener_tls", func(t *testing.T) {
		c := s.raw(t)
		c.write(packet(80877103, nil))
		if b := c.byte1(); b != 'N' {
			t.Fatalf("answer %q", b)
		}
		c.send(startup(user))
		until[*pgproto3.ReadyForQuery](c)
	})
	t.Run("SSLRequest twice", func(t *testing.T) {
		c := s.raw(t)
		c.write(packet(80877103, nil))
		c.byte1()
		c.write(packet(80877103, nil))
		if e := c.fatal(); e.Code != "08P01" || e.Severity != "FATAL" {
			t.Fatalf("%+v", e)
		}
	})
	t.Run("too long", func(t *testing.T) {
		c := s.raw(t)
		c.write(binary.BigEndian.AppendUint32(nil, postgres.MaxStartupLen+1))
		if e := c.fatal(); e.Code != "08P01" || !strings.Contains(e.Message, "invalid length of startup packet: 10001 bytes") {
			t.Fatalf("%+v", e)
		}
	})
	t.Run("protocol 2", func(t *testing.T) {
		c := s.raw(t)
		c.write(packet(2<<16, make([]byte, 288)))
		if e := c.fatal(); e.Code != "0A000" || !strings.Contains(e.Message, "unsupported frontend protocol 2.0") {
			t.Fatalf("%+v", e)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		c := s.raw(t)
		c.write(packet(3<<16, []byte("user\x00someone\x00database")))
		if e := c.fatal(); e.Code != "08P01" {
			t.Fatalf("%+v", e)
		}
	})
	t.Run("missing user", func(t *testing.T) {
		c := s.raw(t)
		c.send(startup(map[string]string{"database": "appdb"}))
		e := c.fatal()
		if e.Code != "28000" || e.Message != "credbroker: no PostgreSQL user name specified in startup packet" || !strings.HasPrefix(e.Detail, "credbroker decision ") {
			t.Fatalf("%+v", e)
		}
		id := strings.TrimPrefix(e.Detail, "credbroker decision ")
		rows := h.rows(t, audit.Filter{Decision: audit.DecisionError})
		if len(rows) == 0 || rows[len(rows)-1].DecisionID != id || rows[len(rows)-1].Attestor != "unix" {
			t.Fatalf("the refusal is not recorded against the attested caller: %+v", rows)
		}
	})
	t.Run("replication", func(t *testing.T) {
		c := s.raw(t)
		c.send(startup(map[string]string{"user": "someone", "replication": "database"}))
		if e := c.fatal(); e.Code != "0A000" || !strings.Contains(e.Message, "replication connections are not supported") {
			t.Fatalf("%+v", e)
		}
	})
	t.Run("protocol 3.2 negotiated down", func(t *testing.T) {
		c := s.raw(t)
		c.send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: map[string]string{"user": "someone", "database": "appdb", "_pq_.future": "1"}})
		msgs := until[*pgproto3.ReadyForQuery](c)
		n, ok := msgs[0].(*pgproto3.NegotiateProtocolVersion)
		if !ok || n.NewestMinorProtocol != 0 || len(n.UnrecognizedOptions) != 1 || n.UnrecognizedOptions[0] != "_pq_.future" {
			t.Fatalf("first message %#v, want NegotiateProtocolVersion to 3.0 declining _pq_.future", msgs[0])
		}
	})
	t.Run("unknown cancel key", func(t *testing.T) {
		c := s.raw(t)
		c.write(packet(80877102, []byte{0, 0, 0, 1, 1, 2, 3, 4}))
		if b, err := io.ReadAll(c.conn); len(b) != 0 || err != nil {
			t.Fatalf("read %q, %v: want the connection closed without a word", b, err)
		}
	})
	h.noCanary(t, "the broker's log", h.logs.String())
}

// TestListenerTLS: with listener_tls, psql negotiates TLS with the
// listener (verify-full against the listener's CA) on a TCP listener.
func TestListenerTLS(t *testing.T) {
	h := newHarness(t)
	srvTLS, ca := pgtest.NewTLS(t, "127.0.0.1")
	dir := t.TempDir()
	s := h.listen(t, "tcp", credApp, func(c *postgres.Config) {
		c.ListenerTLS = postgres.ListenerTLSConfig{CertFile: write(t, dir, "l.crt", string(srvTLS.CertPEM)), KeyFile: write(t, dir, "l.key", string(srvTLS.KeyPEM))}
	})
	dsn := "host=127.0.0.1 port=" + strconv.Itoa(s.port) + " user=someone dbname=appdb sslmode=verify-full sslrootcert=" + write(t, dir, "ca.pem", string(ca))
	out, errOut, err := run(t, "psql", "-X", "-w", "-At", dsn, "-c", `\conninfo`, "-c", "SELECT current_user")
	if err != nil || !strings.Contains(out, "SSL connection (protocol: TLSv1.3") || !strings.HasSuffix(strings.TrimSpace(out), "app") {
		t.Fatalf("psql over TLS: %q %q %v\n%s", out, errOut, err, h.logs)
	}
	// The plain listener refuses TLS, and libpq says so.
	plain := h.listen(t, "tcp", credApp, nil)
	_, errOut, err = run(t, "psql", "-X", "-w", "host=127.0.0.1 port="+strconv.Itoa(plain.port)+" user=someone dbname=appdb sslmode=require", "-c", "SELECT 1")
	if err == nil || !strings.Contains(errOut, "server does not support SSL, but SSL was required") {
		t.Fatalf("sslmode=require against a listener without listener_tls: %v %q", err, errOut)
	}
}

// TestPasswordNeverReachesClient: every byte a client reads in a whole
// session (startup, a query, the end), the errors of a refused login, the
// broker's log and the audit database hold no issued password.
func TestPasswordNeverReachesClient(t *testing.T) {
	h := newHarness(t)
	s := h.listen(t, "unix", credApp, nil)
	c := s.raw(t)
	c.send(startup(map[string]string{"user": "someone", "database": "appdb", "application_name": "raw"}))
	msgs := until[*pgproto3.ReadyForQuery](c)
	var key *pgproto3.BackendKeyData
	for _, m := range msgs {
		if k, ok := m.(*pgproto3.BackendKeyData); ok {
			key = k
		}
	}
	if key == nil || len(key.SecretKey) != 4 {
		t.Fatalf("BackendKeyData %+v", key)
	}
	c.send(&pgproto3.Query{String: "SELECT current_user, pg_backend_pid(), current_setting('application_name')"})
	msgs = until[*pgproto3.ReadyForQuery](c)
	var row []string
	for _, m := range msgs {
		if d, ok := m.(*pgproto3.DataRow); ok {
			for _, v := range d.Values {
				row = append(row, string(v))
			}
		}
	}
	if len(row) != 3 || row[0] != "app" || row[1] != strconv.Itoa(int(key.ProcessID)) || row[2] != "raw" {
		t.Fatalf("row %q, key pid %d: want app, the key's pid, raw", row, key.ProcessID)
	}
	c.send(&pgproto3.Terminate{})
	rest, _ := io.ReadAll(io.TeeReader(c.conn, &c.got))
	if len(rest) != 0 {
		t.Errorf("bytes after Terminate: %q", rest)
	}
	h.noCanary(t, "the client", c.got.String())

	// A refused login: the server's error, and the broker's own.
	for _, cred := range []string{credWrongPW, credClear} {
		refused := h.listen(t, "unix", cred, func(c *postgres.Config) {
			if cred == credClear {
				c.TLS = postgres.TLSConfig{Mode: postgres.ModeDisable}
			}
		})
		rc := refused.raw(t)
		rc.send(startup(map[string]string{"user": "someone"}))
		e := rc.fatal()
		if e.Code == "" || strings.Contains(rc.got.String(), "not-the-password") || strings.Contains(rc.got.String(), "clear-pw") {
			t.Errorf("%s: %+v (%q)", cred, e, rc.got.String())
		}
	}

	logs := h.logs.String()
	for _, pw := range []string{h.canary, "not-the-password", "clear-pw"} {
		if strings.Contains(logs, pw) {
			t.Errorf("a password is in the broker's log")
		}
	}
	for _, f := range []string{h.db, h.db + "-wal"} {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(h.canary)) {
			t.Errorf("the password is in %s", f)
		}
	}
}
