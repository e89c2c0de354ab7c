package mysql

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/credbroker/credbroker/broker"
	"github.com/credbroker/credbroker/inject/listener"
)

// Timeouts of a session's handshake. Once both legs are up, the relay has
// none: a session lasts as long as the client and the upstream keep it.
const (
	// HandshakeTimeout bounds the client's handshake with the listener,
	// from its greeting to the client's response (TLS included), and
	// separately the login upstream.
	HandshakeTimeout = 30 * time.Second
	// DialTimeout bounds connecting to the upstream.
	DialTimeout = 10 * time.Second
)

// Log attribute keys.
const (
	keyDecisionID = "decision_id"
	keyError      = "error"
	keyUser       = "user"
	keyDatabase   = "database"
)

// Listener is a MySQL / MariaDB injection listener: it logs clients in
// with any or no password, has the broker decide each connection, logs in
// upstream with the issued credential and relays the session.
type Listener struct {
	cred      string
	upstream  string
	version   string
	ambient   bool
	drain     time.Duration
	serverTLS *tls.Config // nil without listener_tls
	upTLS     *tls.Config // nil with tls.mode disable
	decider   listener.Decider
	opts      listener.Options
	log       *slog.Logger
}

// New validates cfg and returns a Listener deciding with d. It reads the
// TLS files; the upstream need not be reachable.
func New(cfg Config, d listener.Decider, opts ...listener.Option) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d == nil {
		return nil, errors.New("mysql: a decider is required")
	}
	host, _, _ := net.SplitHostPort(cfg.Upstream) // checked by Validate
	upTLS, err := newUpstreamTLS(cfg.TLS, host)
	if err != nil {
		return nil, fmt.Errorf("mysql: tls: %w", err)
	}
	var serverTLS *tls.Config
	if cfg.ListenerTLS.enabled() {
		cert, err := tls.LoadX509KeyPair(cfg.ListenerTLS.CertFile, cfg.ListenerTLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mysql: listener_tls: %w", err)
		}
		serverTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	o := listener.Apply(opts)
	return &Listener{
		cred:      cfg.Credential,
		upstream:  cfg.Upstream,
		version:   cfg.serverVersion(),
		ambient:   cfg.AllowAmbient,
		drain:     cfg.DrainTimeout.Or(),
		serverTLS: serverTLS,
		upTLS:     upTLS,
		decider:   d,
		opts:      o,
		log:       o.Logger,
	}, nil
}

// Run serves sessions on ln until ctx ends, then stops accepting and lets
// the sessions in progress go on for up to the drain timeout, cuts those
// still open and returns: nil after a clean drain. The caller makes ln
// (and, for a Unix socket, wraps it with the unix attestor's Listen; for
// TCP with its ListenTCP) so that each client can be attested; Run closes
// it.
func (l *Listener) Run(ctx context.Context, ln net.Listener) error {
	if err := listener.Serve(ctx, ln, l.drain, l.opts, l.serve); err != nil {
		return fmt.Errorf("mysql: %w", err)
	}
	return nil
}

// newUpstreamTLS returns the TLS configuration of upstream connections
// for the mode, or nil for disable: TLS 1.2 or later; the chain verified
// against ca_file (else the system roots) with verify-ca and
// verify-full, the host name too with verify-full; SNI with the server
// name (default the upstream's host, when it is a name).
func newUpstreamTLS(cfg TLSConfig, upstreamHost string) (*tls.Config, error) {
	mode := cfg.mode()
	if mode == ModeDisable {
		return nil, nil
	}
	name := cfg.ServerName
	if name == "" {
		name = upstreamHost
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	var roots *x509.CertPool
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", cfg.CAFile)
		}
	}
	switch mode {
	case ModeRequire:
		tc.InsecureSkipVerify = true // encrypted, not authenticated: what require means
	case ModeVerifyCA:
		tc.InsecureSkipVerify = true // the chain is verified below, the name is not
		tc.VerifyConnection = func(cs tls.ConnectionState) error { return verifyChain(cs, roots) }
	case ModeVerifyFull:
		tc.RootCAs = roots // nil: the system roots
	}
	return tc, nil
}

// verifyChain verifies the peer's chain against roots (nil: the system
// roots), without checking its name: verify-ca.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the upstream presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// refusalOf turns the broker's refusal into the ERR the client gets; see
// doc.go for the codes.
func refusalOf(err error) *sqlError {
	var e *broker.Error
	if !errors.As(err, &e) {
		return &sqlError{Code: codeUnknown, State: stateUnavailable, Message: "credbroker: the broker failed to decide (its log has the cause)"}
	}
	msg := "credbroker: " + e.Message
	if e.DecisionID != "" {
		msg += " (decision " + e.DecisionID + ")"
	}
	switch e.Kind {
	case broker.KindBadRequest:
		return &sqlError{Code: codeHandshake, State: stateHandshake, Message: msg}
	case broker.KindUnavailable:
		return &sqlError{Code: codeUnknown, State: stateUnavailable, Message: msg}
	default: // denied, not attested, no such credential
		return &sqlError{Code: codeAccessDenied, State: stateAccessDenied, Message: msg}
	}
}
