package aws

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/credbroker/credbroker/providers"
)

// Kind is the provider kind reported in replies and audit rows, and the
// key of its block under a credential in the config file.
const Kind = "aws_sts"

// The data fields of every issued credential.
const (
	FieldAccessKeyID     = "access_key_id"
	FieldSecretAccessKey = "secret_access_key"
	FieldSessionToken    = "session_token"
)

// Defaults and AWS's bounds.
const (
	// DefaultRegion is the region when Config.Region is empty.
	DefaultRegion = "us-east-1"
	// DefaultTTL is a credential's lifetime when Config.TTL is zero.
	DefaultTTL = time.Hour
	// MinDuration is the shortest session STS issues; shorter caps are
	// asked for as MinDuration and reported with the shorter expiry.
	MinDuration = 15 * time.Minute
	// MaxDuration is the longest session STS issues (a role's
	// MaxSessionDuration can be at most 12 hours).
	MaxDuration = 12 * time.Hour
)

// ErrNoToken is wrapped when a web-identity credential is asked for by a
// caller that presented no verified token (a Unix-socket caller attested by
// its process, for example). Like every error of Credential, it comes
// wrapped as `aws: credential "NAME": …`.
var ErrNoToken = errors.New("web_identity needs the caller's verified token, and the request carries none")

// Config configures one AWS STS credential.
type Config struct {
	// RoleARN is the IAM role to assume, arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME.
	// Required.
	RoleARN string `yaml:"role_arn"`
	// Region is STS's region: the signing region, and the regional
	// endpoint when Endpoint is empty. Default DefaultRegion.
	Region string `yaml:"region"`
	// Endpoint is STS's URL, https://HOST[:PORT] (http:// only for a
	// loopback host, such as a local MinIO). Default: the SDK's endpoint
	// for Region, https://sts.REGION.amazonaws.com (or AWS_ENDPOINT_URL_STS).
	Endpoint string `yaml:"endpoint"`
	// SessionTags maps a session tag key to the claim whose value the tag
	// carries (a claim name, or ClaimSubject / ClaimMethod). At most
	// MaxSessionTags. Default none. Not with WebIdentity.
	SessionTags map[string]string `yaml:"session_tags"`
	// SourceIdentity names the claim (or ClaimSubject / ClaimMethod) whose
	// value, shaped like a session name, becomes the session's
	// SourceIdentity. Default none. Not with WebIdentity.
	SourceIdentity string `yaml:"source_identity"`
	// ExternalID is sent as AssumeRole's ExternalId, for roles whose trust
	// policy requires one. Default none. Not with WebIdentity.
	ExternalID string `yaml:"external_id"`
	// WebIdentity assumes the role with AssumeRoleWithWebIdentity and the
	// caller's own verified token instead of AssumeRole with the broker's
	// credentials. Default false.
	WebIdentity bool `yaml:"web_identity"`

	// Name is the credential's name, used in errors and log lines.
	Name string `yaml:"-"`
	// TTL is the lifetime of each issue before a request's cap; default
	// DefaultTTL.
	TTL time.Duration `yaml:"-"`
	// Credentials are the broker's own AWS credentials for AssumeRole;
	// default the SDK's default chain (environment, shared files, web
	// identity, ECS, EC2 instance role), resolved at the first issue.
	Credentials awssdk.CredentialsProvider `yaml:"-"`
	// HTTPClient sends the STS requests; default the SDK's.
	HTTPClient awssdk.HTTPClient `yaml:"-"`
	// Logger receives debug lines about issues; default discards.
	Logger *slog.Logger `yaml:"-"`
	// Now returns the current time; default time.Now.
	Now func() time.Time `yaml:"-"`
}

// Fields are the data fields every issued credential carries.
func (c *Config) Fields() []string {
	return []string{FieldAccessKeyID, FieldSecretAccessKey, FieldSessionToken}
}

// Paths returns the config's file-path fields: none.
func (c *Config) Paths() []*string { return nil }

