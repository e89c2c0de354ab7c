package aws

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// MaxRequestSize is the largest JSON value ParseRequest accepts.
const MaxRequestSize = 16 << 10

// getCallerIdentityBody is the only request body Attest forwards to STS.
const getCallerIdentityBody = "Action=GetCallerIdentity&Version=2011-06-15"

// ServerIDHeader is the signed header that binds a request to one broker.
// SigV4 lowercases it in SignedHeaders ("credbroker-server-id").
const ServerIDHeader = "Credbroker-Server-Id"

// NonceHeader carries random bytes that Sign adds so that two requests signed
// in the same second differ and neither is refused as a replay. Attest
// forwards it like any other signed header and does not require it.
const NonceHeader = "Credbroker-Nonce"

// Request is the signed sts:GetCallerIdentity request a caller presents, as it
// travels in the socket API body under "aws_iam":
//
//	{"method": "POST",
//	 "url": "https://sts.amazonaws.com/",
//	 "headers": {"Authorization": ["AWS4-HMAC-SHA256 Credential=…"], "X-Amz-Date": ["20260102T150405Z"], …},
//	 "body": "Action=GetCallerIdentity&Version=2011-06-15"}
//
// Headers maps a header name (any case; names that differ only in case are
// refused) to its values. Body is the request body as a plain string, not
// base64.
type Request struct {
	Method  string              `json:"method"`
	URL     string              `json:"url"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

var requestFields = map[string]bool{"method": true, "url": true, "headers": true, "body": true}

// ParseRequest decodes the JSON value of the socket API's "aws_iam" member
// strictly: at most MaxRequestSize bytes, one JSON object with exactly the
// member names method, url, headers and body (each at most once, exact case;
// headers and body may be omitted), no trailing data, valid header names and
// values. Any failure is an *attest.Error.
func ParseRequest(raw []byte) (Request, error) {
	if len(raw) > MaxRequestSize {
		return Request{}, fail("aws_iam request larger than 16 KiB", nil)
	}
	if err := checkMembers(raw); err != nil {
		return Request{}, fail("malformed aws_iam request", err)
	}
	var r Request
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fail("malformed aws_iam request", jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return Request{}, fail("malformed aws_iam request", errors.New("trailing data after the JSON object"))
	}
	seen := make(map[string]bool, len(r.Headers))
	for name, vals := range r.Headers {
		if !validHeaderName(name) {
			return Request{}, fail("malformed aws_iam request", errors.New("invalid header name"))
		}
		c := textproto.CanonicalMIMEHeaderKey(name)
		if seen[c] {
			return Request{}, fail("malformed aws_iam request", fmt.Errorf("header %q given twice", c))
		}
		seen[c] = true
		for _, v := range vals {
			if !validHeaderValue(v) {
				return Request{}, fail("malformed aws_iam request", fmt.Errorf("invalid value for header %q", c))
			}
		}
	}
	return r, nil
}

// checkMembers refuses anything but one object whose member names are exactly
// those of Request, each at most once. encoding/json alone would accept
// "Method" for "method" and let a duplicate member silently win.
func checkMembers(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return jsonErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonErr(err)
		}
		name, _ := tok.(string)
		if !requestFields[name] {
			return errors.New("unknown member")
		}
		if seen[name] {
			return fmt.Errorf("member %q given twice", name)
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return jsonErr(err)
		}
	}
	return nil
}

// jsonErr keeps the JSON decoder's description of what went wrong without the
// offending value, which might be a signature.
func jsonErr(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("invalid JSON at offset %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Errorf("member %q has the wrong type", te.Field)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("truncated JSON")
	default:
		return errors.New("invalid JSON")
	}
}

func validHeaderName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// Sign builds and signs, with the credentials creds yields, the
// sts:GetCallerIdentity request that Attest accepts: POST to the root of
// endpoint (https://sts.amazonaws.com when empty) with the fixed body, a
// Content-Type, the ServerIDHeader set to serverID and a random NonceHeader,
// all signed with SigV4 for service "sts" in region (us-east-1 when empty)
// at time now. It is the client side of `credbroker get --aws`; marshal the
// result with encoding/json to obtain the "aws_iam" value.
func Sign(ctx context.Context, creds awssdk.CredentialsProvider, serverID, region, endpoint string, now time.Time) (Request, error) {
	if creds == nil {
		return Request{}, errors.New("aws: sign: no credentials provider")
	}
	if serverID == "" {
		return Request{}, errors.New("aws: sign: empty server id")
	}
	if region == "" {
		region = defaultRegion
	}
	if endpoint == "" {
		endpoint = DefaultSTSEndpoint
	}
	root, err := endpointRoot(endpoint)
	if err != nil {
		return Request{}, fmt.Errorf("aws: sign: %w", err)
	}
	c, err := creds.Retrieve(ctx)
	if err != nil {
		return Request{}, fmt.Errorf("aws: sign: retrieve credentials: %w", err)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return Request{}, fmt.Errorf("aws: sign: nonce: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, root.String(), strings.NewReader(getCallerIdentityBody))
	if err != nil {
		return Request{}, fmt.Errorf("aws: sign: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set(ServerIDHeader, serverID)
	req.Header.Set(NonceHeader, hex.EncodeToString(nonce))
	sum := sha256.Sum256([]byte(getCallerIdentityBody))
	if err := v4.NewSigner().SignHTTP(ctx, c, req, hex.EncodeToString(sum[:]), "sts", region, now.UTC()); err != nil {
		return Request{}, fmt.Errorf("aws: sign: %w", err)
	}
	return Request{
		Method:  http.MethodPost,
		URL:     root.String(),
		Headers: map[string][]string(req.Header.Clone()),
		Body:    getCallerIdentityBody,
	}, nil
}
