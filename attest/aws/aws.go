package aws

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/textproto"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/credbroker/credbroker/attest"
)

// Defaults of Config.
const (
	DefaultSTSEndpoint     = "https://sts.amazonaws.com"
	DefaultMaxAge          = 5 * time.Minute
	DefaultReplayCacheSize = 65536
	defaultRegion          = "us-east-1"
	defaultTimeout         = 10 * time.Second
)

// maxFutureSkew is how far ahead of the broker's clock X-Amz-Date may be.
const maxFutureSkew = time.Minute

// maxSTSResponse bounds what Attest reads from STS; a real
// GetCallerIdentityResponse is well under 1 KiB.
const maxSTSResponse = 64 << 10

// Caller-safe reasons of the *attest.Error values Attest returns.
const (
	reasonMethod        = "method must be POST"
	reasonHost          = "another host"
	reasonAction        = "another action"
	reasonExtraBody     = "extra body parameters"
	reasonAuthz         = "malformed authorization header"
	reasonService       = "signed for another service"
	reasonRegion        = "signed for another region"
	reasonServerID      = "missing or unsigned server-id header"
	reasonWrongServerID = "wrong server-id"
	reasonDate          = "missing or unsigned x-amz-date header"
	reasonSignedMissing = "signed header missing"
	reasonStale         = "stale signature"
	reasonReplay        = "replay"
	reasonCacheFull     = "too many recent attestations, retry later"
	reasonReplayStore   = "replay store unavailable"
	reasonUnreachable   = "STS unreachable"
	reasonRedirect      = "STS redirected the request"
	reasonRejected      = "STS rejected the signature"
	reasonUnavailable   = "STS unavailable"
	reasonMalformed     = "malformed STS response"
	reasonPrincipal     = "unsupported principal type"
)

// Config configures an Attestor. The zero value of each field but ServerID
// selects the default stated on it.
type Config struct {
	// ServerID is the value the caller must sign in the Credbroker-Server-Id
	// header; it binds a signed request to this broker so that another
	// service cannot replay what a caller signed for it. Required.
	ServerID string
	// STSEndpoint is the STS endpoint, scheme and host only, to which Attest
	// sends the rebuilt request, and the only URL callers may name.
	// Default DefaultSTSEndpoint. Must be https.
	STSEndpoint string
	// Region is the SigV4 signing region callers must use.
	// Default "us-east-1" (that of the global endpoint).
	Region string
	// MaxAge is how old an X-Amz-Date may be, and how long a signature is
	// remembered to refuse replays. Default DefaultMaxAge; at most 15m, the
	// skew STS itself allows.
	MaxAge time.Duration
	// Replay remembers the signatures accepted within MaxAge. Default: an
	// in-memory store of ReplayCacheSize entries, forgotten at a restart;
	// attest/aws/replaydb keeps them in a file. When Replay cannot record
	// a signature, Attest refuses the request ("replay store unavailable").
	Replay ReplayStore
	// ReplayCacheSize bounds the in-memory default store. When it is full of
	// unexpired entries Attest refuses new requests rather than forget one.
	// Default DefaultReplayCacheSize; unused with Replay.
	ReplayCacheSize int
	// HTTPClient sends requests to STS. Attest uses a copy whose
	// CheckRedirect refuses every redirect. Default: a client with a 10s
	// timeout.
	HTTPClient *http.Client
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives debug and warning lines; it never sees a signature.
	// Default: discard.
	Logger *slog.Logger
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.ServerID == "" {
		errs = append(errs, errors.New("server_id is required"))
	} else if strings.TrimSpace(c.ServerID) != c.ServerID || !validHeaderValue(c.ServerID) {
		errs = append(errs, errors.New("server_id must be a header value without surrounding spaces"))
	}
	if c.STSEndpoint != "" {
		if _, err := endpointRoot(c.STSEndpoint); err != nil {
			errs = append(errs, err)
		}
	}
	if c.MaxAge < 0 || c.MaxAge > 15*time.Minute {
		errs = append(errs, errors.New("max_age must be between 0 (default) and 15m"))
	}
	if c.ReplayCacheSize < 0 {
		errs = append(errs, errors.New("replay cache size must not be negative"))
	}
	if c.Region != "" && !validRegion(c.Region) {
		errs = append(errs, fmt.Errorf("invalid region %q", c.Region))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("aws: config: %w", err)
	}
	return nil
}

