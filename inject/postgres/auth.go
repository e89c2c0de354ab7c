package postgres

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
)

// MaxSCRAMIterations bounds the PBKDF2 iteration count an upstream may
// ask for (PostgreSQL's default is 4096), so that a hostile or broken
// server cannot make a login spin.
const MaxSCRAMIterations = 10_000_000

// Authentication request codes ('R' messages).
const (
	authOK            = 0
	authKerberosV5    = 2
	authCleartext     = 3
	authMD5           = 5
	authGSS           = 7
	authGSSContinue   = 8
	authSSPI          = 9
	authSASL          = 10
	authSASLContinue  = 11
	authSASLFinal     = 12
	scramSHA256       = "SCRAM-SHA-256"
	scramSHA256Plus   = "SCRAM-SHA-256-PLUS"
	bindingServerCert = "tls-server-end-point"
)

// Methods as logged.
const (
	methodTrust     = "trust"
	methodCleartext = "password"
	methodMD5       = "md5"
)

// authError is a login the broker refuses to complete, or cannot, on its
// side: the upstream asked for something unsupported or unsafe, or did not
// prove that it knows the password. Its message never holds a secret.
type authError struct{ msg string }

func (e *authError) Error() string { return "postgres: upstream login: " + e.msg }

func authFailf(format string, args ...any) *authError {
	return &authError{msg: fmt.Sprintf(format, args...)}
}

// errCleartextWithoutTLS refuses to send a password in the clear.
var errCleartextWithoutTLS = authFailf("the upstream asks for the password in cleartext on a connection without TLS; " +
	"refused: set tls.mode to require or stronger, or have the server authenticate the role with scram-sha-256")

// scramState is where a SCRAM exchange stands.
type scramState int

const (
	scramNone      scramState = iota // not started
	scramSentFirst                   // client-first sent, server-first awaited
	scramSentFinal                   // client-final sent, server-final awaited
	scramVerified                    // the server's signature checked
)

// authenticator answers one upstream's authentication requests with the
// issued username and password.
type authenticator struct {
	user, password []byte
	// tls reports that the upstream connection is encrypted.
	tls bool
	// binding is the tls-server-end-point hash of the upstream's
	// certificate; nil without TLS or when the certificate's signature
	// algorithm leaves it undefined.
	binding []byte
	// method is the method used, for the log.
	method string

	state       scramState
	gs2         string // the GS2 header sent
	nonce       string // the client nonce
	clientFirst string // client-first-message-bare
	serverSig   []byte // the server signature expected in server-final
}

// step handles the body of one authentication request ('R') and returns
// the message to answer with (nil when none), and done once the upstream
// said AuthenticationOk.
func (a *authenticator) step(body []byte) (reply []byte, done bool, err error) {
	if len(body) < 4 {
		return nil, false, authFailf("authentication request of %d bytes", len(body))
	}
	code, data := binary.BigEndian.Uint32(body), body[4:]
	if a.state != scramNone && a.state != scramVerified && code != authSASLContinue && code != authSASLFinal {
		return nil, false, authFailf("the upstream left the SCRAM exchange unfinished (authentication request %d)", code)
	}
	switch code {
	case authOK:
		if a.state != scramNone && a.state != scramVerified {
			return nil, false, authFailf("the upstream accepted the login without proving that it knows the password (no SCRAM server signature)")
		}
		if a.method == "" {
			a.method = methodTrust
		}
		return nil, true, nil
	case authCleartext:
		if !a.tls {
			return nil, false, errCleartextWithoutTLS
		}
		a.method = methodCleartext
		return encode(&pgproto3.PasswordMessage{Password: string(a.password)})
	case authMD5:
		if len(data) != 4 {
			return nil, false, authFailf("md5 request with a salt of %d bytes", len(data))
		}
		a.method = methodMD5
		return encode(&pgproto3.PasswordMessage{Password: md5Password(a.user, a.password, data)})
	case authSASL:
		if a.state != scramNone {
			return nil, false, authFailf("the upstream started a second SASL exchange")
		}
		return a.scramFirst(data)
	case authSASLContinue:
		if a.state != scramSentFirst {
			return nil, false, authFailf("unexpected SASL continuation")
		}
		return a.scramFinal(data)
	case authSASLFinal:
		if a.state != scramSentFinal {
			return nil, false, authFailf("unexpected SASL final message")
		}
		return nil, false, a.scramVerify(data)
	case authKerberosV5, authGSS, authGSSContinue, authSSPI:
		return nil, false, authFailf("the upstream asks for Kerberos, GSSAPI or SSPI authentication, which the broker does not do: authenticate the role with scram-sha-256 (or md5)")
	default:
		return nil, false, authFailf("the upstream asks for authentication method %d, which the broker does not know: authenticate the role with scram-sha-256 (or md5)", code)
	}
}