// Validate reports every problem with c at once. It does no I/O, and
// reports the external id by presence only.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.RoleARN == "" {
		bad("role_arn is required")
	} else if why := roleARNProblem(c.RoleARN); why != "" {
		bad("role_arn %q is not an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME): %s", c.RoleARN, why)
	}
	if c.Region != "" && !validRegion(c.Region) {
		bad("region %q is not a region name (lowercase letters, digits and -)", c.Region)
	}
	if c.Endpoint != "" {
		if why := endpointProblem(c.Endpoint); why != "" {
			bad("endpoint %q %s", c.Endpoint, why)
		}
	}
	if len(c.SessionTags) > MaxSessionTags {
		bad("session_tags: %d tags, AWS allows at most %d", len(c.SessionTags), MaxSessionTags)
	}
	seen := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(c.SessionTags)) {
		if why := validTagKey(k); why != "" {
			bad("session_tags: key %q %s", k, why)
		}
		if other, dup := seen[strings.ToLower(k)]; dup {
			bad("session_tags: keys %q and %q differ only in case, which AWS treats as the same key", other, k)
		}
		seen[strings.ToLower(k)] = k
		if c.SessionTags[k] == "" {
			bad("session_tags: key %q names no claim", k)
		}
	}
	if c.ExternalID != "" && !validExternalID(c.ExternalID) {
		bad("external_id must be 2 to 1224 characters of letters, digits and _+=,.@:/-")
	}
	if c.WebIdentity {
		for key, set := range map[string]bool{"session_tags": len(c.SessionTags) > 0, "source_identity": c.SourceIdentity != "", "external_id": c.ExternalID != ""} {
			if set {
				bad("%s does not apply with web_identity: AssumeRoleWithWebIdentity takes session tags and source identity from the token, and has no external id", key)
			}
		}
	}
	if c.TTL < 0 {
		bad("ttl must be positive")
	}
	if len(errs) == 0 {
		return nil
	}
	prefix := "aws"
	if c.Name != "" {
		prefix = fmt.Sprintf("aws: credential %q", c.Name)
	}
	return fmt.Errorf("%s: %w", prefix, errors.Join(errs...))
}

// roleARNProblem says what is wrong with an IAM role ARN, or "".
func roleARNProblem(s string) string {
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return "not six colon-separated parts starting with arn"
	}
	partition, service, region, account, resource := parts[1], parts[2], parts[3], parts[4], parts[5]
	switch {
	case partition == "" || strings.Trim(partition, "abcdefghijklmnopqrstuvwxyz-") != "":
		return "bad partition"
	case service != "iam":
		return "service is not iam"
	case region != "":
		return "IAM ARNs have no region"
	case len(account) != 12 || strings.Trim(account, "0123456789") != "":
		return "account is not 12 digits"
	}
	rest, ok := strings.CutPrefix(resource, "role/")
	if !ok {
		return "resource is not role/…"
	}
	segs := strings.Split(rest, "/")
	name := segs[len(segs)-1]
	if name == "" || len(name) > 64 || strings.IndexFunc(name, func(r rune) bool { return !isNameChar(r) }) >= 0 {
		return "role name must be 1 to 64 characters of letters, digits and _+=,.@-"
	}
	if len(rest)-len(name) > 512 {
		return "path longer than 512 characters"
	}
	for _, seg := range segs[:len(segs)-1] {
		if seg == "" || strings.IndexFunc(seg, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
			return "path segments must be non-empty printable ASCII"
		}
	}
	return ""
}

func validRegion(s string) bool {
	return len(s) <= 32 && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == "" && !strings.HasPrefix(s, "-") && !strings.HasSuffix(s, "-")
}

func validExternalID(s string) bool {
	if len(s) < 2 || len(s) > 1224 {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool { return !isNameChar(r) && r != ':' && r != '/' }) < 0
}

// endpointProblem says what is wrong with an STS endpoint URL, or "".
func endpointProblem(s string) string {
	u, err := providers.ParseEndpoint(s)
	switch {
	case err != nil:
		return err.Error()
	case u.RawQuery != "" || (u.Path != "" && u.Path != "/"):
		return "must be scheme://host[:port] with no path or query"
	}
	return ""
}

// Provider issues temporary AWS credentials for one role.
type Provider struct {
	cfg    Config
	client *sts.Client
	creds  awssdk.CredentialsProvider // nil with WebIdentity
	tags   []string                   // SessionTags' keys, sorted
	log    *slog.Logger
}

