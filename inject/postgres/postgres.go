package postgres

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
)

// Time limits.
const (
	// StartupTimeout bounds a connection's startup — its startup packets,
	// the decision and the upstream login — as PostgreSQL's
	// authentication_timeout does (default one minute).
	StartupTimeout = time.Minute
	// DialTimeout bounds connecting to the upstream.
	DialTimeout = 10 * time.Second
	// CancelTimeout bounds passing a cancel request on.
	CancelTimeout = 10 * time.Second
)

// Log attribute keys.
const (
	keyCredential = "credential"
	keyDecisionID = "decision_id"
	keyError      = "error"
	keyUpstream   = "upstream"
	keyPID        = "pid"
	keyMethod     = "method"
	keyCode       = "sqlstate"
)

// Listener is a PostgreSQL injection listener: applications connect to it
// without a password, and each connection is decided by the broker and
// logged in upstream with the credential the decision obtained.
type Listener struct {
	cred     string
	upstream string // host:port
	upTLS    *tls.Config
	serveTLS *tls.Config // nil: SSLRequest is answered N
	drain    time.Duration
	ambient  bool
	decider  listener.Decider
	opts     listener.Options
	log      *slog.Logger
	keys     keys
}

// New validates cfg and returns a Listener deciding with d. It reads the
// TLS files; the upstream need not be reachable.
func New(cfg Config, d listener.Decider, opts ...listener.Option) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d == nil {
		return nil, errors.New("postgres: a decider is required")
	}
	host, _, _ := net.SplitHostPort(cfg.Upstream) // checked by Validate
	upTLS, err := cfg.TLS.Client(host, ModeVerifyFull)
	if err != nil {
		return nil, fmt.Errorf("postgres: tls: %w", err)
	}
	serveTLS, err := cfg.ListenerTLS.Server()
	if err != nil {
		return nil, fmt.Errorf("postgres: listener_tls: %w", err)
	}
	o := listener.Apply(opts)
	return &Listener{
		cred:     cfg.Credential,
		upstream: cfg.Upstream,
		upTLS:    upTLS,
		serveTLS: serveTLS,
		drain:    cfg.DrainTimeout.Or(),
		ambient:  cfg.AllowAmbient,
		decider:  d,
		opts:     o,
		log:      o.Logger.With(keyCredential, cfg.Credential),
	}, nil
}