// encode encodes a message for the upstream.
func encode(m pgproto3.FrontendMessage) ([]byte, bool, error) {
	b, err := m.Encode(nil)
	if err != nil {
		return nil, false, authFailf("encoding %T: %v", m, err)
	}
	return b, false, nil
}

// md5Password is PostgreSQL's md5 answer: "md5" and the hex MD5 of the
// hex MD5 of password and user, followed by the salt.
func md5Password(user, password, salt []byte) string {
	inner := md5.Sum(append(append([]byte{}, password...), user...))
	h := hex.EncodeToString(inner[:])
	outer := md5.Sum(append([]byte(h), salt...))
	return "md5" + hex.EncodeToString(outer[:])
}

// scramFirst picks a SCRAM mechanism among those offered and sends the
// client-first message. Over TLS with a certificate whose end-point hash
// is defined, SCRAM-SHA-256-PLUS is used when offered; else
// SCRAM-SHA-256, telling the server (y) that the broker could have bound
// the channel, so that a stripped PLUS offer fails the login.
func (a *authenticator) scramFirst(data []byte) ([]byte, bool, error) {
	mechs, err := parseMechanisms(data)
	if err != nil {
		return nil, false, err
	}
	has := func(m string) bool {
		for _, x := range mechs {
			if x == m {
				return true
			}
		}
		return false
	}
	switch {
	case a.tls && a.binding != nil && has(scramSHA256Plus):
		a.method, a.gs2 = scramSHA256Plus, "p="+bindingServerCert+",,"
	case has(scramSHA256) && a.tls && a.binding != nil:
		a.method, a.gs2 = scramSHA256, "y,,"
	case has(scramSHA256):
		a.method, a.gs2 = scramSHA256, "n,,"
	default:
		return nil, false, authFailf("the upstream offers no SASL mechanism the broker supports (offered: %s)", bounded(strings.Join(mechs, ", ")))
	}
	var n [18]byte
	_, _ = rand.Read(n[:])
	a.nonce = base64.StdEncoding.EncodeToString(n[:])
	// PostgreSQL takes the user from the startup message: n= is empty.
	a.clientFirst = "n=,r=" + a.nonce
	a.state = scramSentFirst
	return encode(&pgproto3.SASLInitialResponse{AuthMechanism: a.method, Data: []byte(a.gs2 + a.clientFirst)})
}

// parseMechanisms decodes an AuthenticationSASL body: NUL-terminated
// mechanism names ended by an empty one.
func parseMechanisms(b []byte) ([]string, error) {
	var out []string
	for {
		m, rest, ok := cstring(b)
		if !ok {
			return nil, authFailf("malformed SASL mechanism list")
		}
		if m == "" {
			return out, nil
		}
		out = append(out, m)
		b = rest
	}
}

// scramFinal checks the server-first message and answers with the
// client-final message, carrying the proof.
func (a *authenticator) scramFinal(data []byte) ([]byte, bool, error) {
	serverFirst := string(data)
	nonce, salt, iters, err := parseServerFirst(serverFirst)
	if err != nil {
		return nil, false, err
	}
	if !strings.HasPrefix(nonce, a.nonce) || len(nonce) == len(a.nonce) {
		return nil, false, authFailf("the upstream's SCRAM nonce does not extend the broker's")
	}
	cbind := []byte(a.gs2)
	if strings.HasPrefix(a.gs2, "p=") {
		cbind = append(cbind, a.binding...)
	}
	withoutProof := "c=" + base64.StdEncoding.EncodeToString(cbind) + ",r=" + nonce
	authMessage := []byte(a.clientFirst + "," + serverFirst + "," + withoutProof)

	salted, err := saltedPasswords.get(a.password, salt, iters)
	if err != nil {
		return nil, false, authFailf("deriving the SCRAM key: %v", err)
	}
	clientKey := hmacSHA256(salted, []byte("Client Key"))
	storedKey := sha256.Sum256(clientKey)
	proof := hmacSHA256(storedKey[:], authMessage)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	a.serverSig = hmacSHA256(hmacSHA256(salted, []byte("Server Key")), authMessage)
	a.state = scramSentFinal
	return encode(&pgproto3.SASLResponse{Data: []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof))})
}