// Attestor verifies signed sts:GetCallerIdentity requests. It is safe for
// concurrent use.
type Attestor struct {
	serverID string
	root     *url.URL
	region   string
	maxAge   time.Duration
	client   *http.Client
	now      func() time.Time
	log      *slog.Logger
	replay   ReplayStore
}

// New validates cfg, fills in defaults and returns an Attestor.
func New(cfg Config) (*Attestor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Attestor{
		serverID: cfg.ServerID,
		region:   cfg.Region,
		maxAge:   cfg.MaxAge,
		now:      cfg.Now,
		log:      cfg.Logger,
	}
	ep := cfg.STSEndpoint
	if ep == "" {
		ep = DefaultSTSEndpoint
	}
	a.root, _ = endpointRoot(ep)
	if a.region == "" {
		a.region = defaultRegion
	}
	if a.maxAge == 0 {
		a.maxAge = DefaultMaxAge
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.replay = cfg.Replay
	if a.replay == nil {
		size := cfg.ReplayCacheSize
		if size == 0 {
			size = DefaultReplayCacheSize
		}
		a.replay = newReplayCache(size)
	}
	var c http.Client
	if cfg.HTTPClient != nil {
		c = *cfg.HTTPClient
	} else {
		c.Timeout = defaultTimeout
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	a.client = &c
	return a, nil
}

// endpointRoot parses an STS endpoint and returns its root URL ("https://host/").
func endpointRoot(ep string) (*url.URL, error) {
	u, err := url.Parse(ep)
	if err != nil {
		return nil, fmt.Errorf("sts endpoint: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("sts endpoint %q must be https://host[:port] with no path", ep)
	}
	return &url.URL{Scheme: "https", Host: strings.ToLower(u.Host), Path: "/"}, nil
}

func fail(reason string, err error) *attest.Error {
	return &attest.Error{Method: attest.MethodAWS, Reason: reason, Err: err}
}

// Attest verifies r and returns the identity of the AWS principal that signed
// it. It rebuilds the request from fixed parts and the headers r signed, sends
// it to STS, and believes only STS's answer. Every failure is an
// *attest.Error whose text carries no signature, session token or secret.
func (a *Attestor) Attest(ctx context.Context, r Request) (attest.Identity, error) {
	if r.Method != http.MethodPost {
		return attest.Identity{}, fail(reasonMethod, nil)
	}
	if !a.isRoot(r.URL) {
		return attest.Identity{}, fail(reasonHost, nil)
	}
	if r.Body != getCallerIdentityBody {
		q, err := url.ParseQuery(r.Body)
		if err != nil || len(q["Action"]) != 1 || q.Get("Action") != "GetCallerIdentity" {
			return attest.Identity{}, fail(reasonAction, nil)
		}
		return attest.Identity{}, fail(reasonExtraBody, nil)
	}
	h := http.Header{}
	for name, vals := range r.Headers {
		c := textproto.CanonicalMIMEHeaderKey(name)
		if _, dup := h[c]; dup {
			return attest.Identity{}, fail(reasonAuthz, errors.New("header names differ only in case"))
		}
		h[c] = vals
	}
	az, err := parseAuthorization(h.Values("Authorization"))
	if err != nil {
		return attest.Identity{}, fail(reasonAuthz, err)
	}
	if az.service != "sts" {
		return attest.Identity{}, fail(reasonService, nil)
	}
	if az.region != a.region {
		return attest.Identity{}, fail(reasonRegion, nil)
	}
	sid := h.Values(ServerIDHeader)
	if !az.signs("credbroker-server-id") || len(sid) == 0 {
		return attest.Identity{}, fail(reasonServerID, nil)
	}
	if len(sid) != 1 || sid[0] != a.serverID {
		return attest.Identity{}, fail(reasonWrongServerID, nil)
	}
	dates := h.Values("X-Amz-Date")
	if !az.signs("x-amz-date") || len(dates) != 1 {
		return attest.Identity{}, fail(reasonDate, nil)
	}
	signed, err := time.Parse("20060102T150405Z", dates[0])
	if err != nil || dates[0][:8] != az.date {
		return attest.Identity{}, fail(reasonDate, errors.New("x-amz-date is not YYYYMMDDTHHMMSSZ or disagrees with the credential scope"))
	}
	now := a.now()
	if now.Sub(signed) > a.maxAge || signed.Sub(now) > maxFutureSkew {
		return attest.Identity{}, fail(reasonStale, fmt.Errorf("signed at %s, now %s, max age %s", signed.Format(time.RFC3339), now.UTC().Format(time.RFC3339), a.maxAge))
	}

	// Rebuild: fixed method, URL and body; only the signed headers.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.root.String(), strings.NewReader(getCallerIdentityBody))
	if err != nil {
		return attest.Identity{}, fail(reasonUnreachable, err)
	}
	for _, name := range az.signedHeaders {
		switch name {
		case "host", "content-length":
			// Set by the transport from the fixed URL and body.
			continue
		}
		vals := h.Values(name)
		if len(vals) == 0 {
			return attest.Identity{}, fail(reasonSignedMissing, fmt.Errorf("no value for signed header %q", name))
		}
		req.Header[textproto.CanonicalMIMEHeaderKey(name)] = vals
	}
	req.Header["Authorization"] = h.Values("Authorization")
	if tok := h.Values("X-Amz-Security-Token"); len(tok) > 0 {
		req.Header["X-Amz-Security-Token"] = tok
	}

	// A signature counts once: reserve it before STS sees it, so that two
	// concurrent submissions cannot both pass, and release it only when STS
	// did not accept it. A signature that cannot be recorded is refused.
	key := replayKey(az.signature)
	switch err := a.replay.Reserve(ctx, key, signed.Add(a.maxAge+time.Second), now); {
	case errors.Is(err, ErrReplay):
		return attest.Identity{}, fail(reasonReplay, nil)
	case errors.Is(err, ErrReplayFull):
		a.log.WarnContext(ctx, "aws attestor: replay cache full, refusing request")
		return attest.Identity{}, fail(reasonCacheFull, nil)
	case err != nil:
		a.log.WarnContext(ctx, "aws attestor: recording the signature failed, refusing request", slog.Any("error", err))
		return attest.Identity{}, fail(reasonReplayStore, err)
	}
	id, err := a.call(req)
	if err != nil {
		if rerr := a.replay.Release(context.WithoutCancel(ctx), key); rerr != nil {
			// Fail closed: the signature stays used; the caller signs anew.
			a.log.WarnContext(ctx, "aws attestor: releasing a signature STS did not accept failed", slog.Any("error", rerr))
		}
		return attest.Identity{}, err
	}
	a.log.DebugContext(ctx, "aws attestor: attested", slog.String("subject", id.Subject), slog.String("arn", id.Claims["arn"].(string)))
	return id, nil
}

func (a *Attestor) call(req *http.Request) (attest.Identity, error) {
	resp, err := a.client.Do(req)
	if err != nil {
		return attest.Identity{}, fail(reasonUnreachable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSTSResponse+1))
	if err != nil {
		return attest.Identity{}, fail(reasonUnreachable, fmt.Errorf("read STS response: %w", err))
	}
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return attest.Identity{}, fail(reasonRedirect, fmt.Errorf("status %d", resp.StatusCode))
	case resp.StatusCode >= 500:
		return attest.Identity{}, fail(reasonUnavailable, fmt.Errorf("status %d", resp.StatusCode))
	case resp.StatusCode != http.StatusOK:
		code := stsErrorCode(body)
		if code == "" {
			return attest.Identity{}, fail(reasonRejected, fmt.Errorf("status %d", resp.StatusCode))
		}
		return attest.Identity{}, fail(reasonRejected+": "+code, fmt.Errorf("status %d", resp.StatusCode))
	}
	if len(body) > maxSTSResponse {
		return attest.Identity{}, fail(reasonMalformed, errors.New("response larger than 64 KiB"))
	}
	ci, err := parseSTSResponse(body)
	if err != nil {
		return attest.Identity{}, fail(reasonMalformed, err)
	}
	id, err := ci.identity()
	if err != nil {
		return attest.Identity{}, fail(reasonPrincipal, err)
	}
	return id, nil
}

// isRoot reports whether raw names exactly the configured endpoint's root:
// same scheme, host and port, path "" or "/", nothing else.
func (a *Attestor) isRoot(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	return u.Scheme == a.root.Scheme && strings.ToLower(u.Host) == a.root.Host &&
		u.User == nil && u.Opaque == "" && (u.Path == "" || u.Path == "/") && u.RawPath == "" &&
		!u.ForceQuery && u.RawQuery == "" && u.Fragment == ""
}

// authorization is a parsed SigV4 Authorization header.
type authorization struct {
	date, region, service string
	signedHeaders         []string // lowercase, sorted
	signature             string   // lowercase hex
}

func (az authorization) signs(name string) bool {
	i := sort.SearchStrings(az.signedHeaders, name)
	return i < len(az.signedHeaders) && az.signedHeaders[i] == name
}

// parseAuthorization parses
// "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=HEX".
// Its errors never repeat the header's content.
func parseAuthorization(vals []string) (authorization, error) {
	var az authorization
	if len(vals) != 1 {
		return az, errors.New("want exactly one Authorization header")
	}
	rest, ok := strings.CutPrefix(vals[0], "AWS4-HMAC-SHA256 ")
	if !ok {
		return az, errors.New("not AWS4-HMAC-SHA256")
	}
	var cred, sh, sig string
	var nCred, nSH, nSig int
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return az, errors.New("component without '='")
		}
		switch k {
		case "Credential":
			cred, nCred = v, nCred+1
		case "SignedHeaders":
			sh, nSH = v, nSH+1
		case "Signature":
			sig, nSig = v, nSig+1
		default:
			return az, errors.New("unknown component")
		}
	}
	if nCred != 1 || nSH != 1 || nSig != 1 {
		return az, errors.New("want Credential, SignedHeaders and Signature once each")
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[0] == "" || scope[4] != "aws4_request" || len(scope[1]) != 8 {
		return az, errors.New("malformed credential scope")
	}
	if _, err := time.Parse("20060102", scope[1]); err != nil {
		return az, errors.New("malformed credential scope date")
	}
	az.date, az.region, az.service = scope[1], scope[2], scope[3]
	if len(sig) != 64 {
		return az, errors.New("signature is not 64 hex digits")
	}
	if _, err := hex.DecodeString(sig); err != nil || strings.ToLower(sig) != sig {
		return az, errors.New("signature is not lowercase hex")
	}
	az.signature = sig
	az.signedHeaders = strings.Split(sh, ";")
	for i, name := range az.signedHeaders {
		if !validHeaderName(name) || strings.ToLower(name) != name {
			return az, errors.New("invalid signed header name")
		}
		if i > 0 && az.signedHeaders[i-1] >= name {
			return az, errors.New("signed headers not sorted or repeated")
		}
	}
	if !az.signs("host") {
		return az, errors.New("host is not signed")
	}
	return az, nil
}

func validRegion(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
