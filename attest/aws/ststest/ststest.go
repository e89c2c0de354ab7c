// Package ststest runs a stand-in for AWS STS for tests: a real HTTPS
// server that answers GetCallerIdentity only for requests whose SigV4
// signature it verifies itself.
package ststest

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/credbroker/credbroker/internal/sigv4test"
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

// verify checks the SigV4 signature of r (internal/sigv4test, any region,
// no clock: the attestor's own freshness checks are what its tests probe).
// It returns an error code and status when the request is not properly
// signed.
func (f *STS) verify(r *http.Request, body []byte) (stsKey, int, string) {
	id, err := sigv4test.Verify(r, body, sigv4test.Check{
		Service: "sts",
		Lookup: func(id string) (sigv4test.Key, bool) {
			f.mu.Lock()
			k, ok := f.keys[id]
			f.mu.Unlock()
			return sigv4test.Key{Secret: k.secret, Token: k.token}, ok
		},
	})
	if err != nil {
		return stsKey{}, err.Status, err.Code
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys[id], 200, ""
}