// Run serves sessions on ln until ctx ends, then stops accepting and lets
// sessions in progress go on for up to the drain timeout, cutting those
// still open then. It returns nil after a clean drain. The caller makes
// ln: for a Unix socket, wrapped by the unix attestor's Listen; for TCP,
// by its ListenTCP. Run closes it.
func (l *Listener) Run(ctx context.Context, ln net.Listener) error {
	if err := listener.Serve(ctx, ln, l.drain, l.opts, l.serve); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// session is one client connection.
type session struct {
	l      *Listener
	conn   net.Conn // as accepted: what the broker attests
	client net.Conn // conn, or TLS over it once negotiated
}

// serve runs one connection: the startup, one decision, the upstream
// login, then the relay.
func (l *Listener) serve(ctx context.Context, conn net.Conn) {
	s := &session{l: l, conn: conn, client: conn}
	sctx, cancel := context.WithTimeout(ctx, StartupTimeout)
	defer cancel()
	deadline, _ := sctx.Deadline()
	_ = conn.SetDeadline(deadline)

	p, err := s.negotiate(sctx)
	switch {
	case err != nil:
		s.refuseStartup(err)
		return
	case p.kind == packetCancel:
		l.cancel(sctx, p)
		return
	}
	g, err := s.decide(sctx, p)
	if err != nil {
		return
	}
	defer g.Release()
	up, key, err := s.login(sctx, g, p)
	if err != nil {
		return
	}
	defer l.keys.remove(key)
	defer up.conn.Close()
	_ = conn.SetDeadline(time.Time{})
	_ = up.conn.SetDeadline(time.Time{})
	l.log.Debug("postgres: session started", keyDecisionID, g.DecisionID, keyPID, key.pid)
	s.relay(ctx, up)
	l.log.Debug("postgres: session ended", keyDecisionID, g.DecisionID, keyPID, key.pid)
}

// negotiate reads startup packets until a StartupMessage or a
// CancelRequest: SSLRequest is answered S (then TLS) when listener_tls is
// set, else N; GSSENCRequest is answered N. Each may come once. Packets
// are read straight from the connection, never ahead, so no plaintext
// byte sent before TLS is taken for one sent under it.
func (s *session) negotiate(ctx context.Context) (*packet, error) {
	var ssl, gss bool
	for {
		p, err := readPacket(s.client)
		if err != nil {
			return nil, err
		}
		switch p.kind {
		case packetSSL:
			if ssl {
				return nil, protocolViolation("SSLRequest sent twice")
			}
			ssl = true
			if s.l.serveTLS == nil {
				if _, err := s.client.Write([]byte{'N'}); err != nil {
					return nil, err
				}
				continue
			}
			if _, err := s.client.Write([]byte{'S'}); err != nil {
				return nil, err
			}
			tc := tls.Server(s.conn, s.l.serveTLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, fmt.Errorf("TLS handshake with the client: %w", err)
			}
			s.client = tc
		case packetGSSENC:
			if gss {
				return nil, protocolViolation("GSSENCRequest sent twice")
			}
			gss = true
			if _, err := s.client.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		default:
			return p, nil
		}
	}
}

// refuseStartup answers a startup packet the listener refuses with an
// ErrorResponse; a connection that failed or ended gets nothing.
func (s *session) refuseStartup(err error) {
	var se *startupError
	if errors.As(err, &se) {
		s.l.log.Info("postgres: startup refused", keyCode, se.Code, keyError, se.Message)
		s.fatal(se.Code, "credbroker: "+se.Message, "")
		return
	}
	if !errors.Is(err, io.EOF) {
		s.l.log.Debug("postgres: connection ended during the startup", keyError, err)
	}
}

// decide asks the broker for the credential; a refusal is answered to the
// client and returned.
func (s *session) decide(ctx context.Context, p *packet) (*broker.Grant, error) {
	if p.minor > 0 {
		// A newer 3.x client: continue at 3.0, declining its options.
		if err := s.negotiateVersion(p); err != nil {
			return nil, err
		}
	}
	user, _ := p.get("user")
	database, ok := p.get("database")
	if !ok || database == "" {
		database = user
	}
	req := &broker.Request{
		Credential:      s.l.cred,
		Channel:         broker.ChannelPostgres,
		Host:            s.l.upstream,
		Database:        database,
		User:            user,
		UserField:       FieldUsername,
		Session:         true,
		Conn:            s.conn,
		AmbientIfNoPeer: s.l.ambient,
	}
	invalidCode := ""
	switch {
	case user == "":
		req.Invalid, invalidCode = errors.New("no PostgreSQL user name specified in startup packet"), codeAuthorization
	case isReplication(p):
		req.Invalid, invalidCode = errors.New("replication connections are not supported through the credential broker: connect to the server directly"), codeNotSupported
	}
	g, err := s.l.decider.Decide(ctx, req)
	if err == nil {
		return g, nil
	}
	var be *broker.Error
	if !errors.As(err, &be) {
		be = &broker.Error{Kind: broker.KindUnavailable, Message: "the broker failed to decide (its log has the cause)", Err: err}
	}
	code := sqlState(be.Kind)
	if be.Kind == broker.KindBadRequest && invalidCode != "" {
		code = invalidCode
	}
	s.fatal(code, "credbroker: "+be.Message, decisionDetail(be.DecisionID))
	return nil, err
}

// isReplication reports whether the client asks for a replication
// connection (replication=true, on, yes, 1 or database).
func isReplication(p *packet) bool {
	v, ok := p.get("replication")
	if !ok {
		return false
	}
	switch strings.ToLower(v) {
	case "false", "off", "no", "0", "":
		return false
	}
	return true
}

// negotiateVersion tells a client that asked for protocol 3.x, x > 0, that
// the session speaks 3.0 and that none of its protocol options (_pq_.*)
// are recognised, as a PostgreSQL server does.
func (s *session) negotiateVersion(p *packet) error {
	var opts []string
	for _, pr := range p.params {
		if strings.HasPrefix(pr.name, "_pq_.") {
			opts = append(opts, pr.name)
		}
	}
	b, err := (&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: opts}).Encode(nil)
	if err != nil {
		return err
	}
	_, err = s.client.Write(b)
	return err
}

// sqlState maps a refusal's kind to the SQLSTATE the client is told: the
// class PostgreSQL uses for a login refused (28000,
// invalid_authorization_specification) for what the broker refuses, and
// class 08 (08006, connection_failure) for what failed and may succeed
// later.
func sqlState(k broker.Kind) string {
	switch k {
	case broker.KindUnavailable:
		return codeConnectionFailure
	case broker.KindBadRequest:
		return codeProtocolViolation
	default: // unauthenticated, denied, no such credential
		return codeAuthorization
	}
}

// decisionDetail names the decision in an error's detail.
func decisionDetail(id string) string {
	if id == "" {
		return ""
	}
	return "credbroker decision " + id
}