// New validates cfg and builds the STS client. It reads the SDK's shared
// config files and environment, but does not call STS or resolve the base
// credentials: an unreachable STS, or no credentials in the default chain,
// is reported by the first Credential call.
func New(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log := cfg.Logger
	opts := []func(*config.LoadOptions) error{
		config.WithRegion(cfg.Region),
		// The SDK's own warnings (a response body it could not drain, for
		// example) go to the provider's logger rather than to stderr. Its
		// request and response logging stays off.
		config.WithLogger(logging.LoggerFunc(func(c logging.Classification, format string, v ...any) {
			level := slog.LevelDebug
			if c == logging.Warn {
				level = slog.LevelWarn
			}
			log.Log(context.Background(), level, "aws_sts: sdk: "+fmt.Sprintf(format, v...), slog.String("credential", cfg.Name))
		})),
	}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	awsCfg, err := config.LoadDefaultConfig(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("aws: credential %q: loading the AWS SDK configuration: %w", cfg.Name, err)
	}
	p := &Provider{
		cfg:  cfg,
		tags: slices.Sorted(maps.Keys(cfg.SessionTags)),
		log:  cfg.Logger,
	}
	p.client = sts.NewFromConfig(awsCfg, func(o *sts.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = awssdk.String(strings.TrimSuffix(cfg.Endpoint, "/"))
		}
		if cfg.HTTPClient != nil {
			// Set on the client rather than through LoadDefaultConfig, which
			// would try to add AWS_CA_BUNDLE to it and fail: a given client
			// brings its own TLS configuration.
			o.HTTPClient = cfg.HTTPClient
		}
		if cfg.WebIdentity {
			o.Credentials = nil // AssumeRoleWithWebIdentity is unsigned; never resolve the chain for it
		}
	})
	if !cfg.WebIdentity {
		p.creds = awsCfg.Credentials
	}
	return p, nil
}

// TTL reports the credential's own lifetime.
func (p *Provider) TTL() time.Duration { return p.cfg.TTL }

// Credential assumes the role for the caller and returns the temporary
// credentials. The expiry is the smaller of STS's and now plus the cap
// (req.TTL, at most the credential's TTL); STS issues no session shorter
// than 15 minutes, so under a shorter cap the upstream credential outlives
// the reported expiry by up to that much — and STS credentials cannot be
// revoked, so the provider is not a Revoker.
func (p *Provider) Credential(ctx context.Context, req providers.Request) (providers.Credential, error) {
	if err := ctx.Err(); err != nil {
		return providers.Credential{}, fmt.Errorf("aws: credential %q: %w", req.Name, err)
	}
	ttl := p.cfg.TTL
	if req.TTL > 0 && req.TTL < ttl {
		ttl = req.TTL
	}
	start := p.cfg.Now()
	session := sessionName(req.Identity.Subject)
	assume := p.assumeRole
	if p.cfg.WebIdentity {
		assume = p.assumeRoleWithWebIdentity
	}
	creds, op, err := assume(ctx, req, session, durationSeconds(ttl))
	if err != nil {
		return providers.Credential{}, fmt.Errorf("aws: credential %q: %w", req.Name, err)
	}
	if creds == nil || creds.Expiration == nil || awssdk.ToString(creds.AccessKeyId) == "" || awssdk.ToString(creds.SecretAccessKey) == "" || awssdk.ToString(creds.SessionToken) == "" {
		return providers.Credential{}, fmt.Errorf("aws: credential %q: sts %s: the answer lacks credentials or their expiration", req.Name, op)
	}
	expires := start.Add(ttl)
	if creds.Expiration.Before(expires) {
		expires = *creds.Expiration
	}
	if !expires.After(p.cfg.Now()) {
		return providers.Credential{}, fmt.Errorf("aws: credential %q: sts %s: the issued credentials expire at %s, already past", req.Name, op, expires.UTC().Format(time.RFC3339))
	}
	p.log.DebugContext(ctx, "aws_sts: issued",
		slog.String("credential", req.Name), slog.String("role_arn", p.cfg.RoleARN),
		slog.String("session_name", session), slog.String("operation", op),
		slog.Time("expires_at", expires), slog.Time("sts_expiration", *creds.Expiration))
	return providers.Credential{
		Lease: providers.Lease{
			ID:         Kind + ":" + randomID(),
			Credential: req.Name,
			Subject:    req.Identity.Subject,
			Kind:       Kind,
			ExpiresAt:  expires,
		},
		Data: map[string]providers.Secret{
			FieldAccessKeyID:     providers.NewSecret([]byte(*creds.AccessKeyId)),
			FieldSecretAccessKey: providers.NewSecret([]byte(*creds.SecretAccessKey)),
			FieldSessionToken:    providers.NewSecret([]byte(*creds.SessionToken)),
		},
	}, nil
}

// Ping checks that STS answers and accepts the broker's base credentials
// (sts:GetCallerIdentity, which needs no permission), issuing nothing. With
// web identity the broker has no credentials of its own, and the caller's
// token is only known per request: there is nothing to check.
func (p *Provider) Ping(ctx context.Context) error {
	if p.cfg.WebIdentity {
		return nil
	}
	if _, err := p.client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
		return fmt.Errorf("aws: credential %q: ping: %w", p.cfg.Name, p.stsError(ctx, "GetCallerIdentity", err, providers.Secret{}))
	}
	return nil
}

