package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/credbroker/credbroker/attest"
	"github.com/credbroker/credbroker/audit"
	"github.com/credbroker/credbroker/policies"
	"github.com/credbroker/credbroker/providers"
)

// PeerAttestor attests the process that wrote a request on a Unix socket
// connection, from kernel credentials. With a failure it may return the
// ids the kernel reported (unix claims uid, gid, pid) for the record; such
// an identity attests nothing.
type PeerAttestor interface {
	Attest(ctx context.Context, conn net.Conn) (attest.Identity, error)
}

// TokenAttestor verifies a bearer token (a Kubernetes service-account
// token, a JWT-SVID, a GitHub Actions OIDC token) and returns who it names.
type TokenAttestor interface {
	Attest(ctx context.Context, token string) (attest.Identity, error)
}

// TokenRoute sends the bearer tokens of one issuer to their attestor. The
// route is chosen from the token's unverified iss (exact match) or, when
// Issuer is empty, its unverified sub (prefix match, as for SPIFFE IDs);
// the attestor then verifies everything.
type TokenRoute struct {
	Method        string
	Issuer        string
	SubjectPrefix string
	Attestor      TokenAttestor
}

// CertAttestor verifies a client certificate chain presented on an mTLS
// listener (an X.509-SVID).
type CertAttestor interface {
	AttestCertificate(chain []*x509.Certificate) (attest.Identity, error)
}

// AWSAttestor verifies the signed sts:GetCallerIdentity request a caller
// sends as {"aws_iam": …}.
type AWSAttestor interface {
	AttestAWS(ctx context.Context, signed json.RawMessage) (attest.Identity, error)
}

// Provider issues one configured credential.
type Provider interface {
	Credential(ctx context.Context, req providers.Request) (providers.Credential, error)
}

// Recorder is the audit log: Append returns only once the record is
// committed.
type Recorder interface {
	Append(ctx context.Context, r *audit.Record) error
	Fingerprint(secret []byte) string
}

// settler is the optional capability of a Provider to learn the fate of
// the decision that obtained a credential: recorded, or not. A lease
// manager releases (revokes) a credential minted for decisions none of
// which was recorded.
type settler interface {
	Settle(lease providers.Lease, recorded bool)
}

// holder is the optional capability of a Provider to learn that a
// credential is in use for a session (a database connection) until the
// returned function is called; a lease manager then keeps a lease that a
// session holds from being revoked early, and revokes one no longer cached
// as soon as its last session ends.
type holder interface {
	Hold(lease providers.Lease) (release func())
}

// expecter is the optional capability of a Recorder to be told that a
// record is on its way, so that concurrent decisions can share a commit.
type expecter interface {
	Expect() (done func())
}

// Channels name the way a request came in, as recorded in the audit log.
const (
	ChannelSocket = "socket" // the socket API on its Unix socket
	ChannelMTLS   = "mtls"   // the socket API on an mTLS TCP listener
	ChannelHTTP   = "http"   // an HTTP injection listener
	ChannelAWS    = "aws"    // the AWS container-credentials endpoint

	ChannelPostgres = "postgres" // a PostgreSQL injection listener
	ChannelMySQL    = "mysql"    // a MySQL / MariaDB injection listener
	ChannelRedis    = "redis"    // a Redis injection listener
)

// Config wires a Broker.
type Config struct {
	// Peer attests callers on the Unix socket. Required.
	Peer PeerAttestor
	// Tokens verify bearer tokens, routed by issuer; none means a bearer
	// token is refused.
	Tokens []TokenRoute
	// AWS verifies aws_iam evidence; nil means it is refused.
	AWS AWSAttestor
	// Certs verifies client certificates on an mTLS listener; nil means
	// such callers are refused.
	Certs CertAttestor
	// TokenCacheTTL is how long a verified bearer token's identity is
	// reused (never beyond the token's exp); default DefaultTokenCacheTTL,
	// negative turns the cache off.
	TokenCacheTTL time.Duration
	// Ambient returns the token to attest callers that present no evidence
	// of their own with (a per-pod sidecar's projected token); nil means
	// such callers are attested by their peer credentials alone.
	Ambient func() (string, error)
	// Credentials maps each configured credential name to its provider.
	Credentials map[string]Provider
	// Kinds maps each credential name to its provider kind for the audit
	// log ("static", …).
	Kinds map[string]string
	// Policies is the initial policy set. Required; replace it with
	// SetPolicies.
	Policies *policies.Set
	// Audit records every decision. Required.
	Audit Recorder
	// Registerer receives the broker's metrics; nil means none are exported.
	Registerer prometheus.Registerer
	// Logger receives one line per decision at debug level and failures at
	// warn; default slog.Default().
	Logger *slog.Logger
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// LogInterval is how often a repeated refusal for the same cause (the
	// audit store failing) is logged, with a count; default
	// DefaultLogInterval.
	LogInterval time.Duration
}

