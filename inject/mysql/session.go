package mysql

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
)

// session is one client connection: the handshake with the client, the
// decision, the login upstream, then the relay.
type session struct {
	l      *Listener
	conn   net.Conn // as accepted: what the broker attests
	client net.Conn // conn, or TLS over it
	seq    byte     // the sequence id of the next packet to the client
}

// failure is a session that ends before the relay: what the client is
// told (nil when it cannot be told: its connection failed) and the cause,
// for the log.
type failure struct {
	tell  *sqlError
	cause error
}

func (f *failure) Error() string { return f.cause.Error() }

// serve is the listener.Session of the listener.
func (l *Listener) serve(ctx context.Context, conn net.Conn) {
	s := &session{l: l, conn: conn, client: conn}
	s.run(ctx)
}

func (s *session) run(ctx context.Context) {
	log := s.l.log
	_ = s.conn.SetDeadline(time.Now().Add(HandshakeTimeout))
	hello, err := s.greet(ctx)
	if err != nil {
		s.fail(err, "client handshake failed", s.recordRefusal(ctx, err))
		return
	}
	g, err := s.l.decider.Decide(ctx, &broker.Request{
		Credential:      s.l.cred,
		Channel:         broker.ChannelMySQL,
		Host:            s.l.upstream,
		Database:        hello.database,
		User:            hello.user,
		UserField:       FieldUsername,
		Session:         true,
		Conn:            s.conn,
		AmbientIfNoPeer: s.l.ambient,
	})
	if err != nil {
		var e *broker.Error
		id := ""
		if errors.As(err, &e) {
			id = e.DecisionID
		}
		s.fail(&failure{tell: refusalOf(err), cause: err}, "refused", id)
		return
	}
	defer g.Release()
	up, ok, err := s.login(ctx, hello, g)
	if err != nil {
		s.fail(err, "upstream login failed", g.DecisionID)
		return
	}
	defer up.Close()
	if err := writePacket(s.client, s.seq, ok); err != nil {
		log.Debug("client left before the session started", keyDecisionID, g.DecisionID, keyError, err)
		return
	}
	_ = s.conn.SetDeadline(time.Time{})
	_ = up.SetDeadline(time.Time{})
	log.Debug("session started", keyDecisionID, g.DecisionID, keyUser, hello.user, keyDatabase, hello.database)
	client := s.client
	if _, isTLS := client.(*tls.Conn); !isTLS {
		client = listener.Raw(s.conn)
	}
	listener.Relay(ctx, client, up)
	log.Debug("session ended", keyDecisionID, g.DecisionID)
}

// fail tells the client why the session ends, when it can, and logs it:
// at debug level when the client went away, else at warn.
func (s *session) fail(err error, what, decisionID string) {
	var f *failure
	if !errors.As(err, &f) {
		f = &failure{cause: err}
	}
	attrs := []any{keyError, f.cause}
	if decisionID != "" {
		attrs = append(attrs, keyDecisionID, decisionID)
	}
	if f.tell == nil {
		s.l.log.Debug(what, attrs...)
		return
	}
	var be *broker.Error
	if errors.As(f.cause, &be) {
		s.l.log.Debug(what, attrs...) // the broker logged the decision
	} else {
		s.l.log.Warn(what, attrs...)
	}
	_ = writePacket(s.client, s.seq, errPacket(f.tell))
}

// recordRefusal decides a handshake the listener refuses (one the client
// is told about: malformed, too old, TLS it cannot have) as an invalid
// request, so that the caller is attested and the refusal recorded like
// any other connection, and returns the decision's id. A client that
// left mid-handshake is not a request: nothing is recorded.
func (s *session) recordRefusal(ctx context.Context, err error) string {
	var f *failure
	if !errors.As(err, &f) || f.tell == nil {
		return ""
	}
	_, derr := s.l.decider.Decide(ctx, &broker.Request{
		Credential:      s.l.cred,
		Channel:         broker.ChannelMySQL,
		Host:            s.l.upstream,
		Conn:            s.conn,
		AmbientIfNoPeer: s.l.ambient,
		Invalid:         &broker.Error{Kind: broker.KindBadRequest, Message: f.tell.Message},
	})
	var e *broker.Error
	if errors.As(derr, &e) {
		f.tell.Message += " (decision " + e.DecisionID + ")"
		return e.DecisionID
	}
	return ""
}

// badHandshake is a failure of the client's handshake it is told about.
func badHandshake(format string, args ...any) *failure {
	err := fmt.Errorf(format, args...)
	return &failure{tell: &sqlError{Code: codeHandshake, State: stateHandshake, Message: "credbroker: " + err.Error()}, cause: err}
}

