package redis

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
)

// Timeouts of a session's set-up. The relay itself has none: a Redis
// connection may idle, or block in BLPOP, as long as its client wants.
const (
	// DialTimeout bounds connecting to the upstream, with its TLS
	// handshake.
	DialTimeout = 10 * time.Second
	// AuthTimeout bounds the upstream's answer to the listener's AUTH.
	AuthTimeout = 10 * time.Second
	// RefusalTimeout bounds how long a refused client is waited for: to
	// send its first command (which is answered with the refusal), then to
	// close once answered.
	RefusalTimeout = 10 * time.Second
)

// Buffer sizes: the client's commands are read and written upstream
// through these, and a refused client's input is drained up to maxDrain.
const (
	bufSize      = 32 << 10
	maxReplyLine = 4 << 10
	maxDrain     = 64 << 10
)

// Log attribute keys.
const (
	keyCredential = "credential"
	keyDecisionID = "decision_id"
	keyError      = "error"
	keyUpstream   = "upstream"
)

// Proxy is a Redis injection listener: each connection is decided once,
// logged in upstream with the issued credential and relayed.
type Proxy struct {
	cred      string
	upstream  string
	network   string // of the upstream
	address   string
	tls       *tls.Config // nil: no TLS
	userField string
	passField string
	drain     time.Duration
	ambient   bool
	decider   listener.Decider
	opts      listener.Options
	log       *slog.Logger
}

// New validates cfg and returns a Proxy deciding with d. It reads the TLS
// files; the upstream need not be reachable.
func New(cfg Config, d listener.Decider, opts ...listener.Option) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d == nil {
		return nil, errors.New("redis: a decider is required")
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	network, address := listener.Network(cfg.Upstream)
	o := listener.Apply(opts)
	return &Proxy{
		cred:      cfg.Credential,
		upstream:  cfg.Upstream,
		network:   network,
		address:   address,
		tls:       tc,
		userField: cfg.usernameField(),
		passField: cfg.passwordField(),
		drain:     cfg.DrainTimeout.Or(),
		ambient:   cfg.AllowAmbient,
		decider:   d,
		opts:      o,
		log:       o.Logger,
	}, nil
}

// Run serves on ln until ctx ends, then stops accepting, lets sessions in
// progress go on for up to the drain timeout, cuts those still open and
// returns nil, or an error saying how many were cut. The caller makes ln
// (for a Unix socket, wrapped by the unix attestor's Listen; for TCP, by
// its ListenTCP) and Run closes it.
func (p *Proxy) Run(ctx context.Context, ln net.Listener) error {
	if err := listener.Serve(ctx, ln, p.drain, p.opts, p.serve); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// serve is one client connection: decide, log in upstream, relay.
func (p *Proxy) serve(ctx context.Context, conn net.Conn) {
	g, err := p.decider.Decide(ctx, &broker.Request{
		Credential:      p.cred,
		Channel:         broker.ChannelRedis,
		Host:            p.upstream,
		UserField:       p.userField,
		Session:         true,
		Conn:            conn,
		AmbientIfNoPeer: p.ambient,
	})
	if err != nil {
		p.refuse(conn, refusal(err))
		return
	}
	defer g.Release()
	lg, err := p.loginOf(g)
	if err != nil {
		p.log.Warn("credential unusable", keyCredential, p.cred, keyDecisionID, g.DecisionID, keyError, err)
		p.refuse(conn, errorLine("ERR", "credbroker: "+err.Error(), g.DecisionID))
		return
	}
	up, err := p.connect(ctx, lg)
	if err != nil {
		var ue *upstreamError
		if !errors.As(err, &ue) {
			ue = &upstreamError{shown: "credbroker: the upstream redis failed", err: err}
		}
		p.log.Warn("upstream log-in failed", keyCredential, p.cred, keyDecisionID, g.DecisionID, keyUpstream, p.upstream, keyError, ue.err)
		p.refuse(conn, errorLine("ERR", ue.shown, g.DecisionID))
		return
	}
	p.log.Debug("redis session", keyCredential, p.cred, keyDecisionID, g.DecisionID, keyUpstream, p.upstream)
	p.relay(ctx, listener.Raw(conn), up, lg, g.DecisionID)
	p.log.Debug("redis session ended", keyCredential, p.cred, keyDecisionID, g.DecisionID)
}

// loginOf takes the credential's user (optional) and password.
func (p *Proxy) loginOf(g *broker.Grant) (login, error) {
	pass, ok := g.Credential.Data[p.passField]
	if !ok || pass.IsZero() {
		return login{}, fmt.Errorf("credential %q has no field %q to log in with (see password_field)", p.cred, p.passField)
	}
	l := login{pass: pass.Reveal()}
	if u, ok := g.Credential.Data[p.userField]; ok && !u.IsZero() {
		l.user = u.Reveal()
	}
	return l, nil
}

// upstreamError is a failure to reach or log in to the upstream: shown is
// for the client, err for the log.
type upstreamError struct {
	shown string
	err   error
}

func (e *upstreamError) Error() string { return e.err.Error() }

// upstreamConn is a logged-in upstream connection and the bytes read past
// the log-in's reply (normally none).
type upstreamConn struct {
	net.Conn
	pending []byte
}

// connect dials the upstream, with TLS when configured, and logs in.
func (p *Proxy) connect(ctx context.Context, lg login) (*upstreamConn, error) {
	dctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, p.network, p.address)
	if err != nil {
		return nil, &upstreamError{shown: "credbroker: cannot reach the upstream redis at " + p.upstream, err: err}
	}
	if p.tls != nil {
		tc := tls.Client(c, p.tls)
		if err := tc.HandshakeContext(dctx); err != nil {
			c.Close()
			return nil, &upstreamError{shown: "credbroker: TLS with the upstream redis at " + p.upstream + " failed (the broker's log has the cause)", err: err}
		}
		c = tc
	}
	pending, err := authenticate(c, lg)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &upstreamConn{Conn: c, pending: pending}, nil
}