// assumeRole calls AssumeRole, signed with the broker's credentials, with
// the session tags and source identity derived from the caller.
func (p *Provider) assumeRole(ctx context.Context, req providers.Request, session string, duration int32) (*types.Credentials, string, error) {
	const op = "AssumeRole"
	in := &sts.AssumeRoleInput{
		RoleArn:         awssdk.String(p.cfg.RoleARN),
		RoleSessionName: awssdk.String(session),
		DurationSeconds: awssdk.Int32(duration),
	}
	if p.cfg.ExternalID != "" {
		in.ExternalId = awssdk.String(p.cfg.ExternalID)
	}
	tags, err := sessionTags(p.tags, p.cfg.SessionTags, req.Identity)
	if err != nil {
		return nil, op, err
	}
	for _, t := range tags {
		in.Tags = append(in.Tags, types.Tag{Key: awssdk.String(t.key), Value: awssdk.String(t.value)})
	}
	if p.cfg.SourceIdentity != "" {
		src, err := sourceIdentity(p.cfg.SourceIdentity, req.Identity)
		if err != nil {
			return nil, op, err
		}
		in.SourceIdentity = awssdk.String(src)
	}
	out, err := p.client.AssumeRole(ctx, in)
	if err != nil {
		return nil, op, p.stsError(ctx, op, err, providers.Secret{})
	}
	return out.Credentials, op, nil
}

// assumeRoleWithWebIdentity calls AssumeRoleWithWebIdentity, unsigned, with
// the caller's own verified token.
func (p *Provider) assumeRoleWithWebIdentity(ctx context.Context, req providers.Request, session string, duration int32) (*types.Credentials, string, error) {
	const op = "AssumeRoleWithWebIdentity"
	if req.Token.IsZero() {
		return nil, op, ErrNoToken
	}
	out, err := p.client.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
		RoleArn:          awssdk.String(p.cfg.RoleARN),
		RoleSessionName:  awssdk.String(session),
		WebIdentityToken: awssdk.String(string(req.Token.Reveal())),
		DurationSeconds:  awssdk.Int32(duration),
	})
	if err != nil {
		return nil, op, p.stsError(ctx, op, err, req.Token)
	}
	return out.Credentials, op, nil
}

// durationSeconds is the DurationSeconds to ask for under cap ttl: ttl
// rounded up to a whole second, within [MinDuration, MaxDuration].
func durationSeconds(ttl time.Duration) int32 {
	s := math.Ceil(ttl.Seconds())
	return int32(min(max(s, MinDuration.Seconds()), MaxDuration.Seconds()))
}

// Error is STS's refusal of a request: its error code (AccessDenied,
// ValidationError, InvalidIdentityToken, …) and message. The message is
// cut to 512 bytes of printable text, with the secrets the provider holds
// (the base secret key and session token, the caller's token) blanked.
type Error struct {
	Operation string
	Code      string
	Message   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("sts %s: %s: %s", e.Operation, e.Code, e.Message)
}

// ErrMalformedAnswer is wrapped when STS's answer cannot be decoded; the
// decoder's detail is dropped, since the answer carries issued secrets.
var ErrMalformedAnswer = errors.New("malformed STS answer")

// stsError turns an SDK error into one that names what failed and carries
// no secret: STS's code and sanitised message, the context's error, or the
// transport's error (which names the endpoint and the network failure).
func (p *Provider) stsError(ctx context.Context, op string, err error, token providers.Secret) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("sts %s: %w", op, cerr)
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		secrets := []string{string(token.Reveal())}
		if p.creds != nil {
			// The call was signed, so the credentials are cached: no I/O.
			if c, rerr := p.creds.Retrieve(ctx); rerr == nil {
				secrets = append(secrets, c.SecretAccessKey, c.SessionToken)
			}
		}
		return &Error{Operation: op, Code: printable(api.ErrorCode(), 64, nil), Message: printable(api.ErrorMessage(), 512, secrets)}
	}
	var de *smithy.DeserializationError
	if errors.As(err, &de) {
		return fmt.Errorf("sts %s: %w", op, ErrMalformedAnswer)
	}
	return fmt.Errorf("sts %s: %w", op, err)
}

// printable blanks each secret in s (those of 6 bytes or more), replaces
// control characters and invalid UTF-8 with spaces, and cuts the result to
// limit bytes.
func printable(s string, limit int, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 6 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			r = ' '
		}
		if b.Len()+utf8.RuneLen(r) > limit {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
