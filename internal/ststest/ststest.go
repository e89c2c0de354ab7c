// Package ststest runs a stand-in for AWS STS for tests: a real HTTPS
// server speaking STS's query protocol (form-encoded POST, XML answers) that
// verifies every signed request's SigV4 signature itself, with real
// HMAC-SHA256 over its own canonical request (independent of the SDK's
// signer), and verifies web identity tokens against a real JWKS.
//
// It answers three actions:
//
//   - AssumeRole, signed by a user key (AddUser) or by earlier temporary
//     credentials (role chaining): checks the role exists and trusts the
//     caller, ExternalId, RoleSessionName, DurationSeconds, Tags and
//     SourceIdentity by AWS's own rules, and issues random temporary
//     credentials;
//   - AssumeRoleWithWebIdentity, unsigned: verifies the token's signature
//     with the keys of the OIDC provider the role trusts, its issuer,
//     audience and lifetime, and issues random temporary credentials;
//   - GetCallerIdentity, signed by any key it knows: names the caller, so a
//     test can prove that issued credentials work — and that they do not
//     without their session token, or after they expire.
//
// Every AssumeRole* request is recorded (Calls) with what the caller asked
// for: the session name, tags, source identity, duration and external id.
// Errors use STS's ErrorResponse XML and its codes (AccessDenied,
// SignatureDoesNotMatch, InvalidClientTokenId, ExpiredToken,
// ValidationError, InvalidIdentityToken, ExpiredTokenException).
package ststest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/credbroker/credbroker/internal/sigv4test"
)

// Namespace is the XML namespace of STS 2011-06-15 answers.
const Namespace = "https://sts.amazonaws.com/doc/2011-06-15/"

// DefaultAccount is the account of users and roles unless Config says otherwise.
const DefaultAccount = "123456789012"

// STS stands in for AWS STS (sts.REGION.amazonaws.com), which tests cannot
// reach. URL is its https endpoint; Client trusts its certificate.
type STS struct {
	// URL is the endpoint, https://127.0.0.1:PORT.
	URL string
	// Region is the signing region it accepts (credential scope).
	Region string
	// Account owns every user and role.
	Account string

	server *httptest.Server
	now    func() time.Time

	mu        sync.Mutex
	keys      map[string]key    // access key id → key
	roles     map[string]Role   // role ARN → role
	providers map[string]oidcIP // issuer → trusted OIDC identity provider
	calls     []Call
}

// Config configures the stand-in; every field has a default.
type Config struct {
	// Region is the signing region; default us-east-1.
	Region string
	// Account is the account id; default DefaultAccount.
	Account string
	// Now is its clock; default time.Now.
	Now func() time.Time
}

// Role is an IAM role that can be assumed.
type Role struct {
	// Name is the role name; its ARN is arn:aws:iam::ACCOUNT:role/NAME.
	Name string
	// ExternalID, when set, must be given by AssumeRole callers.
	ExternalID string
	// Principals are the user ARNs its trust policy names for AssumeRole;
	// empty trusts every user and assumed role of the account.
	Principals []string
	// WebIdentityIssuer is the OIDC issuer its trust policy names for
	// AssumeRoleWithWebIdentity; empty refuses web identities.
	WebIdentityIssuer string
	// MaxSessionDuration bounds DurationSeconds; default one hour, as IAM's.
	MaxSessionDuration time.Duration
}

// Call is one AssumeRole or AssumeRoleWithWebIdentity request STS accepted.
type Call struct {
	Action string
	// Caller is the ARN of the signing principal (AssumeRole), or the
	// token's issuer and subject (web identity).
	Caller          string
	RoleARN         string
	RoleSessionName string
	DurationSeconds int
	ExternalID      string
	SourceIdentity  string
	Tags            map[string]string
	// AccessKeyID is the issued temporary access key id.
	AccessKeyID string
	Expiration  time.Time
}

type key struct {
	secret, token string
	arn, userID   string
	expires       time.Time // zero for a user key
}