// fatal sends the client an ErrorResponse of severity FATAL.
func (s *session) fatal(code, msg, detail string) {
	b, err := (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg, Detail: detail}).Encode(nil)
	if err == nil {
		_, _ = s.client.Write(b)
	}
}

// login logs in upstream as the granted credential's user, passing the
// server's answers to the client until ReadyForQuery. A failure is
// answered to the client and returned.
func (s *session) login(ctx context.Context, g *broker.Grant, p *packet) (*upstreamConn, clientKey, error) {
	l := s.l
	fail := func(code, msg string, err error) (*upstreamConn, clientKey, error) {
		l.log.Warn("postgres: upstream login failed", keyDecisionID, g.DecisionID, keyUpstream, l.upstream, keyError, err)
		s.fatal(code, "credbroker: "+msg, decisionDetail(g.DecisionID))
		return nil, clientKey{}, err
	}
	user, password := g.Credential.Data[FieldUsername].Reveal(), g.Credential.Data[FieldPassword].Reveal()
	if len(user) == 0 || len(password) == 0 {
		return fail(codeConnectionFailure, fmt.Sprintf("credential %q has no username or no password field", l.cred), errNoPassword)
	}
	up, err := l.dial(ctx, l.upstream)
	if err != nil {
		return fail(codeConnectionFailure, fmt.Sprintf("cannot connect to the upstream %s: %v", l.upstream, err), err)
	}
	database, ok := p.get("database")
	if !ok || database == "" {
		database, _ = p.get("user")
	}
	start, err := (&pgproto3.StartupMessage{ProtocolVersion: protocol30, Parameters: startupParams(p, string(user), database)}).Encode(nil)
	if err == nil {
		_, err = up.conn.Write(start)
	}
	if err != nil {
		up.conn.Close()
		return fail(codeConnectionFailure, fmt.Sprintf("cannot start a session on the upstream %s", l.upstream), err)
	}
	var key clientKey
	keyed := false
	w := bufio.NewWriter(s.client)
	h := &handshake{
		up: up.r, upw: up.conn, client: w, password: password,
		auth: &authenticator{user: user, password: password, tls: up.tls, binding: up.binding},
		key: func(pid uint32, secret []byte) []byte {
			key, keyed = l.keys.add(cancelTarget{addr: up.addr, pid: pid, secret: append([]byte(nil), secret...)}), true
			return key.secret[:]
		},
	}
	err = h.run()
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		l.log.Debug("postgres: upstream login", keyDecisionID, g.DecisionID, keyUpstream, up.addr, keyMethod, h.auth.method)
		return up, key, nil
	}
	up.conn.Close()
	if keyed {
		l.keys.remove(key)
	}
	var ue *upstreamError
	var ae *authError
	switch {
	case errors.As(err, &ue):
		_ = w.Flush() // what the server said before refusing
		l.log.Info("postgres: the upstream refused the session", keyDecisionID, g.DecisionID, keyUpstream, l.upstream, keyCode, ue.resp.Code, keyError, ue.resp.Message)
		s.upstreamFatal(ue, g.DecisionID)
		return nil, clientKey{}, err
	case errors.As(err, &ae):
		return fail(codeAuthorization, "logging in to the upstream "+l.upstream+": "+ae.msg, err)
	default:
		return fail(codeConnectionFailure, "the upstream "+l.upstream+" ended the login: "+err.Error(), err)
	}
}

// upstreamFatal tells the client what the upstream refused, under the
// server's SQLSTATE; before the server accepted the login, the detail says
// that it refused the broker's login for the decision.
func (s *session) upstreamFatal(ue *upstreamError, decisionID string) {
	r := ue.resp
	r.Severity, r.SeverityUnlocalized = "FATAL", "FATAL"
	if !ue.authed {
		d := "credbroker: the upstream " + s.l.upstream + " refused the broker's login as the credential's user (" + decisionDetail(decisionID) + ")"
		if r.Detail != "" {
			d = r.Detail + "\n" + d
		}
		r.Detail = d
	}
	if b, err := r.Encode(nil); err == nil {
		_, _ = s.client.Write(b)
	}
}

// relay copies bytes both ways between the client and the upstream until
// either side closes or ctx ends: between two plain sockets the kernel
// splices them; through TLS on either leg it is a copy. First the client
// gets what the upstream sent after ReadyForQuery that the startup's
// reader already holds.
func (s *session) relay(ctx context.Context, up *upstreamConn) {
	client := listener.Raw(s.client)
	if n := up.r.Buffered(); n > 0 {
		b, _ := up.r.Peek(n)
		if _, err := client.Write(b); err != nil {
			return
		}
	}
	listener.Relay(ctx, client, up.conn)
}