// parseServerFirst decodes "r=NONCE,s=SALT,i=ITERATIONS[,extensions]".
func parseServerFirst(s string) (nonce string, salt []byte, iters int, err error) {
	parts := strings.Split(s, ",")
	if len(parts) < 3 || !strings.HasPrefix(parts[0], "r=") || !strings.HasPrefix(parts[1], "s=") || !strings.HasPrefix(parts[2], "i=") {
		return "", nil, 0, authFailf("malformed SCRAM server-first message")
	}
	nonce = parts[0][2:]
	for i := 0; i < len(nonce); i++ {
		if c := nonce[i]; c < 0x21 || c > 0x7e {
			return "", nil, 0, authFailf("the upstream's SCRAM nonce has a byte outside printable ASCII")
		}
	}
	if salt, err = base64.StdEncoding.DecodeString(parts[1][2:]); err != nil || len(salt) == 0 {
		return "", nil, 0, authFailf("the upstream's SCRAM salt is not base64")
	}
	iters, err = strconv.Atoi(parts[2][2:])
	if err != nil || iters < 1 || iters > MaxSCRAMIterations {
		return "", nil, 0, authFailf("the upstream's SCRAM iteration count %q is not between 1 and %d", bounded(parts[2][2:]), MaxSCRAMIterations)
	}
	return nonce, salt, iters, nil
}

// scramVerify checks the server-final message: the server's signature,
// proving it holds the password's verifier.
func (a *authenticator) scramVerify(data []byte) error {
	s := string(data)
	if e, ok := strings.CutPrefix(s, "e="); ok {
		return authFailf("the upstream refused the SCRAM proof: %s", bounded(e))
	}
	v, ok := strings.CutPrefix(s, "v=")
	if !ok {
		return authFailf("malformed SCRAM server-final message")
	}
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i] // extensions
	}
	sig, err := base64.StdEncoding.DecodeString(v)
	if err != nil || subtle.ConstantTimeCompare(sig, a.serverSig) != 1 {
		return authFailf("the upstream's SCRAM signature is wrong: it does not know this password's verifier (a server in the middle?)")
	}
	a.state = scramVerified
	return nil
}

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// endpointHash is the tls-server-end-point channel binding of cert (RFC
// 5929): its hash with the hash of its signature algorithm, SHA-256 in
// place of MD5 and SHA-1; nil when undefined (Ed25519, unknown
// algorithms).
func endpointHash(cert *x509.Certificate) []byte {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return nil
	}
	h.Write(cert.Raw)
	return h.Sum(nil)
}

// errNoPassword refuses a credential without the fields the listener
// logs in with.
var errNoPassword = errors.New("postgres: the credential has no username or no password field: configure a credential with username and password fields")

// redact replaces every occurrence of secret in b; b is returned as is
// when secret does not occur (or is empty).
func redact(b, secret []byte) []byte {
	if len(secret) == 0 || !bytes.Contains(b, secret) {
		return b
	}
	return bytes.ReplaceAll(b, secret, []byte("[redacted]"))
}

// saltedPasswords caches SCRAM's SaltedPassword, PBKDF2 of a password with
// a role's salt and iteration count: 4096 rounds of HMAC-SHA-256 (about 5
// ms of CPU) that every login would otherwise repeat for the same role.
// A cached key stands for the password towards that server, and lives in
// the broker's memory as the password does; entries are keyed by a hash
// of the password, the salt and the count, and the cache is bounded.
var saltedPasswords = &scramKeyCache{m: map[[sha256.Size]byte][]byte{}}

// maxSaltedPasswords bounds the cache; a full cache is emptied.
const maxSaltedPasswords = 1024

type scramKeyCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte][]byte
}

// get returns the SaltedPassword of password, salt and iters.
func (c *scramKeyCache) get(password, salt []byte, iters int) ([]byte, error) {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(password)))
	h.Write(n[:])
	h.Write(password)
	binary.BigEndian.PutUint64(n[:], uint64(iters))
	h.Write(n[:])
	h.Write(salt)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	c.mu.Lock()
	key, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return key, nil
	}
	key, err := pbkdf2.Key(sha256.New, string(password), salt, iters, sha256.Size)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.m) >= maxSaltedPasswords {
		clear(c.m)
	}
	c.m[k] = key
	c.mu.Unlock()
	return key, nil
}