// greet sends the listener's greeting and reads the client's response,
// switching to TLS first when the client asks. The client's capability
// flags are cut to those the greeting offered.
func (s *session) greet(ctx context.Context) (*clientHello, error) {
	caps := advertised(s.l.serverTLS != nil)
	g := greeting{version: s.l.version, scramble: newScramble(), caps: caps,
		charset: defaultCharset, status: statusAutocommit, plugin: pluginNative}
	if err := writePacket(s.client, 0, g.encode()); err != nil {
		return nil, err
	}
	hello, ssl, err := s.readHello(1)
	if err != nil {
		return nil, err
	}
	if ssl {
		if s.l.serverTLS == nil {
			return nil, badHandshake("the client asks for TLS, which this listener does not offer (it has no listener_tls)")
		}
		tc := tls.Server(s.conn, s.l.serverTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS with the client: %w", err)
		}
		s.client = tc
		if hello, ssl, err = s.readHello(2); err != nil {
			return nil, err
		}
		if ssl {
			return nil, badHandshake("the client asked for TLS twice")
		}
	}
	hello.caps &= caps
	if err := s.settle(hello, g.scramble); err != nil {
		return nil, err
	}
	return hello, nil
}

// settle finishes the client's side of authentication as a server whose
// account has no password would, so that the client next expects OK or
// ERR, whichever the decision and the login upstream bring. A client that
// answered the greeting with mysql_native_password (or speaks no plugins)
// is done. One that chose caching_sha2_password, as MySQL 8 clients do
// whatever the greeting names (sending no data for a plugin the greeting
// did not name), is switched to it with a fresh nonce, as MySQL 8 does;
// its scramble then gets fast_auth_success. Any other plugin is switched
// to mysql_native_password. The client's answers are read, bounded, and
// never looked into; the password is never asked for in the clear.
func (s *session) settle(h *clientHello, nonce []byte) error {
	if h.caps&capPluginAuth == 0 || h.plugin == "" || h.plugin == pluginNative {
		return nil
	}
	plugin := pluginNative
	if h.plugin == pluginCachingSHA2 {
		plugin, nonce = pluginCachingSHA2, newScramble()
	}
	sw := append([]byte{pktAuthSwitch}, plugin...)
	sw = append(append(append(sw, 0), nonce...), 0)
	if err := writePacket(s.client, s.seq, sw); err != nil {
		return err
	}
	seq, answer, err := readPacket(s.client, MaxHandshakePacket)
	switch {
	case errors.Is(err, errTooLarge):
		return badHandshake("%v", err)
	case err != nil:
		return err
	case seq != s.seq+1:
		return badHandshake("the authentication switch response has sequence id %d, want %d", seq, s.seq+1)
	}
	s.seq = seq + 1
	if plugin == pluginCachingSHA2 && len(answer) > 1 {
		// A scramble, not an empty password: what a server with the
		// password in its cache answers.
		if err := writePacket(s.client, s.seq, []byte{pktMoreData, sha2FastAuthOK}); err != nil {
			return err
		}
		s.seq++
	}
	return nil
}

// readHello reads the client's handshake response, which must have
// sequence id want.
func (s *session) readHello(want byte) (*clientHello, bool, error) {
	seq, p, err := readPacket(s.client, MaxHandshakePacket)
	s.seq = seq + 1
	switch {
	case errors.Is(err, errTooLarge):
		return nil, false, badHandshake("%v", err)
	case err != nil:
		return nil, false, err
	case seq != want:
		return nil, false, badHandshake("the handshake response has sequence id %d, want %d", seq, want)
	}
	h, ssl, err := parseClientHello(p)
	if err != nil {
		return nil, false, badHandshake("%v", err)
	}
	return h, ssl, nil
}

// login connects to the upstream and logs in with the credential of g,
// returning the connection and the upstream's OK packet.
func (s *session) login(ctx context.Context, hello *clientHello, g *broker.Grant) (net.Conn, []byte, error) {
	user, ok1 := g.Credential.Data[FieldUsername]
	pw, ok2 := g.Credential.Data[FieldPassword]
	id := g.DecisionID
	if !ok1 || !ok2 || user.IsZero() {
		err := fmt.Errorf("credential %q has no %s and %s fields: it cannot log in to MySQL", s.l.cred, FieldUsername, FieldPassword)
		return nil, nil, s.upstreamFailure(err, id)
	}
	if name := user.Reveal(); len(name) > maxUserLen || bytes.IndexByte(name, 0) >= 0 {
		err := fmt.Errorf("credential %q: its %s is not a MySQL user name", s.l.cred, FieldUsername)
		return nil, nil, s.upstreamFailure(err, id)
	}
	d := net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", s.l.upstream)
	if err != nil {
		return nil, nil, s.upstreamFailure(fmt.Errorf("cannot reach the upstream %s: %w", s.l.upstream, err), id)
	}
	_ = conn.SetDeadline(time.Now().Add(HandshakeTimeout))
	lg := &upstreamLogin{conn: conn, tlsConfig: s.l.upTLS, user: user.Reveal(), password: pw.Reveal(), hello: hello}
	ok, err := lg.run(ctx)
	if err != nil {
		lg.conn.Close()
		return nil, nil, s.upstreamFailure(err, id)
	}
	return lg.conn, ok, nil
}