// authenticate sends AUTH with lg on c and reads the reply: +OK, or an
// error shown to the client without the password. It returns what was
// read past the reply.
func authenticate(c net.Conn, lg login) ([]byte, error) {
	_ = c.SetDeadline(time.Now().Add(AuthTimeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(appendCommand(nil, lg.auth())); err != nil {
		return nil, &upstreamError{shown: "credbroker: the upstream redis at " + c.RemoteAddr().String() + " closed the connection", err: err}
	}
	r := bufio.NewReaderSize(c, maxReplyLine)
	line, err := r.ReadSlice('\n')
	if err != nil {
		return nil, &upstreamError{shown: "upstream authentication failed: no reply to AUTH", err: fmt.Errorf("reading the reply to AUTH: %w", err)}
	}
	reply := strings.TrimRight(string(line), "\r\n")
	if reply != "+OK" {
		msg := scrub(strings.TrimPrefix(reply, "-"), lg.pass, 200)
		return nil, &upstreamError{shown: "upstream authentication failed: " + msg, err: errors.New("AUTH refused: " + msg)}
	}
	if r.Buffered() == 0 {
		return nil, nil
	}
	pending, _ := r.Peek(r.Buffered())
	return bytes.Clone(pending), nil
}

// scrub makes a message fit to show on one line and log: the password
// removed should it appear, control characters replaced, at most max
// bytes.
func scrub(msg string, pass []byte, max int) string {
	if len(pass) > 0 {
		msg = strings.ReplaceAll(msg, string(pass), "[redacted]")
	}
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
	if len(msg) > max {
		msg = strings.ToValidUTF8(msg[:max], "") + "…"
	}
	return msg
}

// refusal is the error line for a refused decision: NOPERM when the
// caller is not allowed (attestation failed, policy denied), ERR
// otherwise; the broker's caller-safe message and the decision id.
func refusal(err error) string {
	var be *broker.Error
	if !errors.As(err, &be) {
		return errorLine("ERR", "credbroker: the broker failed (its log has the cause)", "")
	}
	code := "ERR"
	if be.Kind == broker.KindDenied || be.Kind == broker.KindUnauthenticated {
		code = "NOPERM"
	}
	return errorLine(code, "credbroker: "+be.Message, be.DecisionID)
}

// errorLine returns a RESP error line: code, msg on one line, and the
// decision id when there is one.
func errorLine(code, msg, decision string) string {
	msg = scrub(msg, nil, 1024)
	if decision != "" {
		msg += " (decision " + decision + ")"
	}
	return "-" + code + " " + msg + "\r\n"
}

// refuse answers a client that will not be relayed: it reads the client's
// first command (so that the answer is read as its reply), answers it with
// line, and closes once the client has read it.
func (p *Proxy) refuse(conn net.Conn, line string) {
	c := listener.Raw(conn)
	_ = c.SetDeadline(time.Now().Add(RefusalTimeout))
	r := bufio.NewReaderSize(c, bufSize)
	if err := firstCommand(r); err != nil && !isProtocolError(err) {
		return // the client left, or sent nothing in time
	}
	if _, err := io.WriteString(c, line); err != nil {
		return
	}
	// Close once the client has read the answer: closing with its input
	// unread would reset the connection and could lose the answer.
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(r, maxDrain))
}

func isProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

// relay runs the session: the client's commands go upstream through a
// scanner, and the upstream's replies come back as bytes, unparsed. Between
// plain sockets the listener's event loop relays (listener.RelayFiltered);
// through TLS, two goroutines. It returns when either side ends; ctx
// ending cuts it.
func (p *Proxy) relay(ctx context.Context, client net.Conn, up *upstreamConn, lg login, decision string) {
	defer up.Close()
	if len(up.pending) > 0 {
		if _, err := client.Write(up.pending); err != nil {
			return
		}
	}
	sc := &scanner{login: lg, refused: func(pe *ProtocolError) {
		p.log.Info("client protocol error; connection closed", keyCredential, p.cred, keyDecisionID, decision, keyError, pe)
	}}
	if ok, _ := listener.RelayFiltered(ctx, client, up.Conn, sc); !ok {
		_ = copyRelay(ctx, client, up.Conn, sc)
	}
}

// copyRelay is relay through TLS: the client's bytes are read, fed to sc
// and written upstream by this goroutine, the replies copied back by
// another, with the ends listener.RelayFiltered documents.
func copyRelay(ctx context.Context, client, up net.Conn, sc *scanner) error {
	stop := context.AfterFunc(ctx, func() {
		up.Close()
		client.Close()
	})
	defer stop()
	replies := make(chan struct{})
	go func() {
		defer close(replies)
		_, _ = io.Copy(client, up)
		// No more replies can reach the client: end the session.
		up.Close()
		_ = client.SetReadDeadline(time.Unix(1, 0))
	}()
	buf := make([]byte, bufSize)
	var out []byte
	var err error
	for err == nil {
		var n int
		n, err = client.Read(buf)
		if n > 0 {
			var ferr error
			out, ferr = sc.Feed(out[:0], buf[:n])
			if _, werr := up.Write(out); werr != nil {
				err = werr
				break
			}
			if ferr != nil {
				err = ferr
			}
		}
	}
	if err == io.EOF {
		err = sc.End()
	}
	if err == io.EOF || isProtocolError(err) {
		// Let the upstream answer what it was sent, then end: it closes
		// once it has read to the end.
		closeWrite(up)
		<-replies
		if b := sc.Refusal(err); len(b) > 0 {
			_ = client.SetWriteDeadline(time.Now().Add(RefusalTimeout))
			_, _ = client.Write(b)
		}
		if err == io.EOF {
			return nil
		}
		return err
	}
	up.Close()
	<-replies
	return err
}

// firstCommand reads the client's first command from r: nil once it has
// been read whole, its refusal, or the end of the stream.
func firstCommand(r *bufio.Reader) error {
	var sc scanner
	for sc.commands == 0 {
		if _, err := r.Peek(1); err != nil {
			return err
		}
		b, _ := r.Peek(r.Buffered())
		if _, err := sc.Feed(nil, b); err != nil {
			return err
		}
		_, _ = r.Discard(len(b))
	}
	return nil
}

// closeWrite half-closes c where it can (TCP, Unix, TLS's close_notify).
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
