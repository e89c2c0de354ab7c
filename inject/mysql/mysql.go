package mysql

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	upTLS, err := cfg.TLS.Client(host, ModeVerifyFull)
	if err != nil {
		return nil, fmt.Errorf("mysql: tls: %w", err)
	}
	serverTLS, err := cfg.ListenerTLS.Server()
	if err != nil {
		return nil, fmt.Errorf("mysql: listener_tls: %w", err)
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
