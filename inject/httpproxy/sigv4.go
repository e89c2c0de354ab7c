package httpproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/credbroker/credbroker/providers"
	awsprov "github.com/credbroker/credbroker/providers/aws"
)

// MaxSignedBody is the largest request body a listener signing for a
// service other than S3 forwards: SigV4 covers the SHA-256 of the body, so
// the body is read whole before it is sent. A larger body is refused with
// 413. S3 bodies are never buffered: they are sent as UNSIGNED-PAYLOAD and
// stream.
const MaxSignedBody = 1 << 20

// Payload hashes with a meaning of their own.
const (
	// emptyPayloadHash is the SHA-256 of no bytes, signed for requests
	// without a body.
	emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	// unsignedPayload is signed, and sent as X-Amz-Content-Sha256, for S3
	// requests with a body: S3 accepts a body its signature does not cover.
	unsignedPayload = "UNSIGNED-PAYLOAD"
)

// SigV4Config signs every forwarded request with AWS Signature Version 4.
type SigV4Config struct {
	// Service is the service's signing name: s3, sts, execute-api,
	// dynamodb, …. Required.
	Service string `yaml:"service"`
	// Region is the region signed for, such as us-east-1. Required.
	Region string `yaml:"region"`
}

// problems lists what is wrong with c.
func (c *SigV4Config) problems() []string {
	var out []string
	if c.Service == "" {
		out = append(out, "service is required (the signing name, such as s3)")
	} else if !awsName(c.Service, 64) {
		out = append(out, fmt.Sprintf("service %q is not a signing name (lowercase letters, digits and -)", c.Service))
	}
	if c.Region == "" {
		out = append(out, "region is required (such as us-east-1)")
	} else if !awsName(c.Region, 32) {
		out = append(out, fmt.Sprintf("region %q is not a region name (lowercase letters, digits and -)", c.Region))
	}
	return out
}

// awsName accepts 1 to max lowercase letters, digits and inner hyphens.
func awsName(s string, max int) bool {
	return s != "" && len(s) <= max && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == "" &&
		!strings.HasPrefix(s, "-") && !strings.HasSuffix(s, "-")
}

// sigv4 signs a listener's outgoing requests.
type sigv4 struct {
	service, region string
	// s3 is true for S3, whose bodies go unsigned (UNSIGNED-PAYLOAD), whose
	// requests carry X-Amz-Content-Sha256, and whose paths are signed as
	// sent (escaped once).
	s3     bool
	signer *v4.Signer
	now    func() time.Time
}

func newSigV4(c *SigV4Config) *sigv4 {
	s3 := c.Service == "s3" || c.Service == "s3-outposts"
	return &sigv4{
		service: c.Service,
		region:  c.Region,
		s3:      s3,
		signer:  v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = s3 }),
		now:     time.Now,
	}
}

// errAWSChunked explains why aws-chunked bodies are refused.
const errAWSChunked = "aws-chunked request bodies (Content-Encoding: aws-chunked, X-Amz-Content-Sha256: STREAMING-…, " +
	"X-Amz-Decoded-Content-Length, X-Amz-Trailer) are framed by headers the listener replaces, and their chunks are signed " +
	"with the client's own keys: send plain bodies (aws-sdk-go-v2 does over http://; elsewhere set the client's request " +
	"checksum calculation to when_required)"

// check refuses, before the credential is obtained, a request that cannot be re-signed
// without changing what it does: 0 for one to forward. The listener
// forwards none of the client's X-Amz-* headers or query parameters, so a
// request that depends on one is refused rather than sent altered. The
// ones dropped silently are the client's signature inputs and checksums
// (S3 then stores no checksum; Content-MD5 is kept).
func (s *sigv4) check(r *http.Request) (int, string) {
	if headerHasToken(r.Header, "Content-Encoding", "aws-chunked") {
		return http.StatusBadRequest, errAWSChunked
	}
	for k, vs := range r.Header {
		ck := http.CanonicalHeaderKey(k)
		if !strings.HasPrefix(ck, "X-Amz-") {
			continue
		}
		switch {
		case ck == "X-Amz-Content-Sha256":
			for _, v := range vs {
				if strings.HasPrefix(strings.TrimSpace(v), "STREAMING-") {
					return http.StatusBadRequest, errAWSChunked
				}
			}
		case ck == "X-Amz-Decoded-Content-Length", ck == "X-Amz-Trailer":
			return http.StatusBadRequest, errAWSChunked
		case !droppable(ck) && !forwarded(ck):
			return http.StatusBadRequest, fmt.Sprintf("header %.64q: the listener signs every request itself and forwards only "+
				"the client's X-Amz-* headers that describe the request's own object or operation (X-Amz-Meta-*, "+
				"X-Amz-Server-Side-Encryption*, X-Amz-Storage-Class, X-Amz-Tagging, X-Amz-Target, …); "+
				"without this one the request would do something else", k)
		}
	}
	if r.URL.RawQuery != "" {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return http.StatusBadRequest, "the query string does not parse, and a signed request's query is sent re-encoded"
		}
		for k := range q {
			if strings.HasPrefix(strings.ToLower(k), "x-amz-") {
				return http.StatusBadRequest, fmt.Sprintf("query parameter %.64q: presigned URLs are not served; the listener signs every request itself", k)
			}
		}
	}
	if !s.s3 && r.ContentLength > MaxSignedBody {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("a %s request body is signed whole, so it may be at most %d bytes", s.service, MaxSignedBody)
	}
	return 0, ""
}