type oidcIP struct {
	audience string
	keys     jose.JSONWebKeySet
}

// New starts the stand-in; it stops when the test ends.
func New(t testing.TB, cfg Config) *STS {
	t.Helper()
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Account == "" {
		cfg.Account = DefaultAccount
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &STS{
		Region:    cfg.Region,
		Account:   cfg.Account,
		now:       cfg.Now,
		keys:      map[string]key{},
		roles:     map[string]Role{},
		providers: map[string]oidcIP{},
	}
	s.server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	s.URL = s.server.URL
	t.Cleanup(s.server.Close)
	return s
}

// Client returns an HTTP client that trusts the stand-in's certificate.
func (s *STS) Client() *http.Client { return s.server.Client() }

// CertPEM returns the server's certificate in PEM, for a process that
// trusts it through AWS_CA_BUNDLE.
func (s *STS) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.server.Certificate().Raw})
}

// Close stops the server early, for tests of an STS that is down.
func (s *STS) Close() { s.server.Close() }

// AddUser creates IAM user name with a random long-term access key and
// returns the user's ARN and the key.
func (s *STS) AddUser(name string) (arn, accessKeyID, secretAccessKey string) {
	arn = "arn:aws:iam::" + s.Account + ":user/" + name
	accessKeyID = "AKIA" + randString(16, upperBase32)
	secretAccessKey = randString(40, base64Chars)
	s.mu.Lock()
	s.keys[accessKeyID] = key{secret: secretAccessKey, arn: arn, userID: "AIDA" + randString(17, upperBase32)}
	s.mu.Unlock()
	return arn, accessKeyID, secretAccessKey
}

// AddRole creates a role and returns its ARN.
func (s *STS) AddRole(r Role) string {
	if r.MaxSessionDuration == 0 {
		r.MaxSessionDuration = time.Hour
	}
	arn := s.RoleARN(r.Name)
	s.mu.Lock()
	s.roles[arn] = r
	s.mu.Unlock()
	return arn
}

// RoleARN returns the ARN of role name in the stand-in's account.
func (s *STS) RoleARN(name string) string { return "arn:aws:iam::" + s.Account + ":role/" + name }

// TrustOIDC registers an OIDC identity provider, as IAM's
// CreateOpenIDConnectProvider does: tokens from issuer for audience are
// verified with keys.
func (s *STS) TrustOIDC(issuer, audience string, keys jose.JSONWebKeySet) {
	s.mu.Lock()
	s.providers[issuer] = oidcIP{audience: audience, keys: keys}
	s.mu.Unlock()
}

// Calls returns the accepted AssumeRole* requests so far.
func (s *STS) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

const (
	upperBase32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	base64Chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

func randString(n int, alphabet string) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// stsError is an STS error answer.
type stsError struct {
	status        int
	code, message string
}

func fail(status int, code, format string, args ...any) *stsError {
	return &stsError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func validation(format string, args ...any) *stsError {
	return fail(http.StatusBadRequest, "ValidationError", format, args...)
}

func (s *STS) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	if err != nil || len(body) > 64<<10 {
		writeError(w, fail(http.StatusBadRequest, "MalformedInput", "request body unreadable or too large"))
		return
	}
	out, e := s.handle(r, body)
	if e != nil {
		writeError(w, e)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	_, _ = io.WriteString(w, out)
}

func (s *STS) handle(r *http.Request, body []byte) (string, *stsError) {
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		return "", fail(http.StatusBadRequest, "InvalidAction", "Could not find operation %s %s", r.Method, r.URL.Path)
	}
	if ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); ct != "application/x-www-form-urlencoded" {
		return "", fail(http.StatusBadRequest, "InvalidAction", "Content-Type must be application/x-www-form-urlencoded")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return "", fail(http.StatusBadRequest, "MalformedInput", "malformed form body")
	}
	if form.Get("Version") != "2011-06-15" {
		return "", fail(http.StatusBadRequest, "InvalidAction", "Could not find operation %s for version %s", form.Get("Action"), form.Get("Version"))
	}
	switch form.Get("Action") {
	case "AssumeRole":
		caller, e := s.verify(r, body)
		if e != nil {
			return "", e
		}
		return s.assumeRole(caller, form)
	case "AssumeRoleWithWebIdentity":
		return s.assumeRoleWithWebIdentity(form)
	case "GetCallerIdentity":
		caller, e := s.verify(r, body)
		if e != nil {
			return "", e
		}
		return fmt.Sprintf(callerIdentityXML, esc(caller.arn), esc(caller.userID), s.Account, randString(8, "0123456789abcdef")), nil
	default:
		return "", fail(http.StatusBadRequest, "InvalidAction", "Could not find operation %s for version 2011-06-15", form.Get("Action"))
	}
}

