// Package ststest runs a stand-in for AWS STS for tests: a real HTTPS
// server that answers GetCallerIdentity only for requests whose SigV4
// signature it verifies itself.
package ststest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// STS stands in for AWS STS (sts.amazonaws.com), which cannot be reached
// from tests. It is a real HTTPS server (httptest TLS) that answers
// GetCallerIdentity only for requests whose SigV4 signature it verifies
// itself, with its own implementation of the canonical request and signing
// key below (independent of the SDK signer that Sign uses), for the secret
// key it holds for each access key. It answers in the XML shapes real STS
// uses, including the 403 ErrorResponse for SignatureDoesNotMatch.
type STS struct {
	Server *httptest.Server
	Calls  atomic.Int64

	mu         sync.Mutex
	keys       map[string]stsKey // access key id → key
	override   http.HandlerFunc  // when set, answers instead of STS
	lastHeader http.Header       // headers of the last request received
}

type stsKey struct {
	secret, token, arn, userID, account string
}

// New starts the stand-in; it stops when the test ends.
func New(t testing.TB) *STS {
	f := &STS{keys: map[string]stsKey{}}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Server.Close)
	return f
}

// AddKey creates a random access key for the principal arn and returns its
// id, secret and (when session) a random session token.
func (f *STS) AddKey(arn, userID, account string, session bool) (id, secret, token string) {
	id = "AKIA" + randString(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
	secret = randString(40, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
	if session {
		id = "ASIA" + id[4:]
		token = randString(200, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
	}
	f.mu.Lock()
	f.keys[id] = stsKey{secret: secret, token: token, arn: arn, userID: userID, account: account}
	f.mu.Unlock()
	return id, secret, token
}

// SetOverride makes h answer instead of STS (nil restores STS).
func (f *STS) SetOverride(h http.HandlerFunc) {
	f.mu.Lock()
	f.override = h
	f.mu.Unlock()
}

// LastHeader returns the headers of the last request received.
func (f *STS) LastHeader() http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastHeader
}

func randString(n int, alphabet string) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// ErrorXML is STS's error answer, with %s for Code and Message.
const ErrorXML = `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>%s</Code>
    <Message>%s</Message>
  </Error>
  <RequestId>4a8c2f0e-7f3b-4d1e-9a51-0c6b2f1d9e77</RequestId>
</ErrorResponse>
`

// OKXML is the GetCallerIdentity answer, with %s for Arn, UserId, Account.
const OKXML = `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>%s</Arn>
    <UserId>%s</UserId>
    <Account>%s</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>
`

// WriteError answers with STS's ErrorResponse XML.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, ErrorXML, code, msg)
}

func (f *STS) serve(w http.ResponseWriter, r *http.Request) {
	f.Calls.Add(1)
	f.mu.Lock()
	f.lastHeader = r.Header.Clone()
	override := f.override
	f.mu.Unlock()
	if override != nil {
		override(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		WriteError(w, 400, "MalformedInput", "unreadable body")
		return
	}
	key, status, code := f.verify(r, body)
	if code != "" {
		msg := "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
		if code != "SignatureDoesNotMatch" {
			msg = code
		}
		WriteError(w, status, code, msg)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/" || string(body) != "Action=GetCallerIdentity&Version=2011-06-15" {
		WriteError(w, 400, "InvalidAction", "Could not find operation")
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, OKXML, key.arn, key.userID, key.account)
}

// verify checks the SigV4 signature of r. It returns an error code and
// status when the request is not properly signed.
func (f *STS) verify(r *http.Request, body []byte) (stsKey, int, string) {
	authz := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(authz, "AWS4-HMAC-SHA256 ")
	if !ok {
		return stsKey{}, 403, "MissingAuthenticationToken"
	}
	comp := map[string]string{}
	for _, p := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		comp[k] = v
	}
	scope := strings.Split(comp["Credential"], "/")
	if len(scope) != 5 {
		return stsKey{}, 400, "IncompleteSignature"
	}
	f.mu.Lock()
	key, ok := f.keys[scope[0]]
	f.mu.Unlock()
	if !ok {
		return stsKey{}, 403, "InvalidClientTokenId"
	}
	if key.token != "" && r.Header.Get("X-Amz-Security-Token") != key.token {
		return stsKey{}, 403, "InvalidClientTokenId"
	}
	signed := strings.Split(comp["SignedHeaders"], ";")
	if !sort.StringsAreSorted(signed) {
		return stsKey{}, 403, "SignatureDoesNotMatch"
	}
	var canonHeaders strings.Builder
	for _, name := range signed {
		var val string
		switch name {
		case "host":
			val = r.Host
		case "content-length":
			val = strconv.FormatInt(r.ContentLength, 10)
		default:
			vals := r.Header.Values(name)
			if len(vals) == 0 {
				return stsKey{}, 403, "SignatureDoesNotMatch"
			}
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			val = strings.Join(vals, ",")
		}
		canonHeaders.WriteString(name + ":" + val + "\n")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if len(amzDate) < 8 || amzDate[:8] != scope[1] {
		return stsKey{}, 403, "SignatureDoesNotMatch"
	}
	bodySum := sha256.Sum256(body)
	canon := strings.Join([]string{
		r.Method,
		"/",
		r.URL.RawQuery,
		canonHeaders.String(),
		comp["SignedHeaders"],
		hex.EncodeToString(bodySum[:]),
	}, "\n")
	canonSum := sha256.Sum256([]byte(canon))
	stringToSign := strings.Join([]string{
		"AWS4-HMAC-SHA256",
		amzDate,
		strings.Join(scope[1:], "/"),
		hex.EncodeToString(canonSum[:]),
	}, "\n")
	k := hmacSHA256([]byte("AWS4"+key.secret), scope[1])
	k = hmacSHA256(k, scope[2])
	k = hmacSHA256(k, scope[3])
	k = hmacSHA256(k, "aws4_request")
	want := hex.EncodeToString(hmacSHA256(k, stringToSign))
	if !hmac.Equal([]byte(want), []byte(comp["Signature"])) {
		return stsKey{}, 403, "SignatureDoesNotMatch"
	}
	return key, 200, ""
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