// forwarded reports whether a client's X-Amz-* header (canonical) is
// forwarded and signed: it only describes the object or operation of the
// request's own path — user metadata, encryption, storage class, tags,
// the owner expected, who pays, the operation of a JSON-protocol API
// (DynamoDB, KMS, …). Headers naming another resource (a copy source) or
// changing who may access the object (ACLs, grants), or anything unknown,
// are not: policy decides on the request's method and path, and such a
// header would reach beyond them.
func forwarded(ck string) bool {
	switch ck {
	case "X-Amz-Storage-Class", "X-Amz-Tagging", "X-Amz-Expected-Bucket-Owner", "X-Amz-Request-Payer", "X-Amz-Target":
		return true
	}
	return strings.HasPrefix(ck, "X-Amz-Meta-") || strings.HasPrefix(ck, "X-Amz-Server-Side-Encryption")
}

// droppable reports whether a client's X-Amz-* header (canonical) may be
// left behind without changing what the request does: the client's
// signature inputs, its SDK's user agent, and checksums.
func droppable(ck string) bool {
	switch ck {
	case "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256", "X-Amz-User-Agent",
		"X-Amz-Sdk-Checksum-Algorithm":
		return true
	}
	return strings.HasPrefix(ck, "X-Amz-Checksum-")
}

// payloadHash returns the payload hash to sign r's body with: the empty
// body's hash for no body, UNSIGNED-PAYLOAD for an S3 body (which then
// streams), else the body's SHA-256, after reading it whole (at most
// MaxSignedBody bytes; larger is 413) into r, which is then sent with a
// Content-Length. A non-zero status refuses the request.
func (s *sigv4) payloadHash(r *http.Request) (hash string, status int, msg string) {
	switch {
	case r.ContentLength == 0:
		return emptyPayloadHash, 0, ""
	case s.s3:
		return unsignedPayload, 0, ""
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxSignedBody+1))
	if err != nil {
		return "", http.StatusBadRequest, "the request body could not be read: " + err.Error()
	}
	if len(b) > MaxSignedBody {
		return "", http.StatusRequestEntityTooLarge, fmt.Sprintf("a %s request body is signed whole, so it may be at most %d bytes", s.service, MaxSignedBody)
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.ContentLength = int64(len(b))
	r.TransferEncoding = nil
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), 0, ""
}

// sign removes from out every header the client must not send (see
// stripHeader: hop-by-hop, Authorization, Proxy-*, X-Amz-*), puts back
// the client's X-Amz-* headers that are forwarded (see forwarded), and
// signs it for its URL and host with creds: Authorization, X-Amz-Date,
// X-Amz-Security-Token (when creds has a session token) and, for S3,
// X-Amz-Content-Sha256. Every other header is signed as it is sent, but
// Te, which a hop may drop.
func (s *sigv4) sign(ctx context.Context, out *http.Request, in http.Header, creds aws.Credentials, payloadHash string) error {
	stripHeader(out.Header, in, "")
	for k, vs := range in {
		if ck := http.CanonicalHeaderKey(k); strings.HasPrefix(ck, "X-Amz-") && forwarded(ck) && !headerHasToken(in, "Connection", ck) {
			out.Header[ck] = append([]string(nil), vs...)
		}
	}
	if s.s3 {
		out.Header["X-Amz-Content-Sha256"] = []string{payloadHash}
	}
	te, hasTE := out.Header["Te"]
	delete(out.Header, "Te")
	err := s.signer.SignHTTP(ctx, creds, out, payloadHash, s.service, s.region, s.now())
	if hasTE {
		out.Header["Te"] = te
	}
	if err != nil {
		return fmt.Errorf("httpproxy: sigv4: %w", err)
	}
	return nil
}

// awsCredentials reads the signing keys from a credential's data fields.
// Its errors name fields, never values.
func awsCredentials(data map[string]providers.Secret) (aws.Credentials, error) {
	id, ok := data[awsprov.FieldAccessKeyID]
	if !ok || len(id.Reveal()) == 0 {
		return aws.Credentials{}, fmt.Errorf("field %s is missing", awsprov.FieldAccessKeyID)
	}
	secret, ok := data[awsprov.FieldSecretAccessKey]
	if !ok || len(secret.Reveal()) == 0 {
		return aws.Credentials{}, fmt.Errorf("field %s is missing", awsprov.FieldSecretAccessKey)
	}
	c := aws.Credentials{AccessKeyID: string(id.Reveal()), SecretAccessKey: string(secret.Reveal())}
	if tok, ok := data[awsprov.FieldSessionToken]; ok {
		c.SessionToken = string(tok.Reveal())
	}
	var errs []error
	if strings.IndexFunc(c.AccessKeyID, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == ',' || r == '/' }) >= 0 {
		errs = append(errs, fmt.Errorf("field %s holds characters a SigV4 credential scope cannot carry", awsprov.FieldAccessKeyID))
	}
	if strings.IndexFunc(c.SessionToken, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		errs = append(errs, fmt.Errorf("field %s holds control characters, which a header cannot carry", awsprov.FieldSessionToken))
	}
	if len(errs) > 0 {
		return aws.Credentials{}, errors.Join(errs...)
	}
	return c, nil
}