// AWS's constraints on AssumeRole parameters.
var (
	sessionNameRE    = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	externalIDRE     = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
	tagKeyRE         = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$`)
	tagValueRE       = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	sourceIdentityRE = sessionNameRE
)

// common checks what AssumeRole and AssumeRoleWithWebIdentity share: the
// role, the session name and the duration.
func (s *STS) common(form url.Values) (Role, string, int, *stsError) {
	arn := form.Get("RoleArn")
	s.mu.Lock()
	role, ok := s.roles[arn]
	s.mu.Unlock()
	name := form.Get("RoleSessionName")
	if !sessionNameRE.MatchString(name) {
		return role, "", 0, validation("1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*", name)
	}
	dur := 3600
	if v := form.Get("DurationSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 900 || n > 43200 {
			return role, "", 0, validation("1 validation error detected: Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200", v)
		}
		dur = n
	}
	if !ok {
		return role, "", 0, nil // the caller reports AccessDenied with its own principal
	}
	if time.Duration(dur)*time.Second > role.MaxSessionDuration {
		return role, "", 0, validation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	return role, name, dur, nil
}

func (s *STS) assumeRole(caller key, form url.Values) (string, *stsError) {
	role, name, dur, e := s.common(form)
	if e != nil {
		return "", e
	}
	arn := form.Get("RoleArn")
	denied := fail(http.StatusForbidden, "AccessDenied", "User: %s is not authorized to perform: sts:AssumeRole on resource: %s", caller.arn, arn)
	if role.Name == "" || role.WebIdentityIssuer != "" && len(role.Principals) == 0 {
		return "", denied
	}
	if len(role.Principals) > 0 && !slices.Contains(role.Principals, caller.arn) {
		return "", denied
	}
	if !strings.HasPrefix(caller.arn, "arn:aws:iam::"+s.Account+":user/") && !strings.HasPrefix(caller.arn, "arn:aws:sts::"+s.Account+":assumed-role/") {
		return "", denied
	}
	ext := form.Get("ExternalId")
	if _, given := form["ExternalId"]; given && (len(ext) < 2 || len(ext) > 1224 || !externalIDRE.MatchString(ext)) {
		return "", validation("1 validation error detected: Value at 'externalId' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@:\\/-]*")
	}
	if role.ExternalID != "" && subtle.ConstantTimeCompare([]byte(ext), []byte(role.ExternalID)) != 1 {
		return "", denied
	}
	srcID := form.Get("SourceIdentity")
	if _, given := form["SourceIdentity"]; given {
		if !sourceIdentityRE.MatchString(srcID) {
			return "", validation("1 validation error detected: Value '%s' at 'sourceIdentity' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*", srcID)
		}
		if strings.HasPrefix(strings.ToLower(srcID), "aws:") {
			return "", validation("SourceIdentity must not begin with aws:")
		}
	}
	tags, e := parseTags(form)
	if e != nil {
		return "", e
	}
	call := Call{Action: "AssumeRole", Caller: caller.arn, RoleARN: arn, RoleSessionName: name, DurationSeconds: dur, ExternalID: ext, SourceIdentity: srcID, Tags: tags}
	creds := s.issue(&call, role)
	extra := ""
	if srcID != "" {
		extra = "<SourceIdentity>" + esc(srcID) + "</SourceIdentity>"
	}
	return fmt.Sprintf(assumeRoleXML, extra, creds, randString(8, "0123456789abcdef")), nil
}

// parseTags reads Tags.member.N.Key and Tags.member.N.Value, N from 1 up
// without gaps, by AWS's rules for session tags.
func parseTags(form url.Values) (map[string]string, *stsError) {
	tags := map[string]string{}
	lower := map[string]bool{}
	n := 0
	for k := range form {
		if strings.HasPrefix(k, "Tags.") {
			n++
		}
	}
	for i := 1; ; i++ {
		k, hasKey := form[fmt.Sprintf("Tags.member.%d.Key", i)]
		v, hasValue := form[fmt.Sprintf("Tags.member.%d.Value", i)]
		if !hasKey {
			if hasValue {
				return nil, validation("Tags.member.%d.Key is required", i)
			}
			if n != 0 {
				return nil, fail(http.StatusBadRequest, "InvalidParameterValue", "malformed Tags parameters")
			}
			return tags, nil
		}
		if len(k) != 1 || len(v) > 1 {
			return nil, fail(http.StatusBadRequest, "InvalidParameterValue", "Tags.member.%d given twice", i)
		}
		n -= 1 + len(v)
		value := ""
		if len(v) == 1 {
			value = v[0]
		}
		if i > 50 {
			return nil, validation("1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50")
		}
		if !tagKeyRE.MatchString(k[0]) || utf8.RuneCountInString(k[0]) > 128 {
			return nil, validation("1 validation error detected: Value '%s' at 'tags.%d.member.key' failed to satisfy constraint", k[0], i)
		}
		if strings.HasPrefix(strings.ToLower(k[0]), "aws:") {
			return nil, fail(http.StatusBadRequest, "InvalidParameterValue", "Tag keys can't start with aws:")
		}
		if !tagValueRE.MatchString(value) || utf8.RuneCountInString(value) > 256 {
			return nil, validation("1 validation error detected: Value '%s' at 'tags.%d.member.value' failed to satisfy constraint", value, i)
		}
		if lower[strings.ToLower(k[0])] {
			return nil, fail(http.StatusBadRequest, "InvalidParameterValue", "Duplicate tag keys found. Please note that Tag keys are case insensitive.")
		}
		lower[strings.ToLower(k[0])] = true
		tags[k[0]] = value
	}
}

func (s *STS) assumeRoleWithWebIdentity(form url.Values) (string, *stsError) {
	role, name, dur, e := s.common(form)
	if e != nil {
		return "", e
	}
	raw := form.Get("WebIdentityToken")
	if len(raw) < 4 || len(raw) > 20000 {
		return "", validation("1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length between 4 and 20000")
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil || len(tok.Headers) != 1 {
		return "", fail(http.StatusBadRequest, "InvalidIdentityToken", "The ID Token provided is not a valid JWT.")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return "", fail(http.StatusBadRequest, "InvalidIdentityToken", "The ID Token provided is not a valid JWT.")
	}
	s.mu.Lock()
	ip, ok := s.providers[unverified.Issuer]
	s.mu.Unlock()
	if !ok {
		return "", fail(http.StatusBadRequest, "InvalidIdentityToken", "No OpenIDConnect provider found in your account for %s", unverified.Issuer)
	}
	keys := ip.keys.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		return "", fail(http.StatusBadRequest, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider")
	}
	var claims jwt.Claims
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		return "", fail(http.StatusBadRequest, "InvalidIdentityToken", "The signature of the ID Token could not be verified.")
	}
	now := s.now()
	if claims.Expiry == nil || !now.Before(claims.Expiry.Time()) {
		return "", fail(http.StatusBadRequest, "ExpiredTokenException", "Token expired: current date/time %s must be before the expiration date/time", now.UTC().Format(time.RFC3339))
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: unverified.Issuer, AnyAudience: jwt.Audience{ip.audience}, Time: now}, 0); err != nil {
		return "", fail(http.StatusBadRequest, "InvalidIdentityToken", "Incorrect token audience, issuer or validity")
	}
	if claims.Subject == "" {
		return "", fail(http.StatusBadRequest, "InvalidIdentityToken", "The ID Token has no subject")
	}
	arn := form.Get("RoleArn")
	if role.Name == "" || role.WebIdentityIssuer != unverified.Issuer {
		return "", fail(http.StatusForbidden, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
	}
	call := Call{Action: "AssumeRoleWithWebIdentity", Caller: claims.Issuer + "#" + claims.Subject, RoleARN: arn, RoleSessionName: name, DurationSeconds: dur}
	creds := s.issue(&call, role)
	return fmt.Sprintf(webIdentityXML, esc(claims.Subject), esc(ip.audience), creds, esc(unverified.Issuer), randString(8, "0123456789abcdef")), nil
}

// issue creates random temporary credentials for call, records call, and
// returns the AssumedRoleUser and Credentials elements.
func (s *STS) issue(call *Call, role Role) string {
	id := "ASIA" + randString(16, upperBase32)
	secret := randString(40, base64Chars)
	token := "FwoGZXIvYXdzE" + randString(343, base64Chars)
	exp := s.now().Add(time.Duration(call.DurationSeconds) * time.Second).UTC().Truncate(time.Second)
	roleID := "AROA" + randString(17, upperBase32)
	arn := "arn:aws:sts::" + s.Account + ":assumed-role/" + role.Name + "/" + call.RoleSessionName
	call.AccessKeyID, call.Expiration = id, exp
	s.mu.Lock()
	s.keys[id] = key{secret: secret, token: token, arn: arn, userID: roleID + ":" + call.RoleSessionName, expires: exp}
	s.calls = append(s.calls, *call)
	s.mu.Unlock()
	return fmt.Sprintf(credentialsXML, esc(arn), roleID, esc(call.RoleSessionName), id, secret, token, exp.Format(time.RFC3339))
}

// verify checks r's SigV4 signature (internal/sigv4test, scoped to sts in
// this region, on this clock) and returns the signing key.
func (s *STS) verify(r *http.Request, body []byte) (key, *stsError) {
	id, err := sigv4test.Verify(r, body, sigv4test.Check{
		Service: "sts", Region: s.Region, Now: s.now(),
		Lookup: func(id string) (sigv4test.Key, bool) {
			s.mu.Lock()
			k, ok := s.keys[id]
			s.mu.Unlock()
			return sigv4test.Key{Secret: k.secret, Token: k.token, Expires: k.expires}, ok
		},
	})
	if err != nil {
		return key{}, fail(err.Status, err.Code, "%s", err.Message)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[id], nil
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func writeError(w http.ResponseWriter, e *stsError) {
	typ := "Sender"
	if e.status >= 500 {
		typ = "Receiver"
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.status)
	fmt.Fprintf(w, errorXML, typ, esc(e.code), esc(e.message), randString(8, "0123456789abcdef"))
}

const errorXML = `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>%s</Type>
    <Code>%s</Code>
    <Message>%s</Message>
  </Error>
  <RequestId>%s-0000-4000-8000-000000000000</RequestId>
</ErrorResponse>
`

const credentialsXML = `<AssumedRoleUser>
      <Arn>%s</Arn>
      <AssumedRoleId>%s:%s</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>%s</AccessKeyId>
      <SecretAccessKey>%s</SecretAccessKey>
      <SessionToken>%s</SessionToken>
      <Expiration>%s</Expiration>
    </Credentials>`

const assumeRoleXML = `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    %s
    %s
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>%s-0000-4000-8000-000000000000</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>
`

const webIdentityXML = `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>%s</SubjectFromWebIdentityToken>
    <Audience>%s</Audience>
    %s
    <Provider>%s</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>%s-0000-4000-8000-000000000000</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
`

const callerIdentityXML = `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>%s</Arn>
    <UserId>%s</UserId>
    <Account>%s</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>%s-0000-4000-8000-000000000000</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>
`