// Broker runs decisions.
type Broker struct {
	peer       PeerAttestor
	tokens     []TokenRoute
	aws        AWSAttestor
	certs      CertAttestor
	ambient    func() (string, error)
	tokenCache *tokenCache
	creds      map[string]Provider
	kinds      map[string]string
	audit      Recorder
	log        *slog.Logger
	now        func() time.Time
	metrics    *metrics
	refusals   *rateLog // refusals for a failing audit store
	policies   atomic.Pointer[policies.Set]
}

// New validates cfg and returns a Broker.
func New(cfg Config) (*Broker, error) {
	var errs []error
	if cfg.Peer == nil {
		errs = append(errs, errors.New("broker: a peer attestor is required"))
	}
	if cfg.Audit == nil {
		errs = append(errs, errors.New("broker: an audit recorder is required"))
	}
	if cfg.Policies == nil {
		errs = append(errs, errors.New("broker: a policy set is required"))
	}
	for name, p := range cfg.Credentials {
		if p == nil {
			errs = append(errs, fmt.Errorf("broker: credential %q has no provider", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LogInterval <= 0 {
		cfg.LogInterval = DefaultLogInterval
	}
	b := &Broker{
		peer:       cfg.Peer,
		tokens:     cfg.Tokens,
		aws:        cfg.AWS,
		certs:      cfg.Certs,
		ambient:    cfg.Ambient,
		tokenCache: newTokenCache(cfg.TokenCacheTTL),
		creds:      cfg.Credentials,
		kinds:      cfg.Kinds,
		audit:      cfg.Audit,
		log:        cfg.Logger,
		now:        cfg.Now,
		metrics:    newMetrics(cfg.Registerer),
		refusals:   newRateLog(cfg.Logger, cfg.LogInterval),
	}
	b.policies.Store(cfg.Policies)
	return b, nil
}

// SetPolicies atomically replaces the policy set; decisions in flight finish
// on the set they started with.
func (b *Broker) SetPolicies(s *policies.Set) { b.policies.Store(s) }

// Policies returns the policy set in force.
func (b *Broker) Policies() *policies.Set { return b.policies.Load() }

// Request is one caller asking for one credential, as a listener saw it.
type Request struct {
	// Credential is the configured name asked for.
	Credential string
	// Channel is how the request came in (ChannelSocket, …).
	Channel string
	// Method, Path and Host describe the request where the channel has them;
	// policies see them as request.method, request.path, request.host.
	Method, Path, Host string
	// Database and User are what a database client asked for when it
	// connected (the database and user of its startup message); policies
	// see them as request.database and request.user.
	Database, User string
	// UserField names the field of the credential that holds the user the
	// listener logs in upstream as (providers' username); its value is
	// recorded with the decision. It must not name a secret field.
	UserField string
	// Session is set by a listener that uses the credential for the life
	// of a connection and calls Grant.Release when it ends.
	Session bool
	// Conn is the caller's Unix socket connection, attested from kernel
	// credentials of the process that wrote the request.
	Conn net.Conn
	// PeerCerts is the verified client certificate chain of an mTLS
	// caller, leaf first.
	PeerCerts []*x509.Certificate
	// Bearer is the token of an Authorization: Bearer header, if any.
	Bearer string
	// AWSIAM is the signed sts:GetCallerIdentity request of an aws_iam
	// body, if any.
	AWSIAM json.RawMessage
	// AmbientIfNoPeer lets the ambient identity (Config.Ambient) stand in
	// when the connection's caller cannot be seen (attest.ErrNoPeer: a TCP
	// caller in another network or pid namespace). Set by listeners whose
	// configuration allows it; any process that can reach such a listener
	// then gets the ambient identity.
	AmbientIfNoPeer bool
	// Invalid is set by a listener that could not decode the request: its
	// message is shown to the caller, and an *Error's Kind is kept (a
	// bad request otherwise). The caller is still attested and the refusal
	// recorded.
	Invalid error
}

// Grant is a credential handed out, with the decision that allowed it.
type Grant struct {
	DecisionID string
	Name       string
	Credential providers.Credential

	release     func()
	releaseOnce sync.Once
}

// Release says that the session the credential was obtained for has
// ended: a database listener calls it when the client's connection
// closes. The credential's lease manager then decides whether to revoke
// it or keep it cached for the workload's next session. It may be called
// more than once; a grant of an unmanaged credential ignores it.
func (g *Grant) Release() {
	g.releaseOnce.Do(func() {
		if g.release != nil {
			g.release()
		}
	})
}

// Kind classifies a refusal; listeners map it to their protocol's codes.
type Kind int

// Kinds of refusal.
const (
	KindBadRequest      Kind = iota + 1 // the request could not be understood
	KindUnauthenticated                 // attestation failed
	KindDenied                          // the policy denies it
	KindNotFound                        // no such credential
	KindUnavailable                     // provider or audit store unavailable
)

// Error is a refusal. Message is safe to show the caller: it says what to
// fix and never carries a secret or a token. Err is the internal cause, for
// logs.
type Error struct {
	Kind       Kind
	Message    string
	DecisionID string
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return "broker: " + e.Message + ": " + e.Err.Error()
	}
	return "broker: " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Decision results as recorded in the audit log and counted in metrics.
const (
	resultAllow = "allow"
	resultDeny  = "deny"
	resultError = "error"
)

// Decide runs one decision: attest, evaluate, obtain, record, then return
// the grant. Every call — allowed, denied or failed — writes exactly one
// audit record, and a Grant is returned only after that record is committed.
// A refusal is an *Error.
func (b *Broker) Decide(ctx context.Context, req *Request) (*Grant, error) {
	if e, ok := b.audit.(expecter); ok {
		defer e.Expect()()
	}
	start := b.now()
	// A name that is not a credential name is refused; until then the
	// record, the logs and the policy input carry only a bounded stand-in,
	// whatever the caller sent.
	if req.Invalid == nil && req.Credential != "" && !ValidName(req.Credential) {
		req.Invalid = errBadName
	}
	req.Credential, req.Method, req.Path, req.Host = bounded(req.Credential), bounded(req.Method), bounded(req.Path), bounded(req.Host)
	req.Database, req.User = bounded(req.Database), bounded(req.User)
	rec := &audit.Record{
		Time:       start.UTC(),
		DecisionID: newDecisionID(start),
		Credential: req.Credential,
		Provider:   b.kinds[req.Credential],
		Channel:    req.Channel,
		TargetHost: req.Host,
		Database:   req.Database,
		Method:     req.Method,
		Path:       req.Path,
		PeerUID:    -1,
	}
	set := b.policies.Load()
	in := policies.Input{
		Request: policies.Request{Channel: req.Channel, Credential: req.Credential, Method: req.Method, Path: req.Path, Host: req.Host,
			Database: req.Database, User: req.User},
		Now: start,
	}

	id, token, err := b.attest(ctx, req, rec)
	if err != nil {
		reason := "attestation failed"
		var ae *attest.Error
		if errors.As(err, &ae) {
			reason = ae.Method + ": " + ae.Reason
		}
		return nil, b.refuse(ctx, rec, start, &Error{Kind: KindUnauthenticated, Message: reason, Err: err})
	}
	in.Identity = id
	describeIdentity(rec, id)
	if rec.Input, err = policies.EncodeInput(in); err != nil {
		// Claims hold JSON-compatible values by contract; record the failure
		// rather than dropping the field silently. Replay counts such a row
		// as one whose input cannot be decoded.
		rec.Input = unencodableInput
	}

	if req.Invalid != nil {
		refusal := &Error{Kind: KindBadRequest, Message: req.Invalid.Error()}
		var e *Error
		if errors.As(req.Invalid, &e) {
			refusal = &Error{Kind: e.Kind, Message: e.Message}
		}
		return nil, b.refuse(ctx, rec, start, refusal)
	}
	prov, ok := b.creds[req.Credential]
	if !ok {
		return nil, b.refuse(ctx, rec, start, &Error{Kind: KindNotFound, Message: fmt.Sprintf("no credential named %q is configured", req.Credential)})
	}

	d := set.Evaluate(in)
	rec.Policy, rec.PolicyVersion, rec.Reason = d.Policy, d.Version, d.Reason
	if d.Effect != policies.Allow {
		rec.Decision = resultDeny
		return nil, b.finish(ctx, rec, start, &Error{Kind: KindDenied, Message: d.Reason})
	}

	cred, err := prov.Credential(ctx, providers.Request{Name: req.Credential, TTL: d.TTL, Identity: id, Token: providers.NewSecret([]byte(token)), Session: req.Session})
	if err != nil {
		return nil, b.refuse(ctx, rec, start, &Error{Kind: KindUnavailable, Message: unavailable(req.Credential, err), Err: err})
	}
	rec.Decision = resultAllow
	rec.LeaseID = cred.ID
	if user, ok := cred.Data[req.UserField]; ok && req.UserField != "" {
		rec.UpstreamUser = bounded(string(user.Reveal()))
	}
	rec.ExpiresAt = cred.ExpiresAt.UTC()
	rec.Fingerprint = b.audit.Fingerprint(canonicalSecret(cred.Data))
	err = b.finish(ctx, rec, start, nil)
	if s, ok := prov.(settler); ok {
		s.Settle(cred.Lease, err == nil)
	}
	if err != nil {
		return nil, err
	}
	g := &Grant{DecisionID: rec.DecisionID, Name: req.Credential, Credential: cred}
	if h, ok := prov.(holder); ok && req.Session && cred.ID != "" {
		g.release = h.Hold(cred.Lease)
	}
	return g, nil
}

// attest turns the request's evidence into an identity: the kernel's peer
// credentials always, and a bearer token or signed AWS request on top when
// the caller presents one (or the ambient token when it presents none). A
// token's identity carries the peer's under Peer. rec learns the peer as
// soon as it is known, so that a failed token is still recorded against
// the process that presented it.
//
// token is the bearer token the identity was verified from (the caller's or
// the ambient one), for providers that pass it upstream; "" otherwise.
func (b *Broker) attest(ctx context.Context, req *Request, rec *audit.Record) (id attest.Identity, token string, err error) {
	peer, err := b.attestPeer(ctx, req)
	noPeer := err != nil && req.AmbientIfNoPeer && b.ambient != nil && errors.Is(err, attest.ErrNoPeer) && req.Bearer == "" && len(req.AWSIAM) == 0
	switch {
	case noPeer:
		// The ambient identity stands in for a caller no one can see.
		if token, err = b.ambient(); err != nil {
			return attest.Identity{}, "", &attest.Error{Method: "ambient", Reason: "the ambient token is unavailable", Err: err}
		}
		id, err := b.attestToken(ctx, token)
		if err != nil {
			return attest.Identity{}, "", err
		}
		return id, token, nil
	case err != nil:
		// What the kernel reported of a refused peer is still recorded.
		describePeer(rec, peer)
		return attest.Identity{}, "", err
	}
	describeIdentity(rec, peer)
	token = req.Bearer
	if token == "" && len(req.AWSIAM) == 0 && b.ambient != nil {
		if token, err = b.ambient(); err != nil {
			return attest.Identity{}, "", &attest.Error{Method: "ambient", Reason: "the ambient token is unavailable", Err: err}
		}
	}
	switch {
	case token != "" && len(req.AWSIAM) > 0:
		return attest.Identity{}, "", attest.Failf("evidence", "present either a bearer token or aws_iam, not both")
	case len(req.AWSIAM) > 0:
		if b.aws == nil {
			return attest.Identity{}, "", attest.Failf(attest.MethodAWS, "aws_iam evidence is not accepted: the aws attestor is not configured")
		}
		id, err = b.aws.AttestAWS(ctx, req.AWSIAM)
	case token != "":
		id, err = b.attestToken(ctx, token)
	default:
		return peer, "", nil
	}
	if err != nil {
		return attest.Identity{}, "", err
	}
	id.Peer = &peer
	return id, token, nil
}

// unavailable is the caller's message for a provider failure: which
// credential, and what failed — the reason an error states for callers
// (CallerReason, as the lease manager's do), else whether the audit log or
// the provider failed. The provider's own error goes to the log only.
func unavailable(name string, err error) string {
	var public interface{ CallerReason() string }
	switch {
	case errors.As(err, &public):
		return fmt.Sprintf("credential %q is unavailable: %s", name, public.CallerReason())
	case errors.Is(err, audit.ErrUnavailable):
		return fmt.Sprintf("credential %q is unavailable: the audit log cannot record its issue; no credential was issued", name)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("credential %q is unavailable: its provider did not answer in time", name)
	default:
		return fmt.Sprintf("credential %q is unavailable: its provider failed (the broker's log has the cause)", name)
	}
}

// attestPeer attests the connection itself: kernel peer credentials on the
// Unix socket, the client certificate on an mTLS listener.
func (b *Broker) attestPeer(ctx context.Context, req *Request) (attest.Identity, error) {
	switch {
	case req.Conn != nil:
		return b.peer.Attest(ctx, req.Conn)
	case len(req.PeerCerts) > 0 && b.certs != nil:
		return b.certs.AttestCertificate(req.PeerCerts)
	case len(req.PeerCerts) > 0:
		return attest.Identity{}, attest.Failf(attest.MethodSPIFFE, "client certificates are not accepted: the spiffe attestor is not configured")
	default:
		return attest.Identity{}, attest.Failf(attest.MethodUnix, "no peer credentials on this channel")
	}
}

// attestToken verifies a bearer token with the attestor of its issuer,
// reusing a recent verification of the same token.
func (b *Broker) attestToken(ctx context.Context, token string) (attest.Identity, error) {
	now := b.now()
	if id, ok := b.tokenCache.get(token, now); ok {
		return id, nil
	}
	if len(b.tokens) == 0 {
		return attest.Identity{}, attest.Failf("bearer", "bearer tokens are not accepted: no token attestor is configured")
	}
	p, err := peekClaims(token)
	if err != nil {
		return attest.Identity{}, attest.Failf("bearer", "malformed token: %v", err)
	}
	a := b.route(p)
	if a == nil {
		return attest.Identity{}, attest.Failf("bearer", "unknown issuer: no attestor is configured for this token's issuer")
	}
	id, err := a.Attest(ctx, token)
	if err != nil {
		return attest.Identity{}, err
	}
	b.tokenCache.put(token, id, now, p.exp)
	return id, nil
}

// route picks the attestor of a token from its unverified claims: an exact
// issuer first, then a subject prefix.
func (b *Broker) route(p peeked) TokenAttestor {
	for _, r := range b.tokens {
		if r.Issuer != "" && r.Issuer == p.iss {
			return r.Attestor
		}
	}
	for _, r := range b.tokens {
		if r.Issuer == "" && r.SubjectPrefix != "" && strings.HasPrefix(p.sub, r.SubjectPrefix) {
			return r.Attestor
		}
	}
	return nil
}

// refuse records a decision that ended in error and returns the refusal.
func (b *Broker) refuse(ctx context.Context, rec *audit.Record, start time.Time, refusal *Error) error {
	rec.Decision = resultError
	rec.Reason = refusal.Message
	return b.finish(ctx, rec, start, refusal)
}

// finish commits rec and returns outcome (nil for an allow). When the record
// cannot be committed the request fails as unavailable whatever the decision
// was: a decision that cannot be audited is not made.
func (b *Broker) finish(ctx context.Context, rec *audit.Record, start time.Time, outcome *Error) error {
	rec.Latency = b.now().Sub(start)
	if err := b.audit.Append(ctx, rec); err != nil {
		b.metrics.decisions.WithLabelValues(rec.Channel, resultError).Inc()
		if ctx.Err() != nil {
			// The caller went away before its record was committed: nothing
			// is wrong with the store.
			b.log.Debug("audit record not awaited: the caller went away", keyDecisionID, rec.DecisionID, keyError, err)
		} else {
			b.metrics.auditFailures.Inc()
			b.refusals.Warn(err.Error(), "audit record not committed; requests refused", keyDecisionID, rec.DecisionID, keyError, err)
		}
		return &Error{Kind: KindUnavailable, Message: "the audit log is unavailable; no credential was issued", DecisionID: rec.DecisionID, Err: err}
	}
	b.metrics.decisions.WithLabelValues(rec.Channel, rec.Decision).Inc()
	b.metrics.latency.Observe(b.now().Sub(start).Seconds())
	if outcome == nil {
		b.log.Debug("decision", keyDecisionID, rec.DecisionID, keyDecision, rec.Decision, keySubject, rec.Subject, keyCredential, rec.Credential, keyPolicy, rec.Policy)
		return nil
	}
	outcome.DecisionID = rec.DecisionID
	// The internal cause goes to the log, never to the caller; causes
	// carry no secret or token by contract (attest.Error, provider errors).
	level := slog.LevelInfo
	if outcome.Kind == KindUnavailable {
		level = slog.LevelWarn
	}
	if outcome.Err != nil {
		b.log.Log(ctx, level, "decision", keyDecisionID, rec.DecisionID, keyDecision, rec.Decision, keySubject, rec.Subject, keyCredential, rec.Credential, keyPolicy, rec.Policy, keyReason, rec.Reason, keyError, outcome.Err)
	} else {
		b.log.Log(ctx, level, "decision", keyDecisionID, rec.DecisionID, keyDecision, rec.Decision, keySubject, rec.Subject, keyCredential, rec.Credential, keyPolicy, rec.Policy, keyReason, rec.Reason)
	}
	return outcome
}

// describeIdentity copies the identity's audit fields into rec.
func describeIdentity(rec *audit.Record, id attest.Identity) {
	rec.Attestor, rec.Subject, rec.Claims = id.Method, id.Subject, id.Claims
	peer := id
	if id.Peer != nil {
		peer = *id.Peer
	}
	describePeer(rec, peer)
}

// describePeer copies a unix peer's pid and uid into rec.
func describePeer(rec *audit.Record, peer attest.Identity) {
	if peer.Method != attest.MethodUnix {
		return
	}
	if pid, ok := peer.Claims["pid"].(int64); ok {
		rec.PeerPID = pid
	}
	if uid, ok := peer.Claims["uid"].(int64); ok {
		rec.PeerUID = uid
	}
}

// unencodableInput stands in for a policy input EncodeInput refused.
var unencodableInput = json.RawMessage(`{"error":"policy input not encodable"}`)

// canonicalSecret encodes a credential's fields unambiguously for the
// fingerprint: sorted keys, each key and value length-prefixed.
func canonicalSecret(data map[string]providers.Secret) []byte {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	for _, k := range keys {
		v := data[k].Reveal()
		fmt.Fprintf(&buf, "%d:%s%d:", len(k), k, len(v))
		buf.Write(v)
	}
	return buf.Bytes()
}

// Credential names: what ValidName accepts.
const (
	// MaxNameLen is the longest credential name.
	MaxNameLen = 128
	// maxField bounds a request attribute (path, method, host) as
	// recorded and logged.
	maxField = 256
)

// errBadName refuses a request for a name no credential can have.
var errBadName = &Error{Kind: KindBadRequest, Message: fmt.Sprintf("invalid credential name: use 1 to %d characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", MaxNameLen)}

// ValidName reports whether s can name a credential: 1 to MaxNameLen
// characters of A-Z a-z 0-9 . _ -, the first a letter or digit.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// bounded returns s, or its first maxField bytes (at a rune boundary)
// followed by how much was cut, so that what a caller sends cannot bloat
// the audit record or a log line.
func bounded(s string) string {
	if len(s) <= maxField {
		return s
	}
	cut := maxField
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

// newDecisionID returns a time-ordered, unguessable id: 48 bits of
// milliseconds then 80 random bits, hex encoded.
func newDecisionID(t time.Time) string {
	var b [16]byte
	ms := uint64(t.UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}