// upstreamFailure is a failed login upstream as the client is told it:
// the upstream's own ERR with the listener's words before it, or 1105
// with SQLSTATE 08004 (the connection was refused).
func (s *session) upstreamFailure(err error, decisionID string) *failure {
	suffix := " (decision " + decisionID + ")"
	var gr *greetingRefusal
	if errors.As(err, &gr) {
		return &failure{cause: err, tell: &sqlError{Code: gr.Code, State: gr.State,
			Message: "credbroker: the upstream refused the connection: " + gr.Message + suffix}}
	}
	var se *sqlError
	if errors.As(err, &se) {
		return &failure{cause: err, tell: &sqlError{Code: se.Code, State: se.State,
			Message: "credbroker: the upstream refused the issued credential: " + se.Message + suffix}}
	}
	return &failure{cause: err, tell: &sqlError{Code: codeUnknown, State: stateUnavailable,
		Message: fmt.Sprintf("credbroker: cannot log in to the upstream %s: %v%s", s.l.upstream, err, suffix)}}
}

// greetingRefusal is an ERR the upstream sent instead of its greeting
// (too many connections, a host it does not admit).
type greetingRefusal struct{ *sqlError }

func (g *greetingRefusal) Unwrap() error { return g.sqlError }

// upstreamLogin is the listener's login to the upstream as a client.
type upstreamLogin struct {
	conn      net.Conn // TCP, then TLS over it
	tlsConfig *tls.Config
	user      []byte
	password  []byte
	hello     *clientHello
}

// run reads the greeting, switches to TLS when configured, sends the
// handshake response with the client's choices and the credential, and
// answers the authentication exchange until the upstream's OK, which it
// returns.
func (u *upstreamLogin) run(ctx context.Context) ([]byte, error) {
	seq, p, err := readPacket(u.conn, MaxHandshakePacket)
	if err != nil {
		return nil, fmt.Errorf("reading the upstream's greeting: %w", err)
	}
	g, err := parseGreeting(p)
	var se *sqlError
	if errors.As(err, &se) {
		return nil, &greetingRefusal{se}
	}
	if err != nil {
		return nil, err
	}
	h := u.hello
	useTLS := u.tlsConfig != nil
	caps, err := upstreamCaps(h.caps, g.caps, h.database != "", h.attrs != nil, useTLS)
	if err != nil {
		return nil, err
	}
	if useTLS && g.caps&capSSL == 0 {
		return nil, errors.New("the upstream does not offer TLS: enable it on the server (ssl_cert and ssl_key), or set tls.mode to disable")
	}
	resp := &response{caps: caps, maxPacket: h.maxPacket, charset: h.charset, user: u.user, database: h.database, attrs: h.attrs}
	seq++
	if useTLS {
		if err := writePacket(u.conn, seq, resp.header()); err != nil {
			return nil, fmt.Errorf("asking the upstream for TLS: %w", err)
		}
		seq++
		tc := tls.Client(u.conn, u.tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS with the upstream: %w", err)
		}
		u.conn = tc
	}
	a := &authenticator{password: u.password, secure: useTLS}
	plugin, auth, err := a.start(g.plugin, g.scramble)
	if err != nil {
		return nil, err
	}
	resp.plugin, resp.auth = plugin, auth
	if caps&capPluginAuthLenenc == 0 && len(auth) > 250 {
		return nil, errors.New("the authentication response is too long for the upstream's handshake")
	}
	if err := writePacket(u.conn, seq, resp.encode()); err != nil {
		return nil, fmt.Errorf("sending the handshake response: %w", err)
	}
	for {
		seq, p, err = readPacket(u.conn, MaxHandshakePacket)
		if err != nil {
			return nil, fmt.Errorf("reading the upstream's answer: %w", noEOF(err))
		}
		reply, done, err := a.next(p)
		switch {
		case err != nil:
			return nil, err
		case done:
			return p, nil
		case reply != nil:
			if err := writePacket(u.conn, seq+1, reply); err != nil {
				return nil, fmt.Errorf("answering the upstream: %w", err)
			}
		}
	}
}

// newScramble returns the greeting's 20-byte nonce: random printable
// ASCII without '$', as MySQL's own.
func newScramble() []byte {
	b := make([]byte, scrambleLen)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = 0x21 + b[i]%(0x7e-0x21)
		if b[i] == '$' {
			b[i]++
		}
	}
	return b
}
